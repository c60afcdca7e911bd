"""The runtimes a plan is made for, and what each runs: `any` is mixprec's own evaluation
(every format, every shape); `llamacpp` runs llama.cpp's own types (family "ggml") and its
f16/bf16/f32, weights only, on rows that hold whole blocks (32; 256 for K-quants), where
llama-quantize would silently fall back to another type. A plan records its target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mixprec.errors import MixprecError, one_of
from mixprec.scheme import KEEP, Scheme
from mixprec.search.cost import CostModel
from mixprec.search.space import matching_units

TARGETS = ("any", "llamacpp")


def refusal(target: str, scheme: Scheme, shape: Sequence[int]) -> str | None:
    """Why `target` cannot run `scheme` on a weight of `shape` (out, in); None: it can."""
    one_of("target", target, TARGETS)
    if target == "any" or scheme.is_keep:
        return None
    if scheme.activation is not None:
        return f"llama.cpp has no activation formats ({scheme})"
    fmt = scheme.weight
    assert fmt is not None
    if fmt.is_quantized and fmt.family != "ggml":
        return f"llama.cpp has no {fmt.name} (its own types are q8_0 .. q2_k and mxfp4_ggml)"
    row = int(shape[-1])
    if row % fmt.row_multiple:
        return f"rows of {row} are not a multiple of {fmt.name}'s block of {fmt.row_multiple}"
    return None


def target_space(
    costs: CostModel, shapes: Mapping[str, Sequence[int]], target: str
) -> np.ndarray | None:
    """[units, schemes] booleans: what `target` runs for each unit (None: everything)."""
    one_of("target", target, TARGETS)
    if target == "any":
        return None
    allowed = np.ones((len(costs.units), len(costs.schemes)), dtype=bool)
    for row, unit in enumerate(costs.units):
        layers = costs.members[unit] or (unit,)
        for column, text in enumerate(costs.schemes):
            scheme = Scheme.parse(text)
            allowed[row, column] = all(refusal(target, scheme, shapes[m]) is None for m in layers)
    runnable = [s for i, s in enumerate(costs.schemes) if s != KEEP and allowed[:, i].any()]
    if not runnable:
        raise MixprecError(
            f"target {target} runs none of the candidates ({', '.join(costs.schemes)}); "
            f"score its own types, e.g. w:q4_k, w:q6_k, w:q8_0"
        )
    return allowed


def check_spaces(
    costs: CostModel,
    shapes: Mapping[str, Sequence[int]],
    target: str,
    spaces: Mapping[str, Sequence[str]],
) -> None:
    """A search space that asks for a scheme the target cannot run on a layer it names is a
    mistake: one line naming the layer and why."""
    if target == "any":
        return
    for pattern, schemes in spaces.items():
        for row in matching_units(costs, pattern, "search space"):
            unit = costs.units[row]
            layers = costs.members[unit] or (unit,)
            for text in schemes:
                scheme = Scheme.parse(text)
                reasons = [(m, refusal(target, scheme, shapes[m])) for m in layers]
                for layer, why in reasons:
                    if why:
                        raise MixprecError(
                            f"search space {pattern!r} asks for {scheme} on {layer}, which "
                            f"target {target} cannot run: {why}"
                        )
