"""Score tables and cost models for search tests, and brute force as the ILP's oracle."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mixprec.models import ModelBundle, load_model
from mixprec.search.base import Limits, SearchStrategy
from mixprec.search.cost import CostModel, build_cost_model
from mixprec.search.ilp import Interactions, total_score
from mixprec.search.selection import Constraint, Selection
from mixprec.sensitivity.table import ScoreTable
from mixprec.strategies import strategies, strategy_for
from mixprec.testing import SYNTHETIC_SCHEMES as SCHEMES
from mixprec.testing import synthetic_table


def digits_problem() -> tuple[ModelBundle, ScoreTable, CostModel]:
    bundle = load_model("digits-cnn")
    table = synthetic_table(bundle)
    return bundle, table, build_cost_model(bundle, [*SCHEMES, "keep"])


def brute_force(scores: np.ndarray, constraints: Sequence[Constraint],
                interactions: Interactions | None = None) -> Selection:  # fmt: skip
    best: tuple[float, tuple[int, ...]] | None = None
    rows = np.arange(scores.shape[0])
    for choice in itertools.product(range(scores.shape[1]), repeat=scores.shape[0]):
        picked = np.asarray(choice)
        if not np.isfinite(scores[rows, picked]).all():
            continue
        if any(c[rows, picked].sum() > limit for c, limit in constraints):
            continue
        value = total_score(scores, choice, interactions)
        if best is None or value < best[0] - 1e-12:
            best = (value, choice)
    if best is None:
        return Selection((), "infeasible", float("nan"))
    return Selection(best[1], "optimal", best[0])


def strategy(
    method: str,
    *,
    estimator: str = "isolation",
    limits: Limits = Limits(),
    bundle: ModelBundle | None = None,
    workdir: Path | None = None,
    **settings: Any,
) -> SearchStrategy:
    """A registered strategy built from its config's settings (an unknown setting is a
    TypeError, so a test cannot pass one that is silently dropped)."""
    config = strategies()[method].config_type(**settings)
    return strategy_for(config, estimator=estimator, limits=limits, bundle=bundle, workdir=workdir)
