"""Plans for vLLM measured through transformers: MiniLM (embedding cosine) and SmolLM2-135M
(perplexity) planned with `--target compressed-tensors` at several budgets, written as
compressed-tensors checkpoints, loaded back by transformers (compressed-tensors' own
decompression) and measured on held-out data, beside the uniform compressed-tensors schemes
written and measured the same way; writes experiments/results/runtimes_vllm.md.

Each row also gives mixprec's own prediction (its fake quantization, `--runtime torch`) of the
same metric. Uniform rows put one scheme on every layer that vLLM runs it on and keep the rest
(integer groups need rows of whole 128-groups: SmolLM2's 576-wide rows take only FP8). The
tied head of SmolLM2 stays unquantized everywhere (vLLM runs it as the embedding): with its
576-wide rows on FP8 at best, no plan of SmolLM2 is below 9 bits per weight. SmolLM2 runs in bf16,
as it is served, so compressed-tensors holds its scales in bf16 (mixprec's prediction keeps
them in float32: the two differ by that rounding; MiniLM, in fp32, matches exactly). The W8A8
FP8 schemes (inputs per token on the fly; per tensor under the static scale of the model's
calibration split) are measured uniform only: a plan within a weight budget never gains by
quantizing inputs too. NVFP4A16 is left out: transformers decompresses it in bf16
(`--runtime transformers` refuses it), and W4A16_ASYM too: transformers cannot load it yet.

Run: .venv/bin/python experiments/runtimes_vllm.py   (about 30 minutes on 2 CPU cores)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from smollm2 import text_files
from study import (
    check_models,
    fail,
    fits_verdicts,
    load_config,
    model_sections,
    parse_args,
    publish_study,
)

from mixprec.allocation import AllocationProblem, allocate
from mixprec.calibration import with_input_ranges
from mixprec.errors import MixprecError
from mixprec.metrics import evaluate
from mixprec.models import fingerprint, load_model
from mixprec.plan import PrecisionPlan
from mixprec.runtime_transformers import evaluate_in_transformers
from mixprec.scheme import Scheme
from mixprec.scoring import score
from mixprec.search.space import NONE
from mixprec.search.targets import refusal
from mixprec.sensitivity.cache import CellCache
from mixprec.textdata import TextData
from mixprec.units import quantizable_layers, tied_to_embedding, weight_matrix

TARGET = "compressed-tensors"
DEFAULTS: dict[str, object] = {
    "models": ["minilm", "smollm2"],
    "schemes": ["w:ct_w4a16", "w:ct_w8a16", "w:fp8_e4m3"],
    # measured uniform only: their inputs are quantized too, which a weight budget does not buy
    "uniform_schemes": ["w:fp8_e4m3,a:fp8_e4m3", "w:fp8_e4m3_tensor,a:fp8_e4m3_tensor"],
    "budgets": {"minilm": [4.5, 5.0, 6.0], "smollm2": [9.0, 9.5, 10.0]},
    "dtypes": {"minilm": "fp32", "smollm2": "bf16"},
    "estimators": {"minilm": "isolation", "smollm2": "fisher"},
    "calib_seq_len": 128,
    "calib_samples": 8,
    "eval_seq_len": 512,
    "eval_samples": 16,
}  # fmt: skip
METRIC = {"minilm": ("cosine", True), "smollm2": ("perplexity", False)}


def study(model: str, config: dict[str, Any], work: Path, cache: CellCache) -> pd.DataFrame:
    """Every uniform scheme and every budget's plan of one model, measured in transformers."""
    dtype, estimator = str(config["dtypes"][model]), str(config["estimators"][model])
    calib = held = None
    if model == "smollm2":
        calibration, held_out = text_files(work)
        calib = TextData(str(calibration), seq_len=int(config["calib_seq_len"]),
                         calib_samples=int(config["calib_samples"]), eval_samples=1)  # fmt: skip
        held = TextData(str(held_out), seq_len=int(config["eval_seq_len"]), calib_samples=1,
                        eval_samples=int(config["eval_samples"]))  # fmt: skip
    schemes = [str(s) for s in config["schemes"]]
    table = score(model, calib, schemes, [estimator], ["layer"], dtype=dtype, cache=cache,
                  progress=True)  # fmt: skip
    bundle = load_model(model, 0, held, dtype)
    calibrating = load_model(model, 0, calib, dtype)  # static input ranges: calibration text
    problem = AllocationProblem.build(table, bundle, estimator, exclude=[NONE], target=TARGET)
    metric = METRIC[model][0]
    rows: list[dict[str, Any]] = []

    def measure(label: str, method: str, assignment: dict[str, str]) -> None:
        begin = time.perf_counter()
        plan = PrecisionPlan(bundle.name, fingerprint(bundle.model), assignment, "",
                             provenance={"target": TARGET})  # fmt: skip
        plan = with_input_ranges(plan, calibrating)
        predicted = evaluate(bundle, assignment, input_ranges=plan.input_ranges)
        quantized = any(s != "keep" for s in assignment.values())  # else: the model itself
        measured = evaluate_in_transformers(bundle, plan, model)[0] if quantized else predicted
        rows.append({"model": model, "file": label, "method": method,
                     "bits/weight": measured.bits_per_weight, "size MB": measured.size_mb,
                     metric: measured.metrics[metric],
                     f"{metric} (mixprec)": predicted.metrics[metric],
                     "measure s": time.perf_counter() - begin})  # fmt: skip
        print(rows[-1], flush=True)

    layers = quantizable_layers(bundle.model)
    tied = tied_to_embedding(bundle.model)
    measure(f"{dtype} (unquantized)", "reference", {})
    for text in [*schemes, *(str(s) for s in config["uniform_schemes"])]:
        scheme = Scheme.parse(text)
        uniform = {name: text if refusal(TARGET, scheme, tuple(weight_matrix(layer).shape),
                                         name in tied) is None else "keep"
                   for name, layer in layers.items()}  # fmt: skip
        kept = sum(s == "keep" for s in uniform.values())
        measure(text + (f" ({kept} kept)" if kept else ""), "uniform", uniform)
    for bits in config["budgets"][model]:
        try:
            plan = allocate(problem, f"{bits}bits")
        except MixprecError as err:  # e.g. a budget below the smallest plan
            fail(f"{model}: {err}")
        measure(f"mixprec {bits} bits", f"ILP ({estimator})", dict(plan.assignment))
    return pd.DataFrame(rows)


def main() -> int:
    args = parse_args("runtimes_vllm", __doc__.splitlines()[0])
    config = load_config(args.config, DEFAULTS)
    started = time.perf_counter()
    check_models(args.config, config, list(METRIC), ("budgets", "dtypes", "estimators"))
    frames = []
    with tempfile.TemporaryDirectory(prefix="mixprec-runtimes-vllm-") as tmp:
        for model in config["models"]:
            frames.append(study(model, config, Path(tmp), CellCache(args.cache)))
    results = pd.concat(frames, ignore_index=True)
    verdicts = []
    for model in config["models"]:
        frame = results[results["model"] == model]
        metric, higher = METRIC[model]
        plans = frame[frame["method"].str.startswith("ILP")].to_dict("records")
        uniform = frame[frame["method"] == "uniform"].to_dict("records")
        verdicts += fits_verdicts(metric, higher, plans, uniform, model)
        gap = (frame[metric] - frame[f"{metric} (mixprec)"]).abs().max()
        verdicts.append(f"- {model}: transformers' {metric} and mixprec's prediction differ by "
                        f"at most {gap:.3g} over these rows.")  # fmt: skip
    scores = ", ".join(f"{e} for {m}" for m, e in config["estimators"].items())
    what = (
        f"Plans made with `--target compressed-tensors` (ILP on the scores of {scores}, schemes "
        f"{', '.join(config['schemes'])}; uniform only: {', '.join(config['uniform_schemes'])}, "
        "static input scales from the calibration split), written by `--to compressed-tensors` "
        "and measured "
        "by `evaluate --runtime transformers`: the checkpoint loaded by transformers "
        "(compressed-tensors' own decompression) on the CPU. Bits per weight as stored in the "
        "checkpoint (codes, scales, zero points) over the model's quantizable layers, the tied "
        "head counted by its embedding. MiniLM: mean cosine of the embeddings to the "
        "unquantized model's on mixprec's evaluation split; SmolLM2: perplexity over "
        f"{config['eval_samples']} x {config['eval_seq_len']} tokens of held-out text "
        "(experiments/smollm2.py's split). The goal is read as in runtimes.md: no uniform row "
        "that fits a plan's bits is better than the plan."
    )
    sections = model_sections(results, config["models"], "through transformers")
    return publish_study(args, "Plans for vLLM, through transformers",
                         time.perf_counter() - started, what, verdicts, sections,
                         "No plots: the tables are the result.\n")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
