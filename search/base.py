"""SearchStrategy: a score table, a cost model and a budget in; a PrecisionPlan out.

The table's layer scores are summed per decision unit (fusion groups share one scheme), so a
plan's predicted loss is the sum of its units' scores; `keep` scores 0 at its full cost.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from mixprec.errors import MixprecError
from mixprec.models import ModelBundle
from mixprec.plan import PrecisionPlan
from mixprec.registry import ConfigRegistry
from mixprec.scheme import KEEP
from mixprec.search.configs import StrategyConfig
from mixprec.search.cost import Budget, CostModel, InfeasibleBudget
from mixprec.search.selection import (
    Constraint,
    Interactions,
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
                fixed = int((np.isfinite(scores).sum(axis=1) == 1).sum())
                why = "excluded (--exclude) or scored under one scheme only"
                kept = f" ({fixed} units have one choice: {why})" if fixed else ""
                raise InfeasibleBudget(
                    f"budget {budget} is infeasible: the smallest plan needs {smallest.value:.4g}"
                    f"{smallest.unit}{kept}",
                    smallest,
                )
            raise InfeasibleBudget(
                f"{name} {limit:g} is infeasible: the smallest plan needs {least:g}"
            )


class SearchStrategy(ABC):
    """Assigns a scheme to every decision unit; deterministic per seed. Built from its config
    (see `register_strategy`) with what the caller supplies: the model for measured objectives,
    a work folder for what a strategy keeps between runs."""

    name: str = ""
    config_type: type[StrategyConfig] = StrategyConfig

    def __init__(
        self,
        config: StrategyConfig | None = None,
        *,
        estimator: str = "isolation",
        limits: Limits = Limits(),
        bundle: ModelBundle | None = None,
        workdir: Path | None = None,
        progress: bool = False,
        interactions: Interactions | None = None,
    ) -> None:
        config = self.config_type() if config is None else config
        if not isinstance(config, self.config_type):
            raise MixprecError(
                f"strategy {self.name!r} takes a {self.config_type.__name__}, "
                f"not a {type(config).__name__}"
            )
        if config.needs_model and bundle is None:
            raise MixprecError(f"the measured objective of {self.name} needs the model")
        self.config = config
        self.estimator = estimator
        self.seed = config.seed
        self.kappa = config.kappa
        self.limits = limits
        self.bundle = bundle
        self.workdir = workdir
        self.progress = progress
        self.interactions = interactions  # measured pairwise terms, for a strategy that asks

    @abstractmethod
    def select(
        self, scores: np.ndarray, costs: CostModel, constraints: list[Constraint]
    ) -> Selection:
        """One scheme index per unit within every constraint."""

    def provenance(self) -> dict[str, Any]:
        return {**self.config.provenance(), "estimator": self.estimator}

    def solve(self, table: ScoreTable, costs: CostModel, budget: Budget | str) -> PrecisionPlan:
        budget = Budget.parse(budget)
        scores = score_matrix(table, costs, self.estimator, self.kappa)
        return self.solve_matrix(scores, costs, budget)

    def solve_matrix(self, scores: np.ndarray, costs: CostModel, budget: Budget) -> PrecisionPlan:
        """The plan for a score matrix already built (an AllocationProblem keeps it)."""
        constraints = constraints_for(costs, budget, self.limits)
        check_feasible(scores, costs, budget, constraints)
        selection = self.select(scores, costs, constraints)
        if not selection.choice:
            raise InfeasibleBudget(f"{self.name} found no plan within budget {budget}")
        return plan_from_selection(selection, scores, costs, budget, self.provenance())


STRATEGIES = ConfigRegistry("strategy")
S = TypeVar("S", bound=type["SearchStrategy"])


def register_strategy(config_type: type[StrategyConfig]) -> Callable[[S], S]:
    """Class decorator: the strategy that runs `config_type`, under the config's name."""
    return STRATEGIES.register(config_type)


def registered_strategies() -> dict[str, type[SearchStrategy]]:
    """Strategies registered so far, by name (`mixprec.strategies` imports the built-in ones)."""
    return STRATEGIES.classes()


def plan_from_selection(
    selection: Selection,
    scores: np.ndarray,
    costs: CostModel,
    budget: Budget,
    provenance: Mapping[str, Any],
) -> PrecisionPlan:
    totals = costs.totals(selection.choice)
    limit = budget.weight_bytes(costs)  # the share of it left unused: how close the plan gets
    predicted = {"score": selection.objective, **totals,
                 "budget_left": (limit - totals["weight_bytes"]) / limit}  # fmt: skip
    note = {}
    largest = largest_total(scores, costs.bytes)
    if largest <= limit:
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
