"""SAC (stable-baselines3) as a SearchStrategy: learn to allocate on the AllocationEnv.

The greedy plan is the environment's feasible fallback, so every episode (and the final,
deterministic rollout) ends within every constraint. A trained policy is saved as a plain
tensor state dict (loaded with weights_only=True, never a pickle) and can be reused on
another model's table with the same number of candidate schemes (`policy=`), with or
without a short fine-tune.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixprec.agents.env import AllocationEnv
from mixprec.errors import MixprecError
from mixprec.files import atomic_path, atomic_write_text
from mixprec.search.base import Limits, SearchStrategy
from mixprec.search.cost import CostModel
from mixprec.search.greedy import solve_greedy
from mixprec.search.selection import Constraint, Selection

POLICY_VERSION = 1


class SACStrategy(SearchStrategy):
    """Soft actor-critic over the units of one table; deterministic for a seed on the CPU."""

    name = "sac"

    def __init__(
        self,
        estimator: str = "isolation",
        seed: int = 0,
        limits: Limits = Limits(),
        kappa: float = 0.0,
        timesteps: int = 3000,
        learning_rate: float = 3e-3,
        gradient_steps: int = 2,
        policy: Path | None = None,
        run_dir: Path | None = None,
        progress: bool = False,
        hidden: int = 64,
    ) -> None:
        super().__init__(estimator, seed, limits, kappa)
        if timesteps < 0:
            raise MixprecError(f"timesteps {timesteps} must be >= 0")
        self.timesteps = timesteps
        self.policy = policy
        self.run_dir = run_dir
        self.progress = progress
        self.hidden = hidden
        self.learning_rate = learning_rate
        self.gradient_steps = gradient_steps

    def provenance(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"timesteps": self.timesteps}
        if self.policy is not None:
            extra["policy"] = str(self.policy)
        return {**super().provenance(), **extra}

    def select(
        self, scores: np.ndarray, costs: CostModel, constraints: list[Constraint]
    ) -> Selection:
        if costs.features is None:
            raise MixprecError("the cost model has no unit features; build it with a model")
        fallback = solve_greedy(scores, constraints)
        if not fallback.choice:
            raise MixprecError("sac needs a feasible starting plan and greedy found none")
        env = AllocationEnv(scores, constraints, costs.features, fallback.choice)
        agent = self.agent(env)
        if self.timesteps:
            agent.learn(self.timesteps, progress_bar=self.progress)
            if self.run_dir is not None:
                save_policy(agent, self.run_dir / "sac_policy.pt")
        choice = rollout(agent, env)
        rows = np.arange(len(choice))
        objective = float(scores[rows, list(choice)].sum())
        return Selection(choice, "sac", objective)

    def agent(self, env: AllocationEnv) -> Any:
        from stable_baselines3 import SAC
        from stable_baselines3.common.logger import configure

        agent = SAC(
            "MlpPolicy",
            env,
            seed=self.seed,
            device="cpu",
            learning_starts=min(200, max(self.timesteps // 4, 1)),
            learning_rate=self.learning_rate,
            gradient_steps=self.gradient_steps,
            batch_size=64,
            gamma=0.99,
            policy_kwargs={"net_arch": [self.hidden, self.hidden]},
            verbose=0,
        )
        if self.policy is not None:
            load_policy(agent, self.policy)
        if self.run_dir is not None:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            agent.set_logger(configure(str(self.run_dir / "sac_logs"), ["csv"]))
        return agent


def rollout(agent: Any, env: AllocationEnv) -> tuple[int, ...]:
    """The deterministic policy's plan (always feasible: the env projects every step)."""
    observation, _ = env.reset()
    while True:
        action, _ = agent.predict(observation, deterministic=True)
        observation, _, done, _, info = env.step(action)
        if done:
            return tuple(int(c) for c in info["choice"])


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
    expected = int(agent.observation_space.shape[0])
    if meta.get("observation_size", expected) != expected:
        raise MixprecError(
            f"policy {path} was trained on {meta['observation_size']} observation values; this "
            f"table gives {expected} (the number of candidate schemes must match)"
        )
    state = torch.load(path, weights_only=True, map_location="cpu")
    agent.policy.load_state_dict(state)
