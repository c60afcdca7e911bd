"""Uniform baseline: one scheme for every unit, the one predicting the least loss that fits.

What a user gets today from a single-format quantizer; plans of mixed methods are judged
against it on the dashboard's Pareto page and in the experiments.
"""

from __future__ import annotations

import numpy as np

from mixprec.search.base import SearchStrategy, register_strategy
from mixprec.search.configs import UniformConfig
from mixprec.search.cost import CostModel
from mixprec.search.selection import Constraint, Selection, within


def uniform_choice(scores: np.ndarray, scheme: int) -> np.ndarray | None:
    """Scheme index `scheme` on every unit that may take it, a unit with one choice only (one
    excluded from the search) keeping that one; None where some other unit cannot take it."""
    finite = np.isfinite(scores)
    pinned = finite.sum(axis=1) == 1
    if not (finite[:, scheme] | pinned).all():
        return None
    return np.where(finite[:, scheme], scheme, finite.argmax(axis=1))


def solve_uniform(scores: np.ndarray, constraints: list[Constraint]) -> Selection:
    """The scheme with the least total score within every limit (see `uniform_choice`)."""
    best = Selection((), "infeasible", float("nan"))
    rows = np.arange(scores.shape[0])
    for k in range(scores.shape[1]):
        choice = uniform_choice(scores, k)
        if choice is None:
            continue
        if all(within(c[rows, choice].sum(), limit) for c, limit in constraints):
            total = float(scores[rows, choice].sum())
            if not best.choice or total < best.objective:
                best = Selection(tuple(int(c) for c in choice), "feasible", total)
    return best


@register_strategy(UniformConfig)
class UniformStrategy(SearchStrategy):
    """The best single scheme for every unit."""

    def select(
        self, scores: np.ndarray, costs: CostModel, constraints: list[Constraint]
    ) -> Selection:
        return solve_uniform(scores, constraints)
