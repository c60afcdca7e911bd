"""Conformance suites for estimators and strategies of your own, the way Optuna ships its
sampler tests and SB3 its `check_env`: subclass one in a test module and pytest runs them all.

    from mixprec.testing import StrategyTestCase

    class TestMyStrategy(StrategyTestCase):
        def config(self, seed: int) -> MyConfig:   # registered with @register_strategy
            return MyConfig(seed=seed)

`EstimatorTestCase` likewise asks for `make_estimator(seed)`. The strategy suite runs on a
synthetic problem built in memory (no model is trained or loaded); the estimator suite scores
the bundled digits-cnn unless `bundle()` is overridden. Needs pytest (the `dev` extra).
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from functools import cache
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from mixprec.errors import MixprecError
from mixprec.models import ModelBundle, load_model
from mixprec.plan import PrecisionPlan
from mixprec.scheme import Scheme
from mixprec.search.base import Limits, SearchStrategy
from mixprec.search.configs import StrategyConfig
from mixprec.search.cost import Budget, CostModel, InfeasibleBudget, build_cost_model
from mixprec.sensitivity.base import SensitivityEstimator
from mixprec.sensitivity.table import ScoreTable
from mixprec.strategies import strategy_for
from mixprec.tasks import OutputTask
from mixprec.units import Unit, discover_units, quantizable_layers, select

SYNTHETIC_SCHEMES = ("w:int8", "w:mxfp6_e2m3", "w:int4_g128", "w:mxfp4", "w:int2")
BUDGETS = ("2.5bits", "4.2bits", "6bits", "9bits", "0.3x")


def synthetic_bundle(seed: int = 0) -> ModelBundle:
    """An MLP of eight layers of unlike sizes, so that plans differ in cost as well as score."""
    torch.manual_seed(seed)
    widths = (256, 192, 128, 320, 64, 256, 128, 96, 10)
    layers: list[nn.Module] = []
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    model = nn.Sequential(*layers[:-1]).eval()
    gen = torch.Generator().manual_seed(seed)
    batch = {"inputs": torch.randn(4, widths[0], generator=gen)}
    return ModelBundle("synthetic-mlp", model, OutputTask("synthetic-mlp"), (batch,), (batch,))


def synthetic_table(
    bundle: ModelBundle, schemes: tuple[str, ...] = SYNTHETIC_SCHEMES, seed: int = 0
) -> ScoreTable:
    """Layer scores that grow as a scheme's bits shrink, times a random per-layer weight, with
    intervals 0.1 below and 0.2 above each score."""
    gen = np.random.default_rng(seed)
    rows = []
    for unit in select(discover_units(bundle.model), "layer"):
        weight = gen.uniform(0.1, 10)
        for rank, scheme in enumerate(schemes):
            score = weight * 2.0**rank * gen.uniform(0.8, 1.2)
            rows.append(
                {
                    "unit": unit.name,
                    "level": "layer",
                    "scheme": scheme,
                    "estimator": "isolation",
                    "score": score,
                    "ci_low": 0.9 * score,
                    "ci_high": 1.2 * score,
                    "samples": 2,
                    "cost_bytes": 0,
                    "seconds": 0.0,
                    "status": "ok",
                    "error": "",
                }
            )
    return ScoreTable.from_rows(rows)


@cache
def synthetic_problem() -> tuple[ModelBundle, ScoreTable, CostModel]:
    """The synthetic bundle, its score table and its cost model (built once per process)."""
    bundle = synthetic_bundle()
    return bundle, synthetic_table(bundle), build_cost_model(bundle, [*SYNTHETIC_SCHEMES, "keep"])


class StrategyTestCase(ABC):
    """What every SearchStrategy must do: respect the budget and any BOPs limit, return a
    valid plan for the model, give the same plan for the same seed, and refuse an infeasible
    budget naming the smallest feasible one."""

    @abstractmethod
    def config(self, seed: int) -> StrategyConfig:
        """The strategy's config with this seed (its class registered by @register_strategy)."""

    def context(self) -> dict[str, Any]:
        """What the strategy needs besides its config (a `workdir`, a `bundle`); none here."""
        return {}

    def strategy(self, seed: int = 0, limits: Limits = Limits()) -> SearchStrategy:
        return strategy_for(self.config(seed), estimator="isolation", limits=limits,
                            **self.context())  # fmt: skip

    def test_budget_is_respected_and_the_plan_is_valid(self) -> None:
        bundle, table, costs = synthetic_problem()
        for text in BUDGETS:
            budget = Budget.parse(text)
            plan = self.strategy(seed=3).solve(table, costs, budget)
            assert plan.predicted["weight_bytes"] <= budget.weight_bytes(costs) * (1 + 1e-9)
            assert set(plan.assignment) == set(quantizable_layers(bundle.model))
            plan.check_model(bundle.model, bundle.fingerprint)
            assert PrecisionPlan.from_json(plan.to_json()) == plan
            totals = costs.totals(costs.choice_of(plan.assignment))
            assert totals["weight_bytes"] == plan.predicted["weight_bytes"]
            left = 1 - totals["weight_bytes"] / budget.weight_bytes(costs)
            assert plan.predicted["budget_left"] == pytest.approx(left, abs=1e-12)

    def test_the_same_seed_gives_the_same_plan(self) -> None:
        _, table, costs = synthetic_problem()
        for text in ("4.2bits", "0.3x"):
            first = self.strategy(seed=3).solve(table, costs, text)
            assert self.strategy(seed=3).solve(table, costs, text) == first

    def test_an_infeasible_budget_names_the_smallest_feasible_one(self) -> None:
        _, table, costs = synthetic_problem()
        least = costs.bytes.min(axis=1).sum()
        smallest = Budget.parse("1bits").from_weight_bytes(least, costs)
        message = f"budget 1bits is infeasible: the smallest plan needs {smallest.value:.4g}bits"
        with pytest.raises(InfeasibleBudget, match=message) as refused:
            self.strategy().solve(table, costs, "1bits")
        assert refused.value.smallest is not None
        assert refused.value.smallest.value == pytest.approx(smallest.value)

    def test_a_budget_above_the_largest_plan_keeps_everything(self) -> None:
        _, table, costs = synthetic_problem()
        roomy = self.strategy().solve(table, costs, "40bits")
        assert "above the largest plan" in roomy.provenance["note"]
        assert roomy.predicted["score"] == 0.0

    def test_a_bops_limit_is_respected(self) -> None:
        _, table, costs = synthetic_problem()
        rows = np.arange(len(costs.units))
        cheap = costs.bops[rows, costs.bops.argmin(axis=1)].sum()
        bounded = self.strategy(limits=Limits(max_bops=cheap * 1.5)).solve(table, costs, "8bits")
        assert bounded.predicted["bops"] <= cheap * 1.5

    def test_exclusions_and_search_spaces_are_respected(self) -> None:
        from mixprec.allocation import AllocationProblem, allocate

        bundle, table, costs = synthetic_problem()
        by_size = sorted(costs.units, key=lambda u: costs.params[costs.units.index(u)])
        kept, narrowed = by_size[0], by_size[1]  # the smallest two: any budget still fits
        problem = AllocationProblem.build(
            table, bundle, exclude=[f"^{kept}$"], spaces={f"^{narrowed}$": ["w:int8"]}
        )
        for budget in ("4.2bits", "9bits"):
            plan = allocate(problem, budget, self.config(3), workdir=self.context().get("workdir"))
            assert (
                str(plan.assignment[kept]) == "keep" and str(plan.assignment[narrowed]) == "w:int8"
            )
            assert plan.predicted["weight_bytes"] <= Budget.parse(budget).weight_bytes(costs) * (
                1 + 1e-9
            )


class EstimatorTestCase(ABC):
    """What every SensitivityEstimator must do: an interval around its score over the
    calibration samples, zero for `keep`, more for fewer bits, blocks as well as layers, the
    same score for the same seed and for any order of work, and a clear error without data."""

    @abstractmethod
    def make_estimator(self, seed: int) -> SensitivityEstimator:
        """A fresh estimator with this seed."""

    def bundle(self) -> ModelBundle:
        """The model scored: the bundled digits-cnn (trained once, then cached)."""
        return load_model("digits-cnn")

    def units(self, bundle: ModelBundle) -> tuple[Unit, Unit, Unit]:
        """Two layers and a block of the model."""
        units = discover_units(bundle.model)
        layers = select(units, "layer")
        return layers[1], layers[-1], select(units, "block")[0]

    def score(self, seed: int, bundle: ModelBundle, unit: Unit, scheme: str) -> Any:
        return self.make_estimator(seed).score(bundle, unit, Scheme.parse(scheme),
                                               bundle.calibration)  # fmt: skip

    def test_the_score_lies_in_its_interval_over_every_sample(self) -> None:
        bundle = self.bundle()
        layer, _, _ = self.units(bundle)
        score = self.score(0, bundle, layer, "w:mxfp4")
        assert score.ci_low <= score.mean <= score.ci_high
        assert score.samples == sum(bundle.task.samples(b) for b in bundle.calibration)

    def test_keep_scores_zero(self) -> None:
        bundle = self.bundle()
        layer, _, _ = self.units(bundle)
        assert self.score(0, bundle, layer, "keep").mean == pytest.approx(0.0, abs=1e-12)

    def test_fewer_bits_score_higher(self) -> None:
        bundle = self.bundle()
        layer, _, _ = self.units(bundle)
        estimator = self.make_estimator(0)
        int8, int2 = (estimator.score(bundle, layer, Scheme.parse(s), bundle.calibration).mean
                      for s in ("w:int8", "w:int2"))  # fmt: skip
        assert 0 < int8 < int2

    def test_a_block_is_scored(self) -> None:
        bundle = self.bundle()
        _, _, block = self.units(bundle)
        assert block.level == "block"
        assert self.score(0, bundle, block, "w:int3").mean > 0

    def test_the_same_seed_gives_the_same_score(self) -> None:
        bundle = self.bundle()
        layer, _, _ = self.units(bundle)
        assert self.score(7, bundle, layer, "w:nvfp4") == self.score(7, bundle, layer, "w:nvfp4")

    def test_a_score_does_not_depend_on_what_was_scored_before(self) -> None:
        """Estimators that cache statistics (traces, diagonals, replayed inputs) must give B
        after A what they give B alone."""
        bundle = self.bundle()
        first, second, block = self.units(bundle)
        alone = self.score(0, bundle, second, "w:int4_g128")
        busy = self.make_estimator(0)
        for unit, scheme in ((first, "w:mxfp4"), (block, "w:int8"), (first, "w:int4_g128")):
            busy.score(bundle, unit, Scheme.parse(scheme), bundle.calibration)
        after = busy.score(bundle, second, Scheme.parse("w:int4_g128"), bundle.calibration)
        assert after == alone

    def test_an_empty_calibration_set_is_an_error(self) -> None:
        bundle = self.bundle()
        layer, _, _ = self.units(bundle)
        with pytest.raises(MixprecError, match="empty calibration set"):
            self.make_estimator(0).score(bundle, layer, Scheme.parse("w:int8"), [])
