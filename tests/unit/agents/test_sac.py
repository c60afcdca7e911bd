"""SACStrategy: conformance, safe policy files, checkpoints that resume exactly, the measured
objective, and learning a known optimum that greedy misses."""

from __future__ import annotations

import itertools
import types
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch

from mixprec.agents.env import AllocationEnv
from mixprec.agents.sac import SACStrategy
from mixprec.errors import MixprecError
from mixprec.search.configs import SACConfig
from mixprec.search.cost import Budget, CostModel
from mixprec.search.greedy import solve_greedy
from tests.helpers.search import digits_problem, strategy


def test_policy_round_trip_and_csv_logs(tmp_path: Path) -> None:
    _, table, costs = digits_problem()
    trained = strategy("sac", timesteps=300, hidden=16, workdir=tmp_path, seed=2)
    plan = trained.solve(table, costs, "4.5bits")
    policy = tmp_path / "sac" / "sac_policy.pt"
    assert policy.is_file() and (tmp_path / "sac" / "sac_logs" / "progress.csv").is_file()
    reused = strategy("sac", timesteps=0, hidden=16, policy=policy, seed=2)
    again = reused.solve(table, costs, "4.5bits")
    assert again.assignment == plan.assignment and again.provenance["policy"] == str(policy)


def test_a_policy_for_another_scheme_count_or_version_is_refused(tmp_path: Path) -> None:
    _, table, costs = digits_problem()
    policy = tmp_path / "sac" / "sac_policy.pt"
    strategy("sac", timesteps=64, hidden=16, workdir=tmp_path).solve(table, costs, "6bits")
    meta = policy.with_suffix(".json")
    meta.write_text('{"version": 2, "observation_size": 3}')
    with pytest.raises(MixprecError, match="trained on 3 observation values"):
        strategy("sac", timesteps=0, hidden=16, policy=policy).solve(table, costs, "6bits")
    meta.write_text('{"version": 1, "observation_size": 3}')
    with pytest.raises(MixprecError, match="is version 1; this mixprec reads version 2"):
        strategy("sac", timesteps=0, hidden=16, policy=policy).solve(table, costs, "6bits")
    with pytest.raises(MixprecError, match="no policy at"):
        strategy("sac", policy=tmp_path / "absent.pt").solve(table, costs, "6bits")


def _final_state(folder: Path) -> dict[str, torch.Tensor]:
    (checkpoint,) = (folder / "sac" / "checkpoints").glob("*.pt")
    return torch.load(checkpoint, weights_only=True)


def test_an_interrupted_training_resumes_to_the_uninterrupted_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, table, costs = digits_problem()
    settings = {"timesteps": 600, "hidden": 16, "checkpoint_every": 100, "seed": 1}
    whole = strategy("sac", workdir=tmp_path / "whole", **settings)
    expected = whole.solve(table, costs, "4.5bits")
    original_step, calls = AllocationEnv.step, [0]

    def interrupting_step(self: AllocationEnv, action: np.ndarray) -> object:
        calls[0] += 1
        if calls[0] == 450:  # mid-episode, after checkpoints at ~100..400 steps
            raise KeyboardInterrupt
        return original_step(self, action)

    monkeypatch.setattr(AllocationEnv, "step", interrupting_step)
    cut = strategy("sac", workdir=tmp_path / "cut", **settings)
    with pytest.raises(KeyboardInterrupt):
        cut.solve(table, costs, "4.5bits")
    saved = _final_state(tmp_path / "cut")
    assert 300 <= saved["num_timesteps"] < 450
    monkeypatch.setattr(AllocationEnv, "step", original_step)
    resumed = strategy("sac", workdir=tmp_path / "cut", **settings).solve(table, costs, "4.5bits")
    assert resumed.assignment == expected.assignment
    final, reference = _final_state(tmp_path / "cut"), _final_state(tmp_path / "whole")
    assert final["num_timesteps"] == reference["num_timesteps"] == 600
    for name, tensor in reference["policy"].items():
        assert torch.equal(final["policy"][name], tensor), name


def test_a_finished_training_is_not_repeated_and_a_longer_one_continues(tmp_path: Path) -> None:
    _, table, costs = digits_problem()
    first = strategy("sac", timesteps=200, hidden=16, workdir=tmp_path)
    plan = first.solve(table, costs, "5bits")
    again = strategy("sac", timesteps=200, hidden=16, workdir=tmp_path)
    assert again.solve(table, costs, "5bits") == plan
    longer = strategy("sac", timesteps=300, hidden=16, workdir=tmp_path)
    longer.solve(table, costs, "5bits")
    assert _final_state(tmp_path)["num_timesteps"] == 300
    (checkpoint,) = (tmp_path / "sac" / "checkpoints").glob("*.pt")
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(MixprecError, match=r"unreadable SAC checkpoint .*delete it"):
        strategy("sac", timesteps=300, hidden=16, workdir=tmp_path).solve(table, costs, "5bits")


def test_the_measured_objective_scores_plans_on_the_evaluation_split() -> None:
    bundle, table, costs = digits_problem()
    with pytest.raises(MixprecError, match="measured objective of sac needs the model"):
        strategy("sac", objective="measured")
    with pytest.raises(MixprecError, match="unknown objective 'loss'; valid: predicted"):
        strategy("sac", objective="loss")
    measured = strategy("sac", timesteps=120, hidden=16, objective="measured", bundle=bundle).solve(
        table, costs, "4.5bits"
    )
    assert measured.provenance["objective"] == "measured"
    limit = Budget.parse("4.5bits").weight_bytes(costs)
    assert measured.predicted["weight_bytes"] <= limit * (1 + 1e-9)


def test_short_training_finds_the_unique_optimum_that_greedy_misses() -> None:
    """4 units x 3 schemes: greedy takes the best ratio first (unit 1) and ends at 124; the
    only plan at 88 (checked by enumeration) needs unit 0 upgraded and unit 3 left cheap."""
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
    assert solve_greedy(scores, [(costs, limit)]).objective == 124.0
    features = np.zeros((4, 11), dtype=np.float32)
    features[:, 0] = np.linspace(0, 1, 4)
    with_features = cast(CostModel, types.SimpleNamespace(features=features))
    found = SACStrategy(SACConfig(timesteps=1000, seed=0)).select(
        scores, with_features, [(costs, limit)]
    )
    assert found.choice == (1, 1, 1, 0) and found.objective == 88.0


@pytest.mark.parametrize("budget", ["3bits", "4.5bits", "6bits"])
def test_the_untrained_policy_is_greedy_and_training_never_ends_worse(budget: str) -> None:
    _, table, costs = digits_problem()
    greedy = strategy("greedy").solve(table, costs, budget)
    untrained = strategy("sac", timesteps=0, hidden=16).solve(table, costs, budget)
    assert untrained.assignment == greedy.assignment
    trained = strategy("sac", timesteps=300, hidden=16, seed=5).solve(table, costs, budget)
    assert trained.predicted["score"] <= greedy.predicted["score"] * (1 + 1e-12)
