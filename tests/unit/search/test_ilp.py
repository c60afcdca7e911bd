"""The ILP on hand-solved problems and against brute force; the greedy baseline's guarantees."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from mixprec.errors import MixprecError
from mixprec.search.greedy import solve_greedy
from mixprec.search.ilp import least_left, selected_total, solve_filled, solve_ilp
from mixprec.search.selection import lagrangian_bound, reduced_cost_mask, undominated
from tests.helpers.search import brute_force

ROOT = Path(__file__).resolve().parents[3]


def test_hand_solved_knapsack() -> None:
    # two units, schemes (cheap, mid, keep); bytes 1/2/4 for unit 0, 2/3/8 for unit 1
    scores = np.array([[5.0, 1.0, 0.0], [9.0, 2.0, 0.0]])
    costs = np.array([[1.0, 2.0, 4.0], [2.0, 3.0, 8.0]])
    assert solve_ilp(scores, [(costs, 3.0)]).choice == (0, 0)
    assert solve_ilp(scores, [(costs, 4.0)]).choice == (0, 1)  # spend on the bigger saving
    assert solve_ilp(scores, [(costs, 5.0)]).choice == (1, 1)
    assert solve_ilp(scores, [(costs, 12.0)]).choice == (2, 2)
    assert solve_ilp(scores, [(costs, 12.0)]).objective == 0.0
    assert solve_ilp(scores, [(costs, 2.0)]).status == "infeasible"


@pytest.mark.parametrize("seed", range(8))
def test_least_left_is_the_fullest_plan_by_brute_force(seed: int) -> None:
    """What the study verdicts compare a plan's unused budget with: the fullest plan's."""
    gen = np.random.default_rng(seed)
    units, schemes = int(gen.integers(2, 7)), int(gen.integers(2, 5))
    scores = np.where(gen.uniform(size=(units, schemes)) < 0.2, np.inf, 1.0)
    scores[:, 0] = 1.0  # every unit keeps one choice
    costs = gen.integers(1, 40, (units, schemes)).astype(float)
    least, most = costs.min(1).sum(), costs.max(1).sum()
    limit = float(least + gen.uniform(0, 1) * (most - least))
    rows, best = np.arange(units), np.inf
    for choice in itertools.product(range(schemes), repeat=units):
        total = costs[rows, list(choice)].sum()
        if np.isfinite(scores[rows, list(choice)]).all() and total <= limit:
            best = min(best, (limit - total) / limit)
    assert least_left(scores, costs, limit) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("solver", ["cbc", "highs"])
@pytest.mark.parametrize("fill_cost", [0.0, 0.1, np.inf])
@pytest.mark.parametrize("seed", range(10))
def test_a_filled_plan_is_the_best_of_the_plans_that_full_by_brute_force(
    solver: str, fill_cost: float, seed: int
) -> None:
    gen = np.random.default_rng(seed)
    units, schemes = int(gen.integers(2, 7)), int(gen.integers(2, 5))
    scores = gen.uniform(0, 10, (units, schemes))
    scores[gen.uniform(size=(units, schemes)) < 0.15] = np.inf
    scores[:, 0] = gen.uniform(0, 10, units)  # every unit keeps one choice
    costs = gen.integers(1, 40, (units, schemes)).astype(float)
    least, most = costs.min(1).sum(), costs.max(1).sum()
    limit, fill = float(least + gen.uniform(0, 1) * (most - least)), 0.05
    optimum = brute_force(scores, [(costs, limit)])
    full = brute_force(scores, [(costs, limit), (-costs, -(1 - fill) * limit)])
    plan = solve_filled(scores, [(costs, limit)], fill, solver, fill_cost=fill_cost)
    if not optimum.choice:
        assert plan.status == optimum.status == "infeasible"
        return
    expected = optimum
    loose = limit - selected_total(costs, optimum.choice) > fill * limit
    if loose and full.choice and full.objective <= (1 + fill_cost) * optimum.objective + 1e-9:
        expected = full
    assert plan.objective == pytest.approx(expected.objective, rel=1e-9)
    assert selected_total(costs, plan.choice) <= limit
    if full.choice and fill_cost == np.inf:  # some plan is that full: so is the answer
        assert selected_total(costs, plan.choice) >= (1 - fill) * limit - 1e-9
    assert plan.objective <= (1 + fill_cost) * optimum.objective + 1e-9


def test_a_fuller_plan_predicted_much_worse_is_not_taken() -> None:
    scores = np.array([[0.0, 1.0, 100.0], [0.0, 1.0, 100.0]])  # 32, 8 or 2 bytes a unit
    costs = np.array([[32.0, 8.0, 2.0], [32.0, 8.0, 2.0]])
    # within 34 bytes the optimum is 8 + 8 (score 2, 18 bytes left); only 32 + 2 fills it
    cheap = solve_filled(scores, [(costs, 34.0)], 0.005, fill_cost=0.01)
    assert cheap.choice == (1, 1)
    assert solve_filled(scores, [(costs, 34.0)], 0.005, fill_cost=np.inf).choice in [(0, 2), (2, 0)]


def test_least_left_without_a_plan_is_nan() -> None:
    assert np.isnan(least_left(np.ones((2, 2)), np.full((2, 2), 5.0), 4.0))


def test_secondary_constraint_changes_the_optimum() -> None:
    scores = np.array([[5.0, 1.0], [9.0, 2.0]])
    size = np.array([[1.0, 2.0], [1.0, 2.0]])
    bops = np.array([[1.0, 1.0], [1.0, 5.0]])
    assert solve_ilp(scores, [(size, 4.0)]).choice == (1, 1)
    assert solve_ilp(scores, [(size, 4.0), (bops, 3.0)]).choice == (1, 0)


def test_non_finite_scores_are_never_picked() -> None:
    scores = np.array([[np.inf, 1.0], [3.0, np.inf]])
    costs = np.array([[1.0, 5.0], [1.0, 0.5]])
    assert solve_ilp(scores, [(costs, 10.0)]).choice == (1, 0)
    assert solve_ilp(scores, [(costs, 6.0)]).choice == (1, 0)
    assert solve_ilp(scores, [(costs, 5.5)]).status == "infeasible"


@pytest.mark.parametrize("solver", ["cbc", "highs"])
@pytest.mark.parametrize("seed", range(12))
def test_ilp_equals_brute_force(solver: str, seed: int) -> None:
    gen = np.random.default_rng(seed)
    units, schemes = int(gen.integers(2, 9)), int(gen.integers(2, 5))
    scores = gen.uniform(0, 10, (units, schemes))
    costs = gen.uniform(1, 10, (units, schemes))
    bops = gen.uniform(1, 10, (units, schemes))
    least, most = costs.min(1).sum(), costs.max(1).sum()
    limit = least + gen.uniform(0, 1) * (most - least)
    constraints = [(costs, limit)] + ([(bops, bops.mean(1).sum())] if seed % 2 else [])
    exact, ilp = brute_force(scores, constraints), solve_ilp(scores, constraints, solver)
    assert ilp.status == exact.status
    if exact.choice:
        assert ilp.objective == pytest.approx(exact.objective, rel=1e-9)
        greedy = solve_greedy(scores, constraints)
        if greedy.choice:  # the baseline is feasible and never better than the optimum
            rows = np.arange(units)
            assert all(
                c[rows, list(greedy.choice)].sum() <= lim * (1 + 1e-9) for c, lim in constraints
            )
            assert greedy.objective >= exact.objective - 1e-9


def test_dominated_schemes_are_dropped_and_ties_keep_one() -> None:
    scores = np.array([[1.0, 2.0, 1.0, 0.5]])
    costs = np.array([[2.0, 3.0, 2.0, 9.0]])
    assert undominated(scores, [costs]).tolist() == [[True, False, False, True]]


def test_unknown_solver() -> None:
    with pytest.raises(MixprecError, match="unknown solver 'gurobi'; valid: cbc, highs"):
        solve_ilp(np.zeros((1, 1)), [(np.zeros((1, 1)), 1.0)], "gurobi")


def test_greedy_takes_the_best_saving_per_byte_first() -> None:
    scores = np.array([[10.0, 0.0], [10.0, 5.0]])
    costs = np.array([[1.0, 3.0], [1.0, 2.0]])  # unit 0 saves 10 for 2 bytes, unit 1 5 for 1
    assert solve_greedy(scores, [(costs, 4.0)]).choice == (1, 0)
    assert solve_greedy(scores, [(costs, 5.0)]).choice == (1, 1)


@pytest.mark.parametrize("seed", range(6))
def test_lagrangian_bound_never_exceeds_the_optimum(seed: int) -> None:
    gen = np.random.default_rng(seed)
    scores, costs = gen.uniform(0, 10, (6, 4)), gen.uniform(1, 10, (6, 4))
    limit = costs.min(1).sum() + 0.3 * (costs.max(1).sum() - costs.min(1).sum())
    exact = brute_force(scores, [(costs, limit)])
    bound, price = lagrangian_bound(scores, costs, limit)
    assert price >= 0 and bound <= exact.objective + 1e-9
    kept = reduced_cost_mask(scores, costs, limit, exact.objective)
    assert all(kept[i, k] for i, k in enumerate(exact.choice))  # the optimum survives


@pytest.mark.parametrize("solver", ["cbc", "highs"])
def test_a_problem_cbc_once_solved_wrong_gets_the_true_optimum(solver: str) -> None:
    """digits-cnn's isolation scores for ten schemes + keep at 5 bits/weight (from
    experiments/agents.py): CBC reported "optimal" for a plan 1.4% worse than the greedy one."""
    data = np.load(ROOT / "tests" / "helpers" / "data" / "cbc_suboptimal.npz")
    scores, cost, limit = data["scores"], data["cost"], float(data["limit"])
    units, schemes = scores.shape
    every = np.indices((schemes,) * units, dtype=np.int8).reshape(units, -1)  # all plans
    rows = np.arange(units)[:, None]
    fits = cost[rows, every].sum(axis=0) <= limit
    optimum = scores[rows, every].sum(axis=0)[fits].min()
    found = solve_ilp(scores, [(cost, limit)], solver)
    assert found.status == "optimal"
    assert cost[np.arange(units), list(found.choice)].sum() <= limit
    assert found.objective == pytest.approx(optimum, rel=1e-12)


def test_an_interaction_changes_the_optimum_it_prices() -> None:
    """Alone, one unit up and one down is best; when that pair costs 10 more together, both stay
    down; a pair worth 5 more together is taken where the additive optimum takes neither."""
    scores = np.array([[1.0, 0.0], [1.0, 0.0]])
    costs = np.array([[1.0, 3.0], [1.0, 3.0]])
    alone = solve_ilp(scores, [(costs, 4.0)])
    assert alone.choice in ((0, 1), (1, 0)) and alone.objective == 1.0
    apart = {(0, 1, 1, 0): 10.0, (0, 0, 1, 1): 10.0}
    assert solve_ilp(scores, [(costs, 4.0)], interactions=apart).choice == (0, 0)
    assert solve_ilp(scores, [(costs, 6.0)]).choice == (1, 1)
    helped = solve_ilp(scores, [(costs, 6.0)], interactions={(0, 0, 1, 0): -5.0})
    assert helped.choice == (0, 0) and helped.objective == -3.0


@pytest.mark.parametrize("solver", ["cbc", "highs"])
@pytest.mark.parametrize("seed", range(16))
def test_ilp_with_interactions_equals_brute_force(solver: str, seed: int) -> None:
    """Random pairwise terms of both signs, some on cells another cell of the same unit
    dominates (dominance no longer decides there): the exact optimum, as brute force finds it."""
    gen = np.random.default_rng(100 + seed)
    units, schemes = int(gen.integers(2, 7)), int(gen.integers(2, 4))
    scores = gen.uniform(0, 10, (units, schemes))
    costs = gen.uniform(1, 10, (units, schemes))
    limit = costs.min(1).sum() + gen.uniform(0, 1) * (costs.max(1).sum() - costs.min(1).sum())
    pairs = {}
    for _ in range(int(gen.integers(1, 3 * units))):
        i, j = (int(u) for u in gen.choice(units, 2, replace=False))
        pairs[i, int(gen.integers(schemes)), j, int(gen.integers(schemes))] = gen.uniform(-8, 8)
    exact = brute_force(scores, [(costs, limit)], pairs)
    ilp = solve_ilp(scores, [(costs, limit)], solver, interactions=pairs)
    assert ilp.status == exact.status
    if exact.choice:
        assert ilp.objective == pytest.approx(exact.objective, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("pair", [(0, 0, 0, 1), (0, 0, 2, 0), (0, 5, 1, 0)])
def test_an_interaction_that_names_no_pair_of_cells_is_one_line(
    pair: tuple[int, int, int, int],
) -> None:
    scores, costs = np.ones((2, 2)), np.ones((2, 2))
    with pytest.raises(MixprecError, match=r"interaction .* is not a finite term between two"):
        solve_ilp(scores, [(costs, 4.0)], interactions={pair: 1.0})
    with pytest.raises(MixprecError, match="not a finite term"):
        solve_ilp(scores, [(costs, 4.0)], interactions={(0, 0, 1, 0): float("nan")})
