"""Are two results files of one study the same results? For checking that a refactor changed
nothing: every table cell must be equal except timings (a column whose header ends in " s",
"seconds" or "time", or a whole table under a heading that names a time); the "Made by" line
and image names are skipped. Images are compared
byte for byte when given with --images.

    python tools/compare_results.py before/hawq.md after/hawq.md --images before.png after.png
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

TIMING = (" s", "seconds", "time")


def tables(path: Path) -> list[list[list[str]]]:
    """Every Markdown table of the file that is not a timing table, as rows of cells (header
    first, rule dropped)."""
    found: list[list[list[str]]] = []
    current: list[list[str]] = []
    timing = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            timing = "time" in line.lower()
        if line.startswith("|") and timing:
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    if current:
        found.append(current)
    return found


def differences(before: Path, after: Path) -> tuple[list[str], int]:
    """What differs outside timing columns, and how many cells were compared."""
    old, new = tables(before), tables(after)
    if len(old) != len(new):
        return [f"{len(old)} tables before, {len(new)} after"], 0
    problems, compared = [], 0
    for number, (a, b) in enumerate(zip(old, new, strict=True), start=1):
        if a[0] != b[0] or len(a) != len(b):
            problems.append(f"table {number}: other header or row count")
            continue
        kept = [i for i, h in enumerate(a[0]) if not h.endswith(TIMING)]
        for row_a, row_b in zip(a[1:], b[1:], strict=True):
            for i in kept:
                compared += 1
                if row_a[i] != row_b[i]:
                    problems.append(f"table {number}, {a[0][i]!r}: {row_a[i]} vs {row_b[i]}")
    return problems, compared


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--images", type=Path, nargs=2, action="append", default=[])
    args = parser.parse_args()
    problems, compared = differences(args.before, args.after)
    for old, new in args.images:
        same = (
            hashlib.sha256(old.read_bytes()).digest() == hashlib.sha256(new.read_bytes()).digest()
        )
        print(f"{old.name} vs {new.name}: {'identical' if same else 'DIFFERENT'}")
        problems += [] if same else [f"{old.name} differs from {new.name}"]
    for problem in problems:
        print(problem)
    print(f"{compared} cells compared outside timing columns: {len(problems)} differences")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
