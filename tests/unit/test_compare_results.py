"""tools/compare_results.py: a refactor's before/after check must see a changed number and
must not see a changed timing."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("compare_results", ROOT / "tools/compare_results.py")
assert spec is not None and spec.loader is not None
compare_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_results)

TABLE = (
    "Made by x in {wall} s\n\n| model | accuracy | solve s |\n|---|---|---|\n"
    "| cnn | {acc} | {t} |\n"
)


def test_timings_are_ignored_and_numbers_are_not(tmp_path: Path) -> None:
    before, after, changed = tmp_path / "a.md", tmp_path / "b.md", tmp_path / "c.md"
    before.write_text(TABLE.format(wall=10, acc=0.96, t=0.01))
    after.write_text(TABLE.format(wall=12, acc=0.96, t=0.02))
    changed.write_text(TABLE.format(wall=10, acc=0.95, t=0.01))
    assert compare_results.differences(before, after) == ([], 2)
    assert compare_results.differences(before, changed) == (
        ["table 1, 'accuracy': 0.96 vs 0.95"],
        2,
    )
