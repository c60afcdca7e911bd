"""Adaptive scoring vs Fisher only vs full isolation: measured metric of the ILP's plans at each
budget and the wall time of the scoring behind them, side by side in one run; and how often each
estimator's 95% interval covers the large-sample score. Writes experiments/results/adaptive.md.

Run: .venv/bin/python experiments/adaptive.py      (~20 min on 2 cores)
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from coverage_study import DEFAULTS as COVERAGE
from coverage_study import coverage, coverage_verdicts
from smollm2 import TEXT_SIZES, bundles
from study import (
    PRIMARY,
    budget_columns,
    budget_verdicts,
    fail,
    load_config,
    parse_args,
    publish_study,
)

from mixprec.allocation import AllocationProblem, allocate
from mixprec.comparison import compare
from mixprec.errors import MixprecError
from mixprec.markdown import frame_markdown
from mixprec.metrics import evaluate
from mixprec.models import ModelBundle
from mixprec.plan import PrecisionPlan
from mixprec.scheme import DEFAULT_SCHEMES
from mixprec.search.ilp import total_score
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.cells import AnalysisSpec
from mixprec.sensitivity.configs import AdaptiveConfig
from mixprec.sensitivity.runner import score_bundle
from mixprec.sensitivity.table import ScoreTable

DEFAULTS: dict[str, object] = {
    "models": ["minilm", "tiny-gpt"],
    "schemes": list(DEFAULT_SCHEMES),
    "budgets": ["4bits", "4.5bits", "5bits", "6bits"],
    "calib_batches": 4,
    "exclude": ["none"],  # every layer may be quantized, so 4 bits fits tiny-gpt too
    "dtype": "auto",  # the models' own
    "smollm2_text": TEXT_SIZES,
    "coverage": COVERAGE,  # repeats = 0 leaves the coverage section out
    "adaptive": {},  # AdaptiveConfig's settings other than budgets and exclude (default: its own)
}
METHODS = ("fisher", "adaptive", "isolation")
RELATIVE = "gap vs isolation's"  # a plan's gap to FP over full isolation's at that budget
EXACT_SCORE = "isolation score +%"  # a plan's summed isolation scores over isolation's plan's
GOAL_GAP, GOAL_TIME = 0.01, 0.25  # adaptive's gap within 1% of isolation's, at <= 25% its time


def adaptive_config(config: dict[str, Any]) -> AdaptiveConfig:
    """Adaptive's settings: the study's budgets and exclude, the config's `adaptive` table."""
    settings = config["adaptive"]
    known = sorted({f.name for f in fields(AdaptiveConfig)} - {"budgets", "exclude"})
    unknown = sorted(set(settings) - set(known))
    if unknown:
        fail(f"adaptive: unknown setting {unknown[0]!r}; valid: {', '.join(known)}")
    try:
        return AdaptiveConfig(budgets=tuple(config["budgets"]), exclude=tuple(config["exclude"]),
                              **settings)  # fmt: skip
    except (MixprecError, TypeError) as err:
        fail(f"adaptive: {err}")


def scored(bundle: ModelBundle, method: str, config: dict[str, Any]) -> tuple[ScoreTable, float]:
    """The table `method` plans with, scored from an empty cache, and its wall time."""
    estimator: Any = adaptive_config(config) if method == "adaptive" else method
    spec = AnalysisSpec(bundle.name, tuple(config["schemes"]), (estimator,), ("layer",),
                        config["calib_batches"])  # fmt: skip
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        table = score_bundle(spec, bundle, progress=True, cache=CellCache(Path(cache)))
        return table, time.perf_counter() - started


def study(model: str, config: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Cost per method; measured metric of each method's plan per budget."""
    with tempfile.TemporaryDirectory(prefix="mixprec-adaptive-") as folder:
        scoring, bundle = bundles(model, config, Path(folder))
        return compared(scoring, bundle, config)


def compared(
    scoring: ModelBundle, bundle: ModelBundle, config: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each method scores on `scoring`; its plans are measured on `bundle`."""
    costs, tables = [], {}
    for method in METHODS:
        tables[method], seconds = scored(scoring, method, config)
        frame = tables[method].ok()
        cells = {
            f"{e} cells": int((frame["estimator"] == e).sum()) for e in ("fisher", "isolation")
        }
        costs.append({"model": bundle.name, "method": method, "seconds": seconds, **cells})
    return costs, plan_rows(tables, bundle, config)


Measured = dict[tuple[tuple[str, str], ...], tuple[float, Any]]  # assignment -> metric, samples


def measured_once(bundle: ModelBundle, plan: PrecisionPlan, name: str,
                  measured: Measured) -> tuple[float, Any]:  # fmt: skip
    """`plan`'s metric `name` and its per-sample values, evaluated only the first time its
    assignment is seen (`measured` holds them)."""
    key = tuple(sorted(plan.assignment.items()))
    if key not in measured:
        result = evaluate(bundle, plan.assignment, input_ranges=plan.input_ranges)
        measured[key] = result.metrics[name], result.per_sample[name]
    return measured[key]


def plan_rows(tables: dict[str, ScoreTable], bundle: ModelBundle,
              config: dict[str, Any]) -> list[dict[str, Any]]:  # fmt: skip
    """The ILP's plan from each method's table (`method` or `method, detail`) at each budget,
    measured (a plan several methods share, once) and paired against full isolation's."""
    name = PRIMARY[bundle.name][0]
    baseline = evaluate(bundle, {}).metrics[name]
    rows, samples, measured = [], {}, Measured()
    exact = AllocationProblem.build(tables["isolation"], bundle, exclude=config["exclude"])
    optimum = {budget: allocate(exact, budget).predicted["score"] for budget in config["budgets"]}
    for method, table in tables.items():
        problem = AllocationProblem.build(table, bundle, method.split(",")[0],
                                          exclude=config["exclude"])  # fmt: skip
        for budget in config["budgets"]:
            plan = allocate(problem, budget)
            value, samples[method, budget] = measured_once(bundle, plan, name, measured)
            exact_score = total_score(exact.scores(), exact.costs.choice_of(plan.assignment))
            rows.append({"model": bundle.name, "budget": budget, "method": method,
                         "bits": plan.predicted["bits_per_weight"],
                         **budget_columns(problem, budget, plan),
                         EXACT_SCORE: 100 * (exact_score / optimum[budget] - 1), "metric": value,
                         "gap to FP": abs(value - baseline)})  # fmt: skip
    for row in rows:  # each plan against full isolation's, paired over evaluation samples
        pair = samples[row["method"], row["budget"]], samples["isolation", row["budget"]]
        row["vs isolation (paired)"] = compare(name, *pair).verdict
    return rows


def with_ratios(costs: pd.DataFrame, plans: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Each method's time as a share of full isolation's; each gap beside isolation's."""
    full = costs[costs["method"] == "isolation"].set_index("model")["seconds"]
    costs = costs.assign(**{"time / isolation": costs["seconds"] / costs["model"].map(full)})
    keys = ["model", "budget"]
    iso = plans[plans["method"] == "isolation"].set_index(keys)["gap to FP"]
    reference = [iso[k] for k in zip(plans["model"], plans["budget"], strict=True)]
    plans = plans.assign(**{RELATIVE: plans["gap to FP"] / pd.Series(reference)})
    return costs, plans


def verdicts(costs: pd.DataFrame, plans: pd.DataFrame) -> list[str]:
    lines = []
    for model, part in plans[plans["method"] == "adaptive"].groupby("model", sort=False):
        ratios = part[RELATIVE]
        mine = costs[(costs["model"] == model) & (costs["method"] == "adaptive")]
        time_share = float(mine["time / isolation"].iloc[0])
        close = bool((ratios <= 1 + GOAL_GAP).all())
        verdicts = part["vs isolation (paired)"].value_counts().to_dict()
        said = ", ".join(f"{count} {verdict}" for verdict, count in sorted(verdicts.items()))
        fast = time_share <= GOAL_TIME
        lines.append(
            f"- {model}: adaptive's gap to FP is {ratios.min():.3g}x to {ratios.max():.3g}x full "
            f"isolation's across the budgets (goal: at most {1 + GOAL_GAP:g}x: "
            f"{'met' if close else 'NOT met'}), in {time_share:.0%} of its wall time (goal: at "
            f"most {GOAL_TIME:.0%}: {'met' if fast else 'NOT met'}). Measured against "
            f"isolation's plan, paired over evaluation samples: {said}."
        )
        fisher = plans[(plans["model"] == model) & (plans["method"] == "fisher")]
        lines.append(
            f"- {model}: Fisher alone: {fisher[RELATIVE].min():.3g}x to "
            f"{fisher[RELATIVE].max():.3g}x isolation's gap."
        )
        lines.append(
            f"- {model}: on isolation's own scores, adaptive's plans sum to "
            f"{part[EXACT_SCORE].min():+.2f}% to {part[EXACT_SCORE].max():+.2f}% of isolation's "
            f"plans' total (Fisher's: {fisher[EXACT_SCORE].min():+.2f}% to "
            f"{fisher[EXACT_SCORE].max():+.2f}%): how far each is from the plan isolation "
            "predicts best, before the measurement's own noise."
        )
    return lines


def main() -> int:
    args = parse_args("adaptive", __doc__.splitlines()[0])
    config = load_config(args.config, DEFAULTS)
    adaptive_config(config)  # a bad setting is an error before any work
    torch.set_num_threads(1)
    started = time.perf_counter()
    results = [study(m, config) for m in config["models"]]
    costs, plans = with_ratios(pd.DataFrame([c for cs, _ in results for c in cs]),
                               pd.DataFrame([p for _, ps in results for p in ps]))  # fmt: skip
    settings = {**COVERAGE, **config["coverage"]}
    covers = coverage(settings) if settings["repeats"] else None
    seconds = time.perf_counter() - started
    metrics = "; ".join(f"{m}: {PRIMARY[m][0]}" for m in config["models"])
    what = (
        f"{len(config['schemes'])} schemes ({', '.join(config['schemes'])}), layer level, "
        f"{config['calib_batches']} calibration batches, dtype {config['dtype']}, serial (1 "
        "torch thread); each method scores from an empty cache, and its plans are the ILP's at "
        f"each budget (exclude: {', '.join(config['exclude'])}), measured on the evaluation "
        f"split ({metrics}). Adaptive: Fisher on every cell, isolation on the probes and where "
        "the plans' decision is in doubt (AdaptiveConfig's defaults"
        + "".join(f", {key} = {value}" for key, value in config["adaptive"].items())
        + ")."
    )
    if "smollm2" in config["models"]:
        text = config["smollm2_text"]
        what += (
            f" smollm2 scores on {text['calib_samples']} x {text['calib_seq_len']} tokens of one "
            f"part of Python's reference topics and is measured on {text['eval_samples']} x "
            f"{text['eval_seq_len']} tokens of the other (split by topic)."
        )
    sections = [
        ("1. Scoring cost per model and method", frame_markdown(costs, digits=3)),
        ("2. Measured metric of each method's plan per budget", frame_markdown(plans, digits=4)),
    ]
    covered: list[str] = []
    if covers is not None:
        what += (
            f" Coverage: on {settings['model']} ({', '.join(settings['schemes'])}, every layer), "
            f"{settings['repeats']} seeded repeats each draw {settings['samples']} calibration "
            "samples with replacement from the held-out pool (calibration and evaluation "
            "splits), whose mean score is the large-sample value (hessian's with tighter probe "
            f"settings: {settings['reference'].get('hessian', {})}); a repeat's interval covers "
            "it or not."
        )
        sections.append(("3. Coverage of the estimators' 95% intervals",
                         frame_markdown(covers, digits=3)))  # fmt: skip
        covered = coverage_verdicts(covers, settings)
    return publish_study(
        args,
        "Adaptive scoring: plan quality and cost vs Fisher only and full isolation",
        seconds,
        what,
        [*verdicts(costs, plans), *budget_verdicts(plans), *covered],
        sections,
        "No plots: the tables are the result.\n",
    )


if __name__ == "__main__":
    sys.exit(main())
