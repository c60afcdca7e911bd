"""The Budget page's model: re-solve a fast strategy from a run's cached score table at any
budget, the references beside it, and saving a plan into the run.

Kept free of Streamlit (tested directly); the page caches the allocation problem per run, so a
slider move costs one solve on the table (well under a second for the built-in models).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from mixprec.allocation import AllocationProblem, allocate, uniform_plans
from mixprec.files import atomic_write_text
from mixprec.plan import PrecisionPlan
from mixprec.scheme import KEEP
from mixprec.search.configs import UniformConfig, builtin_strategies
from mixprec.search.cost import Budget
from mixprec.search.selection import feasible_mask, smallest_totals
from mixprec.store import RunFolder

__all__ = ["METHODS", "UNITS", "AllocationProblem", "budget_range", "plan_bars", "plan_within",
           "references", "save_plan"]  # fmt: skip

UNITS = {"bits per weight": "bits", "MB": "MB"}  # slider label -> Budget unit
# what the slider re-solves with: the fast strategies that choose per unit (uniform is shown
# beside every plan as a reference instead)
METHODS = tuple(c.name for c in builtin_strategies() if c.FAST and c is not UniformConfig)
FP_LABEL = "FP (every unit kept)"  # the references' row of the unquantized model
SAVED = "saved"  # a saved plan's file name starts with this: never one the pipeline writes


def budget_range(problem: AllocationProblem, unit: str = "bits") -> tuple[float, float]:
    """The smallest feasible plan and the largest quantized one in `unit`: keeping every unit
    unquantized is not a budget anyone searches for."""
    costs, scores = problem.costs, problem.scores()
    (least,) = smallest_totals(scores, [costs.bytes])
    allowed = feasible_mask(scores)
    quantized = allowed.copy()
    if KEEP in costs.schemes:
        quantized[:, costs.schemes.index(KEEP)] = False
    only_kept = ~quantized.any(axis=1)  # a unit that can only stay as it is
    quantized[only_kept] = allowed[only_kept]
    most = float(np.where(quantized, costs.bytes, -np.inf).max(axis=1).sum())
    scale = Budget(1.0, unit)
    return (scale.from_weight_bytes(least, costs).value,
            scale.from_weight_bytes(most, costs).value)  # fmt: skip


def plan_within(
    problem: AllocationProblem, value: float, unit: str = "bits", method: str = "ilp"
) -> PrecisionPlan:
    """`method`'s plan (least predicted loss) within `value` bits per weight or MB."""
    from mixprec.strategies import strategy_config

    return allocate(problem, Budget(value, unit), strategy_config(method))


def references(problem: AllocationProblem, value: float, unit: str = "bits") -> pd.DataFrame:
    """FP and every uniform plan within the budget: what a mixed plan must beat."""
    costs = problem.costs
    rows = np.arange(len(costs.units))
    keep = costs.schemes.index(KEEP) if KEEP in costs.schemes else None
    out = []
    if keep is not None:
        size = float(costs.bytes[rows, keep].sum())
        bits = 8 * size / float(costs.params.sum())
        out.append({"reference": FP_LABEL, "predicted score": 0.0,
                    "bits/weight": bits, "fits": False})  # fmt: skip
    for scheme, plan in uniform_plans(problem, Budget(value, unit)).items():
        out.append({"reference": f"uniform {scheme}", "predicted score": plan.predicted["score"],
                    "bits/weight": plan.predicted["bits_per_weight"], "fits": True})  # fmt: skip
    return pd.DataFrame(out, columns=["reference", "predicted score", "bits/weight", "fits"])


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


def save_plan(run: Path, plan: PrecisionPlan, measured: dict[str, object] | None = None) -> Path:
    """Write `plan` (and its measurement, where taken) into the run beside the pipeline's plans,
    as `saved-METHOD-BUDGET[-N].json`; a file already there is never replaced, and the same plan
    saved twice is the same file."""
    folder = RunFolder(run)
    method = str(plan.provenance.get("strategy", "plan"))
    stem = f"{SAVED}-{method}-{plan.budget}".replace("/", "-")
    path = folder.path / "plans" / f"{stem}.json"
    text = json.dumps(plan.to_json(), indent=2) + "\n"
    for n in range(2, 1000):
        if not path.exists():
            break
        if path.read_text(encoding="utf-8") == text:
            return path  # saved before
        path = path.with_name(f"{stem}-{n}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    if measured is not None:
        out = folder.eval_path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(measured, indent=2) + "\n")
    return path
