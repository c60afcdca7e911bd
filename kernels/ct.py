"""compressed-tensors' integer schemes (family "ct"), quantized as compressed-tensors computes
them (`calculate_qparams` then `fake_quantize`) for what vLLM loads: W8A16, W4A16 and W4A16_ASYM.

Their grid is signed, [-2^(b-1), 2^(b-1) - 1], and the symmetric scale is amax / (2^b - 1) * 2
(amax / 7.5 for INT4), so the group's largest magnitude rounds to 2^(b-1) and is clipped to
2^(b-1) - 1: these are not mixprec's int formats (amax / qmax, FP16 scale). Scales are float32
(the arithmetic of a float32 weight); a zero scale becomes float32's eps, as there. mixprec's
own rules for what compressed-tensors leaves undefined: +-inf saturates, a NaN makes its group NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mixprec.kernels.reference import QuantizedGroups

if TYPE_CHECKING:
    from mixprec.kernels.formats import NumberFormat

EPS = torch.finfo(torch.float32).eps


def quantize(groups: torch.Tensor, fmt: NumberFormat) -> QuantizedGroups:
    """Codes and scales of (n, group) float32 rows under compressed-tensors scheme `fmt`."""
    low, high = -(2 ** (fmt.element_bits - 1)), 2 ** (fmt.element_bits - 1) - 1
    finite = torch.where(torch.isinf(groups), 0.0, groups)  # +-inf saturates; NaN poisons
    lo = torch.minimum(finite.amin(dim=-1, keepdim=True), torch.zeros_like(groups[:, :1]))
    hi = torch.maximum(finite.amax(dim=-1, keepdim=True), torch.zeros_like(groups[:, :1]))
    span = torch.tensor(float(high - low), dtype=torch.float32)
    if fmt.symmetric:
        scale = _nonzero(torch.maximum(lo.abs(), hi.abs()) / (span / 2))
        codes = torch.round(torch.clamp(groups / scale, low, high))
        return QuantizedGroups(codes, scale)
    scale = _nonzero((hi - lo) / span)
    zero = torch.round(torch.clamp(low - lo / scale, low, high))  # stored as int8
    codes = torch.round(torch.clamp(groups / scale + zero, low, high))
    # unsigned codes and zero point (value (code - zero) * scale is unchanged)
    return QuantizedGroups(codes - low, scale, zero=zero - low)


def _nonzero(scale: torch.Tensor) -> torch.Tensor:
    return torch.where(scale == 0, EPS, scale)
