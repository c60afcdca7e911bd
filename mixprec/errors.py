"""The one exception type for user mistakes: the CLI prints it as one line and exits 2."""

from __future__ import annotations


class MixprecError(ValueError):
    """A user-facing error: bad name, bad shape, bad scheme, unknown model, and so on."""


def gist(err: BaseException, limit: int = 240) -> str:
    """A library's (often multi-line) error as one short line: its first sentence."""
    text = " ".join(str(err).split()) or type(err).__name__
    first = text.split(". ")[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."
