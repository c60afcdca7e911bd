"""MoE models built locally from their transformers config classes (Mixtral, Qwen2-MoE and a
DeepSeek-V3 style one with a dense first layer and shared experts): the fused 3-D experts become
one linear layer per expert projection without changing the output, all experts of one MoE
layer form one fusion group, routers stay out of the search, Fisher adds an expert's gradients
up per sample, and a plan gives every expert of a layer the same scheme."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
import transformers as T

from mixprec.allocation import AllocationProblem, allocate
from mixprec.models import ModelBundle
from mixprec.moe import ExpertProjection, linear_experts
from mixprec.plan import apply_plan
from mixprec.scoring import Calibration, score
from mixprec.search.space import expand_exclude
from mixprec.sensitivity.fisher import empirical_fisher
from mixprec.tasks import CausalLMTask
from mixprec.units import discover_units, select

SMALL: dict[str, Any] = {
    "vocab_size": 64, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts_per_tok": 2,
}  # fmt: skip
MOE: dict[str, tuple[type, type, dict[str, Any]]] = {
    "mixtral": (T.MixtralConfig, T.MixtralForCausalLM, {**SMALL, "num_local_experts": 4}),
    "qwen2-moe": (
        T.Qwen2MoeConfig,
        T.Qwen2MoeForCausalLM,
        {**SMALL, "num_experts": 4, "moe_intermediate_size": 24,
         "shared_expert_intermediate_size": 40},
    ),
    "deepseek-v3": (
        T.DeepseekV3Config,
        T.DeepseekV3ForCausalLM,
        {**SMALL, "num_hidden_layers": 3, "first_k_dense_replace": 1, "num_key_value_heads": 4,
         "n_routed_experts": 4, "moe_intermediate_size": 24, "n_group": 1, "topk_group": 1,
         "n_shared_experts": 1, "kv_lora_rank": 16, "q_lora_rank": 24, "qk_rope_head_dim": 4,
         "qk_nope_head_dim": 4, "v_head_dim": 8},
    ),
}  # fmt: skip
MOE_LAYERS = {"mixtral": [0, 1], "qwen2-moe": [0, 1], "deepseek-v3": [1, 2]}


def build(kind: str) -> torch.nn.Module:
    config, model, settings = MOE[kind]
    torch.manual_seed(0)
    return model(config(**settings)).eval()


def tokens(rows: int = 3, length: int = 12) -> torch.Tensor:
    return torch.randint(0, 64, (rows, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", list(MOE))
def test_linear_experts_give_the_same_logits(kind: str) -> None:
    model = build(kind)
    ids = tokens()
    with torch.no_grad():
        before = model(ids).logits
    assert linear_experts(model) == len(MOE_LAYERS[kind])
    with torch.no_grad():
        after = model(ids).logits
    assert torch.equal(before, after)  # the same products in the same order


@pytest.mark.parametrize("kind", list(MOE))
def test_experts_of_a_layer_are_one_group_and_routers_are_kept(kind: str) -> None:
    model = build(kind)
    linear_experts(model)
    layers = select(discover_units(model), "layer")
    for index in MOE_LAYERS[kind]:
        prefix = f"model.layers.{index}.mlp.experts."
        experts = [u for u in layers if u.name.startswith(prefix)]
        assert len(experts) == 2 * 4  # gate_up and down of each of 4 experts
        assert {u.group for u in experts} == {f"model.layers.{index}.mlp.experts:experts"}
        assert {u.role for u in experts} == {"gate_up", "down"}
    names = [u.name for u in layers]
    assert not any(n.endswith(".mlp.gate") for n in names)  # a router is not a linear layer
    kept = expand_exclude(names, ["default"])
    if kind == "qwen2-moe":  # its shared-expert gate is a Linear: kept as stored, always
        assert any("shared_expert_gate" in k for k in kept)
    blocks = [u.name for u in discover_units(model) if u.level == "block"]
    assert blocks == [f"model.layers.{i}" for i in range(MOE[kind][2]["num_hidden_layers"])]


def test_fisher_of_an_expert_adds_its_gradients_up_per_sequence() -> None:
    """Float64, so the per-sequence autograd reference and the hooked sum agree to rounding."""
    model = build("mixtral").double()
    bundle = ModelBundle("tiny-mixtral", model, CausalLMTask(), (), ())
    batch = {"input_ids": tokens()}
    fisher = empirical_fisher(bundle, batch)
    chosen = ["model.layers.0.mlp.experts.1.gate_up_proj", "model.layers.1.mlp.experts.3.down_proj"]
    for name in chosen:
        layer = model.get_submodule(name)
        assert isinstance(layer, ExpertProjection)
        expected = torch.zeros_like(layer.weight)
        for row in range(3):
            single = {"input_ids": batch["input_ids"][row : row + 1]}
            loss = bundle.task.loss(model, single)
            (grad,) = torch.autograd.grad(loss, [layer.weight])
            expected += grad.square()
        assert float(expected.abs().max()) > 0  # the tokens reach this expert
        torch.testing.assert_close(fisher[name].double(), expected / 3, rtol=1e-5, atol=1e-12)


def test_a_plan_gives_all_experts_of_a_layer_one_scheme_and_changes_the_output() -> None:
    model = build("mixtral")
    ids = tokens(4, 12)
    data = Calibration(
        [ids[:2], ids[2:]],
        forward=lambda m, b: m(b).logits,
        loss=lambda logits, b: F.cross_entropy(logits[:, :-1].flatten(0, 1), b[:, 1:].flatten()),
    )
    table = score(model, data, ["w:int8", "w:int2"], ["fisher"], ["layer"])
    plan = allocate(AllocationProblem.build(table, model, "fisher", data=data), "5bits")
    for index in range(2):
        chosen = {s for n, s in plan.assignment.items() if f"layers.{index}.mlp.experts." in n}
        assert len(chosen) == 1
    ids = tokens()
    with torch.no_grad():
        before = model(ids).logits
        experts = {n: "w:int2" for n in plan.assignment if ".experts." in n}
        after = apply_plan(model, experts)(ids).logits
    assert not torch.equal(before, after)
