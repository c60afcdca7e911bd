"""Optuna search over per-unit schemes (TPE or NSGA-II), repaired into the budget.

A trial's suggested plan that is over budget is repaired, not rejected: the unit whose
downgrade frees the most of the violated cost per unit of score lost is downgraded until
every limit holds. The objective is the table's prediction, or the measured divergence to
FP32 on the evaluation split. Trials live in SQLite, so an interrupted search resumes; the
ILP plan is the first trial (warm start).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from mixprec.metrics import measured_divergence
from mixprec.search.base import SearchStrategy, register_strategy
from mixprec.search.configs import OptunaConfig
from mixprec.search.cost import CostModel, InfeasibleBudget
from mixprec.search.ilp import solve_ilp
from mixprec.search.selection import Constraint, Selection, feasible_mask, within

#: above this many decision units, `auto` searches one scheme per block
AUTO_BLOCK_UNITS = 64


def repair(
    choice: Sequence[int], scores: np.ndarray, constraints: Sequence[Constraint]
) -> list[int]:
    """Downgrade units until every constraint holds; deterministic."""
    picked = list(choice)
    rows = np.arange(len(picked))
    allowed = feasible_mask(scores)
    for _ in range(scores.size):
        over = [
            (cost, limit)
            for cost, limit in constraints
            if not within(cost[rows, picked].sum(), limit)
        ]
        if not over:
            return picked
        cost, _ = over[0]
        saved = cost[rows, picked][:, None] - cost
        lost = np.where(allowed, scores, np.inf) - scores[rows, picked][:, None]
        ratio = np.where(allowed & (saved > 0), saved / np.maximum(lost, 1e-30), -np.inf)
        if not (ratio > -np.inf).any():
            break
        i, k = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        picked[i] = int(k)
    raise InfeasibleBudget("no plan within every limit could be reached by downgrading units")


@register_strategy(OptunaConfig)
class OptunaStrategy(SearchStrategy):
    """Optuna over units (or blocks); trials persist in WORKDIR/optuna.sqlite3 and resume."""

    config: OptunaConfig

    def provenance(self) -> dict[str, Any]:
        c = self.config
        return {**super().provenance(), "solver": f"optuna-{c.sampler}-{c.objective}"}

    def select(
        self, scores: np.ndarray, costs: CostModel, constraints: list[Constraint]
    ) -> Selection:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        groups = self._groups(scores, costs)
        allowed = feasible_mask(scores)
        options = [
            [costs.schemes[k] for k in np.nonzero(allowed[members].all(axis=0))[0]]
            for members in groups
        ]
        limits = ",".join(f"{limit:.6g}" for _, limit in constraints)
        settings = f"{limits}|{len(groups)}"
        name = _study_name(
            costs, scores, settings, self.config.sampler, self.config.objective, self.seed
        )
        study = optuna.create_study(
            study_name=name,
            storage=_storage(self.workdir),
            sampler=_make_sampler(self.config.sampler, self.seed),
            directions=["minimize"] * (2 if self.config.sampler == "nsga2" else 1),
            load_if_exists=True,
        )
        if not study.trials:
            warm = solve_ilp(scores, constraints)
            if warm.choice and len(groups) == len(costs.units):
                study.enqueue_trial({f"u{i}": costs.schemes[k] for i, k in enumerate(warm.choice)})
        index = {s: k for k, s in enumerate(costs.schemes)}

        def objective(trial: optuna.Trial) -> float | tuple[float, float]:
            suggested = [0] * len(costs.units)
            for g, (members, opts) in enumerate(zip(groups, options, strict=True)):
                for unit in members:
                    suggested[unit] = index[trial.suggest_categorical(f"u{g}", opts)]
            choice = repair(suggested, scores, constraints)
            trial.set_user_attr("choice", choice)
            value = self._value(choice, scores, costs)
            if self.config.sampler == "nsga2":
                return value, costs.totals(choice)["bits_per_weight"]
            return value

        done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        if done < self.config.trials:
            study.optimize(
                objective, n_trials=self.config.trials - done, show_progress_bar=self.progress
            )
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = min(complete, key=lambda t: (t.values[0], t.number))
        choice = tuple(int(k) for k in best.user_attrs["choice"])
        objective_value = float(sum(scores[i, k] for i, k in enumerate(choice)))
        return Selection(choice, "feasible", objective_value)

    def _groups(self, scores: np.ndarray, costs: CostModel) -> list[list[int]]:
        """Decision units searched together: each alone, or all of one block (where every
        member can take some common scheme)."""
        by_unit = [[i] for i in range(len(costs.units))]
        blockwise = self.config.granularity == "block" or (
            self.config.granularity == "auto" and len(costs.units) > AUTO_BLOCK_UNITS
        )
        if not blockwise or not costs.block_of:
            return by_unit
        allowed = feasible_mask(scores)
        grouped: dict[str, list[int]] = {}
        for i, unit in enumerate(costs.units):
            grouped.setdefault(costs.block_of.get(unit, unit), []).append(i)
        groups = []
        for members in grouped.values():
            shared = allowed[members].all(axis=0).any()
            groups.extend([members] if shared else [[i] for i in members])
        return groups

    def _value(self, choice: Sequence[int], scores: np.ndarray, costs: CostModel) -> float:
        if self.config.objective == "predicted":
            return float(sum(scores[i, k] for i, k in enumerate(choice)))
        assert self.bundle is not None
        return measured_divergence(self.bundle, costs.assignment(choice))


def _study_name(
    costs: CostModel, scores: np.ndarray, limits: str, sampler: str, objective: str, seed: int
) -> str:
    """Same table, model, limits and settings -> same study, so a re-run resumes it."""
    digest = hashlib.sha256()
    digest.update(costs.fingerprint.encode())
    digest.update(np.ascontiguousarray(scores).tobytes())
    digest.update(f"{limits}|{sampler}|{objective}|{seed}".encode())
    return f"mixprec-{digest.hexdigest()[:16]}"


STORAGE_FILE = "optuna.sqlite3"


def _storage(workdir: Path | None) -> str | None:
    """Trials live in WORKDIR/optuna.sqlite3 (a resumable study); in memory without one."""
    if workdir is None:
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{workdir / STORAGE_FILE}"


def _make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)
