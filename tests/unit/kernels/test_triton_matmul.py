"""Triton unpack (bit-exact) and dequant-matmul (float tolerance) against the torch reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixprec.errors import MixprecError
from mixprec.kernels import formats, packing
from mixprec.kernels.triton import matmul
from tests.helpers.triton_cases import PACKED_MATMUL, TRITON, random_tensor, same_bits

# fp32: the kernel sums K products in another order than torch; a few ulps of |x| |W| K.
FP32_TOLERANCE = {"atol": 1e-4, "rtol": 1e-5}
# 16-bit activations: bf16's 8-bit significand on inputs, weight tile and output.
BF16_TOLERANCE = {"atol": 5e-2, "rtol": 2e-2}


@pytest.mark.parametrize("name", TRITON)
def test_unpack_is_bit_exact(name: str) -> None:
    packed = packing.pack(random_tensor((9, 200)), formats.get(name))
    assert same_bits(matmul.unpack(packed), packing.unpack(packed))


@pytest.mark.parametrize("name", PACKED_MATMUL)
@pytest.mark.parametrize("m", [1, 5, 33])
@pytest.mark.parametrize("k", [96, 200])
def test_dequant_matmul_fp32(name: str, m: int, k: int) -> None:
    fmt = formats.get(name)
    weight = torch.randn(40, k, generator=torch.Generator().manual_seed(m))
    x, bias = torch.randn(m, k), torch.randn(40)
    got = matmul.packed_linear(x, packing.pack(weight, fmt), bias)
    want = F.linear(x, fmt.quantize_dequantize(weight), bias)
    torch.testing.assert_close(got, want, **FP32_TOLERANCE)


@pytest.mark.parametrize("name", ["int4_g128", "mxfp4", "nvfp4"])
def test_dequant_matmul_bf16_keeps_leading_dims_and_dtype(name: str) -> None:
    fmt = formats.get(name)
    packed = packing.pack(torch.randn(24, 128), fmt)
    x = torch.randn(2, 3, 128).to(torch.bfloat16)
    got = matmul.packed_linear(x, packed, None)
    assert got.shape == (2, 3, 24) and got.dtype == torch.bfloat16
    want = F.linear(x.float(), packing.unpack(packed))
    torch.testing.assert_close(got.float(), want, **BF16_TOLERANCE)


def test_wrong_feature_count_is_refused() -> None:
    packed = packing.pack(torch.randn(8, 64), formats.get("mxfp4"))
    with pytest.raises(MixprecError, match="expects 64"):
        matmul.packed_linear(torch.randn(2, 32), packed)
