"""The torch reference on CUDA gives the same bits as on the CPU (skips without a GPU)."""

from __future__ import annotations

import pytest
import torch

from mixprec.kernels import formats

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

QUANTIZED = [f.name for f in formats.all() if f.is_quantized]


@pytest.mark.parametrize("name", QUANTIZED)
def test_cuda_matches_cpu_bit_for_bit(name: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 200, generator=gen) * torch.logspace(-3, 3, 64).unsqueeze(1)
    x[0, 0], x[1, 1], x[2, 2] = float("inf"), float("nan"), 0.0
    fmt = formats.get(name)
    cpu = fmt.quantize_dequantize(x)
    cuda = fmt.quantize_dequantize(x.cuda())
    assert cuda.is_cuda
    torch.testing.assert_close(cuda.cpu(), cpu, atol=0, rtol=0, equal_nan=True)


def test_apply_plan_on_a_cuda_model() -> None:
    from mixprec.plan import apply_plan

    layer = torch.nn.Linear(64, 16).cuda()
    out = apply_plan(layer, {"": "w:nvfp4,a:mxfp8_e4m3"})
    assert out.weight.is_cuda
    expected = formats.get("nvfp4").quantize_dequantize(layer.weight.detach().cpu())
    torch.testing.assert_close(out.weight.detach().cpu(), expected, atol=0, rtol=0)
    assert out(torch.randn(4, 64, device="cuda")).is_cuda
