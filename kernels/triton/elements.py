"""Element-level Triton helpers shared by every kernel: rounding, encoding and decoding.

Each helper repeats one torch reference operation with IEEE-exact steps only: divisions use
`div_rn`, rounding adds and subtracts 1.5 * 2^23 (exact ties-to-even for |v| < 2^22), and
powers of two are built from exponent bits, so results match the reference bit for bit.
"""

from __future__ import annotations

import triton
import triton.language as tl

# 1.5 * 2^23: adding it leaves an fp32 with no fraction bits below 1
MAGIC = tl.constexpr(12582912.0)
SMALLEST_E8M0 = tl.constexpr(2.0**-127)  # the E8M0 scale of code 0 (an fp32 subnormal)


@triton.jit
def copysign(mags, sign_of):
    """`mags` with the sign bit of `sign_of` (keeps -0.0, as torch.copysign does)."""
    mag_bits = mags.to(tl.int32, bitcast=True) & 0x7FFFFFFF
    sign_bits = (sign_of.to(tl.int32, bitcast=True) >> 31) << 31
    return (mag_bits | sign_bits).to(tl.float32, bitcast=True)


@triton.jit
def round_half_even(v):
    """torch.round for |v| < 2^22: nearest integer, ties to even, sign of zero kept."""
    return copysign((tl.abs(v) + MAGIC) - MAGIC, v)


@triton.jit
def pow2(exponent):
    """2^exponent as fp32 for integer exponents in [-126, 127]."""
    return ((exponent + 127) << 23).to(tl.float32, bitcast=True)


@triton.jit
def e8m0_scale(biased):
    """The fp32 value of E8M0 codes: 2^(code - 127), 2^-127 for 0, NaN for 255."""
    normal = (biased << 23).to(tl.float32, bitcast=True)
    scale = tl.where(biased == 0, SMALLEST_E8M0, normal)
    return tl.where(biased == 255, float("nan"), scale)


@triton.jit
def exponent_of(mags):
    """floor(log2(mags)) for normal fp32 magnitudes; -127 for zero and subnormals."""
    return ((mags.to(tl.int32, bitcast=True) >> 23) & 0xFF) - 127


@triton.jit
def round_float(y, MAX_NORMAL: tl.constexpr, MANT: tl.constexpr, MIN_EXP: tl.constexpr):
    """reference.round_float_elements: nearest grid value of a float element type."""
    mags = tl.minimum(tl.abs(y), MAX_NORMAL)
    binade = tl.maximum(exponent_of(mags), MIN_EXP)
    quantum = pow2(binade - MANT)
    return copysign(round_half_even(tl.math.div_rn(mags, quantum)) * quantum, y)


@triton.jit
def round_int(y, QMAX: tl.constexpr, STEP: tl.constexpr):
    """reference.round_int_elements (clamping first is equal: the bounds are integers)."""
    v = tl.minimum(tl.maximum(y * STEP, -QMAX), QMAX)
    return tl.math.div_rn(round_half_even(v), STEP)


@triton.jit
def round_elements(
    y,
    FLOAT_ELEMS: tl.constexpr,
    MAX_NORMAL: tl.constexpr,
    MANT: tl.constexpr,
    MIN_EXP: tl.constexpr,
    QMAX: tl.constexpr,
    STEP: tl.constexpr,
):
    if FLOAT_ELEMS:
        return round_float(y, MAX_NORMAL, MANT, MIN_EXP)
    else:
        return round_int(y, QMAX, STEP)


@triton.jit
def fp16_scale(raw):
    """reference._fp16_scale: clamp into FP16's finite nonzero range, round to FP16."""
    clamped = tl.minimum(tl.maximum(raw, 5.9604644775390625e-08), 65504.0)
    return clamped.to(tl.float16).to(tl.float32)


@triton.jit
def encode_float(
    value, EXP_BITS: tl.constexpr, MANT: tl.constexpr, BIAS: tl.constexpr, MIN_EXP: tl.constexpr
):
    """A grid value -> its sign/exponent/mantissa code (packing.encode_elements)."""
    sign = (value.to(tl.int32, bitcast=True) >> 31) & 1
    mags = tl.abs(value)
    binade = exponent_of(mags)
    normal = binade >= MIN_EXP
    field = tl.where(normal, binade + BIAS, 0)
    mant_normal = (mags.to(tl.int32, bitcast=True) >> (23 - MANT)) & ((1 << MANT) - 1)
    below = tl.where(normal, 0.0, mags)  # keeps the cast below in int32 range
    mant_subnormal = (below * pow2(tl.zeros_like(binade) + (MANT - MIN_EXP))).to(tl.int32)
    mant = tl.where(normal, mant_normal, mant_subnormal)
    return (sign << (EXP_BITS + MANT)) | (field << MANT) | mant


@triton.jit
def decode_float(
    code, EXP_BITS: tl.constexpr, MANT: tl.constexpr, BIAS: tl.constexpr, MIN_EXP: tl.constexpr
):
    """A sign/exponent/mantissa code -> its value (packing.decode_elements)."""
    mant = code & ((1 << MANT) - 1)
    field = (code >> MANT) & ((1 << EXP_BITS) - 1)
    significand = tl.where(field == 0, mant, mant + (1 << MANT)).to(tl.float32)
    exponent = tl.where(field == 0, MIN_EXP, field - BIAS)
    mags = significand * pow2(exponent - MANT)
    sign_bits = ((code >> (EXP_BITS + MANT)) & 1) << 31  # set by bits: compiled, -x of 0 is +0
    return (mags.to(tl.int32, bitcast=True) | sign_bits).to(tl.float32, bitcast=True)


@triton.jit
def decode_int(code, BITS: tl.constexpr, SYMMETRIC: tl.constexpr, STEP: tl.constexpr):
    """A two's complement (or unsigned) code -> its element value."""
    if SYMMETRIC:
        half = 1 << (BITS - 1)
        signed = tl.where(code >= half, code - 2 * half, code)
        return tl.math.div_rn(signed.to(tl.float32), STEP)
    else:
        return code.to(tl.float32)


@triton.jit
def extract_code(packed_row_ptr, col, nbytes, mask, BITS: tl.constexpr):
    """Code `col` of a little-endian bit-stream row (codes may straddle two bytes)."""
    position = col.to(tl.int64) * BITS
    first = position >> 3
    lo = tl.load(packed_row_ptr + first, mask=mask, other=0).to(tl.int32)
    if BITS == 8:
        return lo
    else:
        hi_mask = mask & (first + 1 < nbytes)
        hi = tl.load(packed_row_ptr + first + 1, mask=hi_mask, other=0).to(tl.int32)
        return ((lo | (hi << 8)) >> (position & 7).to(tl.int32)) & ((1 << BITS) - 1)
