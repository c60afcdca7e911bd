"""SAC (stable-baselines3) as a SearchStrategy: learn to allocate on the AllocationEnv.

The agent is a residual policy around the greedy plan: its action layer starts at zero, so
the untrained deterministic policy reproduces greedy; the deterministic policy is probed
every few episodes and the best kept (as SB3's EvalCallback keeps a best model), so the plan
returned is never worse than the greedy plan by the training reward. Training state is
checkpointed in the run folder and resumes.
A trained policy is saved as a plain tensor state dict (loaded with weights_only=True, never a
pickle) and can be reused on another model's table with the same number of candidate schemes
(`policy=`), with or without a short fine-tune.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from mixprec.agents.checkpoint import BestPolicy, load_checkpoint, problem_key, save_checkpoint
from mixprec.agents.env import AllocationEnv
from mixprec.errors import MixprecError
from mixprec.files import atomic_path, atomic_write_text
from mixprec.search.base import SearchStrategy, register_strategy
from mixprec.search.configs import SACConfig
from mixprec.search.cost import CostModel, InfeasibleBudget
from mixprec.search.greedy import solve_greedy
from mixprec.search.selection import Constraint, Selection

POLICY_VERSION = SACConfig.VERSION  # a policy file from another version is refused
EVALUATIONS = 30  # deterministic evaluations per training (at episode ends)
log = logging.getLogger(__name__)


@register_strategy(SACConfig)
class SACStrategy(SearchStrategy):
    """Soft actor-critic over the units of one table; deterministic for a seed on the CPU.
    Its policy, checkpoints and CSV logs go to WORKDIR/sac/ (resumed from there)."""

    config: SACConfig

    @property
    def run_dir(self) -> Path | None:
        return None if self.workdir is None else self.workdir / "sac"

    def select(
        self, scores: np.ndarray, costs: CostModel, constraints: list[Constraint]
    ) -> Selection:
        if costs.features is None:
            raise MixprecError("the cost model has no unit features; build it with a model")
        fallback = solve_greedy(scores, constraints)
        if not fallback.choice:
            raise InfeasibleBudget("sac needs a feasible starting plan and greedy found none")
        outcome = self._outcome(costs, fallback.choice)
        make_env = lambda: AllocationEnv(  # noqa: E731 (one env trains, one evaluates)
            scores, constraints, costs.features, fallback.choice, outcome
        )
        env, probe = make_env(), make_env()
        agent = self.agent(env)
        checkpoint = self._checkpoint_path(scores, constraints, costs, fallback.choice)
        best = BestPolicy()
        if checkpoint is not None and checkpoint.is_file():
            best = load_checkpoint(agent, checkpoint)
            log.info("resuming SAC from %s at step %d", checkpoint, agent.num_timesteps)
        if agent.num_timesteps == 0:
            probe_policy(agent, probe, best)
        remaining = self.config.timesteps - agent.num_timesteps
        if remaining > 0:
            every = max(self.config.timesteps // EVALUATIONS, len(fallback.choice))
            callback = _Callback(probe, best, every, self.config.checkpoint_every, checkpoint)
            agent.learn(remaining, callback=callback, progress_bar=self.progress,
                        reset_num_timesteps=False)  # fmt: skip
            probe_policy(agent, probe, best)
            if checkpoint is not None:
                save_checkpoint(agent, best, checkpoint)
        assert best.state is not None
        agent.policy.load_state_dict(best.state)
        if self.run_dir is not None and self.config.timesteps:
            save_policy(agent, self.run_dir / "sac_policy.pt")
        rows = np.arange(len(best.plan))
        return Selection(best.plan, "sac", float(scores[rows, list(best.plan)].sum()))

    def _outcome(
        self, costs: CostModel, fallback: tuple[int, ...]
    ) -> Callable[[tuple[int, ...]], float] | None:
        """Measured objective: the plan's divergence over the greedy plan's (cached per plan)."""
        if self.config.objective == "predicted":
            return None
        from mixprec.metrics import measured_divergence

        assert self.bundle is not None
        bundle = self.bundle
        seen: dict[tuple[int, ...], float] = {}
        reference = max(measured_divergence(bundle, costs.assignment(fallback)), 1e-12)

        def outcome(choice: tuple[int, ...]) -> float:
            if choice not in seen:
                seen[choice] = measured_divergence(bundle, costs.assignment(choice)) / reference
            return seen[choice]

        return outcome

    def _checkpoint_path(
        self, scores: np.ndarray, constraints: list[Constraint], costs: CostModel,
        fallback: tuple[int, ...],
    ) -> Path | None:  # fmt: skip
        if self.run_dir is None:
            return None
        assert costs.features is not None
        settings = {"seed": self.seed, "lr": self.config.learning_rate, "gamma": self.config.gamma,
                    "gradient_steps": self.config.gradient_steps, "hidden": self.config.hidden,
                    "objective": self.config.objective, "policy": str(self.config.policy),
                    "limits": [limit for _, limit in constraints]}  # fmt: skip
        arrays = [scores, costs.features, np.asarray(fallback), *(c for c, _ in constraints)]
        return self.run_dir / "checkpoints" / f"{problem_key(arrays, settings)}.pt"

    def agent(self, env: AllocationEnv) -> Any:
        from stable_baselines3 import SAC
        from stable_baselines3.common.logger import configure

        agent = SAC(
            "MlpPolicy",
            env,
            seed=self.seed,
            device="cpu",
            buffer_size=max(self.config.timesteps, 1),
            learning_starts=min(200, max(self.config.timesteps // 4, 1)),
            learning_rate=self.config.learning_rate,
            gradient_steps=self.config.gradient_steps,
            batch_size=64,
            gamma=self.config.gamma,
            policy_kwargs={"net_arch": [self.config.hidden, self.config.hidden]},
            verbose=0,
        )
        if self.config.policy is not None:
            load_policy(agent, self.config.policy)
        else:  # a zero residual: the untrained deterministic policy is the greedy plan
            with torch.no_grad():
                for tensor in agent.actor.mu.parameters():
                    tensor.zero_()
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            agent.set_logger(configure(str(self.run_dir / "sac_logs"), ["csv"]))
        return agent


class _Callback(BaseCallback):
    """Evaluates the deterministic policy at episode ends; checkpoints when a rollout starts
    after an episode ended (its transition stored and trained on), so a resumed training
    starts from a fresh episode in exactly the state the uninterrupted one was in."""

    def __init__(self, probe: AllocationEnv, best: BestPolicy, every: int,
                 checkpoint_every: int, checkpoint: Path | None) -> None:  # fmt: skip
        super().__init__()
        self.probe, self.best, self.every = probe, best, every
        self.checkpoint_every, self.checkpoint = checkpoint_every, checkpoint
        self.probed = self.saved = 0
        self.episode_ended = False

    def _on_training_start(self) -> None:
        self.probed = self.saved = self.model.num_timesteps

    def _on_step(self) -> bool:
        self.episode_ended = any("choice" in info for info in self.locals["infos"])
        steps = self.model.num_timesteps
        if self.episode_ended and steps - self.probed >= self.every:
            probe_policy(self.model, self.probe, self.best)
            self.probed = steps
        return True

    def _on_rollout_start(self) -> None:
        steps = self.model.num_timesteps
        due = self.checkpoint is not None and steps - self.saved >= self.checkpoint_every
        if self.episode_ended and due:
            assert self.checkpoint is not None
            save_checkpoint(self.model, self.best, self.checkpoint)
            self.saved = steps


def probe_policy(agent: Any, env: AllocationEnv, best: BestPolicy) -> None:
    """Roll the deterministic policy out on `env` (not the training env) and offer it."""
    plan, value = rollout(agent, env)
    best.offer(agent.policy.state_dict(), plan, value, int(agent.num_timesteps))


def rollout(agent: Any, env: AllocationEnv) -> tuple[tuple[int, ...], float]:
    """The deterministic policy's plan (always feasible: the env projects every step) and its
    return."""
    observation, _ = env.reset()
    total = 0.0
    while True:
        action, _ = agent.predict(observation, deterministic=True)
        observation, reward, done, _, info = env.step(action)
        total += float(reward)
        if done:
            return tuple(int(c) for c in info["choice"]), total


def save_policy(agent: Any, path: Path) -> None:
    """The policy's tensors (and the observation size they expect), never a pickle."""
    state = {k: v.detach().cpu() for k, v in agent.policy.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    meta = {"version": POLICY_VERSION, "observation_size": int(agent.observation_space.shape[0])}
    atomic_write_text(path.with_suffix(".json"), json.dumps(meta) + "\n")


def load_policy(agent: Any, path: Path) -> None:
    if not path.is_file():
        raise MixprecError(f"no policy at {path}")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if meta.get("version", POLICY_VERSION) != POLICY_VERSION:
        raise MixprecError(
            f"policy {path} is version {meta['version']}; this mixprec reads version "
            f"{POLICY_VERSION} (its observations changed); train a new one"
        )
    expected = int(agent.observation_space.shape[0])
    if meta.get("observation_size", expected) != expected:
        raise MixprecError(
            f"policy {path} was trained on {meta['observation_size']} observation values; this "
            f"table gives {expected} (the number of candidate schemes must match)"
        )
    state = torch.load(path, weights_only=True, map_location="cpu")
    agent.policy.load_state_dict(state)
