"""Multiple-choice knapsack as an ILP: one scheme per unit, minimum total score under budgets.

A pure function of score and cost matrices. Schemes another scheme of the same unit beats on
score and every cost are dropped first (the optimum never uses them), which keeps re-solving
a budget fast; CBC (bundled with PuLP) or HiGHS then solves the rest exactly.

Pairwise `interactions` (what two cells cost together beyond their two scores) enter exactly,
each product of two picks linearised with one auxiliary variable; dominance pruning then keeps
every cell of a unit that interacts, and the additive reduced-cost bound is not used.
A plan that leaves more of the byte budget unused than `ILPConfig.fill` is replaced by the best
plan that does not, where one exists (users expect the budget they give to be used).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pulp

from mixprec.errors import MixprecError, one_of
from mixprec.search.base import SearchStrategy, register_strategy
from mixprec.search.configs import SOLVERS, ILPConfig
from mixprec.search.cost import CostModel
from mixprec.search.greedy import solve_greedy
from mixprec.search.selection import (
    Constraint,
    Interactions,
    Selection,
    feasible_mask,
    reduced_cost_mask,
    undominated,
)

FULLEST_SECONDS = 60.0  # the bound on a search for a full plan (least_left, solve_filled)
FULLEST_SOLVER = "highs"  # CBC took 314 s on a MiniLM INT8/INT4 floor where HiGHS took 0.4 s
GAP = 1e-9  # relative optimality gap: solve to optimality, not to the solvers' 1e-4 default


def total_score(scores: np.ndarray, choice: Sequence[int],
                interactions: Interactions | None = None) -> float:  # fmt: skip
    """The objective of `choice`: its cells' scores plus every interaction it picks both ends of."""
    value = float(sum(scores[i, k] for i, k in enumerate(choice)))
    for (i, a, j, b), extra in (interactions or {}).items():
        if choice[i] == a and choice[j] == b:
            value += extra
    return value


def check_interactions(scores: np.ndarray, interactions: Interactions) -> None:
    """Each pair names two different units and schemes that exist, with a finite value."""
    units, schemes = scores.shape
    for (i, a, j, b), extra in interactions.items():
        if i == j or not (0 <= i < units and 0 <= j < units and 0 <= a < schemes
                          and 0 <= b < schemes) or not np.isfinite(extra):  # fmt: skip
            raise MixprecError(
                f"interaction {(i, a, j, b)} = {extra} is not a finite term between two units "
                f"of {units} with schemes of {schemes}"
            )


def solve_ilp(
    scores: np.ndarray,
    constraints: Sequence[Constraint],
    solver: str = "cbc",
    time_limit: float | None = None,
    interactions: Interactions | None = None,
    floor: float | None = None,
) -> Selection:
    """Minimise the summed score of one scheme per unit (plus the `interactions` of the pairs
    picked) subject to sum(cost) <= limit for each constraint, and the first constraint's sum
    >= `floor` where given. Cells with a non-finite score are never picked."""
    one_of("solver", solver, SOLVERS)
    pairs = dict(interactions or {})
    check_interactions(scores, pairs)
    costs = [c for c, _ in constraints]
    allowed = undominated(scores, costs) if floor is None else feasible_mask(scores)
    interacting = sorted({i for i, _, _, _ in pairs} | {j for _, _, j, _ in pairs})
    allowed[interacting] = np.isfinite(scores[interacting])  # dominance assumes additivity
    if not allowed.any(axis=1).all():
        return Selection((), "infeasible", float("nan"))
    # the greedy plan bounds the optimum only where it also meets the floor
    incumbent = solve_greedy(scores, constraints) if floor is None else Selection((), "", 0.0)
    if incumbent.choice and pairs:
        incumbent = Selection(incumbent.choice, incumbent.status,
                              total_score(scores, incumbent.choice, pairs))  # fmt: skip
    # solver tolerances are partly absolute: bring the objective near 1
    scale = incumbent.objective if incumbent.choice and incumbent.objective > 0 else 1.0
    given, scores = scores, scores / scale
    if incumbent.choice and not pairs:
        allowed &= reduced_cost_mask(
            scores, costs[0], constraints[0][1], incumbent.objective / scale
        )
    problem = pulp.LpProblem("mixprec", pulp.LpMinimize)
    cells = list(zip(*np.nonzero(allowed), strict=True))
    picks = pulp.LpVariable.dicts("x", range(len(cells)), cat=pulp.LpBinary)
    goal = pulp.lpSum(float(scores[i, k]) * picks[n] for n, (i, k) in enumerate(cells))
    index = {(int(i), int(k)): n for n, (i, k) in enumerate(cells)}
    for t, ((i, a, j, b), extra) in enumerate(pairs.items()):
        if (i, a) not in index or (j, b) not in index or extra == 0:
            continue  # a cell never picked: the pair never occurs
        first, second = picks[index[i, a]], picks[index[j, b]]
        both = pulp.LpVariable(f"y{t}", lowBound=0, upBound=1)  # = first * second, exactly
        problem += both <= first, f"y{t}_a"
        problem += both <= second, f"y{t}_b"
        problem += both >= first + second - 1, f"y{t}_ab"
        goal += float(extra) / scale * both
    problem += goal
    by_unit: dict[int, list[int]] = {}
    for n, (i, _) in enumerate(cells):
        by_unit.setdefault(int(i), []).append(n)
    for i, members in by_unit.items():
        problem += pulp.lpSum(picks[n] for n in members) == 1, f"one_{i}"
    for c, (cost, limit) in enumerate(constraints):
        terms = [(picks[n], float(cost[i, k])) for n, (i, k) in enumerate(cells)]
        problem += pulp.LpAffineExpression(terms) <= float(limit), f"budget_{c}"
        if c == 0 and floor is not None:
            problem += pulp.LpAffineExpression(terms) >= float(floor), "floor"
    backend = (
        pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit, threads=1, gapRel=GAP, gapAbs=GAP)
        if solver == "cbc"
        else pulp.HiGHS(msg=False, timeLimit=time_limit, threads=1, gapRel=GAP, gapAbs=GAP)
    )
    problem.solve(backend)
    status = pulp.LpStatus[problem.status].lower()
    if status != "optimal":
        return Selection((), status, float("nan"))
    choice = [0] * scores.shape[0]
    for n, (i, k) in enumerate(cells):
        if (picks[n].value() or 0) > 0.5:
            choice[int(i)] = int(k)
    objective = total_score(given, choice, pairs)
    if incumbent.choice and incumbent.objective < objective:
        # CBC can report "optimal" for a plan worse than the greedy start it was given
        # (tests/unit/search/test_ilp.py has such a problem); never return the worse one
        return Selection(incumbent.choice, status, incumbent.objective)
    return Selection(tuple(choice), status, objective)


def least_left(
    scores: np.ndarray, cost: np.ndarray, limit: float, solver: str = FULLEST_SOLVER,
    time_limit: float = FULLEST_SECONDS,
) -> float:  # fmt: skip
    """The least share of `limit` any plan (one finite-score cell per unit) leaves unused:
    whether a budget can be filled to within some share at all, whatever the scores. Exact
    unless `time_limit` stops the search (then the fullest plan found); NaN where no plan fits.
    HiGHS by default: CBC did not finish this subset-sum in 10 min where HiGHS took 0.6 s."""
    allowed = feasible_mask(scores)
    dearest = np.where(allowed, cost, -np.inf).max(axis=1, keepdims=True)
    unused = np.where(allowed, (dearest - cost) / limit, np.inf)  # least total = fullest plan
    fullest = solve_ilp(unused, [(cost, limit)], solver, time_limit)
    if not fullest.choice:
        return float("nan")
    return float((limit - selected_total(cost, fullest.choice)) / limit)


@register_strategy(ILPConfig)
class ILPStrategy(SearchStrategy):
    """The exact optimum of the additive score model under the budget (with the measured
    pairwise terms, where the config asks)."""

    config: ILPConfig

    def select(
        self, scores: np.ndarray, costs: CostModel, constraints: list[Constraint]
    ) -> Selection:
        if self.config.interactions and self.interactions is None:
            raise MixprecError(
                "ilp with interactions needs measured pairwise terms: "
                "problem.with_interactions(measure_interactions(...)) first"
            )
        pairs = self.interactions if self.config.interactions else None
        return solve_filled(scores, constraints, self.config.fill, self.config.solver,
                            self.config.time_limit, pairs, self.config.fill_cost)  # fmt: skip


def solve_filled(
    scores: np.ndarray, constraints: Sequence[Constraint], fill: float, solver: str = "cbc",
    time_limit: float | None = None, interactions: Interactions | None = None,
    fill_cost: float = np.inf,
) -> Selection:  # fmt: skip
    """The optimum, unless it leaves more than `fill` of the first constraint's limit unused
    and the best of the plans that full scores at most `fill_cost` (a share of the optimum's
    score) worse: then that plan (`best_full`; not found in its time, the optimum stands)."""
    best = solve_ilp(scores, constraints, solver, time_limit, interactions)
    cost, limit = constraints[0]
    if not best.choice or limit - selected_total(cost, best.choice) <= fill * limit:
        return best
    fuller = best_full(scores, constraints, fill, time_limit, interactions)
    if not fuller.choice:  # none that full: the optimum is the answer
        return best
    optimum = total_score(scores, best.choice, interactions)
    worth = total_score(scores, fuller.choice, interactions) - optimum <= fill_cost * abs(optimum)
    return fuller if worth else best


def best_full(
    scores: np.ndarray, constraints: Sequence[Constraint], fill: float,
    time_limit: float | None = None, interactions: Interactions | None = None,
) -> Selection:  # fmt: skip
    """The best plan that leaves at most `fill` of the first constraint's limit unused, searched
    by FULLEST_SOLVER within FULLEST_SECONDS (or `time_limit` where shorter); none: no choice."""
    bound = min(time_limit or FULLEST_SECONDS, FULLEST_SECONDS)
    floor = (1 - fill) * constraints[0][1]
    return solve_ilp(scores, constraints, FULLEST_SOLVER, bound, interactions, floor=floor)


def selected_total(cost: np.ndarray, choice: Sequence[int]) -> float:
    """The summed cost of one cell per unit."""
    return float(cost[np.arange(len(choice)), list(choice)].sum())
