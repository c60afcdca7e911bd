"""`apply_plan`, the one way an assignment of schemes touches a model (fake quantization), and
the PrecisionPlan that stores an assignment on disk (JSON, checked against plan.schema.json)."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from mixprec.errors import MixprecError
from mixprec.files import atomic_write_text
from mixprec.kernels import dispatch, reference
from mixprec.kernels.dispatch import KernelPreference, quantize_dequantize
from mixprec.kernels.formats import NumberFormat
from mixprec.kernels.packing import PackedTensor
from mixprec.kernels.reference import QuantizedGroups
from mixprec.scheme import Scheme
from mixprec.units import (
    Unit,
    activation_channel_dim,
    fusion_groups,
    layer_weight,
    matrix_to_weight,
    quantizable_layers,
    weight_matrix,
)

Assignment = Union[Mapping[str, Scheme | str], "PrecisionPlan"]


class ActivationQuantizer:
    """Forward pre-hook that fake-quantizes a layer's input along its channel dim (a static
    input format: with the tensor-wide scale of the layer's calibrated input range `amax`)."""

    def __init__(
        self,
        fmt: NumberFormat,
        channel_dim: int,
        kernel: KernelPreference = KernelPreference.AUTO,
        amax: float | None = None,
    ) -> None:
        self.fmt = fmt
        self.channel_dim = channel_dim
        self.kernel = kernel
        self.amax = amax

    def __call__(self, module: nn.Module, args: tuple[object, ...]) -> tuple[object, ...]:
        x = args[0]
        if not isinstance(x, torch.Tensor):
            return args
        moved = x.movedim(self.channel_dim, -1)
        rows = moved.reshape(-1, moved.shape[-1])  # per-channel formats: one scale per token
        if self.amax is not None:
            quantized = reference.static_quantize_dequantize(rows, self.fmt, self.amax)
        else:
            quantized = quantize_dequantize(rows, self.fmt, self.kernel)
        quantized = quantized.reshape(moved.shape)
        return (quantized.movedim(-1, self.channel_dim).to(x.dtype), *args[1:])


def static_inputs(assignment: Assignment) -> list[str]:
    """The layers whose scheme quantizes their inputs with a static (calibrated) scale."""
    if isinstance(assignment, PrecisionPlan):
        assignment = assignment.assignment
    parsed = {m: Scheme.parse(s) for m, s in assignment.items()}
    return [m for m, s in parsed.items() if s.activation is not None and s.activation.static_input]


def input_range(ranges: Mapping[str, float] | None, name: str, scheme: Scheme) -> float:
    """The calibrated input range of layer `name`, whose `scheme` has a static input scale."""
    if ranges is None or name not in ranges:
        raise MixprecError(
            f"module {name}: {scheme} quantizes its inputs with a static scale, and no "
            "calibrated input range was given for it (a plan made by search records them; "
            "Python: mixprec.calibration.with_input_ranges)"
        )
    return float(ranges[name])


def normalize_assignment(model: nn.Module, assignment: Assignment) -> dict[str, Scheme]:
    """Parse schemes and check every name is a quantizable layer of `model`."""
    if isinstance(assignment, PrecisionPlan):
        assignment = assignment.assignment
    layers = quantizable_layers(model)
    parsed: dict[str, Scheme] = {}
    for name, scheme in assignment.items():
        if name not in layers:
            some = ", ".join(list(layers)[:3])
            raise MixprecError(
                f"module {name!r} is not a quantizable layer of this model "
                f"({len(layers)} are, e.g. {some})"
            )
        parsed[name] = Scheme.parse(scheme)
    return parsed


def apply_plan(
    model: nn.Module,
    assignment: Assignment,
    inplace: bool = False,
    kernel: str | KernelPreference = KernelPreference.AUTO,
    packed: bool = False,
    importance: Mapping[str, torch.Tensor] | None = None,
    input_ranges: Mapping[str, float] | None = None,
) -> nn.Module:
    """Quantize the named layers' weights (and inputs, where the scheme says) in a copy.

    `kernel` picks the torch reference or the Triton kernels (same bits). By default weights
    are fake-quantized in their dtype (computed in float32, cast back); `packed=True` swaps
    each quantized layer for a `PackedLayer` that holds codes and scales only and runs the
    dequant-matmul. A tied weight (an LM head that is the embedding matrix) is one tensor
    with one scheme: its other users see the quantized values too, as in a runtime that
    stores it once. Shards a runtime fuses, under a format whose per-tensor scale they share
    (`fused_scale`), are quantized as the one matrix the runtime holds. `importance` (per
    layer, llama.cpp's importance matrix: `mixprec.imatrix.layer_importance`) quantizes the
    llama.cpp types as llama-quantize --imatrix does. `input_ranges` (per layer, the calibrated
    largest |input|; default: a PrecisionPlan's own) fix the static input scales.
    """
    if packed and importance:
        raise MixprecError("--packed does not take an importance matrix (--imatrix)")
    if input_ranges is None and isinstance(assignment, PrecisionPlan):
        input_ranges = assignment.input_ranges
    parsed = normalize_assignment(model, assignment)
    kernel = KernelPreference.parse(kernel)
    target = model if inplace else copy.deepcopy(model)
    layers = quantizable_layers(target)
    tied = tied_users(target)
    with torch.no_grad():
        fused = fused_shards(layers, parsed)
        for name, scheme in parsed.items():
            module = layers[name]
            _remove_activation_quantizers(module)
            if scheme.weight is None:
                continue
            channel_dim = activation_channel_dim(module)
            weight = layer_weight(module)
            others = [(u, a) for u, a in tied.get(id(weight), ()) if u is not module]
            quantized = None
            if not (packed and scheme.weight.is_quantized) or others:
                matrix = fused[name].matrix if name in fused else None
                if matrix is None and importance and name in importance and scheme.weight:
                    matrix = reference.quantize_dequantize(
                        weight_matrix(module).detach().float(), scheme.weight, importance[name]
                    )
                quantized = nn.Parameter(quantized_weight(module, scheme, kernel, matrix),
                                         requires_grad=weight.requires_grad)  # fmt: skip
            if packed and scheme.weight.is_quantized:
                from mixprec.packed import PackedLayer, replace_module

                module = PackedLayer(module, scheme.weight, kernel, fused.get(name))
                target = replace_module(target, name, module)
            else:
                assert quantized is not None
                module.weight = quantized
            for user, attr in others:  # the same tensor elsewhere (tied): the same bits there
                setattr(user, attr, quantized)
            if scheme.activation is not None:
                amax = None
                if scheme.activation.static_input:
                    amax = input_range(input_ranges, name, scheme)
                hook = ActivationQuantizer(scheme.activation, channel_dim, kernel, amax)
                module.register_forward_pre_hook(hook)
    return target


def quantized_weight(
    module: nn.Module, scheme: Scheme, kernel: KernelPreference = KernelPreference.AUTO,
    matrix: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """The layer's weight after `scheme`, in its own layout and dtype (computed in float32);
    the weight itself where the scheme keeps it; `matrix`: its quantized values, made already."""
    weight = layer_weight(module).detach()
    if scheme.weight is None:
        return weight
    if matrix is None:
        matrix = quantize_dequantize(weight_matrix(module).detach().float(), scheme.weight, kernel)
    return matrix_to_weight(module, matrix).to(weight.dtype)


class FusedStack:
    """The stacked weight matrices (float32) of one fused layer under one format: its quantized
    values, scale groups and packed form, each made once, on first use, for all its shards."""

    def __init__(self, matrix: torch.Tensor, fmt: NumberFormat) -> None:
        self.matrix = matrix
        self.fmt = fmt
        self._packed: dict[str, PackedTensor] = {}

    @cached_property
    def quantized(self) -> torch.Tensor:
        return quantize_dequantize(self.matrix, self.fmt)  # runtime formats: the torch one

    @cached_property
    def groups(self) -> QuantizedGroups:
        return reference.quantize(self.matrix, self.fmt)

    def packed(self, kernel: str | KernelPreference = KernelPreference.TORCH) -> PackedTensor:
        key = str(kernel)
        if key not in self._packed:
            self._packed[key] = dispatch.pack(self.matrix, self.fmt, kernel)
        return self._packed[key]


@dataclass(frozen=True)
class FusedShard:
    """One shard of a fused layer quantized together with its siblings: their shared stack and
    this shard's rows [start, stop) of it."""

    stack: FusedStack
    start: int
    stop: int

    @property
    def matrix(self) -> torch.Tensor:
        return self.stack.quantized[self.start : self.stop]

    def packed(self, kernel: str | KernelPreference = KernelPreference.TORCH) -> PackedTensor:
        return self.stack.packed(kernel).row_slice(self.start, self.stop)


def fused_shards(layers: Mapping[str, nn.Module], parsed: Mapping[str, Scheme]
                 ) -> dict[str, FusedShard]:  # fmt: skip
    """Shards of one fused layer under one `fused_scale` format, quantized as one matrix."""
    stacks: dict[tuple[str, Scheme], list[str]] = {}
    for name, group in fusion_groups(parsed).items():
        fmt = parsed[name].weight
        if fmt is not None and fmt.fused_scale:
            stacks.setdefault((group, parsed[name]), []).append(name)
    out: dict[str, FusedShard] = {}
    for (_, scheme), members in stacks.items():
        matrices = [weight_matrix(layers[m]).detach().float() for m in members]
        if len(members) < 2 or len({m.shape[1:] for m in matrices}) > 1:
            continue
        assert scheme.weight is not None
        stack = FusedStack(torch.cat(matrices), scheme.weight)
        start = 0
        for member, matrix in zip(members, matrices, strict=True):
            out[member] = FusedShard(stack, start, start + matrix.shape[0])
            start += matrix.shape[0]
    return out


@contextmanager
def temporarily_applied(
    model: nn.Module,
    assignment: Assignment,
    kernel: str | KernelPreference = KernelPreference.AUTO,
    importance: Mapping[str, torch.Tensor] | None = None,
    input_ranges: Mapping[str, float] | None = None,
) -> Iterator[nn.Module]:
    """Apply a plan in place for the `with` block, then restore weights and hooks exactly.

    Cheaper than `apply_plan`'s copy when one model is probed under many small plans.
    """
    layers = quantizable_layers(model)
    names = list(normalize_assignment(model, assignment))
    saved = {n: (layers[n].weight, dict(layers[n]._forward_pre_hooks)) for n in names}
    tied = tied_users(model)
    shared = [(user, attr, layers[n].weight) for n in names
              for user, attr in tied.get(id(layers[n].weight), ())]  # fmt: skip
    try:
        yield apply_plan(model, assignment, inplace=True, kernel=kernel, importance=importance,
                         input_ranges=input_ranges)  # fmt: skip
    finally:
        for name, (weight, hooks) in saved.items():
            module = layers[name]
            module.weight = weight
            module._forward_pre_hooks.clear()
            module._forward_pre_hooks.update(hooks)
        for user, attr, weight in shared:
            setattr(user, attr, weight)


def tied_users(model: nn.Module) -> dict[int, list[tuple[nn.Module, str]]]:
    """For each parameter held by more than one module (tied weights), every (module, name)
    that holds it."""
    users: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for attr, param in module.named_parameters(recurse=False):
            users.setdefault(id(param), []).append((module, attr))
    return {key: held for key, held in users.items() if len(held) > 1}


def _remove_activation_quantizers(module: nn.Module) -> None:
    hooks = module._forward_pre_hooks
    for key in [k for k, h in hooks.items() if isinstance(h, ActivationQuantizer)]:
        del hooks[key]


def uniform_assignment(units: Iterable[Unit], scheme: Scheme | str) -> dict[str, Scheme]:
    """Every layer unit under one scheme."""
    parsed = Scheme.parse(scheme)
    return {u.name: parsed for u in units if u.level == "layer"}


PLAN_VERSION = 1
SCHEMA_FILE = Path(__file__).with_name("plan.schema.json")


@dataclass(frozen=True)
class PrecisionPlan:
    """A versioned, JSON-only record of one scheme per module of one model's weights."""

    model: str
    fingerprint: str
    assignment: Mapping[str, str]
    budget: str
    predicted: Mapping[str, float] = field(default_factory=dict)
    measured: Mapping[str, float] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    # per layer with a static input scale: the largest |input| seen in calibration
    input_ranges: Mapping[str, float] = field(default_factory=dict)
    version: int = PLAN_VERSION

    def to_json(self) -> dict[str, Any]:
        ranges = {"input_ranges": dict(self.input_ranges)} if self.input_ranges else {}
        return {
            "version": self.version,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "assignment": dict(self.assignment),
            "budget": self.budget,
            "predicted": dict(self.predicted),
            "measured": dict(self.measured),
            "provenance": dict(self.provenance),
            **ranges,
        }

    @property
    def target(self) -> str:
        """The runtime the plan was made for (search.targets; `any` when none was named)."""
        recorded = self.provenance.get("target")
        return recorded if isinstance(recorded, str) else "any"

    @property
    def dtype(self) -> str:
        """The dtype the model was in when the plan was made (`auto` for older plans)."""
        recorded = self.provenance.get("dtype")
        return recorded if isinstance(recorded, str) else "auto"

    def save(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_json(), indent=2, sort_keys=False) + "\n")

    def with_measured(self, measured: Mapping[str, float]) -> PrecisionPlan:
        return replace(self, measured=dict(measured))

    def check_model(self, model: nn.Module, fingerprint: str) -> None:
        """The plan was made for this model: same weights, every module a quantizable layer."""
        if fingerprint != self.fingerprint:
            raise MixprecError(
                f"plan was made for model {self.model!r} with fingerprint {self.fingerprint[:12]}, "
                f"not this model ({fingerprint[:12]}; made in dtype {self.dtype}: another "
                "--dtype gives other weights)"
            )
        normalize_assignment(model, self.assignment)

    @classmethod
    def from_json(cls, data: object, source: str = "plan") -> PrecisionPlan:
        """Validate against plan.schema.json, then the version and every scheme."""
        import jsonschema

        if isinstance(data, dict) and data.get("version") not in (None, PLAN_VERSION):
            raise MixprecError(
                f"{source}: plan version {data.get('version')!r} is unknown; this mixprec reads "
                f"version {PLAN_VERSION}"
            )
        schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
        try:
            jsonschema.validate(data, schema)
        except jsonschema.ValidationError as err:
            where = "/".join(map(str, err.absolute_path)) or "top level"
            raise MixprecError(f"{source}: not a valid plan at {where}: {err.message}") from None
        assert isinstance(data, dict)
        for module, scheme in data["assignment"].items():
            try:
                Scheme.parse(scheme)
            except MixprecError as err:
                raise MixprecError(f"{source}: module {module!r}: {err}") from None
        for module, value in data.get("input_ranges", {}).items():
            if not math.isfinite(value):  # JSON's NaN and Infinity pass the schema
                raise MixprecError(f"{source}: input range of {module!r} is {value}; a "
                                   "calibrated range is a finite number >= 0")  # fmt: skip
        fields = {k: data[k] for k in data if k != "version"}
        return cls(**fields, version=data["version"])

    @classmethod
    def load(cls, path: Path) -> PrecisionPlan:
        if not path.is_file():
            raise MixprecError(f"no plan at {path}")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MixprecError(f"{path} is not JSON: {err}") from None
        return cls.from_json(data, str(path))
