"""What each decision unit may take: every candidate, unless an exclusion keeps it as stored or
a search space (ModelOpt's module_search_spaces) narrows its schemes. Patterns are regular
expressions searched in the unit's name and its layers' names; the first space that matches a
unit decides it."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from mixprec.errors import MixprecError
from mixprec.scheme import KEEP, Scheme
from mixprec.search.cost import CostModel


def search_space(
    costs: CostModel, exclude: Sequence[str], spaces: Mapping[str, Sequence[str]]
) -> np.ndarray | None:
    """[units, schemes] booleans: what each unit may take (None: everything)."""
    if not exclude and not spaces:
        return None
    allowed = np.ones((len(costs.units), len(costs.schemes)), dtype=bool)
    decided = np.zeros(len(costs.units), dtype=bool)
    for pattern in exclude:
        if KEEP not in costs.schemes:
            raise MixprecError(f"exclude {pattern!r} keeps units as stored: add keep to schemes")
        rows = _matching(costs, pattern, "exclude")
        allowed[rows] = False
        allowed[rows, costs.schemes.index(KEEP)] = True
        decided[rows] = True
    for pattern, schemes in spaces.items():
        names = [KEEP if s == KEEP else str(Scheme.parse(s)) for s in schemes]
        unknown = [n for n in names if n not in costs.schemes]
        if not names or unknown:
            raise MixprecError(
                f"search space {pattern!r}: {unknown[0] if unknown else 'no scheme'!r} is not a "
                f"candidate; candidates: {', '.join(costs.schemes)}"
            )
        rows = [r for r in _matching(costs, pattern, "search space") if not decided[r]]
        allowed[rows] = np.isin(np.asarray(costs.schemes), names)
        decided[rows] = True
    return allowed


def _matching(costs: CostModel, pattern: str, what: str) -> list[int]:
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise MixprecError(f"{what} {pattern!r} is not a regular expression: {err}") from None
    rows = [
        i
        for i, unit in enumerate(costs.units)
        if any(compiled.search(name) for name in (unit, *costs.members[unit]))
    ]
    if not rows:
        raise MixprecError(
            f"{what} {pattern!r} matches no unit of {costs.model}; units look like "
            f"{costs.units[0]!r}"
        )
    return rows
