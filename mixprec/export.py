"""Export a PrecisionPlan to what runtimes read: plain JSON, a compressed-tensors or ModelOpt
checkpoint (vLLM; transformers loads the first), llama.cpp `--tensor-type-file` overrides, or a
complete GGUF built on the converter's. The checkpoints: export_compressed.py, export_modelopt.py;
llama.cpp: export_llamacpp.py, export_gguf.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from mixprec.errors import MixprecError, one_of
from mixprec.export_gguf import PLAN_KEY, write_gguf
from mixprec.export_llamacpp import llamacpp_overrides
from mixprec.files import atomic_write_text
from mixprec.imatrix import load as load_imatrix
from mixprec.imatrix import scored_with_other
from mixprec.plan import PrecisionPlan
from mixprec.scheme import Scheme
from mixprec.store import EXPORT_SUFFIX

if TYPE_CHECKING:
    from transformers import PreTrainedModel

TARGETS = tuple(EXPORT_SUFFIX)
CHECKPOINTS = ("compressed-tensors", "modelopt")  # folders, with the model's tokenizer


@dataclass(frozen=True)
class Exported:
    """What was written, what to run with it, and what the user should know about it."""

    path: Path
    warnings: tuple[str, ...] = ()
    command: str = ""


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


def read_gguf_plan(path: Path) -> PrecisionPlan:
    """The plan a GGUF written by `write_gguf` carries."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    field = reader.fields.get(PLAN_KEY)
    if field is None:
        raise MixprecError(f"{path} carries no mixprec plan ({PLAN_KEY} is missing)")
    text = bytes(field.parts[field.data[0]]).decode("utf-8")
    return PrecisionPlan.from_json(json.loads(text), str(path))


def model_files(target: str, source: str, base: Path | None = None
                ) -> tuple[Path | None, Path | None]:  # fmt: skip
    """What an export of the model `source` builds on: (gguf) `base`, else the model's own base
    GGUF made by llama.cpp's converter (cached), and (checkpoints) the model's folder,
    whose tokenizer goes with the checkpoint."""
    from mixprec.models import checkpoint_folder

    if target in CHECKPOINTS:
        try:
            return None, checkpoint_folder(source)
        except MixprecError:
            return None, None  # a model without a folder: a checkpoint without a tokenizer
    if target != "gguf" or base is not None:
        return base, None
    from mixprec.llamacpp import base_gguf

    try:
        folder = checkpoint_folder(source)
    except MixprecError as err:
        raise MixprecError(f"--to gguf builds on a base GGUF: give --base MODEL-F16.gguf ({err})"
                           ) from None  # fmt: skip
    return base_gguf(folder), None


def require_transformers(model: nn.Module, what: str, name: str) -> PreTrainedModel:
    """`model` as the transformers model `what` needs (to save it or load it back); one line
    naming the model (`name`) otherwise."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise MixprecError(f"{what}; {name} is a {type(model).__name__}")
    return model


def write_checkpoint(
    plan: PrecisionPlan, target: str, model: nn.Module, out: Path, tokenizer: Path | None
) -> tuple[str, ...]:  # fmt: skip
    """Write the checkpoint folder of `plan`, converted first where it was made for another
    target (search.convert); what the user should know about it."""
    from mixprec.export_compressed import write_compressed_tensors
    from mixprec.export_modelopt import write_modelopt
    from mixprec.search.convert import convert_plan

    require_transformers(
        model, f"--to {target} writes transformers checkpoints", "the plan's model"
    )
    conversion = convert_plan(plan, target, model)
    if target == "modelopt":
        write_modelopt(conversion.plan, model, out, tokenizer)
        return conversion.warnings
    return (*conversion.warnings,
            *write_compressed_tensors(conversion.plan, model, out, tokenizer))  # fmt: skip


def export_plan(
    plan: PrecisionPlan, target: str, out: Path, load: Callable[[], tuple[nn.Module, str]],
    base: Path | None = None, tokenizer: Path | None = None, imatrix: Path | None = None,
) -> Exported:  # fmt: skip
    """Write `plan` as `target`; `load` gives the model and its fingerprint where needed,
    `base` (gguf) is the GGUF from llama.cpp's converter the plan's tensors go into,
    `tokenizer` (checkpoints) the folder whose tokenizer files go with the checkpoint and
    `imatrix` (llamacpp, gguf) llama.cpp's importance matrix to quantize with."""
    one_of("export target", target, TARGETS)
    if (target == "gguf") != (base is not None):
        raise MixprecError("--base MODEL-F16.gguf (a GGUF from llama.cpp's converter) goes with "
                           f"--to gguf{'' if target == 'gguf' else ' only'}")  # fmt: skip
    if imatrix is not None and target not in ("llamacpp", "gguf"):
        raise MixprecError(f"--imatrix goes with --to llamacpp or --to gguf, not --to {target}")
    importance = None if imatrix is None else load_imatrix(imatrix)
    model, fingerprint = load()
    plan.check_model(model, fingerprint)  # every target: same weights, every module a layer
    if target == "json":
        atomic_write_text(out, json.dumps(to_json(plan), indent=2) + "\n")
        return Exported(out)
    if target in CHECKPOINTS:
        return Exported(out, write_checkpoint(plan, target, model, out, tokenizer))
    if target == "llamacpp":
        overrides = llamacpp_overrides(plan, model)
        atomic_write_text(out, overrides.text())
        warnings = (*overrides.warnings, *scored_with_other(plan, importance))
        return Exported(out, warnings, overrides.command(out, imatrix))
    assert base is not None
    return Exported(out, tuple(write_gguf(plan, model, base, out, importance)))
