"""The compiled Triton kernels on CUDA: the CPU reference's exact bits (skips without a GPU)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixprec.kernels import formats, packing
from tests.helpers.triton_cases import (
    PACKED_MATMUL,
    TRITON,
    edge_tensor,
    random_tensor,
    same_bits,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("name", TRITON)
@pytest.mark.parametrize("shape", [(64, 4096), (7, 45), (2, 3, 40), (3, 9000)], ids=str)
def test_compiled_qdq_is_bit_exact(name: str, shape: tuple[int, ...]) -> None:
    from mixprec.kernels.triton import interpreted, qdq

    assert not interpreted()
    fmt = formats.get(name)
    for x in (random_tensor(shape), edge_tensor()):
        got = qdq.quantize_dequantize(x.cuda(), fmt)
        assert got.is_cuda and same_bits(got.cpu(), fmt.quantize_dequantize(x))


@pytest.mark.parametrize("name", TRITON)
def test_compiled_pack_and_unpack_are_bit_exact(name: str) -> None:
    from mixprec.kernels.triton import matmul, qdq

    fmt = formats.get(name)
    x = random_tensor((48, 256))
    want = packing.pack(x, fmt)
    got = qdq.pack(x.cuda(), fmt)
    assert torch.equal(got.codes.cpu(), want.codes)
    assert same_bits(got.scales.cpu().float(), want.scales.float())
    assert same_bits(matmul.unpack(got).cpu(), packing.unpack(want))


@pytest.mark.parametrize("name", PACKED_MATMUL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("m", [1, 16, 128])
def test_compiled_dequant_matmul(name: str, dtype: torch.dtype, m: int) -> None:
    from mixprec.kernels.triton import matmul

    fmt = formats.get(name)
    weight = torch.randn(256, 512)
    packed = packing.pack(weight, fmt).to("cuda")
    x = torch.randn(m, 512, device="cuda", dtype=dtype)
    got = matmul.packed_linear(x, packed)
    want = F.linear(x.float(), fmt.quantize_dequantize(weight).cuda())
    tolerance = (
        {"atol": 1e-3, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 0.25, "rtol": 2e-2}
    )
    torch.testing.assert_close(got.float(), want, **tolerance)


def test_packed_plan_on_a_cuda_model() -> None:
    from mixprec.plan import apply_plan

    model = torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.GELU(), torch.nn.Linear(128, 8))
    model = model.cuda()
    plan = {"0": "w:nvfp4", "2": "w:int4_g128"}
    packed = apply_plan(model, plan, packed=True)
    x = torch.randn(4, 256, device="cuda")
    torch.testing.assert_close(packed(x), apply_plan(model, plan)(x), atol=1e-4, rtol=1e-4)
