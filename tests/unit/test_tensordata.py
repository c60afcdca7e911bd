"""Your own inputs for a model that does not read text: `.safetensors` (one tensor per batch
key) and `.npy` (the model's one input), read without pickle, split seeded and disjoint, and
every bad file one line; `--data` takes them for any source and a run reloads them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mixprec.errors import MixprecError
from mixprec.models import load_model
from mixprec.store import read_manifest
from mixprec.tensordata import TensorData, data_from_json
from mixprec.textdata import TextData
from tests.helpers.cli import run

MLP = "module:tests.helpers.factories:small_mlp"


def digits_file(path: Path, count: int = 40) -> Path:
    """digits-cnn's own kind of inputs and labels, as one safetensors file."""
    gen = torch.Generator().manual_seed(0)
    save_file({"inputs": torch.rand(count, 1, 8, 8, generator=gen) * 16,
               "labels": torch.randint(0, 10, (count,), generator=gen)}, str(path))  # fmt: skip
    return path


def test_safetensors_become_the_models_batches_split_without_overlap(tmp_path: Path) -> None:
    data = TensorData(str(digits_file(tmp_path / "d.safetensors")), 12, 20, batch_size=8)
    bundle = load_model("digits-cnn", data=data)
    assert [len(b["inputs"]) for b in bundle.calibration] == [8, 4]
    assert [len(b["labels"]) for b in bundle.evaluation] == [8, 8, 4]
    seen = [tuple(x.flatten().tolist()) for b in (*bundle.calibration, *bundle.evaluation)
            for x in b["inputs"]]  # fmt: skip
    assert len(set(seen)) == 32  # 12 + 20 distinct samples
    again = load_model("digits-cnn", data=data)
    assert torch.equal(again.calibration[0]["inputs"], bundle.calibration[0]["inputs"])
    other = load_model("digits-cnn", data=TensorData(data.path, 12, 20, batch_size=8, seed=1))
    assert not torch.equal(other.calibration[0]["inputs"], bundle.calibration[0]["inputs"])


def test_npy_is_the_one_input_of_a_module_model(tmp_path: Path) -> None:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).standard_normal((24, 16)).astype(np.float64))
    bundle = load_model(MLP, data=TensorData(str(path), 8, 8))
    batch = bundle.calibration[0]
    assert set(batch) == {"inputs"} and batch["inputs"].dtype == torch.float32  # the model's
    assert len(bundle.calibration) == 1 and len(bundle.evaluation) == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: np.save(p / "a.npy", np.zeros((30, 1, 8, 8))),
            r"is one array; this model's "
            r"batches have keys inputs, labels: give a \.safetensors file",
        ),
        (
            lambda p: save_file({"pixels": torch.zeros(30, 64)}, str(p / "a.safetensors")),
            r"holds tensors pixels; this model's batches have keys inputs, labels",
        ),
        (
            lambda p: save_file(
                {"inputs": torch.zeros(30, 1, 8, 8), "labels": torch.zeros(29)},
                str(p / "a.safetensors"),
            ),
            r"different sample counts \[29, 30\]",
        ),
        (
            lambda p: save_file(
                {"inputs": torch.zeros(40, 1, 8, 8), "labels": torch.zeros(40)},
                str(p / "a.safetensors"),
            ),
            r"tensor labels is torch.float32; the "
            r"model's 'labels' is torch.int64",
        ),
        (lambda p: digits_file(p / "a.safetensors", 10), r"holds 10 samples; 32 needed"),
        (lambda p: (p / "a.npy").write_bytes(b"not numpy"), r"is not a \.npy array"),
        (lambda p: (p / "a.safetensors").write_bytes(b"\x00" * 16), r"is not a safetensors file"),
    ],
)
def test_bad_input_files_are_one_line(tmp_path: Path, make: object, message: str) -> None:
    make(tmp_path)  # type: ignore[operator]
    path = next(tmp_path.iterdir())
    with pytest.raises(MixprecError, match=message):
        load_model("digits-cnn", data=TensorData(str(path), 12, 20))


def test_pickled_npy_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(MixprecError, match=r"is not a \.npy array: .*pickle"):
        TensorData(str(path)).tensors()


def test_json_form_round_trips_by_file_kind(tmp_path: Path) -> None:
    tensors = TensorData(str(tmp_path / "x.npy"), 4, 4, 2, seed=3)
    text = TextData(str(tmp_path / "t.jsonl"), seq_len=64)
    assert data_from_json(tensors.to_json()) == tensors
    assert data_from_json(text.to_json()) == text


def test_cli_scores_your_inputs_and_search_reloads_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = digits_file(tmp_path / "d.safetensors")
    run_dir = tmp_path / "run"
    code, _, err = run(
        ["analyze", "-m", "digits-cnn", "--data", str(data), "--calib-samples", "12",
         "--eval-samples", "20", "--schemes", "w:int8,w:int4", "--estimators", "fisher",
         "--levels", "layer", "--out", str(run_dir)], capsys,
    )  # fmt: skip
    assert code == 0, err
    recorded = read_manifest(run_dir).analysis.spec.data  # type: ignore[union-attr]
    assert recorded is not None and recorded["path"] == str(data)
    plan = tmp_path / "plan.json"
    code, _, err = run(["search", str(run_dir), "--budget", "6bits", "--estimator", "fisher",
                        "--out", str(plan)], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(plan.read_text())["measured"]  # measured on your evaluation samples
    code, _, err = run(
        ["analyze", "-m", "digits-cnn", "--data", str(data), "--seq-len", "64",
         "--out", str(tmp_path / "r2")], capsys,
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "--seq-len" in err
