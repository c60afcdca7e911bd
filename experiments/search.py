"""Evidence for bit allocation; writes experiments/results/search.md.

For minilm and tiny-gpt: score every layer under the default schemes (isolation), then for
budgets of 3 to 8 bits per weight measure on the evaluation split the plan of the ILP, the
greedy baseline, Optuna (TPE, measured objective, warm-started from the ILP plan) and the
uniform schemes: the best one within the budget, and the smallest one at least as large as
the ILP plan.

Run: .venv/bin/python experiments/search.py              (~15 min on 2 cores)
     .venv/bin/python experiments/search.py --quick      (digits-cnn, 3 budgets, ~1 min)
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from mixprec.errors import MixprecError
from mixprec.logs import quiet_optional_backends
from mixprec.markdown import frame_markdown, publish
from mixprec.metrics import evaluate
from mixprec.search.base import make_strategy, table_schemes
from mixprec.search.cost import Budget, build_cost_model
from mixprec.search.runs import Analysis
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.runner import DEFAULT_SCHEMES, AnalysisSpec, run_analysis

RESULTS = Path(__file__).resolve().parent / "results"
# the metric a plan is judged by, and whether larger is better
PRIMARY = {"minilm": ("cosine", True), "tiny-gpt": ("perplexity", False),
           "digits-cnn": ("accuracy", True)}  # fmt: skip


def analysis_for(model: str, schemes: tuple[str, ...], workers: int, cache: Path) -> Analysis:
    from mixprec.models import load_model

    spec = AnalysisSpec(model, schemes, ("isolation",), ("layer",), calib_batches=2)
    table = run_analysis(spec, workers=workers, cache=CellCache(cache), progress=False)
    bundle = load_model(model)
    costs = build_cost_model(bundle, table_schemes(table, "isolation"))
    return Analysis(cache, table, bundle, costs)


def compare(analysis: Analysis, budgets: list[float], trials: int) -> list[dict[str, object]]:
    bundle, costs = analysis.bundle, analysis.costs
    metric, larger_is_better = PRIMARY[bundle.name]
    uniform = {}
    for scheme in costs.schemes:
        choice = [costs.index(scheme)] * len(costs.units)
        result = evaluate(bundle, costs.assignment(choice))
        uniform[scheme] = (result.bits_per_weight, result.metrics[metric])
    better = max if larger_is_better else min
    rows = []
    for bits in budgets:
        budget = Budget(bits, "bits")
        row: dict[str, object] = {"model": bundle.name, "budget bits": bits}
        ilp_bits = None
        methods = {
            "ilp": make_strategy("ilp"),
            "greedy": make_strategy("greedy"),
            "optuna": make_strategy(
                "optuna", trials=trials, objective="measured", bundle=bundle, seed=0
            ),
        }
        for name, strategy in methods.items():
            start = time.perf_counter()
            try:
                plan = strategy.solve(analysis.table, costs, budget)
            except MixprecError as err:  # an infeasible budget is a result, not a crash
                row[f"{name} {metric}"] = f"none ({str(err).split(':')[0]})"
                continue
            seconds = time.perf_counter() - start
            result = evaluate(bundle, plan.assignment)
            row[f"{name} bits"] = result.bits_per_weight
            row[f"{name} {metric}"] = result.metrics[metric]
            row[f"{name} s"] = seconds
            if name == "ilp":
                ilp_bits = result.bits_per_weight
        within = {s: v for s, v in uniform.items() if v[0] <= bits}
        if within:
            best = better(within, key=lambda s: within[s][1])
            row["best uniform within budget"] = f"{best} ({within[best][0]:.3g} bits)"
            row[f"uniform {metric}"] = within[best][1]
        if ilp_bits is not None:
            above = {s: v for s, v in uniform.items() if v[0] >= ilp_bits - 1e-9}
            if above:
                nearest = min(above, key=lambda s: above[s][0])
                row["next uniform >= ilp size"] = f"{nearest} ({above[nearest][0]:.3g} bits)"
                row[f"next uniform {metric}"] = above[nearest][1]
        rows.append(row)
    return rows


def verdicts(frame: pd.DataFrame) -> list[str]:
    """Plain statements of where the ILP does and does not win."""
    lines = []
    for row in frame.to_dict("records"):
        metric, larger = PRIMARY[str(row["model"])]
        ilp = row.get(f"ilp {metric}")
        if not isinstance(ilp, float):
            continue
        for other in ("greedy", "optuna", "uniform", "next uniform"):
            value = row.get(f"{other} {metric}")
            if not isinstance(value, float):
                continue
            wins = ilp > value if larger else ilp < value
            ties = abs(ilp - value) <= 1e-9 * max(1.0, abs(value))
            if not wins and not ties:
                lines.append(
                    f"- {row['model']} at {row['budget bits']} bits: ILP {metric} {ilp:.5g} "
                    f"loses to {other} ({value:.5g})."
                )
    return lines or ["- The ILP plan is never worse than another method here."]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits-cnn, 3 budgets")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--out", type=Path, default=RESULTS / "search.md")
    args = parser.parse_args()
    quiet_optional_backends()
    models = ["digits-cnn"] if args.quick else ["minilm", "tiny-gpt"]
    budgets = [3.0, 4.5, 6.0] if args.quick else [3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0]
    schemes = DEFAULT_SCHEMES[:6] if args.quick else (*DEFAULT_SCHEMES, "w:int2_g64")
    started = time.perf_counter()
    rows = []
    for model in models:
        with tempfile.TemporaryDirectory() as cache:
            analysis = analysis_for(model, schemes, args.workers, Path(cache))
            rows += compare(analysis, budgets, args.trials)
    frame = pd.DataFrame(rows)
    metrics = {PRIMARY[m][0] for m in models}
    fields = ("bits", *sorted(metrics), "s")
    order = [f"{name} {field}" for name in ("ilp", "greedy", "optuna") for field in fields]
    order += ["best uniform within budget", *(f"uniform {m}" for m in sorted(metrics))]
    order += ["next uniform >= ilp size", *(f"next uniform {m}" for m in sorted(metrics))]
    frame = frame[["model", "budget bits", *[c for c in order if c in frame.columns]]]
    seconds = time.perf_counter() - started
    text = (
        "# Bit allocation: ILP vs greedy vs Optuna vs uniform, measured\n\n"
        f"Made by `python experiments/search.py{' --quick' if args.quick else ''}` in "
        f"{seconds:.0f} s on {platform.machine()}, torch {torch.__version__}. Scores: isolation, "
        f"layer level, 2 calibration batches, schemes {', '.join(schemes)} and keep. Every "
        "plan is measured on the evaluation split (minilm: embedding cosine to FP32, higher "
        "is better; tiny-gpt: perplexity, lower is better). Optuna: TPE, "
        f"{args.trials} trials, measured objective (divergence to FP32), first trial = ILP "
        "plan. `s` = search wall time.\n\n"
        + frame_markdown(frame, digits=4)
        + "\n\n## Where the ILP does not win\n\n"
        + "\n".join(verdicts(frame))
        + "\n"
    )
    return publish(args.out, text)


if __name__ == "__main__":
    sys.exit(main())
