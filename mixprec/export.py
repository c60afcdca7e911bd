"""Export a PrecisionPlan to what runtimes read: plain JSON, an HF-style quantization config,
llama.cpp `--tensor-type-file` overrides, or a complete GGUF built on the converter's.

llama.cpp's types and the overrides: mixprec/export_llamacpp.py; the GGUF: export_gguf.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from mixprec.errors import MixprecError, one_of
from mixprec.export_gguf import PLAN_KEY, write_gguf
from mixprec.export_llamacpp import llamacpp_overrides
from mixprec.files import atomic_write_text
from mixprec.kernels.formats import NumberFormat
from mixprec.plan import PrecisionPlan
from mixprec.scheme import Scheme
from mixprec.store import EXPORT_SUFFIX

TARGETS = tuple(EXPORT_SUFFIX)


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


def read_gguf_plan(path: Path) -> PrecisionPlan:
    """The plan a GGUF written by `write_gguf` carries."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get(PLAN_KEY)
    if field is None:
        raise MixprecError(f"{path} carries no mixprec plan ({PLAN_KEY} is missing)")
    text = bytes(field.parts[field.data[0]]).decode("utf-8")
    return PrecisionPlan.from_json(json.loads(text), str(path))


def base_for(target: str, source: str, base: Path | None = None) -> Path | None:
    """The base GGUF a `gguf` export builds on: `base` if given, else the model's own, made by
    llama.cpp's converter (cached); other targets take none."""
    if target != "gguf" or base is not None:
        return base
    from mixprec.llamacpp import base_gguf
    from mixprec.models import checkpoint_folder

    try:
        folder = checkpoint_folder(source)
    except MixprecError as err:
        raise MixprecError(f"--to gguf builds on a base GGUF: give --base MODEL-F16.gguf ({err})"
                           ) from None  # fmt: skip
    return base_gguf(folder)


def export_plan(
    plan: PrecisionPlan, target: str, out: Path, load: Callable[[], tuple[nn.Module, str]],
    base: Path | None = None,
) -> Exported:  # fmt: skip
    """Write `plan` as `target`; `load` gives the model and its fingerprint where needed, and
    `base` (gguf) is the GGUF from llama.cpp's converter the plan's tensors go into."""
    one_of("export target", target, TARGETS)
    if (target == "gguf") != (base is not None):
        raise MixprecError("--base MODEL-F16.gguf (a GGUF from llama.cpp's converter) goes with "
                           f"--to gguf{'' if target == 'gguf' else ' only'}")  # fmt: skip
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
    assert base is not None
    return Exported(out, tuple(write_gguf(plan, model, base, out)))
