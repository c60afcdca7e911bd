"""Scores, plans and measurements made with llama.cpp's importance matrix (`--imatrix`): the
cells are filed apart, the run records the matrix, search re-reads it (and refuses a changed
one), the plan carries it, and an export without it warns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mixprec.export_llamacpp import gguf_names
from mixprec.sensitivity.table import ScoreTable
from mixprec.store import read_manifest
from mixprec.units import quantizable_layers, weight_matrix
from tests.helpers.cli import run
from tests.helpers.llamacpp import write_imatrix
from tests.helpers.models import make_llama

SCHEMES = ["--schemes", "w:q4_0,w:q5_1,w:q8_0", "--levels", "layer", "--estimators", "fisher"]


def matrix_for(folder: Path, path: Path, seed: int) -> Path:
    """An importance matrix for every layer of the Llama in `folder` but the (tied) head."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(folder)
    layers = [n for n in quantizable_layers(model) if n != "lm_head"]
    names, _ = gguf_names(model, layers)
    rng = np.random.default_rng(seed)
    entries = {}
    for module, tensor in names.items():
        columns = int(weight_matrix(quantizable_layers(model)[module]).shape[-1])
        sums = (rng.random((1, columns)) * np.logspace(-3, 3, columns)).astype(np.float32)
        entries[tensor] = (sums, np.array([16.0]))
    return write_imatrix(path, entries)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("imatrix") / "llama"
    make_llama().save_pretrained(folder)
    return folder


def scores(folder: Path) -> dict[tuple[str, str], float]:
    frame = ScoreTable.load(folder / "scores.parquet").frame
    return {(r.unit, r.scheme): r.score for r in frame.itertuples()}


def test_scored_searched_exported_with_an_importance_matrix(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, matrix = f"hf:{model}", matrix_for(model, tmp_path / "imatrix.gguf", 0)
    weighted, plain = tmp_path / "weighted", tmp_path / "plain"
    for out, extra in ((weighted, ["--imatrix", str(matrix)]), (plain, [])):
        code, _, err = run(["analyze", "-m", source, *SCHEMES, *extra, "--out", str(out)], capsys)
        assert code == 0, err
    spec = read_manifest(weighted).analysis.spec  # type: ignore[union-attr]
    assert spec.imatrix == str(matrix.resolve()) and spec.imatrix_sha256
    assert read_manifest(plain).analysis.spec.imatrix is None  # type: ignore[union-attr]
    ours, theirs = scores(weighted), scores(plain)
    assert ours.keys() == theirs.keys()
    changed = {cell for cell in ours if ours[cell] != theirs[cell]}
    assert {scheme for _, scheme in changed} == {"w:q4_0", "w:q5_1"}  # q8_0 ignores it
    assert all(unit != "lm_head" for unit, _ in changed)  # the matrix has no head
    plan = tmp_path / "plan.json"
    argv = ["search", str(weighted), "--budget", "6bits", "--target", "llamacpp", "--estimator",
            "fisher", "--exclude", "none", "--out", str(plan)]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 0, err
    provenance = json.loads(plan.read_text())["provenance"]
    assert provenance["imatrix_sha256"] == spec.imatrix_sha256
    overrides = tmp_path / "plan.txt"
    base = ["export", str(plan), "--to", "llamacpp", "--out", str(overrides)]
    code, _, err = run(base, capsys)
    assert code == 0 and "scored with the importance matrix" in err and "--imatrix" in err
    code, out, err = run([*base[:-1], str(tmp_path / "again.txt"), "--imatrix", str(matrix)],
                         capsys)  # fmt: skip
    assert code == 0 and "warning" not in err and "--imatrix" in out, err
    other = matrix_for(model, tmp_path / "other.gguf", 1)
    code, _, err = run([*base[:-1], str(tmp_path / "third.txt"), "--imatrix", str(other)], capsys)
    assert code == 0 and "is not the importance matrix the plan was scored with" in err
    code, _, err = run(["evaluate", "--plan", str(plan)], capsys)
    assert code == 0 and "scored with the importance matrix" in err
    matrix_for(model, matrix, 2)  # the matrix the run was scored with changes
    code, _, err = run([*argv[:-1], str(tmp_path / "p2.json")], capsys)
    assert code == 2 and "changed since" in err and err.count("\n") == 1


def test_a_matrix_of_another_model_fails_before_any_work(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = write_imatrix(tmp_path / "wrong.gguf", {"blk.0.attn_q.weight": (
        np.ones((1, 7), np.float32), np.array([4.0]))})  # fmt: skip
    unrelated = write_imatrix(tmp_path / "unrelated.gguf", {"blk.9.ffn_up.weight": (
        np.ones((1, 32), np.float32), np.array([4.0]))})  # fmt: skip
    for path, message in (
        (wrong, "has 7 values, but its tensor needs 32"),
        (unrelated, "holds none of"),
        (tmp_path / "none.gguf", "is not a file"),
    ):
        out = tmp_path / path.stem
        code, _, err = run(["analyze", "-m", f"hf:{model}", *SCHEMES, "--imatrix", str(path),
                            "--out", str(out)], capsys)  # fmt: skip
        assert code == 2 and message in err and err.count("\n") == 1, err
        assert not (out / "scores.parquet").exists()


def test_a_run_config_scores_and_exports_with_its_matrix(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    matrix = matrix_for(model, tmp_path / "imatrix.gguf", 0)
    config = tmp_path / "study.toml"
    config.write_text(
        f'model = "hf:{model}"\noutput = "{tmp_path / "run"}"\n'
        'schemes = ["w:q4_0", "w:q8_0"]\nestimators = ["fisher"]\nsearch_estimator = "fisher"\n'
        'exclude = ["none"]\nlevels = ["layer"]\n'
        f'budgets = ["6bits"]\ntarget = "llamacpp"\nexports = ["llamacpp"]\nimatrix = "{matrix}"\n'
    )
    code, _, err = run(["run", str(config)], capsys)
    assert code == 0, err
    assert "warning" not in err
    spec = read_manifest(tmp_path / "run").analysis.spec  # type: ignore[union-attr]
    assert spec.imatrix == str(matrix.resolve())
    exported = list((tmp_path / "run").rglob("*.txt"))
    assert exported and all("=q" in path.read_text() for path in exported)


def test_the_python_api_scores_with_a_matrix(model: Path, tmp_path: Path) -> None:
    from transformers import LlamaForCausalLM

    from mixprec import load_model, score
    from mixprec.sensitivity.cache import CellCache

    matrix = matrix_for(model, tmp_path / "imatrix.gguf", 0)

    def scored(source: object, folder: str, imatrix: Path | None = None) -> list[float]:
        table = score(source, None, ["w:q4_0"], ["fisher"], ["layer"],  # type: ignore[arg-type]
                      cache=CellCache(tmp_path / folder), imatrix=imatrix)  # fmt: skip
        return table.frame.sort_values("unit")["score"].tolist()

    by_source = scored(f"hf:{model}", "a", matrix)
    assert by_source != scored(f"hf:{model}", "a")
    bundle = load_model(f"hf:{model}")
    weighted = bundle.with_imatrix(matrix)
    assert weighted.importance and "lm_head" not in weighted.importance
    assert isinstance(weighted.model, LlamaForCausalLM)
    assert scored(weighted, "b") == pytest.approx(by_source, rel=1e-5)  # computed anew
    assert scored(bundle, "c", matrix) == pytest.approx(by_source, rel=1e-5)
