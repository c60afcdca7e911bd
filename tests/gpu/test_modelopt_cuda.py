"""ModelOpt's own input quantizers (CUDA only: its Triton / CUDA-extension kernels) against
mixprec's input formats: NVFP4's under the static tensor scale of the calibrated range, MXFP8's
per 32 (skips without a GPU)."""

from __future__ import annotations

import pytest
import torch

from mixprec.kernels import formats
from mixprec.plan import ActivationQuantizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize(
    ("preset", "name", "static"),
    [("NVFP4_DEFAULT_CFG", "mo_nvfp4", True), ("MXFP8_DEFAULT_CFG", "mo_mxfp8_e4m3", False)],
)
def test_inputs_are_quantized_as_modelopts_own_quantizer(
    preset: str, name: str, static: bool
) -> None:
    mtq = pytest.importorskip("modelopt.torch.quantization")
    gen = torch.Generator().manual_seed(0)
    calibration = torch.randn(8, 256, generator=gen) * 2.0
    layer = torch.nn.Sequential(torch.nn.Linear(256, 64)).cuda().eval()
    mtq.quantize(layer, getattr(mtq, preset), lambda m: m(calibration.cuda()))
    quantizer = layer[0].input_quantizer
    x = torch.randn(6, 256, generator=gen) * torch.logspace(-2, 1, 256)
    with torch.no_grad():
        theirs = quantizer(x.cuda()).float().cpu()
    amax = float(quantizer.amax) if static else None
    if static:
        assert amax == pytest.approx(float(calibration.abs().max()), rel=0)
    ours = ActivationQuantizer(formats.get(name), -1, amax=amax)(torch.nn.Identity(), (x,))[0]
    assert isinstance(ours, torch.Tensor)
    assert torch.equal(ours + 0.0, theirs + 0.0)
