"""Study 3, HAWQ-V3 style: ILP mixed INT4/INT8 plans vs uniform INT4 and INT8 under size and
BOPs limits; writes experiments/results/hawq.md and its plots.

Reproduces the setting of "HAWQ-V3: Dyadic Neural Network Quantization" (Yao et al., 2021):
per-layer INT4 or INT8 (weights and activations), a Hessian-trace sensitivity, and an integer
linear program under a model-size or a bit-operations (BOPs) limit.

Run: .venv/bin/python experiments/hawq.py          (~4 min on 2 cores)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from study import (
    PRIMARY,
    load_config,
    parse_args,
    primary_metric,
    publish_study,
    pyplot,
    save_figure,
)

from mixprec import AllocationProblem, AnalysisSpec, ILPConfig, allocate, analyze
from mixprec.markdown import frame_markdown
from mixprec.models import load_model
from mixprec.search.base import Limits
from mixprec.search.cost import Budget, InfeasibleBudget
from mixprec.sensitivity.cache import CellCache

DEFAULTS: dict[str, object] = {
    "models": ["digits-cnn", "minilm"],
    "int4": "w:int4,a:int4",
    "int8": "w:int8,a:int8",
    "estimators": ["hessian", "isolation"],
    "size_fractions": [0.1, 0.25, 0.4, 0.55, 0.7, 0.85],  # of the way from INT4 to INT8 size
    "bops_fractions": [0.3, 0.4, 0.5, 0.6, 0.75, 0.9],  # of uniform INT8's BOPs
    "calib_batches": 2,
    "workers": 2,
}


def study(model: str, config: dict[str, Any], cache: Path) -> list[dict[str, object]]:
    int4, int8 = config["int4"], config["int8"]
    spec = AnalysisSpec(model, (int4, int8), tuple(config["estimators"]), ("layer",),
                        calib_batches=config["calib_batches"])  # fmt: skip
    table = analyze(spec, workers=config["workers"], cache=CellCache(cache), progress=False)
    bundle = load_model(model)
    problems = {  # INT4 or INT8 only, as in the paper (no `keep`)
        e: AllocationProblem.build(table, bundle, e, schemes=[int4, int8])
        for e in config["estimators"]
    }
    costs = next(iter(problems.values())).costs  # costs do not depend on the estimator
    metric, measure = PRIMARY[model][0], primary_metric(bundle)
    rows: list[dict[str, object]] = []

    def record(
        method: str, limit: str, assignment: dict[str, str], seconds: float
    ) -> dict[str, float]:
        """One measured row; returns the plan's cost totals."""
        choice = costs.choice_of(assignment)
        totals = costs.totals(choice)
        value = measure(assignment)
        wide = sum(c == costs.index(int8) for c in choice)
        rows.append({"model": model, "method": method, "limit": limit,
                     "bits/weight": totals["bits_per_weight"], "size MB": totals["size_mb"],
                     "GBOPs": totals["bops"] / 1e9, metric: value, "int8 units": wide,
                     "solve s": seconds})  # fmt: skip
        return totals

    uniform = {}
    for label, scheme in (("uniform INT4", int4), ("uniform INT8", int8)):
        assignment = costs.assignment([costs.index(scheme)] * len(costs.units))
        uniform[label] = record(label, "-", assignment, 0.0)
    low, high = uniform["uniform INT4"], uniform["uniform INT8"]
    for estimator in config["estimators"]:
        limits: list[tuple[str, Budget, Limits]] = []
        for f in config["size_fractions"]:
            bits = low["bits_per_weight"] + f * (high["bits_per_weight"] - low["bits_per_weight"])
            limits.append((f"size {bits:.3g} bits", Budget(bits, "bits"), Limits()))
        for f in config["bops_fractions"]:
            cap = Budget(high["bits_per_weight"], "bits")
            limits.append((f"BOPs {f:g} x INT8", cap, Limits(max_bops=f * high["bops"])))
        for label, budget, limit in limits:
            start = time.perf_counter()
            try:
                plan = allocate(problems[estimator], budget, ILPConfig(), limits=limit)
            except InfeasibleBudget as err:  # an infeasible limit is a result
                rows.append({"model": model, "method": f"ilp ({estimator})", "limit": label,
                             metric: f"infeasible: {err}"})  # fmt: skip
                continue
            record(f"ilp ({estimator})", label, dict(plan.assignment), time.perf_counter() - start)
    return rows


def beats_interpolation(frame: pd.DataFrame, model: str, axis: str) -> tuple[int, int]:
    """ILP plans whose metric beats the straight line between uniform INT4 and INT8."""
    metric, larger = PRIMARY[model]
    part = frame[frame["model"] == model]
    ends = part[part["method"].str.startswith("uniform")].set_index("method")
    x0, x1 = ends.loc["uniform INT4", axis], ends.loc["uniform INT8", axis]
    y0, y1 = ends.loc["uniform INT4", metric], ends.loc["uniform INT8", metric]
    kind = "size" if axis == "bits/weight" else "BOPs"
    plans = part[part["method"].str.startswith("ilp") & part["limit"].str.startswith(kind)]
    plans = plans[pd.to_numeric(plans[metric], errors="coerce").notna()]
    line = y0 + (plans[axis].astype(float) - x0) / (x1 - x0) * (y1 - y0)
    values = plans[metric].astype(float)
    better = values > line if larger else values < line
    return int(better.sum()), len(plans)


def verdicts(frame: pd.DataFrame, models: list[str]) -> list[str]:
    lines = []
    for model in models:
        metric = PRIMARY[model][0]
        for axis, kind in (("bits/weight", "size"), ("GBOPs", "BOPs")):
            won, total = beats_interpolation(frame, model, axis)
            lines.append(
                f"- {model}, {kind} limits: {won} of {total} ILP plans beat the straight line "
                f"between uniform INT4 and INT8 in {metric} at their {kind}. Paper: mixed INT4/8 "
                f"plans trade size/BOPs for accuracy better than the uniform end points. "
                f"**{'Matches' if won > total / 2 else 'Does not match'}.**"
            )
    estimators = sorted(m for m in frame["method"].unique() if str(m).startswith("ilp"))
    if len(estimators) == 2:
        for model in models:
            metric, larger = PRIMARY[model]
            part = frame[frame["model"] == model]
            a, b = (part[part["method"] == e].set_index("limit")[metric] for e in estimators)
            a, b = pd.to_numeric(a, errors="coerce"), pd.to_numeric(b, errors="coerce")
            wins = int(((b > a) if larger else (b < a)).sum())
            ties = int((b == a).sum())
            lines.append(
                f"- {model}: {estimators[1]} plans measure better than {estimators[0]} plans at "
                f"{wins} of {len(a)} limits ({ties} ties)."
            )
    return lines


def plots(frame: pd.DataFrame, models: list[str], out: Path) -> str:
    plt = pyplot()
    figure, axes = plt.subplots(len(models), 2, figsize=(11, 3.6 * len(models)), squeeze=False)
    for row, model in zip(axes, models, strict=True):
        metric = PRIMARY[model][0]
        part = frame[(frame["model"] == model)]
        part = part[pd.to_numeric(part[metric], errors="coerce").notna()]
        for axis, (x, kind) in zip(row, (("bits/weight", "size"), ("GBOPs", "BOPs")), strict=True):
            for method, group in part.groupby("method"):
                if str(method).startswith("ilp"):
                    group = group[group["limit"].str.startswith(kind)].sort_values(x)
                    axis.plot(group[x], group[metric].astype(float), "-o", label=method, ms=4)
                else:
                    axis.plot(group[x], group[metric].astype(float), "k^", ms=9)
                    axis.annotate(str(method), (group[x].iloc[0], float(group[metric].iloc[0])),
                                  fontsize=8)  # fmt: skip
            axis.set_xlabel(x)
            axis.set_ylabel(metric)
            axis.set_title(f"{model}: {kind} limit", fontsize=10)
            axis.legend(fontsize=8)
    return save_figure(figure, out, "tradeoff", "metric vs size and vs BOPs")


def main() -> int:
    args = parse_args("hawq", __doc__.splitlines()[0])
    config = load_config(args.config, DEFAULTS)
    torch.set_num_threads(1)
    started = time.perf_counter()
    frame = pd.DataFrame([r for m in config["models"] for r in study(m, config, args.cache)])
    seconds = time.perf_counter() - started
    models = list(config["models"])
    what = (
        f"Candidates per layer: `{config['int4']}` or `{config['int8']}` (per-channel symmetric, "
        f"weights and activations; nothing stays FP32). Sensitivity: "
        f"{' and '.join(config['estimators'])} (HAWQ-V3 uses the Hessian trace), layer level, "
        f"{config['calib_batches']} calibration batches; ILP = mixprec's `ilp` strategy. Size "
        "limits sweep between the uniform INT4 and INT8 sizes; BOPs limits are fractions of "
        "uniform INT8's BOPs (MACs x weight bits x activation bits, summed over one traced "
        "calibration batch) with the size capped at INT8's. Metrics on the evaluation split."
    )
    caveat = (
        "\nHAWQ-V3 reports ImageNet CNNs (ResNet18/50, InceptionV3) with integer-only inference "
        "and fine-tuning after quantization; here there is no fine-tuning and fake quantization, "
        "so the absolute drops are not comparable, only the shape of the trade-off."
    )
    return publish_study(
        args,
        "HAWQ-V3 style: ILP mixed INT4/INT8 vs uniform INT4 and INT8",
        seconds,
        what,
        [*verdicts(frame, models), caveat],
        [("Every plan", frame_markdown(frame, digits=4))],
        plots(frame, models, args.out),
    )


if __name__ == "__main__":
    sys.exit(main())
