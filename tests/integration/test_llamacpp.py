"""llama.cpp's own C quantizer (libggml-base from the cached build, made here on first use) is
the ground truth for mixprec's llama.cpp formats: same bytes as gguf-py, same values as ours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, quants

from mixprec import llamacpp
from mixprec.errors import MixprecError
from mixprec.kernels import formats, ggml_blocks
from tests.helpers.cli import run

LLAMACPP_FORMATS = [f for f in formats.all() if f.family == "ggml"]


@pytest.fixture(scope="module")
def build() -> llamacpp.LlamaCpp:
    """llama.cpp's quantizer library, built from the sdist on first use (about a minute)."""
    return llamacpp.build("quantizer")


def weights(seed: int, kind: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(24, 512, generator=gen) * torch.logspace(-4, 1, 24).unsqueeze(1)
    if kind == "grid":  # many exact ties between two codes
        return torch.randint(-16, 17, (24, 512), generator=gen).float() * 0.125
    return x.to(torch.bfloat16).float() if kind == "bf16" else x


@pytest.mark.parametrize("fmt", LLAMACPP_FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("kind", ["normal", "bf16", "grid"])
def test_our_values_are_llamacpps(build: llamacpp.LlamaCpp, fmt: formats.NumberFormat,
                                  kind: str) -> None:  # fmt: skip
    x = weights(7, kind)
    data = llamacpp.c_quantize(build, x.numpy(), fmt.ggml_type)
    kind_id = GGMLQuantizationType[fmt.ggml_type.upper()]
    expected = quants.dequantize(data, kind_id)
    got = fmt.quantize_dequantize(x).numpy()
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert data.nbytes == fmt.storage_bytes(x.shape)
    if fmt.ggml_type in {"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "mxfp4"}:  # gguf-py's too
        assert np.array_equal(quants.quantize(x.numpy(), kind_id), data)
    assert np.array_equal(ggml_blocks.encode(x, fmt), data)  # the bytes mixprec writes


def test_the_build_is_cached(build: llamacpp.LlamaCpp) -> None:
    stamp = build.bin / llamacpp.STAMP
    before = stamp.stat().st_mtime_ns
    assert llamacpp.build("quantizer") == build and stamp.stat().st_mtime_ns == before
    assert build.ggml_base.is_file()
    assert not list(build.bin.parent.glob(".quantizer-*"))  # no build folder left behind


def test_a_folder_without_the_tools_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(MixprecError, match=r"--llamacpp-bin .* has no llama-quantize"):
        llamacpp.find(tmp_path)


def test_no_build_names_the_command_that_makes_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path))
    with pytest.raises(MixprecError, match="mixprec llamacpp-build"):
        llamacpp.find()
    code, _, err = run(["llamacpp-build", "--jobs", "-1"], capsys)
    assert code == 2 and "--jobs -1" in err
    code, _, err = run(["llamacpp-build", "--part", "server"], capsys)
    assert code == 2 and "'server'; valid: quantizer, tools" in err
