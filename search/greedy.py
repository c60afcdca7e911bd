"""Greedy baseline: upgrade the unit that saves the most score per extra byte."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mixprec.search.base import SearchStrategy
from mixprec.search.cost import CostModel
from mixprec.search.selection import Constraint, Selection, feasible_mask


def solve_greedy(scores: np.ndarray, constraints: Sequence[Constraint]) -> Selection:
    """Baseline: start every unit at its cheapest scheme, then keep taking the upgrade that
    saves the most score per extra byte (first constraint) while every budget still holds."""
    costs = [c for c, _ in constraints]
    limits = np.array([limit for _, limit in constraints])
    allowed = feasible_mask(scores)
    if not allowed.any(axis=1).all():
        return Selection((), "infeasible", float("nan"))
    primary = np.where(allowed, costs[0], np.inf)
    rows = np.arange(scores.shape[0])
    order = np.lexsort((np.where(allowed, scores, np.inf), primary), axis=1)
    choice = order[:, 0].copy()
    spent = np.array([c[rows, choice].sum() for c in costs])
    if np.any(spent > limits):
        return Selection((), "infeasible", float("nan"))
    safe_scores = np.where(allowed, scores, np.inf)
    for _ in range(scores.size):
        gain = safe_scores[rows, choice][:, None] - safe_scores
        extra = [c - c[rows, choice][:, None] for c in costs]
        fits = allowed & (gain > 0)
        for c, limit, used in zip(extra, limits, spent, strict=True):
            fits &= used + c <= limit * (1 + 1e-12)
        if not fits.any():
            break
        ratio = np.where(extra[0] > 0, gain / np.where(extra[0] > 0, extra[0], 1), np.inf)
        ratio = np.where(fits, ratio, -np.inf)
        i, k = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        spent = spent + np.array([c[i, k] for c in extra])
        choice[i] = k
    picked = tuple(int(k) for k in choice)
    return Selection(picked, "feasible", float(sum(scores[i, k] for i, k in enumerate(picked))))


class GreedyStrategy(SearchStrategy):
    name = "greedy"

    def select(
        self, scores: np.ndarray, costs: CostModel, constraints: list[Constraint]
    ) -> Selection:
        return solve_greedy(scores, constraints)
