"""The one exception type for user mistakes: the CLI prints it as one line and exits 2."""

from __future__ import annotations

import math
from typing import Any


class MixprecError(ValueError):
    """A user-facing error: bad name, bad shape, bad scheme, unknown model, and so on."""


def gist(err: BaseException, limit: int = 240) -> str:
    """A library's (often multi-line) error as one short line: its first sentence."""
    text = " ".join(str(err).split()) or type(err).__name__
    first = text.split(". ")[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."


def one_of(option: str, value: str, valid: tuple[str, ...]) -> None:
    """Refuse `value` unless it is one of `valid`, listing them."""
    if value not in valid:
        raise MixprecError(f"unknown {option} {value!r}; valid: {', '.join(valid)}")


def at_least(option: str, value: float, least: float) -> None:
    """Refuse a NaN, an infinity or anything below `least`."""
    if not (math.isfinite(value) and value >= least):
        raise MixprecError(f"{option} {value} must be a finite number >= {least:g}")


def first_problem(err: Any) -> tuple[str, str]:
    """A pydantic ValidationError's first problem as (dotted key, "" at the top level; message
    without pydantic's "Value error, " before our own one-line errors)."""
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    return key, str(first["msg"]).removeprefix("Value error, ")
