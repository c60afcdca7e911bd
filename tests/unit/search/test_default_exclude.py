"""What search keeps as stored unless asked: the LM head by default, MoE routers always; and
`--space REGEX=SCHEMES` read into search spaces."""

from __future__ import annotations

import pytest
from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

from mixprec.errors import MixprecError
from mixprec.search.space import expand_exclude, kept_by_default, parse_spaces
from mixprec.units import quantizable_layers
from tests.helpers.models import make_bert, make_llama

HEAD = r"(^|\.)lm_head$"
ROUTER = r"(^|\.)(router|gate|shared_expert_gate)$"


def qwen2_moe_layers() -> list[str]:
    config = Qwen2MoeConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                            moe_intermediate_size=16, shared_expert_intermediate_size=32,
                            num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                            num_experts=4, num_experts_per_tok=2)  # fmt: skip
    return list(quantizable_layers(Qwen2MoeForCausalLM(config)))


def test_default_keeps_the_lm_head_where_there_is_one() -> None:
    llama = list(quantizable_layers(make_llama()))
    assert expand_exclude(llama, ["default"]) == [HEAD]
    assert expand_exclude(llama, ["none"]) == []
    assert expand_exclude(llama, ["default", r"layers\.0\."]) == [HEAD, r"layers\.0\."]
    assert expand_exclude(list(quantizable_layers(make_bert())), ["default"]) == []  # no head
    assert kept_by_default("lm_head") == "LM head (default)"
    assert kept_by_default("lm_head", ["none"]) is None
    assert kept_by_default("model.layers.0.mlp.gate_proj") is None  # a gate projection is no router


def test_moe_routers_are_kept_whatever_the_list_says() -> None:
    layers = qwen2_moe_layers()
    assert "model.layers.0.mlp.shared_expert_gate" in layers
    assert expand_exclude(layers, ["none"]) == [ROUTER]
    assert expand_exclude(layers, ["default"]) == [ROUTER, HEAD]
    assert kept_by_default("model.layers.0.mlp.shared_expert_gate", ["none"]) == (
        "MoE router (always)"
    )


def test_none_must_stand_alone() -> None:
    with pytest.raises(MixprecError, match="exclude 'none' keeps nothing by default: give it"):
        expand_exclude(["lm_head"], ["none", "lm_head"])


def test_spaces_are_read_in_order() -> None:
    spaces = parse_spaces(["self_attn=w:int8, keep", "a=b=w:int4_g128"])
    assert spaces == {"self_attn": ["w:int8", "keep"], "a=b": ["w:int4_g128"]}
    assert list(spaces) == ["self_attn", "a=b"]
    for bad in ("self_attn", "=w:int8", "mlp=", "mlp=,"):
        with pytest.raises(MixprecError, match="is not REGEX=SCHEME"):
            parse_spaces([bad])
