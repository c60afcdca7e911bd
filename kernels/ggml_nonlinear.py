"""llama.cpp's iq4_nl (16 non-linear levels under an FP16 scale per 32) and its nvfp4 (E2M1
under a UE4M3 scale per 16, no tensor scale), quantized as ggml-quants.c does for
llama-quantize without an importance matrix: `quantize_iq4_nl` (a search over 15 trial scales
weighted by x^2, C's sums in their order) and `quantize_row_nvfp4_ref` (its own UE4M3 rounding:
mantissa half up, a 2^-9 grid below 2^-6 capped at 7 * 2^-9, 448 from 2^8 up)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

import torch

from mixprec.kernels.formats import IQ4_NL_VALUES
from mixprec.kernels.ggml import clamped, first_nearest_fp4, inverse, signed_max, to_fp16
from mixprec.kernels.kquants import GROUP_MAX_EPS, ordered_sum, sqrtf
from mixprec.kernels.reference import divide

if TYPE_CHECKING:
    from mixprec.kernels.reference import QuantizedGroups

IQ4_NL_TRIES = 7  # quantize_iq4_nl's ntry: trial scales (itry - 127) / max for |itry| <= 7
NVFP4_SUB_BLOCK = 16
UE4M3_MAX = 448.0


@cache
def _levels(device: torch.device) -> torch.Tensor:
    return torch.tensor(IQ4_NL_VALUES, dtype=torch.float32, device=device)


def best_index_int8(x: torch.Tensor) -> torch.Tensor:
    """C's `best_index_int8` over kvalues_iq4nl: the index of the nearest level (of two equally
    near, the upper one), the end levels for values beyond them."""
    levels = _levels(x.device)
    upper = torch.searchsorted(levels, x.contiguous(), right=True).clamp(1, len(levels) - 1)
    nearer_lower = (x - levels[upper - 1]) < (levels[upper] - x)
    index = torch.where(nearer_lower, upper - 1, upper)
    index = torch.where(x <= levels[0], 0, index)
    return torch.where(x >= levels[-1], len(levels) - 1, index)


def _iq4_nl(blocks: torch.Tensor, importance: torch.Tensor | None = None) -> QuantizedGroups:
    """(n, 32) blocks: the scale of 15 trials (and the least-squares one) that fits the levels
    best, weighted by x^2 (or by the importance times sqrt(2 mean square + x^2)); then each
    value's nearest level at that (unrounded) scale."""
    from mixprec.kernels.reference import QuantizedGroups

    x = clamped(blocks)
    levels = _levels(x.device)
    if importance is None:
        weight = x * x
    else:  # sigma2 = sum x^2 * (2 / 32), in C's order
        sigma2 = ordered_sum(blocks, blocks) * (2.0 / blocks.shape[1])
        weight = importance * sqrtf(sigma2 + blocks * blocks)
    top = signed_max(x)
    empty = top.abs() < GROUP_MAX_EPS
    top = torch.where(empty, 1.0, top)

    def fit(iscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = levels[best_index_int8(iscale * x)]
        return ordered_sum(weight, q, x), ordered_sum(weight, q, q)

    first = divide(-top, float(IQ4_NL_VALUES[0]))
    sumqx, sumq2 = fit(divide(1.0, first))
    scale = torch.where(sumq2 > 0, sumqx / torch.where(sumq2 > 0, sumq2, 1.0), 0.0)
    best = scale * sumqx
    for itry in range(-IQ4_NL_TRIES, IQ4_NL_TRIES + 1):
        sumqx, sumq2 = fit(divide(float(itry + IQ4_NL_VALUES[0]), top))
        better = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
        scale = torch.where(better, sumqx / torch.where(better, sumq2, 1.0), scale)
        best = torch.where(better, scale * sumqx, best)
    scale = torch.where(empty, 0.0, scale)
    index = best_index_int8(inverse(scale) * x)
    return QuantizedGroups(levels[index], to_fp16(scale))


def ue4m3(x: torch.Tensor) -> torch.Tensor:
    """`ggml_ue4m3_to_fp32(ggml_fp32_to_ue4m3(x)) * 2` for float32 `x`: the UE4M3 scale
    llama.cpp stores for x (0 for x <= 0 or NaN)."""
    x = torch.where(x > 0, x, 0.0).clamp(max=UE4M3_MAX)
    bits = x.contiguous().view(torch.int32)
    exponent = ((bits >> 23) & 0xFF) - 127 + 7
    mantissa = ((bits >> 20) & 0x7) + ((bits >> 19) & 1)  # the next bit rounds half up
    carried = exponent + (mantissa > 7).int()
    normal = torch.ldexp(1.0 + (mantissa % 8).float() / 8, (carried - 7).float())
    normal = torch.where(carried >= 15, UE4M3_MAX, normal)
    steps = torch.trunc(x * 512.0 + 0.5).clamp(max=7)  # (int)(x * 512.0f + 0.5f)
    subnormal = torch.where(steps < 1, 0.0, steps) * 2.0**-9
    return torch.where(x > 0, torch.where(exponent <= 0, subnormal, normal), 0.0)


def _nvfp4(blocks: torch.Tensor) -> QuantizedGroups:
    """(n, 64) blocks: per 16 values a UE4M3 scale of amax / 6, each value the first nearest
    of the E2M1 codes at that scale."""
    from mixprec.kernels.reference import QuantizedGroups

    x = clamped(blocks.reshape(-1, NVFP4_SUB_BLOCK))
    scale = ue4m3(divide(x.abs().amax(dim=-1, keepdim=True), 6.0))
    return QuantizedGroups(first_nearest_fp4(x, scale * 0.5), scale)


NONLINEAR_QUANTIZERS: dict[str, Callable[[torch.Tensor], QuantizedGroups]] = {
    "iq4_nl": _iq4_nl,
    "nvfp4": _nvfp4,
}
