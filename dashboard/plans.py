"""The Pareto and Export pages' model: the run's plans and their measurements.

Kept free of Streamlit (tested directly); a plan the run could not measure still shows, with
its predicted values only.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mixprec.dashboard.views import model_order
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


def intervals(run: Path, metric: str) -> dict[str, tuple[float, float]]:
    """Each measured plan's 95% interval of `metric` (over evaluation samples), by plan name."""
    import json

    found: dict[str, tuple[float, float]] = {}
    folder = RunFolder(run)
    for path in folder.plans():
        try:
            result = json.loads(folder.eval_path(path).read_text(encoding="utf-8"))
            low, high = result["intervals"][metric]
            found[path.stem] = (float(low), float(high))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not measured, or measured without an interval
    return found


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


def plans_estimator(run: Path) -> str | None:
    """The estimator most of the run's plans were made from (their provenance), if any."""
    import json

    made: dict[str, int] = {}
    for path in RunFolder(run).plans():
        try:
            provenance = json.loads(path.read_text(encoding="utf-8")).get("provenance", {})
        except (OSError, ValueError, AttributeError):
            continue  # an unreadable plan names no estimator; the plans page says why
        if isinstance(provenance, dict) and isinstance(provenance.get("estimator"), str):
            made[provenance["estimator"]] = made.get(provenance["estimator"], 0) + 1
    return max(made, key=lambda name: made[name]) if made else None


def shared_points(frame: pd.DataFrame, x: str, y: str) -> tuple[pd.DataFrame, int]:
    """Each plan with every plan drawn at its point ("plans here"), and how many distinct
    points there are: plans on one point (a uniform plan equal to the ILP's) hide each other."""
    both = frame.dropna(subset=[x, y])
    here = both.groupby([x, y], sort=False)["plan"].transform(lambda names: ", ".join(names))
    return both.assign(**{"plans here": here}), int(both[[x, y]].drop_duplicates().shape[0])


def plan_documents(run: Path) -> list[tuple[str, dict[str, Any]]]:
    """(name, plan JSON) of every plan file of the run, then of every plan of its `mixprec
    pareto` sweep (pareto.parquet), named `sweep BUDGET`; read as data, never run."""
    import json

    named: list[tuple[str, dict[str, Any]]] = []
    for path in RunFolder(run).plans():
        try:
            named.append((path.stem, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError):
            continue  # an unreadable plan file is left out; the Pareto table says what reads
    sweep = run / "pareto.parquet"
    if sweep.is_file():
        frame = pd.read_parquet(sweep)
        solved = frame[frame["status"] == "ok"] if "status" in frame else frame.iloc[:0]
        for _, row in solved.iterrows():
            named.append((f"sweep {row['budget']}", json.loads(row["plan"])))
    return [(name, doc) for name, doc in named if isinstance(doc.get("assignment"), dict)]


def plan_map(named: list[tuple[str, dict[str, Any]]], order: Sequence[str] = ()) -> pd.DataFrame:
    """Layers (in `order`, else the first plan's) x plans (by method, then bits per weight):
    the scheme each plan gives each layer ("keep" where it leaves one out)."""

    def place(item: tuple[str, dict[str, Any]]) -> tuple[str, float]:
        document = item[1]
        method = str(document.get("provenance", {}).get("strategy", "?"))
        return method, float(document.get("predicted", {}).get("bits_per_weight", 0.0))

    ranked = sorted(named, key=place)
    order = list(order) or [layer for _, doc in named[:1] for layer in doc["assignment"]]
    layers = model_order([layer for _, doc in ranked for layer in doc["assignment"]], order)
    columns = {
        f"{name} ({place((name, doc))[1]:.2f} bits)": [
            str(doc["assignment"].get(layer, "keep")) for layer in layers
        ]
        for name, doc in ranked
    }
    return pd.DataFrame(columns, index=pd.Index(layers, name="layer"))


def changed_only(frame: pd.DataFrame) -> pd.DataFrame:
    """The layers whose scheme is not the same in every plan shown."""
    return frame[frame.nunique(axis=1) > 1]


def frontier(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The plans no other plan beats on both size and `metric` (the Pareto front), by size."""
    from mixprec.comparison import better

    rows = frame.dropna(subset=["bits/weight", metric]).sort_values(["bits/weight", metric])
    kept: list[int] = []
    best: float | None = None
    for index, row in rows.iterrows():
        value = float(row[metric])
        if best is None or better(metric, value, best):
            if kept and rows.loc[kept[-1], "bits/weight"] == row["bits/weight"]:
                kept.pop()  # the same size, measured better
            kept.append(index)
            best = value
    return rows.loc[kept]
