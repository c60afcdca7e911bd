"""The Pareto and Export pages' model: the run's plans and their measurements.

Kept free of Streamlit (tested directly); a plan the run could not measure still shows, with
its predicted values only.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mixprec.errors import MixprecError
from mixprec.plan import PrecisionPlan
from mixprec.report import plan_rows
from mixprec.store import RunFolder

PREDICTED = ("plan", "method", "budget", "bits/weight", "size MB", "predicted score")


def plan_files(run: Path) -> list[Path]:
    files = RunFolder(run).plans()
    if not files:
        raise MixprecError(
            f"run {run.name} has no plans yet (its search step has not finished); "
            "re-run `mixprec run` on its config"
        )
    return files


def plans_frame(run: Path) -> pd.DataFrame:
    """One row per plan: method, budget, predicted bits / size / score, measured metrics."""
    return pd.DataFrame(plan_rows(plan_files(run), run))


def measured_metrics(frame: pd.DataFrame) -> list[str]:
    """The measured metric columns (those beyond the predicted ones), in file order."""
    return [c for c in frame.columns if c not in PREDICTED]


def plan_diff(first: PrecisionPlan, second: PrecisionPlan) -> pd.DataFrame:
    """Every layer with both plans' schemes, in the first plan's order; `differs` marks changes."""
    layers = list(dict.fromkeys([*first.assignment, *second.assignment]))
    rows = [
        {"layer": layer, "first": str(first.assignment.get(layer, "keep")),
         "second": str(second.assignment.get(layer, "keep"))}
        for layer in layers
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["layer", "first", "second"])
    frame["differs"] = frame["first"] != frame["second"]
    return frame
