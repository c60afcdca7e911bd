"""One fused Triton kernel for every scaled format: group statistics, scale, element rounding,
and either the dequantized values (fake quantization) or codes and stored scales (packing).

The kernel is parametrised by a NumberFormat's fields (`format_constants`), not copied per
format. A program handles GROUPS scale groups of one (rows, cols) view, CHUNK elements at a
time; block formats fit one chunk, per-channel rows loop over theirs twice.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import triton
import triton.language as tl

from mixprec.kernels import reference
from mixprec.kernels.formats import NumberFormat
from mixprec.kernels.packing import PackedTensor, check_packable, packed_view
from mixprec.kernels.reference import (
    E4M3_MAX,
    E4M3_MIN_NORMAL,
    nv_tensor_scale,
    validated_input,
)
from mixprec.kernels.triton import check_device, launching
from mixprec.kernels.triton.elements import (
    e8m0_scale,
    encode_float,
    exponent_of,
    fp16_scale,
    round_elements,
    round_float,
    round_half_even,
)

FAMILY_FP, FAMILY_INT, FAMILY_ASYM, FAMILY_MX, FAMILY_NV = range(5)
TILE_ELEMENTS = 4096
STORED_SCALE_DTYPES = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "e8m0": torch.uint8,
    "e4m3": torch.uint8,
}
FLOAT32_MAX = tl.constexpr(3.4028234663852886e38)
NV_SCALE_MAX = tl.constexpr(E4M3_MAX)
NV_SCALE_MIN = tl.constexpr(E4M3_MIN_NORMAL)


def format_constants(fmt: NumberFormat) -> dict[str, Any]:
    """The kernel's compile-time parameters for one format."""
    if fmt.family == "mx":
        family = FAMILY_MX
    elif fmt.family == "nv":
        family = FAMILY_NV
    elif fmt.element_kind == "float":
        family = FAMILY_FP
    else:
        family = FAMILY_INT if fmt.symmetric else FAMILY_ASYM
    is_float = fmt.element_kind == "float"
    return {
        "FAMILY": family,
        "FLOAT_ELEMS": is_float,
        "MAX_NORMAL": float(fmt.max_normal),
        "MANT": fmt.mantissa_bits,
        "EXP_BITS": fmt.exponent_bits,
        "BIAS": fmt.bias,
        "MIN_EXP": fmt.min_normal_exponent if is_float else 0,
        "EMAX": fmt.emax,
        "QMAX": 0.0 if is_float else float(fmt.qmax),
        "STEP": float(2**fmt.fraction_bits),
        "BITS": fmt.element_bits,
    }


def tile_shape(group_len: int, n_groups: int) -> tuple[int, int]:
    """(GROUPS, CHUNK): powers of two with GROUPS * CHUNK about TILE_ELEMENTS."""
    chunk = min(triton.next_power_of_2(group_len), TILE_ELEMENTS)
    groups = max(1, min(TILE_ELEMENTS // chunk, triton.next_power_of_2(n_groups)))
    return groups, chunk


@triton.jit
def _stats(x, valid):
    """Per-group (row) NaN flag, finite amax, amax with inf, finite min and max."""
    nan = x != x
    mags = tl.abs(x)
    finite = valid & (mags != float("inf")) & ~nan
    has_nan = tl.max((valid & nan).to(tl.int32), axis=1)
    amax_finite = tl.max(tl.where(finite, mags, 0.0), axis=1)
    amax_all = tl.max(tl.where(valid & ~nan, mags, 0.0), axis=1)
    lo = tl.min(tl.where(finite, x, 0.0), axis=1)
    hi = tl.max(tl.where(finite, x, 0.0), axis=1)
    return has_nan, amax_finite, amax_all, lo, hi


@triton.jit
def qdq_kernel(
    x_ptr, out_ptr, codes_ptr, scale_ptr, zero_ptr, ts_ptr,
    cols, group_len, groups_per_row, n_groups,
    FAMILY: tl.constexpr, FLOAT_ELEMS: tl.constexpr, MAX_NORMAL: tl.constexpr,
    MANT: tl.constexpr, EXP_BITS: tl.constexpr, BIAS: tl.constexpr, MIN_EXP: tl.constexpr,
    EMAX: tl.constexpr, QMAX: tl.constexpr, STEP: tl.constexpr, BITS: tl.constexpr,
    PACK: tl.constexpr, GROUPS: tl.constexpr, CHUNK: tl.constexpr,
):  # fmt: skip
    """PACK false: write dequantized values; true: codes, stored scales and zero points."""
    g = tl.program_id(0) * GROUPS + tl.arange(0, GROUPS)
    live = g < n_groups
    row = (g // groups_per_row).to(tl.int64)
    first_col = (g % groups_per_row) * group_len
    base = row * cols + first_col
    j = tl.arange(0, CHUNK)
    has_nan = tl.zeros([GROUPS], tl.int32)
    amax_finite = tl.zeros([GROUPS], tl.float32)
    amax_all = tl.zeros([GROUPS], tl.float32)
    lo = tl.zeros([GROUPS], tl.float32)
    hi = tl.zeros([GROUPS], tl.float32)
    for start in range(0, group_len, CHUNK):
        jj = start + j
        valid = live[:, None] & (jj < group_len)[None, :] & ((first_col[:, None] + jj) < cols)
        x = tl.load(x_ptr + base[:, None] + jj[None, :], mask=valid, other=0.0)
        n, af, aa, lo_c, hi_c = _stats(x, valid)
        has_nan = tl.maximum(has_nan, n)
        amax_finite = tl.maximum(amax_finite, af)
        amax_all = tl.maximum(amax_all, aa)
        lo = tl.minimum(lo, lo_c)
        hi = tl.maximum(hi, hi_c)
    zero = tl.zeros([GROUPS], tl.float32)
    factor = tl.zeros([GROUPS], tl.float32)
    ts_e4m3 = tl.zeros([GROUPS], tl.float32)
    biased = tl.zeros([GROUPS], tl.int32)
    if FAMILY == 0:
        raw = tl.math.div_rn(tl.minimum(amax_finite, FLOAT32_MAX), MAX_NORMAL)
        scale = tl.where(amax_finite == 0.0, 1.0, raw)
    elif FAMILY == 1:
        raw = fp16_scale(tl.math.div_rn(amax_finite, QMAX))
        scale = tl.where(amax_finite == 0.0, 1.0, raw)
    elif FAMILY == 2:
        span = hi - lo
        scale = tl.where(span == 0.0, 1.0, fp16_scale(tl.math.div_rn(span, QMAX)))
        zero = round_half_even(tl.minimum(tl.maximum(tl.math.div_rn(-lo, scale), 0.0), QMAX))
    elif FAMILY == 3:
        unbiased = tl.minimum(tl.maximum(exponent_of(amax_all) - EMAX, -127), 128)
        biased = tl.where(has_nan > 0, 255, unbiased + 127)
        scale = e8m0_scale(biased)
    else:
        ts = tl.load(ts_ptr)
        block_scale = tl.math.div_rn(amax_finite, MAX_NORMAL)
        e4m3 = tl.minimum(tl.maximum(tl.math.div_rn(block_scale, ts), NV_SCALE_MIN), NV_SCALE_MAX)
        scale = tl.where(ts != ts, float("nan"), round_float(e4m3, NV_SCALE_MAX, 3, -6))
        factor = tl.math.div_rn(tl.math.div_rn(1.0, ts), scale)
        ts_e4m3 = ts * scale
    scale = tl.where(has_nan > 0, float("nan"), scale)
    factor = tl.where(has_nan > 0, float("nan"), factor)
    for start in range(0, group_len, CHUNK):
        jj = start + j
        valid = live[:, None] & (jj < group_len)[None, :] & ((first_col[:, None] + jj) < cols)
        offsets = base[:, None] + jj[None, :]
        x = tl.load(x_ptr + offsets, mask=valid, other=0.0)
        if FAMILY == 4:
            y = x * factor[:, None]
            clamped = tl.minimum(tl.maximum(y, -MAX_NORMAL), MAX_NORMAL)
            elems = round_elements(clamped, FLOAT_ELEMS, MAX_NORMAL, MANT, MIN_EXP, QMAX, STEP)
            out = elems * ts_e4m3[:, None]
        elif FAMILY == 2:
            y = tl.math.div_rn(x, scale[:, None])
            z = zero[:, None]
            elems = round_half_even(tl.minimum(tl.maximum(y, -z), QMAX - z)) + z
            out = (elems - z) * scale[:, None]
        else:
            y = tl.math.div_rn(x, scale[:, None])
            elems = round_elements(y, FLOAT_ELEMS, MAX_NORMAL, MANT, MIN_EXP, QMAX, STEP)
            out = elems * scale[:, None]
        if PACK:
            if FLOAT_ELEMS:
                code = encode_float(elems, EXP_BITS, MANT, BIAS, MIN_EXP)
            elif FAMILY == 2:
                code = elems.to(tl.int32)
            else:
                code = (elems * STEP).to(tl.int32) & ((1 << BITS) - 1)
            tl.store(codes_ptr + offsets, code.to(tl.uint8), mask=valid)
        else:
            tl.store(out_ptr + offsets, tl.where(y != y, float("nan"), out), mask=valid)
    if PACK:
        if FAMILY == 3:
            stored = biased.to(tl.uint8)
        elif FAMILY == 4:
            stored = encode_float(scale, 4, 3, 7, -6).to(tl.uint8)
        else:
            stored = scale.to(scale_ptr.dtype.element_ty)
        tl.store(scale_ptr + g, stored, mask=live)
        if FAMILY == 2:
            tl.store(zero_ptr + g, zero.to(tl.uint8), mask=live)


def _launch(x: torch.Tensor, fmt: NumberFormat, pack_codes: bool) -> tuple[torch.Tensor, ...]:
    """Run the kernel over the format's (rows, cols) view of float32 `x`."""
    check_device(x)
    rows, cols = packed_view(x, fmt)
    group_len = fmt.block_size or cols
    per_row = math.ceil(cols / group_len)
    n_groups = rows * per_row
    flat = x.reshape(rows, cols).contiguous()
    ts = nv_tensor_scale(flat, fmt).reshape(1) if fmt.family == "nv" else flat.new_ones(1)
    out = flat.new_empty(1) if pack_codes else torch.empty_like(flat)
    codes = flat.new_empty((rows, cols), dtype=torch.uint8) if pack_codes else out
    scales = flat.new_empty((rows, per_row), dtype=STORED_SCALE_DTYPES[fmt.scale_format])
    zeros = flat.new_empty((rows, per_row), dtype=torch.uint8)
    groups, chunk = tile_shape(group_len, n_groups)
    with launching():
        qdq_kernel[(triton.cdiv(n_groups, groups),)](
            flat, out, codes, scales, zeros, ts, cols, group_len, per_row, n_groups,
            **format_constants(fmt), PACK=pack_codes, GROUPS=groups, CHUNK=chunk,
        )  # fmt: skip
    return out, codes, scales, zeros, ts


def quantize_dequantize(x: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """Triton twin of reference.quantize_dequantize: same bits, float32, same shape."""
    x = validated_input(x, fmt)
    if not fmt.is_quantized:
        return reference.quantize_dequantize(x, fmt)
    return _launch(x, fmt, pack_codes=False)[0].reshape(x.shape)


def pack(x: torch.Tensor, fmt: NumberFormat) -> PackedTensor:
    """Triton twin of packing.pack: the same bytes, computed on the device."""
    x = check_packable(x, fmt)
    _, codes, scales, zeros, ts = _launch(x, fmt, pack_codes=True)
    return PackedTensor(
        fmt,
        tuple(x.shape),
        pack_bits(codes, fmt.element_bits),
        scales,
        zeros if not fmt.symmetric else None,
        ts.reshape(()) if fmt.family == "nv" else None,
    )


@triton.jit
def _pack_bits_kernel(
    codes_ptr, out_ptr, cols, nbytes, total, BITS: tl.constexpr, BLOCK: tl.constexpr
):
    """One output byte per lane: OR together the slices of every code that overlaps it."""
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = idx < total
    row = idx // nbytes
    byte = idx % nbytes
    first = (byte * 8) // BITS
    acc = tl.zeros([BLOCK], tl.int32)
    for t in tl.static_range(0, (8 + BITS - 1) // BITS + 1):
        col = first + t
        shift = (col * BITS - byte * 8).to(tl.int32)
        ok = live & (col < cols) & (shift < 8)
        code = tl.load(codes_ptr + row * cols + col, mask=ok, other=0).to(tl.int32)
        part = tl.where(shift >= 0, code << tl.maximum(shift, 0), code >> tl.maximum(-shift, 0))
        acc = acc | tl.where(ok, part & 0xFF, 0)
    tl.store(out_ptr + idx, acc.to(tl.uint8), mask=live)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Triton twin of packing.pack_bits."""
    if bits == 8:
        return codes
    rows, cols = codes.shape
    nbytes = math.ceil(cols * bits / 8)
    out = codes.new_empty((rows, nbytes))
    total = rows * nbytes
    with launching():
        _pack_bits_kernel[(triton.cdiv(total, TILE_ELEMENTS),)](
            codes, out, cols, nbytes, total, BITS=bits, BLOCK=TILE_ELEMENTS
        )
    return out
