"""Uniform sweep on a model: effective bits vs metrics for many schemes.

Writes experiments/results/uniform_<model>.md (atomically) and prints the table.
Run: .venv/bin/python experiments/uniform_sweep.py [--model minilm] [--schemes a;b;c]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from mixprec.errors import MixprecError
from mixprec.files import atomic_write_text
from mixprec.logs import quiet_optional_backends
from mixprec.models import load_model
from mixprec.sweep import DEFAULT_SWEEP, markdown_table, sweep_uniform

RESULTS = Path(__file__).resolve().parent / "results"


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
