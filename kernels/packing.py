"""Packed storage of a quantized tensor (torch reference): bit-packed codes plus stored scales.

Layout (the Triton kernels read and write the same bytes):
- the tensor is seen as 2-D (rows, cols): per-channel formats use (shape[0], rest), block and
  group formats (numel / last dim, last dim); a scale group never crosses a row;
- `codes` is uint8 (rows, ceil(cols * bits / 8)); each row is a little-endian bit stream in
  which element j takes bits [j * bits, (j + 1) * bits) (bit 0 is the low bit of byte 0);
- element codes: float elements are their OCP encoding (sign, exponent, mantissa), symmetric
  integers two's complement, asymmetric integers the unsigned code;
- `scales` is (rows, groups per row), (row tiles, tiles per row) for a tiled format: float32
  for FP per-channel formats and compressed-tensors' FP8 blocks, float16 for integer
  formats, uint8 E8M0 biased exponents for MX (0 means 2^-127), uint8 E4M3 bits for NV;
- `zero_points` is uint8 (rows, groups per row) for asymmetric formats; `minimums` float16
  (rows, groups per row) for llama.cpp's q4_1 / q5_1; `tensor_scale` is the FP32 per-tensor
  scale of NV formats (compressed-tensors' NVFP4: its global scale, which divides) and the only
  scale of a per-tensor format (whose `scales` are then empty); llama.cpp's
  K-quants keep each sub-block's scale (d * sc) and minimum as float32 (exact; llama.cpp's own
  files pack them into 4/6-bit codes);
Packing needs finite input (FP4/FP6 have no encoding for inf or NaN); integer codes have no -0.0,
so unpacking gives +0.0 where fake quantization gave -0.0 (equal values, other sign bit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mixprec.errors import MixprecError
from mixprec.kernels.formats import NumberFormat
from mixprec.kernels.reference import (
    E8M0_NAN,
    F32_EXPONENT_BIAS,
    QuantizedGroups,
    quantize,
    validated_input,
)


@dataclass(frozen=True)
class PackedTensor:
    """A tensor stored in a format's packed layout (see the module docstring)."""

    fmt: NumberFormat
    shape: tuple[int, ...]
    codes: torch.Tensor
    scales: torch.Tensor
    zero_points: torch.Tensor | None = None
    tensor_scale: torch.Tensor | None = None
    minimums: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return int(self.codes.shape[0])

    @property
    def cols(self) -> int:
        return math.prod(self.shape) // self.rows

    @property
    def group_size(self) -> int:
        """Elements per scale group (the whole row for per-channel formats)."""
        return self.fmt.block_size or self.cols

    @property
    def nbytes(self) -> int:
        """Bytes held in memory: codes, scales, zero points and the per-tensor scale."""
        parts = (self.codes, self.scales, self.zero_points, self.tensor_scale, self.minimums)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def row_slice(self, start: int, stop: int) -> PackedTensor:
        """Rows [start, stop) of a 2-D packed matrix (a per-tensor scale stays whole)."""
        if len(self.shape) != 2:
            raise MixprecError(f"row_slice takes a 2-D packed matrix, not shape {self.shape}")

        def rows(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t[start:stop]

        codes, scales = rows(self.codes), rows(self.scales)
        assert codes is not None and scales is not None
        shape = (stop - start, self.shape[1])
        return PackedTensor(self.fmt, shape, codes, scales, rows(self.zero_points),
                            self.tensor_scale, rows(self.minimums))  # fmt: skip

    def to(self, device: torch.device | str) -> PackedTensor:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return PackedTensor(
            self.fmt,
            self.shape,
            self.codes.to(device),
            self.scales.to(device),
            move(self.zero_points),
            move(self.tensor_scale),
            move(self.minimums),
        )


def packed_view(x: torch.Tensor, fmt: NumberFormat) -> tuple[int, int]:
    """(rows, cols) of the 2-D view a format scales and packs `x` in."""
    rows = x.shape[0] if fmt.block_size == 0 else x.numel() // x.shape[-1]
    return rows, x.numel() // rows


def check_packable(x: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """Float32 `x`, or a one-line error for a native format or non-finite values."""
    x = validated_input(x, fmt)
    if not fmt.is_quantized:
        raise MixprecError(f"{fmt.name} is not quantized; there is nothing to pack")
    if not bool(torch.isfinite(x).all()):
        raise MixprecError(
            f"cannot pack a tensor with inf or NaN as {fmt.name}: packed codes hold finite values"
        )
    return x


def pack(x: torch.Tensor, fmt: NumberFormat) -> PackedTensor:
    """Quantize `x` and store it packed; `unpack` returns exactly `quantize_dequantize(x)`."""
    x = check_packable(x, fmt)
    rows, cols = packed_view(x, fmt)
    q = quantize(x, fmt)

    def as_rows(t: torch.Tensor, width: int) -> torch.Tensor:
        return t.reshape(rows, -1)[:, :width]

    codes = encode_elements(as_rows(q.elements, cols), fmt)
    scales = encode_scales(as_rows(q.scale, cols), fmt)
    if fmt.block_rows:  # one scale per tile: its first row's
        scales = scales[:: fmt.block_rows]
    tensor_scale = q.tensor_scale if q.global_scale is None else q.global_scale
    if fmt.per_tensor:  # the one scale every row carries
        scales, tensor_scale = scales[:, :0], scales[0, 0].reshape(1)
    zero = None if q.zero is None else as_rows(q.zero, cols).to(torch.uint8)
    minimum = None if q.minimum is None else as_rows(q.minimum, cols)
    if minimum is not None and not fmt.nested_scales:
        minimum = minimum.to(torch.float16)
    return PackedTensor(
        fmt,
        tuple(x.shape),
        pack_bits(codes, fmt.element_bits),
        scales,
        zero,
        tensor_scale,
        minimum,
    )


def unpack(p: PackedTensor) -> torch.Tensor:
    """Float32 values of a packed tensor, in its original shape."""
    codes = unpack_bits(p.codes, p.fmt.element_bits, p.cols)
    elements = decode_elements(codes, p.fmt)

    def per_element(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.float().repeat_interleave(p.group_size, dim=1)[:, : p.cols]

    decoded = decode_scales(p.scales, p.fmt)
    if p.fmt.per_tensor:
        assert p.tensor_scale is not None
        decoded = p.tensor_scale.float().reshape(1, 1).expand(p.rows, 1)
    if p.fmt.block_rows:  # a tile's scale serves each of its rows
        decoded = decoded.repeat_interleave(p.fmt.block_rows, dim=0)[: p.rows]
    scale = per_element(decoded)
    assert scale is not None
    divides = p.fmt.global_scale_divides
    multiplies = None if divides or p.fmt.per_tensor else p.tensor_scale
    q = QuantizedGroups(elements, scale, per_element(p.zero_points), multiplies,
                        per_element(p.minimums),
                        global_scale=p.tensor_scale if divides else None)  # fmt: skip
    return q.values().reshape(p.shape)


def packed_linear(
    x: torch.Tensor, weight: PackedTensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`x @ W.T + bias` for a packed (out, in) weight: the reference dequant-matmul."""
    dense = unpack(weight).reshape(weight.rows, weight.cols).to(x.dtype)
    return F.linear(x, dense, None if bias is None else bias.to(x.dtype))


def encode_elements(values: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """Element-grid values -> uint8 codes of `fmt.element_bits` bits."""
    if fmt.codebook:
        return codebook_index(values, fmt.codebook).to(torch.uint8)
    if fmt.element_kind == "int":
        if not fmt.symmetric:
            return values.to(torch.uint8)
        ints = torch.round(values * 2.0**fmt.fraction_bits).to(torch.int32)
        return (ints & ((1 << fmt.element_bits) - 1)).to(torch.uint8)
    mags = values.abs()
    _, exponent = torch.frexp(mags)
    normal = mags >= 2.0**fmt.min_normal_exponent
    binade = torch.where(normal, exponent - 1, fmt.min_normal_exponent)
    field = torch.where(normal, binade + fmt.bias, 0)
    significand = torch.ldexp(mags, fmt.mantissa_bits - binade).to(torch.int32)
    mantissa = significand & ((1 << fmt.mantissa_bits) - 1)
    sign = torch.signbit(values).to(torch.int32)
    width = fmt.exponent_bits + fmt.mantissa_bits
    return ((sign << width) | (field << fmt.mantissa_bits) | mantissa).to(torch.uint8)


def decode_elements(codes: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """uint8 codes -> float32 element-grid values (inverse of `encode_elements`)."""
    c = codes.to(torch.int32)
    if fmt.codebook:
        return torch.tensor(fmt.codebook, dtype=torch.float32, device=c.device)[c.long()]
    if fmt.element_kind == "int":
        if not fmt.symmetric:
            return c.float()
        half = 1 << (fmt.element_bits - 1)
        signed = torch.where(c >= half, c - 2 * half, c)
        return signed.float() / 2.0**fmt.fraction_bits
    mantissa = c & ((1 << fmt.mantissa_bits) - 1)
    field = (c >> fmt.mantissa_bits) & ((1 << fmt.exponent_bits) - 1)
    significand = torch.where(field == 0, mantissa, mantissa + (1 << fmt.mantissa_bits))
    exponent = torch.where(field == 0, fmt.min_normal_exponent, field - fmt.bias)
    mags = torch.ldexp(significand.float(), (exponent - fmt.mantissa_bits).float())
    negative = (c >> (fmt.exponent_bits + fmt.mantissa_bits)) & 1
    return torch.where(negative == 1, -mags, mags)


def codebook_index(values: torch.Tensor, codebook: tuple[int, ...]) -> torch.Tensor:
    """The code of each codebook value (its index in the codebook, which is sorted)."""
    levels = torch.tensor(codebook, dtype=torch.float32, device=values.device)
    return torch.searchsorted(levels, values.contiguous())


def encode_scales(scale: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """Float32 scales (rows, groups) -> their stored type (see the module docstring)."""
    if fmt.scale_format == "e8m0":
        biased = torch.bitwise_right_shift(scale.view(torch.int32), 23) & 0xFF
        return torch.where(torch.isnan(scale), E8M0_NAN, biased).to(torch.uint8)
    if fmt.scale_format == "e4m3":
        return scale.to(torch.float8_e4m3fn).view(torch.uint8)
    if fmt.scale_format == "fp16" and not fmt.nested_scales:  # K-quants: float32 d * sc
        return scale.to(torch.float16)
    return scale.contiguous()


def decode_scales(stored: torch.Tensor, fmt: NumberFormat) -> torch.Tensor:
    """Stored scales -> float32, exactly the values the reference multiplied by."""
    if fmt.scale_format == "e8m0":
        biased = stored.to(torch.int32)
        normal = torch.bitwise_left_shift(biased, 23).view(torch.float32)
        scale = torch.where(biased == 0, 2.0**-F32_EXPONENT_BIAS, normal)
        return torch.where(biased == E8M0_NAN, float("nan"), scale)
    if fmt.scale_format == "e4m3":
        return stored.view(torch.float8_e4m3fn).float()
    return stored.float()


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """(rows, cols) codes of `bits` bits -> (rows, ceil(cols*bits/8)) little-endian bytes."""
    rows, cols = codes.shape
    nbytes = math.ceil(cols * bits / 8)
    position = torch.arange(cols, device=codes.device, dtype=torch.int32) * bits
    shifted = codes.to(torch.int32) << (position % 8)
    first = (position // 8).long().expand(rows, cols)
    out = torch.zeros(rows, nbytes + 1, dtype=torch.int32, device=codes.device)
    out.scatter_add_(1, first, shifted & 0xFF)
    out.scatter_add_(1, first + 1, shifted >> 8)
    return out[:, :nbytes].to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int, cols: int) -> torch.Tensor:
    """Inverse of `pack_bits`: (rows, cols) uint8 codes."""
    padded = F.pad(packed.to(torch.int32), (0, 1))
    position = torch.arange(cols, device=packed.device, dtype=torch.int32) * bits
    first = (position // 8).long().expand(packed.shape[0], cols)
    word = padded.gather(1, first) | (padded.gather(1, first + 1) << 8)
    return ((word >> (position % 8)) & ((1 << bits) - 1)).to(torch.uint8)
