"""Shards a runtime fuses (q/k/v, gate/up) under a format whose per-tensor scale they share
(ModelOpt's NVFP4) are quantized as the one matrix the runtime holds; other formats per layer."""

from __future__ import annotations

import torch

from mixprec.kernels import formats, packing
from mixprec.plan import apply_plan
from mixprec.units import layer_weight, quantizable_layers
from tests.helpers.models import make_llama

ATTENTION = "model.layers.0.self_attn"
SHARDS = [f"{ATTENTION}.{p}_proj" for p in "qkv"]


def test_fused_shards_share_one_tensor_scale_and_packed_holds_the_same_bits() -> None:
    model = make_llama()
    with torch.no_grad():
        layer_weight(quantizable_layers(model)[SHARDS[2]]).mul_(8.0)  # v's amax dominates
    plan = {name: "w:mo_nvfp4" for name in quantizable_layers(model)}
    dense = quantizable_layers(apply_plan(model, plan))
    packed_model = apply_plan(model, plan, packed=True)
    packed = {name: packed_model.get_submodule(name) for name in SHARDS}
    fmt = formats.get("mo_nvfp4")
    stack = torch.cat([layer_weight(quantizable_layers(model)[n]).detach() for n in SHARDS])
    expected = fmt.quantize_dequantize(stack).split([32, 16, 16])
    for name, want in zip(SHARDS, expected, strict=True):
        assert torch.equal(dense[name].weight, want)
        assert torch.equal(packing.unpack(packed[name].packed()), want)
        alone = fmt.quantize_dequantize(layer_weight(quantizable_layers(model)[name]).detach())
        assert name == SHARDS[2] or not torch.equal(alone, want)  # q and k lost their own scale
    tensor_scales = {float(packed[n].packed().tensor_scale) for n in SHARDS}
    assert len(tensor_scales) == 1


def test_a_format_of_its_own_scales_quantizes_each_shard_alone() -> None:
    model = make_llama()
    plan = {name: "w:nvfp4" for name in SHARDS}
    quantized = quantizable_layers(apply_plan(model, plan))
    for name in SHARDS:
        alone = formats.get("nvfp4").quantize_dequantize(
            layer_weight(quantizable_layers(model)[name]).detach())  # fmt: skip
        assert torch.equal(quantized[name].weight, alone)


def test_a_shard_under_another_scheme_is_not_stacked() -> None:
    model = make_llama()
    plan = {SHARDS[0]: "w:mo_nvfp4", SHARDS[1]: "w:mo_nvfp4", SHARDS[2]: "keep"}
    quantized = quantizable_layers(apply_plan(model, plan))
    pair = torch.cat([layer_weight(quantizable_layers(model)[n]).detach() for n in SHARDS[:2]])
    expected = formats.get("mo_nvfp4").quantize_dequantize(pair)
    assert torch.equal(quantized[SHARDS[0]].weight, expected[:32])
    assert torch.equal(
        quantized[SHARDS[2]].weight, layer_weight(quantizable_layers(model)[SHARDS[2]])
    )
