"""A tied LM head (the embedding matrix used twice) is one decision: one unit, its bytes counted
once, and quantizing it changes both uses, as a runtime that stores it once would."""

from __future__ import annotations

import torch

from mixprec.metrics import footprint
from mixprec.models import ModelBundle
from mixprec.plan import apply_plan, temporarily_applied, tied_users
from mixprec.search.cost import build_cost_model
from mixprec.tasks import CausalLMTask
from mixprec.units import discover_units, select
from tests.helpers.models import make_gpt2

IDS = {"input_ids": torch.arange(16).reshape(2, 8) % 64}


def bundle(tie: bool) -> ModelBundle:
    model = make_gpt2(tie=tie)
    return ModelBundle(f"gpt2-tie-{tie}", model, CausalLMTask(), (IDS,), (IDS,))


def test_the_tied_head_is_one_unit_counted_once() -> None:
    tied, untied = bundle(True).model, bundle(False).model
    assert tied.lm_head.weight is tied.transformer.wte.weight
    assert [u.name for u in select(discover_units(tied), "layer")].count("lm_head") == 1
    head = tied.lm_head.weight
    stored = sum(p.numel() * p.element_size() for p in tied.parameters())  # each tensor once
    assert footprint(tied, {}).total_bytes == stored
    assert footprint(untied, {}).total_bytes == stored + head.numel() * head.element_size()
    costs = build_cost_model(bundle(True), ["keep", "w:int8"])
    keep = costs.schemes.index("keep")
    assert costs.fixed_bytes + costs.bytes[:, keep].sum() == stored


def test_quantizing_the_head_quantizes_the_embedding_too() -> None:
    model = bundle(True).model
    before = model.transformer.wte.weight.detach().clone()
    quantized = apply_plan(model, {"lm_head": "w:int4_g32"})
    head, embedding = quantized.lm_head.weight, quantized.transformer.wte.weight
    assert head is embedding and not torch.equal(embedding, before)
    assert torch.equal(model.transformer.wte.weight, before)  # the original is untouched
    packed = apply_plan(model, {"lm_head": "w:int4_g32"}, packed=True)
    assert torch.equal(packed.transformer.wte.weight, embedding)  # the same bits when packed


def test_temporarily_applied_restores_every_use() -> None:
    model = bundle(True).model
    shared = model.lm_head.weight
    with torch.inference_mode():
        fp = model(**IDS).logits
    with temporarily_applied(model, {"lm_head": "w:int2"}) as inside, torch.inference_mode():
        assert inside.transformer.wte.weight is inside.lm_head.weight is not shared
        changed = inside(**IDS).logits
    assert model.lm_head.weight is shared and model.transformer.wte.weight is shared
    assert not torch.equal(changed, fp)
    with torch.inference_mode():
        assert torch.equal(model(**IDS).logits, fp)
    assert len(tied_users(model)) == 1 and not tied_users(bundle(False).model)
