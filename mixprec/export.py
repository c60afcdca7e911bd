"""Export a PrecisionPlan to what runtimes read: plain JSON, an HF-style quantization config,
llama.cpp `--tensor-type` overrides, or a GGUF file that carries the plan.

llama.cpp types for each format (`llamacpp_type`): llama.cpp's own types (family "ggml") and
f16/bf16/f32 as they are; any other format as the nearest type of at least as many bits, with
a warning naming the substitution (even mxfp4 -> mxfp4: llama.cpp rounds ties differently).
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
from mixprec.files import atomic_path, atomic_write_text
from mixprec.kernels import formats
from mixprec.kernels.formats import NumberFormat
from mixprec.plan import PrecisionPlan, normalize_assignment, quantized_weight
from mixprec.scheme import Scheme
from mixprec.store import EXPORT_SUFFIX
from mixprec.units import layer_weight, quantizable_layers, weight_matrix

TARGETS = tuple(EXPORT_SUFFIX)
# The llama.cpp type each other format is stored as: llama.cpp's values differ from the format's
# (other rounding, scale dtype or block), so each use is warned about. Family "ggml" formats
# are llama.cpp's own types, and the native ones its f32/f16/bf16.
LLAMACPP_NEAREST: dict[str, str] = {
    "mxfp4": "mxfp4", "nvfp4": "nvfp4", "int8": "q8_0", "int8_g128": "q8_0", "int4_g32": "q4_0",
    "int4": "q4_0", "int4_g64": "q4_0", "int4_g128": "q4_0", "int4_asym_g128": "q4_1",
    "nvint4": "q4_0", "int3": "q3_k", "int3_g128": "q3_k", "int2": "q2_k", "int2_g64": "q2_k",
    "fp8_e4m3": "q8_0", "fp8_e5m2": "q8_0", "mxfp8_e4m3": "q8_0", "mxfp8_e5m2": "q8_0",
    "mxint8": "q8_0", "mxint4": "q4_0", "fp6_e3m2": "q6_k", "fp6_e2m3": "q6_k",
    "mxfp6_e3m2": "q6_k", "mxfp6_e2m3": "q6_k", "fp4_e2m1": "iq4_nl",
}  # fmt: skip
LLAMACPP_NATIVE = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}


def llamacpp_type(fmt: NumberFormat) -> tuple[str, bool]:
    """The llama.cpp type that stores `fmt`, and whether it holds exactly the same values."""
    if fmt.ggml_type:
        return fmt.ggml_type, True
    if not fmt.is_quantized:
        return LLAMACPP_NATIVE[fmt.name], True
    return LLAMACPP_NEAREST[fmt.name], False


PLAN_KEY = "mixprec.plan"


@dataclass(frozen=True)
class Exported:
    """What was written, and what the user should know about it."""

    path: Path
    warnings: tuple[str, ...] = ()


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


def gguf_names(model: nn.Module, modules: list[str]) -> tuple[dict[str, str], list[str]]:
    """module -> GGUF tensor name (gguf's own HF name map for the model's architecture)."""
    import gguf

    model_type = _model_type(model)
    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}.get(model_type)
    if arch is None:
        raise MixprecError(
            f"no GGUF architecture for model type {model_type!r}; export with --to json or hf"
        )
    config = getattr(model, "config", None)
    blocks = int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 0))
    mapping = gguf.get_tensor_name_map(arch, blocks)
    names, missing = {}, []
    for module in modules:
        found = mapping.get_name(module, try_suffixes=(".weight",))
        if found is None:
            missing.append(module)
        else:
            names[module] = f"{found}.weight"
    return names, missing


def _model_type(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", None))


def llamacpp_overrides(plan: PrecisionPlan, model: nn.Module) -> tuple[list[str], list[str]]:
    """`--tensor-type NAME=TYPE` arguments for llama-quantize, and warnings."""
    names, missing = gguf_names(model, list(plan.assignment))
    warnings = [f"module {m} has no GGUF tensor name; left out" for m in missing]
    arguments = []
    substituted: dict[str, list[str]] = {}  # one warning per substitution, naming its modules
    for module, tensor in names.items():
        scheme = Scheme.parse(plan.assignment[module])
        fmt = scheme.weight or formats.get(_keep_format(model, module))
        kind, same = llamacpp_type(fmt)
        if not same:
            message = f"llama.cpp stores {fmt.name} as {kind}, with other values"
            substituted.setdefault(message, []).append(module)
        if scheme.activation is not None:
            substituted.setdefault(
                f"llama.cpp ignores the activation format of {scheme}", []
            ).append(module)
        arguments.append(f"--tensor-type {tensor}={kind}")
    for message, modules in substituted.items():
        shown = ", ".join(modules[:3]) + (
            f" and {len(modules) - 3} more" if len(modules) > 3 else ""
        )
        warnings.append(f"{message} ({shown})")
    return arguments, warnings


def _keep_format(model: nn.Module, module: str) -> str:
    size = weight_matrix(quantizable_layers(model)[module]).element_size()
    return {4: "fp32", 2: "fp16"}.get(size, "fp32")


def write_gguf(plan: PrecisionPlan, model: nn.Module, path: Path) -> list[str]:
    """The plan-applied weights (F32) under GGUF names, with the plan in the metadata; one
    layer is quantized and written at a time (the model itself is not changed or copied)."""
    import gguf

    names, missing = gguf_names(model, list(plan.assignment))
    layers = quantizable_layers(model)
    schemes = normalize_assignment(model, plan.assignment)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), _model_type(model))
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
        arguments, warnings = llamacpp_overrides(plan, model)
        atomic_write_text(out, "\n".join(arguments) + "\n")
        return Exported(out, tuple(warnings))
    return Exported(out, tuple(write_gguf(plan, model, out)))
