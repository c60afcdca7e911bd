"""compressed-tensors' schemes (family "ct"), quantized as compressed-tensors computes them
(`generate_gparam`, `calculate_qparams`, then `fake_quantize`) for what vLLM loads: W8A16, W4A16,
W4A16_ASYM, NVFP4A16, MXFP4A16, MXFP8A16 and FP8_BLOCK (weights per 128 x 128 tile, inputs per
128: an FP32 scale amax / 448, E4M3 elements; tiles at the edges are partial, as its padding
with zeros makes them).

Their grid is signed, [-2^(b-1), 2^(b-1) - 1], and the symmetric scale is amax / (2^b - 1) * 2
(amax / 7.5 for INT4), so the group's largest magnitude rounds to 2^(b-1) and is clipped to
2^(b-1) - 1: these are not mixprec's int formats (amax / qmax, FP16 scale). Scales are float32
(the arithmetic of a float32 weight); a zero scale becomes float32's eps, as there. mixprec's
own rules for what compressed-tensors leaves undefined: +-inf saturates, a NaN makes its group NaN.

NVFP4A16 is not mixprec's nvfp4 either: its global scale 2688 / amax divides the E4M3 block
scale (global * amax_block / 6, clamped to 448, a zero becoming 0.125), so an element is
x / (block / global); an all-zero tensor gets global scale 1, and a NaN makes the tensor NaN.

MXFP4A16 / MXFP8A16 are not OCP MX either: the E8M0 exponent is the group amax rounded to a power
of two (up from 1.75 times one, as E2M1's single mantissa bit rounds, for both element types)
minus emax, where OCP floors log2(amax); an all-zero group gets 2^-127.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mixprec.kernels.reference import (
    E4M3_MAX,
    QuantizedGroups,
    divide,
    finite_amax,
    round_float_elements,
    to_blocks,
)

if TYPE_CHECKING:
    from mixprec.kernels.formats import NumberFormat

EPS = torch.finfo(torch.float32).eps
E4M3_EPS = 0.125  # compressed-tensors' stand-in for an E4M3 scale that rounds to zero
MX_ROUNDING = 1 << 21  # 1 << (23 - 1 - 1): float32's mantissa, E2M1's one mantissa bit
MX_EXPONENT_MASK = ((1 << 9) - 1) << 23  # sign and exponent bits of a float32


def quantize(groups: torch.Tensor, fmt: NumberFormat, amax: torch.Tensor | None = None
             ) -> QuantizedGroups:  # fmt: skip
    """Codes and scales of (n, group) float32 rows under compressed-tensors scheme `fmt`
    (`amax`: NVFP4's calibrated range, for a static global scale)."""
    if fmt.scale_format == "e8m0":
        return _mx(groups, fmt)
    if fmt.scale_format == "fp32" and fmt.element_kind == "float":  # FP8 per 128
        scale = _fp8_scale(finite_amax(groups), fmt)
        return QuantizedGroups(round_float_elements(groups / scale, fmt), scale)
    if fmt.element_kind == "float":
        return _nvfp4(groups, fmt, amax)
    low, high = -(2 ** (fmt.element_bits - 1)), 2 ** (fmt.element_bits - 1) - 1
    finite = torch.where(torch.isinf(groups), 0.0, groups)  # +-inf saturates; NaN poisons
    lo = torch.minimum(finite.amin(dim=-1, keepdim=True), torch.zeros_like(groups[:, :1]))
    hi = torch.maximum(finite.amax(dim=-1, keepdim=True), torch.zeros_like(groups[:, :1]))
    span = float(high - low)
    if fmt.symmetric:
        scale = _nonzero(divide(torch.maximum(lo.abs(), hi.abs()), span / 2))
        codes = torch.round(torch.clamp(groups / scale, low, high))
        return QuantizedGroups(codes, scale)
    scale = _nonzero(divide(hi - lo, span))
    zero = torch.round(torch.clamp(low - lo / scale, low, high))  # stored as int8
    codes = torch.round(torch.clamp(groups / scale + zero, low, high))
    # unsigned codes and zero point (value (code - zero) * scale is unchanged)
    return QuantizedGroups(codes - low, scale, zero=zero - low)


def quantize_tiles(x: torch.Tensor, fmt: NumberFormat) -> QuantizedGroups:
    """FP8_BLOCK weights: one scale per tile of `block_rows` x `block_size`, given as the row
    blocks of `block_size` the other formats use (each carrying its tile's scale)."""
    rows_per, cols_per = fmt.block_rows, fmt.block_size
    matrix = x.reshape(-1, x.shape[-1])
    rows, cols = matrix.shape
    padded = torch.nn.functional.pad(matrix, (0, -cols % cols_per, 0, -rows % rows_per))
    tiles = padded.reshape(padded.shape[0] // rows_per, rows_per, -1, cols_per).transpose(1, 2)
    amax = finite_amax(tiles.reshape(*tiles.shape[:2], -1)).squeeze(-1)  # (tile rows, tiles)
    scale = _fp8_scale(amax, fmt).repeat_interleave(rows_per, dim=0)[:rows]
    blocks = to_blocks(matrix, cols_per)
    scale = scale.reshape(-1, 1)
    return QuantizedGroups(round_float_elements(blocks / scale, fmt), scale)


def nvfp4_global_scale(amax: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """NVFP4's global scale (`generate_gparam`): 2688 / amax as torch divides a number by a
    tensor (one rounding more), 1 for an all-zero range."""
    tiny = torch.finfo(torch.float32).tiny
    scale = torch.reciprocal(amax.clamp(min=tiny)) * (E4M3_MAX * fmt.max_normal)
    return torch.where(torch.isinf(scale), 1.0, scale)


def _nvfp4(blocks: torch.Tensor, fmt: NumberFormat, amax: torch.Tensor | None = None
           ) -> QuantizedGroups:  # fmt: skip
    if amax is None:
        amax = finite_amax(blocks.reshape(1, -1))
    global_scale = nvfp4_global_scale(amax.reshape(()).to(blocks.device), fmt)
    block = global_scale * divide(finite_amax(blocks), fmt.max_normal)
    e4m3 = block.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).to(torch.float32)
    e4m3 = torch.where(e4m3 == 0, E4M3_EPS, e4m3)
    codes = round_float_elements(blocks / divide(e4m3, global_scale), fmt)
    return QuantizedGroups(codes, e4m3, global_scale=global_scale)


def _mx(blocks: torch.Tensor, fmt: NumberFormat) -> QuantizedGroups:
    """`generate_mx_scales`: amax's float32 bits plus a quarter of the mantissa's range, masked to
    the exponent (a power of two, rounded up from 1.75), then 127 + log2 - emax in 0..255."""
    amax = finite_amax(blocks)
    carried = amax.contiguous().view(torch.int32) + MX_ROUNDING
    power = torch.bitwise_and(carried, MX_EXPONENT_MASK).view(torch.float32)
    code = torch.round((127 + torch.floor(torch.log2(power)) - fmt.emax).clamp(0, 255))
    scale = torch.ldexp(torch.ones_like(code), code - 127)
    scale = torch.where(torch.isnan(amax), torch.nan, scale)
    return QuantizedGroups(round_float_elements(blocks / scale, fmt), scale)


def _fp8_scale(amax: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """FP8's FP32 scale amax / 448 (`calculate_qparams`), a zero one becoming eps."""
    return _nonzero(divide(amax, fmt.max_normal))


def _nonzero(scale: torch.Tensor) -> torch.Tensor:
    return torch.where(scale == 0, EPS, scale)
