"""llama.cpp's block types (family "ggml"), quantized exactly as llama.cpp's reference does
(the K-quants in kernels/kquants.py, iq4_nl and nvfp4 in kernels/ggml_nonlinear.py).

Each function is ggml-quants.c's `quantize_row_*_ref` written in float32 torch ops in the same
order (no fused multiply-add), so finite blocks give the bytes llama-quantize writes without an
importance matrix (tested against gguf-py's `quants.quantize` and llama.cpp's C quantizer);
with one, kernels/ggml_weighted.py's searches replace them where llama.cpp's do.
Two choices are mixprec's, for inputs llama.cpp leaves undefined: a block is first clamped to
its finite range, so +-inf saturates like every other format; a NaN makes its block NaN.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

import torch

from mixprec.errors import MixprecError
from mixprec.kernels.reference import divide

if TYPE_CHECKING:
    from mixprec.kernels.formats import NumberFormat
    from mixprec.kernels.ggml_weighted import Weighting
    from mixprec.kernels.reference import QuantizedGroups

# E2M1 values doubled, in llama.cpp's code order (kvalues_mxfp4): the index is the stored code.
MXFP4_DOUBLED = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)


def quantize(
    blocks: torch.Tensor, fmt: NumberFormat, weighting: Weighting | None = None
) -> QuantizedGroups:
    """Scales and element values of (n, block) float32 `blocks` under llama.cpp type `fmt`,
    searched as llama-quantize does with an importance matrix where `weighting` is given."""
    quantizers = _all_quantizers()
    try:
        quantizer = quantizers[fmt.ggml_type]
    except KeyError:
        raise MixprecError(
            f"no llama.cpp quantizer for {fmt.name}; valid: {', '.join(quantizers)}"
        ) from None
    from mixprec.kernels.ggml_weighted import IGNORES_IMPORTANCE, weighted_quantizer

    if weighting is not None and fmt.ggml_type not in IGNORES_IMPORTANCE:
        quantizer = weighted_quantizer(fmt, weighting)
    q = quantizer(blocks)
    # K-quants and nvfp4 return one group per sub-block; a K-quant's share one scale
    poisoned = torch.isnan(blocks).any(dim=-1, keepdim=True)
    if fmt.nested_scales:
        poisoned = poisoned.repeat_interleave(q.scale.shape[0] // blocks.shape[0], dim=0)
    else:
        poisoned = torch.isnan(blocks.reshape(q.scale.shape[0], -1)).any(dim=-1, keepdim=True)
    if bool(poisoned.any()):
        q = dataclasses.replace(q, scale=torch.where(poisoned, torch.nan, q.scale))
    return q


@cache
def _all_quantizers() -> dict[str, Callable[[torch.Tensor], QuantizedGroups]]:
    """These types' quantizers and the others' (which build on the helpers here)."""
    from mixprec.kernels.ggml_nonlinear import NONLINEAR_QUANTIZERS
    from mixprec.kernels.kquants import KQUANTIZERS

    return {**_QUANTIZERS, **KQUANTIZERS, **NONLINEAR_QUANTIZERS}


def to_fp16(x: torch.Tensor) -> torch.Tensor:
    """GGML_FP32_TO_FP16 and back: round to nearest even, as stored in a block."""
    return x.to(torch.float16).to(torch.float32)


def inverse(d: torch.Tensor) -> torch.Tensor:
    """`d ? 1.0f/d : 0.0f`."""
    return torch.where(d == 0, 0.0, divide(1.0, torch.where(d == 0, 1.0, d)))


def finite_range(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each block's smallest and largest finite value (+-inf left out)."""
    lo = torch.where(blocks == -torch.inf, torch.inf, blocks).amin(dim=-1, keepdim=True)
    hi = torch.where(blocks == torch.inf, -torch.inf, blocks).amax(dim=-1, keepdim=True)
    return lo, hi


def clamped(blocks: torch.Tensor) -> torch.Tensor:
    """The block clamped to +-(its largest finite magnitude): unchanged when it is finite."""
    from mixprec.kernels.reference import finite_amax

    amax = finite_amax(blocks)
    return torch.maximum(torch.minimum(blocks, amax), -amax)


def signed_max(blocks: torch.Tensor) -> torch.Tensor:
    """The first value of largest magnitude, with its sign (`if (amax < fabsf(v))`)."""
    index = blocks.abs().argmax(dim=-1, keepdim=True)
    return blocks.gather(-1, index)


def round_away(x: torch.Tensor) -> torch.Tensor:
    """C `roundf`: halves away from zero, exactly (no `x + 0.5` rounding)."""
    whole = torch.trunc(x)
    return whole + torch.where((x - whole).abs() >= 0.5, torch.sign(x), 0.0)


def _offset(levels: int) -> Callable[[torch.Tensor], QuantizedGroups]:
    """q4_0 / q5_0: d = max / -levels, codes trunc(x / d + levels + 0.5) in [0, 2 levels)."""

    def quantize_offset(blocks: torch.Tensor) -> QuantizedGroups:
        from mixprec.kernels.reference import QuantizedGroups

        x = clamped(blocks)
        d = divide(signed_max(x), -float(levels))
        codes = torch.trunc(x * inverse(d) + (levels + 0.5)).clamp(0, 2 * levels - 1)
        return QuantizedGroups(codes - levels, to_fp16(d))

    return quantize_offset


def _minimum(levels: int) -> Callable[[torch.Tensor], QuantizedGroups]:
    """q4_1 / q5_1: d = (max - min) / levels, codes trunc((x - min) / d + 0.5), value d q + m."""

    def quantize_minimum(blocks: torch.Tensor) -> QuantizedGroups:
        from mixprec.kernels.reference import QuantizedGroups

        lo, hi = finite_range(blocks)
        x = torch.maximum(torch.minimum(blocks, hi), lo)
        d = divide(hi - lo, float(levels))
        codes = torch.trunc((x - lo) * inverse(d) + 0.5).clamp(0, levels)
        return QuantizedGroups(codes, to_fp16(d), minimum=to_fp16(lo))

    return quantize_minimum


def _q8_0(blocks: torch.Tensor) -> QuantizedGroups:
    """q8_0: d = amax / 127, codes roundf(x / d)."""
    from mixprec.kernels.reference import QuantizedGroups

    x = clamped(blocks)
    d = divide(x.abs().amax(dim=-1, keepdim=True), 127.0)
    return QuantizedGroups(round_away(x * inverse(d)).clamp(-127, 127), to_fp16(d))


def first_nearest_fp4(x: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    """`best_index_mxfp4`: each value's first nearest of the 16 E2M1 codes times 2 `half`
    (ties go to the earlier code, the smaller magnitude), as the E2M1 value it stands for."""
    best = x.abs()  # the error of code 0
    chosen = torch.zeros_like(x)
    for doubled in MXFP4_DOUBLED[1:]:  # a later code wins only when strictly nearer
        error = (doubled * half - x).abs()
        nearer = error < best
        best = torch.where(nearer, error, best)
        chosen = torch.where(nearer, doubled / 2, chosen)
    return chosen


def _mxfp4(blocks: torch.Tensor) -> QuantizedGroups:
    """llama.cpp's MXFP4: E8M0 exponent floor(log2f(amax)) - 2, each value the first nearest
    of the 16 codes (ties go to the smaller magnitude, where OCP rounds to even)."""
    from mixprec.kernels.reference import QuantizedGroups

    x = clamped(blocks)
    amax = x.abs().amax(dim=-1, keepdim=True)
    # log2f rounded once to float32 (computed in float64), then floored, as in C
    log2 = torch.log2(amax.double()).float()
    exponent = torch.where(amax > 0, torch.floor(log2) - 2, -127.0)  # code 0 when amax == 0
    half = torch.ldexp(torch.ones_like(amax), exponent - 1)  # GGML_E8M0_TO_FP32_HALF
    return QuantizedGroups(first_nearest_fp4(x, half), half * 2)


_QUANTIZERS: dict[str, Callable[[torch.Tensor], QuantizedGroups]] = {
    "q8_0": _q8_0,
    "q4_0": _offset(8),
    "q5_0": _offset(16),
    "q4_1": _minimum(15),
    "q5_1": _minimum(31),
    "mxfp4": _mxfp4,
}
