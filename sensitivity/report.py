"""Read a score table: the most sensitive units per scheme, component and block roll-ups,
and each block's measured score beside the sum of its layers' (the interaction term)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from mixprec.sensitivity.table import ScoreTable


def top_units(table: ScoreTable, level: str = "layer", top: int = 5) -> pd.DataFrame:
    """The `top` highest-scoring units of `level` for every estimator and scheme."""
    rows = table.ok()
    rows = rows[rows["level"] == level]
    ranked = rows.sort_values(["estimator", "scheme", "score"], ascending=[True, True, False])
    columns = ["estimator", "scheme", "unit", "score", "ci_low", "ci_high"]
    return ranked.groupby(["estimator", "scheme"], sort=True).head(top)[columns]


def block_interactions(table: ScoreTable, blocks: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Measured block score, the sum of its layers' scores, and their difference."""
    rows = table.ok()
    layer_scores = rows[rows["level"] == "layer"].set_index(["estimator", "scheme", "unit"])
    out = []
    for block, modules in blocks.items():
        measured = rows[(rows["level"] == "block") & (rows["unit"] == block)]
        for record in measured.itertuples():
            keys = [(record.estimator, record.scheme, m) for m in modules]
            present = [k for k in keys if k in layer_scores.index]
            summed = float(layer_scores.loc[present, "score"].sum()) if present else float("nan")
            out.append(
                {
                    "estimator": record.estimator,
                    "scheme": record.scheme,
                    "block": block,
                    "measured": float(record.score),
                    "sum_of_layers": summed,
                    "interaction": float(record.score) - summed,
                }
            )
    return pd.DataFrame(out)


def roll_up(table: ScoreTable, level: str) -> pd.DataFrame:
    """estimator x scheme rows, one column per component or block, mean scores."""
    rows = table.ok()
    rows = rows[rows["level"] == level]
    return rows.pivot_table(
        index=["estimator", "scheme"], columns="unit", values="score", sort=True
    )
