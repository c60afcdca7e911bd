"""Unit discovery on Llama-, GPT-2- and BERT-shaped models, a CNN and the real MiniLM."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mixprec.errors import MixprecError
from mixprec.units import (
    discover_units,
    matrix_to_weight,
    role_of,
    select,
    weight_matrix,
)
from mixprec.zoo import DigitsCNN


def by_name(units: tuple) -> dict:
    return {u.name: u for u in units}


def test_llama_roles_groups_components_and_blocks(tiny_llama: nn.Module) -> None:
    units = discover_units(tiny_llama)
    layers = select(units, "layer")
    assert len(layers) == 15  # 2 blocks x 7 projections + lm_head
    named = by_name(units)
    assert named["model.layers.0.mlp.gate_proj"].role == "gate"
    assert named["model.layers.1.self_attn.o_proj"].role == "o"
    assert named["lm_head"].role is None
    qkv = {u.name for u in layers if u.group == "model.layers.0.self_attn:qkv"}
    assert qkv == {f"model.layers.0.self_attn.{p}_proj" for p in "qkv"}
    assert named["model.layers.0.self_attn.k_proj"].params == 32 * 16  # 2 KV heads of 8
    components = {u.name: u.modules for u in select(units, "component")}
    assert set(components) == {f"component:{r}" for r in ("q", "k", "v", "o", "gate", "up", "down")}
    assert components["component:down"] == (
        "model.layers.0.mlp.down_proj",
        "model.layers.1.mlp.down_proj",
    )
    blocks = select(units, "block")
    assert [b.name for b in blocks] == ["model.layers.0", "model.layers.1"]
    assert len(blocks[0].modules) == 7
    assert blocks[0].params == sum(named[m].params for m in blocks[0].modules)


def test_gpt2_conv1d_layers_and_fused_qkv_role(tiny_gpt2: nn.Module) -> None:
    units = discover_units(tiny_gpt2)
    named = by_name(units)
    assert named["transformer.h.0.attn.c_attn"].role == "qkv"
    assert named["transformer.h.0.attn.c_proj"].role == "o"
    assert named["transformer.h.0.mlp.c_fc"].role == "up"
    assert named["transformer.h.0.mlp.c_proj"].role == "down"
    assert named["transformer.h.0.attn.c_attn"].params == 32 * 96
    assert [b.name for b in select(units, "block")] == ["transformer.h.0", "transformer.h.1"]


def test_bert_roles_tell_attention_output_from_mlp_output(tiny_bert: nn.Module) -> None:
    named = by_name(discover_units(tiny_bert))
    assert named["encoder.layer.0.attention.output.dense"].role == "o"
    assert named["encoder.layer.0.output.dense"].role == "down"
    assert named["encoder.layer.0.intermediate.dense"].role == "up"
    assert (
        named["encoder.layer.1.attention.self.value"].group == "encoder.layer.1.attention.self:qkv"
    )
    assert named["pooler.dense"].role is None and named["pooler.dense"].group is None


def test_fusion_can_be_switched_off(tiny_llama: nn.Module) -> None:
    assert all(u.group is None for u in discover_units(tiny_llama, fusion=None))
    gate_up = discover_units(tiny_llama, fusion=(("gate", "up"),))
    assert by_name(gate_up)["model.layers.0.mlp.up_proj"].group == "model.layers.0.mlp:gateup"
    assert by_name(gate_up)["model.layers.0.self_attn.q_proj"].group is None


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("model.layers.3.self_attn.q_proj", "q"),
        ("transformer.h.0.attn.c_proj", "o"),
        ("transformer.h.0.mlp.c_proj", "down"),
        ("gpt_neox.layers.0.attention.query_key_value", "qkv"),
        ("gpt_neox.layers.0.attention.dense", "o"),
        ("gpt_neox.layers.0.mlp.dense_h_to_4h", "up"),
        ("model.decoder.layers.0.fc1", "up"),
        ("model.decoder.layers.0.self_attn.out_proj", "o"),
        ("classifier", None),
    ],
)
def test_role_rules(name: str, role: str | None) -> None:
    assert role_of(name) == role


def test_cnn_layers_and_residual_stages() -> None:
    units = discover_units(DigitsCNN())
    assert [u.name for u in select(units, "layer")] == [
        "stem",
        "stages.0.conv1",
        "stages.0.conv2",
        "stages.1.conv1",
        "stages.1.conv2",
        "head",
    ]
    assert [u.name for u in select(units, "block")] == ["stages.0", "stages.1"]
    assert by_name(units)["stages.0.conv1"].params == 32 * 32 * 9


def test_weight_matrix_is_out_by_in_for_every_layer_kind(tiny_gpt2: nn.Module) -> None:
    conv1d = tiny_gpt2.transformer.h[0].attn.c_attn  # transformers Conv1D: weight is [in, out]
    assert tuple(weight_matrix(conv1d).shape) == (96, 32)
    assert torch.equal(matrix_to_weight(conv1d, weight_matrix(conv1d)), conv1d.weight)
    conv = nn.Conv2d(3, 8, 3)
    assert tuple(weight_matrix(conv).shape) == (8, 27)
    assert torch.equal(matrix_to_weight(conv, weight_matrix(conv)), conv.weight)


def test_model_without_quantizable_layers_is_a_clear_error() -> None:
    with pytest.raises(MixprecError, match="has no quantizable layers"):
        discover_units(nn.Sequential(nn.ReLU(), nn.LayerNorm(4)))


def test_minilm_has_37_layers_and_6_blocks() -> None:
    from mixprec.models import load_model

    units = discover_units(load_model("minilm").model)
    layers = select(units, "layer")
    assert len(layers) == 37 and layers[-1].name == "pooler.dense"
    assert len(select(units, "block")) == 6
    assert sum(u.params for u in layers) == 6 * (4 * 384 * 384 + 2 * 384 * 1536) + 384 * 384
    assert {u.name for u in select(units, "component")} == {
        f"component:{r}" for r in ("q", "k", "v", "o", "up", "down")
    }
