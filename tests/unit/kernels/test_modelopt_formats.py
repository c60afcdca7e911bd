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
