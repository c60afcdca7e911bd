"""Markdown tables for reports and results files (no extra dependency)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def rows_markdown(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def cell(value: object, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def frame_markdown(frame: pd.DataFrame, digits: int = 4, index: bool = False) -> str:
    """A DataFrame as a Markdown table; floats to `digits` significant digits."""
    if index:
        frame = frame.reset_index()
    head = [
        " / ".join(str(part) for part in c if str(part)) if isinstance(c, tuple) else str(c)
        for c in frame.columns
    ]
    rows = [[cell(v, digits) for v in row] for row in frame.itertuples(index=False)]
    return rows_markdown(head, rows)
