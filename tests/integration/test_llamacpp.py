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
from mixprec.kernels.ggml_weighted import IGNORES_IMPORTANCE, WEIGHTED
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


def edge_blocks() -> torch.Tensor:
    """Rows of 64 at the edges of llama.cpp's own roundings: nvfp4 sub-blocks of 16 whose
    scale (amax / 6) falls on UE4M3's boundaries (half-way mantissas, the 2^-9 grid below 2^-6
    and its cap at 7 * 2^-9, 2^8 and 448), and iq4_nl blocks of 32 that are constant, one-hot,
    led by a negative value, or at its empty-block threshold (amax 1e-15)."""
    gen = torch.Generator().manual_seed(11)
    scales = [m * 2.0**e for e in range(-12, 10) for m in (1.0, 1.0625, 1.0625 - 2**-20, 1.9375)]
    scales += [7.5 * 2**-9, 7.4 * 2**-9, 0.5 * 2**-9, 0.51 * 2**-9, 0.49 * 2**-9, 240.0, 248.0,
               255.9, 256.0, 300.0, 448.0, 449.0, 1e6, 1e-30]  # fmt: skip
    subs = []
    for i, scale in enumerate(scales):
        block = (torch.rand(16, generator=gen) * 2 - 1) * 6 * scale
        block[i % 16] = 6 * scale * (-1) ** i
        subs.append(block)
    subs += [torch.zeros(16)] * (-len(subs) % 4)
    ones = torch.full((32,), 0.3)
    one_hot = torch.zeros(32).index_fill(0, torch.tensor([7]), 1.0)
    negative = torch.linspace(-5, 4, 32)
    empty, tiny = one_hot * 1e-16, one_hot * 2e-15
    rows = [torch.cat([ones, one_hot]), torch.cat([negative, -negative]), torch.cat([empty, tiny])]
    return torch.cat([torch.stack(subs).reshape(-1, 64), torch.stack(rows)])


@pytest.mark.parametrize("name", ["nvfp4_ggml", "iq4_nl"])
def test_our_roundings_are_llamacpps_at_their_edges(build: llamacpp.LlamaCpp, name: str) -> None:
    fmt, x = formats.get(name), edge_blocks()
    data = llamacpp.c_quantize(build, x.numpy(), fmt.ggml_type)
    assert np.array_equal(ggml_blocks.encode(x, fmt), data)
    expected = quants.dequantize(data, GGMLQuantizationType[fmt.ggml_type.upper()])
    np.testing.assert_array_equal(fmt.quantize_dequantize(x).numpy(), expected)


def test_the_build_is_cached(build: llamacpp.LlamaCpp) -> None:
    stamp = build.bin / llamacpp.STAMP
    before = stamp.stat().st_mtime_ns
    assert llamacpp.build("quantizer") == build and stamp.stat().st_mtime_ns == before
    assert build.ggml_base.is_file()
    assert build.bin.name.startswith("quantizer-")  # named by its build options
    left = [p for p in build.bin.parent.glob(".quantizer-*") if p.is_dir()]
    assert not left  # no build folder left behind


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


def test_a_build_is_named_by_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build made with other options (an older one that used AMX) is never taken for this
    one; x86-64 builds leave AMX out, whose tiles fault on sandboxed machines."""
    here = llamacpp.part_folder("tools")
    monkeypatch.setattr(llamacpp, "_CMAKE_OPTIONS", (*llamacpp._CMAKE_OPTIONS, "-DGGML_AVX=OFF"))
    assert llamacpp.part_folder("tools") != here
    monkeypatch.setattr(llamacpp.platform, "machine", lambda: "x86_64")
    assert any("-mno-amx-int8" in option for option in llamacpp.cmake_options())
    monkeypatch.setattr(llamacpp.platform, "machine", lambda: "aarch64")
    assert not any("amx" in option for option in llamacpp.cmake_options())


def importance(seed: int, cols: int) -> torch.Tensor:
    """An imatrix entry's shape: per column, mean squares over six decades, a few zeros."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.rand(cols, generator=gen) * torch.logspace(-3, 3, cols)[torch.randperm(cols)]
    values[::97] = 0.0
    return values


@pytest.mark.parametrize("fmt", LLAMACPP_FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("kind", ["normal", "bf16", "grid"])
def test_with_an_importance_matrix_our_values_are_llamacpps(
    build: llamacpp.LlamaCpp, fmt: formats.NumberFormat, kind: str
) -> None:
    """llama-quantize --imatrix's search (ggml_quantize_chunk given the column importance)."""
    x, weights_of_columns = weights(7, kind), importance(3, 512)
    assert (fmt.ggml_type in WEIGHTED) != (fmt.ggml_type in IGNORES_IMPORTANCE)
    data = llamacpp.c_quantize(build, x.numpy(), fmt.ggml_type, weights_of_columns.numpy())
    expected = quants.dequantize(data, GGMLQuantizationType[fmt.ggml_type.upper()])
    got = fmt.quantize_dequantize(x, weights_of_columns).numpy()
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert np.array_equal(ggml_blocks.encode(x, fmt, weights_of_columns), data)
    if fmt.ggml_type in WEIGHTED and kind == "normal":  # the matrix changed the search
        assert not np.array_equal(llamacpp.c_quantize(build, x.numpy(), fmt.ggml_type), data)
