"""A plan made for another target, converted for a checkpoint target: each layer to the nearest
scheme the target runs on its shape (no fewer element bits), fused shards to their widest, a
tied head kept; one warning per change naming its layers, and the bits before and after."""

from __future__ import annotations

from pathlib import Path

from mixprec.metrics import footprint
from mixprec.models import fingerprint
from mixprec.plan import PrecisionPlan
from mixprec.search.convert import convert_plan
from tests.helpers.llamacpp import tiny_llama

BY_LEAF = {"q_proj": "w:int4_g128", "k_proj": "w:int8", "v_proj": "w:int4_g128",
           "o_proj": "w:mxfp4", "gate_proj": "w:nvfp4,a:nvfp4", "up_proj": "w:nvfp4,a:nvfp4",
           "down_proj": "w:q6_k", "lm_head": "w:int4_g128"}  # fmt: skip


def plan_for(tmp_path: Path, target: str = "any") -> tuple[PrecisionPlan, object]:
    model = tiny_llama(tmp_path / "hf", hidden=128)  # rows of 128 and 512: whole int groups
    assignment = {n: BY_LEAF[n.rsplit(".", 1)[-1]] for n in dict(model.named_modules())
                  if n.rsplit(".", 1)[-1] in BY_LEAF}  # fmt: skip
    provenance = {} if target == "any" else {"target": target}
    return PrecisionPlan("m", fingerprint(model), assignment, "5bits",
                         provenance=provenance), model  # fmt: skip


def test_compressed_tensors_takes_the_nearest_scheme_it_runs(tmp_path: Path) -> None:
    plan, model = plan_for(tmp_path)
    conversion = convert_plan(plan, "compressed-tensors", model)
    got = {m.rsplit(".", 1)[-1]: s for m, s in conversion.plan.assignment.items()}
    assert got == {"q_proj": "w:ct_w8a16", "k_proj": "w:ct_w8a16", "v_proj": "w:ct_w8a16",
                   "o_proj": "w:ct_mxfp4", "gate_proj": "w:ct_nvfp4", "up_proj": "w:ct_nvfp4",
                   "down_proj": "w:ct_w8a16", "lm_head": "keep"}  # fmt: skip
    warnings = "\n".join(conversion.warnings)
    assert "for compressed-tensors: w:mxfp4 -> w:ct_mxfp4 (compressed-tensors has no w:mxfp4): " \
        "model.layers.0.self_attn.o_proj, model.layers.1.self_attn.o_proj" in warnings  # fmt: skip
    assert "w:nvfp4,a:nvfp4 -> w:ct_nvfp4" in warnings
    assert "w:ct_w4a16 -> w:ct_w8a16 (one scheme per fused layer): " \
        "model.layers.0.self_attn.q_proj, model.layers.0.self_attn.v_proj" in warnings  # fmt: skip
    assert "w:int4_g128 -> keep (vLLM runs an output head tied to the input embedding" in warnings
    before = footprint(model, plan.assignment).bits_per_weight
    after = footprint(model, conversion.plan.assignment).bits_per_weight
    assert conversion.warnings[-1] == (
        "the plan is converted for compressed-tensors (15 of 15 layers changed): "
        f"{before:.3f} -> {after:.3f} bits per weight")  # fmt: skip


def test_modelopt_keeps_what_needs_more_than_four_bits(tmp_path: Path) -> None:
    plan, model = plan_for(tmp_path)
    conversion = convert_plan(plan, "modelopt", model)
    got = {m.rsplit(".", 1)[-1]: s for m, s in conversion.plan.assignment.items()}
    assert got["o_proj"] == got["gate_proj"] == got["up_proj"] == "w:mo_nvfp4"
    assert got["q_proj"] == got["k_proj"] == got["v_proj"] == "keep"  # k: int8, 8 bits
    assert got["down_proj"] == got["lm_head"] == "keep"
    assert conversion.plan.target == "modelopt"  # what it now is, and where it came from
    assert conversion.plan.provenance["converted_from"] == plan.target != "modelopt"
    assert "modelopt has no w:q6_k; nothing of 6 bits or more runs on rows of 512" in \
        "\n".join(conversion.warnings)  # fmt: skip


def test_a_plan_made_for_the_target_is_not_converted(tmp_path: Path) -> None:
    plan, model = plan_for(tmp_path, target="compressed-tensors")
    assert convert_plan(plan, "compressed-tensors", model).plan is plan
