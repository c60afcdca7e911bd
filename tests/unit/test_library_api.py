"""The library API: strategy configs and their registry, InfeasibleBudget, AllocationProblem,
allocate / pareto, and score() on model objects with the user's own batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mixprec
from mixprec.allocation import AllocationProblem, allocate, pareto
from mixprec.data import content_hash
from mixprec.errors import MixprecError
from mixprec.kernels import formats
from mixprec.search.base import SearchStrategy, register_strategy
from mixprec.search.configs import (
    GreedyConfig,
    ILPConfig,
    OptunaConfig,
    SACConfig,
    StrategyConfig,
    UniformConfig,
)
from mixprec.search.cost import Budget, InfeasibleBudget
from mixprec.sensitivity.base import SensitivityEstimator, register_estimator
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.configs import EstimatorConfig
from mixprec.strategies import strategies, strategy_config, strategy_for
from mixprec.tasks import CallableTask
from tests.helpers.search import digits_problem


def test_every_config_names_its_registered_strategy_and_version() -> None:
    registry = strategies()
    assert list(registry) == ["greedy", "ilp", "optuna", "sac", "uniform"]
    for config in (GreedyConfig(), ILPConfig(), OptunaConfig(), SACConfig(), UniformConfig()):
        strategy = registry[config.name]
        assert strategy.config_type is type(config) and strategy.name == config.name
        provenance = config.provenance()
        assert provenance["strategy"] == config.name
        assert provenance["strategy_version"] == type(config).VERSION >= 1


def test_a_pool_of_options_gives_each_config_only_its_own() -> None:
    pool = {"kappa": 0.5, "seed": 3, "solver": "highs", "trials": 7, "timesteps": 10}
    assert strategy_config("ilp", pool) == ILPConfig(kappa=0.5, seed=3, solver="highs")
    assert strategy_config("optuna", pool) == OptunaConfig(kappa=0.5, seed=3, trials=7)
    assert strategy_config("sac", pool) == SACConfig(kappa=0.5, seed=3, timesteps=10)
    assert strategy_config("greedy", pool) == GreedyConfig(kappa=0.5, seed=3)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ILPConfig(solver="gurobi"), "unknown solver 'gurobi'; valid: cbc, highs"),
        (lambda: ILPConfig(kappa=float("nan")), "kappa nan must be a finite number >= 0"),
        (lambda: ILPConfig(time_limit=-1), "time_limit -1 must be"),
        (lambda: OptunaConfig(trials=0), "trials 0 must be a finite number >= 1"),
        (lambda: SACConfig(gamma=2.0), "gamma 2.0 must be within"),
        (lambda: SACConfig(hidden=0), "hidden 0 must be"),
        (lambda: strategy_config("anneal"), "unknown method 'anneal'; valid: greedy, ilp"),
    ],
)
def test_bad_settings_are_one_line(make: object, message: str) -> None:
    with pytest.raises(MixprecError, match=message):
        make()  # type: ignore[operator]


def test_configs_are_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        ILPConfig("highs")  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ILPConfig().solver = "highs"  # type: ignore[misc]


def test_a_strategy_refuses_another_strategys_config() -> None:
    with pytest.raises(MixprecError, match="strategy 'ilp' takes a ILPConfig, not a GreedyConfig"):
        strategies()["ilp"](GreedyConfig())


def test_a_users_own_strategy_registers_and_a_clashing_name_is_refused() -> None:
    from dataclasses import dataclass
    from typing import ClassVar

    from mixprec.search import base
    from mixprec.search.uniform import solve_uniform

    @dataclass(frozen=True, kw_only=True)
    class WidestConfig(StrategyConfig):
        name: ClassVar[str] = "test-widest"

    try:

        @register_strategy(WidestConfig)
        class Widest(SearchStrategy):
            def select(self, scores, costs, constraints):  # type: ignore[no-untyped-def]
                return solve_uniform(scores, constraints)

        assert strategies()["test-widest"] is Widest
        bundle, table, _ = digits_problem()
        problem = AllocationProblem.build(table, bundle, "isolation")
        plan = allocate(problem, "6bits", WidestConfig())
        assert len(set(plan.assignment.values())) == 1 and plan.provenance["strategy"] == (
            "test-widest"
        )
        with pytest.raises(MixprecError, match="'test-widest' is registered already"):
            register_strategy(WidestConfig)(type("Other", (Widest,), {}))
    finally:
        base.STRATEGIES.forget("test-widest")


def test_a_users_own_estimator_registers_scores_and_keys_its_settings(tmp_path: Path) -> None:
    from dataclasses import dataclass
    from typing import ClassVar

    from mixprec.sensitivity import base

    @dataclass(frozen=True, kw_only=True)
    class WeightErrorConfig(EstimatorConfig):
        name: ClassVar[str] = "test-weight-error"
        power: float = 2.0

    try:

        @register_estimator(WeightErrorConfig)
        class WeightError(SensitivityEstimator):
            """The summed |Q(W) - W|^power of the unit's layers, the same for every sample."""

            needs_loss = False
            config: WeightErrorConfig

            def per_sample(self, bundle, unit, scheme, batches, calibration):  # type: ignore[no-untyped-def]
                layers = dict(bundle.model.named_modules())
                error = 0.0
                for name in unit.modules:
                    weight = layers[name].weight.detach()
                    changed = (
                        weight
                        if scheme.weight is None
                        else scheme.weight.quantize_dequantize(weight)
                    )
                    error += float((changed - weight).abs().pow(self.config.power).sum())
                return [error] * sum(bundle.task.samples(b) for b in batches)

        model = torch.nn.Sequential(
            torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)
        )
        batches = [torch.randn(8, 32) for _ in range(2)]
        cache = CellCache(tmp_path / "cells")
        table = mixprec.score(model.eval(), batches, ["w:int8", "w:int2"], ["test-weight-error"],
                              ["layer"], cache=cache)  # fmt: skip
        frame = table.frame.set_index(["unit", "scheme"])["score"]
        assert frame["0", "w:int2"] > frame["0", "w:int8"] > 0
        weight = model[0].weight.detach()
        int8 = formats.get("int8").quantize_dequantize(weight)
        assert frame["0", "w:int8"] == pytest.approx(float((int8 - weight).pow(2).sum()), rel=1e-6)
        with pytest.raises(MixprecError, match="'test-weight-error' is registered already"):
            register_estimator(WeightErrorConfig)(type("Other", (WeightError,), {}))
        assert WeightError(WeightErrorConfig(power=1.0)).params != WeightError().params
        # a config object (or a table) reaches the estimator, and its settings key the cache
        for entry in (WeightErrorConfig(power=1.0), {"name": "test-weight-error", "power": 1.0}):
            again = mixprec.score(model, batches, ["w:int8"], [entry], ["layer"], cache=cache)
            l1 = float((int8 - weight).abs().sum())
            assert again.frame.set_index("unit")["score"]["0"] == pytest.approx(l1, rel=1e-6)
        # power 2: 2 schemes x 2 layers; power 1 (given twice, scored once): w:int8 x 2 layers
        assert len(list((tmp_path / "cells").rglob("*.json"))) == 4 + 2
    finally:
        base.ESTIMATORS.forget("test-weight-error")


def test_infeasible_budgets_carry_the_smallest_that_fits() -> None:
    bundle, table, _ = digits_problem()
    problem = AllocationProblem.build(table, bundle, "isolation")
    with pytest.raises(InfeasibleBudget) as caught:
        allocate(problem, "1bits")
    smallest = caught.value.smallest
    assert isinstance(smallest, Budget) and smallest.unit == "bits" and smallest.value > 1
    assert allocate(problem, Budget(smallest.value * (1 + 1e-9), "bits")).assignment
    assert isinstance(caught.value, MixprecError)  # the CLI still prints it as one line


def test_the_problem_is_built_once_and_serves_every_budget_and_strategy(tmp_path: Path) -> None:
    bundle, table, _ = digits_problem()
    problem = AllocationProblem.build(table, bundle, "isolation", provenance={"table": "t"})
    assert problem.scores() is problem.scores()  # one matrix per kappa, kept
    ilp = allocate(problem, "4.5bits")
    assert ilp.provenance["table"] == "t" and ilp.provenance["strategy"] == "ilp"
    optimum = allocate(problem, "4.5bits", ILPConfig(fill=1.0))  # the default fills the budget
    for config in (GreedyConfig(), UniformConfig(), OptunaConfig(trials=4)):
        other = allocate(problem, "4.5bits", config, workdir=tmp_path)
        assert other.predicted["score"] >= optimum.predicted["score"] - 1e-9
    assert (tmp_path / "optuna.sqlite3").is_file()  # the work folder holds Optuna's trials
    frame = pareto(problem, ["1bits", "4.5bits", "6bits"])
    assert list(frame["status"]) == ["infeasible", "ok", "ok"]
    assert "smallest plan needs" in frame["reason"].iloc[0]
    assert frame["predicted_score"].iloc[1] == ilp.predicted["score"]


def test_candidates_can_be_narrowed_to_scored_schemes() -> None:
    bundle, table, _ = digits_problem()
    scored = sorted(set(table.frame["scheme"]))
    narrow = AllocationProblem.build(table, bundle, "isolation", schemes=scored[:2])
    assert narrow.costs.schemes == tuple(scored[:2])  # and no `keep`
    plan = allocate(narrow, "8bits")
    assert set(plan.assignment.values()) <= set(scored[:2])
    with pytest.raises(MixprecError, match=r"^scheme 'w:fp8_e5m2' has no isolation scores"):
        AllocationProblem.build(table, bundle, "isolation", schemes=["w:fp8_e5m2"])


def test_measured_objectives_get_the_problems_model() -> None:
    bundle, table, _ = digits_problem()
    problem = AllocationProblem.build(table, bundle, "isolation")
    plan = allocate(problem, "6bits", OptunaConfig(trials=2, objective="measured"))
    assert plan.provenance["objective"] == "measured"
    with pytest.raises(MixprecError, match="measured objective of optuna needs the model"):
        strategy_for(OptunaConfig(objective="measured"))


def test_a_table_of_another_model_is_refused() -> None:
    _, table, _ = digits_problem()
    other = torch.nn.Sequential(torch.nn.Linear(4, 4)).eval()
    data = mixprec.Calibration([torch.randn(2, 4)])
    with pytest.raises(MixprecError, match=r"names layers .* does not have"):
        AllocationProblem.build(table, other, "isolation", data=data)


def tiny_classifier() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    inputs = torch.randn(64, 32)
    labels = torch.randint(0, 4, (64,))
    return model, [(inputs[i : i + 16], labels[i : i + 16]) for i in range(0, 64, 16)]


def test_score_takes_plain_batches_with_modelopt_style_callables(tmp_path: Path) -> None:
    model, batches = tiny_classifier()
    cache = CellCache(tmp_path)
    table = mixprec.score(
        model, batches, "w:int8,w:mxfp4", ["fisher", "isolation"], ["layer"],
        forward=lambda m, b: m(b[0]), loss=lambda out, b: F.cross_entropy(out, b[1]),
        cache=cache,
    )  # fmt: skip
    frame = table.frame
    assert set(frame["unit"]) == {"0", "2"} and (frame["status"] == "ok").all()
    assert (frame["score"] > 0).all()  # quantizing raises the loss and moves the output
    int8 = frame[(frame["scheme"] == "w:int8") & (frame["estimator"] == "isolation")]
    mxfp4 = frame[(frame["scheme"] == "w:mxfp4") & (frame["estimator"] == "isolation")]
    assert (int8["score"].to_numpy() < mxfp4["score"].to_numpy()).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, b: mixprec.score(m), "an nn.Module needs its data"),
        (lambda m, b: mixprec.score(m.train(), b), "is in training mode"),
        (lambda m, b: mixprec.score(m, b, workers=2), "scored in this process"),
        (lambda m, b: mixprec.score("digits-cnn", loss=F.mse_loss), "without data"),
        (
            lambda m, b: mixprec.score(m, b, estimators=["fisher"], forward=lambda m, x: m(x[0])),
            "estimator 'fisher' needs a task loss",
        ),
        (lambda m, b: mixprec.score(m, b), "forward pass on a calibration batch raised TypeError"),
        (lambda m, b: mixprec.score(m, []), "Calibration needs at least one batch"),
        (lambda m, b: mixprec.score(m, [[1, 2]]), "must hold tensors"),
        (lambda m, b: mixprec.score(42), "must be an nn.Module, a ModelBundle or a source"),
    ],
)
def test_score_errors_are_one_line(call: object, message: str) -> None:
    model, batches = tiny_classifier()
    with pytest.raises(MixprecError, match=message):
        call(model, batches)  # type: ignore[operator]


def test_the_default_forward_fits_the_batch() -> None:
    class TwoInputs(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a + b

    task = CallableTask()
    model, x = TwoInputs(), torch.ones(2, 3)
    assert torch.equal(task.outputs(model, {"a": x, "b": x}), 2 * x)  # model(**batch)
    assert torch.equal(task.outputs(model, (x, x)), 2 * x)  # model(*batch)
    assert task.samples({"a": x, "b": x}) == 2 and task.samples((x, x)) == 2
    with pytest.raises(MixprecError, match="unknown divergence 'l1'; valid: mse, kl"):
        CallableTask(divergence="l1")


def test_batch_hashes_name_their_content() -> None:
    x = torch.arange(6.0).reshape(2, 3)
    assert content_hash([(x, x)]) == content_hash([[x, x]]) != content_hash([(x, x + 1)])
    mapping = content_hash([{"inputs": x}])
    assert mapping != content_hash([x]) and mapping == content_hash([{"inputs": x.clone()}])
