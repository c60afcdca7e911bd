"""Study 6, estimators: how well Hessian-trace, Fisher and output-isolation scores rank layers
by their measured drop, what each costs, and how the 95% CI narrows with more calibration
batches; serial vs Ray workers. Writes experiments/results/estimators.md and its plots.

Run: .venv/bin/python experiments/estimators.py      (~15 min on 2 cores)
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
from scipy.stats import spearmanr
from study import (
    PRIMARY,
    load_config,
    parse_args,
    primary_metric,
    publish_study,
    pyplot,
    save_figure,
)

from mixprec import AnalysisSpec, analyze
from mixprec.markdown import frame_markdown
from mixprec.models import ModelBundle, load_model
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.table import ScoreTable
from mixprec.units import discover_units, select

DEFAULTS: dict[str, object] = {
    "models": ["minilm", "tiny-gpt", "digits-cnn"],
    "schemes": ["w:mxfp4", "w:int4_g128"],
    "estimators": ["hessian", "fisher", "isolation"],
    "batches": [2, 4, 8],  # one batch gives a zero-width bootstrap CI, so the sweep starts at 2
    "workers": 2,
    "ray_model": "minilm",  # serial vs Ray workers, each from an empty cache
}


def metric_drops(bundle: ModelBundle, scheme: str) -> dict[str, float]:
    """Measured drop of the primary metric when only one layer takes `scheme`."""
    measure, higher_is_better = primary_metric(bundle), PRIMARY[bundle.name][1]
    base = measure({})
    drops = {}
    for unit in select(discover_units(bundle.model), "layer"):
        value = measure(dict.fromkeys(unit.modules, scheme))
        drops[unit.name] = base - value if higher_is_better else value - base
    return drops


def score(model: str, config: dict[str, Any], batches: int) -> ScoreTable:
    """A fresh analysis (empty cache), so every cell's seconds are its real cost."""
    spec = AnalysisSpec(model, tuple(config["schemes"]), tuple(config["estimators"]),
                        ("layer",), calib_batches=batches)  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        return analyze(spec, workers=config["workers"], cache=CellCache(Path(cache)),
                       progress=False)  # fmt: skip


def study(
    model: str, config: dict[str, Any]
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Rank agreement and CI width per (batches, estimator, scheme); cost per estimator."""
    bundle = load_model(model)
    drops = {s: metric_drops(bundle, s) for s in config["schemes"]}
    available = len(bundle.calibration)
    rows: list[dict[str, object]] = []
    costs: list[dict[str, object]] = []
    for batches in sorted({min(b, available) for b in config["batches"]}):
        ok = score(model, config, batches).ok()
        for (estimator, scheme), part in ok.groupby(["estimator", "scheme"]):
            part = part.set_index("unit")
            names = [n for n in drops[scheme] if n in part.index]
            rho, _ = spearmanr(part.loc[names, "score"], [drops[scheme][n] for n in names])
            width = (part["ci_high"] - part["ci_low"]) / part["score"].abs().clip(lower=1e-30)
            rows.append({"model": model, "batches": batches, "estimator": estimator,
                         "scheme": scheme, "layers": len(names), "spearman vs drop": rho,
                         "median CI width / score": float(width.median()),
                         CLEAR: float(((part["ci_low"] > 0) | (part["ci_high"] < 0)).mean()),
                         NEGATIVE: float((part["score"] < 0).mean())})  # fmt: skip
        for estimator, part in ok.groupby("estimator"):  # schemes of one estimator share work
            costs.append({"model": model, "batches": batches, "estimator": estimator,
                          "cells": len(part), "seconds": float(part["seconds"].sum()),
                          "s per cell": float(part["seconds"].mean())})  # fmt: skip
    return rows, costs


CLEAR, NEGATIVE = "intervals clear of 0", "negative scores"


def ray_cost(config: dict[str, Any]) -> pd.DataFrame:
    """The same analysis serially and on 2 Ray workers, each from an empty cache."""
    rows, tables = [], []
    for label, workers in (("serial", 0), (f"ray, {config['workers']} workers", config["workers"])):
        started = time.perf_counter()
        table = score(config["ray_model"], {**config, "workers": workers}, 2)
        rows.append({"run": label, "seconds": time.perf_counter() - started,
                     "cells": len(table.frame)})  # fmt: skip
        tables.append(table)
    frame = pd.DataFrame(rows)
    frame["speed-up vs serial"] = frame["seconds"].iloc[0] / frame["seconds"]
    frame["same scores as serial"] = [t.same_scores(tables[0]) for t in tables]
    return frame


def verdicts(frame: pd.DataFrame, cost: pd.DataFrame, ray: pd.DataFrame) -> list[str]:
    lines = []
    first = frame[frame["batches"] == frame.groupby("model")["batches"].transform("min")]
    best = first.groupby("model").apply(
        lambda g: g.groupby("estimator")["spearman vs drop"].mean().idxmax(), include_groups=False
    )
    for model, estimator in best.items():
        lines.append(f"- {model}: best mean rank agreement with measured drops: {estimator}.")
    totals = cost.groupby("estimator")[["seconds", "cells"]].sum()
    per_cell = totals["seconds"] / totals["cells"]
    lines.append(
        "- Cost per cell (all models and batch counts): "
        + ", ".join(f"{e} {v:.3g} s" for e, v in per_cell.items())
        + f"; cheapest: {per_cell.idxmin()}."
    )
    speed = ray.iloc[-1]
    same = bool(speed["same scores as serial"])
    lines.append(
        f"- {speed['run']}: {speed['speed-up vs serial']:.2f}x the serial speed on "
        f"{int(speed['cells'])} cells, same scores as serial: {same}."
    )
    trend = frame.groupby(["estimator", "batches"])["median CI width / score"].median().unstack()
    narrows = [e for e, row in trend.iterrows() if row.dropna().is_monotonic_decreasing]
    lines.append(
        f"- Expected: a bootstrap CI of the mean over calibration samples narrows roughly as "
        f"1/sqrt(batches). Its median relative width shrinks monotonically for: "
        f"{', '.join(narrows) or 'none'} (of {', '.join(trend.index)})."
    )
    hessian = frame[frame["estimator"] == "hessian"]
    if not hessian.empty:
        agreement = hessian.groupby(["model", "batches"])["spearman vs drop"].mean().unstack()
        spent = cost[cost["estimator"] == "hessian"].set_index(["model", "batches"])["seconds"]
        lines.append(
            "- Hessian trace (a trace per sample with its own probes, version 3), mean Spearman "
            "by batches: " + "; ".join(
                f"{model} " + ", ".join(f"{b}: {v:.2f} ({spent[model, b]:.0f} s)"
                                        for b, v in row.dropna().items())
                for model, row in agreement.iterrows()
            ) + "."
        )  # fmt: skip
        most = hessian[hessian["batches"] == hessian.groupby("model")["batches"].transform("max")]
        shares = most.groupby("model")[[CLEAR, NEGATIVE]].mean()
        lines.append(
            "- Where the Hessian trace cannot rank, at the most batches: the share of its cells "
            "whose 95% interval excludes 0 and of those with a negative mean trace (which a "
            "positive semi-definite Hessian, HAWQ's assumption, cannot give): "
            + "; ".join(f"{m} {row[CLEAR]:.0%} and {row[NEGATIVE]:.0%}"
                        for m, row in shares.iterrows())
            + ". A trace whose interval holds 0 has no sign to rank layers by."
        )  # fmt: skip
    return lines


def plots(frame: pd.DataFrame, out: Path) -> str:
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for estimator, group in frame.groupby("estimator"):
        by_batches = group.groupby("batches")
        axes[0].loglog(by_batches["median CI width / score"].median(), "-o", label=estimator)
        axes[1].plot(by_batches["spearman vs drop"].mean(), "-o", label=estimator)
    grid = np.array(sorted(frame["batches"].unique()), dtype=float)
    reference = frame[frame["batches"] == grid[0]]["median CI width / score"].median()
    axes[0].loglog(grid, reference * np.sqrt(grid[0] / grid), "k:", label="1/sqrt(batches)")
    axes[0].set(xlabel="calibration batches", ylabel="median CI width / score")
    axes[1].set(xlabel="calibration batches", ylabel="mean Spearman vs measured drop")
    axes[0].legend(fontsize=8)
    return save_figure(figure, out, "ci", "CI width and rank agreement vs calibration batches")


def main() -> int:
    args = parse_args("estimators", __doc__.splitlines()[0])
    config = load_config(args.config, DEFAULTS)
    torch.set_num_threads(1)
    started = time.perf_counter()
    ray = ray_cost(config)  # first, on a quiet machine
    studies = [study(m, config) for m in config["models"]]
    frame = pd.DataFrame([r for rows, _ in studies for r in rows])
    cost = pd.DataFrame([c for _, costs in studies for c in costs])
    seconds = time.perf_counter() - started
    metrics = "; ".join(f"{m}: {PRIMARY[m][0]}" for m in config["models"])
    what = (
        f"Schemes {', '.join(config['schemes'])}, layer level, every analysis from an empty "
        f"cache on {config['workers']} Ray workers (1 torch thread each). The drop is measured "
        f"on the evaluation split with only that layer quantized ({metrics}). CI = 95% "
        "studentized bootstrap interval over calibration samples (one score per sample; per "
        "batch for MiniLM's Hessian, whose in-batch contrastive loss couples a batch's texts); "
        "its width is reported relative to the score."
    )
    return publish_study(
        args,
        "Estimators: rank agreement, cost and CI width vs calibration batches",
        seconds,
        what,
        verdicts(frame, cost, ray),
        [
            ("1. Rank agreement, CI width and cost per model, estimator, scheme, batches",
             frame_markdown(frame, digits=3)),
            ("2. Cost per estimator (cells of one estimator share work, e.g. gradients)",
             frame_markdown(cost, digits=3)),
            (f"3. Cost: serial vs Ray workers ({config['ray_model']}, 2 batches, all estimators "
             "and schemes above)", frame_markdown(ray, digits=3)),
        ],
        plots(frame, args.out),
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
