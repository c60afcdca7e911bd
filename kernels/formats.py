"""Number-format registry: every fact about a format lives in its one `NumberFormat` entry."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from mixprec.errors import MixprecError

if TYPE_CHECKING:
    import torch

Family = Literal["int", "fp", "mx", "nv", "ggml", "ct", "mo", "native"]
# Families computed exactly as their runtime computes them (torch only, no Triton kernel).
RUNTIME_FAMILIES: tuple[Family, ...] = ("ggml", "ct", "mo")
ElementKind = Literal["float", "int", "native"]
ScaleFormat = Literal["fp32", "fp16", "e8m0", "e4m3", "none"]
# How a float element type spends its top encodings: IEEE-style (top exponent is inf/NaN),
# OCP "fn" (only S.1111.111 is NaN, as E4M3), or none reserved (FP6, FP4).
Specials = Literal["ieee", "fn", "none"]

# llama.cpp's kvalues_iq4nl: the value each 4-bit code of IQ4_NL stands for (times the scale)
IQ4_NL_VALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
_SCALE_BITS: dict[ScaleFormat, int] = {"fp32": 32, "fp16": 16, "e8m0": 8, "e4m3": 8, "none": 0}
_NATIVE_BITS = {"bf16": 16, "fp16": 16, "fp32": 32}


class UnknownFormatError(MixprecError):
    """Raised for a format name that is not in the registry."""


@dataclass(frozen=True)
class NumberFormat:
    """One element/block number format and how its scales are stored.

    `block_size` 0 means one scale per output channel (dim 0); otherwise one scale per
    `block_size` consecutive elements of the last dim, or per tile of `block_rows` rows by
    `block_size` columns where `block_rows` is set (FP8_BLOCK's 128 x 128). Integer elements
    are symmetric in [-qmax, qmax] unless `zero_point_bits` > 0 (asymmetric, codes 0..2^bits-1) or
    `twos_complement` (llama.cpp's q4_0 / q5_0: codes -2^(bits-1)..qmax). Family "ggml" is a
    llama.cpp type (`ggml_type`), quantized exactly as llama.cpp does (kernels/ggml.py), stored
    in blocks of `block_bytes` bytes; K-quants scale sub-blocks of `block_size` inside
    `superblock`s of 256 with quantized scales (llama.cpp's nvfp4: scales per 16 in blocks of 64).
    `codebook`: the integer values a non-linear element code stands for (iq4_nl), stored by
    their index. Family "ct" is a compressed-tensors scheme
    (kernels/ct.py), "mo" an NVIDIA ModelOpt one (kernels/modelopt.py). `fused_scale`: the
    shards a runtime fuses into one matrix (q/k/v, gate/up) share the per-tensor scale, as the
    runtime loads them (apply_plan quantizes them together).
    """

    name: str
    family: Family
    element_kind: ElementKind
    element_bits: int
    exponent_bits: int = 0
    mantissa_bits: int = 0
    bias: int = 0
    fraction_bits: int = 0
    block_size: int = 0
    scale_format: ScaleFormat = "none"
    zero_point_bits: int = 0
    tensor_scale_bits: int = 0
    specials: Specials = "none"
    twos_complement: bool = False
    ggml_type: str = ""
    superblock: int = 0
    block_bytes: int = 0
    fused_scale: bool = False
    codebook: tuple[int, ...] = ()
    block_rows: int = 0
    description: str = ""

    @property
    def scale_bits(self) -> int:
        """Bits of one block/group/channel scale."""
        return _SCALE_BITS[self.scale_format]

    @property
    def global_scale_divides(self) -> bool:
        """compressed-tensors' per-tensor (global) scale divides the block scales (NVFP4); the
        others multiply."""
        return self.family == "ct" and self.tensor_scale_bits > 0

    @property
    def per_tensor(self) -> bool:
        """One FP32 scale for the whole tensor and none per group (FP8 per tensor)."""
        return self.tensor_scale_bits > 0 and self.scale_format == "none"

    @property
    def static_input(self) -> bool:
        """As an input format, its tensor-wide scale is fixed in advance from the calibrated
        input range, as the runtimes store it (FP8 per tensor; compressed-tensors' and
        ModelOpt's NVFP4 tensor scale, under which the block scales stay dynamic)."""
        return self.per_tensor or (self.family in ("ct", "mo") and self.tensor_scale_bits > 0)

    @property
    def is_quantized(self) -> bool:
        """False for bf16/fp16/fp32, which only carry a storage cost."""
        return self.family != "native"

    @property
    def symmetric(self) -> bool:
        return self.zero_point_bits == 0

    @property
    def qmax(self) -> int:
        """Largest integer code magnitude (symmetric; a codebook's largest value's) or largest
        code (asymmetric)."""
        if self.element_kind != "int":
            raise MixprecError(f"{self.name} has float elements; qmax is for integer formats")
        if self.codebook:
            return max(abs(v) for v in self.codebook)
        if self.symmetric:
            return 2 ** (self.element_bits - 1) - 1
        return 2**self.element_bits - 1

    @property
    def nested_scales(self) -> bool:
        """K-quants: sub-block scales (and minimums) are integer multiples of one FP16 scale per
        super-block, so the super-block shares a scale (llama.cpp's nvfp4 blocks do not)."""
        return self.superblock > 0 and self.scale_format == "fp16"

    @property
    def row_multiple(self) -> int:
        """A row length the runtime needs (llama.cpp stores whole blocks only); 1: any length."""
        if self.family != "ggml":
            return 1
        return self.superblock or self.block_size

    @property
    def max_normal(self) -> float:
        """Largest finite element magnitude (for integers: qmax * 2^-fraction_bits)."""
        if self.element_kind == "float":
            top_exponent = 2**self.exponent_bits - 1 - self.bias
            mantissa = 2.0 - 2.0 ** (-self.mantissa_bits)
            if self.specials == "ieee":
                top_exponent -= 1
            elif self.specials == "fn":
                mantissa -= 2.0 ** (-self.mantissa_bits)
            return math.ldexp(mantissa, top_exponent)
        if self.element_kind == "int":
            return (self.qmax + self.twos_complement) / 2**self.fraction_bits
        raise MixprecError(f"{self.name} is not quantized; it has no element grid")

    @property
    def emax(self) -> int:
        """Exponent of the largest power of two <= max_normal (OCP MX `emax_elem`)."""
        return math.floor(math.log2(self.max_normal))

    @property
    def min_normal_exponent(self) -> int:
        return 1 - self.bias

    @property
    def bits_per_element(self) -> float:
        """Element bits plus block/group scale and zero-point bits amortised per element.

        Per-channel and per-tensor scales depend on the shape, so they are left to
        `storage_bytes` and not amortised here.
        """
        if self.family == "native":
            return float(_NATIVE_BITS[self.name])
        if self.block_bytes:
            return 8 * self.block_bytes / self.row_multiple
        overhead = 0.0
        if self.block_size:
            per_scale = self.block_size * max(self.block_rows, 1)
            overhead = (self.scale_bits + self.zero_point_bits) / per_scale
        return self.element_bits + overhead

    def storage_bytes(self, shape: Sequence[int]) -> int:
        """Exact bytes to store a tensor of `shape`: bit-packed elements, scales, zero points."""
        dims = _validated_shape(shape, self.name)
        numel = math.prod(dims)
        if self.family == "native":
            return numel * _NATIVE_BITS[self.name] // 8
        if self.block_bytes:  # whole llama.cpp blocks per row
            blocks = numel // dims[-1] * math.ceil(dims[-1] / self.row_multiple)
            return blocks * self.block_bytes
        if self.block_size:
            rows = numel // dims[-1]
            if self.block_rows:
                rows = math.ceil(rows / self.block_rows)
            groups = rows * math.ceil(dims[-1] / self.block_size)
        else:
            groups = dims[0]
        bits = numel * self.element_bits
        bits += groups * (self.scale_bits + self.zero_point_bits)
        bits += self.tensor_scale_bits
        return math.ceil(bits / 8)

    def element_values(self) -> torch.Tensor:
        """Every finite value one element can take, sorted ascending, as float32."""
        import torch

        if self.element_kind == "float":
            mags = {0.0}
            for exp_field in range(2**self.exponent_bits):
                for mant in range(2**self.mantissa_bits):
                    if exp_field == 0:
                        value = math.ldexp(mant / 2**self.mantissa_bits, 1 - self.bias)
                    else:
                        value = math.ldexp(1 + mant / 2**self.mantissa_bits, exp_field - self.bias)
                    if value <= self.max_normal:
                        mags.add(value)
            values = sorted({-m for m in mags if m} | mags)
            return torch.tensor(values, dtype=torch.float32)
        if self.codebook:
            return torch.tensor(sorted(self.codebook), dtype=torch.float32)
        if self.element_kind == "int":
            low = -self.qmax - self.twos_complement if self.symmetric else 0
            codes = range(low, self.qmax + 1)
            return torch.tensor([c / 2**self.fraction_bits for c in codes], dtype=torch.float32)
        if self.name == "fp32":
            raise MixprecError("fp32 has 2^32 encodings; element_values() stops at 16 bits")
        return _native_values(self.name)

    def quantize_dequantize(
        self, x: torch.Tensor, importance: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Fake-quantize `x` with the torch reference (float32 in and out, same shape); the
        llama.cpp types that use llama.cpp's importance matrix take it as `importance`."""
        from mixprec.kernels.reference import quantize_dequantize

        return quantize_dequantize(x, self, importance)


def _validated_shape(shape: Sequence[int], name: str) -> tuple[int, ...]:
    dims = tuple(int(d) for d in shape)
    if not dims or any(d <= 0 for d in dims):
        raise MixprecError(
            f"shape {tuple(shape)} is not valid for {name}: need at least one dimension, all > 0"
        )
    return dims


def _native_values(name: str) -> torch.Tensor:
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[name]
    codes = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    values = codes.view(dtype).float()
    finite = values[torch.isfinite(values)]
    return torch.unique(finite)  # unique also sorts and merges +0/-0


def _specials(e: int, m: int) -> Specials:
    """OCP FP8: E5M2 is IEEE-like, E4M3 is 'fn'; FP6/FP4 reserve nothing."""
    if e + m + 1 < 8:
        return "none"
    return "ieee" if e == 5 else "fn"


def _fp(name: str, e: int, m: int, bias: int, desc: str) -> NumberFormat:
    return NumberFormat(
        name,
        "fp",
        "float",
        1 + e + m,
        e,
        m,
        bias,
        scale_format="fp32",
        specials=_specials(e, m),
        description=desc,
    )


def _int(name: str, bits: int, group: int = 0, zero_point_bits: int = 0) -> NumberFormat:
    where = f"per group of {group}" if group else "per output channel"
    kind = "asymmetric" if zero_point_bits else "symmetric"
    return NumberFormat(
        name,
        "int",
        "int",
        bits,
        block_size=group,
        scale_format="fp16",
        zero_point_bits=zero_point_bits,
        description=f"{kind} INT{bits}, FP16 scale {where}",
    )


def _mx_fp(name: str, e: int, m: int, bias: int, family: Family = "mx", description: str = ""
           ) -> NumberFormat:  # fmt: skip
    """OCP MX float elements under an E8M0 scale per 32 (a runtime's family: its scale rule)."""
    return NumberFormat(
        name,
        family,
        "float",
        1 + e + m,
        e,
        m,
        bias,
        block_size=32,
        scale_format="e8m0",
        specials=_specials(e, m),
        description=description or f"OCP MX: E{e}M{m} elements, E8M0 scale per 32",
    )


def _ggml_int(name: str, bits: int, block_bytes: int, twos_complement: bool = False,
              minimum: bool = False) -> NumberFormat:  # fmt: skip
    """A llama.cpp integer block type: 32 codes with an FP16 scale (and an FP16 minimum)."""
    what = "FP16 scale and minimum" if minimum else "FP16 scale"
    return NumberFormat(
        name,
        "ggml",
        "int",
        bits,
        block_size=32,
        scale_format="fp16",
        zero_point_bits=16 if minimum else 0,
        twos_complement=twos_complement,
        ggml_type=name,
        block_bytes=block_bytes,
        description=f"llama.cpp {name.upper()}: INT{bits} codes, {what} per 32",
    )


def _k_quant(name: str, bits: int, sub: int, block_bytes: int, minimum_bits: int = 0
             ) -> NumberFormat:  # fmt: skip
    """A llama.cpp K-quant: super-blocks of 256 under an FP16 scale, sub-blocks of `sub` with
    quantized scales (and minimums)."""
    what = f"{minimum_bits}-bit scales and minimums" if minimum_bits else "signed scales"
    return NumberFormat(
        name,
        "ggml",
        "int",
        bits,
        block_size=sub,
        scale_format="fp16",
        zero_point_bits=minimum_bits,
        twos_complement=not minimum_bits,
        ggml_type=name,
        superblock=256,
        block_bytes=block_bytes,
        description=f"llama.cpp {name.upper()}: INT{bits} codes, {what} per {sub} in 256",
    )


def _ct_int(name: str, scheme: str, bits: int, asymmetric: bool = False) -> NumberFormat:
    """A compressed-tensors integer scheme: signed codes per group of 128, FP32 scale."""
    return NumberFormat(
        name,
        "ct",
        "int",
        bits,
        block_size=128,
        scale_format="fp32",
        zero_point_bits=bits if asymmetric else 0,
        twos_complement=not asymmetric,
        description=f"compressed-tensors {scheme}: INT{bits} per 128, scale range / {2**bits - 1}"
        + (", zero point" if asymmetric else " * 2 (clips the group's max)"),
    )


def _ct_mx(name: str, scheme: str, e: int, m: int, bias: int) -> NumberFormat:
    """A compressed-tensors MX scheme: OCP's elements and E8M0 scale per 32, its own scale rule."""
    return _mx_fp(
        name,
        e,
        m,
        bias,
        "ct",
        f"compressed-tensors {scheme}: E{e}M{m}, E8M0 scale per"
        " 32 from amax rounded to a power of two (up from 1.75x), not OCP's floor",
    )


def _native(name: str, e: int, m: int, bias: int, what: str) -> NumberFormat:
    return NumberFormat(
        name,
        "native",
        "native",
        1 + e + m,
        e,
        m,
        bias,
        specials="ieee",
        description=f"{what}, no quantization (storage cost only)",
    )


_REGISTRY: dict[str, NumberFormat] = {
    f.name: f
    for f in (
        _fp("fp8_e4m3", 4, 3, 7, "OCP FP8 E4M3 elements, FP32 scale per output channel"),
        NumberFormat(
            "fp8_e4m3_tensor",
            "fp",
            "float",
            8,
            4,
            3,
            7,
            tensor_scale_bits=32,
            specials="fn",
            fused_scale=True,
            description="OCP FP8 E4M3 elements, one FP32 scale amax / 448 per tensor (shared by "
            "fused shards, as vLLM requantizes them); as inputs: the calibrated range's",
        ),
        _fp("fp8_e5m2", 5, 2, 15, "OCP FP8 E5M2 elements, FP32 scale per output channel"),
        _fp("fp6_e3m2", 3, 2, 3, "OCP FP6 E3M2 elements, FP32 scale per output channel"),
        _fp("fp6_e2m3", 2, 3, 1, "OCP FP6 E2M3 elements, FP32 scale per output channel"),
        _fp("fp4_e2m1", 2, 1, 1, "OCP FP4 E2M1 elements, FP32 scale per output channel"),
        _int("int8", 8),
        _int("int4", 4),
        _int("int3", 3),
        _int("int2", 2),
        _int("int8_g128", 8, 128),
        _int("int4_g128", 4, 128),
        _int("int4_g64", 4, 64),
        _int("int4_g32", 4, 32),
        _int("int3_g128", 3, 128),
        _int("int2_g64", 2, 64),
        _int("int4_asym_g128", 4, 128, zero_point_bits=4),
        _mx_fp("mxfp8_e4m3", 4, 3, 7),
        _mx_fp("mxfp8_e5m2", 5, 2, 15),
        _mx_fp("mxfp6_e3m2", 3, 2, 3),
        _mx_fp("mxfp6_e2m3", 2, 3, 1),
        _mx_fp("mxfp4", 2, 1, 1),
        NumberFormat(
            "mxint8",
            "mx",
            "int",
            8,
            fraction_bits=6,
            block_size=32,
            scale_format="e8m0",
            description="OCP MX: INT8 elements (implicit 2^-6), E8M0 scale per 32",
        ),
        NumberFormat(
            "mxint4",
            "mx",
            "int",
            4,
            fraction_bits=2,
            block_size=32,
            scale_format="e8m0",
            description="MX-style INT4 elements (implicit 2^-2), E8M0 scale per 32",
        ),
        NumberFormat(
            "nvfp4",
            "nv",
            "float",
            4,
            2,
            1,
            1,
            block_size=16,
            scale_format="e4m3",
            tensor_scale_bits=32,
            description="NVIDIA: E2M1 elements, E4M3 scale per 16, FP32 per-tensor scale",
        ),
        NumberFormat(
            "nvint4",
            "nv",
            "int",
            4,
            block_size=16,
            scale_format="e4m3",
            tensor_scale_bits=32,
            description="INT4 elements, E4M3 scale per 16, FP32 per-tensor scale",
        ),
        _ggml_int("q8_0", 8, 34),
        _ggml_int("q5_1", 5, 24, minimum=True),
        _ggml_int("q5_0", 5, 22, twos_complement=True),
        _ggml_int("q4_1", 4, 20, minimum=True),
        _ggml_int("q4_0", 4, 18, twos_complement=True),
        _k_quant("q6_k", 6, 16, 210),
        _k_quant("q5_k", 5, 32, 176, minimum_bits=6),
        _k_quant("q4_k", 4, 32, 144, minimum_bits=6),
        _k_quant("q3_k", 3, 16, 110),
        _k_quant("q2_k", 2, 16, 84, minimum_bits=4),
        _ct_int("ct_w8a16", "W8A16", 8),
        _ct_int("ct_w4a16", "W4A16", 4),
        _ct_int("ct_w4a16_asym", "W4A16_ASYM", 4, asymmetric=True),
        NumberFormat(
            "ct_nvfp4",
            "ct",
            "float",
            4,
            2,
            1,
            1,
            block_size=16,
            scale_format="e4m3",
            tensor_scale_bits=32,
            fused_scale=True,
            description="compressed-tensors NVFP4A16: E2M1, E4M3 scale per 16 over an FP32 global"
            " scale that divides it, shared by fused shards",
        ),
        NumberFormat(
            "ct_fp8_e4m3_block",
            "ct",
            "float",
            8,
            4,
            3,
            7,
            block_size=128,
            block_rows=128,
            scale_format="fp32",
            specials="fn",
            description="compressed-tensors FP8_BLOCK weights: E4M3, FP32 scale amax / 448 per "
            "tile of 128 x 128",
        ),
        NumberFormat(
            "ct_fp8_e4m3_g128",
            "ct",
            "float",
            8,
            4,
            3,
            7,
            block_size=128,
            scale_format="fp32",
            specials="fn",
            description="compressed-tensors FP8_BLOCK inputs: E4M3, FP32 scale amax / 448 per 128",
        ),
        _ct_mx("ct_mxfp4", "MXFP4A16", 2, 1, 1),
        _ct_mx("ct_mxfp8_e4m3", "MXFP8A16", 4, 3, 7),
        NumberFormat(
            "mxfp4_ggml",
            "ggml",
            "float",
            4,
            2,
            1,
            1,
            block_size=32,
            scale_format="e8m0",
            ggml_type="mxfp4",
            block_bytes=17,
            description="llama.cpp MXFP4: E2M1, E8M0 scale per 32, ties to the smaller value",
        ),
        NumberFormat(
            "iq4_nl",
            "ggml",
            "int",
            4,
            block_size=32,
            scale_format="fp16",
            ggml_type="iq4_nl",
            block_bytes=18,
            codebook=IQ4_NL_VALUES,
            description="llama.cpp IQ4_NL: 16 non-linear INT8 levels, FP16 scale per 32",
        ),
        NumberFormat(
            "nvfp4_ggml",
            "ggml",
            "float",
            4,
            2,
            1,
            1,
            block_size=16,
            scale_format="e4m3",
            ggml_type="nvfp4",
            superblock=64,
            block_bytes=36,
            description="llama.cpp NVFP4: E2M1, UE4M3 scale per 16 (rounded half up), blocks of 64,"
            " no tensor scale",
        ),
        NumberFormat(
            "mo_nvfp4",
            "mo",
            "float",
            4,
            2,
            1,
            1,
            block_size=16,
            scale_format="e4m3",
            tensor_scale_bits=32,
            fused_scale=True,
            description="ModelOpt W4A16_NVFP4: E2M1, E4M3 scale per 16 (from 2^-9), FP32 per-tensor"
            " scale shared by fused shards",
        ),
        _mx_fp(
            "mo_mxfp8_e4m3",
            4,
            3,
            7,
            "mo",
            "ModelOpt MXFP8: E4M3 elements, E8M0 scale per 32 of 2^ceil(log2(amax / 448))",
        ),
        _native("bf16", 8, 7, 127, "bfloat16"),
        _native("fp16", 5, 10, 15, "IEEE half"),
        _native("fp32", 8, 23, 127, "IEEE single"),
    )
}


def get(name: str) -> NumberFormat:
    """Look a format up by its public name; unknown names list the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownFormatError(
            f"unknown number format {name!r}; valid formats: {', '.join(_REGISTRY)}"
        ) from None


def all() -> tuple[NumberFormat, ...]:
    """Every registered format, in registry order."""
    return tuple(_REGISTRY.values())


def names() -> tuple[str, ...]:
    return tuple(_REGISTRY)
