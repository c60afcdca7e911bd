"""Calibrated input ranges: the largest finite |input| each layer sees on the calibration
split of the unquantized model (ModelOpt's max calibration), from which a static input scale
(FP8 per tensor: range / 448) is made once and stored, as the runtimes store it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mixprec.errors import MixprecError
from mixprec.units import quantizable_layers

if TYPE_CHECKING:
    from mixprec.models import ModelBundle
    from mixprec.plan import PrecisionPlan


def input_ranges(
    model: nn.Module,
    batches: Sequence[Any],
    forward: Callable[[nn.Module, Any], object],
    layers: Iterable[str] | None = None,
) -> dict[str, float]:
    """Per layer (default: every quantizable one), the largest finite |input| over `batches`
    run through `forward(model, batch)`; inf and NaN are left out, as they carry no range."""
    modules = quantizable_layers(model)
    names = list(modules) if layers is None else list(layers)
    seen = dict.fromkeys(names, 0.0)

    def recorder(name: str) -> Callable[[nn.Module, tuple[object, ...]], None]:
        def record(_: nn.Module, args: tuple[object, ...]) -> None:
            x = args[0] if args else None
            if isinstance(x, torch.Tensor) and x.numel():
                mags = x.detach().abs().float()
                finite = torch.where(torch.isfinite(mags), mags, 0.0)
                seen[name] = max(seen[name], float(finite.max()))

        return record

    handles = [modules[n].register_forward_pre_hook(recorder(n)) for n in names]
    try:
        with torch.inference_mode():
            for batch in batches:
                forward(model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def with_input_ranges(plan: PrecisionPlan, bundle: ModelBundle) -> PrecisionPlan:
    """`plan` with the calibrated input range of every layer whose scheme has a static input
    scale (from `bundle`'s calibration split), where the plan does not hold it yet."""
    from mixprec.plan import static_inputs

    missing = [m for m in static_inputs(plan) if m not in plan.input_ranges]
    if not missing:
        return plan
    if not bundle.calibration:
        raise MixprecError(
            f"module {missing[0]}: a static input scale needs calibration data, and "
            f"{bundle.name} has no calibration split"
        )
    ranges = bundle.input_ranges
    return replace(plan, input_ranges={**plan.input_ranges, **{m: ranges[m] for m in missing}})
