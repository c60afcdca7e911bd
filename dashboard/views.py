"""Pure helpers behind the dashboard pages: what to show, computed from the run store.

Kept free of Streamlit so they are tested directly; app.py caches them by run folder and
file modification time.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from mixprec.errors import MixprecError
from mixprec.sensitivity.table import ScoreTable
from mixprec.store import is_run_folder, list_runs

RUNS_ENV = "MIXPREC_RUNS"
TRUST_ENV = "MIXPREC_TRUST_MODEL_SOURCE"  # "1": honour module: sources named in run files


def run_path(root: Path, name: str) -> Path:
    """The run folder `name` inside the store; any other path (.., /abs, a/b) is refused."""
    store = root.resolve()
    candidate = (store / name).resolve()
    if not name or "/" in name or "\\" in name or name in (".", "..") or candidate.parent != store:
        raise MixprecError(f"run {name!r} is not a run folder name inside the store {root}")
    if not is_run_folder(candidate):
        raise MixprecError(f"no run {name!r} in the store {root}")
    return candidate


def runs_frame(root: Path) -> pd.DataFrame:
    """The store's runs (name, model, status, date); empty when there are none."""
    try:
        rows = list_runs(root)
    except MixprecError:
        rows = []
    return pd.DataFrame(rows, columns=["name", "model", "status", "date"])


def scores_file(run: Path) -> Path:
    path = run / "scores.parquet"
    if not path.is_file():
        raise MixprecError(
            f"run {run.name} has no scores yet (its analyze step has not finished); "
            "re-run `mixprec run` on its config"
        )
    return path


def load_scores(run: Path) -> pd.DataFrame:
    """The finished (status ok) rows of a run's score table."""
    return ScoreTable.load(scores_file(run)).ok()


def heatmap_frames(
    scores: pd.DataFrame, estimator: str, level: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Units x schemes: log10 scores (colour) and a 'score [ci_low, ci_high]' hover text.

    Units keep the model's order; schemes go from most to fewest bits per weight.
    """
    rows = scores[(scores["estimator"] == estimator) & (scores["level"] == level)]
    if rows.empty:
        raise MixprecError(f"no {estimator} scores at the {level} level in this run")
    units = list(dict.fromkeys(rows["unit"]))
    by_cost = rows.groupby("scheme")["cost_bytes"].sum().sort_values(ascending=False)
    schemes = list(by_cost.index)
    values = rows.pivot(index="unit", columns="scheme", values="score").loc[units, schemes]
    floor = values[values > 0].min().min() if (values > 0).any().any() else 1.0
    colour = values.clip(lower=floor).map(math.log10)
    text = rows.assign(
        hover=[f"{s:.3g} [{lo:.3g}, {hi:.3g}]" for s, lo, hi in
               zip(rows["score"], rows["ci_low"], rows["ci_high"], strict=True)]
    ).pivot(index="unit", columns="scheme", values="hover").loc[units, schemes]  # fmt: skip
    return colour, text


def rollup_frame(scores: pd.DataFrame, estimator: str, level: str, scheme: str) -> pd.DataFrame:
    """One row per unit of `level` (block or component) under `scheme`: score and 95% CI."""
    rows = scores[
        (scores["estimator"] == estimator)
        & (scores["level"] == level)
        & (scores["scheme"] == scheme)
    ]
    return rows[["unit", "score", "ci_low", "ci_high"]].reset_index(drop=True)


def predicted_vs_measured(plans: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, float]:
    """Plans with both a predicted score and `metric`, and their Spearman rank correlation
    (nan with fewer than three plans)."""
    from scipy.stats import spearmanr

    both = plans.dropna(subset=["predicted score", metric])
    if len(both) < 3:
        return both, float("nan")
    return both, float(spearmanr(both["predicted score"], both[metric]).statistic)
