"""A gymnasium environment that assigns a scheme to one decision unit per step (after RAMP).

Observation per unit: its model-agnostic features (search/features.py), its scores under
every candidate scheme (log scale, schemes ordered by bits), which schemes the budget still
allows, budget used and left. Action: a number in [-1, 1] mapped onto the allowed schemes
ordered by bits: 0 keeps the fallback plan's scheme, -1 the cheapest, 1 the dearest (a
residual policy around the fallback, which is the greedy plan). The projection onto allowed
schemes keeps the remaining units feasible: at their cheapest schemes under a single budget,
at the fallback plan (jointly feasible) under several constraints; so an episode always ends
with a feasible plan. Reward: minus the unit's score, scaled by the fallback
plan's total score (so returns are comparable across models); optionally a final reward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from mixprec.errors import MixprecError
from mixprec.search.selection import Constraint

SCORE_FLOOR = 1e-12
LOG_RANGE = 6.0  # decades of score around the table's median that the observation resolves


class AllocationEnv(gym.Env[np.ndarray, np.ndarray]):
    """Walks the units in model order; see the module docstring."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it so)

    def __init__(
        self,
        scores: np.ndarray,
        constraints: Sequence[Constraint],
        features: np.ndarray,
        fallback: Sequence[int],
        final_reward: Callable[[tuple[int, ...]], float] | None = None,
    ) -> None:
        super().__init__()
        self.scores = np.asarray(scores, dtype=np.float64)
        self.constraints = [
            (np.asarray(c, dtype=np.float64), float(limit)) for c, limit in constraints
        ]
        self.features = np.asarray(features, dtype=np.float32)
        self.fallback = np.asarray(fallback, dtype=np.int64)
        self.final_reward = final_reward
        units, schemes = self.scores.shape
        if len(self.fallback) != units or self.features.shape[0] != units:
            raise MixprecError("features and the fallback plan need one row per unit")
        rows = np.arange(units)
        if not np.isfinite(self.scores[rows, self.fallback]).all() or not self._fits(
            [c[rows, self.fallback].sum() for c, _ in self.constraints]
        ):
            raise MixprecError("the fallback plan must be scored and within every constraint")
        self.order = np.argsort(self.constraints[0][0].mean(axis=0), kind="stable")  # by bits
        # What the units after each step need at least: with one constraint, each at its
        # cheapest scored scheme (exact); with several, the fallback plan (jointly feasible).
        if len(self.constraints) == 1:
            cost = self.constraints[0][0]
            least = [np.where(np.isfinite(self.scores), cost, np.inf).min(axis=1)]
        else:
            least = [c[rows, self.fallback] for c, _ in self.constraints]
        self.rest = [np.append(np.cumsum(need[::-1])[::-1], 0.0) for need in least]
        self.scale = max(float(self.scores[rows, self.fallback].sum()), SCORE_FLOOR)
        finite = self.scores[np.isfinite(self.scores) & (self.scores > 0)]
        self.reference = math.log10(float(np.median(finite))) if finite.size else 0.0
        size = self.features.shape[1] + 2 * schemes + 3
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (size,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.unit = 0
        self.spent = np.zeros(len(self.constraints))
        self.choice: list[int] = []

    def _fits(self, totals: Sequence[float]) -> bool:
        return all(
            t <= limit * (1 + 1e-12) for t, (_, limit) in zip(totals, self.constraints, strict=True)
        )

    def observation(self) -> np.ndarray:
        i = min(self.unit, len(self.fallback) - 1)
        row = self.scores[i, self.order]
        logged = np.where(np.isfinite(row), np.log10(np.maximum(row, SCORE_FLOOR)), np.inf)
        scaled = np.clip((logged - self.reference) / LOG_RANGE, -1.5, 1.5)
        first = self.constraints[0][1]
        used = self.spent[0] / first if first > 0 else 1.0
        remaining = (len(self.fallback) - self.unit) / len(self.fallback)
        allowed = [float(self.allowed(i, int(k))) for k in self.order]
        parts = [self.features[i], scaled, allowed, [used, 1.0 - used, remaining]]
        return np.clip(np.concatenate(parts), -10.0, 10.0).astype(np.float32)

    def allowed(self, unit: int, scheme: int) -> bool:
        if unit >= len(self.fallback) or not np.isfinite(self.scores[unit, scheme]):
            return False
        totals = [spent + c[unit, scheme] + rest[unit + 1] for spent, (c, _), rest in
                  zip(self.spent, self.constraints, self.rest, strict=True)]  # fmt: skip
        return self._fits(totals)

    def project(self, value: float) -> int:
        """The allowed scheme for `value` in [-1, 1]: 0 is the fallback plan's scheme (or the
        nearest allowed one below it), -1 the cheapest allowed, 1 the dearest allowed."""
        allowed = [int(k) for k in self.order if self.allowed(self.unit, int(k))]
        if not allowed:  # cannot happen while the fallback fits; kept as a guard
            return int(self.fallback[self.unit])
        rank = {int(k): r for r, k in enumerate(self.order)}
        target = rank[int(self.fallback[self.unit])]
        below = [i for i, k in enumerate(allowed) if rank[k] <= target]
        middle = below[-1] if below else 0
        end = 0 if value < 0 else len(allowed) - 1
        return allowed[middle + round(abs(value) * (end - middle))]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.unit = 0
        self.spent = np.zeros(len(self.constraints))
        self.choice = []
        return self.observation(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        value = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        scheme = self.project(value)
        self.spent += [c[self.unit, scheme] for c, _ in self.constraints]
        self.choice.append(scheme)
        reward = -float(self.scores[self.unit, scheme]) / self.scale
        self.unit += 1
        done = self.unit == len(self.fallback)
        info: dict[str, Any] = {}
        if done:
            info["choice"] = tuple(self.choice)
            if self.final_reward is not None:
                reward += self.final_reward(tuple(self.choice))
        return self.observation(), reward, done, False, info
