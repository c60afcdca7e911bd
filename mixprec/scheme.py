"""A Scheme: the weight format and optional activation format one unit runs with."""

from __future__ import annotations

import math
from dataclasses import dataclass

from mixprec.errors import MixprecError
from mixprec.kernels import formats
from mixprec.kernels.formats import NumberFormat

KEEP = "keep"
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
        return cls(parts["w"], parts.get("a"))
