"""Export a PrecisionPlan to what runtimes read: plain JSON, an HF-style quantization config,
llama.cpp `--tensor-type` overrides, or a GGUF file that carries the plan.

llama.cpp's types for each format and the overrides file: mixprec/export_llamacpp.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from mixprec.errors import MixprecError, one_of
from mixprec.export_llamacpp import (
    LLAMACPP_NEAREST,
    gguf_names,
    llamacpp_overrides,
    llamacpp_type,
    model_type_of,
)
from mixprec.files import atomic_path, atomic_write_text
from mixprec.kernels.formats import NumberFormat
from mixprec.plan import PrecisionPlan, normalize_assignment, quantized_weight
from mixprec.scheme import Scheme
from mixprec.store import EXPORT_SUFFIX
from mixprec.units import layer_weight, quantizable_layers

TARGETS = tuple(EXPORT_SUFFIX)
__all__ = ["LLAMACPP_NEAREST", "gguf_names", "llamacpp_type"]  # also exported here
PLAN_KEY = "mixprec.plan"


@dataclass(frozen=True)
class Exported:
    """What was written, what to run with it, and what the user should know about it."""

    path: Path
    warnings: tuple[str, ...] = ()
    command: str = ""


def format_fields(fmt: NumberFormat | None) -> dict[str, Any] | None:
    """A format as a quantization config describes it."""
    if fmt is None:
        return None
    return {
        "format": fmt.name,
        "type": "int" if fmt.element_kind == "int" else "float",
        "num_bits": fmt.element_bits,
        "bits_per_element": fmt.bits_per_element,
        "block_size": fmt.block_size or None,
        "strategy": "group" if fmt.block_size else "channel",
        "scale_format": None if fmt.scale_format == "none" else fmt.scale_format,
        "symmetric": not fmt.zero_point_bits,
    }


def to_json(plan: PrecisionPlan) -> dict[str, Any]:
    layers = {}
    for module, text in plan.assignment.items():
        scheme = Scheme.parse(text)
        layers[module] = {
            "scheme": str(scheme),
            "weight": scheme.weight.name if scheme.weight else None,
            "activation": scheme.activation.name if scheme.activation else None,
        }
    return {"model": plan.model, "fingerprint": plan.fingerprint, "budget": plan.budget,
            "layers": layers}  # fmt: skip


def to_hf_config(plan: PrecisionPlan) -> dict[str, Any]:
    """Modules grouped by scheme, in the shape of an HF `quantization_config`."""
    groups: dict[str, list[str]] = {}
    for module, text in plan.assignment.items():
        groups.setdefault(str(Scheme.parse(text)), []).append(module)
    config_groups = {}
    for index, (text, modules) in enumerate(sorted(groups.items())):
        scheme = Scheme.parse(text)
        if scheme.is_keep:
            continue
        config_groups[f"group_{index}"] = {
            "targets": sorted(modules),
            "weights": format_fields(scheme.weight),
            "input_activations": format_fields(scheme.activation),
        }
    return {
        "quantization_config": {
            "quant_method": "mixprec",
            "plan_version": plan.version,
            "model_fingerprint": plan.fingerprint,
            "budget": plan.budget,
            "config_groups": config_groups,
            "ignore": sorted(groups.get("keep", [])),
        }
    }


def write_gguf(plan: PrecisionPlan, model: nn.Module, path: Path) -> list[str]:
    """The plan-applied weights (F32) under GGUF names, with the plan in the metadata; one
    layer is quantized and written at a time (the model itself is not changed or copied)."""
    import gguf

    names, missing = gguf_names(model, list(plan.assignment))
    layers = quantizable_layers(model)
    schemes = normalize_assignment(model, plan.assignment)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), model_type_of(model))
        writer.add_string(PLAN_KEY, json.dumps(plan.to_json(), sort_keys=True))
        for module, tensor in names.items():
            shape = tuple(layer_weight(layers[module]).shape)
            writer.add_tensor_info(tensor, shape, np.dtype(np.float32), 4 * math.prod(shape))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for module in names:  # in the order of the tensor infos
            weight = quantized_weight(layers[module], schemes[module]).float().cpu()
            writer.write_tensor_data(np.ascontiguousarray(weight.numpy(), dtype=np.float32))
        writer.close()
    return [f"module {m} has no GGUF tensor name; left out" for m in missing]


def read_gguf_plan(path: Path) -> PrecisionPlan:
    """The plan a GGUF written by `write_gguf` carries."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get(PLAN_KEY)
    if field is None:
        raise MixprecError(f"{path} carries no mixprec plan ({PLAN_KEY} is missing)")
    text = bytes(field.parts[field.data[0]]).decode("utf-8")
    return PrecisionPlan.from_json(json.loads(text), str(path))


def export_plan(
    plan: PrecisionPlan, target: str, out: Path, load: Callable[[], tuple[nn.Module, str]]
) -> Exported:
    """Write `plan` as `target`; `load` gives the model and its fingerprint where needed."""
    one_of("export target", target, TARGETS)
    model, fingerprint = load()
    plan.check_model(model, fingerprint)  # every target: same weights, every module a layer
    if target == "json":
        atomic_write_text(out, json.dumps(to_json(plan), indent=2) + "\n")
        return Exported(out)
    if target == "hf":
        atomic_write_text(out, json.dumps(to_hf_config(plan), indent=2) + "\n")
        return Exported(out)
    if target == "llamacpp":
        overrides = llamacpp_overrides(plan, model)
        atomic_write_text(out, overrides.text())
        return Exported(out, overrides.warnings, overrides.command(out))
    return Exported(out, tuple(write_gguf(plan, model, out)))
