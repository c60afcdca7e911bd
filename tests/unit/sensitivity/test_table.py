"""Reading a score table: the most sensitive units, roll-ups and block interactions, checked on
a hand-made table whose answers are written out here."""

from __future__ import annotations

import pytest

from mixprec.sensitivity.table import ScoreTable


def cell(unit: str, level: str, scheme: str, score: float, status: str = "ok") -> dict[str, object]:
    return {"unit": unit, "level": level, "scheme": scheme, "estimator": "isolation",
            "score": score, "ci_low": score - 0.1, "ci_high": score + 0.1, "samples": 4,
            "cost_bytes": 100, "seconds": 0.1, "status": status, "error": ""}  # fmt: skip


TABLE = ScoreTable.from_rows([
    cell("a.q", "layer", "w:int4", 1.0), cell("a.k", "layer", "w:int4", 3.0),
    cell("b.q", "layer", "w:int4", 2.0), cell("b.k", "layer", "w:int4", 9.0, status="failed"),
    cell("a", "block", "w:int4", 5.5), cell("b", "block", "w:int4", 2.5),
    cell("attn", "component", "w:int4", 0.5), cell("mlp", "component", "w:int4", 1.5),
])  # fmt: skip


def test_top_units_rank_ok_scores_of_one_level() -> None:
    top = TABLE.top_units("layer", top=2)
    assert list(top["unit"]) == ["a.k", "b.q"]  # b.k failed: never ranked


def test_block_interactions_are_measured_minus_the_sum_of_layers() -> None:
    frame = TABLE.block_interactions({"a": ["a.q", "a.k"], "b": ["b.q", "b.k"]})
    rows = frame.set_index("block")
    assert rows.loc["a", "sum_of_layers"] == 4.0 and rows.loc["a", "interaction"] == 1.5
    # b.k failed, so only b.q is summed: 2.5 - 2.0
    assert rows.loc["b", "sum_of_layers"] == 2.0 and rows.loc["b", "interaction"] == 0.5


def test_roll_up_is_one_column_per_unit() -> None:
    rolled = TABLE.roll_up("component")
    assert list(rolled.columns) == ["attn", "mlp"]
    assert rolled.loc[("isolation", "w:int4"), "mlp"] == pytest.approx(1.5)
