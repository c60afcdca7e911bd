"""Where the exact estimator is worth its cost: the cells whose adaptive interval straddles the
ILP's decision at the budgets asked.

At a budget the ILP's plan is priced by a Lagrange multiplier (the score one byte is worth
there); a cell is contested when, within its interval, its priced value could beat its unit's
chosen one, or when its unit's choice flips between the plans just below and above the budget.
Contested cells are measured by isolation, most expected regret first, until the regret left is
under `tolerance` of the plan's score; the calibration is refitted and the plans re-solved,
until nothing is left to measure, the cell limit or the round limit is hit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

from mixprec.scheme import KEEP
from mixprec.search.base import Limits, check_feasible, constraints_for, score_matrix
from mixprec.search.configs import ILPConfig
from mixprec.search.cost import Budget, InfeasibleBudget
from mixprec.search.ilp import ILPStrategy, total_score
from mixprec.sensitivity.adaptive import CHEAP, EXACT, calibrate, isolation_cap, probe_cells
from mixprec.sensitivity.base import Score
from mixprec.sensitivity.configs import AdaptiveConfig
from mixprec.sensitivity.table import ScoreTable
from mixprec.units import Unit

ADAPTIVE = AdaptiveConfig.name
NEIGHBOUR_STEP = 0.02  # the plans just below and above a budget: this share of it apart
PRICE_STEPS = 100  # bisection steps for the Lagrange multiplier
# the plans decided for are the default ILP's (filled to its budget), solved in-process by
# HiGHS: CBC's subprocess took 29 ms a solve on tiny-gpt, 11% of adaptive's time there
PLANS = ILPStrategy(ILPConfig(solver="highs"))
Key = tuple[str, str, str]  # (estimator, scheme, unit)
Entry = dict[str, Any]  # a cell's result: score, ci_low, ci_high, samples, seconds, status, error


def adaptive_entries(
    units: Sequence[Unit], schemes: Sequence[str], found: Mapping[Key, Entry | None],
    confidence: float,
) -> dict[tuple[str, str], Entry]:  # fmt: skip
    """(scheme, unit) -> the adaptive cell: the exact score where measured, else the cheap one
    calibrated (its interval widened by the calibration's spread); failed where the cheap failed."""
    cheap: dict[tuple[str, str], float] = {}
    exact: dict[tuple[str, str], float] = {}
    for (estimator, scheme, name), entry in found.items():
        if entry is not None and entry["status"] == "ok" and estimator in (CHEAP, EXACT):
            (cheap if estimator == CHEAP else exact)[name, scheme] = float(entry["score"])
    fit = calibrate(cheap, exact, confidence)
    out = {}
    for unit in units:
        for scheme in schemes:
            low_cost = found.get((CHEAP, scheme, unit.name))
            measured = found.get((EXACT, scheme, unit.name))
            if measured is not None and measured["status"] == "ok":
                spent = measured["seconds"] + (low_cost["seconds"] if low_cost else 0.0)
                out[scheme, unit.name] = {**measured, "seconds": spent}
            elif low_cost is None or low_cost["status"] != "ok":
                out[scheme, unit.name] = dict(low_cost or _missing(unit.name, scheme))
            else:
                given = Score(low_cost["score"], low_cost["ci_low"], low_cost["ci_high"],
                              low_cost["samples"])  # fmt: skip
                score = fit.score(unit.modules, scheme, given)
                interval = {"ci_low": score.ci_low, "ci_high": score.ci_high}
                out[scheme, unit.name] = {**low_cost, "score": score.mean, **interval}
    return out


def _missing(unit: str, scheme: str) -> Entry:
    return {"score": None, "ci_low": None, "ci_high": None, "samples": 0, "seconds": 0.0,
            "status": "failed", "error": f"{unit} under {scheme}: no {CHEAP} score"}  # fmt: skip


def lagrange_price(scores: np.ndarray, cost: np.ndarray, limit: float) -> float:
    """The least price per byte at which every unit's cheapest priced choice fits `limit`."""
    finite = np.isfinite(scores)
    rows = np.arange(scores.shape[0])

    def size(price: float) -> float:
        priced = np.where(finite, scores + price * cost, np.inf)
        return float(cost[rows, priced.argmin(axis=1)].sum())

    if size(0.0) <= limit:
        return 0.0
    span = np.ptp(np.where(finite, scores, 0.0))
    high = max(float(span), 1e-30) / max(float(np.diff(np.unique(cost)).min(initial=1.0)), 1e-9)
    for _ in range(PRICE_STEPS):
        if size(high) <= limit:
            break
        high *= 2
    low = 0.0
    for _ in range(PRICE_STEPS):
        middle = (low + high) / 2
        low, high = (low, middle) if size(middle) <= limit else (middle, high)
    return high


def contested(
    point: np.ndarray, spread: np.ndarray, cost: np.ndarray, limit: float,
    choice: Sequence[int], neighbours: Sequence[Sequence[int]] = (), reach: float = 1.96,
) -> dict[tuple[int, int], float]:  # fmt: skip
    """(unit, scheme) index -> the expected regret of trusting the estimate, for each cell
    whose interval (`reach` standard deviations `spread` of normal errors, both cells'
    together) reaches past its unit's chosen one at the budget's price: E[max(0, chosen -
    cell)]; both cells of the pair carry it. Units whose pick differs in a `neighbours` plan
    (just below or above the budget) are pairs too."""
    price = lagrange_price(point, cost, limit)
    rows = np.arange(point.shape[0])
    picked = np.asarray(choice)
    priced = point + price * cost
    chosen = priced[rows, picked]
    sigma = np.sqrt(spread**2 + spread[rows, picked][:, None] ** 2)
    mean = chosen[:, None] - priced  # > 0: the cell looks better than the chosen one
    usable = np.isfinite(priced) & (sigma > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(usable, mean / np.where(usable, sigma, 1.0), -np.inf)
        regret = np.where(usable, mean * stats.norm.cdf(z) + sigma * stats.norm.pdf(z), 0.0)
    regret[rows, picked] = 0.0
    regret[z <= -reach] = 0.0
    flips = np.zeros_like(regret, dtype=bool)
    for other in neighbours:
        moved = np.flatnonzero(np.asarray(other) != picked)
        flips[moved, np.asarray(other)[moved]] = True
    out: dict[tuple[int, int], float] = {}
    for i, k in zip(*np.nonzero((regret > 0) | flips), strict=True):
        value = float(regret[i, k])
        for cell in ((int(i), int(k)), (int(i), int(picked[i]))):
            out[cell] = out.get(cell, 0.0) + value
    return out


@dataclass(frozen=True)
class Refinement:
    """What adaptive scoring did: cells computed per estimator, rounds run and why it stopped."""

    cells: dict[str, int]
    rounds: int
    stopped: str

    def summary(self, total: int) -> str:
        exact = self.cells.get(EXACT, 0)
        return (f"adaptive: {self.cells.get(CHEAP, 0)} {CHEAP} cells, {exact} {EXACT} cells "
                f"of {total} ({exact / max(total, 1):.0%}), {self.rounds} rounds; "
                f"{self.stopped}")  # fmt: skip


def refine(
    config: AdaptiveConfig,
    problem: Any,
    units: Sequence[Unit],
    schemes: Sequence[str],
    found: Mapping[Key, Entry | None],
    measure: Callable[[list[Key]], None],
    table_of: Callable[[], ScoreTable],
) -> Refinement:
    """Measure the probes, then the contested cells, round by round (at most `cell_limit` of
    them after the probes, and `max_share` of the cells in all); `problem` is the AllocationProblem
    of the adaptive scores (its costs and allowed cells are used), `measure` scores missing
    cells into `found`, `table_of` builds the table of what `found` holds."""
    layers = [u.name for u in units if u.level == "layer"]
    budgets, skipped = _feasible(problem, [Budget.parse(b) for b in config.budgets])
    probes = probe_cells(layers, schemes, config)
    measure([(EXACT, s, layer) for layer, s in sorted(probes)])
    capped = max(isolation_cap(layers, schemes, config) - len(probes), 0)
    limit = capped if config.cell_limit is None else min(config.cell_limit, capped)
    spent = 0
    stopped, rounds = f"{config.rounds} rounds run, the most asked (rounds)", config.rounds
    for round_ in range(1, config.rounds + 1):
        open_cells = _wanted(problem, table_of(), budgets, found, layers, config)
        wanted = open_cells[: max(limit - spent, 0)][: config.round_cells]  # None: all at once
        if not wanted:
            stopped = "plans stable"
            if open_cells:
                cap = f"isolation cap of {config.max_share:g} of the cells reached (max_share)"
                stopped = f"cell limit {limit} reached" if limit == config.cell_limit else cap
            rounds = round_ - 1
            break
        measure(wanted)
        spent += len(wanted)
    stopped += "".join(f"; {reason} (not decided for)" for reason in skipped)
    cells: dict[str, int] = {}
    for (estimator, _, _), entry in found.items():
        if entry is not None and estimator in (CHEAP, EXACT):
            cells[estimator] = cells.get(estimator, 0) + 1
    return Refinement(cells, rounds, stopped)


def _feasible(problem: Any, budgets: Sequence[Budget]) -> tuple[list[Budget], list[str]]:
    """The budgets a plan fits, and why the others do not; none fitting is an error, before
    isolation runs."""
    kept: list[Budget] = []
    reasons: list[str] = []
    for budget in budgets:
        constraints = constraints_for(problem.costs, budget, Limits())
        try:
            check_feasible(problem.scores(), problem.costs, budget, constraints)
        except InfeasibleBudget as err:
            if len(reasons) == len(budgets) - 1 and not kept:
                raise
            reasons.append(str(err))
        else:
            kept.append(budget)
    return kept, reasons


def _wanted(
    problem: Any, table: ScoreTable, budgets: Sequence[Budget],
    found: Mapping[Key, Entry | None], layers: Sequence[str], config: AdaptiveConfig,
) -> list[Key]:  # fmt: skip
    """The unmeasured layer cells of the contested decision cells, most expected regret first,
    until what is left at each budget is under `tolerance` of that plan's score."""
    costs = problem.costs
    current = replace(problem, table=table, _matrices={})
    point = current.scores()
    low, high = (_bound(current, table, column) for column in ("ci_low", "ci_high"))
    z = float(stats.norm.ppf(0.5 + config.confidence / 2))
    spread = np.where(np.isfinite(point), (high - np.where(np.isfinite(low), low, 0)) / (2 * z), 0)
    wanted: dict[Key, float] = {}
    for budget in budgets:
        plans = decided_plans(point, costs, budget)
        if not plans:
            continue
        limit = constraints_for(costs, budget, Limits())[0][1]
        regrets = contested(point, spread, costs.bytes, limit, plans[0], plans[1:], z)
        open_cells = {cell: _unmeasured(costs, cell, found, layers) for cell in regrets}
        ranked = sorted((c for c in regrets if open_cells[c]), key=lambda c: (-regrets[c], c))
        by_unit: dict[int, list[float]] = {}
        for cell in ranked:  # each unit's open regrets, largest first
            by_unit.setdefault(cell[0], []).append(regrets[cell])
        left = sum(values[0] for values in by_unit.values())  # a unit's decision: its worst pair
        allowed = config.tolerance * abs(total_score(point, plans[0]))
        for cell in ranked:
            if left <= allowed:
                break
            values = by_unit[cell[0]]
            left -= values.pop(0) - (values[0] if values else 0.0)
            for key in open_cells[cell]:
                wanted[key] = max(wanted.get(key, 0.0), regrets[cell])
    return sorted(wanted, key=lambda key: (-wanted[key], key))


def decided_plans(point: np.ndarray, costs: Any, budget: Budget) -> list[tuple[int, ...]]:
    """The default ILP's plans (filled as `allocate` fills them) at `budget`, then just below
    and above it; a plan that does not fit is left out."""
    plans = []
    for factor in (1.0, 1 - NEIGHBOUR_STEP, 1 + NEIGHBOUR_STEP):
        constraints = constraints_for(costs, Budget(budget.value * factor, budget.unit), Limits())
        selection = PLANS.select(point, costs, constraints)
        if selection.choice:
            plans.append(tuple(selection.choice))
    return plans


def _unmeasured(
    costs: Any, cell: tuple[int, int], found: Mapping[Key, Entry | None], layers: Sequence[str]
) -> list[Key]:
    """The exact estimator's keys of a decision cell's layers not measured yet (none: keep)."""
    scheme = costs.schemes[cell[1]]
    if scheme == KEEP:
        return []
    keys = [(EXACT, scheme, layer) for layer in costs.members[costs.units[cell[0]]]]
    return [key for key in keys if key[2] in layers and found.get(key) is None]


def _bound(problem: Any, table: ScoreTable, column: str) -> np.ndarray:
    """The decision units' matrix of one interval end."""
    bound = ScoreTable(table.frame.assign(score=table.frame[column]))
    matrix = score_matrix(bound, problem.costs, problem.estimator)
    return matrix if problem.allowed is None else np.where(problem.allowed, matrix, np.inf)
