"""ModelOpt's NVFP4 weights quantize exactly as ModelOpt's exporter does (`NVFP4QTensor`, its
dynamic weight path): values, E4M3 block scales and the per-tensor scale, and the packed codes."""

from __future__ import annotations

import pytest
import torch

from mixprec.kernels import formats, packing
from mixprec.kernels.reference import quantize
from tests.unit.kernels.test_ggml_formats import weights

nvfp4_tensor = pytest.importorskip("modelopt.torch.quantization.qtensor.nvfp4_tensor")
FMT = formats.get("mo_nvfp4")


def modelopt(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ModelOpt's packed codes, block scales, tensor scale and dequantized float32 values."""
    qtensor, scale, scale_2 = nvfp4_tensor.NVFP4QTensor.quantize(x.clone(), FMT.block_size)
    values = qtensor.dequantize(torch.float32, scale=scale, double_scale=scale_2,
                                block_sizes={-1: FMT.block_size})  # fmt: skip
    return qtensor._quantized_data, scale, scale_2, values


@pytest.mark.parametrize("kind", ["normal", "bf16", "grid"])
def test_values_and_scales_are_modelopts(kind: str) -> None:
    x = weights(kind, (48, 256), seed=3)
    x[7, 16:32] = 0.0  # an all-zero block: ModelOpt's block scale 1.0
    x[9] *= 1e-5  # block scales below E4M3's smallest normal (ModelOpt's floor is 2^-9)
    _, scale, scale_2, expected = modelopt(x)
    assert torch.equal(FMT.quantize_dequantize(x) + 0.0, expected + 0.0)
    q = quantize(x, FMT)
    assert torch.equal(q.scale.reshape(scale.shape), scale.float())
    assert torch.equal(q.tensor_scale, scale_2.float())
    assert float(q.scale.min()) < 2.0**-6  # the floor is ModelOpt's, not nvfp4's
    assert not torch.equal(formats.get("nvfp4").quantize_dequantize(x), expected)


def test_packed_codes_are_modelopts_bytes() -> None:
    x = weights("normal", (32, 128), seed=5)
    codes, scale, _, _ = modelopt(x)
    packed = packing.pack(x, FMT)
    assert torch.equal(packed.codes, codes)  # two E2M1 codes per byte, the first in the low nibble
    assert torch.equal(packed.scales.view(torch.float8_e4m3fn).float(), scale.float())
    assert torch.equal(packing.unpack(packed), FMT.quantize_dequantize(x))


def test_the_size_is_modelopts_checkpoint() -> None:
    """4 bits, one E4M3 byte per 16 and one FP32 scale: what the checkpoint stores."""
    assert FMT.storage_bytes((64, 256)) == 64 * 256 // 2 + 64 * 256 // 16 + 4


@pytest.mark.parametrize("kind", ["normal", "bf16", "grid"])
def test_mxfp8_is_modelopts_mxfp8qtensor(kind: str) -> None:
    """`mo_mxfp8_e4m3`: ModelOpt's MXFP8QTensor values and E8M0 bytes, also on all-zero, tiny,
    huge and infinite blocks (a NaN makes its block NaN: mixprec's rule); not OCP's
    mxfp8_e4m3 (another exponent rule)."""
    mxfp8 = pytest.importorskip("modelopt.torch.quantization.qtensor.mxfp8_tensor")
    fmt = formats.get("mo_mxfp8_e4m3")
    x = weights(kind, (48, 256), seed=3)
    x[4], x[5, :32], x[6] = 0.0, x[5, :32] * 1e-30, x[6] * 1e30
    finite = x.clone()
    x[7, 3], x[8, 5] = float("inf"), float("nan")
    qtensor, scale = mxfp8.MXFP8QTensor.quantize(x.clone())
    expected = qtensor.dequantize(torch.float32, scale=scale)
    got = fmt.quantize_dequantize(x)
    poisoned = torch.zeros_like(x, dtype=torch.bool)
    poisoned[8, :32] = True
    assert torch.isnan(got[poisoned]).all()
    assert torch.equal(got[~poisoned] + 0.0, expected[~poisoned] + 0.0)
    qtensor, scale = mxfp8.MXFP8QTensor.quantize(finite.clone())
    packed = packing.pack(finite, fmt)
    assert torch.equal(packed.codes, qtensor._quantized_data.view(torch.uint8))
    assert torch.equal(packed.scales.reshape(scale.shape), scale)
    assert not torch.equal(formats.get("mxfp8_e4m3").quantize_dequantize(finite),
                           fmt.quantize_dequantize(finite))  # fmt: skip
