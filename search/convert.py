"""A plan converted for a checkpoint target it was not made for (`export --to compressed-tensors
| modelopt` of a plan made for `any`, or for llama.cpp): each layer takes the target's scheme
nearest its own (no fewer element bits; then the same element kind, symmetry and scale format;
then the fewest bits per weight) that the target runs on its shape, else it is kept; shards the
runtime fuses take the widest of their schemes; a tied head is kept. Each change is one warning
naming its layers, and one more gives the bits per weight before and after."""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from mixprec.kernels.formats import NumberFormat
from mixprec.metrics import footprint
from mixprec.plan import PrecisionPlan
from mixprec.scheme import KEEP, Scheme
from mixprec.search.targets import TIED_HEAD, refusal
from mixprec.units import fusion_groups, quantizable_layers, tied_to_embedding, weight_matrix


@dataclass(frozen=True)
class Conversion:
    """The plan as the target runs it, and what changed on the way."""

    plan: PrecisionPlan
    warnings: tuple[str, ...] = ()


def candidates(target: str) -> tuple[NumberFormat, ...]:
    """The weight-only formats mixprec writes for a checkpoint target (a layer converts to
    one of them: activation formats are never added by a conversion)."""
    if target == "compressed-tensors":
        from mixprec.export_compressed import CT_WRITTEN as written
    else:
        from mixprec.export_modelopt import MO_ALGORITHMS

        written = tuple(MO_ALGORITHMS)
    schemes = [Scheme.parse(text) for text in written]
    return tuple(s.weight for s in schemes if s.weight is not None and s.activation is None)


def convert_plan(plan: PrecisionPlan, target: str, model: nn.Module) -> Conversion:
    """`plan` as `target` runs it; a plan made for `target` is returned as it is."""
    if plan.target == target:
        return Conversion(plan)
    layers = quantizable_layers(model)
    tied = tied_to_embedding(model)
    changed: dict[str, list[str]] = {}  # one warning per change, naming its layers
    assignment: dict[str, str] = {}
    for module, text in plan.assignment.items():
        scheme = Scheme.parse(text)
        shape = tuple(weight_matrix(layers[module]).shape)
        new, why = _nearest(scheme, shape, target, module in tied)
        assignment[module] = new
        if new != str(scheme):
            changed.setdefault(f"{scheme} -> {new} ({why})", []).append(module)
    for module, group in _widest(assignment).items():
        if assignment[module] != group:
            changed.setdefault(f"{assignment[module]} -> {group} (one scheme per fused layer)",
                               []).append(module)  # fmt: skip
            assignment[module] = group
    # the converted plan is one made for `target` (valid as it is when saved)
    provenance = {**plan.provenance, "target": target, "converted_from": plan.target}
    converted = replace(plan, assignment=assignment, provenance=provenance)
    if not changed:
        return Conversion(converted)
    warnings = [f"for {target}: {change}: {_shown(modules)}" for change, modules in changed.items()]
    before = footprint(model, plan.assignment).bits_per_weight
    after = footprint(model, assignment).bits_per_weight
    count = sum(assignment[m] != str(Scheme.parse(t)) for m, t in plan.assignment.items())
    warnings.append(f"the plan is converted for {target} ({count} of {len(assignment)} layers "
                    f"changed): {before:.3f} -> {after:.3f} bits per weight")  # fmt: skip
    return Conversion(converted, tuple(warnings))


def _nearest(scheme: Scheme, shape: tuple[int, ...], target: str, tied: bool) -> tuple[str, str]:
    """The target's scheme for one layer planned as `scheme`, and why it differs."""
    why = None if scheme.is_keep else refusal(target, scheme, shape, tied)
    if why is None:
        return str(scheme), ""
    if tied:
        return KEEP, TIED_HEAD
    fmt = scheme.weight
    assert fmt is not None
    written = candidates(target)
    if scheme.activation is not None or fmt not in written:
        why = f"{target} has no {scheme}"
    bits = fmt.element_bits if fmt.is_quantized else 16

    def order(c: NumberFormat) -> tuple[int, bool, bool, bool, float]:
        return (c.element_bits, c.element_kind != fmt.element_kind, c.symmetric != fmt.symmetric,
                c.scale_format != fmt.scale_format, c.bits_per_element)  # fmt: skip

    for candidate in sorted(written, key=order):
        option = Scheme(candidate)
        if candidate.element_bits >= bits and refusal(target, option, shape) is None:
            return str(option), why
    return KEEP, f"{why}; nothing of {bits} bits or more runs on rows of {shape[-1]}"


def _widest(assignment: dict[str, str]) -> dict[str, str]:
    """For each fused shard, the scheme with the most bits per element among its group's."""
    groups: dict[str, list[str]] = {}
    for module, group in fusion_groups(assignment).items():
        groups.setdefault(group, []).append(module)
    widest: dict[str, str] = {}
    for members in groups.values():
        best = max((assignment[m] for m in members), key=_bits)
        widest.update(dict.fromkeys(members, best))
    return widest


def _bits(text: str) -> float:
    fmt = Scheme.parse(text).weight
    return float("inf") if fmt is None else fmt.bits_per_element


def _shown(modules: list[str]) -> str:
    more = f" and {len(modules) - 3} more" if len(modules) > 3 else ""
    return ", ".join(modules[:3]) + more
