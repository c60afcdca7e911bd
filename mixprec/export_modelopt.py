"""A plan as an NVIDIA ModelOpt checkpoint (what vLLM loads with quant_method `modelopt`): the
safetensors ModelOpt's exporter writes (per quantized layer, W4A16_NVFP4: `weight` packed E2M1,
`weight_scale` E4M3 per 16, `weight_scale_2` FP32; NVFP4: those and `input_scale` FP32; FP8:
`weight` E4M3, `weight_scale` and `input_scale` FP32 scalars; FP8_PER_CHANNEL_PER_TOKEN:
`weight` E4M3, `weight_scale` FP32 per row; MXFP8: `weight` E4M3, `weight_scale` E8M0 per 32),
`hf_quant_config.json` as ModelOpt makes it (one algorithm: that algorithm and
`exclude_modules`; several: MIXED_PRECISION with `quantized_layers`), config.json's
`quantization_config` as ModelOpt's `convert_hf_quant_config_format` converts it, and the
model's tokenizer. Fused shards (q/k/v, gate/up) share one scheme and one tensor scale."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixprec import __version__
from mixprec.export_compressed import (
    check_export_folder,
    copy_tokenizer,
    static_input_scales,
    vllm_schemes,
)
from mixprec.files import atomic_folder
from mixprec.kernels import packing
from mixprec.kernels.packing import PackedTensor
from mixprec.plan import PrecisionPlan, fused_shards
from mixprec.units import quantizable_layers, weight_matrix

# mixprec scheme -> ModelOpt's per-layer algorithm (quant_utils.process_layer_quant_config);
# FP8's and NVFP4's inputs have a static scale (ModelOpt's `input_scale`: the plan's calibrated
# range / 448; / 2688, NVFP4's tensor scale, under which its block scales stay dynamic);
# vLLM quantizes the inputs of the last two on the fly (per token; per 32), as the scheme says
MO_ALGORITHMS: dict[str, dict[str, Any]] = {
    "w:mo_nvfp4": {"quant_algo": "W4A16_NVFP4", "group_size": 16},
    "w:fp8_e4m3_tensor,a:fp8_e4m3_tensor": {"quant_algo": "FP8"},
    "w:mo_nvfp4,a:mo_nvfp4": {"quant_algo": "NVFP4", "group_size": 16},
    "w:fp8_e4m3,a:fp8_e4m3": {"quant_algo": "FP8_PER_CHANNEL_PER_TOKEN"},
    "w:mo_mxfp8_e4m3,a:mo_mxfp8_e4m3": {"quant_algo": "MXFP8", "group_size": 32},
}
_FLOAT8 = {"dynamic": False, "num_bits": 8, "type": "float"}
# ModelOpt's algorithm -> its config group in config.json (convert_hf_config), each part taking
# the layer's group_size; one algorithm alone gets a group only where ModelOpt's converter
# writes one (GROUPED_ALONE)
MO_GROUPS: dict[str, dict[str, dict[str, Any]]] = {
    "W4A16_NVFP4": {"weights": {"dynamic": False, "num_bits": 4, "type": "float"}},
    "FP8": {"input_activations": _FLOAT8, "weights": _FLOAT8},
    "NVFP4": {"input_activations": {**_FLOAT8, "num_bits": 4},
              "weights": {**_FLOAT8, "num_bits": 4}},
    "FP8_PER_CHANNEL_PER_TOKEN": {"input_activations": _FLOAT8,
                                  "weights": {**_FLOAT8, "strategy": "channel"}},
    "MXFP8": {"input_activations": _FLOAT8, "weights": _FLOAT8},
}  # fmt: skip
GROUPED_ALONE = ("FP8", "NVFP4", "W4A16_NVFP4")
HF_QUANT_CONFIG = "hf_quant_config.json"
WEIGHTS_FILE = "model.safetensors"


def hf_quant_config(layers: Mapping[str, Mapping[str, Any]], excluded: Sequence[str]
                    ) -> dict[str, Any]:  # fmt: skip
    """hf_quant_config.json for per-layer algorithms `layers` and unquantized `excluded`."""
    quantization: dict[str, Any] = {"quant_algo": None, "kv_cache_quant_algo": None}
    if len({json.dumps(dict(c), sort_keys=True) for c in layers.values()}) > 1:
        quantization["quant_algo"] = "MIXED_PRECISION"
        quantization["quantized_layers"] = {name: dict(c) for name, c in sorted(layers.items())}
    elif layers:
        quantization.update(next(iter(layers.values())))
        quantization["exclude_modules"] = sorted(excluded)
    return {"producer": {"name": "mixprec", "version": __version__}, "quantization": quantization}


def quantization_config(hf_config: Mapping[str, Any]) -> dict[str, Any]:
    """config.json's `quantization_config`: one config group per distinct layer algorithm."""
    details = hf_config["quantization"]
    algo = details["quant_algo"]
    if algo == "MIXED_PRECISION":
        by_config: dict[str, list[str]] = {}
        for name, layer in details["quantized_layers"].items():
            by_config.setdefault(json.dumps(layer, sort_keys=True), []).append(name)
        groups = {f"group_{i}": {**_group(json.loads(key)), "targets": sorted(names)}
                  for i, (key, names) in enumerate(by_config.items())}  # fmt: skip
        extra = {"quantized_layers": details["quantized_layers"]}
    elif algo in GROUPED_ALONE:
        groups = {"group_0": {**_group(details), "targets": ["Linear"]}}
        extra = {}
    else:
        groups, extra = {}, {}
    grouped = {"config_groups": groups} if groups else {}
    return {**grouped, **extra, "ignore": details.get("exclude_modules", []),
            "quant_algo": algo, "producer": hf_config["producer"],
            "quant_method": "modelopt"}  # fmt: skip


def _group(layer: Mapping[str, Any]) -> dict[str, Any]:
    size = {"group_size": layer["group_size"]} if "group_size" in layer else {}
    return {part: {**args, **size} for part, args in MO_GROUPS[layer["quant_algo"]].items()}


def write_modelopt(
    plan: PrecisionPlan, model: nn.Module, out: Path, tokenizer_folder: Path | None = None
) -> None:
    """Write the checkpoint folder `out` (made whole in a temp folder beside it, then renamed);
    the model itself is not changed."""
    from safetensors.torch import save_file

    check_export_folder(out)
    layers = quantizable_layers(model)
    parsed = vllm_schemes(plan, model, tuple(MO_ALGORITHMS), "a ModelOpt algorithm")
    input_scales = static_input_scales(plan)
    quantized = {m: s for m, s in parsed.items() if not s.is_keep}
    tensors = _state_dict(model)
    fused = fused_shards(layers, quantized)
    for module, scheme in quantized.items():
        assert scheme.weight is not None
        shard = fused.get(module)
        if shard is None:
            packed = packing.pack(weight_matrix(layers[module]).detach().float(), scheme.weight)
        else:  # one tensor scale for the fused layer, as vLLM requires
            packed = shard.packed()
        tensors.update(_layer_tensors(module, packed))
    for module, scale in input_scales.items():  # FP32 scalar: range / 448 (FP8), / 2688 (NVFP4)
        tensors[f"{module}.input_scale"] = scale
    excluded = [name for name, layer in model.named_modules()
                if isinstance(layer, nn.Linear) and name not in quantized]  # fmt: skip
    config = hf_quant_config({m: MO_ALGORITHMS[str(s)] for m, s in quantized.items()}, excluded)
    model_config = model.config.to_dict()  # type: ignore[union-attr,operator]
    config_json = {**model_config, "quantization_config": quantization_config(config)}
    with atomic_folder(out) as staged:
        save_file({k: t.contiguous() for k, t in tensors.items()}, str(staged / WEIGHTS_FILE),
                  metadata={"format": "pt"})  # fmt: skip
        (staged / HF_QUANT_CONFIG).write_text(json.dumps(config, indent=4) + "\n")
        (staged / "config.json").write_text(json.dumps(config_json, indent=2) + "\n")
        copy_tokenizer(tokenizer_folder, staged)


def _layer_tensors(module: str, packed: PackedTensor) -> dict[str, torch.Tensor]:
    """One layer's tensors as ModelOpt's exporter names and types them (a fused shard's rows
    are views of its stack: copied)."""
    fmt = packed.fmt
    if fmt.scale_format == "e4m3":  # NVFP4: E2M1 pairs, E4M3 scales, the FP32 tensor scale
        assert packed.tensor_scale is not None
        return {f"{module}.weight": packed.codes.clone(),
                f"{module}.weight_scale": packed.scales.view(torch.float8_e4m3fn).clone(),
                f"{module}.weight_scale_2": packed.tensor_scale.reshape(()).clone()}  # fmt: skip
    weight = packed.codes.view(torch.float8_e4m3fn).reshape(packed.shape).clone()
    if fmt.per_tensor:  # FP8: one FP32 scalar
        assert packed.tensor_scale is not None
        scale = packed.tensor_scale.reshape(()).float().clone()
        return {f"{module}.weight": weight, f"{module}.weight_scale": scale}
    if fmt.scale_format == "e8m0":  # MXFP8: the biased exponent per 32
        return {
            f"{module}.weight": weight,
            f"{module}.weight_scale": packed.scales.reshape(packed.shape[0], -1).clone(),
        }
    return {
        f"{module}.weight": weight,  # FP8 per channel: one FP32 scale per row
        f"{module}.weight_scale": packed.scales.reshape(-1).float().clone(),
    }


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors, each stored once (a tied head is saved as its embedding)."""
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors[key] = tensor.detach()
    return tensors
