"""ScoreTable: units x schemes x estimators -> score, 95% interval, cost; Parquet on disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mixprec.errors import MixprecError
from mixprec.files import atomic_path

COLUMNS = (
    "unit", "level", "scheme", "estimator", "score", "ci_low", "ci_high", "samples",
    "cost_bytes", "seconds", "status", "error",
)  # fmt: skip
KEY = ["estimator", "unit", "scheme"]


@dataclass(frozen=True)
class ScoreTable:
    """One row per (estimator, unit, scheme) cell, sorted by that key."""

    frame: pd.DataFrame

    def __post_init__(self) -> None:
        missing = [c for c in COLUMNS if c not in self.frame.columns]
        if missing:
            raise MixprecError(f"score table lacks columns {missing}")

    @classmethod
    def from_rows(cls, rows: list[dict[str, object]]) -> ScoreTable:
        frame = pd.DataFrame(rows, columns=list(COLUMNS))
        return cls(frame.sort_values(KEY, kind="stable").reset_index(drop=True))

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            self.frame.to_parquet(tmp, index=False)

    @classmethod
    def load(cls, path: Path) -> ScoreTable:
        if not path.is_file():
            raise MixprecError(f"no score table at {path}: run `mixprec analyze` first")
        return cls(pd.read_parquet(path))

    def ok(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == "ok"]

    def matrix(self, estimator: str, level: str = "layer") -> pd.DataFrame:
        """units x schemes of mean scores, for search."""
        rows = self.ok()
        rows = rows[(rows["estimator"] == estimator) & (rows["level"] == level)]
        return rows.pivot(index="unit", columns="scheme", values="score")

    def same_scores(self, other: ScoreTable) -> bool:
        """Equal in everything but wall time."""
        cols = [c for c in COLUMNS if c != "seconds"]
        return self.frame[cols].equals(other.frame[cols])
