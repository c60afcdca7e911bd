"""AllocationEnv: passes SB3's checker, never ends over budget, deterministic, well-formed."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mixprec.agents.env import GAIN, AllocationEnv
from mixprec.errors import MixprecError
from mixprec.search.greedy import solve_greedy


def problem(units: int = 7, schemes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)
    bits = np.sort(gen.uniform(2, 16, schemes))
    params = gen.integers(100, 5000, units)
    scores = gen.lognormal(0, 1, units)[:, None] * 4.0 ** (-bits)[None, :]
    return scores, params[:, None] * bits[None, :] / 8


def make_env(fraction: float = 0.4, seed: int = 0, bops: bool = False) -> AllocationEnv:
    scores, costs = problem(seed=seed)
    limit = costs.min(axis=1).sum() + fraction * (costs.max(axis=1).sum() - costs.min(axis=1).sum())
    constraints = [(costs, float(limit))]
    if bops:
        factors = np.random.default_rng(seed).uniform(0.3, 3.0, costs.shape[1])
        other = costs * factors[None, :]  # another ranking of the schemes: a real trade-off
        least, most = other.min(axis=1).sum(), other.max(axis=1).sum()
        constraints.append((other, float(least + 0.5 * (most - least))))
    fallback = solve_greedy(scores, constraints).choice
    assert fallback, "the test instance must have a feasible greedy plan"
    features = np.random.default_rng(1).normal(size=(len(scores), 11)).astype(np.float32)
    return AllocationEnv(scores, constraints, features, fallback)


def test_passes_the_stable_baselines3_checker_without_warnings() -> None:
    from stable_baselines3.common.env_checker import check_env

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(make_env(), warn=True)


@pytest.mark.parametrize("bops", [False, True])
def test_random_rollouts_never_exceed_any_constraint(bops: bool) -> None:
    for seed in range(5):
        env = make_env(fraction=0.1 + 0.2 * seed, seed=seed, bops=bops)
        env.action_space.seed(seed)
        for _ in range(40):
            env.reset(seed=seed)
            done, info = False, {}
            while not done:
                _, _, done, _, info = env.step(env.action_space.sample())
            rows = np.arange(len(info["choice"]))
            for cost, limit in env.constraints:
                assert cost[rows, list(info["choice"])].sum() <= limit * (1 + 1e-9)


def test_zero_actions_give_the_greedy_plan_and_others_move_along_the_frontier() -> None:
    env = make_env(fraction=0.5)
    env.reset()
    done, info = False, {}
    while not done:
        _, _, done, _, info = env.step(np.zeros(1, dtype=np.float32))
    assert info["choice"] == tuple(int(c) for c in env.fallback)
    env.reset()
    options = [k for k in env.frontier[0] if env.allowed(0, k)]
    here = options.index(env.plan[0])
    for value, moved in ((-1.0, -3), (-0.5, -2), (-0.2, -1), (0.1, 0), (0.3, 1), (1.0, 3)):
        assert env.project(value) == options[int(np.clip(here + moved, 0, len(options) - 1))]


def test_the_frontier_holds_no_dominated_scheme() -> None:
    env = make_env()
    cost = env.constraints[0][0]
    for unit, kept in enumerate(env.frontier):
        assert kept == sorted(kept, key=lambda k: cost[unit, k])
        assert all(np.diff(env.scores[unit, kept]) < 0)
        for k in set(range(env.scores.shape[1])) - set(kept):
            assert any(cost[unit, j] <= cost[unit, k] and env.scores[unit, j] <= env.scores[unit, k]
                       for j in kept)  # fmt: skip


@pytest.mark.parametrize("value", [-0.6, 0.0, 0.3, 0.9])
def test_returns_are_the_plans_improvement_over_the_fallback(value: float) -> None:
    env = make_env()
    env.reset(seed=0)
    total, done, info = 0.0, False, {}
    while not done:
        _, reward, done, _, info = env.step(np.array([value], dtype=np.float32))
        total += reward
    rows = np.arange(len(info["choice"]))
    plan = env.scores[rows, list(info["choice"])].sum()
    assert total == pytest.approx(GAIN * (1 - plan / env.scale))


def test_an_outcome_replaces_the_prediction_in_the_return() -> None:
    scores, costs = problem()
    limit = float(costs.min(axis=1).sum() * 1.5)
    fallback = solve_greedy(scores, [(costs, limit)]).choice
    env = AllocationEnv(scores, [(costs, limit)], np.zeros((7, 2)), fallback, lambda c: 0.25)
    env.reset()
    total, done = 0.0, False
    while not done:
        _, reward, done, _, _ = env.step(np.array([-0.4], dtype=np.float32))
        total += reward
    assert total == pytest.approx(GAIN * (1 - 0.25))


def test_observations_are_the_same_for_the_same_actions() -> None:
    first, second = make_env(), make_env()
    for env in (first, second):
        env.reset(seed=3)
    for value in np.linspace(-1, 1, 7):
        a = first.step(np.array([value], dtype=np.float32))[0]
        b = second.step(np.array([value], dtype=np.float32))[0]
        assert np.array_equal(a, b) and first.observation_space.contains(a)


def test_an_infeasible_fallback_is_refused() -> None:
    scores, costs = problem()
    with pytest.raises(MixprecError, match="fallback plan must be scored and within"):
        AllocationEnv(scores, [(costs, 1.0)], np.zeros((7, 3)), [0] * 7)
