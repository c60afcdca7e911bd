"""llama.cpp's importance matrix read as llama-quantize reads it, in both file formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mixprec import imatrix
from mixprec.errors import MixprecError
from tests.helpers.llamacpp import write_imatrix


def entries(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        "blk.0.attn_q.weight": (rng.random((1, 64), np.float32) * 30, np.array([7.0])),
        "blk.0.ffn_down.weight": (rng.random((1, 128), np.float32), np.array([3.0])),
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["gguf", "legacy"])
def test_both_formats_give_the_mean_squares(tmp_path: Path, legacy: bool) -> None:
    made = entries()
    loaded = imatrix.load(write_imatrix(tmp_path / "m.dat", made, legacy=legacy))
    assert set(loaded.entries) == set(made) and loaded.datasets == ("docs",)
    assert loaded.chunk_count == 10 and len(loaded.digest) == 64
    for name, (sums, counts) in made.items():
        want = (sums / np.float32(counts[0])).reshape(-1)
        np.testing.assert_array_equal(loaded.entries[name], want)


def test_experts_are_normalised_apart_and_an_unused_one_is_ones(tmp_path: Path) -> None:
    sums = np.arange(12, dtype=np.float32).reshape(3, 4) + 1
    path = write_imatrix(
        tmp_path / "m.gguf", {"blk.0.ffn_up_exps.weight": (sums, np.array([2, 0, 4]))}
    )
    loaded = imatrix.load(path)
    got = loaded.for_tensor("blk.0.ffn_up_exps.weight", (3, 5, 4))
    assert got is not None and got.shape == (3, 4)
    np.testing.assert_array_equal(got[0].numpy(), sums[0] / 2)
    np.testing.assert_array_equal(got[1].numpy(), np.ones(4, np.float32))
    np.testing.assert_array_equal(got[2].numpy(), sums[2] / 4)


def test_a_tensor_gets_its_columns_or_nothing(tmp_path: Path) -> None:
    loaded = imatrix.load(write_imatrix(tmp_path / "m.gguf", entries()))
    got = loaded.for_tensor("blk.0.attn_q.weight", (32, 64))
    assert isinstance(got, torch.Tensor) and got.shape == (64,)
    assert loaded.for_tensor("blk.1.attn_q.weight", (32, 64)) is None  # as llama-quantize: none
    with pytest.raises(MixprecError, match=r"blk.0.attn_q.weight has 64 values.*needs 96"):
        loaded.for_tensor("blk.0.attn_q.weight", (32, 96))


def test_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(MixprecError, match="is not a file"):
        imatrix.load(tmp_path / "missing.gguf")
    (tmp_path / "junk").write_bytes(b"\x05\x00\x00\x00abc")
    with pytest.raises(MixprecError, match="neither a GGUF nor a legacy imatrix"):
        imatrix.load(tmp_path / "junk")
    bad = entries()
    bad["blk.0.attn_q.weight"][0][0, 3] = np.inf
    with pytest.raises(MixprecError, match="non-finite"):
        imatrix.load(write_imatrix(tmp_path / "inf.gguf", bad))
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "plain.gguf"), "llama")
    writer.add_tensor("x.in_sum2", np.ones((1, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(MixprecError, match="no imatrix metadata"):
        imatrix.load(tmp_path / "plain.gguf")
