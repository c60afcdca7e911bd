"""Side by side with NVIDIA ModelOpt `mtq.auto_quantize` on the CPU; writes
experiments/results/search_modelopt.md.

Same model (minilm), same 2 calibration batches, same candidate formats (INT8 weight-only
per channel; INT4 weight-only in blocks of 128; or leave the layer as it is), same
effective-bits budget. ModelOpt counts INT4 as 4.0 and INT8 as 8.0 bits and an unquantized
layer as 16; mixprec counts the scales too (int4_g128 = 4.125 bits) and an unquantized FP32
layer as 32, so at one budget mixprec has slightly less room. Both plans are measured on
the evaluation split with the same task metric. Wall time covers scoring and search.

Run: .venv/bin/python experiments/compare_modelopt.py   (~5 min; needs nvidia-modelopt)
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from mixprec.logs import quiet_optional_backends
from mixprec.markdown import frame_markdown, publish
from mixprec.metrics import evaluate
from mixprec.models import load_model
from mixprec.search.base import make_strategy, table_schemes
from mixprec.search.cost import Budget, build_cost_model
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.runner import AnalysisSpec, run_analysis
from mixprec.tasks import Observed

RESULTS = Path(__file__).resolve().parent / "results"
SCHEMES = ("w:int8", "w:int4_g128")


def modelopt_plan(model_name: str, bits: float) -> dict[str, object]:
    import modelopt
    import modelopt.torch.quantization as mtq

    bundle = load_model(model_name)
    model = copy.deepcopy(bundle.model)
    batches = list(bundle.calibration[:2])
    start = time.perf_counter()
    quantized, state = mtq.auto_quantize(
        model,
        constraints={"effective_bits": bits},
        quantization_formats=[mtq.INT8_WEIGHT_ONLY_CFG, mtq.INT4_BLOCKWISE_WEIGHT_ONLY_CFG],
        data_loader=batches,
        forward_step=lambda m, batch: bundle.task.loss(m, batch),
        loss_func=lambda loss, batch: loss,
        num_calib_steps=len(batches),
        num_score_steps=len(batches),
        verbose=False,
    )
    seconds = time.perf_counter() - start
    with torch.inference_mode():
        outputs = [bundle.task.outputs(quantized, b) for b in bundle.evaluation]
    metrics = bundle.task.metrics(Observed(outputs, bundle.reference_outputs, bundle.evaluation))
    return {
        "method": f"modelopt {modelopt.__version__} auto_quantize (gradient)",
        "budget bits": bits,
        "bits (own accounting)": state["best"]["constraints"]["effective_bits"],
        **metrics,
        "seconds": seconds,
    }


def mixprec_plans(model_name: str, budgets: list[float]) -> list[dict[str, object]]:
    bundle = load_model(model_name)
    rows = []
    for estimator in ("fisher", "isolation"):
        spec = AnalysisSpec(model_name, SCHEMES, (estimator,), ("layer",), calib_batches=2)
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            table = run_analysis(spec, cache=CellCache(Path(cache)), progress=False)
            scoring = time.perf_counter() - start
        costs = build_cost_model(bundle, table_schemes(table, estimator))
        for bits in budgets:
            start = time.perf_counter()
            plan = make_strategy("ilp", estimator=estimator).solve(
                table, costs, Budget(bits, "bits")
            )
            solving = time.perf_counter() - start
            result = evaluate(bundle, plan.assignment)
            rows.append(
                {"method": f"mixprec ilp ({estimator})", "budget bits": bits,
                 "bits (own accounting)": result.bits_per_weight, **result.metrics,
                 "seconds": scoring + solving}
            )  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--budgets", default="4.5,5,6,7")
    parser.add_argument("--out", type=Path, default=RESULTS / "search_modelopt.md")
    args = parser.parse_args()
    try:
        import modelopt  # noqa: F401
    except ImportError:
        print("needs nvidia-modelopt: .venv/bin/pip install -e '.[compare]'", file=sys.stderr)
        return 2
    quiet_optional_backends()
    torch.set_num_threads(1)
    budgets = [float(b) for b in args.budgets.split(",")]
    started = time.perf_counter()
    rows = [modelopt_plan(args.model, bits) for bits in budgets]
    rows += mixprec_plans(args.model, budgets)
    frame = pd.DataFrame(rows).sort_values(["budget bits", "method"], kind="stable")
    text = (
        "# mixprec vs NVIDIA ModelOpt auto_quantize, same model, data, formats and budget\n\n"
        f"Made by `python experiments/compare_modelopt.py` in "
        f"{time.perf_counter() - started:.0f} s on {platform.machine()}, 1 torch thread, "
        f"torch {torch.__version__}; model {args.model}, 2 calibration batches, candidates "
        "INT8 weight-only (per channel), INT4 weight-only (blocks of 128) or unquantized. "
        "Metrics on the evaluation split (cosine and top-1 agreement to FP32: higher is "
        "better). `seconds` = scoring + search for that budget; mixprec scores once and "
        "re-solves each budget, so its scoring time is counted again in every row.\n\n"
        + frame_markdown(frame, digits=4)
        + "\n"
    )
    return publish(args.out, text)


if __name__ == "__main__":
    sys.exit(main())
