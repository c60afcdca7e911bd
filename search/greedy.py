"""Greedy baseline: upgrade the unit that saves the most score per extra byte."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from mixprec.search.base import SearchStrategy, register_strategy
from mixprec.search.configs import GreedyConfig
from mixprec.search.cost import CostModel
from mixprec.search.selection import Constraint, Selection, feasible_mask, within


def solve_greedy(scores: np.ndarray, constraints: Sequence[Constraint]) -> Selection:
    """Baseline: start every unit at its cheapest scheme, then take upgrades in order of score
    saved per extra byte while the budget holds. One constraint: the upgrades along each
    unit's lower convex hull, sorted once; several: re-pick the best feasible move each step."""
    if len(constraints) == 1:
        return _hull_greedy(scores, *constraints[0])
    costs = [c for c, _ in constraints]
    limits = np.array([limit for _, limit in constraints])
    allowed = feasible_mask(scores)
    if not allowed.any(axis=1).all():
        return Selection((), "infeasible", float("nan"))
    safe_scores = np.where(allowed, scores, np.inf)
    primary = np.where(allowed, costs[0], np.inf)
    rows = np.arange(scores.shape[0])
    choice = np.lexsort((safe_scores, primary), axis=1)[:, 0].copy()
    spent = np.array([c[rows, choice].sum() for c in costs])
    if np.any(spent > limits):
        return Selection((), "infeasible", float("nan"))
    for _ in range(scores.size):
        gain = safe_scores[rows, choice][:, None] - safe_scores
        extra = [c - c[rows, choice][:, None] for c in costs]
        fits = allowed & (gain > 0)
        for c, limit, used in zip(extra, limits, spent, strict=True):
            fits &= within(used + c, limit)
        if not fits.any():
            break
        ratio = np.where(extra[0] > 0, gain / np.where(extra[0] > 0, extra[0], 1), np.inf)
        ratio = np.where(fits, ratio, -np.inf)
        i, k = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        spent = spent + np.array([c[i, k] for c in extra])
        choice[i] = k
    picked = tuple(int(k) for k in choice)
    return Selection(picked, "feasible", float(sum(scores[i, k] for i, k in enumerate(picked))))


def _hull_greedy(scores: np.ndarray, cost: np.ndarray, limit: float) -> Selection:
    allowed = feasible_mask(scores)
    if not allowed.any(axis=1).all():
        return Selection((), "infeasible", float("nan"))
    steps: list[tuple[float, int, int, int]] = []  # (-saving per byte, unit, from, to)
    choice = np.zeros(scores.shape[0], dtype=int)
    for unit in range(scores.shape[0]):
        hull = _lower_hull(cost[unit], scores[unit], np.nonzero(allowed[unit])[0])
        choice[unit] = hull[0]
        for a, b in pairwise(hull):
            ratio = (scores[unit, a] - scores[unit, b]) / (cost[unit, b] - cost[unit, a])
            steps.append((-ratio, unit, int(a), int(b)))
    rows = np.arange(len(choice))
    spent = float(cost[rows, choice].sum())
    if not within(spent, limit):
        return Selection((), "infeasible", float("nan"))
    for _, unit, start, end in sorted(steps):
        extra = cost[unit, end] - cost[unit, start]
        if choice[unit] == start and within(spent + extra, limit):
            choice[unit] = end
            spent += extra
    picked = tuple(int(k) for k in choice)
    return Selection(picked, "feasible", float(scores[rows, choice].sum()))


def _lower_hull(cost: np.ndarray, score: np.ndarray, cells: np.ndarray) -> list[int]:
    """Cells on the lower-left convex hull of (cost, score), cheapest first."""
    order = sorted(cells, key=lambda k: (cost[k], score[k]))
    hull: list[int] = []
    for k in order:
        if hull and score[k] >= score[hull[-1]]:
            continue  # costs more, saves nothing
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b if it lies on or above the segment a -> k
            if (score[b] - score[a]) * (cost[k] - cost[a]) >= (score[k] - score[a]) * (
                cost[b] - cost[a]
            ):
                hull.pop()
            else:
                break
        hull.append(int(k))
    return hull


@register_strategy(GreedyConfig)
class GreedyStrategy(SearchStrategy):
    """Upgrades by score saved per extra byte while the budget holds."""

    def select(
        self, scores: np.ndarray, costs: CostModel, constraints: list[Constraint]
    ) -> Selection:
        return solve_greedy(scores, constraints)
