"""ILP, greedy and Optuna pass the strategy conformance suite; the ILP is never beaten."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixprec.errors import MixprecError
from mixprec.search.configs import (
    GreedyConfig,
    ILPConfig,
    OptunaConfig,
    SACConfig,
    StrategyConfig,
    UniformConfig,
)
from mixprec.search.ilp import ILPStrategy
from mixprec.search.optuna_search import OptunaStrategy, repair
from mixprec.strategies import strategies, strategy_config
from mixprec.testing import StrategyTestCase
from tests.helpers.search import digits_problem, strategy


class TestILPWithCBC(StrategyTestCase):
    def config(self, seed: int) -> StrategyConfig:
        return ILPConfig(seed=seed)


class TestILPWithHiGHS(StrategyTestCase):
    def config(self, seed: int) -> StrategyConfig:
        return ILPConfig(solver="highs", seed=seed)


class TestGreedy(StrategyTestCase):
    def config(self, seed: int) -> StrategyConfig:
        return GreedyConfig(seed=seed)


class TestOptunaTPE(StrategyTestCase):
    def config(self, seed: int) -> StrategyConfig:
        return OptunaConfig(trials=8, seed=seed)


class TestOptunaNSGA2(StrategyTestCase):
    def config(self, seed: int) -> StrategyConfig:
        return OptunaConfig(trials=8, sampler="nsga2", seed=seed)


class TestSAC(StrategyTestCase):
    def config(self, seed: int) -> StrategyConfig:
        return SACConfig(timesteps=64, hidden=16, seed=seed)


class TestUniform(StrategyTestCase):
    def config(self, seed: int) -> StrategyConfig:
        return UniformConfig(seed=seed)


def test_every_registered_strategy_is_in_the_conformance_suite() -> None:
    covered = {suite().config(0).name for suite in StrategyTestCase.__subclasses__()}
    assert covered == set(strategies())


def test_ilp_is_at_least_as_good_as_greedy_and_optuna() -> None:
    """Unrestricted, the ILP beats every plan; filling the budget, every plan as full."""
    _, table, costs = digits_problem()
    fill = ILPConfig().fill
    for budget in ("3bits", "4.5bits", "6bits"):
        optimum = strategy("ilp", fill=1.0).solve(table, costs, budget).predicted
        filled = strategy("ilp").solve(table, costs, budget).predicted
        assert filled["budget_left"] <= fill or filled["score"] == optimum["score"]
        others = ("greedy", "uniform")
        for other in (*map(strategy, others), strategy("optuna", trials=10)):
            plan = other.solve(table, costs, budget).predicted
            assert plan["score"] >= optimum["score"] - 1e-9
            if plan["budget_left"] <= fill:
                assert plan["score"] >= filled["score"] - 1e-9


def test_robust_plan_weighs_the_interval() -> None:
    _, table, costs = digits_problem()
    plain = ILPStrategy().solve(table, costs, "4.5bits")
    robust = ILPStrategy(ILPConfig(kappa=2.0)).solve(table, costs, "4.5bits")
    assert robust.provenance["kappa"] == 2.0
    # synthetic intervals are 0.15 * score wide each side, so kappa scales every score alike
    assert robust.assignment == plain.assignment
    assert robust.predicted["score"] == pytest.approx(plain.predicted["score"] * 1.3)


def test_optuna_resumes_from_its_sqlite_storage(tmp_path: Path) -> None:
    _, table, costs = digits_problem()
    storage = tmp_path / "optuna.sqlite3"
    first = OptunaStrategy(OptunaConfig(trials=4), workdir=tmp_path).solve(table, costs, "4bits")
    resumed = OptunaStrategy(OptunaConfig(trials=6), workdir=tmp_path).solve(table, costs, "4bits")
    fresh = OptunaStrategy(OptunaConfig(trials=6)).solve(table, costs, "4bits")
    assert resumed == fresh  # 4 stored trials + 2 more = one run of 6
    assert first.predicted["score"] >= resumed.predicted["score"]
    import optuna

    [summary] = optuna.get_all_study_summaries(f"sqlite:///{storage}")
    assert summary.n_trials == 6


def test_optuna_first_trial_is_the_ilp_plan() -> None:
    _, table, costs = digits_problem()
    ilp = ILPStrategy(ILPConfig(fill=1.0)).solve(table, costs, "4bits")  # the score's optimum
    assert (
        OptunaStrategy(OptunaConfig(trials=1)).solve(table, costs, "4bits").assignment
        == ilp.assignment
    )


def test_repair_brings_an_over_budget_plan_inside() -> None:
    import numpy as np

    scores = np.array([[3.0, 1.0, 0.0], [4.0, 2.0, 0.0]])
    costs = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])
    assert repair([2, 2], scores, [(costs, 4.0)]) == [1, 1]
    assert repair([2, 2], scores, [(costs, 3.0)]) == [0, 1]
    with pytest.raises(MixprecError, match="no plan within every limit"):
        repair([2, 2], scores, [(costs, 1.0)])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sampler": "cmaes"}, "unknown sampler 'cmaes'; valid: tpe, nsga2"),
        ({"objective": "vibes"}, "unknown objective 'vibes'; valid: predicted, measured"),
        ({"objective": "measured"}, "the measured objective of optuna needs the model"),
        ({"trials": 0}, "trials 0 must be a finite number >= 1"),
    ],
)
def test_bad_optuna_options(options: dict, message: str) -> None:
    with pytest.raises(MixprecError, match=message):
        OptunaStrategy(OptunaConfig(**options))


def test_unknown_method_and_estimator() -> None:
    _, table, costs = digits_problem()
    with pytest.raises(
        MixprecError, match="unknown method 'anneal'; valid: greedy, ilp, optuna, sac, uniform"
    ):
        strategy_config("anneal")
    with pytest.raises(
        MixprecError, match="no layer scores for estimator 'fisher'; it has: isolation"
    ):
        strategy("ilp", estimator="fisher").solve(table, costs, "4bits")


def test_optuna_searches_one_scheme_per_block_when_asked(tmp_path: Path) -> None:
    import optuna

    _, table, costs = digits_problem()
    blocks = set(costs.block_of.values())
    assert 1 < len(blocks) < len(costs.units)
    storage = tmp_path / "optuna.sqlite3"
    blockwise = OptunaStrategy(OptunaConfig(trials=5, granularity="block"), workdir=tmp_path)
    plan = blockwise.solve(table, costs, "40bits")  # roomy: no repair, blocks stay uniform
    [summary] = optuna.get_all_study_summaries(f"sqlite:///{storage}")
    study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{storage}")
    assert all(len(t.params) == len(blocks) for t in study.trials)
    for block in blocks:
        members = [m for u in costs.units if costs.block_of[u] == block for m in costs.members[u]]
        assert len({plan.assignment[m] for m in members}) == 1
    with pytest.raises(MixprecError, match="unknown granularity 'layer'"):
        OptunaConfig(granularity="layer")


def test_uniform_takes_the_best_single_scheme_that_fits() -> None:
    import numpy as np

    from mixprec.search.uniform import solve_uniform

    scores = np.array([[5.0, 1.0, 0.0], [4.0, 2.0, np.inf], [1.0, 0.5, 0.0]])
    costs = np.array([[1.0, 2, 4], [1, 2, 4], [1, 2, 4]])
    assert solve_uniform(scores, [(costs, 6.0)]).choice == (1, 1, 1)  # column 2 is not scored
    assert solve_uniform(scores, [(costs, 5.0)]).choice == (0, 0, 0)
    assert solve_uniform(scores, [(costs, 2.0)]).choice == ()
