"""A plan made for llama.cpp holds only what llama.cpp runs: its own types, weights only, on rows
that hold whole blocks (K-quants need 256; llama-quantize would quietly swap in another type);
asking for anything else explicitly is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from mixprec.allocation import AllocationProblem, allocate
from mixprec.errors import MixprecError
from mixprec.plan import PrecisionPlan
from mixprec.scheme import Scheme
from mixprec.scoring import Calibration, score
from mixprec.search.targets import refusal
from mixprec.sensitivity.table import ScoreTable

Scored = tuple[LlamaForCausalLM, Calibration, ScoreTable]
SCHEMES = ["w:q4_k", "w:q6_k", "w:q4_0", "w:q8_0", "w:int4_g128", "w:nvfp4,a:nvfp4"]


def scored_llama(schemes: list[str], blocks: int = 1, tied: bool = False) -> Scored:
    """A Llama (its head tied to the input embedding or not) whose down projections read
    384-wide rows (not a multiple of 256), scored by fisher under `schemes`."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=256, intermediate_size=384,
                         num_hidden_layers=blocks, num_attention_heads=4,
                         num_key_value_heads=2, tie_word_embeddings=tied)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.tie_weights()
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(1))
    data = Calibration(
        [ids[:2], ids[2:]],
        forward=lambda m, b: m(b).logits,
        loss=lambda logits, b: F.cross_entropy(logits[:, :-1].flatten(0, 1), b[:, 1:].flatten()),
    )
    return model, data, score(model, data, schemes, ["fisher"], ["layer"])


@pytest.fixture(scope="module")
def scored() -> Scored:
    return scored_llama(SCHEMES)


def test_refusals_name_what_llamacpp_lacks() -> None:
    assert refusal("any", Scheme.parse("w:nvfp4,a:nvfp4"), (8, 8)) is None
    assert refusal("llamacpp", Scheme.parse("keep"), (8, 3)) is None
    assert "no activation formats" in str(
        refusal("llamacpp", Scheme.parse("w:q8_0,a:mxfp8_e4m3"), (8, 64))
    )
    assert "no int4_g128" in str(refusal("llamacpp", Scheme.parse("w:int4_g128"), (8, 256)))
    assert (
        refusal("llamacpp", Scheme.parse("w:q4_k"), (256, 384))
        == "rows of 384 are not a multiple of q4_k's block of 256"
    )
    assert refusal("llamacpp", Scheme.parse("w:q4_0"), (256, 384)) is None


@pytest.mark.parametrize("budget", ["4.6bits", "5.5bits", "7bits"])
def test_a_llamacpp_plan_holds_only_what_llamacpp_runs(scored: Scored, budget: str) -> None:
    model, data, table = scored
    problem = AllocationProblem.build(table, model, "fisher", data=data, target="llamacpp",
                                      exclude=["none"])  # fmt: skip
    plan = allocate(problem, budget)
    assert plan.target == "llamacpp"
    for module, text in plan.assignment.items():
        scheme = Scheme.parse(text)
        shape = tuple(model.get_submodule(module).weight.shape)
        assert refusal("llamacpp", scheme, shape) is None, (module, text)
        if module.endswith("down_proj"):
            assert scheme.weight is None or not scheme.weight.nested_scales
    assert PrecisionPlan.from_json(plan.to_json()).target == "llamacpp"
    anywhere = allocate(AllocationProblem.build(table, model, "fisher", data=data,
                                                exclude=["none"]), budget)  # fmt: skip
    assert anywhere.target == "any" and "target" not in anywhere.provenance


def test_asking_for_what_the_target_cannot_run_is_one_line(scored: Scored) -> None:
    model, data, table = scored
    with pytest.raises(MixprecError, match=r"asks for w:q4_k on model.layers.0.mlp.down_proj.*"
                                           r"rows of 384"):  # fmt: skip
        AllocationProblem.build(table, model, "fisher", data=data, target="llamacpp",
                                spaces={"down_proj": ["w:q4_k"]})  # fmt: skip
    with pytest.raises(MixprecError, match="runs none of the candidates"):
        AllocationProblem.build(table, model, "fisher", data=data, target="llamacpp",
                                schemes=["w:int4_g128"])  # fmt: skip
    with pytest.raises(
        MixprecError, match="unknown target 'vllm'; valid: any, llamacpp, compressed-tensors"
    ):
        AllocationProblem.build(table, model, "fisher", data=data, target="vllm")


def test_the_cli_refuses_an_unknown_target(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.helpers.cli import run

    code, _, err = run(["search", str(tmp_path), "--budget", "5bits", "--out",
                        str(tmp_path / "p.json"), "--target", "tensorrt"], capsys)  # fmt: skip
    assert (
        code == 2
        and "unknown --target 'tensorrt'; valid: any, llamacpp, compressed-tensors, modelopt" in err
    )


CT_SCHEMES = ["w:ct_w4a16", "w:ct_w8a16", "w:fp8_e4m3", "w:int4_g128"]


@pytest.fixture(scope="module")
def tied_scored() -> Scored:
    """Two blocks and a head that is the input embedding (as SmolLM2's)."""
    return scored_llama(CT_SCHEMES, blocks=2, tied=True)


def test_refusals_name_what_vllm_cannot_run() -> None:
    ct = "compressed-tensors"
    assert refusal(ct, Scheme.parse("w:ct_w4a16"), (8, 384)) is None
    assert refusal(ct, Scheme.parse("w:fp8_e4m3"), (8, 576)) is None  # per channel: any row
    assert refusal(ct, Scheme.parse("w:ct_w4a16"), (8, 576)) == (
        "rows of 576 are not a multiple of ct_w4a16's group of 128 (vLLM's kernels need whole "
        "groups)"
    )
    from mixprec.export_compressed import CT_WRITTEN

    assert f"schemes ({', '.join(CT_WRITTEN)}), not w:q4_0" in str(
        refusal(ct, Scheme.parse("w:q4_0"), (8, 256))
    )
    assert "w:fp8_e4m3_tensor,a:fp8_e4m3_tensor" in CT_WRITTEN  # FP8 with static inputs
    for dynamic in ("w:fp8_e4m3,a:fp8_e4m3", "w:ct_mxfp4,a:ct_mxfp4"):  # vLLM's W8A8 / W4A4
        assert refusal(ct, Scheme.parse(dynamic), (8, 256)) is None
    block = Scheme.parse("w:ct_fp8_e4m3_block,a:ct_fp8_e4m3_g128")  # FP8_BLOCK: whole tiles
    assert refusal(ct, block, (256, 384)) is None
    assert "200 outputs are not a multiple of ct_fp8_e4m3_block's tile of 128 rows" in str(
        refusal(ct, block, (200, 384))
    )
    for other in ("w:fp8_e4m3,a:ct_mxfp8_e4m3", "w:ct_w4a16,a:fp8_e4m3", "w:ct_fp8_e4m3_block"):
        assert f"not {other}" in str(refusal(ct, Scheme.parse(other), (8, 256)))
    assert refusal("modelopt", Scheme.parse("w:mo_nvfp4,a:mo_nvfp4"), (8, 256)) is None  # W4A4
    assert "not w:mo_nvfp4,a:ct_nvfp4" in str(
        refusal("modelopt", Scheme.parse("w:mo_nvfp4,a:ct_nvfp4"), (8, 256))
    )
    assert "tied to the input embedding" in str(
        refusal(ct, Scheme.parse("w:ct_w8a16"), (64, 256), tied=True)
    )
    assert refusal(ct, Scheme.parse("keep"), (64, 256), tied=True) is None


@pytest.mark.parametrize("budget", ["5bits", "7bits"])
def test_a_compressed_tensors_plan_is_one_vllm_loads(tied_scored: Scored, budget: str) -> None:
    from mixprec.export_compressed import check_vllm_rules

    model, data, table = tied_scored
    problem = AllocationProblem.build(table, model, "fisher", data=data,
                                      target="compressed-tensors", exclude=["none"])  # fmt: skip
    plan = allocate(problem, budget)
    assert plan.target == "compressed-tensors"
    check_vllm_rules(plan.assignment)  # q/k/v and gate/up share a scheme: no error
    assert list(problem.costs.members["model.layers.0.mlp:gateup"]) == [
        "model.layers.0.mlp.gate_proj",
        "model.layers.0.mlp.up_proj",
    ]
    assert plan.assignment["lm_head"] == "keep"  # tied: vLLM would not quantize it
    for module, text in plan.assignment.items():
        assert not text.startswith("w:int4_g128"), module
    assert len({plan.assignment[m] for m in plan.assignment if "layers" in m}) > 1  # mixed
    anywhere = AllocationProblem.build(table, model, "fisher", data=data, exclude=["none"])
    assert "model.layers.0.mlp.gate_proj" in anywhere.costs.members  # untied elsewhere


def test_a_modelopt_plan_is_one_vllm_loads() -> None:
    """ModelOpt's W4A16_NVFP4 or the layer's own dtype: the fused shards one decision, the tied
    head kept, rows of whole 16-blocks only; another scheme asked for is one line."""
    from mixprec.export_compressed import check_vllm_rules

    model, data, table = scored_llama(["w:mo_nvfp4", "w:nvfp4"], blocks=2, tied=True)
    problem = AllocationProblem.build(table, model, "fisher", data=data, target="modelopt",
                                      exclude=["none"])  # fmt: skip
    plan = allocate(problem, "8bits")
    assert plan.target == "modelopt" and plan.assignment["lm_head"] == "keep"
    assert set(plan.assignment.values()) == {"w:mo_nvfp4", "keep"}  # mixed, never w:nvfp4
    check_vllm_rules(plan.assignment)
    assert refusal("modelopt", Scheme.parse("w:mo_nvfp4"), (8, 40)) == (
        "rows of 40 are not a multiple of mo_nvfp4's group of 16 (vLLM's kernels need whole groups)"
    )
    with pytest.raises(MixprecError, match=r"asks for w:nvfp4 on model.layers.0.mlp.down_proj, "
                       r"which target modelopt cannot run: mixprec writes ModelOpt's"):  # fmt: skip
        AllocationProblem.build(table, model, "fisher", data=data, target="modelopt",
                                spaces={"down_proj": ["w:nvfp4"]}, exclude=["none"])  # fmt: skip
