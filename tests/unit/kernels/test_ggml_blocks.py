"""llama.cpp's block bytes written by mixprec: gguf-py's own quantizer writes the same bytes
where it has one, and gguf-py's decoder (which has every type) reads them back to exactly
mixprec's fake-quantized values (llama.cpp's C quantizer: tests/integration/test_llamacpp.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants

from mixprec.errors import MixprecError
from mixprec.kernels import formats, ggml_blocks
from tests.unit.kernels.test_ggml_formats import GGUF_PY, weights

LLAMACPP_FORMATS = [f for f in formats.all() if f.family == "ggml"]


def kind_of(fmt: formats.NumberFormat) -> GGMLQuantizationType:
    return GGMLQuantizationType[fmt.ggml_type.upper()]


@pytest.mark.parametrize("fmt", LLAMACPP_FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("kind", ["normal", "bf16", "grid", "zeros"])
def test_blocks_decode_to_our_values(fmt: formats.NumberFormat, kind: str) -> None:
    x = torch.zeros(8, 512) if kind == "zeros" else weights(kind, (16, 512), seed=3)
    if kind == "normal":
        x[3, :256] = 0.0  # one dead super-block between live ones
    data = ggml_blocks.encode(x, fmt)
    assert data.dtype == np.uint8 and data.nbytes == fmt.storage_bytes(x.shape)
    decoded = quants.dequantize(data, kind_of(fmt))
    expected = fmt.quantize_dequantize(x).numpy()
    np.testing.assert_array_equal(decoded + 0.0, expected + 0.0)  # -0.0 and 0.0 alike


@pytest.mark.parametrize("name", sorted(GGUF_PY))
def test_blocks_are_gguf_pys_bytes(name: str) -> None:
    x = weights("normal", (16, 256), seed=5)
    assert np.array_equal(
        ggml_blocks.encode(x, formats.get(name)), quants.quantize(x.numpy(), GGUF_PY[name])
    )


def test_a_row_of_partial_blocks_or_a_non_llamacpp_format_is_refused() -> None:
    with pytest.raises(MixprecError, match="q6_k needs rows of a multiple of 256 values, not 384"):
        ggml_blocks.encode(torch.zeros(2, 384), formats.get("q6_k"))
    with pytest.raises(MixprecError, match=r"no llama\.cpp block layout for nvfp4"):
        ggml_blocks.encode(torch.zeros(2, 256), formats.get("nvfp4"))
    with pytest.raises(MixprecError, match="finite values only"):
        ggml_blocks.encode(torch.full((1, 32), float("inf")), formats.get("q8_0"))
