"""How adaptive's `tolerance` (and its cap, `max_share`) trades isolation cells for plan quality:
full isolation and Fisher score once into one cache, then adaptive runs at each tolerance, and
at each cap in `max_shares`, from that cache, so each run's
cost is Fisher's wall time plus the recorded time of the isolation cells it used plus its own
decision work; and why no tolerance is both close and cheap: how far isolation's scores lie from
Fisher's calibrated on every cell, per scheme. Writes experiments/results/adaptive_tolerance.md.

Run: .venv/bin/python experiments/adaptive_tolerance.py      (~20 min on 2 cores)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from adaptive import DEFAULTS as ADAPTIVE_DEFAULTS
from adaptive import (
    EXACT_SCORE,
    GOAL_GAP,
    GOAL_TIME,
    RELATIVE,
    adaptive_config,
    plan_rows,
    with_ratios,
)
from smollm2 import bundles
from study import PRIMARY, fail, load_config, parse_args, publish_study

from mixprec.markdown import frame_markdown
from mixprec.models import ModelBundle
from mixprec.sensitivity.adaptive import calibrate, family
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.cells import AnalysisSpec
from mixprec.sensitivity.configs import AdaptiveConfig
from mixprec.sensitivity.runner import score_bundle
from mixprec.sensitivity.table import ScoreTable

DEFAULTS: dict[str, object] = {
    **{k: v for k, v in ADAPTIVE_DEFAULTS.items() if k not in ("coverage", "models")},
    "model": "minilm",
    "tolerances": [0.1, 0.05, 0.02, 0.01, 0.0],
    "max_shares": [],  # caps on isolation's share of the cells, at the config's tolerance
}
Setting = tuple[str, float]  # an AdaptiveConfig field and its value, one adaptive run


def label(setting: Setting) -> str:
    return f"adaptive, {setting[0]} {setting[1]:g}"


def settings_of(config: dict[str, Any]) -> list[Setting]:
    """Each adaptive run: every tolerance, then every cap."""
    return [("tolerance", float(t)) for t in config["tolerances"]] + [
        ("max_share", float(s)) for s in config["max_shares"]
    ]


def scored(bundle: ModelBundle, estimator: Any, config: dict[str, Any],
           cache: CellCache) -> tuple[ScoreTable, float]:  # fmt: skip
    """`estimator`'s table through the shared cache, and the wall time it took."""
    spec = AnalysisSpec(bundle.name, tuple(config["schemes"]), (estimator,), ("layer",),
                        config["calib_batches"])  # fmt: skip
    started = time.perf_counter()
    table = score_bundle(spec, bundle, progress=True, cache=cache)
    return table, time.perf_counter() - started


def cost_rows(scoring: ModelBundle, config: dict[str, Any], cache: CellCache
              ) -> tuple[list[dict[str, Any]], dict[str, ScoreTable]]:  # fmt: skip
    """Each method's table and cost: the references from an empty cache, then adaptive."""
    tables: dict[str, ScoreTable] = {}
    rows: list[dict[str, Any]] = []
    for method in ("isolation", "fisher"):
        tables[method], seconds = scored(scoring, method, config, cache)
        exact = len(tables[method].ok()) if method == "isolation" else 0
        rows.append({"method": method, "seconds": seconds, "decision s": 0.0,
                     "isolation cells": exact})  # fmt: skip
    total, fisher_seconds = rows[0]["isolation cells"], rows[1]["seconds"]
    for setting in settings_of(config):
        settings = {**config, "adaptive": {**config["adaptive"], setting[0]: setting[1]}}
        table, decision = scored(scoring, adaptive_config(settings), config, cache)
        frame = table.ok()
        exact = frame[frame["estimator"] == "isolation"]
        rows.append({"method": label(setting),
                     "seconds": fisher_seconds + float(exact["seconds"].sum()) + decision,
                     "isolation cells": len(exact), "decision s": decision})  # fmt: skip
        tables[label(setting)] = table
    for row in rows:
        row["isolation share"] = row["isolation cells"] / max(total, 1)
    return rows, tables


RIVAL_SIZE = 0.15  # schemes within this share of a layer's bytes compete for the same budget


def residual_rows(exact: ScoreTable, cheap: ScoreTable) -> pd.DataFrame:
    """Per scheme: how far isolation's scores lie from Fisher's calibrated on every cell (the
    best any calibration from probes can do), how much one layer's misfit under it says about
    its misfit under the others (if much, one cell would stand for many), and how often a
    scheme of about its size scores closer to it than that misfit can tell apart."""
    frame = exact.ok().set_index(["unit", "scheme"])
    low = {(r.unit, r.scheme): float(r.score) for r in cheap.ok().itertuples() if r.score > 0}
    high = frame["score"][frame["score"] > 0].to_dict()
    fit = calibrate(low, high, 0.95)
    cells = [c for c in high if c in low]
    misfit = pd.Series([np.log(high[c] / fit.predict([c[0]], c[1], low[c])) for c in cells],
                       index=pd.MultiIndex.from_tuples(cells)).unstack()  # fmt: skip
    related = misfit.corr().abs().to_numpy(copy=True)
    np.fill_diagonal(related, np.nan)
    reach = 1.96 * np.sqrt(2) * float(np.sqrt(np.nanmean(misfit.to_numpy() ** 2)))
    score, size = frame["score"].unstack(), frame["cost_bytes"].unstack()
    rivals = {}
    for scheme in score.columns:
        near = size.sub(size[scheme], axis=0).abs() <= RIVAL_SIZE * size[[scheme]].to_numpy()
        apart = np.log(score.div(score[scheme], axis=0)).abs() < reach
        tied = (near & apart).drop(columns=scheme).any(axis=1)
        rivals[scheme] = float(tied.mean())
    return pd.DataFrame({"scheme": misfit.columns,
                         "family": [family(s) for s in misfit.columns],
                         "layers": misfit.count().to_numpy(),
                         "misfit sd (log)": misfit.std().to_numpy(),
                         "mean abs corr with other schemes": np.nanmean(related, axis=0),
                         "layers with a rival within reach": [rivals[s] for s in misfit.columns]
                         })  # fmt: skip


def residual_verdict(residuals: pd.DataFrame) -> str:
    spread = float(np.sqrt((residuals["misfit sd (log)"] ** 2).mean()))
    related = float(residuals["mean abs corr with other schemes"].mean())
    tied = float(residuals["layers with a rival within reach"].median())
    return (
        f"- Why the goals conflict: even calibrated on every cell, Fisher misses isolation by "
        f"{spread:.2f} log units per cell (sd: a 95% interval of x/ "
        f"{np.exp(1.96 * spread):.2f}), and a layer's misfit under one scheme barely tells its "
        f"misfit under another (mean |correlation| {related:.2f}). So where two schemes of "
        f"about one size (within {RIVAL_SIZE:.0%} of a layer's bytes) score closer than that "
        "misfit can tell apart, only isolation of both cells decides; that holds for the "
        f"median scheme in {tied:.0%} of the layers (section 3)."
    )


def verdicts(costs: pd.DataFrame, plans: pd.DataFrame, settings: list[Setting]) -> list[str]:
    lines, meeting = [], []
    for setting in settings:
        method = label(setting)
        mine = plans[plans["method"] == method]
        ratios, exact = mine[RELATIVE], mine[EXACT_SCORE]
        share = float(costs[costs["method"] == method]["time / isolation"].iloc[0])
        close, fast = bool((ratios <= 1 + GOAL_GAP).all()), share <= GOAL_TIME
        if close and fast:
            meeting.append(f"{setting[0]} {setting[1]:g}")
        lines.append(
            f"- {setting[0]} {setting[1]:g}: gap {ratios.min():.3g}x to {ratios.max():.3g}x "
            f"isolation's ({'within' if close else 'NOT within'} {1 + GOAL_GAP:g}x), "
            f"{share:.0%} of its time ({'within' if fast else 'NOT within'} {GOAL_TIME:.0%}); "
            f"on isolation's own scores its plans sum to {exact.min():+.2f}% to "
            f"{exact.max():+.2f}% of isolation's plans' total."
        )
    said = ", ".join(meeting) if meeting else "none"
    lines.append(f"- Settings meeting both goals at every budget: {said}.")
    return lines


def main() -> int:
    args = parse_args("adaptive_tolerance", __doc__.splitlines()[0])
    config = load_config(args.config, DEFAULTS)
    if config["model"] not in PRIMARY:
        fail(f"model {config['model']!r} is unknown; valid: {', '.join(PRIMARY)}")
    settings = settings_of(config)
    if not config["tolerances"]:
        fail("tolerances: give at least one")
    for name, value in settings:  # a bad setting is an error before any work
        adaptive_config({**config, "adaptive": {**config["adaptive"], name: value}})
    torch.set_num_threads(1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mixprec-tolerance-") as folder:
        scoring, bundle = bundles(config["model"], config, Path(folder))
        costs_list, tables = cost_rows(scoring, config, CellCache(Path(folder) / "cells"))
        plans_list = plan_rows(tables, bundle, config)
    residuals = residual_rows(tables["isolation"], tables["fisher"])
    costs, plans = with_ratios(pd.DataFrame([{"model": config["model"], **c} for c in costs_list]),
                               pd.DataFrame(plans_list))  # fmt: skip
    seconds = time.perf_counter() - started
    what = (
        f"{config['model']}, {len(config['schemes'])} schemes ({', '.join(config['schemes'])}), "
        f"layer level, {config['calib_batches']} calibration batches, serial (1 torch thread). "
        "Isolation and Fisher score every cell from an empty cache (their wall time); each "
        "adaptive run then reads that cache, and its cost is Fisher's wall time + the recorded "
        "seconds of the isolation cells it used + its own wall time on the warm cache "
        f'("decision s"). Other AdaptiveConfig settings: {AdaptiveConfig.__name__} defaults'
        + "".join(f", {key} = {value}" for key, value in config["adaptive"].items())
        + f". Plans: the ILP's at each budget (exclude: {', '.join(config['exclude'])}), "
        f"measured on the evaluation split ({PRIMARY[config['model']][0]})."
    )
    return publish_study(
        args,
        "Adaptive scoring: isolation cells and plan quality per tolerance",
        seconds,
        what,
        [*verdicts(costs, plans, settings), residual_verdict(residuals)],
        [
            ("1. Cost per method", frame_markdown(costs, digits=3)),
            (
                "2. Measured metric of each method's plan per budget",
                frame_markdown(plans, digits=4),
            ),
            (
                "3. Isolation's scores against Fisher's calibrated on every cell, per scheme",
                frame_markdown(residuals, digits=3),
            ),
        ],
        "No plots: the tables are the result.\n",
    )


if __name__ == "__main__":
    sys.exit(main())
