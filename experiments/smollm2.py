"""A real pretrained LLM end to end: SmolLM2-135M-Instruct (`smollm2`) scored with fisher and
isolation on one part of a local text, planned by the ILP at several budgets, and measured by
perplexity on another, held-out part beside FP and the uniform schemes; writes
experiments/results/smollm2.md.

The text is Python's reference documentation (`pydoc_data`, part of every Python), its topics
split by a content hash into a calibration file and a held-out file, so no sequence is in both.
Scoring uses short sequences (isolation runs one forward per cell); evaluation uses 512-token
sequences. Every layer is searched, the tied LM head too (`exclude = none`): kept as stored, it
alone (21% of the weights in bf16) puts the smallest plan above 6 bits.

Run: .venv/bin/python experiments/smollm2.py   (about an hour on 2 CPU cores)
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from study import load_config, parse_args, publish_study

from mixprec.allocation import AllocationProblem, allocate
from mixprec.markdown import frame_markdown
from mixprec.memory import read_peak, reset_peak
from mixprec.metrics import evaluate
from mixprec.models import ModelBundle, load_model
from mixprec.scoring import score
from mixprec.search.space import NONE
from mixprec.sensitivity.cache import CellCache
from mixprec.textdata import TextData
from mixprec.units import discover_units, select

# smollm2 scores on one part of Python's reference topics and is measured on the other
TEXT_SIZES: dict[str, int] = {
    "calib_seq_len": 128,
    "calib_samples": 4,
    "eval_seq_len": 512,
    "eval_samples": 64,
}


DEFAULTS: dict[str, object] = {
    "dtype": "bf16",
    "schemes": ["w:int8", "w:fp8_e4m3", "w:int4_g128", "w:mxfp4", "w:nvfp4"],
    "estimators": ["fisher", "isolation"],
    "budgets": [4.5, 5.0, 6.0],
    **TEXT_SIZES,
    "workers": 0,
}


def text_files(folder: Path) -> tuple[Path, Path]:
    """Python's reference topics, split by a hash of each topic's name: calibration, held out
    (scores are keyed by the text's content, not by where the files are)."""
    from pydoc_data.topics import topics

    parts: dict[bool, list[str]] = {True: [], False: []}
    for key in sorted(topics):
        parts[hashlib.sha256(key.encode()).digest()[0] < 64].append(topics[key])  # ~1/4 calib
    paths = folder / "calibration.txt", folder / "held_out.txt"
    for path, texts in zip(paths, (parts[True], parts[False]), strict=True):
        path.write_text("\n\n".join(texts), encoding="utf-8")
    return paths


def text_data(sizes: dict[str, Any], folder: Path) -> tuple[TextData, TextData]:
    """The calibration part as calibration data and the held-out part as evaluation data, at
    `sizes` (keys of TEXT_SIZES); each also holds 4 sequences of the other kind, unused."""
    calibration, held_out = text_files(folder)
    calib = TextData(str(calibration), seq_len=int(sizes["calib_seq_len"]),
                     calib_samples=int(sizes["calib_samples"]), eval_samples=4)  # fmt: skip
    held = TextData(str(held_out), seq_len=int(sizes["eval_seq_len"]), calib_samples=4,
                    eval_samples=int(sizes["eval_samples"]))  # fmt: skip
    return calib, held


def bundles(model: str, config: dict[str, Any], folder: Path) -> tuple[ModelBundle, ModelBundle]:
    """The model as scored (its calibration data) and as measured (its evaluation data) in
    `config["dtype"]`: smollm2's from disjoint parts of Python's reference topics (sizes in
    `config["smollm2_text"]`), the bundled models' from their own splits."""
    if model != "smollm2":
        bundle = load_model(model, dtype=config["dtype"])
        return bundle, bundle
    calib, held = text_data(config["smollm2_text"], folder)
    return load_model(model, 0, calib, config["dtype"]), load_model(model, 0, held, config["dtype"])


def main() -> int:
    args = parse_args("smollm2", __doc__.splitlines()[0])
    config = load_config(args.config, DEFAULTS)
    started = time.perf_counter()
    text = tempfile.TemporaryDirectory(prefix="mixprec-smollm2-")
    dtype, schemes = str(config["dtype"]), [str(s) for s in config["schemes"]]
    calib, held_out = text_data(config, Path(text.name))
    reset_peak()
    costs = []
    tables = {}
    for estimator in config["estimators"]:
        begin = time.perf_counter()
        tables[estimator] = score(
            "smollm2", calib, schemes, [estimator], ["layer"], dtype=dtype,
            workers=int(config["workers"]), cache=CellCache(args.cache), progress=True,
        )  # fmt: skip
        frame = tables[estimator].frame
        costs.append({"estimator": estimator, "cells": len(frame),
                      "cell seconds (sum)": float(frame["seconds"].sum()),
                      "wall s (cached cells free)": time.perf_counter() - begin})  # fmt: skip
    scoring_peak = read_peak().rss_mb
    bundle = load_model("smollm2", 0, held_out, dtype)
    torch.set_num_threads(os.cpu_count() or 1)  # scoring ran on one thread; measure on all
    layers = [u.name for u in select(discover_units(bundle.model), "layer")]
    rows = []

    def measure(label: str, method: str, assignment: dict[str, str]) -> None:
        begin = time.perf_counter()
        result = evaluate(bundle, assignment)
        rows.append({"plan": label, "method": method, "bits/weight": result.bits_per_weight,
                     "size MB": result.size_mb, "perplexity": result.metrics["perplexity"],
                     "eval s": time.perf_counter() - begin})  # fmt: skip
        print(rows[-1], flush=True)

    measure(f"FP ({dtype})", "reference", {})
    for scheme in schemes:
        measure(scheme, "uniform", dict.fromkeys(layers, scheme))
    for estimator, table in tables.items():
        problem = AllocationProblem.build(table, bundle, estimator, exclude=[NONE])
        for bits in config["budgets"]:
            plan = allocate(problem, f"{bits}bits")
            measure(f"ILP {bits} bits", estimator, dict(plan.assignment))
    results = pd.DataFrame(rows)
    fp = float(results["perplexity"].iloc[0])
    results["vs FP"] = results["perplexity"] / fp
    peak = read_peak()
    verdicts = verdicts_for(results, [float(b) for b in config["budgets"]])
    seconds = time.perf_counter() - started
    what = (
        f"SmolLM2-135M-Instruct (`smollm2`) in {dtype} on the CPU. Scoring: "
        f"{config['calib_samples']} x {config['calib_seq_len']} tokens of the calibration part "
        f"of Python's reference topics; measuring: {config['eval_samples']} x "
        f"{config['eval_seq_len']} tokens of the held-out part (split by topic, disjoint). "
        "Every layer is searched, the tied LM head (= the embedding) too. **Caveat:** the "
        "package ships the model as Q4_1 (4-bit integers per 32 weights with a scale and a "
        "minimum), so its weights already sit on such a grid: errors under Q4_1-like formats "
        "(int4 with an offset, small groups) are biased low for this model."
    )
    sections = [
        ("Perplexity on the held-out text", frame_markdown(results, digits=4)),
        ("Scoring cost", frame_markdown(pd.DataFrame(costs), digits=4)),
        ("Peak memory", f"Peak RSS while scoring: {scoring_peak:,.0f} MB; over the whole run: "
                        f"{peak.rss_mb:,.0f} MB (this process; VmHWM)."),
    ]  # fmt: skip
    return publish_study(args, "SmolLM2-135M end to end", seconds, what, verdicts, sections,
                         "No plots: the table is the result.\n")  # fmt: skip


def verdicts_for(results: pd.DataFrame, budgets: list[float]) -> list[str]:
    """Each budget's plans against the best uniform scheme that fits the same bits."""
    uniform = results[results["method"] == "uniform"]
    lines = []
    for bits in budgets:
        fitting = uniform[uniform["bits/weight"] <= bits + 1e-9]
        plans = results[results["plan"] == f"ILP {bits} bits"]
        if fitting.empty:
            measured = ", ".join(f"{r.method} {r.perplexity:.3f}" for r in plans.itertuples())
            lines.append(f"- {bits} bits: no uniform scheme fits; the plans measure {measured}.")
            continue
        best = fitting.loc[fitting["perplexity"].idxmin()]
        for plan in plans.itertuples():
            word = "beats" if plan.perplexity < best["perplexity"] else "does not beat"
            lines.append(f"- {bits} bits, {plan.method}: perplexity {plan.perplexity:.3f} "
                         f"{word} the best uniform scheme that fits ({best['plan']}, "
                         f"{best['bits/weight']:.2f} bits, {best['perplexity']:.3f}).")  # fmt: skip
    return lines


if __name__ == "__main__":
    sys.exit(main())
