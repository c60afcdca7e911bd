"""ScoreTable: units x schemes x estimators -> score, 95% interval, cost; Parquet on disk; and
the ways it is read (most sensitive units, roll-ups, block interactions)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mixprec.errors import MixprecError
from mixprec.files import atomic_write_parquet

COLUMNS = (
    "unit", "level", "scheme", "estimator", "score", "ci_low", "ci_high", "samples",
    "cost_bytes", "seconds", "status", "error",
)  # fmt: skip
KEY = ["estimator", "unit", "scheme"]
NUMERIC = ("score", "ci_low", "ci_high", "samples", "cost_bytes", "seconds")
TEXT = ("unit", "level", "scheme", "estimator", "status")


@dataclass(frozen=True)
class ScoreTable:
    """One row per (estimator, unit, scheme) cell, sorted by that key."""

    frame: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.frame.columns]
        if missing:
            raise MixprecError(f"score table lacks columns {missing}")
        frame = self.frame
        for column in NUMERIC:
            if not (frame[column].isna().all() or pd.api.types.is_numeric_dtype(frame[column])):
                raise MixprecError(f"score table column {column!r} is not numeric")
        for column in TEXT:
            if not frame[column].map(lambda v: isinstance(v, str)).all():
                raise MixprecError(f"score table column {column!r} holds values that are not text")

    @classmethod
    def from_rows(cls, rows: list[dict[str, object]]) -> ScoreTable:
        frame = pd.DataFrame(rows, columns=list(COLUMNS))
        return cls(frame.sort_values(KEY, kind="stable").reset_index(drop=True))

    def save(self, path: Path) -> None:
        atomic_write_parquet(path, self.frame)

    @classmethod
    def load(cls, path: Path) -> ScoreTable:
        """Read and check a table; a corrupt, truncated or foreign file is one line."""
        import pyarrow

        if not path.is_file():
            raise MixprecError(f"no score table at {path}: run `mixprec analyze` first")
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError, pyarrow.ArrowException) as err:
            reason = " ".join(str(err).split())[:200]
            raise MixprecError(
                f"{path} is not a readable score table ({reason}); re-run `mixprec analyze`"
            ) from None
        try:
            return cls(frame)
        except MixprecError as err:
            raise MixprecError(f"{path}: {err}; re-run `mixprec analyze`") from None

    def check_usable(self, estimator: str) -> None:
        """The layer scores of `estimator` can be planned with: present, one per (unit, scheme),
        finite, and not negative where the estimator cannot be."""
        from mixprec.sensitivity.base import make_estimator

        make_estimator(estimator)  # an unknown name says which are valid
        rows = self.frame[(self.frame["estimator"] == estimator) & (self.frame["level"] == "layer")]
        if rows.empty:
            found = sorted(set(self.frame["estimator"]))
            built = " (nor the fisher scores it is built from: run `mixprec analyze --estimators "
            built += "adaptive --budgets ...`)" if "fisher" not in found else ""
            raise MixprecError(
                f"the score table has no layer scores for estimator {estimator!r}"
                f"{built if estimator == 'adaptive' else ''}; it has: {', '.join(found) or 'none'}"
            )
        if rows.duplicated(KEY).any():
            first = rows[rows.duplicated(KEY)].iloc[0]
            raise MixprecError(
                f"the score table holds {first['unit']} under {first['scheme']} ({estimator}) "
                "more than once; re-run `mixprec analyze`"
            )
        ok = rows[rows["status"] == "ok"]
        if ok.empty:
            errors = [e for e in rows["error"] if isinstance(e, str) and e]
            raise MixprecError(
                f"every {estimator} layer score failed, e.g. {errors[0] if errors else '?'}"
            )
        values = ok[["score", "ci_low", "ci_high"]].to_numpy(dtype=float)
        if not np.isfinite(values).all():
            bad = ok[~np.isfinite(values).all(axis=1)].iloc[0]
            raise MixprecError(
                f"the score of {bad['unit']} under {bad['scheme']} ({estimator}) is not finite "
                "though marked ok; re-run `mixprec analyze`"
            )
        if make_estimator(estimator).nonnegative and (values[:, 0] < 0).any():
            bad = ok[values[:, 0] < 0].iloc[0]
            raise MixprecError(
                f"the {estimator} score of {bad['unit']} under {bad['scheme']} is negative "
                f"({bad['score']:.3g}), which that estimator cannot give; re-run `mixprec analyze`"
            )

    def ok(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == "ok"]

    def same_scores(self, other: ScoreTable) -> bool:
        """Equal in everything but wall time."""
        cols = [c for c in COLUMNS if c != "seconds"]
        return self.frame[cols].equals(other.frame[cols])

    def top_units(self, level: str = "layer", top: int = 5) -> pd.DataFrame:
        """The `top` highest-scoring units of `level` for every estimator and scheme."""
        rows = self.ok()
        rows = rows[rows["level"] == level]
        ranked = rows.sort_values(["estimator", "scheme", "score"], ascending=[True, True, False])
        columns = ["estimator", "scheme", "unit", "score", "ci_low", "ci_high"]
        return ranked.groupby(["estimator", "scheme"], sort=True).head(top)[columns]

    def block_interactions(self, blocks: Mapping[str, Sequence[str]]) -> pd.DataFrame:
        """Each block's measured score beside the sum of its layers' (the interaction term:
        what the additive model the allocators use misses)."""
        rows = self.ok()
        layer_scores = rows[rows["level"] == "layer"].set_index(["estimator", "scheme", "unit"])
        out = []
        for block, modules in blocks.items():
            measured = rows[(rows["level"] == "block") & (rows["unit"] == block)]
            for record in measured.itertuples():
                keys = [(record.estimator, record.scheme, m) for m in modules]
                present = [k for k in keys if k in layer_scores.index]
                summed = (
                    float(layer_scores.loc[present, "score"].sum()) if present else float("nan")
                )
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

    def roll_up(self, level: str) -> pd.DataFrame:
        """estimator x scheme rows, one column per component or block, mean scores."""
        rows = self.ok()
        rows = rows[rows["level"] == level]
        return rows.pivot_table(
            index=["estimator", "scheme"], columns="unit", values="score", sort=True
        )
