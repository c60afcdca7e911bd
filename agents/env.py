"""A gymnasium environment that assigns a scheme to one decision unit per step (after RAMP).

Observation per unit: its model-agnostic features (search/features.py), its scores under
every candidate scheme (log scale, schemes ordered by bits), which schemes the budget still
allows, the completion plan's scheme, budget used and left. The completion plan is the greedy
plan for the units still to come under the budget still left (under several constraints, the
initial fallback plan). Action: a number in [-1, 1] picking among the unit's allowed schemes
on its cost/score frontier: 0 keeps the completion plan's scheme, each 2/7 step moves one
frontier scheme cheaper or dearer (a residual policy around greedy). Every choice keeps the
remaining units feasible, so an episode always ends with a feasible plan.

Reward (RAMP-style shaping): the change in the predicted score of "choices so far + completion
plan", scaled by the fallback plan's score, so returns are comparable across models and each
step is credited at once; an episode's return is GAIN x (1 - plan score / fallback score).
With `outcome` (the plan's loss relative to the fallback plan's, e.g. measured on data) the
final step swaps the plan's predicted ratio for it: the return is GAIN x (1 - outcome).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from mixprec.errors import MixprecError
from mixprec.search.greedy import solve_greedy
from mixprec.search.selection import Constraint, within

SCORE_FLOOR = 1e-12
LOG_RANGE = 6.0  # decades of score around the table's median that the observation resolves
GAIN = 10.0  # reward scale: a plan 10% worse than the fallback returns -1
MOVES = 3  # frontier schemes the action may move away from the completion plan, each way


class AllocationEnv(gym.Env[np.ndarray, np.ndarray]):
    """Walks the units in model order; see the module docstring."""

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it so)

    def __init__(
        self,
        scores: np.ndarray,
        constraints: Sequence[Constraint],
        features: np.ndarray,
        fallback: Sequence[int],
        outcome: Callable[[tuple[int, ...]], float] | None = None,
    ) -> None:
        super().__init__()
        self.scores = np.asarray(scores, dtype=np.float64)
        self.constraints = [
            (np.asarray(c, dtype=np.float64), float(limit)) for c, limit in constraints
        ]
        self.features = np.asarray(features, dtype=np.float32)
        self.fallback = np.asarray(fallback, dtype=np.int64)
        self.outcome = outcome
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
        self.frontier = [self._frontier(unit) for unit in range(units)]
        self.scale = max(float(self.scores[rows, self.fallback].sum()), SCORE_FLOOR)
        finite = self.scores[np.isfinite(self.scores) & (self.scores > 0)]
        self.reference = math.log10(float(np.median(finite))) if finite.size else 0.0
        size = self.features.shape[1] + 3 * schemes + 3
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (size,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.unit = 0
        self.spent = np.zeros(len(self.constraints))
        self.choice: list[int] = []
        self.plan: tuple[int, ...] = ()
        self.predicted = 0.0

    def _fits(self, totals: Sequence[float]) -> bool:
        return all(within(t, limit) for t, (_, limit) in zip(totals, self.constraints, strict=True))

    def _frontier(self, unit: int) -> list[int]:
        """The unit's schemes with no cheaper-or-equal scheme scoring as well, cheapest first."""
        cost = self.constraints[0][0][unit]
        kept: list[int] = []
        for k in np.lexsort((self.scores[unit], cost)):
            if np.isfinite(self.scores[unit, k]) and (
                not kept or self.scores[unit, k] < self.scores[unit, kept[-1]]
            ):
                kept.append(int(k))
        return kept

    def _complete(self) -> None:
        """The completion plan for the units from `self.unit` on, and the predicted score of
        the choices so far plus that plan."""
        start = self.unit
        plan: tuple[int, ...] = tuple(int(k) for k in self.fallback[start:])
        if len(self.constraints) == 1 and start < len(self.fallback):
            cost, limit = self.constraints[0]
            found = solve_greedy(self.scores[start:], [(cost[start:], limit - self.spent[0])])
            plan = found.choice or plan
        self.plan = plan
        rows = np.arange(start, len(self.fallback))
        done = self.scores[np.arange(start), self.choice].sum() if start else 0.0
        self.predicted = float(done + self.scores[rows, list(plan)].sum())

    def observation(self) -> np.ndarray:
        i = min(self.unit, len(self.fallback) - 1)
        row = self.scores[i, self.order]
        logged = np.where(np.isfinite(row), np.log10(np.maximum(row, SCORE_FLOOR)), np.inf)
        scaled = np.clip((logged - self.reference) / LOG_RANGE, -1.5, 1.5)
        first = self.constraints[0][1]
        used = self.spent[0] / first if first > 0 else 1.0
        remaining = (len(self.fallback) - self.unit) / len(self.fallback)
        allowed = [float(self.allowed(i, int(k))) for k in self.order]
        planned = (self.order == self.plan[0]).astype(float) if self.plan else np.zeros_like(row)
        parts = [self.features[i], scaled, allowed, planned, [used, 1.0 - used, remaining]]
        return np.clip(np.concatenate(parts), -10.0, 10.0).astype(np.float32)

    def allowed(self, unit: int, scheme: int) -> bool:
        if unit >= len(self.fallback) or not np.isfinite(self.scores[unit, scheme]):
            return False
        totals = [spent + c[unit, scheme] + rest[unit + 1] for spent, (c, _), rest in
                  zip(self.spent, self.constraints, self.rest, strict=True)]  # fmt: skip
        return self._fits(totals)

    def project(self, value: float) -> int:
        """The scheme for `value` in [-1, 1]: the completion plan's scheme moved by
        round(value * 3.5) steps along the unit's allowed frontier (clamped at its ends)."""
        planned = self.plan[0] if self.plan else int(self.fallback[self.unit])
        options = [k for k in self.frontier[self.unit] if self.allowed(self.unit, k)]
        if planned not in options:  # a dominated scheme the plan still picked: keep it reachable
            row, cost = self.scores[self.unit], self.constraints[0][0][self.unit]
            options = sorted({*options, planned}, key=lambda k: (cost[k], -row[k]))
        step = min(math.floor((value + 1) / 2 * (2 * MOVES + 1)), 2 * MOVES) - MOVES
        return options[int(np.clip(options.index(planned) + step, 0, len(options) - 1))]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.unit = 0
        self.spent = np.zeros(len(self.constraints))
        self.choice = []
        self._complete()
        return self.observation(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        value = float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1.0, 1.0))
        scheme = self.project(value)
        self.spent += [c[self.unit, scheme] for c, _ in self.constraints]
        self.choice.append(scheme)
        before = self.predicted
        self.unit += 1
        self._complete()
        reward = GAIN * (before - self.predicted) / self.scale
        done = self.unit == len(self.fallback)
        info: dict[str, Any] = {}
        if done:
            info["choice"] = tuple(self.choice)
            if self.outcome is not None:
                ratio = self.outcome(tuple(self.choice))
                reward += GAIN * (self.predicted / self.scale - ratio)
        return self.observation(), reward, done, False, info
