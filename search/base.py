"""SearchStrategy: a score table, a cost model and a budget in; a PrecisionPlan out.

The table's layer scores are summed per decision unit (fusion groups share one scheme), so a
plan's predicted loss is the sum of its units' scores; `keep` scores 0 at its full cost.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mixprec.errors import MixprecError
from mixprec.plan import PrecisionPlan
from mixprec.scheme import KEEP
from mixprec.search.cost import Budget, CostModel
from mixprec.search.selection import (
    Constraint,
    Selection,
    largest_total,
    smallest_totals,
    within,
)
from mixprec.sensitivity.table import ScoreTable


@dataclass(frozen=True)
class Limits:
    """Secondary limits besides the budget; None = unlimited."""

    max_bops: float | None = None
    max_latency: float | None = None


def score_matrix(
    table: ScoreTable, costs: CostModel, estimator: str, kappa: float = 0.0
) -> np.ndarray:
    """[units, schemes] of summed layer scores (+ kappa * CI half-width for a robust plan);
    inf where the table has no ok score, 0 for `keep`."""
    rows = table.ok()
    rows = rows[(rows["estimator"] == estimator) & (rows["level"] == "layer")]
    if rows.empty:
        table.check_usable(estimator)  # says why: not scored, or every cell failed
    if not np.isfinite(kappa) or kappa < 0:
        raise MixprecError(f"--kappa {kappa} must be a finite number >= 0")
    value = rows["score"] + kappa * (rows["ci_high"] - rows["ci_low"]) / 2
    lookup = dict(zip(zip(rows["unit"], rows["scheme"], strict=True), value, strict=True))
    matrix = np.full((len(costs.units), len(costs.schemes)), np.inf)
    for i, unit in enumerate(costs.units):
        for j, scheme in enumerate(costs.schemes):
            if scheme == KEEP:
                matrix[i, j] = 0.0
                continue
            parts = [lookup.get((m, scheme)) for m in costs.members[unit]]
            if all(p is not None for p in parts):
                matrix[i, j] = float(sum(parts))  # type: ignore[arg-type]
    return matrix


def table_schemes(table: ScoreTable, estimator: str) -> list[str]:
    """The candidate schemes: every scheme the table scored for this estimator, and `keep`."""
    rows = table.ok()
    schemes = sorted(set(rows.loc[rows["estimator"] == estimator, "scheme"]))
    return [*schemes, KEEP]


OBJECTIVES = ("predicted", "measured")


def check_objective(objective: str, has_model: bool) -> None:
    """`predicted` ranks plans by the table, `measured` on the evaluation split (needs a model)."""
    if objective not in OBJECTIVES:
        raise MixprecError(
            f"unknown objective {objective!r}; valid objectives: {', '.join(OBJECTIVES)}"
        )
    if objective == "measured" and not has_model:
        raise MixprecError("the measured objective needs the model (a ModelBundle)")


def constraints_for(costs: CostModel, budget: Budget, limits: Limits) -> list[Constraint]:
    """Bytes first (the greedy ratio uses it), then BOPs and latency where limited."""
    constraints: list[Constraint] = [(costs.bytes, budget.weight_bytes(costs))]
    if limits.max_bops is not None:
        constraints.append((costs.bops, limits.max_bops))
    if limits.max_latency is not None:
        if costs.latency is None:
            raise MixprecError("--max-latency needs a latency table (--latency-table CSV)")
        constraints.append((costs.latency, limits.max_latency))
    return constraints


def check_feasible(
    scores: np.ndarray, costs: CostModel, budget: Budget, constraints: list[Constraint]
) -> None:
    """An error naming the smallest feasible budget, before any solver runs."""
    names = ["budget", "--max-bops", "--max-latency"]
    for name, least, (_, limit) in zip(
        names, smallest_totals(scores, [c for c, _ in constraints]), constraints, strict=False
    ):
        if not within(least, limit):
            if name == "budget":
                smallest = budget.from_weight_bytes(least, costs)
                raise MixprecError(
                    f"budget {budget} is infeasible: the smallest plan needs {smallest.value:.4g}"
                    f"{smallest.unit}"
                )
            raise MixprecError(f"{name} {limit:g} is infeasible: the smallest plan needs {least:g}")


class SearchStrategy(ABC):
    """Assigns a scheme to every decision unit; implementations are deterministic per seed."""

    name: str = ""

    def __init__(
        self,
        estimator: str = "isolation",
        seed: int = 0,
        limits: Limits = Limits(),
        kappa: float = 0.0,
    ) -> None:
        self.estimator = estimator
        self.seed = seed
        self.limits = limits
        self.kappa = kappa

    @abstractmethod
    def select(
        self, scores: np.ndarray, costs: CostModel, constraints: list[Constraint]
    ) -> Selection:
        """One scheme index per unit within every constraint."""

    def provenance(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "estimator": self.estimator,
            "seed": self.seed,
            "kappa": self.kappa,
        }

    def solve(self, table: ScoreTable, costs: CostModel, budget: Budget | str) -> PrecisionPlan:
        budget = Budget.parse(budget)
        scores = score_matrix(table, costs, self.estimator, self.kappa)
        constraints = constraints_for(costs, budget, self.limits)
        check_feasible(scores, costs, budget, constraints)
        selection = self.select(scores, costs, constraints)
        if not selection.choice:
            raise MixprecError(f"{self.name} found no plan within budget {budget}")
        return plan_from_selection(selection, scores, costs, budget, self.provenance())


def plan_from_selection(
    selection: Selection,
    scores: np.ndarray,
    costs: CostModel,
    budget: Budget,
    provenance: Mapping[str, Any],
) -> PrecisionPlan:
    totals = costs.totals(selection.choice)
    predicted = {"score": selection.objective, **totals}
    note = {}
    largest = largest_total(scores, costs.bytes)
    if largest <= budget.weight_bytes(costs):
        note["note"] = (
            f"budget {budget} is above the largest plan "
            f"({budget.from_weight_bytes(largest, costs).value:.4g}{budget.unit}); "
            "this is the best plan"
        )
    return PrecisionPlan(
        model=costs.model,
        fingerprint=costs.fingerprint,
        assignment=costs.assignment(selection.choice),
        budget=str(budget),
        predicted=predicted,
        provenance={**provenance, "status": selection.status, **note},
    )


def strategies() -> dict[str, Callable[..., SearchStrategy]]:
    from mixprec.agents.sac import SACStrategy
    from mixprec.search.greedy import GreedyStrategy
    from mixprec.search.ilp import ILPStrategy
    from mixprec.search.optuna_search import OptunaStrategy
    from mixprec.search.uniform import UniformStrategy

    return {
        "ilp": ILPStrategy,
        "greedy": GreedyStrategy,
        "optuna": OptunaStrategy,
        "sac": SACStrategy,
        "uniform": UniformStrategy,
    }


def make_strategy(method: str, **options: Any) -> SearchStrategy:
    registry = strategies()
    if method not in registry:
        raise MixprecError(f"unknown method {method!r}; valid methods: {', '.join(registry)}")
    return registry[method](**options)
