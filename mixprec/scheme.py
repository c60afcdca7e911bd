"""A Scheme: the weight format and optional activation format one unit runs with."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mixprec.errors import MixprecError
from mixprec.kernels import formats
from mixprec.kernels.formats import NumberFormat

KEEP = "keep"
# What is scored when nobody says: the common weight formats and one W4A4 scheme.
DEFAULT_SCHEMES = (
    "w:fp8_e4m3", "w:int8", "w:mxfp8_e4m3", "w:mxfp6_e2m3", "w:int4_g128", "w:int4_asym_g128",
    "w:mxfp4", "w:nvfp4", "w:nvint4", "w:fp4_e2m1", "w:int3_g128", "w:nvfp4,a:nvfp4",
)  # fmt: skip
_ROLES = {"w": "weight", "a": "activation"}


class SchemeError(MixprecError):
    """A scheme string that cannot be parsed."""


@dataclass(frozen=True)
class Scheme:
    """`w:FORMAT[,a:FORMAT]`, or `keep` (unquantized, original dtype)."""

    weight: NumberFormat | None
    activation: NumberFormat | None = None

    @property
    def is_keep(self) -> bool:
        return self.weight is None

    def __str__(self) -> str:
        if self.weight is None:
            return KEEP
        text = f"w:{self.weight.name}"
        return f"{text},a:{self.activation.name}" if self.activation else text

    def weight_storage_bytes(self, shape: tuple[int, ...], keep_bytes_per_element: int) -> int:
        """Bytes to store a weight of `shape`; `keep` costs the original element size."""
        if self.weight is None:
            return math.prod(shape) * keep_bytes_per_element
        return self.weight.storage_bytes(shape)

    @classmethod
    def parse(cls, text: str | Scheme) -> Scheme:
        """Parse `w:mxfp4`, `w:nvfp4,a:nvfp4` or `keep`; errors name the bad part."""
        if isinstance(text, Scheme):
            return text
        spec = text.strip()
        if spec == KEEP:
            return cls(None)
        parts: dict[str, NumberFormat] = {}
        for item in spec.split(","):
            role, sep, name = item.strip().partition(":")
            if not sep or role not in _ROLES or not name:
                raise SchemeError(
                    f"bad scheme {text!r}: {item.strip()!r} is not ROLE:FORMAT with ROLE w or a "
                    "(examples: w:mxfp4, w:nvfp4,a:nvfp4, keep)"
                )
            if role in parts:
                raise SchemeError(f"bad scheme {text!r}: {_ROLES[role]} format given twice")
            try:
                parts[role] = formats.get(name.strip())
            except MixprecError as err:
                raise SchemeError(f"bad scheme {text!r}: {err}") from None
        if "w" not in parts:
            raise SchemeError(f"bad scheme {text!r}: a weight format (w:FORMAT) is required")
        if "a" in parts and parts["a"].block_rows:
            raise SchemeError(f"bad scheme {text!r}: {parts['a'].name} scales tiles of weight "
                              "rows; an activation format scales along one row")  # fmt: skip
        return cls(parts["w"], parts.get("a"))


def scheme_list(schemes: Sequence[str] | str) -> tuple[str, ...]:
    """`"default"` (the DEFAULT_SCHEMES) or a scheme list as `parse_list` reads it."""
    return DEFAULT_SCHEMES if schemes == "default" else tuple(parse_list(schemes))


def parse_list(text: Sequence[str] | str) -> list[str]:
    """`w:mxfp4,w:nvfp4,a:nvfp4` -> [w:mxfp4, w:nvfp4,a:nvfp4]: an `a:` item joins the scheme
    before it; ';' and spaces separate too."""
    if not isinstance(text, str):
        return list(text)
    schemes: list[str] = []
    for item in text.replace(";", ",").replace(" ", ",").split(","):
        item = item.strip()
        if item.startswith("a:") and schemes:
            schemes[-1] += f",{item}"
        elif item:
            schemes.append(item)
    return schemes
