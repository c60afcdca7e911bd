"""What every SearchStrategy must do: respect the budget, return a valid plan for this model,
give the same plan for the same seed, and refuse an infeasible budget with the smallest one."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from mixprec.errors import MixprecError
from mixprec.models import ModelBundle
from mixprec.plan import PrecisionPlan
from mixprec.search.base import Limits, SearchStrategy
from mixprec.search.cost import Budget, CostModel
from mixprec.sensitivity.table import ScoreTable
from mixprec.units import quantizable_layers

BUDGETS = ("2.5bits", "4.2bits", "6bits", "9bits", "0.3x")


def check_strategy(
    make: Callable[..., SearchStrategy], bundle: ModelBundle, table: ScoreTable, costs: CostModel
) -> None:
    for text in BUDGETS:
        budget = Budget.parse(text)
        plan = make(seed=3).solve(table, costs, budget)
        assert plan.predicted["weight_bytes"] <= budget.weight_bytes(costs) * (1 + 1e-9)
        assert set(plan.assignment) == set(quantizable_layers(bundle.model))
        plan.check_model(bundle.model, bundle.fingerprint)
        assert PrecisionPlan.from_json(plan.to_json()) == plan
        choice = costs.choice_of(plan.assignment)
        assert costs.totals(choice)["weight_bytes"] == plan.predicted["weight_bytes"]
        assert make(seed=3).solve(table, costs, budget) == plan  # deterministic for a seed
    least = costs.bytes.min(axis=1).sum()
    smallest = Budget.parse("1bits").from_weight_bytes(least, costs).value
    with pytest.raises(
        MixprecError,
        match=f"budget 1bits is infeasible: the smallest plan needs {smallest:.4g}bits",
    ):
        make().solve(table, costs, "1bits")
    roomy = make().solve(table, costs, "40bits")
    assert "above the largest plan" in roomy.provenance["note"]
    assert roomy.predicted["score"] == 0.0  # everything kept
    rows = np.arange(len(costs.units))
    cheap = costs.bops[rows, costs.bops.argmin(axis=1)].sum()
    bounded = make(limits=Limits(max_bops=cheap * 1.5)).solve(table, costs, "8bits")
    assert bounded.predicted["bops"] <= cheap * 1.5
