"""How far apart plans measure when the scores behind them differ only by their own sampling
noise: isolation's scores redrawn within their 95% intervals (seeded), the ILP re-solved at each
budget and every plan measured against the plan from the scores as measured. The spread is the
floor under any "within x% of isolation's gap" goal. Writes experiments/results/isolation_noise.md.

Run: .venv/bin/python experiments/isolation_noise.py      (~18 min on 2 cores from an empty cache)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from adaptive import GOAL_GAP, Measured, measured_once
from study import PRIMARY, fail, load_config, parse_args, publish_study

from mixprec.allocation import AllocationProblem, allocate
from mixprec.comparison import compare
from mixprec.markdown import frame_markdown
from mixprec.metrics import evaluate
from mixprec.models import load_model
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.cells import AnalysisSpec
from mixprec.sensitivity.runner import score_bundle
from mixprec.sensitivity.table import ScoreTable

DEFAULTS: dict[str, object] = {
    "model": "minilm",
    "schemes": ["w:int8", "w:int4_g128"],
    "budgets": ["4bits", "4.5bits", "5bits", "6bits"],
    "calib_batches": 4,
    "exclude": ["none"],
    "repeats": 10,
}
Z95 = 1.959964  # a 95% interval's half-width in standard deviations


def redrawn(table: ScoreTable, seed: int) -> ScoreTable:
    """Every score drawn from a normal with its interval's spread (kept positive, as KL is)."""
    frame = table.frame.copy()
    spread = (frame["ci_high"] - frame["ci_low"]) / (2 * Z95)
    noise = np.random.default_rng(seed).normal(size=len(frame)) * spread.to_numpy()
    frame["score"] = np.maximum(frame["score"] + noise, np.finfo(float).tiny)
    return ScoreTable(frame)


def study(config: dict[str, Any], cache: CellCache) -> list[dict[str, Any]]:
    bundle = load_model(config["model"])
    spec = AnalysisSpec(bundle.name, tuple(config["schemes"]), ("isolation",), ("layer",),
                        config["calib_batches"])  # fmt: skip
    table = score_bundle(spec, bundle, progress=True, cache=cache)
    name = PRIMARY[bundle.name][0]
    baseline = evaluate(bundle, {}).metrics[name]
    measured = Measured()
    rows = []
    for seed in range(config["repeats"] + 1):  # seed 0: the scores as measured
        scores = table if seed == 0 else redrawn(table, seed)
        problem = AllocationProblem.build(scores, bundle, "isolation", exclude=config["exclude"])
        for budget in config["budgets"]:
            value, samples = measured_once(bundle, allocate(problem, budget), name, measured)
            rows.append({"budget": budget, "redraw": seed, "metric": value,
                         "gap to FP": abs(value - baseline), "samples": samples})  # fmt: skip
    reference = {r["budget"]: r for r in rows if r["redraw"] == 0}
    for row in rows:
        first = reference[row["budget"]]
        row["gap / as measured"] = row["gap to FP"] / first["gap to FP"]
        row["vs as measured (paired)"] = compare(name, row["samples"], first["samples"]).verdict
    return rows


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    redraws = frame[frame["redraw"] > 0]
    ratio = "gap / as measured"
    parts = []
    for budget, part in redraws.groupby("budget", sort=False):
        verdicts = part["vs as measured (paired)"].value_counts()
        parts.append({"budget": budget, "redraws": len(part), "min": part[ratio].min(),
                      "median": part[ratio].median(), "max": part[ratio].max(),
                      f"share over {1 + GOAL_GAP:g}x": (part[ratio] > 1 + GOAL_GAP).mean(),
                      "worse (paired)": int(verdicts.get("worse", 0)),
                      "better (paired)": int(verdicts.get("better", 0))})  # fmt: skip
    return pd.DataFrame(parts)


def main() -> int:
    args = parse_args("isolation_noise", __doc__.splitlines()[0])
    config = load_config(args.config, DEFAULTS)
    if config["model"] not in PRIMARY:
        fail(f"model {config['model']!r} is unknown; valid: {', '.join(PRIMARY)}")
    if config["repeats"] < 1:
        fail(f"repeats {config['repeats']} must be at least 1")
    torch.set_num_threads(1)
    started = time.perf_counter()
    frame = pd.DataFrame(study(config, CellCache(Path(args.cache))))
    spread = summary(frame)
    seconds = time.perf_counter() - started
    lines = [
        f"- {row['budget']}: plans from redrawn scores measure {row['min']:.3g}x to "
        f"{row['max']:.3g}x the gap to FP of the plan from the scores as measured (median "
        f"{row['median']:.3g}x); {row[f'share over {1 + GOAL_GAP:g}x']:.0%} of them are more than "
        f"{GOAL_GAP:.0%} off, which is the adaptive goal's margin."
        for _, row in spread.iterrows()
    ]
    what = (
        f"{config['model']}, {len(config['schemes'])} schemes ({', '.join(config['schemes'])}), "
        f"layer level, {config['calib_batches']} calibration batches; isolation scores (cached "
        f"by content), each redrawn {config['repeats']} times (seeds 1..{config['repeats']}) from "
        "a normal with the spread of its 95% interval; the ILP's plan at each budget (exclude: "
        f"{', '.join(config['exclude'])}) measured on the evaluation split "
        f"({PRIMARY[config['model']][0]}) and compared, paired over evaluation samples, with the "
        "plan from the scores as measured (redraw 0)."
    )
    plans = frame.drop(columns=["samples"])
    return publish_study(
        args,
        "Plans from isolation's scores redrawn within their own intervals",
        seconds,
        what,
        lines,
        [
            ("1. Spread per budget", frame_markdown(spread, digits=3)),
            ("2. Every plan", frame_markdown(plans, digits=4)),
        ],
        "No plots: the tables are the result.\n",
    )


if __name__ == "__main__":
    sys.exit(main())
