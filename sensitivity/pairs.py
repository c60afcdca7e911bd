"""Pairwise interaction terms: what two decision units under one scheme cost together beyond
their two isolation scores, measured where additivity is most likely to break (units of one
block), and kept only where the departure is larger than its own interval.

The ILP takes the kept terms exactly (`ILPConfig(interactions=True)`, search/ilp.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mixprec.data import content_hash
from mixprec.errors import MixprecError
from mixprec.models import ModelBundle
from mixprec.progress import cell_progress
from mixprec.scheme import KEEP, Scheme
from mixprec.search.cost import CostModel
from mixprec.search.selection import Interactions
from mixprec.sensitivity.base import Score, derive_seed
from mixprec.sensitivity.cells import calibration_batches
from mixprec.sensitivity.configs import IsolationConfig
from mixprec.sensitivity.isolation import IsolationEstimator
from mixprec.units import Unit

COLUMNS = ("first", "second", "scheme", "joint", "additive", "interaction", "ci_low", "ci_high",
           "kept")  # fmt: skip


def block_pairs(costs: CostModel) -> list[tuple[str, str]]:
    """Every two decision units that lie in one block (a unit in no block pairs with none)."""
    by_block: dict[str, list[str]] = {}
    for unit in costs.units:
        block = costs.block_of.get(unit, unit)
        if block != unit:
            by_block.setdefault(block, []).append(unit)
    return [pair for members in by_block.values() for pair in itertools.combinations(members, 2)]


def measure_interactions(
    bundle: ModelBundle,
    costs: CostModel,
    schemes: Sequence[str],
    pairs: Sequence[tuple[str, str]] | None = None,
    calib_batches: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per (pair, scheme): the joint isolation score with both units under the scheme,
    the sum of the two alone, their difference with a bootstrap 95% interval over calibration
    batches, and whether that interval excludes 0 (`kept`). Pairs: `block_pairs` by default."""
    chosen = [str(Scheme.parse(s)) for s in schemes]
    unknown = [s for s in chosen if s not in costs.schemes or s == KEEP]
    if unknown:
        valid = ", ".join(s for s in costs.schemes if s != KEEP)
        raise MixprecError(f"scheme {unknown[0]!r} is not a candidate of the problem; "
                           f"candidates: {valid}")  # fmt: skip
    pairs = block_pairs(costs) if pairs is None else list(pairs)
    for first, second in pairs:
        if first not in costs.members or second not in costs.members or first == second:
            raise MixprecError(f"pair ({first!r}, {second!r}) is not two decision units of "
                               f"{costs.model!r}")  # fmt: skip
    batches = calibration_batches(bundle, calib_batches)
    digest = content_hash(batches)
    estimator = IsolationEstimator(IsolationConfig(seed=seed))
    alone: dict[tuple[str, str], list[float]] = {}

    def per_sample(name: str, modules: tuple[str, ...], scheme: str) -> list[float]:
        unit = Unit(name, "block", modules, 0)  # replay: from before the first of its modules
        return estimator.per_sample(bundle, unit, Scheme.parse(scheme), batches, digest)

    rows = []
    with cell_progress("interaction terms", len(pairs) * len(chosen), progress) as advance:
        for (first, second), scheme in itertools.product(pairs, chosen):
            for unit in (first, second):
                if (unit, scheme) not in alone:
                    alone[unit, scheme] = per_sample(unit, costs.members[unit], scheme)
            members = (*costs.members[first], *costs.members[second])
            joint = np.array(per_sample(f"{first}+{second}", members, scheme))
            additive = np.array(alone[first, scheme]) + np.array(alone[second, scheme])
            term = Score.from_samples(list(joint - additive),
                                      derive_seed(seed, "pair", first, second, scheme))  # fmt: skip
            rows.append({"first": first, "second": second, "scheme": scheme,
                         "joint": float(joint.mean()), "additive": float(additive.mean()),
                         "interaction": term.mean, "ci_low": term.ci_low,
                         "ci_high": term.ci_high,
                         "kept": bool(term.ci_low > 0 or term.ci_high < 0)})  # fmt: skip
            advance()
    return pd.DataFrame(rows, columns=list(COLUMNS))


def interaction_terms(frame: pd.DataFrame, costs: CostModel) -> Interactions:
    """The kept rows as the ILP's terms: (unit i, scheme a, unit j, scheme b) -> extra score."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise MixprecError(f"an interaction table lacks columns {missing}")
    terms: dict[tuple[int, int, int, int], float] = {}
    for row in frame[frame["kept"]].itertuples():
        if row.first not in costs.units or row.second not in costs.units:
            raise MixprecError(f"the interaction table names {row.first!r} and {row.second!r}, "
                               f"not both decision units of {costs.model!r}")  # fmt: skip
        i, j = costs.units.index(row.first), costs.units.index(row.second)
        k = costs.index(row.scheme)
        terms[i, k, j, k] = float(row.interaction)
    return terms
