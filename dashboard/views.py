"""Pure helpers behind the dashboard pages: what to show, computed from the run store.

Kept free of Streamlit so they are tested directly; app.py caches them by run folder and
file modification time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mixprec.errors import MixprecError
from mixprec.sensitivity.table import ScoreTable
from mixprec.store import LOCK_FILE, is_run_folder, list_runs

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


RUN_COLUMNS = ("name", "model", "status", "schemes", "budgets", "best measured", "duration",
               "why", "date")  # fmt: skip


def runs_frame(root: Path) -> pd.DataFrame:
    """The store's runs, newest first: what each scored and planned for, its best measured
    plan, how long it took and why it failed or stopped; empty when there are none."""
    try:
        rows = list_runs(root)
    except MixprecError:
        rows = []
    return pd.DataFrame([{**row, **_details(root / row["name"], row["status"])} for row in rows],
                        columns=list(RUN_COLUMNS))  # fmt: skip


def _details(run: Path, status: str) -> dict[str, str]:
    from mixprec.store import read_manifest

    if status == "unreadable":
        return {}
    manifest = read_manifest(run)
    config = manifest.config
    failed = [f"{name}: {step.error}" for name, step in manifest.steps.items() if step.error]
    why = "; ".join(failed) or (status if status.startswith("stopped") else "")
    return {
        "schemes": ", ".join(map(str, config.get("schemes", []) or [])),
        "budgets": ", ".join(map(str, config.get("budgets", []) or [])),
        "best measured": best_measured(run),
        "duration": _duration(manifest.created, manifest.updated),
        "why": why,
    }


def best_measured(run: Path) -> str:
    """The best value of the first metric the run's plans were measured on, and which plan."""
    import json

    from mixprec.comparison import better

    best: tuple[str, float, str] | None = None
    for path in sorted((run / "eval").glob("*.json")):
        try:
            metrics = json.loads(path.read_text(encoding="utf-8")).get("metrics", {})
        except (OSError, ValueError, AttributeError):
            continue
        name = best[0] if best else str(next(iter(metrics), ""))
        value = metrics.get(name)
        if isinstance(value, int | float) and (best is None or better(name, value, best[1])):
            best = (name, float(value), path.stem)
    return f"{best[0]} {best[1]:.4g} ({best[2]})" if best else ""


def _duration(start: str, end: str) -> str:
    from datetime import datetime

    try:
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except ValueError:
        return ""
    minutes, second = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{second:02d}"


def run_archive(run: Path) -> bytes:
    """A zip of the run's record (manifest, config, report, scores, plans, measurements,
    sweep); exports stay on the Export page (checkpoints can be large)."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(run.rglob("*")):
            inside = path.relative_to(run)
            if (path.is_file() and not path.is_symlink() and inside.parts[0] != "exports"
                    and path.name != LOCK_FILE):  # fmt: skip
                archive.write(path, f"{run.name}/{inside}")
    return buffer.getvalue()


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


@dataclass(frozen=True)
class Heatmap:
    """Units x schemes: log10 scores (colour; blank where a unit scores 0 everywhere), hover
    text 'score [ci_low, ci_high]', and the units that score 0 under every scheme."""

    colour: pd.DataFrame
    text: pd.DataFrame
    unused: list[str]


def model_order(names: Iterable[str], order: Sequence[str] = ()) -> list[str]:
    """`names` in the model's `order` where it lists them, the rest after them with their
    numbers compared as numbers (layer.2 before layer.10)."""
    place = {name: n for n, name in enumerate(order)}
    return sorted(dict.fromkeys(names), key=lambda name: (place.get(name, len(place)),
                                                          _natural(name)))  # fmt: skip


def _natural(name: str) -> list[tuple[int, str]]:
    return [(0, "") if not part else (1, part) if not part.isdigit() else (0, f"{int(part):012d}")
            for part in re.split(r"(\d+)", name)]  # fmt: skip


def heatmap_frames(
    scores: pd.DataFrame, estimator: str, level: str, order: Sequence[str] = ()
) -> Heatmap:
    """The heatmap of one estimator at one level; units in the model's `order` (the run's
    record), schemes from most to fewest bits per weight."""
    rows = scores[(scores["estimator"] == estimator) & (scores["level"] == level)]
    if rows.empty:
        raise MixprecError(f"no {estimator} scores at the {level} level in this run")
    units = model_order(rows["unit"], order)
    by_cost = rows.groupby("scheme")["cost_bytes"].sum().sort_values(ascending=False)
    schemes = list(by_cost.index)
    values = rows.pivot(index="unit", columns="scheme", values="score").loc[units, schemes]
    unused = [u for u in units if (values.loc[u].fillna(0) == 0).all()]
    floor = values[values > 0].min().min() if (values > 0).any().any() else 1.0
    colour = values.clip(lower=floor).map(math.log10)
    colour.loc[unused] = float("nan")
    text = rows.assign(
        hover=[f"{s:.3g} [{lo:.3g}, {hi:.3g}]" for s, lo, hi in
               zip(rows["score"], rows["ci_low"], rows["ci_high"], strict=True)]
    ).pivot(index="unit", columns="scheme", values="hover").loc[units, schemes]  # fmt: skip
    return Heatmap(colour, text, unused)


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


def unit_order(run: Path) -> list[str]:
    """The run's units in the model's order, as its analysis recorded them (older runs: none)."""
    from mixprec.store import read_manifest

    analysis = read_manifest(run).analysis
    return list(analysis.units) if analysis is not None else []


def rollup_default(schemes: Sequence[str], scores: pd.DataFrame, estimator: str) -> str:
    """The scheme a roll-up opens on: the one with the largest median score (the most
    sensitive, where units differ most), not the first listed."""
    rows = scores[(scores["estimator"] == estimator) & scores["scheme"].isin(schemes)]
    medians = rows.groupby("scheme")["score"].median()
    return str(medians.idxmax()) if not medians.empty else schemes[0]
