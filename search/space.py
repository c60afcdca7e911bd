"""What each decision unit may take: every candidate, unless an exclusion keeps it as stored or
a search space (ModelOpt's module_search_spaces) narrows its schemes. Patterns are regular
expressions searched in the unit's name and its layers' names; the first space that matches a
unit decides it.

The word `default` in an exclude list stands for what users of llama.cpp and ModelOpt expect
kept: the LM head (often the embedding matrix itself). MoE routers are never quantized (vLLM
and ModelOpt keep them), whatever the list says."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from mixprec.errors import MixprecError
from mixprec.scheme import KEEP, Scheme
from mixprec.search.cost import CostModel

DEFAULT = "default"  # in an exclude list: the DEFAULT_EXCLUDE patterns that match
NONE = "none"  # an exclude list of its own: nothing kept by default
DEFAULT_EXCLUDE: tuple[tuple[str, str], ...] = ((r"(^|\.)lm_head$", "LM head (default)"),)
ALWAYS_EXCLUDE: tuple[tuple[str, str], ...] = (
    (r"(^|\.)(router|gate|shared_expert_gate)$", "MoE router (always)"),
)


def _built_in(exclude: Sequence[str]) -> list[tuple[str, str]]:
    """The built-in (pattern, why) rules an exclude list brings in."""
    return list(ALWAYS_EXCLUDE) + (list(DEFAULT_EXCLUDE) if DEFAULT in exclude else [])


def expand_exclude(names: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """The patterns an exclude list stands for over layer `names`: `default` becomes the
    default patterns that match something, `none` nothing; MoE routers are always added."""
    chosen = [p for p, _ in _built_in(exclude) if any(re.search(p, n) for n in names)]
    for pattern in exclude:
        if pattern == NONE and len(exclude) > 1:
            raise MixprecError(f"exclude {NONE!r} keeps nothing by default: give it alone")
        if pattern not in (DEFAULT, NONE) and pattern not in chosen:
            chosen.append(pattern)
    return chosen


def kept_by_default(name: str, exclude: Sequence[str] = (DEFAULT,)) -> str | None:
    """Why layer `name` is kept as stored by the built-in rules (None: it is searched)."""
    return next((why for pattern, why in _built_in(exclude) if re.search(pattern, name)), None)


def search_space(
    costs: CostModel, exclude: Sequence[str], spaces: Mapping[str, Sequence[str]]
) -> np.ndarray | None:
    """[units, schemes] booleans: what each unit may take (None: everything). `exclude` may
    hold `default` and `none` (see `expand_exclude`)."""
    exclude = expand_exclude([m for u in costs.units for m in (u, *costs.members[u])], exclude)
    if not exclude and not spaces:
        return None
    allowed = np.ones((len(costs.units), len(costs.schemes)), dtype=bool)
    decided = np.zeros(len(costs.units), dtype=bool)
    for pattern in exclude:
        if KEEP not in costs.schemes:
            raise MixprecError(f"exclude {pattern!r} keeps units as stored: add keep to schemes")
        rows = matching_units(costs, pattern, "exclude")
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
        rows = [r for r in matching_units(costs, pattern, "search space") if not decided[r]]
        allowed[rows] = np.isin(np.asarray(costs.schemes), names)
        decided[rows] = True
    return allowed


def matching_units(costs: CostModel, pattern: str, what: str) -> list[int]:
    """Rows of the units whose name or a layer's name `pattern` finds (none is an error)."""
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


def parse_spaces(texts: Sequence[str]) -> dict[str, list[str]]:
    """`--space 'REGEX=SCHEME,SCHEME'` entries as {regex: schemes}, in the order given."""
    spaces: dict[str, list[str]] = {}
    for text in texts:
        pattern, sep, listed = text.rpartition("=")
        schemes = [s.strip() for s in listed.split(",") if s.strip()]
        if not sep or not pattern or not schemes:
            raise MixprecError(
                f"--space {text!r} is not REGEX=SCHEME[,SCHEME...] (e.g. 'self_attn=w:int8,keep')"
            )
        spaces[pattern] = schemes
    return spaces
