"""What a plan costs: exact bytes, BOPs and optional latency per (decision unit, scheme); budgets.

A decision unit is one layer, or a fusion group (q/k/v under one parent) that must share a
scheme. Costs are matrices [units x schemes] so a solver re-solves a budget without touching
the model again.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mixprec.errors import MixprecError
from mixprec.metrics import BYTES_PER_MB, layer_weight_bytes
from mixprec.models import ModelBundle
from mixprec.scheme import Scheme
from mixprec.search.features import unit_features
from mixprec.units import DEFAULT_FUSION, discover_units, quantizable_layers, select, weight_matrix

FP16_BITS = 16
_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[-+]?\d+)?)\s*(bits|mb|x)\s*$", re.IGNORECASE)
WILDCARD_SHAPE = "*"
MAX_BUDGETS = 1000  # one Pareto sweep; each is a solve (and a measurement with --evaluate)


@dataclass(frozen=True)
class Budget:
    """`4.5bits` (average bits per quantizable weight, scales included), `12MB` (the whole
    model's stored size) or `0.3x` (of the quantizable weights' FP16 size)."""

    value: float
    unit: str  # bits | MB | x

    @classmethod
    def parse(cls, text: str | Budget) -> Budget:
        if isinstance(text, Budget):
            return text
        match = _BUDGET.match(text)
        if not match or not 0 < float(match.group(1)) < math.inf:
            raise MixprecError(
                f"bad budget {text!r}: use a positive finite number with a unit, e.g. 4.5bits, "
                "12MB, 0.3x"
            )
        unit = {"bits": "bits", "mb": "MB", "x": "x"}[match.group(2).lower()]
        return cls(float(match.group(1)), unit)

    def __str__(self) -> str:
        return f"{self.value:g}{self.unit}"

    def weight_bytes(self, costs: CostModel) -> float:
        """The budget as bytes for the quantizable weights."""
        if self.unit == "bits":
            return self.value * costs.total_params / 8
        if self.unit == "x":
            return self.value * costs.total_params * FP16_BITS / 8
        return self.value * BYTES_PER_MB - costs.fixed_bytes

    def from_weight_bytes(self, size: float, costs: CostModel) -> Budget:
        """`size` bytes of quantizable weights in this budget's unit (for error messages)."""
        if self.unit == "bits":
            return Budget(8 * size / costs.total_params, "bits")
        if self.unit == "x":
            return Budget(8 * size / costs.total_params / FP16_BITS, "x")
        return Budget((size + costs.fixed_bytes) / BYTES_PER_MB, "MB")


def parse_budgets(text: str) -> list[Budget]:
    """`3:8:0.5` (bits, both ends included) or a comma list such as `3bits,12MB,0.3x`."""
    if ":" in text:
        parts = text.split(":")
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:
            raise MixprecError(f"bad budget range {text!r}: use START:STOP:STEP in bits") from None
        if not all(map(np.isfinite, (start, stop, step))):
            raise MixprecError(f"bad budget range {text!r}: START, STOP and STEP must be finite")
        if step <= 0 or stop < start or start <= 0:
            raise MixprecError(f"bad budget range {text!r}: need 0 < START <= STOP and STEP > 0")
        count = int(np.floor((stop - start) / step + 1e-9)) + 1
        if count > MAX_BUDGETS:
            raise MixprecError(
                f"budget range {text!r} has {count:,} budgets; at most {MAX_BUDGETS:,} "
                "(use a larger STEP)"
            )
        return [Budget(round(start + i * step, 10), "bits") for i in range(count)]
    budgets = [Budget.parse(item) for item in text.split(",") if item.strip()]
    if not budgets or len(budgets) > MAX_BUDGETS:
        raise MixprecError(f"--budgets {text!r} must list 1 to {MAX_BUDGETS:,} budgets")
    return budgets


class InfeasibleBudget(MixprecError):
    """No plan fits: `smallest` is the least budget that would (None when a BOPs or latency
    limit, not the budget, is what cannot be met)."""

    def __init__(self, message: str, smallest: Budget | None = None) -> None:
        super().__init__(message)
        self.smallest = smallest


@dataclass(frozen=True)
class CostModel:
    """Costs of every (decision unit, scheme): `bytes` exact, `bops` from a shape trace."""

    model: str
    fingerprint: str
    units: tuple[str, ...]
    members: Mapping[str, tuple[str, ...]]
    schemes: tuple[str, ...]
    params: np.ndarray  # [units]
    bytes: np.ndarray  # [units, schemes]
    bops: np.ndarray  # [units, schemes]
    fixed_bytes: int  # parameters that are not quantizable weights, as stored
    latency: np.ndarray | None = None  # [units, schemes], seconds
    #: decision unit -> the block it lies in (itself where it is in none)
    block_of: Mapping[str, str] = field(default_factory=dict)
    #: [units, len(search.features.FEATURES)]: what learned allocators see of each unit
    features: np.ndarray | None = None

    @property
    def total_params(self) -> int:
        return int(self.params.sum())

    def index(self, scheme: str) -> int:
        try:
            return self.schemes.index(str(Scheme.parse(scheme)))
        except ValueError:
            raise MixprecError(
                f"scheme {scheme!r} is not a candidate; candidates: {', '.join(self.schemes)}"
            ) from None

    def assignment(self, choice: Sequence[int]) -> dict[str, str]:
        """module -> scheme for one scheme index per decision unit."""
        return {
            module: self.schemes[c]
            for unit, c in zip(self.units, choice, strict=True)
            for module in self.members[unit]
        }

    def choice_of(self, assignment: Mapping[str, str]) -> list[int]:
        """Inverse of `assignment`; every member of a unit must share its scheme."""
        choice = []
        for unit in self.units:
            schemes = {str(Scheme.parse(assignment.get(m, "keep"))) for m in self.members[unit]}
            if len(schemes) != 1:
                raise MixprecError(f"fusion group {unit} mixes schemes {sorted(schemes)}")
            choice.append(self.index(schemes.pop()))
        return choice

    def totals(self, choice: Sequence[int]) -> dict[str, float]:
        rows = np.arange(len(self.units))
        picked = np.asarray(choice)
        weight_bytes = float(self.bytes[rows, picked].sum())
        totals = {
            "weight_bytes": weight_bytes,
            "bits_per_weight": 8 * weight_bytes / self.total_params,
            "size_mb": (weight_bytes + self.fixed_bytes) / BYTES_PER_MB,
            "bops": float(self.bops[rows, picked].sum()),
        }
        if self.latency is not None:
            totals["latency_s"] = float(self.latency[rows, picked].sum())
        return totals


def build_cost_model(
    bundle: ModelBundle, schemes: Sequence[str], latency_csv: Path | None = None,
    fusion: tuple[tuple[str, ...], ...] = DEFAULT_FUSION,
) -> CostModel:  # fmt: skip
    """Costs of `schemes` for every fusion group (of the roles `fusion` ties) or layer of the
    bundle's model."""
    model = bundle.model
    layers = quantizable_layers(model)
    parsed = [Scheme.parse(s) for s in schemes]
    names = tuple(dict.fromkeys(str(s) for s in parsed))
    members: dict[str, list[str]] = {}
    discovered = discover_units(model, fusion)
    for unit in select(discovered, "layer"):
        members.setdefault(unit.group or unit.name, []).append(unit.name)
    blocks = select(discovered, "block")
    block_of = {
        decision: next((b.name for b in blocks if inside[0] in b.modules), decision)
        for decision, inside in members.items()
    }
    macs = trace_macs(model, bundle.calibration[0], bundle.task.outputs)
    units = tuple(members)
    size = np.zeros((len(units), len(names)))
    bops = np.zeros_like(size)
    for i, decision in enumerate(units):
        for j, name in enumerate(names):
            scheme = Scheme.parse(name)
            for module in members[decision]:
                layer = layers[module]
                size[i, j] += layer_weight_bytes(layer, scheme)
                bops[i, j] += (
                    macs.get(module, 0) * _bits(scheme, layer, "w") * _bits(scheme, layer, "a")
                )
    params = np.array([sum(weight_matrix(layers[m]).numel() for m in members[u]) for u in units])
    weights = {id(layers[m].weight) for m in layers}
    fixed = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in weights)
    latency = None
    if latency_csv is not None:
        latency = _latency_matrix(latency_csv, units, members, names, layers)
    frozen = {u: tuple(m) for u, m in members.items()}
    return CostModel(
        bundle.name,
        bundle.fingerprint,
        units,
        frozen,
        names,
        params,
        size,
        bops,
        fixed,
        latency,
        block_of,
        unit_features(layers, frozen, units),
    )


def _bits(scheme: Scheme, layer: nn.Module, role: str) -> float:
    fmt = scheme.weight if role == "w" else scheme.activation
    if fmt is None:
        return 8.0 * weight_matrix(layer).element_size()
    return fmt.bits_per_element


def trace_macs(model: nn.Module, batch: object, run: object) -> dict[str, int]:
    """Multiply-accumulates of each quantizable layer on one batch, from its traced shapes."""
    macs: dict[str, int] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            macs[name] = macs.get(name, 0) + _layer_macs(module, output)

        return record

    layers = quantizable_layers(model)
    handles = [mod.register_forward_hook(hook(n)) for n, mod in layers.items()]
    try:
        with torch.inference_mode():
            run(model, batch)  # type: ignore[operator]
    finally:
        for handle in handles:
            handle.remove()
    return macs


def _layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Each output element costs one dot product over the weight's input dimension."""
    matrix = weight_matrix(module)
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        per_output = matrix.shape[1]
        return int(output.numel() * per_output)
    return int(output.numel() * matrix.shape[1])


def shape_class(module: nn.Module) -> str:
    """`OUTxIN` of the weight matrix: the key a latency table is looked up by."""
    out, inp = weight_matrix(module).shape
    return f"{out}x{inp}"


def _latency_matrix(
    path: Path,
    units: tuple[str, ...],
    members: Mapping[str, list[str]],
    schemes: tuple[str, ...],
    layers: Mapping[str, nn.Module],
) -> np.ndarray:
    """Seconds per call from a CSV with columns format, shape, seconds (shape `*` = any)."""
    table = read_latency_table(path)
    matrix = np.zeros((len(units), len(schemes)))
    for i, unit in enumerate(units):
        for j, scheme in enumerate(schemes):
            for module in members[unit]:
                shape = shape_class(layers[module])
                key = scheme.split(",")[0].removeprefix("w:")
                found = table.get((key, shape), table.get((key, WILDCARD_SHAPE)))
                if found is None:
                    raise MixprecError(
                        f"latency table {path} has no row for format {key!r} and shape {shape} "
                        f"(nor shape {WILDCARD_SHAPE!r})"
                    )
                matrix[i, j] += found
    return matrix


def read_latency_table(path: Path) -> dict[tuple[str, str], float]:
    if not path.is_file():
        raise MixprecError(f"no latency table at {path}")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        need = {"format", "shape", "seconds"}
        if not reader.fieldnames or not need <= set(reader.fieldnames):
            raise MixprecError(f"latency table {path} needs columns {sorted(need)}")
        table = {}
        for line, row in enumerate(reader, start=2):
            try:
                seconds = float(row["seconds"])
            except ValueError:
                raise MixprecError(
                    f"{path}:{line}: seconds {row['seconds']!r} is not a number"
                ) from None
            if not math.isfinite(seconds) or seconds < 0:
                raise MixprecError(f"{path}:{line}: seconds {seconds} must be finite and >= 0")
            table[row["format"].strip(), row["shape"].strip()] = seconds
    return table
