"""The registry's public names and the facts each format carries, checked against ml_dtypes."""

from __future__ import annotations

import math
import re

import ml_dtypes
import numpy as np
import pytest

from mixprec.errors import MixprecError
from mixprec.kernels import formats

# What a format's public name promises: family, element kind and bits, exponent/mantissa bits,
# block size and scale format (fields that the name does not fix are None).
NAME_GRAMMAR = (
    (r"fp(?P<bits>\d+)_e(?P<e>\d)m(?P<m>\d)", "fp", "float", 0, "fp32"),
    (r"fp(?P<bits>8)_e(?P<e>4)m(?P<m>3)_tensor", "fp", "float", 0, "none"),  # one scale
    (r"int(?P<bits>\d)(?P<asym>_asym)?(?:_g(?P<block>\d+))?", "int", "int", None, "fp16"),
    (r"mxfp(?P<bits>\d)(?:_e(?P<e>\d)m(?P<m>\d))?", "mx", "float", 32, "e8m0"),
    (r"mxint(?P<bits>\d)", "mx", "int", 32, "e8m0"),
    (r"nvfp(?P<bits>\d)", "nv", "float", 16, "e4m3"),
    (r"nvint(?P<bits>\d)", "nv", "int", 16, "e4m3"),
    (r"(?:bf|fp)(?P<bits>16|32)", "native", "native", 0, "none"),
    (r"q(?P<bits>\d)_(?:0|(?P<asym>1))", "ggml", "int", 32, "fp16"),
    (r"q(?P<bits>[36])_k", "ggml", "int", 16, "fp16"),  # K-quants: sub-blocks in 256
    (r"q(?P<bits>2)_(?P<asym>k)", "ggml", "int", 16, "fp16"),
    (r"q(?P<bits>[45])_(?P<asym>k)", "ggml", "int", 32, "fp16"),
    (r"mxfp(?P<bits>4)_ggml", "ggml", "float", 32, "e8m0"),
    (r"nvfp(?P<bits>4)_ggml", "ggml", "float", 16, "e4m3"),  # UE4M3: E4M3's non-negative values
    (r"iq(?P<bits>4)_nl", "ggml", "int", 32, "fp16"),
    (r"ct_w(?P<bits>\d)a16(?P<asym>_asym)?", "ct", "int", 128, "fp32"),
    (r"mo_nvfp(?P<bits>4)", "mo", "float", 16, "e4m3"),
    (r"mo_mxfp(?P<bits>8)_e(?P<e>4)m(?P<m>3)", "mo", "float", 32, "e8m0"),
    (r"ct_nvfp(?P<bits>4)", "ct", "float", 16, "e4m3"),
    (r"ct_fp(?P<bits>8)_e(?P<e>4)m(?P<m>3)_(?:block|g128)", "ct", "float", 128, "fp32"),
    (r"ct_mxfp(?P<bits>\d)(?:_e(?P<e>\d)m(?P<m>\d))?", "ct", "float", 32, "e8m0"),
)


ML_DTYPE_OF = {
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e4m3_tensor": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "fp6_e3m2": ml_dtypes.float6_e3m2fn,
    "fp6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
    "mxfp8_e4m3": ml_dtypes.float8_e4m3fn,
    "mxfp8_e5m2": ml_dtypes.float8_e5m2,
    "mxfp6_e3m2": ml_dtypes.float6_e3m2fn,
    "mxfp6_e2m3": ml_dtypes.float6_e2m3fn,
    "mxfp4": ml_dtypes.float4_e2m1fn,
    "nvfp4": ml_dtypes.float4_e2m1fn,
    "mo_nvfp4": ml_dtypes.float4_e2m1fn,
    "ct_nvfp4": ml_dtypes.float4_e2m1fn,
    "nvfp4_ggml": ml_dtypes.float4_e2m1fn,
    "ct_mxfp4": ml_dtypes.float4_e2m1fn,
    "ct_mxfp8_e4m3": ml_dtypes.float8_e4m3fn,
}


def all_finite_values(dtype: type, bits: int) -> np.ndarray:
    """Decode every `bits`-wide encoding of an ml_dtypes float type; keep the finite values."""
    values = np.arange(2**bits, dtype=np.uint8).view(dtype).astype(np.float32)
    return np.unique(values[np.isfinite(values)])


def test_every_name_says_what_its_format_is() -> None:
    """A format registered under a name that promises other facts (int4_g64 with groups of 32,
    mxfp6_e2m3 built as E3M2) is caught here."""
    names = [f.name for f in formats.all()]
    assert len(names) == len(set(names)) and len(names) >= 28
    for fmt in formats.all():
        matches = [(re.fullmatch(pattern, fmt.name), rest) for pattern, *rest in NAME_GRAMMAR]
        [(found, (family, kind, block, scale))] = [(m, rest) for m, rest in matches if m]
        parts = found.groupdict()
        assert (fmt.family, fmt.element_kind, fmt.scale_format) == (family, kind, scale), fmt
        assert fmt.element_bits == int(parts["bits"]), fmt
        expected_block = int(parts.get("block") or 0) if block is None else block
        assert fmt.block_size == expected_block, fmt
        if parts.get("e"):
            assert (fmt.exponent_bits, fmt.mantissa_bits) == (int(parts["e"]), int(parts["m"]))
        elif kind == "float":  # mxfp4 and nvfp4 are E2M1
            assert (fmt.exponent_bits, fmt.mantissa_bits) == (2, 1), fmt
        assert (fmt.zero_point_bits > 0) == bool(parts.get("asym")), fmt
        assert formats.get(fmt.name) is fmt


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown number format 'mxfp3'.*mxfp4.*nvfp4"):
        formats.get("mxfp3")


@pytest.mark.parametrize(
    ("name", "bits"),
    [
        ("mxfp4", 4.25),
        ("nvfp4", 4.5),
        ("int4_g128", 4.125),
        ("mxfp8_e4m3", 8.25),
        ("fp16", 16.0),
        ("bf16", 16.0),
        ("fp32", 32.0),
        ("int4_asym_g128", 4 + 20 / 128),
        ("int2_g64", 2.25),
        ("mxint8", 8.25),
        ("mxint4", 4.25),
        ("fp8_e4m3", 8.0),
        ("int3", 3.0),
        ("mxfp6_e2m3", 6.25),
        # llama.cpp's own figures: block bytes * 8 / 32
        ("q8_0", 8.5),
        ("q5_1", 6.0),
        ("q5_0", 5.5),
        ("q4_1", 5.0),
        ("q4_0", 4.5),
        ("mxfp4_ggml", 4.25),
        ("q6_k", 6.5625),
        ("q5_k", 5.5),
        ("q4_k", 4.5),
        ("q3_k", 3.4375),
        ("q2_k", 2.625),
        ("iq4_nl", 4.5),
        ("nvfp4_ggml", 4.5),  # 36 bytes per 64
    ],
)
def test_bits_per_element(name: str, bits: float) -> None:
    assert formats.get(name).bits_per_element == bits


@pytest.mark.parametrize(
    ("name", "shape", "expected"),
    [
        # 4096*4096 4-bit elements + one E8M0 byte per 32
        ("mxfp4", (4096, 4096), 4096 * 4096 // 2 + 4096 * 128),
        # 3072 E2M1 nibbles + 64*3 E4M3 bytes + one FP32 tensor scale
        ("nvfp4", (64, 48), 1536 + 192 + 4),
        # 1600 nibbles + 16 groups of (FP16 scale + 4-bit zero point)
        ("int4_asym_g128", (8, 200), 800 + 16 * 20 // 8),
        # 15 3-bit codes + 3 FP16 channel scales = 93 bits -> 12 bytes
        ("int3", (3, 5), 12),
        # 100 FP8 codes + 10 FP32 channel scales
        ("fp8_e4m3", (10, 10), 100 + 40),
        # a conv weight: scales per output channel, elements over all the rest
        ("int8", (16, 3, 3, 3), 16 * 27 + 16 * 2),
        # last dim 40 is not a multiple of 32: two partial-covering blocks per row
        ("mxfp8_e5m2", (2, 40), 80 + 2 * 2),
        ("bf16", (7, 3), 42),
        ("fp32", (7, 3), 84),
        # llama.cpp stores whole blocks: 300 columns take two super-blocks of 144 bytes
        ("q4_k", (3, 300), 3 * 2 * 144),
        ("q4_0", (2, 40), 2 * 2 * 18),
    ],
)
def test_storage_bytes_by_hand(name: str, shape: tuple[int, ...], expected: int) -> None:
    assert formats.get(name).storage_bytes(shape) == expected


@pytest.mark.parametrize("shape", [(), (0, 4), (3, -1)])
def test_storage_bytes_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(MixprecError, match=r"shape .* is not valid for int4"):
        formats.get("int4").storage_bytes(shape)


@pytest.mark.parametrize("name", sorted(ML_DTYPE_OF))
def test_element_values_match_ml_dtypes(name: str) -> None:
    fmt = formats.get(name)
    expected = all_finite_values(ML_DTYPE_OF[name], fmt.element_bits)
    got = fmt.element_values().numpy()
    np.testing.assert_array_equal(got, expected)
    assert fmt.max_normal == float(ml_dtypes.finfo(ML_DTYPE_OF[name]).max)


def test_fp4_values_as_documented() -> None:
    values = formats.get("fp4_e2m1").element_values().tolist()
    assert values == [-6, -4, -3, -2, -1.5, -1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4, 6]


@pytest.mark.parametrize(
    ("name", "count", "top"),
    [
        ("int8", 255, 127),
        ("int4", 15, 7),
        ("int3", 7, 3),
        ("int2", 3, 1),
        ("int4_asym_g128", 16, 15),
        ("mxint8", 255, 127 / 64),
        ("mxint4", 15, 7 / 4),
        ("nvint4", 15, 7),
        ("q8_0", 255, 127),
        ("q4_0", 16, 8),  # codes -8..7: the largest magnitude is negative
        ("q5_0", 32, 16),
        ("q4_1", 16, 15),
        ("q5_1", 32, 31),
        ("q6_k", 64, 32),
        ("q3_k", 8, 4),
        ("q4_k", 16, 15),
        ("q2_k", 4, 3),
    ],
)
def test_integer_element_grids(name: str, count: int, top: float) -> None:
    values = formats.get(name).element_values()
    assert len(values) == count
    assert values.abs().max().item() == top == formats.get(name).max_normal


def test_native_element_values_are_every_finite_half() -> None:
    halves = np.arange(2**16, dtype=np.uint16).view(np.float16).astype(np.float32)
    expected = np.unique(halves[np.isfinite(halves)])
    np.testing.assert_array_equal(formats.get("fp16").element_values().numpy(), expected)
    with pytest.raises(MixprecError, match="fp32"):
        formats.get("fp32").element_values()


def test_mx_emax_matches_ocp_table() -> None:
    emax = {f.name: f.emax for f in formats.all() if f.family == "mx"}
    assert emax == {
        "mxfp8_e4m3": 8,
        "mxfp8_e5m2": 15,
        "mxfp6_e3m2": 4,
        "mxfp6_e2m3": 2,
        "mxfp4": 2,
        "mxint8": 0,
        "mxint4": 0,
    }


def test_llamacpp_types_have_llamacpps_block_sizes() -> None:
    import gguf

    for fmt in (f for f in formats.all() if f.family == "ggml"):
        kind = gguf.GGMLQuantizationType[fmt.ggml_type.upper()]
        assert gguf.GGML_QUANT_SIZES[kind] == (fmt.row_multiple, fmt.block_bytes), fmt.name


def test_iq4_nl_codes_stand_for_llamacpps_levels() -> None:
    fmt = formats.get("iq4_nl")
    assert fmt.element_values().tolist() == [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13,
                                             25, 38, 53, 69, 89, 113]  # fmt: skip
    assert (fmt.qmax, fmt.max_normal) == (127, 127.0)


def test_formats_are_frozen() -> None:
    fmt = formats.get("mxfp4")
    with pytest.raises(AttributeError):
        fmt.block_size = 16  # type: ignore[misc]
    assert math.isclose(fmt.bits_per_element, 4.25)
