"""The packed layout (torch reference): element codes against ml_dtypes, bit streams, round
trips to exactly the fake-quantized values, sizes, and the dequant-matmul reference."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixprec.errors import MixprecError
from mixprec.kernels import formats, packing
from tests.helpers.triton_cases import QUANTIZED, random_tensor, same_bits

ML_DTYPES = {
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "fp6_e3m2": ml_dtypes.float6_e3m2fn,
    "fp6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
}


@pytest.mark.parametrize("name", list(ML_DTYPES))
def test_every_float_code_decodes_like_ml_dtypes_and_encodes_back(name: str) -> None:
    fmt = formats.get(name)
    codes = np.arange(2**fmt.element_bits, dtype=np.uint8)
    oracle = codes.view(ML_DTYPES[name]).astype(np.float32)
    keep = np.isfinite(oracle) & (np.abs(oracle) <= fmt.max_normal)
    decoded = packing.decode_elements(torch.from_numpy(codes[keep]), fmt)
    assert same_bits(decoded, torch.from_numpy(oracle[keep]))
    assert torch.equal(packing.encode_elements(decoded, fmt), torch.from_numpy(codes[keep]))


@pytest.mark.parametrize("name", ["int8", "int4", "int3", "int2", "mxint8", "int4_asym_g128"])
def test_every_integer_value_round_trips(name: str) -> None:
    fmt = formats.get(name)
    values = fmt.element_values()
    codes = packing.encode_elements(values, fmt)
    assert int(codes.max()) < 2**fmt.element_bits
    assert torch.equal(packing.decode_elements(codes, fmt), values)


def test_codes_are_a_little_endian_bit_stream() -> None:
    codes = torch.tensor([[1, 2, 3]], dtype=torch.uint8)
    assert packing.pack_bits(codes, 4).tolist() == [[0x21, 0x03]]
    assert packing.pack_bits(codes, 3).tolist() == [[0b11010001, 0b0]]
    assert packing.pack_bits(codes, 8).tolist() == [[1, 2, 3]]


@pytest.mark.parametrize("name", QUANTIZED)
@pytest.mark.parametrize("shape", [(16, 256), (5, 45), (2, 3, 40), (33,)], ids=str)
def test_unpack_gives_the_fake_quantized_values(name: str, shape: tuple[int, ...]) -> None:
    fmt = formats.get(name)
    x = random_tensor(shape)
    x.view(-1)[:2] = torch.tensor([0.0, 1e-40])
    packed = packing.pack(x, fmt)
    assert packed.codes.dtype == torch.uint8 and packed.shape == shape
    torch.testing.assert_close(packing.unpack(packed), fmt.quantize_dequantize(x), atol=0, rtol=0)


@pytest.mark.parametrize(
    "name", [n for n in QUANTIZED if formats.get(n).symmetric and not formats.get(n).nested_scales]
)
def test_packed_bytes_equal_the_formats_storage_bytes(name: str) -> None:
    """(K-quants hold their sub-block scales as float32 when packed: more bytes than llama.cpp's
    6-bit codes, the same values.)"""
    fmt = formats.get(name)
    shape = (64, 256)  # whole bytes per row and whole blocks: no padding anywhere
    assert packing.pack(random_tensor(shape), fmt).nbytes == fmt.storage_bytes(shape)


def test_asymmetric_zero_points_take_a_byte_each() -> None:
    fmt = formats.get("int4_asym_g128")
    shape = (64, 256)
    groups = 64 * 2
    extra = groups - groups * fmt.zero_point_bits // 8
    assert packing.pack(random_tensor(shape), fmt).nbytes == fmt.storage_bytes(shape) + extra


@pytest.mark.parametrize("name", ["int4_g128", "mxfp4", "nvfp4", "fp8_e4m3"])
def test_packed_linear_reference_is_a_linear_on_the_dequantized_weight(name: str) -> None:
    fmt = formats.get(name)
    weight, x, bias = random_tensor((24, 96)), torch.randn(2, 3, 96), torch.randn(24)
    got = packing.packed_linear(x, packing.pack(weight, fmt), bias)
    want = F.linear(x, fmt.quantize_dequantize(weight), bias)
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_bad_input_is_refused_in_one_line() -> None:
    with pytest.raises(MixprecError, match="not quantized"):
        packing.pack(torch.ones(4, 4), formats.get("bf16"))
    with pytest.raises(MixprecError, match="inf or NaN"):
        packing.pack(torch.tensor([[1.0, float("nan")]]), formats.get("int8"))
