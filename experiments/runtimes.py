"""Plans measured inside llama.cpp: MiniLM (embedding cosine, llama-embedding) and SmolLM2-135M
(perplexity, llama-perplexity) planned with `--target llamacpp` at several budgets, beside
llama.cpp's own whole-model types made by llama-quantize from the same F32 base; writes
experiments/results/runtimes.md.

Every file is measured by the llama.cpp tools built from the llama-cpp-python sdist (cached;
`mixprec llamacpp-build`). Bits per weight are counted over the same tensors in every file: those
mixprec's plan sets (every matrix of SmolLM2, the token embedding too; MiniLM's encoder layers).
MiniLM's embeddings stay F32 in every file (`--token-embedding-type f32` for llama-quantize), as
mixprec does not search them. SmolLM2 is scored on the calibration part of Python's reference
topics and measured on the held-out part (experiments/smollm2.py's split).

Run: .venv/bin/python experiments/runtimes.py   (about 40 minutes on 2 CPU cores)
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
    fits_verdicts,
    is_better,
    load_config,
    model_sections,
    parse_args,
    publish_study,
    row_text,
)

from mixprec import llamacpp
from mixprec.allocation import AllocationProblem, allocate
from mixprec.export_gguf import planned_tensors, write_gguf
from mixprec.models import ModelBundle, checkpoint_folder, load_model
from mixprec.plan import PrecisionPlan
from mixprec.runtime_llamacpp import gguf_size, held_out_texts, metric_runner, quantize_uniform
from mixprec.scoring import score
from mixprec.search.space import NONE
from mixprec.sensitivity.cache import CellCache
from mixprec.textdata import TextData

DEFAULTS: dict[str, object] = {
    "models": ["minilm", "smollm2"],
    "schemes": ["w:q4_0", "w:q4_1", "w:q5_0", "w:q5_1", "w:q8_0", "w:q3_k", "w:q4_k",
                "w:q5_k", "w:q6_k", "w:iq4_nl"],
    "uniform": ["Q4_0", "Q4_1", "IQ4_NL", "Q4_K_S", "Q4_K_M", "Q5_0", "Q5_1", "Q5_K_M", "Q6_K",
                "Q8_0"],
    "budgets": [4.5, 5.0, 5.5, 6.0],
    "estimators": {"minilm": "isolation", "smollm2": "fisher"},  # the estimator of each model
    "calib_seq_len": 128,
    "calib_samples": 8,
    "eval_chunks": 16,
}  # fmt: skip
METRIC = {"minilm": ("cosine", True), "smollm2": ("perplexity", False)}
K_MIXES = ("Q4_K_M", "Q5_K_M")  # llama.cpp's own mixed recipes
EQUAL_SIZE = 1.01  # a plan within 1% of a file's bits counts as the same size


def study(model: str, config: dict[str, Any], build: llamacpp.LlamaCpp, work: Path,
          cache: CellCache) -> pd.DataFrame:  # fmt: skip
    """Every uniform type and every budget's plan of one model, measured in llama.cpp."""
    calibration, held_out = text_files(work) if model == "smollm2" else (None, None)
    calib = None if calibration is None else TextData(
        str(calibration), seq_len=int(config["calib_seq_len"]),
        calib_samples=int(config["calib_samples"]), eval_samples=1)  # fmt: skip
    held = None if held_out is None else TextData(str(held_out), eval_samples=int(
        config["eval_chunks"]))  # fmt: skip
    bundle = load_model(model, 0, calib, "fp32")
    base = llamacpp.base_gguf(checkpoint_folder(model))
    runner = metric_runner(bundle)
    texts, chunks = held_out_texts(held), int(config["eval_chunks"])
    estimator = str(config["estimators"][model])
    table = score(bundle, None, [str(s) for s in config["schemes"]], [estimator], ["layer"],
                  cache=cache, progress=True)  # fmt: skip
    problem = AllocationProblem.build(table, bundle, estimator, exclude=[NONE], target="llamacpp")
    rows: list[dict[str, Any]] = []
    planned: set[str] = set()

    def measure(label: str, method: str, path: Path) -> None:
        begin = time.perf_counter()
        metrics = runner(build, path, base, texts, chunks, work)
        size, bits = gguf_size(path, planned)
        rows.append({"model": model, "file": label, "method": method, "bits/weight": bits,
                     "size MB": size / 1e6, METRIC[model][0]: metrics[METRIC[model][0]],
                     "measure s": time.perf_counter() - begin})  # fmt: skip
        print(rows[-1], flush=True)

    plans = []
    for bits in config["budgets"]:
        plan = allocate(problem, f"{bits}bits")
        plans.append((bits, plan))
        planned |= {t.name for t in planned_tensors(plan, bundle.model)[0]}
    measure("F32 (converter)", "reference", base)
    flags = ["--token-embedding-type", "f32"] if model == "minilm" else []
    for kind in config["uniform"]:
        out = quantize_uniform(build, base, work / f"{model}-{kind}.gguf", str(kind), *flags)
        measure(str(kind), "llama-quantize", out)
        out.unlink()
    for bits, plan in plans:
        out = work / f"{model}-mixprec-{bits}.gguf"
        write_gguf(_named(plan, bundle), bundle.model, base, out)
        measure(f"mixprec {bits} bits", f"ILP ({estimator})", out)
        out.unlink()
    return pd.DataFrame(rows)


def _named(plan: PrecisionPlan, bundle: ModelBundle) -> PrecisionPlan:
    return plan if plan.model == bundle.name else PrecisionPlan(
        bundle.name, plan.fingerprint, plan.assignment, plan.budget)  # fmt: skip


def verdicts_for(results: pd.DataFrame, model: str) -> list[str]:
    """Each plan against every uniform type that fits its bits (equal or smaller files), and
    llama.cpp's K-quant mixes against the plans of their size or smaller."""
    metric, higher = METRIC[model]
    frame = results[results["model"] == model]
    uniform = frame[frame["method"] == "llama-quantize"].to_dict("records")
    plans = frame[frame["method"].str.startswith("ILP")].to_dict("records")
    lines = fits_verdicts(metric, higher, plans, uniform, model)
    for mix in (u for u in uniform if u["file"] in K_MIXES):
        near = [p for p in plans if p["bits/weight"] <= mix["bits/weight"] * EQUAL_SIZE]
        if not near:
            lines.append(f"- {model}, {row_text(mix, metric)}: no plan of its size or smaller.")
            continue
        best = max(near, key=lambda p: p[metric] if higher else -p[metric])
        word = "beats" if is_better(best[metric], mix[metric], higher) else "**does not beat**"
        lines.append(f"- {model}: {row_text(best, metric)} {word} llama.cpp's "
                     f"{row_text(mix, metric)}.")  # fmt: skip
    return lines


def main() -> int:
    args = parse_args("runtimes", __doc__.splitlines()[0])
    config = load_config(args.config, DEFAULTS)
    started = time.perf_counter()
    build = llamacpp.find()
    check_models(args.config, config, list(METRIC), ("estimators",))
    frames = []
    with tempfile.TemporaryDirectory(prefix="mixprec-runtimes-") as tmp:
        for model in config["models"]:
            frames.append(study(model, config, build, Path(tmp), CellCache(args.cache)))
    results = pd.concat(frames, ignore_index=True)
    verdicts = [line for model in config["models"] for line in verdicts_for(results, model)]
    scores = ", ".join(f"{e} for {m}" for m, e in config["estimators"].items())
    what = (
        f"Plans made with `--target llamacpp` (ILP on the scores of {scores}) and written by "
        "`--to gguf` on the F32 base of llama.cpp's converter; uniform files by llama-quantize "
        f"from the same base. SmolLM2: perplexity over {config['eval_chunks']} chunks of 512 "
        "tokens of held-out text; MiniLM: mean cosine of llama-embedding's embeddings (mean "
        "pooling) to the F32 file's, on the (anchor, positive) halves of held-out paragraphs. "
        "**Caveat:** SmolLM2's package ships the model as Q4_1, so Q4_1 is lossless for it (its "
        "weights already sit on that grid): its Q4_1 row is not a fair comparison, and plans "
        "that reach Q4_1 everywhere stop there. The goal is read as: no uniform type that fits "
        "a plan's bits (an equal or smaller file) is better than the plan, and a plan of a "
        "K-quant mix's size (within 1%) or smaller is better than the mix."
    )
    sections = model_sections(results, config["models"], "inside llama.cpp")
    return publish_study(args, "Plans inside llama.cpp", time.perf_counter() - started, what,
                         verdicts, sections, "No plots: the tables are the result.\n")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
