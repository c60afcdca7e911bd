"""A plan as a compressed-tensors checkpoint (what vLLM and transformers load): one config group
per scheme naming its layers exactly, the kept layers in `ignore`, the weights packed by
compressed-tensors' own compressors from mixprec's exact scales, and the model's tokenizer.
vLLM's rules are checked first: the shards it fuses (q/k/v, gate/up) share one scheme."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixprec.errors import MixprecError
from mixprec.kernels import formats
from mixprec.kernels.reference import quantize
from mixprec.plan import PrecisionPlan
from mixprec.scheme import Scheme
from mixprec.units import layer_weight, quantizable_layers

# mixprec format -> compressed-tensors weight arguments (vLLM: CompressedTensorsWNA16 for the
# integer groups, weight-only FP8 per channel); each is exact against compressed-tensors
CT_FORMATS = {"ct_w8a16": "pack-quantized", "ct_w4a16": "pack-quantized",
              "ct_w4a16_asym": "pack-quantized", "fp8_e4m3": "float-quantized"}  # fmt: skip
CT_SCHEMES: dict[str, dict[str, Any]] = {
    "ct_w8a16": {"num_bits": 8, "type": "int", "strategy": "group", "group_size": 128,
                 "symmetric": True},
    "ct_w4a16": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128,
                 "symmetric": True},
    "ct_w4a16_asym": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128,
                      "symmetric": False},
    "fp8_e4m3": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True},
}  # fmt: skip
# the shards vLLM loads into one fused layer (QKVParallelLinear, MergedColumnParallelLinear)
FUSED_SHARDS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                   "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt",
                   "chat_template.jinja", "generation_config.json")  # fmt: skip


def check_vllm_rules(assignment: dict[str, str]) -> None:
    """Shards of one fused vLLM layer must share a scheme: one line naming them otherwise."""
    for shards in FUSED_SHARDS:
        parents: dict[str, dict[str, str]] = {}
        for module, scheme in assignment.items():
            parent, _, leaf = module.rpartition(".")
            if leaf in shards:
                parents.setdefault(parent, {})[leaf] = scheme
        for parent, found in parents.items():
            if len(set(found.values())) > 1:
                shown = ", ".join(f"{leaf} {scheme}" for leaf, scheme in sorted(found.items()))
                raise MixprecError(f"vLLM fuses {'/'.join(shards)} of {parent} into one layer "
                                   f"with one scheme; the plan gives {shown}")  # fmt: skip


def write_compressed_tensors(
    plan: PrecisionPlan, model: nn.Module, out: Path, tokenizer_folder: Path | None = None
) -> list[str]:
    """Write the checkpoint folder `out` (made whole in a temp folder beside it, then renamed);
    the model itself is not changed."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationArgs,
        QuantizationConfig,
        QuantizationScheme,
        apply_quantization_config,
    )

    check_export_folder(out)
    layers = quantizable_layers(model)
    groups: dict[str, list[str]] = {}
    kept = []
    for module, text in plan.assignment.items():
        scheme = Scheme.parse(text)
        if scheme.is_keep:
            kept.append(module)
            continue
        if scheme.activation is not None or scheme.weight is None or \
                scheme.weight.name not in CT_SCHEMES:  # fmt: skip
            raise MixprecError(f"module {module}: {scheme} is not a compressed-tensors scheme "
                               f"mixprec writes; valid: {', '.join(f'w:{n}' for n in CT_SCHEMES)},"
                               " keep")  # fmt: skip
        groups.setdefault(scheme.weight.name, []).append(module)
    check_vllm_rules({m: t for m, t in plan.assignment.items() if t != "keep"})
    others = [name for name, layer in model.named_modules()
              if isinstance(layer, nn.Linear) and name not in plan.assignment]  # fmt: skip
    config = QuantizationConfig(
        config_groups={f"group_{i}": QuantizationScheme(targets=sorted(modules),
                                                        weights=QuantizationArgs(**CT_SCHEMES[f]),
                                                        format=CT_FORMATS[f])
                       for i, (f, modules) in enumerate(sorted(groups.items()))},
        ignore=sorted(kept + others),
    )  # fmt: skip
    copied = copy.deepcopy(model)  # compressed-tensors changes the modules it quantizes
    apply_quantization_config(copied, config)
    modules = dict(copied.named_modules())
    rounded = [module for name, modules_of in groups.items() for module in modules_of
               if not _set_qparams(modules[module], layer_weight(layers[module]),
                                   formats.get(name))]  # fmt: skip
    compressor = ModelCompressor.from_pretrained_model(copied)
    compressor.compress_model(copied)
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        copied.save_pretrained(staged)  # type: ignore[operator]
        compressor.update_config(str(staged))
        tokenizer = [tokenizer_folder / n for n in TOKENIZER_FILES] if tokenizer_folder else []
        for path in tokenizer:
            if path.is_file():
                shutil.copy2(path, staged / path.name)
        if out.exists():
            out.rmdir()  # empty: checked above
        os.replace(staged, out)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    warnings = [
        f"module {m}: transformers cannot load asymmetric pack-quantized weights yet "
        "(llm-compressor#1618); vLLM does"
        for m in groups.get("ct_w4a16_asym", [])[:1]
    ]
    if rounded:
        warnings.append(f"{len(rounded)} layers ({rounded[0]}, ...) hold their scales in the "
                        "model's dtype, as compressed-tensors makes them: their values differ "
                        "from the plan's float32 fake quantization by that rounding")  # fmt: skip
    return warnings


def _set_qparams(module: nn.Module, weight: torch.Tensor, fmt: formats.NumberFormat) -> bool:
    """mixprec's exact scale (and zero point) in the module's compressed-tensors parameters;
    False where the parameter's dtype rounds the float32 scale."""
    q = quantize(weight.detach().float(), fmt)
    rows = weight.shape[0]
    scale = module.get_parameter("weight_scale")
    scale.data.copy_(q.scale.reshape(rows, -1).to(scale.dtype))
    if q.zero is not None:  # mixprec's unsigned zero point; compressed-tensors' is signed
        offset = 2 ** (fmt.element_bits - 1)
        zero = module.get_parameter("weight_zero_point")
        zero.data.copy_((q.zero.reshape(rows, -1) - offset).to(zero.dtype))
    return scale.dtype == torch.float32


def check_export_folder(out: Path) -> None:
    """An export folder must be new or empty: nothing of the user's is overwritten."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a file" if not out.is_dir() else "a folder that is not empty"
        raise MixprecError(f"--out {out} is {what}; give a new or empty folder")
