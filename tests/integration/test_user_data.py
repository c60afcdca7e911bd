"""Your own text through the CLI and `mixprec run`: scored on it, searched and measured on it,
recorded in the manifest, re-scored when it changes, and every misuse one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixprec.sensitivity.table import ScoreTable
from mixprec.store import read_manifest
from tests.helpers.cli import run
from tests.helpers.models import text_lm_folder

SHAPE = ["--seq-len", "32", "--calib-samples", "4", "--eval-samples", "4"]
WORDS = "weights activations scales blocks groups tokens layers budgets plans formats".split()


def notes(path: Path, shift: int = 0) -> Path:
    """A .jsonl of 40 short texts; `shift` makes other text of the same shape."""
    lines = []
    for i in range(40):
        words = " ".join(WORDS[(i + j + shift) % len(WORDS)] for j in range(12))
        lines.append(json.dumps({"body": f"note {i}: {words}."}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"hf:{text_lm_folder(tmp_path_factory.mktemp('lm') / 'lm')}"


def analyze(model: str, data: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> int:
    code, _, err = run(["analyze", "-m", model, "--data", str(data), "--text-field", "body",
                        *SHAPE, "--schemes", "w:int8,w:int4_g32", "--estimators",
                        "fisher,isolation", "--levels", "layer", "--out", str(out)],
                       capsys)  # fmt: skip
    assert code == 0, err
    return code


def test_scored_searched_and_measured_on_your_text(
    model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, run_folder = notes(tmp_path / "notes.jsonl"), tmp_path / "run"
    analyze(model, data, run_folder, capsys)
    spec = read_manifest(run_folder).analysis.spec  # type: ignore[union-attr]
    assert spec.data is not None and spec.data["path"] == str(data) and spec.data["seq_len"] == 32
    first = ScoreTable.load(run_folder / "scores.parquet")
    plan = tmp_path / "plan.json"
    # a 30k-token LM head in a 2-layer model: searched too (it is kept by default)
    search = [
        "search",
        str(run_folder),
        "--budget",
        "6bits",
        "--exclude",
        "none",
        "--out",
        str(plan),
    ]
    code, _, err = run(search, capsys)
    assert code == 0, err
    measured = json.loads(plan.read_text())["measured"]
    code, out, err = run(["evaluate", "--plan", str(plan), "--data", str(data), "--text-field",
                          "body", *SHAPE, "--json"], capsys)  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["metrics"]["perplexity"] == pytest.approx(measured["perplexity"])
    # other text: other calibration batches, so no cached cell is reused and the scores move
    other = tmp_path / "other"
    analyze(model, notes(tmp_path / "other.jsonl", shift=3), other, capsys)
    assert not ScoreTable.load(other / "scores.parquet").same_scores(first)
    # the file edited after scoring: searching the old scores would mix two texts
    notes(data, shift=5)
    code, _, err = run(search, capsys)
    assert code == 2 and "changed since" in err and err.count("\n") == 1


def test_a_run_config_takes_a_data_table(
    model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = notes(tmp_path / "notes.jsonl")
    config = tmp_path / "study.toml"
    config.write_text(
        f'model = "{model}"\noutput = "{tmp_path / "run"}"\nschemes = ["w:int8", "w:int4_g32"]\n'
        'estimators = ["isolation"]\nlevels = ["layer"]\nbudgets = ["6bits"]\nexports = []\n'
        'exclude = ["none"]\n'
        f'data = {{path = "{data}", field = "body", seq_len = 32, calib_samples = 4, '
        "eval_samples = 4}\n"
    )
    code, _, err = run(["run", str(config)], capsys)
    assert code == 0, err
    assert read_manifest(tmp_path / "run").analysis.spec.data["field"] == "body"  # type: ignore[union-attr]
    evaluated = json.loads((tmp_path / "run" / "eval" / "ilp-6bits.json").read_text())
    assert evaluated["metrics"]["perplexity"] > 1
    code, out, _ = run(["run", str(config)], capsys)
    assert code == 0 and "analyze: up to date" in out
    notes(data, shift=2)  # edited text: the analysis is redone
    code, out, _ = run(["run", str(config)], capsys)
    assert code == 0 and "analyze ..." in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seq-len", "64"], "mixprec: --seq-len shapes your own text: give it with --data FILE"),
        (["--chat-template"], "mixprec: --chat-template shapes your own text: give it with --data"),
        (["--data", "{data}"], "mixprec: --data (your own text) is read with an hf: model's"),
    ],
)
def test_misuse_is_one_line(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = notes(tmp_path / "notes.jsonl")
    filled = [a.format(data=data) for a in argv]
    code, _, err = run(["analyze", "-m", "digits-cnn", *filled, "--out", str(tmp_path / "r")],
                       capsys)  # fmt: skip
    assert code == 2 and err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_the_python_form_scores_the_same_text(model: str, tmp_path: Path) -> None:
    import mixprec
    from mixprec.sensitivity.cache import CellCache

    data = mixprec.TextData(str(notes(tmp_path / "n.jsonl")), "body", 32, 4, 4)
    table = mixprec.score(model, data, ["w:int4_g32"], ["isolation"], ["layer"],
                          cache=CellCache(tmp_path / "cells"))  # fmt: skip
    again = mixprec.score(model, data, ["w:int4_g32"], ["isolation"], ["layer"],
                          cache=CellCache(tmp_path / "fresh"))  # fmt: skip
    assert table.same_scores(again) and (table.frame["status"] == "ok").all()
    loaded = mixprec.load_model(model, data=data)
    with pytest.raises(mixprec.MixprecError, match="TextData is read for a source string"):
        mixprec.score(loaded.model, data)
