"""The README's Python example runs as written: model object -> score -> AllocationProblem ->
allocate at three budgets -> apply_plan -> evaluate, writing nothing but the score cache."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

import mixprec
from mixprec.search.cost import Budget

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- notebook-example -->"


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, re.DOTALL)
    assert found, f"README.md has no ```python block after {MARKER}"
    return found.group(1)


def files_under(folder: Path) -> set[Path]:
    return {p.relative_to(folder) for p in folder.rglob("*") if p.is_file()}


def test_the_readme_example_runs_and_writes_only_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(cache))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    assert {p.parts[0] for p in files_under(tmp_path)} == {"cache"}
    assert files_under(cache)  # every cell went to the cache
    problem = namespace["problem"]
    plans = namespace["plans"]
    assert isinstance(problem, mixprec.AllocationProblem) and isinstance(plans, dict)
    scores = []
    for budget, plan in plans.items():
        assert isinstance(plan, mixprec.PrecisionPlan)
        limit = Budget.parse(budget).weight_bytes(problem.costs)
        assert plan.predicted["weight_bytes"] <= limit * (1 + 1e-9)
        assert set(plan.assignment) == {"0", "2", "4"}
        scores.append(plan.predicted["score"])
    assert scores == sorted(scores, reverse=True)  # more bits, never a worse prediction
    assert len(set(map(str, (p.assignment for p in plans.values())))) > 1  # budgets matter
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(plans)
    assert all(math.isfinite(float(line.rsplit(" ", 1)[1])) for line in lines)
    robust = namespace["robust"]
    assert isinstance(robust, mixprec.PrecisionPlan) and robust.provenance["kappa"] == 1.0


def test_scoring_a_model_object_twice_reuses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second score of the same model and batches computes nothing: same table."""
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    first = namespace["table"]
    entries = files_under(tmp_path / "cache")
    again = mixprec.score(namespace["model"], namespace["data"], ["w:int8", "w:int4_g32",
                          "w:mxfp4"], ["fisher", "isolation"])  # type: ignore[arg-type]  # fmt: skip
    assert files_under(tmp_path / "cache") == entries
    assert isinstance(first, mixprec.ScoreTable) and again.same_scores(first)
