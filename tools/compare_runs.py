"""Are two run folders the same results? For checking that a refactor changed nothing.

Compares scores.parquet (every column but wall time), each plan's assignment, budget,
predicted and measured numbers, eval/*.json byte for byte, and exports: GGUF tensors and
metadata (the embedded plan's provenance aside), other exports byte for byte.

    python tools/compare_runs.py runs/demo-before runs/demo-after
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import pandas as pd

PLAN_KEYS = ("model", "fingerprint", "assignment", "budget", "predicted", "measured")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_scores(before: Path, after: Path) -> bool:
    old, new = (pd.read_parquet(p / "scores.parquet") for p in (before, after))
    columns = [c for c in old.columns if c != "seconds"]
    return list(old.columns) == list(new.columns) and old[columns].equals(new[columns])


def same_plan(before: Path, after: Path) -> bool:
    old, new = (json.loads(p.read_text(encoding="utf-8")) for p in (before, after))
    return all(old.get(k) == new.get(k) for k in PLAN_KEYS)


def same_gguf(before: Path, after: Path) -> bool:
    import gguf

    def content(path: Path) -> tuple[dict[str, object], dict[str, bytes]]:
        reader = gguf.GGUFReader(path)
        tensors = {t.name: bytes(t.data.tobytes()) + bytes(str(t.tensor_type), "ascii")
                   for t in reader.tensors}  # fmt: skip
        fields = {k: bytes(f.parts[-1].tobytes()) for k, f in reader.fields.items()}
        plan = fields.pop("mixprec.plan", None)
        if plan is not None:
            document = json.loads(plan.decode("utf-8"))
            fields["mixprec.plan"] = json.dumps({k: document.get(k) for k in PLAN_KEYS})
        return fields, tensors

    return content(before) == content(after)


def compare(before: Path, after: Path) -> list[tuple[str, bool]]:
    results = [("scores.parquet", same_scores(before, after))]
    for folder in ("plans", "eval", "exports"):
        for old in sorted((before / folder).glob("*")):
            new = after / folder / old.name
            name = f"{folder}/{old.name}"
            if not new.is_file():
                results.append((name, False))
            elif folder == "plans":
                results.append((name, same_plan(old, new)))
            elif old.suffix == ".gguf":
                results.append((name, same_gguf(old, new)))
            else:
                results.append((name, digest(old) == digest(new)))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    for folder in (args.before, args.after):
        if not (folder / "scores.parquet").is_file():
            parser.error(f"{folder} is not a run folder with scores.parquet")
    results = compare(args.before, args.after)
    for name, same in results:
        print(f"{'same' if same else 'DIFFERENT'}  {name}")
    differ = sum(not same for _, same in results)
    print(f"{len(results) - differ} of {len(results)} outputs the same")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
