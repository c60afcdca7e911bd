"""Uniform sweep on a model: effective bits vs metrics for many schemes.

Writes experiments/results/uniform_<model>.md (atomically) and prints the table.
Run: .venv/bin/python experiments/uniform_sweep.py [--model minilm] [--schemes a;b;c]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.progress import Progress

from mixprec.errors import MixprecError
from mixprec.files import atomic_write_text
from mixprec.logs import quiet_optional_backends
from mixprec.markdown import cell, rows_markdown
from mixprec.metrics import Evaluation, evaluate
from mixprec.models import ModelBundle, load_model
from mixprec.plan import uniform_assignment
from mixprec.scheme import Scheme
from mixprec.units import discover_units

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SWEEP = (
    "keep",
    "w:bf16",
    "w:fp8_e4m3",
    "w:int8",
    "w:mxfp8_e4m3",
    "w:mxint8",
    "w:mxfp6_e3m2",
    "w:mxfp6_e2m3",
    "w:int4_g128",
    "w:int4_asym_g128",
    "w:int4",
    "w:mxfp4",
    "w:nvfp4",
    "w:nvint4",
    "w:fp4_e2m1",
    "w:int3_g128",
    "w:int2_g64",
    "w:mxfp8_e4m3,a:mxfp8_e4m3",
    "w:nvfp4,a:nvfp4",
)


@dataclass(frozen=True)
class SweepRow:
    scheme: str
    evaluation: Evaluation


def sweep_uniform(
    bundle: ModelBundle, schemes: Sequence[str] = DEFAULT_SWEEP, progress: bool = True
) -> list[SweepRow]:
    """Evaluate each scheme on every layer; rows sorted by effective bits, then scheme."""
    parsed = [Scheme.parse(s) for s in schemes]  # reject a bad scheme before any work
    units = discover_units(bundle.model)
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"uniform sweep on {bundle.name}", total=len(parsed))
        for scheme in parsed:
            rows.append(SweepRow(str(scheme), evaluate(bundle, uniform_assignment(units, scheme))))
            bar.advance(task)
    return sorted(rows, key=lambda r: (r.evaluation.bits_per_weight, r.scheme))


def markdown_table(rows: Sequence[SweepRow]) -> str:
    """One row per scheme: bits per weight, size and every metric the task reports."""
    metric_names = list(rows[0].evaluation.metrics)
    head = ["scheme", "bits/weight", "size (MB)", *metric_names]
    body = [
        [f"`{r.scheme}`", f"{r.evaluation.bits_per_weight:.3f}", f"{r.evaluation.size_mb:.2f}"]
        + [cell(r.evaluation.metrics[m]) for m in metric_names]
        for r in rows
    ]
    return rows_markdown(head, body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--schemes", default=";".join(DEFAULT_SWEEP), help="';'-separated schemes")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    quiet_optional_backends()
    out = args.out or RESULTS / f"uniform_{args.model.replace(':', '_').replace('/', '_')}.md"
    start = time.perf_counter()
    try:
        bundle = load_model(args.model)
        rows = sweep_uniform(bundle, [s for s in args.schemes.split(";") if s.strip()])
    except MixprecError as err:
        print(f"mixprec: {err}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    table = markdown_table(rows)
    evaluation_rows = sum(len(next(iter(b.values()))) for b in bundle.evaluation)
    header = (
        f"# Uniform sweep: {bundle.name}\n\n"
        f"Every quantizable layer under one scheme; metrics on the fixed evaluation split "
        f"({len(bundle.evaluation)} batches, {evaluation_rows} rows) against the FP32 model. "
        "Bits/weight counts quantizable weights only (scales included); size counts every "
        "parameter (MB = 10^6 bytes).\n\n"
        f"Made by `python experiments/uniform_sweep.py --model {args.model}` in {seconds:.0f} s "
        f"on {platform.machine()} with {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}; model fingerprint `{bundle.fingerprint[:16]}`.\n\n"
    )
    atomic_write_text(out, header + table)
    print(table)
    print(f"wrote {out} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
