"""llama.cpp's block types quantize bit for bit as llama.cpp does (gguf-py's quantizer, which
mirrors ggml-quants.c's reference rows), and store exactly llama.cpp's bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants

from mixprec.kernels import formats, packing

GGUF_PY = {
    "q8_0": GGMLQuantizationType.Q8_0,
    "q4_0": GGMLQuantizationType.Q4_0,
    "q4_1": GGMLQuantizationType.Q4_1,
    "q5_0": GGMLQuantizationType.Q5_0,
    "q5_1": GGMLQuantizationType.Q5_1,
    "mxfp4_ggml": GGMLQuantizationType.MXFP4,
}


def weights(kind: str, shape: tuple[int, ...] = (48, 256), seed: int = 0) -> torch.Tensor:
    """Normal weights, the same rounded to bf16, and values on a coarse grid (many ties)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "grid":
        return torch.randint(-16, 17, shape, generator=gen).float() * 0.125
    x = torch.randn(shape, generator=gen) * torch.logspace(-4, 1, shape[0]).reshape(
        -1, *[1] * (len(shape) - 1)
    )
    return x.to(torch.bfloat16).float() if kind == "bf16" else x


def llamacpp(x: torch.Tensor, name: str) -> tuple[np.ndarray, np.ndarray]:
    """gguf-py's bytes for `x` and the values they decode to."""
    data = quants.quantize(x.numpy(), GGUF_PY[name])
    return data, quants.dequantize(data, GGUF_PY[name])


@pytest.mark.parametrize("name", sorted(GGUF_PY))
@pytest.mark.parametrize("kind", ["normal", "bf16", "grid"])
def test_fake_quantization_is_llamacpps_dequantized_values(name: str, kind: str) -> None:
    x = weights(kind)
    data, expected = llamacpp(x, name)
    got = formats.get(name).quantize_dequantize(x)
    np.testing.assert_array_equal(got.numpy().view(np.uint32), expected.view(np.uint32))
    assert formats.get(name).storage_bytes(x.shape) == data.nbytes


@pytest.mark.parametrize("name", sorted(GGUF_PY))
def test_higher_dimensional_weights_quantize_along_the_last_dim(name: str) -> None:
    x = weights("normal", (4, 6, 64), seed=3)
    _, expected = llamacpp(x, name)
    got = formats.get(name).quantize_dequantize(x)
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("name", sorted(GGUF_PY))
def test_packed_codes_decode_to_llamacpps_values(name: str) -> None:
    x = weights("bf16", (16, 96), seed=4)
    packed = packing.pack(x, formats.get(name))
    np.testing.assert_array_equal(packing.unpack(packed).numpy(), llamacpp(x, name)[1])
    assert packed.nbytes == formats.get(name).storage_bytes(x.shape)


def test_ggml_mxfp4_differs_from_ocp_mxfp4_only_on_ties() -> None:
    """0.75 lies halfway between E2M1's 0.5 and 1.0: llama.cpp keeps the first (smaller),
    OCP rounds to the even 1.0; off the ties the two agree."""
    block = torch.zeros(1, 32)
    block[0, 0], block[0, 1], block[0, 2] = 6.0, 0.75, 0.8
    ggml = formats.get("mxfp4_ggml").quantize_dequantize(block)
    ocp = formats.get("mxfp4").quantize_dequantize(block)
    assert (ggml[0, 1].item(), ocp[0, 1].item()) == (0.5, 1.0)
    assert ggml[0, 2] == ocp[0, 2] == 1.0
    x = weights("normal", seed=5)
    assert torch.equal(formats.get("mxfp4_ggml").quantize_dequantize(x),
                       formats.get("mxfp4").quantize_dequantize(x))  # fmt: skip


def test_rows_must_hold_whole_blocks() -> None:
    assert formats.get("q4_0").row_multiple == 32
    assert formats.get("int4_g128").row_multiple == 1


def test_k_quants_take_cs_correctly_rounded_square_root() -> None:
    """q4_k/q5_k weight each element by sqrt(mean x^2): torch's float32 sqrt on AVX-512 CPUs
    can be one ulp off (0.016852600 / 32 gives 0.022948721, C's sqrtf 0.022948720), which
    moved a q4_k row of a real model to another scale; mixprec's is C's on every value."""
    from mixprec.kernels.kquants import sqrtf

    values = torch.rand(100_000, generator=torch.Generator().manual_seed(0)) * 2.0**-8
    values = torch.cat([values, torch.tensor([0.016852600499987602 / 32])])
    expected = np.sqrt(values.numpy())  # numpy's float32 sqrt: correctly rounded (IEEE)
    np.testing.assert_array_equal(sqrtf(values).numpy(), expected)
    assert sqrtf(torch.tensor([0.016852600499987602 / 32])).item() == 0.022948719561100006
