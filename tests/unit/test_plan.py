"""apply_plan: exactly the named layers change, exactly as the reference kernels say."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mixprec.errors import MixprecError
from mixprec.kernels import formats
from mixprec.plan import ActivationQuantizer, apply_plan, uniform_assignment
from mixprec.units import discover_units


def test_only_named_layers_change_and_the_original_is_untouched(tiny_llama: nn.Module) -> None:
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    names = ["model.layers.0.mlp.down_proj", "model.layers.1.self_attn.q_proj"]
    out = apply_plan(tiny_llama, dict.fromkeys(names, "w:int4_g32"))
    for key, value in tiny_llama.state_dict().items():
        assert torch.equal(value, before[key])
    fmt = formats.get("int4_g32")
    for key, value in out.state_dict().items():
        if key.removesuffix(".weight") in names:
            assert torch.equal(value, fmt.quantize_dequantize(before[key]))
            assert not torch.equal(value, before[key])
        else:
            assert torch.equal(value, before[key])


def test_inplace_changes_the_given_model(tiny_llama: nn.Module) -> None:
    original = tiny_llama.lm_head.weight.clone()
    out = apply_plan(tiny_llama, {"lm_head": "w:mxfp4"}, inplace=True)
    assert out is tiny_llama
    assert torch.equal(
        tiny_llama.lm_head.weight, formats.get("mxfp4").quantize_dequantize(original)
    )


def test_conv1d_blocks_run_along_the_input_dim(tiny_gpt2: nn.Module) -> None:
    weight = tiny_gpt2.transformer.h[0].mlp.c_fc.weight.detach().clone()  # [in=32, out=128]
    out = apply_plan(tiny_gpt2, {"transformer.h.0.mlp.c_fc": "w:nvfp4"})
    expected = formats.get("nvfp4").quantize_dequantize(weight.t()).t()
    assert torch.equal(out.transformer.h[0].mlp.c_fc.weight, expected)


def test_conv2d_weights_are_quantized_per_output_channel() -> None:
    conv = nn.Conv2d(3, 4, 3)
    out = apply_plan(conv, {"": "w:int8"})
    expected = formats.get("int8").quantize_dequantize(conv.weight.detach().reshape(4, -1))
    assert torch.equal(out.weight, expected.reshape(4, 3, 3, 3))


def test_activation_format_quantizes_each_token_of_the_input() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(64, 8)
    x = torch.randn(2, 5, 64)
    out = apply_plan(layer, {"": "w:mxfp4,a:fp8_e4m3"})
    w = formats.get("mxfp4").quantize_dequantize(layer.weight.detach())
    xq = formats.get("fp8_e4m3").quantize_dequantize(x.reshape(10, 64)).reshape(2, 5, 64)
    torch.testing.assert_close(out(x), F.linear(xq, w, layer.bias), atol=0, rtol=0)


def test_conv_activations_use_channel_blocks() -> None:
    conv = nn.Conv2d(32, 4, 1)
    x = torch.randn(1, 32, 3, 3)
    out = apply_plan(conv, {"": "w:bf16,a:mxfp4"})
    xq = formats.get("mxfp4").quantize_dequantize(x.movedim(1, -1).reshape(9, 32))
    xq = xq.reshape(1, 3, 3, 32).movedim(-1, 1)
    torch.testing.assert_close(out(x), F.conv2d(xq, out.weight, conv.bias), atol=0, rtol=0)


def test_reapplying_replaces_the_activation_hook() -> None:
    layer = nn.Linear(32, 4)
    apply_plan(layer, {"": "w:int8,a:mxfp4"}, inplace=True)
    apply_plan(layer, {"": "w:int8,a:mxfp8_e4m3"}, inplace=True)
    hooks = [h for h in layer._forward_pre_hooks.values() if isinstance(h, ActivationQuantizer)]
    assert [h.fmt.name for h in hooks] == ["mxfp8_e4m3"]
    apply_plan(layer, {"": "keep"}, inplace=True)
    assert not layer._forward_pre_hooks


def test_keep_leaves_weights_alone(tiny_bert: nn.Module) -> None:
    out = apply_plan(tiny_bert, uniform_assignment(discover_units(tiny_bert), "keep"))
    for a, b in zip(out.parameters(), tiny_bert.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bad_names_and_schemes_are_one_line_errors(tiny_llama: nn.Module) -> None:
    with pytest.raises(MixprecError, match=r"'model.norm' is not a quantizable layer"):
        apply_plan(tiny_llama, {"model.norm": "w:int8"})
    with pytest.raises(MixprecError, match="unknown number format 'int5'"):
        apply_plan(tiny_llama, {"lm_head": "w:int5"})
