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
