"""The Budget page's model: re-solve the ILP from a run's cached score table at any budget.

Kept free of Streamlit (tested directly); app.py caches the opened analysis per run, so a
slider move costs one ILP solve on the table (well under a second for the built-in models).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mixprec.plan import PrecisionPlan
from mixprec.search.base import make_strategy, score_matrix
from mixprec.search.cost import Budget
from mixprec.search.runs import Analysis, open_analysis

__all__ = ["Analysis", "bits_range", "open_run", "plan_bars", "plan_within"]


def open_run(run: Path, estimator: str) -> Analysis:
    """The run's table, model and cost model (loads the model; cache the result)."""
    return open_analysis(run, estimator)


def bits_range(analysis: Analysis, estimator: str) -> tuple[float, float]:
    """The smallest and largest plans' bits per weight among the table's scored schemes."""
    costs = analysis.costs
    scored = np.isfinite(score_matrix(analysis.table, costs, estimator))
    least = np.where(scored, costs.bytes, np.inf).min(axis=1).sum()
    most = np.where(scored, costs.bytes, -np.inf).max(axis=1).sum()
    return 8 * float(least) / costs.total_params, 8 * float(most) / costs.total_params


def plan_within(analysis: Analysis, estimator: str, bits: float) -> PrecisionPlan:
    """The ILP plan with the least predicted loss within `bits` per weight."""
    strategy = make_strategy("ilp", estimator=estimator)
    return strategy.solve(analysis.table, analysis.costs, Budget(bits, "bits"))


def plan_bars(analysis: Analysis, plan: PrecisionPlan) -> pd.DataFrame:
    """One row per decision unit, in model order: its scheme and stored bits per weight."""
    costs = analysis.costs
    choice = costs.choice_of(plan.assignment)
    rows = [
        {"unit": unit, "scheme": costs.schemes[k],
         "bits": 8 * float(costs.bytes[i, k]) / float(costs.params[i])}
        for i, (unit, k) in enumerate(zip(costs.units, choice, strict=True))
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["unit", "scheme", "bits"])
