"""SACStrategy passes the strategies' conformance suite; policies save and load safely."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from mixprec.errors import MixprecError
from mixprec.search.base import make_strategy
from tests.unit.search.conformance import check_strategy
from tests.unit.search.helpers import digits_problem


def test_conformance() -> None:
    bundle, table, costs = digits_problem()
    check_strategy(partial(make_strategy, "sac", timesteps=64, hidden=16), bundle, table, costs)


def test_policy_round_trip_and_csv_logs(tmp_path: Path) -> None:
    _, table, costs = digits_problem()
    trained = make_strategy("sac", timesteps=300, hidden=16, run_dir=tmp_path, seed=2)
    plan = trained.solve(table, costs, "4.5bits")
    policy = tmp_path / "sac_policy.pt"
    assert policy.is_file() and (tmp_path / "sac_logs" / "progress.csv").is_file()
    reused = make_strategy("sac", timesteps=0, hidden=16, policy=policy, seed=2)
    again = reused.solve(table, costs, "4.5bits")
    assert again.assignment == plan.assignment and again.provenance["policy"] == str(policy)


def test_a_policy_for_another_scheme_count_is_refused(tmp_path: Path) -> None:
    _, table, costs = digits_problem()
    policy = tmp_path / "sac_policy.pt"
    make_strategy("sac", timesteps=64, hidden=16, run_dir=tmp_path).solve(table, costs, "6bits")
    policy.with_suffix(".json").write_text('{"version": 1, "observation_size": 3}')
    with pytest.raises(MixprecError, match="trained on 3 observation values"):
        make_strategy("sac", timesteps=0, hidden=16, policy=policy).solve(table, costs, "6bits")
    with pytest.raises(MixprecError, match="no policy at"):
        make_strategy("sac", policy=tmp_path / "absent.pt").solve(table, costs, "6bits")


def test_short_training_finds_the_unique_optimum_that_greedy_misses() -> None:
    """4 units x 3 schemes: greedy takes the best ratio first (unit 1) and ends at 124; the
    only plan at 88 (checked by enumeration) needs unit 0 upgraded and unit 3 left cheap."""
    import itertools

    import numpy as np

    from mixprec.agents.env import AllocationEnv
    from mixprec.agents.sac import SACStrategy, rollout
    from mixprec.search.greedy import solve_greedy

    scores = np.array([[100.0, 60.0, 0.0], [70.0, 0.0, 0.0], [30.0, 20.0, 0.0], [8.0, 4.0, 0.0]])
    costs = np.array([[10.0, 20, 30], [10, 16, 30], [10, 14, 30], [10, 12, 30]])
    limit = 60.0
    rows = np.arange(4)
    plans = sorted(
        (float(scores[rows, list(c)].sum()), c)
        for c in itertools.product(range(3), repeat=4)
        if costs[rows, list(c)].sum() <= limit
    )
    assert plans[0] == (88.0, (1, 1, 1, 0)) and plans[1][0] > 88.0  # unique optimum
    greedy = solve_greedy(scores, [(costs, limit)])
    assert greedy.objective == 124.0
    features = np.zeros((4, 11), dtype=np.float32)
    features[:, 0] = np.linspace(0, 1, 4)
    env = AllocationEnv(scores, [(costs, limit)], features, greedy.choice)
    agent = SACStrategy(timesteps=1000, seed=0).agent(env)
    agent.learn(1000)
    assert rollout(agent, env) == (1, 1, 1, 0)
