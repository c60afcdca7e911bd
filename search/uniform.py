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


def solve_uniform(scores: np.ndarray, constraints: list[Constraint]) -> Selection:
    """The scored-everywhere scheme with the least total score within every limit."""
    best = Selection((), "infeasible", float("nan"))
    for k in range(scores.shape[1]):
        column = scores[:, k]
        fits = all(within(c[:, k].sum(), limit) for c, limit in constraints)
        if np.isfinite(column).all() and fits:
            total = float(column.sum())
            if not best.choice or total < best.objective:
                best = Selection((k,) * scores.shape[0], "feasible", total)
    return best


@register_strategy(UniformConfig)
class UniformStrategy(SearchStrategy):
    """The best single scheme for every unit."""

    def select(
        self, scores: np.ndarray, costs: CostModel, constraints: list[Constraint]
    ) -> Selection:
        return solve_uniform(scores, constraints)
