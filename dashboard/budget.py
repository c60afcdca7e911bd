"""The Budget page's model: re-solve the ILP from a run's cached score table at any budget.

Kept free of Streamlit (tested directly); app.py caches the allocation problem per run, so a
slider move costs one ILP solve on the table (well under a second for the built-in models).
"""

from __future__ import annotations

import pandas as pd

from mixprec.allocation import AllocationProblem, allocate
from mixprec.plan import PrecisionPlan
from mixprec.search.cost import Budget
from mixprec.search.selection import largest_total, smallest_totals

__all__ = ["UNITS", "AllocationProblem", "budget_range", "plan_bars", "plan_within"]


UNITS = {"bits per weight": "bits", "MB": "MB"}  # slider label -> Budget unit


def budget_range(problem: AllocationProblem, unit: str = "bits") -> tuple[float, float]:
    """The smallest and largest plans among the table's scored schemes, in `unit`."""
    costs = problem.costs
    scores = problem.scores()
    (least,) = smallest_totals(scores, [costs.bytes])
    scale = Budget(1.0, unit)
    return (scale.from_weight_bytes(least, costs).value,
            scale.from_weight_bytes(largest_total(scores, costs.bytes), costs).value)  # fmt: skip


def plan_within(problem: AllocationProblem, value: float, unit: str = "bits") -> PrecisionPlan:
    """The ILP plan with the least predicted loss within `value` (bits per weight or MB)."""
    return allocate(problem, Budget(value, unit))


def plan_bars(problem: AllocationProblem, plan: PrecisionPlan) -> pd.DataFrame:
    """One row per decision unit, in model order: its scheme and stored bits per weight."""
    costs = problem.costs
    choice = costs.choice_of(plan.assignment)
    rows = [
        {"unit": unit, "scheme": costs.schemes[k],
         "bits": 8 * float(costs.bytes[i, k]) / float(costs.params[i])}
        for i, (unit, k) in enumerate(zip(costs.units, choice, strict=True))
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=["unit", "scheme", "bits"])
