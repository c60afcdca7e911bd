"""The studies' budget columns and verdicts (experiments/study.py): a plan that leaves more than
the goal unused says how much worse the best plan that full predicts, checked by brute force."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mixprec import AnalysisSpec, analyze
from mixprec.allocation import AllocationProblem, allocate
from mixprec.models import load_model
from mixprec.search.cost import Budget, InfeasibleBudget

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.fixture(scope="module")
def study() -> Any:
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        import study as module
    finally:
        sys.path.remove(str(EXPERIMENTS))
    return module


def test_a_loose_plan_says_how_much_worse_the_best_full_plan_predicts(study: Any) -> None:
    spec = AnalysisSpec(
        "digits-cnn", ("w:int8", "w:int4_g128", "w:int2"), ("fisher",), ("layer",), 1
    )
    problem = AllocationProblem.build(analyze(spec, progress=False), load_model("digits-cnn"),
                                      "fisher", exclude=["none"])  # fmt: skip
    scores, cost = problem.scores(), problem.costs.bytes
    plans = list(itertools.product(*(np.flatnonzero(np.isfinite(r)) for r in scores)))
    rows = np.arange(len(scores))
    checked = 0
    for bits in np.arange(3.0, 9.01, 0.25):
        budget = Budget(float(bits), "bits")
        try:
            plan = allocate(problem, budget, study.OPTIMUM)
        except InfeasibleBudget:
            continue
        columns = study.budget_columns(problem, budget, plan)
        limit = budget.weight_bytes(problem.costs)
        full = [
            scores[rows, list(p)].sum()
            for p in plans
            if (1 - study.BUDGET_GOAL / 100) * limit <= cost[rows, list(p)].sum() <= limit
        ]
        if columns[study.LEFT] <= study.BUDGET_GOAL or not full:
            assert np.isnan(columns[study.FULLER])
            continue
        own = plan.predicted["score"]
        assert columns[study.FULLER] == pytest.approx(100 * (min(full) - own) / own, rel=1e-6)
        assert columns[study.FULLER] >= -1e-6  # the optimum is never beaten by a fuller plan
        checked += 1
    assert checked  # some budget on this grid leaves room that only a worse plan fills


def test_the_verdict_names_what_filling_would_cost(study: Any) -> None:
    frame = pd.DataFrame(
        {
            "method": ["ilp"] * 3,
            study.LEFT: [0.1, 1.2, 3.0],
            study.FULLEST: [0.0, 0.1, 2.0],
            study.FULLER: [np.nan, 4.5, np.nan],
        }
    )
    [line] = study.budget_verdicts(frame)  # fmt: skip
    assert "within 0.5% at 1 of the 2 plans whose budget some plan fills that closely" in line
    assert "(at 1 no plan can: the fullest leaves up to 2%)" in line
    assert "at the other 1 the best plan that full predicts 4.5% to 4.5% worse" in line
