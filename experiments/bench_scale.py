"""How analysis, search and evaluation grow with model size: random Llama models of about 30M,
125M, 350M and 1B parameters in bf16 and fp32, each step a `mixprec` command of its own.

Writes experiments/results/scale.md: wall time and peak RSS of every step (the child process's
own high-water mark, from the kernel), and the exponent of a power-law fit against parameter
count. Models are built locally from `LlamaConfig` (random weights, SmolLM2's tokenizer and
vocabulary) and saved as bf16 checkpoints; nothing is downloaded. Fisher scores every level
and scheme; isolation scores the blocks under one scheme only (one forward of the later blocks
per cell), so its wall time per cell is the figure that carries over to a full run.

Run: .venv/bin/python experiments/bench_scale.py [--sizes 30M,125M,350M,1B --dtypes bf16,fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from study import ROOT, publish

from mixprec.markdown import frame_markdown
from mixprec.smollm2 import smollm2_folder

RESULTS = Path(__file__).resolve().parent / "results"
WORK = ROOT / "runs" / "bench-scale"
MIXPREC = str(Path(sys.executable).with_name("mixprec"))
SCHEMES = "w:int8,w:int4_g128,w:mxfp4"
ISOLATION_SCHEME = "w:int4_g128"  # one scheme: a cell's cost does not depend on which
BUDGET = "5bits"
# the Llama shapes (vocabulary 49152, tied embeddings, as SmolLM2) by rough parameter count
SHAPES: dict[str, dict[str, int]] = {
    "30M": {"hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 4,
            "num_attention_heads": 6, "num_key_value_heads": 2},
    "125M": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
             "num_attention_heads": 9, "num_key_value_heads": 3},
    "350M": {"hidden_size": 960, "intermediate_size": 2560, "num_hidden_layers": 32,
             "num_attention_heads": 15, "num_key_value_heads": 5},
    "1B": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
           "num_attention_heads": 32, "num_key_value_heads": 8},
}  # fmt: skip


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss_mb: float


def build_model(size: str, folder: Path, tokenizer: Path) -> int:
    """A random Llama of `size` saved as a bf16 checkpoint with SmolLM2's tokenizer (made
    once); returns its parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    done = folder / "params.json"
    if done.is_file():
        return int(json.loads(done.read_text())["params"])
    shutil.rmtree(folder, ignore_errors=True)
    config = LlamaConfig(vocab_size=49152, tie_word_embeddings=True, **SHAPES[size])
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    del model
    for name in os.listdir(tokenizer):
        if name.startswith(("tokenizer", "special_tokens")):
            shutil.copy(tokenizer / name, folder / name)
    done.write_text(json.dumps({"params": params}))
    return params


def timed(argv: list[str]) -> Measured:
    """Runs one mixprec command; its wall time and the kernel's peak RSS for that process."""
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    errors = child.stderr.read() if child.stderr else ""
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({child.returncode}): {errors[-2000:]}")
    return Measured(seconds, usage.ru_maxrss / 1024)


def text_file(work: Path) -> Path:
    """Calibration text: Python's own reference docs, a local file."""
    from pydoc_data.topics import topics

    path = work / "pydoc_topics.txt"
    if not path.is_file():
        work.mkdir(parents=True, exist_ok=True)
        path.write_text("\n\n".join(topics[k] for k in sorted(topics)), encoding="utf-8")
    return path


def run_size(
    size: str, dtype: str, tokenizer: Path, args: argparse.Namespace
) -> list[dict[str, object]]:
    folder = args.work / f"llama-{size}"
    params = build_model(size, folder, tokenizer)
    runs = args.work / f"llama-{size}-{dtype}"
    shutil.rmtree(runs, ignore_errors=True)
    data = ["--data", str(text_file(args.work)), "--seq-len", str(args.seq_len),
            "--calib-samples", str(args.calib_samples), "--eval-samples", str(args.eval_samples),
            "--dtype", dtype, "--device", "cpu"]  # fmt: skip
    model = f"hf:{folder}"
    analyze = [MIXPREC, "analyze", "--model", model, "--out"]
    steps = {
        "fisher (every level)": [*analyze, str(runs / "fisher"), "--estimators", "fisher",
                                 "--schemes", SCHEMES, *data],
        "isolation (blocks)": [*analyze, str(runs / "isolation"), "--estimators", "isolation",
                               "--levels", "block", "--schemes", ISOLATION_SCHEME, *data],
        f"ILP solve at {BUDGET}": [MIXPREC, "search", str(runs / "fisher"), "--budget", BUDGET,
                                   "--estimator", "fisher", "--exclude", "none", "--no-measure",
                                   "--out", str(runs / "plan.json")],
        "evaluate the plan": [MIXPREC, "evaluate", "--plan", str(runs / "plan.json"), "--json"],
    }  # fmt: skip
    os.environ["MIXPREC_CACHE_DIR"] = str(runs / "cache")  # scored cells: from empty, per run
    rows = []
    for step, argv in steps.items():
        measured = timed(argv)
        cells = _cells(runs / "isolation") if step.startswith("isolation") else None
        rows.append(
            {"size": size, "params (M)": params / 1e6, "dtype": dtype, "step": step,
             "wall s": round(measured.seconds, 1), "peak RSS MB": round(measured.peak_rss_mb),
             "bf16 size MB": round(params * 2 / 2**20),
             "isolation s per cell": round(measured.seconds / cells, 2) if cells else ""}
        )  # fmt: skip
        print(f"{size} {dtype} {step}: {measured.seconds:.1f} s, {measured.peak_rss_mb:.0f} MB",
              flush=True)  # fmt: skip
    return rows


def _cells(run: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.read_metadata(run / "scores.parquet").num_rows)


def exponents(frame: pd.DataFrame) -> pd.DataFrame:
    """Least-squares slope of log(value) on log(params) per step and dtype."""
    rows = []
    for (step, dtype), group in frame.groupby(["step", "dtype"], sort=False):
        if len(group) < 2:
            continue
        x = np.log(group["params (M)"].to_numpy())
        fits = {}
        for column in ("wall s", "peak RSS MB"):
            slope = np.polyfit(x, np.log(group[column].to_numpy()), 1)[0]
            fits[column] = float(slope)
        rows.append({"step": step, "dtype": dtype, "time exponent": fits["wall s"],
                     "peak RSS exponent": fits["peak RSS MB"]})  # fmt: skip
    return pd.DataFrame(rows)


def growth(frame: pd.DataFrame) -> str:
    fits = exponents(frame)
    if fits.empty:
        return "One size only: no growth exponent to fit.\n"
    return (
        "## Growth with parameter count\n\n"
        "Slope of a least-squares line through log(value) against log(parameters), over the "
        "sizes measured (1.0 = linear; each step's fixed start-up, about 8 s and 0.9 GB for "
        "Python, torch and transformers, flattens it at small sizes).\n\n"
        f"{frame_markdown(fits, digits=2)}\n"
    )


def memory_goal(frame: pd.DataFrame) -> str:
    row = frame[(frame["size"] == "1B") & (frame["dtype"] == "bf16")]
    row = row[row["step"].str.startswith("fisher")]
    if row.empty:
        return "The 1B bf16 model was not in this run, so the memory goal was not checked."
    peak, bf16 = float(row["peak RSS MB"].iloc[0]), float(row["bf16 size MB"].iloc[0])
    limit = 2 * bf16 + 2048
    verdict = "meets" if peak < limit else "misses"
    return (f"Goal: the 1B bf16 fisher analysis under 2 x its bf16 size + 2 GB = {limit:,.0f} MB. "
            f"Measured {peak:,.0f} MB: it {verdict} the goal.")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SHAPES))
    parser.add_argument("--dtypes", default="bf16,fp32")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--calib-samples", type=int, default=4)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.md")
    parser.add_argument("--work", type=Path, default=WORK, help="models and runs (kept)")
    args = parser.parse_args()
    sizes = args.sizes.split(",")
    for size in sizes:
        if size not in SHAPES:
            raise SystemExit(f"unknown size {size!r}; sizes: {', '.join(SHAPES)}")
    started = time.perf_counter()
    tokenizer = smollm2_folder()  # before the runs point MIXPREC_CACHE_DIR elsewhere
    rows = [row for size in sizes for dtype in args.dtypes.split(",")
            for row in run_size(size, dtype, tokenizer, args)]  # fmt: skip
    frame = pd.DataFrame(rows)
    minutes = (time.perf_counter() - started) / 60
    text = (
        "# Scale: analysis, search and evaluation against model size\n\n"
        f"Made by `python experiments/bench_scale.py --sizes {args.sizes} --dtypes {args.dtypes}` "
        f"on {platform.machine()} ({os.cpu_count()} CPUs, no GPU used), {minutes:.0f} min. "
        f"Random Llama models (vocabulary 49152, tied embeddings) from `LlamaConfig`, "
        f"schemes {SCHEMES} (isolation: {ISOLATION_SCHEME} on every block), "
        "the ILP searching every layer (`--exclude none`: the tied LM "
        "head too), calibration "
        f"{args.calib_samples} x {args.seq_len} tokens of "
        f"Python's reference docs, evaluation {args.eval_samples} x {args.seq_len}. Each step "
        "is its own `mixprec` process; peak RSS is that process's high-water mark "
        "(`ru_maxrss`), model loading included.\n\n"
        f"{memory_goal(frame)}\n\n"
        f"{frame_markdown(frame, digits=3)}\n\n"
        f"{growth(frame)}"
    )
    return publish(args.out, text)


if __name__ == "__main__":
    sys.exit(main())
