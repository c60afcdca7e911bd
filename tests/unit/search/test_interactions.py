"""Measured pairwise interaction terms, and the ILP option that prices them."""

from __future__ import annotations

import pytest

from mixprec.allocation import AllocationProblem, allocate
from mixprec.config import parse_config
from mixprec.errors import MixprecError
from mixprec.models import load_model
from mixprec.search.configs import ILPConfig
from mixprec.search.ilp import total_score
from mixprec.sensitivity.cells import AnalysisSpec
from mixprec.sensitivity.pairs import block_pairs, interaction_terms, measure_interactions
from mixprec.sensitivity.runner import analyze

SCHEMES = ("w:int3_g128", "w:int8")


@pytest.fixture(scope="module")
def tiny_gpt_problem() -> AllocationProblem:
    bundle = load_model("tiny-gpt")
    spec = AnalysisSpec("tiny-gpt", SCHEMES, ("isolation",), ("layer",), calib_batches=2)
    table = analyze(spec, progress=False)
    return AllocationProblem.build(table, bundle, "isolation", exclude=["none"])


def test_pairs_are_the_units_of_one_block_and_their_terms_are_exact_differences(
    tiny_gpt_problem: AllocationProblem,
) -> None:
    costs = tiny_gpt_problem.costs
    pairs = block_pairs(costs)
    assert len(pairs) == 4 * 6  # four blocks of four units: six pairs each; the head: none
    assert all(costs.block_of[a] == costs.block_of[b] for a, b in pairs)
    chosen = pairs[:2]
    frame = measure_interactions(tiny_gpt_problem.bundle, costs, SCHEMES, chosen, calib_batches=2)
    assert len(frame) == 2 * len(SCHEMES)
    scores = tiny_gpt_problem.table.frame.set_index(["unit", "scheme"])["score"]
    for row in frame.itertuples():
        alone = scores[row.first, row.scheme] + scores[row.second, row.scheme]
        assert row.additive == pytest.approx(alone, rel=1e-9)
        assert row.interaction == pytest.approx(row.joint - row.additive, rel=1e-6, abs=1e-12)
        assert row.ci_low <= row.interaction <= row.ci_high
        assert row.kept == (row.ci_low > 0 or row.ci_high < 0)


def test_the_ilp_prices_the_kept_terms_exactly(tiny_gpt_problem: AllocationProblem) -> None:
    costs = tiny_gpt_problem.costs
    frame = measure_interactions(tiny_gpt_problem.bundle, costs, SCHEMES, calib_batches=2)
    frame = frame.assign(kept=True, interaction=frame["interaction"] * 50)  # make them matter
    problem = tiny_gpt_problem.with_interactions(frame)
    terms = interaction_terms(frame, costs)
    assert len(terms) == len(frame)
    additive = allocate(problem, "5bits")
    paired = allocate(problem, "5bits", ILPConfig(interactions=True))
    for plan in (additive, paired):
        choice = costs.choice_of(plan.assignment)
        assert plan.predicted["weight_bytes"] <= 5 / 8 * costs.total_params
    choice = costs.choice_of(paired.assignment)
    objective = total_score(problem.scores(), choice, terms)
    assert paired.predicted["score"] == pytest.approx(objective, rel=1e-9)
    ignored = total_score(problem.scores(), costs.choice_of(additive.assignment), terms)
    assert objective <= ignored * (1 + 1e-9)  # the additive plan, priced with the terms


def test_interactions_without_terms_or_on_another_strategy_are_one_line(
    tiny_gpt_problem: AllocationProblem,
) -> None:
    with pytest.raises(MixprecError, match="ilp with interactions needs measured pairwise"):
        allocate(tiny_gpt_problem, "5bits", ILPConfig(interactions=True))
    with pytest.raises(MixprecError, match="interactions"):
        parse_config({"model": "tiny-gpt", "output": "runs/x",
                      "methods": [{"name": "greedy", "interactions": True}]})  # fmt: skip
    with pytest.raises(MixprecError, match="not a candidate of the problem"):
        measure_interactions(tiny_gpt_problem.bundle, tiny_gpt_problem.costs, ["w:mxfp4"])
