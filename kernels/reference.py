"""Torch reference quantize-dequantize for every format: the ground truth kernels must match.

Conventions (float32 in, float32 out, same shape):
- elements round to nearest, ties to even, and saturate to +-max normal; NaN propagates;
- per-channel formats scale each output channel (dim 0) by its amax; block/group formats scale
  each run of `block_size` elements of the last dim; a last dim that is not a multiple of the
  block is zero-padded internally and the padding is dropped from the result;
- a NaN anywhere in a scale group makes that whole group NaN (its scale is NaN);
- per-channel, group and NV formats take the group amax over finite values, so +-inf saturates
  to the largest magnitude of its group; MX formats follow OCP MX v1.0 / torchao instead: the
  E8M0 exponent of an inf amax is 128 - emax_elem (NaN scale when that exceeds 127);
- an all-zero group gets scale 1 (MX: 2^-127, the smallest E8M0) and stays zero;
- llama.cpp's types (family "ggml") are computed as llama.cpp computes them instead
  (kernels/ggml.py, kernels/kquants.py), compressed-tensors' schemes (family "ct") and ModelOpt's
  (family "mo") as they do (kernels/ct.py, kernels/modelopt.py), keeping the inf/NaN rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from mixprec.errors import MixprecError

if TYPE_CHECKING:
    from mixprec.kernels.formats import NumberFormat

FP16_MAX = 65504.0
FP16_MIN_SUBNORMAL = 2.0**-24
E4M3_MAX = 448.0
E4M3_MIN_NORMAL = 2.0**-6
F32_EXPONENT_BIAS = 127
E8M0_NAN = 255
_NATIVE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class QuantizedGroups:
    """A tensor split into scale groups (one per row), before the scales are multiplied back.

    `elements` are element-grid values (float32; asymmetric: unsigned codes); one `scale` per
    row, plus an integer `zero` point (asymmetric), a per-tensor scale (NV) or a stored
    `minimum` added back (llama.cpp's q4_1 / q5_1), or a `global_scale` that divides the block
    scales (compressed-tensors' NVFP4); K-quants also keep each super-block's fp16
    `super_scale` (and `super_minimum`), of which the sub-block scales are integer multiples.
    """

    elements: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None = None
    tensor_scale: torch.Tensor | None = None
    minimum: torch.Tensor | None = None
    super_scale: torch.Tensor | None = None
    super_minimum: torch.Tensor | None = None
    global_scale: torch.Tensor | None = None

    def values(self) -> torch.Tensor:
        """Dequantized rows, with exactly the reference's arithmetic."""
        if self.global_scale is not None:
            return self.elements * divide(self.scale, self.global_scale)
        if self.minimum is not None:
            return self.elements * self.scale + self.minimum
        if self.zero is not None:
            return (self.elements - self.zero) * self.scale
        if self.tensor_scale is not None:
            return self.elements * (self.tensor_scale * self.scale)
        return self.elements * self.scale


def quantize_dequantize(
    x: torch.Tensor, fmt: NumberFormat, importance: torch.Tensor | None = None
) -> torch.Tensor:
    """Fake-quantize `x` under `fmt` and return float32 of the same shape (`importance`: see
    `quantize`)."""
    x = validated_input(x, fmt)
    if fmt.family == "native":
        return x.to(_NATIVE_DTYPES[fmt.name]).to(torch.float32)
    return dequantize(quantize(x, fmt, importance), x.shape, fmt)


def group_rows(x: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """The 2-D (rows, cols) view scales apply to: per output channel, or last-dim runs (a
    per-tensor format's rows all carry the one scale)."""
    if fmt.block_size == 0:
        return x.reshape(x.shape[0], -1)
    return x.reshape(-1, x.shape[-1])


def quantize(
    x: torch.Tensor,
    fmt: NumberFormat,
    importance: torch.Tensor | None = None,
    amax: torch.Tensor | None = None,
) -> QuantizedGroups:
    """Scales and element values of `x` (float32), one scale group per row of the result.
    `importance` (llama.cpp's importance matrix for this weight, per input column) changes
    the search of the llama.cpp types that use one; every other format ignores it. `amax` (a
    static input format's calibrated range) fixes its tensor-wide scale instead of `x`'s."""
    if fmt.per_tensor:
        return per_tensor(group_rows(x, fmt), fmt, amax)
    if fmt.block_size == 0:
        return _per_group(group_rows(x, fmt), fmt)
    if fmt.family == "ggml":
        from mixprec.kernels import ggml  # ggml builds QuantizedGroups from this module
        from mixprec.kernels.ggml_weighted import weighting

        blocks = to_blocks(x, fmt.row_multiple)  # K-quants: super-blocks
        weights = None if importance is None else weighting(x, importance, fmt)
        return ggml.quantize(blocks, fmt, weights)
    if fmt.family == "ct":
        from mixprec.kernels import ct

        if fmt.block_rows:
            return ct.quantize_tiles(x, fmt)
        return ct.quantize(to_blocks(x, fmt.block_size), fmt, amax)
    if fmt.family == "mo":
        from mixprec.kernels import modelopt

        return modelopt.quantize(to_blocks(x, fmt.block_size), fmt, amax)
    blocks = to_blocks(x, fmt.block_size)
    if fmt.family == "mx":
        return _mx(blocks, fmt)
    if fmt.family == "nv":
        return _nv(blocks, fmt)
    return _per_group(blocks, fmt)


def dequantize(q: QuantizedGroups, shape: torch.Size, fmt: NumberFormat) -> torch.Tensor:
    """Multiply the scales back and return the input's shape (block padding dropped)."""
    out = q.values()
    if fmt.block_size == 0:
        return out.reshape(shape)
    last = shape[-1]
    rows = out.reshape(-1, out.numel() // (shape.numel() // last))
    return rows[:, :last].reshape(shape)


def divide(a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
    """`a / b` correctly rounded on every device: CUDA divides a tensor by a number (or by a
    0-dim CPU tensor) as a product with its reciprocal, one rounding more than the CPU, and torch
    computes a number over a tensor that way everywhere."""
    if not isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor)
        a = torch.full_like(b, a)
    if not isinstance(b, torch.Tensor):
        b = torch.full([1] * a.dim(), b, dtype=a.dtype, device=a.device)
    elif a.dim() == 0 and (b.dim() > 0 or a.device.type == "cpu"):
        a = a.to(b.device)  # a scalar takes the other operand's device
    else:
        b = b.to(a.device)
    if a.dim() == 0 and b.dim() == 0:  # one 0-dim over another is a scalar to CUDA too
        return torch.div(a.reshape(1), b.reshape(1)).reshape(())
    if b.dim() == 0:
        b = b.reshape([1] * a.dim())
    return torch.div(a, b)


def round_float_elements(y: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """Round to the nearest value of a float element grid (ties to even), saturating."""
    mags = y.abs().clamp(max=fmt.max_normal)
    _, exponent = torch.frexp(mags)  # mags = m * 2^exponent with m in [0.5, 1)
    binade = (exponent - 1).clamp(min=fmt.min_normal_exponent)
    quantum = torch.ldexp(torch.ones_like(mags), binade - fmt.mantissa_bits)
    return torch.copysign(torch.round(mags / quantum) * quantum, y)


def round_int_elements(y: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """Round to symmetric integer codes (times 2^-fraction_bits), saturating at +-qmax."""
    step = 2.0**fmt.fraction_bits
    return torch.clamp(torch.round(y * step), -fmt.qmax, fmt.qmax) / step


def round_elements(y: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    if fmt.element_kind == "float":
        return round_float_elements(y, fmt)
    return round_int_elements(y, fmt)


def finite_amax(groups: torch.Tensor) -> torch.Tensor:
    """Row-wise max |x| over finite values; NaN still propagates."""
    mags = groups.abs()
    return torch.where(torch.isinf(mags), 0.0, mags).amax(dim=-1, keepdim=True)


def validated_input(x: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise MixprecError(f"expected a torch.Tensor to quantize, got {type(x).__name__}")
    if x.dim() == 0 or x.numel() == 0:
        raise MixprecError(
            f"shape {tuple(x.shape)} cannot be quantized with {fmt.name}: "
            "need at least one dimension and one element"
        )
    if not x.is_floating_point():
        raise MixprecError(f"dtype {x.dtype} cannot be quantized: need a floating-point tensor")
    return x.to(torch.float32)


def to_blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """Rows of `block` consecutive last-dim elements (each row zero-padded to whole blocks)."""
    last = x.shape[-1]
    pad = -last % block
    flat = x.reshape(-1, last)
    if pad:
        flat = F.pad(flat, (0, pad))
    return flat.reshape(-1, block)


def _fp16_scale(raw: torch.Tensor) -> torch.Tensor:
    """Round a positive scale to FP16, keeping it inside FP16's finite nonzero range."""
    return raw.clamp(FP16_MIN_SUBNORMAL, FP16_MAX).to(torch.float16).to(torch.float32)


def _per_group(groups: torch.Tensor, fmt: NumberFormat) -> QuantizedGroups:
    """One scale per row: FP32 scale for float elements, FP16 (and zero point) for integers."""
    if not fmt.symmetric:
        return _asymmetric(groups, fmt)
    amax = finite_amax(groups)
    if fmt.element_kind == "float":
        scale = amax_scale(amax, fmt)
    else:
        scale = torch.where(amax == 0, 1.0, _fp16_scale(divide(amax, fmt.qmax)))
    return QuantizedGroups(round_elements(groups / scale, fmt), scale)


def per_tensor(rows: torch.Tensor, fmt: NumberFormat, amax: torch.Tensor | None = None
               ) -> QuantizedGroups:  # fmt: skip
    """One FP32 scale for every row (a static input's: from the calibrated `amax`); the
    arithmetic of compressed-tensors' and ModelOpt's FP8 per tensor (divide, round, multiply)."""
    if amax is None:
        amax = finite_amax(rows.reshape(1, -1))
    scale = amax_scale(amax.to(rows.device), fmt).reshape(1, 1).expand(rows.shape[0], 1)
    return QuantizedGroups(round_elements(rows / scale, fmt), scale)


def amax_scale(amax: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """The FP32 scale of a range `amax` over float elements: amax / max element (1 for a zero
    range)."""
    amax = amax.to(torch.float32)
    raw = divide(amax.clamp(max=torch.finfo(torch.float32).max), fmt.max_normal)
    return torch.where(amax == 0, 1.0, raw)


def static_quantize_dequantize(x: torch.Tensor, fmt: NumberFormat, amax: float) -> torch.Tensor:
    """Fake-quantize `x` (float32 out) under a static input format, whose tensor-wide scale is
    fixed by the calibrated `amax` (a static input scale), not by `x`."""
    x = validated_input(x, fmt)
    calibrated = torch.tensor(amax, dtype=torch.float32)
    return dequantize(quantize(x, fmt, amax=calibrated), x.shape, fmt)


def static_scale(amax: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """The tensor-wide scale a static input format stores for a calibrated range `amax`: FP8's
    amax / 448, compressed-tensors' NVFP4 global scale 2688 / amax, ModelOpt's NVFP4 input scale
    amax / 2688."""
    if fmt.per_tensor:
        return amax_scale(amax, fmt)
    if fmt.family == "mo":
        return nv_tensor_scale(amax.to(torch.float32).reshape(1, 1), fmt)
    from mixprec.kernels import ct

    return ct.nvfp4_global_scale(amax.to(torch.float32), fmt)


def _asymmetric(groups: torch.Tensor, fmt: NumberFormat) -> QuantizedGroups:
    """Unsigned codes with an FP16 scale and an integer zero point; the range always holds 0."""
    finite = torch.where(torch.isinf(groups), 0.0, groups)
    lo = finite.amin(dim=-1, keepdim=True).clamp(max=0.0)
    hi = finite.amax(dim=-1, keepdim=True).clamp(min=0.0)
    span = hi - lo
    scale = torch.where(span == 0, 1.0, _fp16_scale(divide(span, fmt.qmax)))
    zero = torch.clamp(torch.round(-lo / scale), 0, fmt.qmax)
    codes = torch.clamp(torch.round(groups / scale) + zero, 0, fmt.qmax)
    return QuantizedGroups(codes, scale, zero=zero)


def mx_scale(blocks: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """E8M0 block scale 2^(floor(log2 amax) - emax_elem) as float32 (NaN for a NaN block)."""
    amax = blocks.abs().amax(dim=-1, keepdim=True)
    exponent_field = torch.bitwise_right_shift(amax.view(torch.int32), 23) & 0xFF
    unbiased = (exponent_field - F32_EXPONENT_BIAS - fmt.emax).clamp(
        -F32_EXPONENT_BIAS, F32_EXPONENT_BIAS + 1
    )
    biased = unbiased + F32_EXPONENT_BIAS
    biased = torch.where(torch.isnan(amax), E8M0_NAN, biased)
    normal = torch.bitwise_left_shift(biased, 23).view(torch.float32)
    scale = torch.where(biased == 0, 2.0**-127, normal)
    return torch.where(biased == E8M0_NAN, float("nan"), scale)


def _mx(blocks: torch.Tensor, fmt: NumberFormat) -> QuantizedGroups:
    scale = mx_scale(blocks, fmt)
    return QuantizedGroups(round_elements(blocks / scale, fmt), scale)


def nv_tensor_scale(x: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """FP32 per-tensor scale amax / (448 * element max); 1 for an all-zero tensor."""
    amax = finite_amax(x.reshape(1, -1)).reshape(())
    return torch.where(amax == 0, 1.0, divide(amax, E4M3_MAX * fmt.max_normal))


def _nv(blocks: torch.Tensor, fmt: NumberFormat) -> QuantizedGroups:
    """Two-level scaling: E4M3 scale per block on top of an FP32 per-tensor scale."""
    tensor_scale = nv_tensor_scale(blocks, fmt)
    block_scale = divide(finite_amax(blocks), fmt.max_normal)
    e4m3 = divide(block_scale, tensor_scale).clamp(E4M3_MIN_NORMAL, E4M3_MAX)
    e4m3 = e4m3.to(torch.float8_e4m3fn).to(torch.float32)
    scaled = blocks * ((1.0 / tensor_scale) / e4m3)
    codes = round_elements(scaled.clamp(-fmt.max_normal, fmt.max_normal), fmt)
    return QuantizedGroups(codes, e4m3, tensor_scale=tensor_scale)
