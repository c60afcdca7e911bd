"""A plan as a compressed-tensors checkpoint (what vLLM and transformers load): one config group
per scheme naming its layers exactly, the kept layers in `ignore`, the weights packed by
compressed-tensors' own compressors from mixprec's exact scales, and the model's tokenizer.
vLLM's rules are checked first: the shards it fuses (q/k/v, gate/up) share one scheme."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixprec.errors import MixprecError
from mixprec.files import atomic_folder
from mixprec.kernels import formats
from mixprec.kernels.reference import quantize, static_scale
from mixprec.plan import FusedShard, PrecisionPlan, fused_shards, input_range, static_inputs
from mixprec.scheme import Scheme
from mixprec.units import fusion_groups, quantizable_layers, tied_to_embedding, weight_matrix

# mixprec format -> compressed-tensors weight arguments (vLLM: CompressedTensorsWNA16 for the
# integer groups, NVFP4A16, weight-only FP8 per channel, MXFP4A16 / MXFP8A16); each is exact
# against compressed-tensors
CT_FORMATS = {"ct_w8a16": "pack-quantized", "ct_w4a16": "pack-quantized",
              "ct_w4a16_asym": "pack-quantized", "ct_nvfp4": "nvfp4-pack-quantized",
              "fp8_e4m3": "float-quantized", "ct_fp8_e4m3_block": "float-quantized",
              "fp8_e4m3_tensor": "float-quantized",
              "ct_mxfp4": "mxfp4-pack-quantized",
              "ct_mxfp8_e4m3": "mxfp8-quantized"}  # fmt: skip
_MX = {"type": "float", "strategy": "group", "group_size": 32, "symmetric": True,
       "dynamic": False, "scale_dtype": torch.uint8, "zp_dtype": torch.uint8}  # fmt: skip
CT_SCHEMES: dict[str, dict[str, Any]] = {
    "ct_w8a16": {"num_bits": 8, "type": "int", "strategy": "group", "group_size": 128,
                 "symmetric": True},
    "ct_w4a16": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128,
                 "symmetric": True},
    "ct_w4a16_asym": {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128,
                      "symmetric": False},
    "ct_nvfp4": {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16,
                 "symmetric": True, "dynamic": False, "scale_dtype": torch.float8_e4m3fn,
                 "zp_dtype": torch.float8_e4m3fn},
    "fp8_e4m3": {"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": True},
    "fp8_e4m3_tensor": {"num_bits": 8, "type": "float", "strategy": "tensor", "symmetric": True,
                        "dynamic": False},
    "ct_fp8_e4m3_block": {"num_bits": 8, "type": "float", "strategy": "block",
                     "block_structure": [128, 128], "symmetric": True, "dynamic": False},
    "ct_mxfp4": {"num_bits": 4, **_MX},
    "ct_mxfp8_e4m3": {"num_bits": 8, **_MX},
}  # fmt: skip
# activation formats vLLM quantizes on the fly, each beside its weight format (the presets
# FP8_DYNAMIC: per token; FP8_BLOCK: per 128; MXFP8 / MXFP4: per 32), each mixprec's
# ActivationQuantizer exactly (compressed-tensors' own forward_quantize, in float32); FP8's
# inputs per tensor have a static scale, NVFP4's a static global scale (its block scales made on
# the fly: "local"), from the plan's calibrated input range
CT_ACTIVATIONS: dict[str, dict[str, Any]] = {
    "fp8_e4m3": {"num_bits": 8, "type": "float", "strategy": "token", "symmetric": True,
                 "dynamic": True},
    "ct_fp8_e4m3_g128": {"num_bits": 8, "type": "float", "strategy": "group", "group_size": 128,
                    "symmetric": True, "dynamic": True},
    "fp8_e4m3_tensor": {"num_bits": 8, "type": "float", "strategy": "tensor", "symmetric": True,
                        "dynamic": False},
    "ct_nvfp4": {**CT_SCHEMES["ct_nvfp4"], "dynamic": "local"},
    "ct_mxfp8_e4m3": {"num_bits": 8, **_MX, "dynamic": True},
    "ct_mxfp4": {"num_bits": 4, **_MX, "dynamic": True},
}  # fmt: skip
# weight format -> the activation format vLLM runs beside it (FP8_BLOCK only with its inputs)
CT_PAIRS = {"fp8_e4m3": "fp8_e4m3", "fp8_e4m3_tensor": "fp8_e4m3_tensor",
            "ct_fp8_e4m3_block": "ct_fp8_e4m3_g128", "ct_nvfp4": "ct_nvfp4",
            "ct_mxfp8_e4m3": "ct_mxfp8_e4m3", "ct_mxfp4": "ct_mxfp4"}  # fmt: skip
WITH_INPUTS_ONLY = ("ct_fp8_e4m3_block",)  # vLLM runs FP8_BLOCK weights with their inputs only
CT_WRITTEN = (*(f"w:{f}" for f in CT_SCHEMES if f not in WITH_INPUTS_ONLY),
              *(f"w:{w},a:{a}" for w, a in CT_PAIRS.items()))  # fmt: skip
NVFP4_IN_TRANSFORMERS = (
    "transformers decompresses NVFP4 weights in bf16 (compressed-tensors' "
    "decompressor), not to the plan's values; vLLM runs them as stored"
)
MX_IN_TRANSFORMERS = (
    "transformers decompresses MX weights in bf16 (to their exact values), which a model in "
    "another dtype cannot run; vLLM runs them as stored"
)
TOKEN_SCALES_IN_TRANSFORMERS = (
    "transformers (compressed-tensors' forward) computes FP8 token scales in the model's dtype, "
    "mixprec and vLLM's kernels in float32: measured there, the outputs differ slightly"
)
MX_SCHEMES = ("ct_mxfp4", "ct_mxfp8_e4m3")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model",
                   "special_tokens_map.json", "vocab.txt", "vocab.json", "merges.txt",
                   "chat_template.jinja", "generation_config.json")  # fmt: skip


def vllm_schemes(plan: PrecisionPlan, model: nn.Module, written: tuple[str, ...], what: str
                 ) -> dict[str, Scheme]:  # fmt: skip
    """The plan's schemes, each one mixprec writes (`written` schemes, `what` one is), never on
    a head tied to the input embedding, one per fused layer: one line naming the layer
    otherwise."""
    parsed = {m: Scheme.parse(t) for m, t in plan.assignment.items()}
    tied = tied_to_embedding(model)
    for module, scheme in parsed.items():
        if scheme.is_keep:
            continue
        if str(scheme) not in written:
            raise MixprecError(f"module {module}: {scheme} is not {what} mixprec writes; valid: "
                               f"{', '.join(written)}, keep")  # fmt: skip
        if module in tied:
            raise MixprecError(f"module {module} is tied to the input embedding: vLLM runs it as "
                               "the embedding, unquantized; keep it")  # fmt: skip
    check_vllm_rules({m: str(s) for m, s in parsed.items()})  # kept shards too
    return parsed


def check_vllm_rules(assignment: dict[str, str]) -> None:
    """Shards of one fused vLLM layer must share a scheme: one line naming them otherwise."""
    by_group: dict[str, dict[str, str]] = {}
    for module, group in fusion_groups(assignment).items():
        by_group.setdefault(group, {})[module.rpartition(".")[2]] = assignment[module]
    for group, found in by_group.items():
        if len(set(found.values())) > 1:
            shown = ", ".join(f"{leaf} {scheme}" for leaf, scheme in sorted(found.items()))
            raise MixprecError(f"vLLM fuses {'/'.join(found)} of {group.partition(':')[0]} into "
                               f"one layer with one scheme; the plan gives {shown}")  # fmt: skip


def write_compressed_tensors(
    plan: PrecisionPlan, model: nn.Module, out: Path, tokenizer_folder: Path | None = None
) -> list[str]:
    """Write the checkpoint folder `out` (made whole in a temp folder beside it, then renamed);
    the model itself is not changed."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import (
        QuantizationConfig,
        apply_quantization_config,
    )

    check_export_folder(out)
    layers = quantizable_layers(model)
    groups: dict[str, list[str]] = {}
    kept = []
    schemes = vllm_schemes(plan, model, CT_WRITTEN, "a compressed-tensors scheme")
    input_scales = static_input_scales(plan)
    for module, scheme in schemes.items():
        if scheme.weight is None:
            kept.append(module)
        else:
            groups.setdefault(str(scheme), []).append(module)
    others = [name for name, layer in model.named_modules()
              if isinstance(layer, nn.Linear) and name not in plan.assignment]  # fmt: skip
    config = QuantizationConfig(
        config_groups={f"group_{i}": _config_group(Scheme.parse(text), modules)
                       for i, (text, modules) in enumerate(sorted(groups.items()))},
        ignore=sorted(kept + others),
    )  # fmt: skip
    copied = copy.deepcopy(model)  # compressed-tensors changes the modules it quantizes
    apply_quantization_config(copied, config)
    modules = dict(copied.named_modules())
    weights = {m: s.weight for m, s in schemes.items() if s.weight is not None}
    fused = fused_shards(layers, {m: Scheme(f) for m, f in weights.items()})
    rounded = [
        module
        for module, fmt in weights.items()
        if not _set_qparams(modules[module], layers[module], fmt, fused.get(module))
    ]
    for module, scale in input_scales.items():  # FP8's input_scale, NVFP4's input_global_scale
        activation = schemes[module].activation
        assert activation is not None
        name = "input_scale" if activation.per_tensor else "input_global_scale"
        held = modules[module].get_parameter(name)
        held.data.copy_(scale.reshape(held.shape))
        if not torch.equal(held.data.float(), scale.reshape(held.shape)) and module not in rounded:
            rounded.append(module)  # a bf16 model holds its input scale in bf16 too
    compressor = ModelCompressor.from_pretrained_model(copied)
    compressor.compress_model(copied)
    with atomic_folder(out) as staged:
        copied.save_pretrained(staged)  # type: ignore[operator]
        compressor.update_config(str(staged))
        copy_tokenizer(tokenizer_folder, staged)
    by_format = {name: [m for m, f in weights.items() if f.name == name] for name in CT_SCHEMES}
    warnings = [
        f"module {m}: transformers cannot load asymmetric pack-quantized weights yet "
        "(llm-compressor#1618); vLLM does"
        for m in by_format["ct_w4a16_asym"][:1]
    ] + [f"module {m}: {NVFP4_IN_TRANSFORMERS}" for m in by_format["ct_nvfp4"][:1]]
    if next(model.parameters()).dtype != torch.bfloat16:
        mx = [m for name in MX_SCHEMES for m in by_format[name]]
        warnings += [f"module {m}: {MX_IN_TRANSFORMERS}" for m in mx[:1]]
    token_scaled = [m for m, s in schemes.items() if s.activation is not None and
                    CT_ACTIVATIONS[s.activation.name]["strategy"] == "token"]  # fmt: skip
    if token_scaled and next(model.parameters()).dtype != torch.float32:
        warnings.append(f"module {token_scaled[0]}: {TOKEN_SCALES_IN_TRANSFORMERS}")
    if rounded:
        warnings.append(f"{len(rounded)} layers ({rounded[0]}, ...) hold their scales in the "
                        "model's dtype, as compressed-tensors makes them: their values differ "
                        "from the plan's float32 fake quantization by that rounding")  # fmt: skip
    return warnings


def static_input_scales(plan: PrecisionPlan) -> dict[str, torch.Tensor]:
    """Per layer with a static input scale, the FP32 scale of its calibrated range (FP8: range /
    448; NVFP4: the global scale), as the runtimes store it; one line where the plan lacks a
    range."""
    scales = {}
    for module in static_inputs(plan):
        scheme = Scheme.parse(plan.assignment[module])
        assert scheme.activation is not None
        amax = torch.tensor(input_range(plan.input_ranges, module, scheme))
        scales[module] = static_scale(amax, scheme.activation)
    return scales


def _config_group(scheme: Scheme, modules: list[str]) -> Any:
    """compressed-tensors' config group for the layers `modules` under `scheme`."""
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    assert scheme.weight is not None
    activation = scheme.activation
    return QuantizationScheme(
        targets=sorted(modules), weights=QuantizationArgs(**CT_SCHEMES[scheme.weight.name]),
        input_activations=None if activation is None else
        QuantizationArgs(**CT_ACTIVATIONS[activation.name]),
        format=CT_FORMATS[scheme.weight.name],
    )  # fmt: skip


def copy_tokenizer(folder: Path | None, out: Path) -> None:
    """The model's tokenizer files (those it has) into the checkpoint folder `out`."""
    for path in [folder / n for n in TOKENIZER_FILES] if folder else []:
        if path.is_file():
            shutil.copy2(path, out / path.name)


def _set_qparams(module: nn.Module, layer: nn.Module, fmt: formats.NumberFormat,
                 shard: FusedShard | None) -> bool:  # fmt: skip
    """mixprec's exact scales (zero point, global scale) in the module's compressed-tensors
    parameters, a fused shard's from its whole fused layer; False where the parameter's dtype
    rounds the float32 scale."""
    matrix = weight_matrix(layer).detach().float()
    if shard is None:
        stack, start, q = matrix, 0, quantize(matrix, fmt)
    else:  # the fused layer's groups, made once for all its shards
        stack, start, q = shard.stack.matrix, shard.start, shard.stack.groups
    rows = slice(start, start + matrix.shape[0])
    wanted = q.scale.reshape(stack.shape[0], -1)[rows]
    if fmt.block_rows:  # one scale per tile: its first row's
        wanted = wanted[:: fmt.block_rows]
    scale = module.get_parameter("weight_scale")
    if fmt.per_tensor:  # every row carries the one scale (a fused layer's: its shards')
        wanted = wanted[:1].reshape(scale.shape)
    scale.data.copy_(wanted.to(scale.dtype))
    if q.zero is not None:  # mixprec's unsigned zero point; compressed-tensors' is signed
        offset = 2 ** (fmt.element_bits - 1)
        zero = module.get_parameter("weight_zero_point")
        zero.data.copy_((q.zero.reshape(stack.shape[0], -1)[rows] - offset).to(zero.dtype))
    if q.global_scale is not None:
        module.get_parameter("weight_global_scale").data.copy_(q.global_scale.reshape(1))
    return bool(torch.equal(scale.data.float(), wanted))


def check_export_folder(out: Path) -> None:
    """An export folder must be new or empty: nothing of the user's is overwritten."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "a file" if not out.is_dir() else "a folder that is not empty"
        raise MixprecError(f"--out {out} is {what}; give a new or empty folder")
