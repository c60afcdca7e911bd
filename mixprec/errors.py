"""The one exception type for user mistakes: the CLI prints it as one line and exits 2."""

from __future__ import annotations


class MixprecError(ValueError):
    """A user-facing error: bad name, bad shape, bad scheme, unknown model, and so on."""
