"""Study 5, peer: NVIDIA ModelOpt `mtq.auto_quantize` vs mixprec on the same model, data,
formats and budgets; writes experiments/results/peer_modelopt.md and its plot.

Same model, same calibration batches, same candidate formats (INT8 weight-only per channel;
INT4 weight-only in blocks of 128; or leave the layer as it is), same effective-bits budget.
ModelOpt counts INT4 as 4.0 and INT8 as 8.0 bits and an unquantized layer as 16; mixprec
counts the scales too (int4_g128 = 4.125 bits) and an unquantized FP32 layer as 32, so at one
budget mixprec has slightly less room. Both plans are measured on the evaluation split with the
same task metric. Wall time covers scoring and search; mixprec's scoring covers all budgets.
Since the two count bits differently, ModelOpt's plan is also sized in mixprec's accounting
and mixprec re-solves at exactly that size, so the two are compared at one true size too; every
comparison is paired over the evaluation samples ("better", "worse", "not distinguishable").

Run: .venv/bin/python experiments/peer_modelopt.py   (~4 min; needs pip install -e '.[compare]')
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from smollm2 import TEXT_SIZES, bundles
from study import (
    LEFT,
    PRIMARY,
    budget_columns,
    budget_verdicts,
    fail,
    load_config,
    parse_args,
    publish_study,
    pyplot,
    save_figure,
)

from mixprec import AnalysisSpec
from mixprec.allocation import AllocationProblem, allocate
from mixprec.comparison import PerSample, compare
from mixprec.errors import MixprecError
from mixprec.markdown import frame_markdown
from mixprec.metrics import evaluate, footprint
from mixprec.models import ModelBundle
from mixprec.search.cost import Budget
from mixprec.search.space import NONE
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.configs import AdaptiveConfig
from mixprec.sensitivity.runner import score_bundle
from mixprec.tasks import Observed

SCHEMES = ("w:int8", "w:int4_g128")
BY_BITS = {8: SCHEMES[0], 4: SCHEMES[1]}  # ModelOpt's weight quantizer's bits -> the scheme
PEER = "modelopt"  # the prefix of the peer's method name
SIZED = "mixprec bits"  # a plan's size in mixprec's accounting
VERSUS = "vs ModelOpt (paired)"
AT_PEER_SIZE = "at ModelOpt's size"
Samples = dict[tuple[str, float], PerSample]  # (method, budget bits) -> the primary metric
DEFAULTS: dict[str, object] = {
    "model": "minilm",
    "budgets": [4.5, 5.0, 6.0, 7.0],
    "calib_batches": 2,
    "estimators": ["fisher", "adaptive", "isolation"],
    "dtype": "auto",  # the model's own
    "lm_head": False,  # both search the LM head (true) or both keep it as stored (false)
    "smollm2_text": TEXT_SIZES,
}


def modelopt_formats(lm_head: bool) -> list[dict[str, Any]]:
    """ModelOpt's INT8 and INT4-g128 weight-only configs; with `lm_head` the LM head is a
    candidate too (ModelOpt's defaults keep it as stored)."""
    import modelopt.torch.quantization as mtq

    formats = [mtq.INT8_WEIGHT_ONLY_CFG, mtq.INT4_BLOCKWISE_WEIGHT_ONLY_CFG]
    if not lm_head:
        return formats
    return [{**config, "quant_cfg": [entry for entry in config["quant_cfg"]
                                     if entry.get("quantizer_name") != "*lm_head*"]}
            for config in copy.deepcopy(formats)]  # fmt: skip


def modelopt_assignment(quantized: torch.nn.Module) -> dict[str, str]:
    """The formats ModelOpt's search chose, as mixprec schemes, read from each layer's enabled
    weight quantizer (a layer without one is left as it is)."""
    chosen = {}
    for name, module in quantized.named_modules():
        quantizer = getattr(module, "weight_quantizer", None)
        if quantizer is None or not quantizer.is_enabled:
            continue
        if quantizer.num_bits not in BY_BITS:
            raise MixprecError(f"ModelOpt chose {quantizer.num_bits}-bit weights for {name}; "
                               f"this study knows {sorted(BY_BITS)}")  # fmt: skip
        chosen[name] = BY_BITS[quantizer.num_bits]
    return chosen


def modelopt_plan(
    scoring: ModelBundle, measuring: ModelBundle, bits: float, config: dict[str, Any],
    samples: Samples,
) -> dict[str, object]:  # fmt: skip
    """ModelOpt searches on `scoring`'s calibration batches; its plan is measured on `measuring`
    and sized in mixprec's accounting too."""
    import modelopt
    import modelopt.torch.quantization as mtq

    model = copy.deepcopy(scoring.model)
    batches = list(scoring.calibration[: config["calib_batches"]])
    start = time.perf_counter()
    quantized, state = mtq.auto_quantize(
        model,
        constraints={"effective_bits": bits},
        quantization_formats=modelopt_formats(config["lm_head"]),
        data_loader=batches,
        forward_step=lambda m, batch: scoring.task.loss(m, batch),
        loss_func=lambda loss, batch: loss,
        num_calib_steps=len(batches),
        num_score_steps=len(batches),
        verbose=False,
    )
    seconds = time.perf_counter() - start
    with torch.inference_mode():
        outputs = [measuring.task.outputs(quantized, b) for b in measuring.evaluation]
    observed = Observed(outputs, measuring.reference_outputs, measuring.evaluation)
    method = f"{PEER} {modelopt.__version__} auto_quantize (gradient)"
    samples[method, bits] = measuring.task.per_sample(observed)[PRIMARY[measuring.name][0]]
    return {
        "method": method,
        "budget bits": bits,
        "bits (own accounting)": state["best"]["constraints"]["effective_bits"],
        SIZED: footprint(measuring.model, modelopt_assignment(quantized)).bits_per_weight,
        LEFT: 100 * (1 - state["best"]["constraints"]["effective_bits"] / bits),
        **measuring.task.metrics(observed),
        "seconds": seconds,
    }


def mixprec_plans(
    scoring: ModelBundle, measuring: ModelBundle, config: dict[str, Any],
    peer_sizes: dict[float, float], samples: Samples,
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:  # fmt: skip
    """Score once per estimator (empty cache, so the time is honest), re-solve each budget; and
    at the size of ModelOpt's plan for each budget in mixprec's accounting (`peer_sizes`)."""
    rows, same_size = [], []
    budgets = tuple(f"{bits:g}bits" for bits in config["budgets"])  # what adaptive decides for
    exclude = [NONE if config["lm_head"] else "default"]
    for estimator in config["estimators"]:
        entry = (AdaptiveConfig(budgets=budgets, exclude=tuple(exclude))
                 if estimator == "adaptive" else estimator)  # fmt: skip
        spec = AnalysisSpec(scoring.name, SCHEMES, (entry,), ("layer",),
                            calib_batches=config["calib_batches"])  # fmt: skip
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            table = score_bundle(spec, scoring, cache=CellCache(Path(cache)))
            scoring_seconds = time.perf_counter() - start
        problem = AllocationProblem.build(table, measuring, estimator, exclude=exclude)
        method, name = f"mixprec ilp ({estimator})", PRIMARY[measuring.name][0]
        for bits in config["budgets"]:
            start = time.perf_counter()
            plan = allocate(problem, Budget(bits, "bits"))
            solving = time.perf_counter() - start
            result = evaluate(measuring, plan.assignment)
            samples[method, bits] = result.per_sample[name]
            rows.append(
                {"method": method, "budget bits": bits,
                 "bits (own accounting)": result.bits_per_weight, SIZED: result.bits_per_weight,
                 **budget_columns(problem, Budget(bits, "bits"), plan),
                 **result.metrics,
                 "seconds": scoring_seconds + solving, "scoring s": scoring_seconds,
                 "solve s": solving}
            )  # fmt: skip
            size = Budget(peer_sizes[bits], "bits")
            sized = evaluate(measuring, allocate(problem, size).assignment)
            samples[f"{method} {AT_PEER_SIZE}", bits] = sized.per_sample[name]
            same_size.append(
                {"method": f"{method} {AT_PEER_SIZE}", "budget bits": bits, SIZED: size.value,
                 "plan bits": sized.bits_per_weight, **sized.metrics}
            )  # fmt: skip
    return rows, same_size


def paired(frame: pd.DataFrame, samples: Samples, metric: str) -> pd.DataFrame:
    """Each mixprec plan against ModelOpt's for the same budget, paired over evaluation samples."""
    peer = {bits: values for (method, bits), values in samples.items() if method.startswith(PEER)}
    keys = zip(frame["method"], frame["budget bits"], strict=True)
    said = [None if method.startswith(PEER) else compare(metric, samples[method, bits],
                                                         peer[bits]).verdict
            for method, bits in keys]  # fmt: skip
    return frame.assign(**{VERSUS: said})


def verdicts(frame: pd.DataFrame, same_size: pd.DataFrame) -> list[str]:
    """Per estimator: its plans against ModelOpt's at the budget and at ModelOpt's true size, and
    the time of all budgets."""
    lines = []
    peer = frame[frame["method"].str.startswith(PEER)].set_index("budget bits")
    for method in sorted(m for m in frame["method"].unique() if m.startswith("mixprec")):
        ours = frame[frame["method"] == method].set_index("budget bits")
        sized = same_size[same_size["method"] == f"{method} {AT_PEER_SIZE}"]
        counts = [", ".join(f"{n} {verdict}" for verdict, n in
                            sorted(part[VERSUS].value_counts().items()))
                  for part in (ours, sized)]  # fmt: skip
        better = bool((ours[VERSUS] == "better").all())
        total_ours = ours["scoring s"].iloc[0] + ours["solve s"].sum()
        total_peer = peer["seconds"].sum()
        lines.append(
            f"- {method}: against ModelOpt's plan at each of {len(ours)} budgets: {counts[0]} "
            f"(goal: better at every budget: {'met' if better else 'NOT met'}); at the size of "
            f"ModelOpt's plan in mixprec's accounting: {counts[1]}. All {len(ours)} budgets in "
            f"{total_ours:.1f} s (one scoring pass + {ours['solve s'].sum():.2f} s of solves) vs "
            f"ModelOpt's {total_peer:.1f} s ({total_peer / total_ours:.2f}x), which re-scores "
            "for every budget."
        )
    return lines


def plot(frame: pd.DataFrame, metric: str, out: Path) -> str:
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for method, group in frame.groupby("method"):
        axes[0].plot(group[SIZED], group[metric], "-o", label=method, ms=4)
        axes[1].plot(group["budget bits"], group["seconds"], "-o", label=method, ms=4)
    axes[0].set(xlabel="bits/weight (mixprec's accounting)", ylabel=metric)
    axes[1].set(xlabel="budget bits", ylabel="seconds (scoring + search) per budget")
    axes[0].legend(fontsize=7)
    return save_figure(figure, out, "plans", f"{metric} and wall time per budget")


def main() -> int:
    args = parse_args("peer_modelopt", __doc__.splitlines()[0])
    config = load_config(args.config, DEFAULTS)
    try:
        import modelopt  # noqa: F401
    except ImportError:
        fail("needs nvidia-modelopt: .venv/bin/pip install -e '.[compare]'")
    torch.set_num_threads(1)
    model, calib = config["model"], config["calib_batches"]
    metric, higher_is_better = PRIMARY[model]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mixprec-peer-") as folder:
        scoring, measuring = bundles(model, config, Path(folder))
        samples: Samples = {}
        rows = [modelopt_plan(scoring, measuring, bits, config, samples)
                for bits in config["budgets"]]  # fmt: skip
        sizes = {row["budget bits"]: row[SIZED] for row in rows}
        ours, same_size = mixprec_plans(scoring, measuring, config, sizes, samples)
    order = ["budget bits", "method"]
    frame = paired(pd.DataFrame(rows + ours), samples, metric).sort_values(order, kind="stable")
    sized = paired(pd.DataFrame(same_size), samples, metric).sort_values(order, kind="stable")
    seconds = time.perf_counter() - started
    what = (
        f"Model {model} ({config['dtype']}), {calib} calibration batches, candidates INT8 "
        "weight-only (per channel), INT4 weight-only (blocks of 128) or unquantized; the LM head "
        f"{'is searched by both' if config['lm_head'] else 'is kept by both'}. Metrics on the "
        f"evaluation split ({metric}: {'higher' if higher_is_better else 'lower'} is better). "
        "`seconds` = scoring + search for that budget; mixprec scores once and re-solves each "
        "budget, so its scoring time is counted again in every row. `mixprec bits`: a plan's "
        "size as mixprec counts it (scales included, an unquantized layer at its stored width)."
    )
    note = (
        "\nModelOpt's score is the gradient-based (Fisher-like) estimate from the task loss; "
        "mixprec's `fisher` is the closest like-for-like; `adaptive` (the default of `mixprec "
        "run`) adds isolation where the plans at these budgets are in doubt; `isolation` "
        "measures every cell."
    )
    return publish_study(
        args,
        "mixprec vs NVIDIA ModelOpt auto_quantize: same model, data, formats, budget",
        seconds,
        what,
        [*verdicts(frame, sized), *budget_verdicts(frame), note],
        [
            ("Every plan", frame_markdown(frame, digits=4)),
            (
                "mixprec at the size of ModelOpt's plan (mixprec's accounting)",
                frame_markdown(sized, digits=4),
            ),
        ],
        plot(frame, metric, args.out),
    )


if __name__ == "__main__":
    sys.exit(main())
