"""Judge a quantized model: task metrics vs FP32, size in MB and effective bits per weight."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mixprec.comparison import PerSample, interval
from mixprec.kernels.dispatch import KernelPreference, choose
from mixprec.models import ModelBundle
from mixprec.plan import (
    Assignment,
    PrecisionPlan,
    apply_plan,
    normalize_assignment,
    static_inputs,
    temporarily_applied,
)
from mixprec.scheme import Scheme
from mixprec.tasks import Observed
from mixprec.units import quantizable_layers, weight_matrix

BYTES_PER_MB = 1_000_000


@dataclass(frozen=True)
class Footprint:
    """Bytes of every parameter, and bits per element over the quantizable weights only."""

    total_bytes: int
    quantizable_bytes: int
    quantizable_params: int

    @property
    def size_mb(self) -> float:
        return self.total_bytes / BYTES_PER_MB

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.quantizable_bytes / self.quantizable_params


@dataclass(frozen=True)
class Evaluation:
    """What `mixprec evaluate` reports."""

    metrics: dict[str, float]
    size_mb: float
    bits_per_weight: float
    kernel: str = "torch (reference)"
    packed: bool = False
    #: the metrics that are ratios of sums over evaluation samples, per sample
    per_sample: Mapping[str, PerSample] = field(default_factory=dict, compare=False, repr=False)

    def intervals(self) -> dict[str, tuple[float, float]]:
        """A 95% bootstrap interval over evaluation samples for each metric that has one."""
        return {name: interval(values) for name, values in sorted(self.per_sample.items())}

    def to_json(self) -> dict[str, object]:
        return {
            "metrics": dict(self.metrics),
            "intervals": {k: list(v) for k, v in self.intervals().items()},
            "size_mb": self.size_mb,
            "bits_per_weight": self.bits_per_weight,
            "kernel": self.kernel,
            "packed": self.packed,
        }


def layer_weight_bytes(module: nn.Module, scheme: Scheme) -> int:
    """Bytes to store one layer's weight under `scheme` (`keep`: its own dtype)."""
    matrix = weight_matrix(module)
    return scheme.weight_storage_bytes(tuple(matrix.shape), matrix.element_size())


def footprint(model: nn.Module, assignment: Assignment) -> Footprint:
    """Exact storage: assigned weights at their format's bytes, everything else as stored."""
    schemes = normalize_assignment(model, assignment)
    layers = quantizable_layers(model)
    weight_ids = {id(mod.weight): name for name, mod in layers.items()}
    total = quantizable = params = 0
    for param in model.parameters():  # each shared (tied) tensor once
        name = weight_ids.get(id(param))
        if name is None:
            total += param.numel() * param.element_size()
            continue
        size = layer_weight_bytes(layers[name], schemes.get(name, Scheme(None)))
        total += size
        quantizable += size
        params += param.numel()
    return Footprint(total, quantizable, params)


def _outputs(
    bundle: ModelBundle, model: nn.Module, progress: Callable[[int, int], None] | None
) -> list[Any]:
    """The task's outputs on each evaluation batch, saying how far it got after each."""
    outputs = []
    for batch in bundle.evaluation:
        outputs.append(bundle.task.outputs(model, batch))
        if progress is not None:
            progress(len(outputs), len(bundle.evaluation))
    return outputs


def evaluate(
    bundle: ModelBundle,
    assignment: Mapping[str, Scheme | str],
    kernel: str | KernelPreference = KernelPreference.AUTO,
    packed: bool = False,
    importance: Mapping[str, torch.Tensor] | None = None,
    input_ranges: Mapping[str, float] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Apply the assignment to the model in place (restored afterwards; no copy of the model)
    and measure it on the evaluation split; `packed` measures a packed copy; `importance`
    (default: the bundle's) and `input_ranges` (default: a plan's own, else the bundle's
    calibration): see `apply_plan`; `progress(done, total)` after each evaluation batch.

    The result names the kernel that ran (`kernel` resolved for the model's device).
    """
    choice = choose(kernel, next(bundle.model.parameters()).device)
    importance = bundle.importance if importance is None else importance
    ranges = calibrated(bundle, assignment, input_ranges)
    reference = bundle.reference_outputs  # from the unquantized weights, before any change
    if packed:
        quantized = apply_plan(bundle.model, assignment, kernel=kernel, packed=True,
                               input_ranges=ranges)  # fmt: skip
        with torch.inference_mode():
            outputs = _outputs(bundle, quantized, progress)
    else:
        applied = temporarily_applied(bundle.model, assignment, kernel, importance, ranges)
        with applied as model, torch.inference_mode():
            outputs = _outputs(bundle, model, progress)
    run = Observed(outputs, reference, bundle.evaluation)
    size = footprint(bundle.model, assignment)
    return Evaluation(bundle.task.metrics(run), size.size_mb, size.bits_per_weight, str(choice),
                      packed, bundle.task.per_sample(run))  # fmt: skip


def calibrated(bundle: ModelBundle, assignment: Assignment,
               given: Mapping[str, float] | None = None) -> Mapping[str, float] | None:  # fmt: skip
    """The input ranges for `assignment`'s static input scales: `given`, a plan's own, else
    the bundle's calibration (made only when some layer has a static input scale)."""
    if given is not None:
        return given
    if isinstance(assignment, PrecisionPlan) and assignment.input_ranges:
        return assignment.input_ranges
    return bundle.input_ranges if static_inputs(assignment) else None


def measured_divergence(bundle: ModelBundle, assignment: Assignment) -> float:
    """The task's divergence to FP32 on the evaluation split, quantizing the model in place
    (faster than a copy; restored afterwards): what measured search objectives minimise."""
    applied = temporarily_applied(bundle.model, assignment, importance=bundle.importance,
                                  input_ranges=calibrated(bundle, assignment))  # fmt: skip
    with applied as model, torch.inference_mode():
        outputs = [bundle.task.outputs(model, b) for b in bundle.evaluation]
    return bundle.task.divergence_to_reference(outputs, list(bundle.reference_outputs))
