"""Triton fused quantize-dequantize and packing give the torch reference's exact bits
(run through TRITON_INTERPRET=1 on the CPU; tests/gpu repeats them compiled on CUDA)."""

from __future__ import annotations

import pytest
import torch

from mixprec.errors import MixprecError
from mixprec.kernels import formats, packing
from mixprec.kernels.triton import qdq
from tests.helpers.triton_cases import TRITON, edge_tensor, random_tensor, same_bits

SHAPES = [(24, 256), (7, 45), (33,), (2, 3, 40), (4, 2, 3, 3), (3, 5000)]


@pytest.mark.parametrize("name", TRITON)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_random_tensors_bit_exact(name: str, shape: tuple[int, ...]) -> None:
    fmt = formats.get(name)
    x = random_tensor(shape)
    assert same_bits(qdq.quantize_dequantize(x, fmt), fmt.quantize_dequantize(x))


@pytest.mark.parametrize("name", TRITON)
def test_edge_tensors_bit_exact(name: str) -> None:
    fmt = formats.get(name)
    x = edge_tensor()
    got = qdq.quantize_dequantize(x, fmt)
    assert same_bits(got, fmt.quantize_dequantize(x))
    assert torch.isnan(got).any()  # the NaN input poisons (at least) its group


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4", "int4_g128", "fp8_e4m3", "int4_asym_g128"])
def test_other_input_dtypes_quantize_their_float32_value(name: str) -> None:
    fmt = formats.get(name)
    x = random_tensor((8, 96)).to(torch.bfloat16)
    assert same_bits(qdq.quantize_dequantize(x, fmt), fmt.quantize_dequantize(x))


@pytest.mark.parametrize("name", ["bf16", "fp16", "fp32"])
def test_native_formats_are_plain_casts(name: str) -> None:
    fmt = formats.get(name)
    x = random_tensor((4, 10))
    assert same_bits(qdq.quantize_dequantize(x, fmt), fmt.quantize_dequantize(x))


@pytest.mark.parametrize("name", TRITON)
@pytest.mark.parametrize("shape", [(24, 256), (5, 45), (2, 3, 40)], ids=str)
def test_pack_writes_the_reference_bytes(name: str, shape: tuple[int, ...]) -> None:
    fmt = formats.get(name)
    x = random_tensor(shape)
    x.view(-1)[:3] = torch.tensor([0.0, -0.0, 1e-40])
    want, got = packing.pack(x, fmt), qdq.pack(x, fmt)
    assert torch.equal(got.codes, want.codes)
    assert same_bits(got.scales.float(), want.scales.float())
    for a, b in ((got.zero_points, want.zero_points), (got.tensor_scale, want.tensor_scale)):
        assert (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
    # equal values; integer codes have no -0.0, so only the sign of a zero may differ
    torch.testing.assert_close(packing.unpack(got), fmt.quantize_dequantize(x), atol=0, rtol=0)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
@pytest.mark.parametrize("cols", [1, 7, 16, 45])
def test_pack_bits_matches_the_reference_stream(bits: int, cols: int) -> None:
    codes = torch.randint(0, 2**bits, (5, cols), dtype=torch.uint8)
    packed = qdq.pack_bits(codes, bits)
    assert torch.equal(packed, packing.pack_bits(codes, bits))
    assert torch.equal(packing.unpack_bits(packed, bits, cols), codes)


def test_pack_rejects_non_finite_input() -> None:
    x = torch.ones(4, 32)
    x[1, 1] = float("inf")
    with pytest.raises(MixprecError, match="inf or NaN"):
        qdq.pack(x, formats.get("mxfp4"))
