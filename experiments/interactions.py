"""Interactions in the objective: the additive ILP vs the ILP with measured pairwise terms
(units of one block, kept where the joint measurement departs from additivity by more than its
interval) at low budgets — predicted vs measured divergence, measured metric (paired), solve
time. Writes experiments/results/interactions.md.

Run: .venv/bin/python experiments/interactions.py      (~15 min on 2 cores)
"""

from __future__ import annotations

import sys
import time
from typing import Any

import pandas as pd
import torch
from study import PRIMARY, budget_columns, budget_verdicts, load_config, parse_args, publish_study

from mixprec.allocation import AllocationProblem, allocate
from mixprec.comparison import compare
from mixprec.markdown import frame_markdown
from mixprec.metrics import evaluate, measured_divergence
from mixprec.models import load_model
from mixprec.search.configs import ILPConfig
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.cells import AnalysisSpec
from mixprec.sensitivity.pairs import measure_interactions
from mixprec.sensitivity.runner import analyze

DEFAULTS: dict[str, object] = {
    "models": ["minilm", "tiny-gpt"],
    "schemes": ["w:int2_g64", "w:int3_g128", "w:int4_g128", "w:mxfp4", "w:nvfp4", "w:int8"],
    "budgets": ["3bits", "3.5bits", "4bits"],
    "calib_batches": 4,
}


def study(
    model: str, config: dict[str, Any], cache: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Plans of both objectives per budget, and what measuring the terms cost."""
    bundle = load_model(model)
    name = PRIMARY[model][0]
    spec = AnalysisSpec(model, tuple(config["schemes"]), ("isolation",), ("layer",),
                        config["calib_batches"])  # fmt: skip
    table = analyze(spec, cache=CellCache(cache), progress=True)
    additive = AllocationProblem.build(table, bundle, "isolation", exclude=["none"])
    started = time.perf_counter()
    frame = measure_interactions(bundle, additive.costs, config["schemes"],
                                 calib_batches=config["calib_batches"], progress=True)  # fmt: skip
    cost = {"model": model, "pairs x schemes": len(frame), "kept": int(frame["kept"].sum()),
            "seconds to measure": time.perf_counter() - started}  # fmt: skip
    paired = additive.with_interactions(frame)
    rows = []
    for budget in config["budgets"]:
        plans, samples = {}, {}
        objectives = (("additive", additive, ILPConfig()),
                      ("interactions", paired, ILPConfig(interactions=True)))  # fmt: skip
        for label, problem, ilp in objectives:
            started = time.perf_counter()
            plan = allocate(problem, budget, ilp)
            solve = time.perf_counter() - started
            measured = evaluate(bundle, plan.assignment, input_ranges=plan.input_ranges)
            divergence = measured_divergence(bundle, plan.assignment)
            plans[label], samples[label] = plan, measured.per_sample[name]
            rows.append({"model": model, "budget": budget, "objective": label,
                         **budget_columns(problem, budget, plan),
                         "predicted": plan.predicted["score"], "measured divergence": divergence,
                         "error": plan.predicted["score"] / divergence - 1,
                         name: measured.metrics[name], "solve s": solve})  # fmt: skip
        same = plans["additive"].assignment == plans["interactions"].assignment
        verdict = "same plan" if same else str(compare(name, samples["interactions"],
                                                       samples["additive"]))  # fmt: skip
        rows[-1]["vs additive (paired)"] = verdict
        rows[-2]["vs additive (paired)"] = ""
    return rows, cost


def verdicts(rows: pd.DataFrame) -> list[str]:
    lines = []
    for model, part in rows.groupby("model", sort=False):
        errors = part.groupby("objective")["error"].apply(lambda e: e.abs().mean())
        mine = part[part["objective"] == "interactions"]["vs additive (paired)"]
        lines.append(
            f"- {model}: mean |predicted / measured divergence - 1|: additive "
            f"{errors['additive']:.1%}, with interactions {errors['interactions']:.1%}; "
            f"the plan with interactions against the additive one: {'; '.join(mine)}."
        )
    return lines


def main() -> int:
    args = parse_args("interactions", __doc__.splitlines()[0])
    config = load_config(args.config, DEFAULTS)
    torch.set_num_threads(1)
    started = time.perf_counter()
    results = [study(m, config, args.cache) for m in config["models"]]
    rows = pd.DataFrame([r for rs, _ in results for r in rs])
    costs = pd.DataFrame([c for _, c in results])
    seconds = time.perf_counter() - started
    what = (
        f"Schemes {', '.join(config['schemes'])}, isolation scores at layer level, "
        f"{config['calib_batches']} calibration batches, every layer may be quantized; terms "
        "for every two decision units of one block under one scheme, kept where their 95% "
        "interval (studentized bootstrap over calibration samples) excludes 0. Predicted: the "
        "plan's summed scores (and terms); measured divergence: its output KL (MSE for MiniLM) "
        "to FP32 on the evaluation split; the metric on that split, compared paired over its "
        "samples."
    )
    return publish_study(
        args, "Interactions: the additive ILP vs the ILP with measured pairwise terms",
        seconds, what, [*verdicts(rows), *budget_verdicts(rows, "objective")],
        [("1. Plans per model, budget and objective", frame_markdown(rows, digits=4)),
         ("2. Cost of the terms", frame_markdown(costs, digits=3))],
        "No plots: the two tables are the result.\n",
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
