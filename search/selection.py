"""What every solver returns, and the instance reductions they share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Constraint = tuple[np.ndarray, float]  # cost matrix [units, schemes], limit
# (unit i, scheme a, unit j, scheme b) -> the score the pair adds when both are picked
Interactions = Mapping[tuple[int, int, int, int], float]


@dataclass(frozen=True)
class Selection:
    """One scheme index per unit, the solver's status and the objective it reached."""

    choice: tuple[int, ...]
    status: str
    objective: float


def feasible_mask(scores: np.ndarray) -> np.ndarray:
    """Cells a solver may pick: those with a finite score."""
    return np.isfinite(scores)


def within(total: Any, limit: float) -> Any:
    """Whether `total` (a number or an array) keeps to `limit`, allowing float round-off."""
    return total <= limit * (1 + 1e-12)


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


def largest_total(scores: np.ndarray, cost: np.ndarray) -> float:
    """The most any plan can spend on `cost` (every unit at its dearest scored scheme)."""
    return float(np.where(feasible_mask(scores), cost, -np.inf).max(axis=1).sum())


def lagrangian_bound(scores: np.ndarray, cost: np.ndarray, limit: float) -> tuple[float, float]:
    """max over price >= 0 of sum_i min_k (score + price * cost) - price * limit, a lower
    bound on every plan within `limit`; returns (bound, price). Bisection on the subgradient."""
    allowed = feasible_mask(scores)
    safe = np.where(allowed, scores, np.inf)

    def spent(price: float) -> tuple[float, float]:
        value = safe + price * np.where(allowed, cost, 0)
        pick = value.argmin(axis=1)
        rows = np.arange(len(pick))
        return float(value[rows, pick].sum() - price * limit), float(cost[rows, pick].sum())

    low, high = 0.0, 1.0
    if spent(0.0)[1] <= limit:
        return spent(0.0)[0], 0.0
    while spent(high)[1] > limit and high < 1e30:
        high *= 4
    for _ in range(60):
        middle = (low + high) / 2
        if spent(middle)[1] > limit:
            low = middle
        else:
            high = middle
    best = max((spent(p)[0], p) for p in (low, high))
    return best


def reduced_cost_mask(
    scores: np.ndarray, cost: np.ndarray, limit: float, incumbent: float
) -> np.ndarray:
    """Cells that can still be in a plan better than `incumbent` (Lagrangian reduced-cost
    fixing: a plan using cell (i, k) scores at least bound + its reduced cost)."""
    allowed = feasible_mask(scores)
    bound, price = lagrangian_bound(scores, cost, limit)
    value = np.where(allowed, scores + price * cost, np.inf)
    reduced = value - value.min(axis=1, keepdims=True)
    slack = 1e-9 * max(1.0, abs(incumbent))
    return allowed & (bound + reduced <= incumbent + slack)
