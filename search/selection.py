"""What every solver returns, and the instance reductions they share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Constraint = tuple[np.ndarray, float]  # cost matrix [units, schemes], limit


@dataclass(frozen=True)
class Selection:
    """One scheme index per unit, the solver's status and the objective it reached."""

    choice: tuple[int, ...]
    status: str
    objective: float


def feasible_mask(scores: np.ndarray) -> np.ndarray:
    """Cells a solver may pick: those with a finite score."""
    return np.isfinite(scores)


def undominated(scores: np.ndarray, costs: Sequence[np.ndarray]) -> np.ndarray:
    """Mask of cells no other cell of the same unit beats on score and every cost
    (ties go to the lower index, so exactly one of equal cells survives)."""
    allowed = feasible_mask(scores)
    schemes = scores.shape[1]
    keys = np.stack([scores, *costs], axis=-1)  # [units, schemes, 1 + costs]
    keep = allowed.copy()
    for k in range(schemes):
        no_worse = np.all(keys <= keys[:, k : k + 1, :], axis=-1) & allowed
        better = np.any(keys < keys[:, k : k + 1, :], axis=-1)
        earlier = np.arange(schemes) < k
        beaten = no_worse & (better | earlier[None, :])
        beaten[:, k] = False
        keep[:, k] &= ~beaten.any(axis=1)
    return keep


def smallest_totals(scores: np.ndarray, costs: Sequence[np.ndarray]) -> list[float]:
    """Per constraint, the least any plan can spend on it (ignoring the others)."""
    allowed = feasible_mask(scores)
    return [float(np.where(allowed, c, np.inf).min(axis=1).sum()) for c in costs]
