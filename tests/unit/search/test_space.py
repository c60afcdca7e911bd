"""Exclusions and search spaces: which schemes each unit may take, and one-line errors."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mixprec.allocation import AllocationProblem, allocate
from mixprec.errors import MixprecError
from mixprec.search.configs import UniformConfig
from mixprec.search.space import search_space
from mixprec.search.uniform import solve_uniform
from mixprec.testing import synthetic_problem


def test_the_first_matching_space_decides_and_exclusions_come_first() -> None:
    _, _, costs = synthetic_problem()
    first, second = costs.units[0], costs.units[1]
    allowed = search_space(
        costs, [f"^{first}$"], {f"^{first}$": ["w:int8"], ".": ["w:int4_g128", "keep"]}
    )
    assert allowed is not None
    assert [costs.schemes[k] for k in np.flatnonzero(allowed[0])] == ["keep"]
    assert [costs.schemes[k] for k in np.flatnonzero(allowed[1])] == ["w:int4_g128", "keep"]
    assert second != first and search_space(costs, [], {}) is None


def test_uniform_keeps_excluded_units_and_quantizes_the_rest() -> None:
    bundle, table, costs = synthetic_problem()
    kept = costs.units[-1]
    problem = AllocationProblem.build(table, bundle, exclude=[f"^{kept}$"])
    plan = allocate(problem, "9bits", UniformConfig())
    others = {str(s) for unit, s in plan.assignment.items() if unit != kept}
    assert str(plan.assignment[kept]) == "keep" and len(others) == 1 and others != {"keep"}
    assert plan.provenance["exclude"] == [f"^{kept}$"]


def test_uniform_on_a_hand_made_matrix() -> None:
    inf = np.inf
    scores = np.array([[1.0, 2.0, 0.0], [inf, inf, 0.0], [3.0, 1.0, 0.0]])  # unit 1 pinned
    bytes_ = np.array([[1.0, 2.0, 4.0], [1.0, 2.0, 4.0], [1.0, 2.0, 4.0]])
    # scheme 0: 1 + 4 + 1 = 6 bytes <= 7, score 1 + 0 + 3 = 4; scheme 1: 2 + 4 + 2 = 8 > 7
    best = solve_uniform(scores, [(bytes_, 7.0)])
    assert best.choice == (0, 2, 0) and best.objective == 4.0
    roomy = solve_uniform(scores, [(bytes_, 8.0)])  # scheme 1 fits too and scores 2 + 0 + 1
    assert roomy.choice == (1, 2, 1) and roomy.objective == 3.0
    no_common = np.array([[1.0, 1.0, inf], [inf, 1.0, 1.0], [1.0, inf, 1.0]])  # none pinned
    assert not solve_uniform(no_common, [(bytes_, 99.0)]).choice


@pytest.mark.parametrize(
    ("exclude", "spaces", "message"),
    [
        (["("], {}, "exclude '(' is not a regular expression"),
        (["nothing-like-it"], {}, "exclude 'nothing-like-it' matches no unit of"),
        ([], {".": ["w:fp8_e5m2"]}, "search space '.': 'w:fp8_e5m2' is not a candidate"),
        ([], {".": []}, "search space '.': 'no scheme' is not a candidate"),
        ([], {".": ["w:int9"]}, "bad scheme 'w:int9'"),
    ],
)
def test_bad_patterns_are_one_line(
    exclude: list[str], spaces: dict[str, list[str]], message: str
) -> None:
    _, _, costs = synthetic_problem()
    with pytest.raises(MixprecError, match=re.escape(message)) as info:
        search_space(costs, exclude, spaces)
    assert "\n" not in str(info.value)


def test_exclusion_needs_keep_among_the_candidates() -> None:
    bundle, table, _ = synthetic_problem()
    with pytest.raises(MixprecError, match="keeps units as stored: add keep to schemes"):
        AllocationProblem.build(table, bundle, schemes=["w:int8"], exclude=["."])
