"""Unit discovery on the decoder architectures users bring, each a tiny random model built
locally from its transformers config class: roles, q/k/v fusion groups, blocks, and the LM head
that search keeps by default."""

from __future__ import annotations

from typing import Any

import pytest
import transformers as T

from mixprec.search.space import kept_by_default
from mixprec.units import discover_units, select

SMALL: dict[str, Any] = {
    "vocab_size": 64,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
SPLIT = ["down", "gate", "k", "o", "q", "up", "v"]
FUSED = ["down", "o", "qkv", "up"]


@pytest.mark.parametrize(
    ("config", "model", "settings", "roles", "tied"),
    [
        (T.LlamaConfig, T.LlamaForCausalLM, SMALL, SPLIT, False),
        (T.Qwen2Config, T.Qwen2ForCausalLM, SMALL, SPLIT, False),
        (T.Qwen3Config, T.Qwen3ForCausalLM, {**SMALL, "head_dim": 8}, SPLIT, False),
        (T.MistralConfig, T.MistralForCausalLM, SMALL, SPLIT, False),
        (T.GemmaConfig, T.GemmaForCausalLM, {**SMALL, "head_dim": 8}, SPLIT, True),
        (
            T.Phi3Config,
            T.Phi3ForCausalLM,
            {**SMALL, "pad_token_id": 0, "eos_token_id": 1},
            ["down", "gate_up", "o", "qkv"],
            False,
        ),
        (
            T.GPTNeoXConfig,
            T.GPTNeoXForCausalLM,
            {k: v for k, v in SMALL.items() if k != "num_key_value_heads"},
            FUSED,
            False,
        ),
    ],
)
def test_decoder_units(
    config: type, model: type, settings: dict[str, Any], roles: list[str], tied: bool
) -> None:
    built = model(config(**settings))
    units = discover_units(built)
    layers = select(units, "layer")
    assert sorted({u.role for u in layers if u.role}) == roles
    assert [u.name for u in layers if u.role is None] == ["lm_head"]
    assert kept_by_default("lm_head") == "LM head (default)"
    assert len(layers) == 2 * len(roles) + 1  # every projection of both layers, and the head
    assert len(select(units, "block")) == 2
    groups = {u.group for u in layers if u.group}
    assert len(groups) == (2 if "q" in roles else 0)  # q, k, v of one attention: one decision
    head = built.get_output_embeddings().weight
    assert (head is built.get_input_embeddings().weight) == tied
