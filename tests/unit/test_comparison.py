"""Measured metrics with intervals over evaluation samples, paired comparisons, and plans that
are never worse than a uniform plan within the same budget."""

from __future__ import annotations

import numpy as np
import pytest

from mixprec.allocation import AllocationProblem, allocate, uniform_plans
from mixprec.comparison import PerSample, compare, interval, mean_interval
from mixprec.errors import MixprecError
from mixprec.metrics import evaluate
from mixprec.models import load_model
from mixprec.search.configs import UniformConfig
from mixprec.search.cost import Budget
from mixprec.sensitivity.cells import AnalysisSpec
from mixprec.sensitivity.runner import analyze
from mixprec.sensitivity.table import ScoreTable
from mixprec.units import quantizable_layers


@pytest.mark.parametrize(("model", "metric"), [("digits-cnn", "accuracy"),
                                               ("tiny-gpt", "perplexity")])  # fmt: skip
def test_per_sample_values_give_back_the_metric_and_its_interval_holds_it(
    model: str, metric: str
) -> None:
    bundle = load_model(model)
    layers = quantizable_layers(bundle.model)
    measured = evaluate(bundle, dict.fromkeys(layers, "w:int4_g128"))
    assert bundle.task.primary_metric() == metric
    for name, values in measured.per_sample.items():
        assert float(values.value()) == pytest.approx(measured.metrics[name], rel=1e-6)
        low, high = measured.intervals()[name]
        assert low <= measured.metrics[name] <= high
    assert set(measured.to_json()["intervals"]) == set(measured.per_sample)  # type: ignore[arg-type]


def test_the_95_percent_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    gen = np.random.default_rng(0)
    covered = 0
    for seed in range(200):
        hits = (gen.random(300) < 0.8).astype(float)
        low, high = interval(PerSample(hits, np.ones_like(hits)), seed=seed)
        covered += low <= 0.8 <= high
    assert 180 <= covered <= 199  # 95% of 200 is 190; a binomial spread of about 3


def test_the_interval_of_a_skewed_mean_still_covers_about_95_percent_of_the_time() -> None:
    """Lognormal(0, 1.5): skew about 30, like per-sample sensitivity scores, where a plain
    percentile interval of 100 samples covers about 88%."""
    gen = np.random.default_rng(2)
    truth = float(np.exp(1.5**2 / 2))
    covered = 0
    for seed in range(300):
        values = gen.lognormal(0.0, 1.5, 100)
        low, high = mean_interval(values, seed)
        assert values.min() <= low <= values.mean() <= high <= values.max()
        covered += low <= truth <= high
    assert 267 <= covered <= 297  # 95% of 300 is 285; a binomial spread of about 4


def test_the_interval_of_equal_values_is_that_value() -> None:
    assert mean_interval(np.full(5, 2.5), seed=0) == (2.5, 2.5)


def test_two_values_give_their_range_not_a_point() -> None:
    """Half the resamples of two values repeat one of them (no spread to studentize by)."""
    assert mean_interval(np.array([1.0, 3.0]), seed=0) == (1.0, 3.0)


def test_paired_comparisons_say_better_worse_or_not_distinguishable() -> None:
    gen = np.random.default_rng(1)
    base = gen.normal(2.0, 1.0, 400)  # per-sequence NLL sums, 1 token each: perplexity
    ones = np.ones_like(base)
    plan, same = PerSample(base, ones, "exp"), PerSample(base.copy(), ones, "exp")
    lower = PerSample(base - 0.05, ones, "exp")  # every sequence a little better
    noisy = PerSample(base + gen.normal(0, 1.0, 400) * 0.01, ones, "exp")
    assert compare("perplexity", lower, plan).verdict == "better"
    assert compare("perplexity", plan, lower).verdict == "worse"
    assert compare("perplexity", plan, same).verdict == "not distinguishable"
    assert compare("perplexity", plan, noisy).verdict == "not distinguishable"
    accuracy = PerSample(np.r_[np.ones(300), np.zeros(100)], np.ones(400))
    fewer = PerSample(np.r_[np.ones(250), np.zeros(150)], np.ones(400))
    verdict = compare("accuracy", accuracy, fewer)
    assert verdict.verdict == "better" and verdict.difference == pytest.approx(0.125)
    assert verdict.ci_low <= 0.125 <= verdict.ci_high and "better (accuracy +0.125" in str(verdict)
    with pytest.raises(MixprecError, match="measured on 400 and 300 samples"):
        compare("accuracy", accuracy, PerSample(np.ones(300), np.ones(300)))


@pytest.fixture(scope="module")
def digits_problem() -> AllocationProblem:
    bundle = load_model("digits-cnn")
    spec = AnalysisSpec("digits-cnn", ("w:int8", "w:int2"), ("isolation",), ("layer",))
    table = analyze(spec, progress=False)
    return AllocationProblem.build(table, bundle, "isolation")


def test_a_mixed_plan_that_measures_worse_than_a_uniform_one_is_replaced(
    digits_problem: AllocationProblem,
) -> None:
    frame = digits_problem.table.frame
    fooled = frame.assign(score=np.where(frame["scheme"] == "w:int2", 0.0, 1.0))  # int2: free
    problem = AllocationProblem.build(ScoreTable(fooled), digits_problem.bundle, "isolation")
    uniform = uniform_plans(problem, Budget.parse("9bits"))
    assert set(uniform) == {"w:int8", "w:int2"}
    plan = allocate(problem, "9bits", measure=True)
    assert set(plan.assignment.values()) == {"w:int8"}  # the uniform INT8 plan, not INT2's
    assert "uniform w:int8 measured better accuracy" in plan.provenance["note"]
    assert plan.provenance["strategy"] == "uniform"
    assert (
        plan.measured["accuracy_low"] <= plan.measured["accuracy"] <= plan.measured["accuracy_high"]
    )


def test_a_mixed_plan_that_holds_lists_its_uniform_comparisons(
    digits_problem: AllocationProblem,
) -> None:
    plan = allocate(digits_problem, "5bits", measure=True)
    assert plan.provenance["strategy"] == "ilp"
    assert "vs uniform w:int2" in plan.provenance["uniform"]
    assert any(verdict in plan.provenance["uniform"] for verdict in
               ("better", "worse", "not distinguishable"))  # fmt: skip
    alone = allocate(digits_problem, "5bits", UniformConfig(), measure=True)
    assert "uniform" not in alone.provenance  # a uniform plan is not compared with itself
