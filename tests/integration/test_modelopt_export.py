"""`--to modelopt`: the checkpoint ModelOpt's exporter writes for W4A16_NVFP4 (what vLLM loads):
ModelOpt's own dequantization of its tensors gives exactly mixprec's fake-quantized weights,
its config is what ModelOpt's own converter makes of its hf_quant_config.json, fused shards share
one tensor scale; what vLLM cannot load is one line each, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mixprec.export_modelopt import MO_ALGORITHMS, hf_quant_config, quantization_config
from mixprec.plan import apply_plan
from mixprec.units import quantizable_layers
from tests.helpers.cli import run
from tests.helpers.llamacpp import tiny_llama
from tests.integration.test_compressed_tensors import plan_file

convert = pytest.importorskip("modelopt.torch.export.convert_hf_config")
nvfp4_tensor = pytest.importorskip("modelopt.torch.quantization.qtensor.nvfp4_tensor")
BY_LEAF = {"q_proj": "w:mo_nvfp4", "k_proj": "w:mo_nvfp4", "v_proj": "w:mo_nvfp4",
           "o_proj": "keep", "gate_proj": "w:mo_nvfp4", "up_proj": "w:mo_nvfp4",
           "down_proj": "w:mo_nvfp4"}  # fmt: skip


def modelopt_values(tensors: dict[str, torch.Tensor], module: str, shape: torch.Size
                    ) -> torch.Tensor:  # fmt: skip
    """ModelOpt's own dequantization of one exported layer."""
    qtensor = nvfp4_tensor.NVFP4QTensor(shape, torch.float32, tensors[f"{module}.weight"])
    return qtensor.dequantize(torch.float32, scale=tensors[f"{module}.weight_scale"],
                              double_scale=tensors[f"{module}.weight_scale_2"],
                              block_sizes={-1: 16})  # fmt: skip


def test_modelopt_reads_exactly_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:  # fmt: skip
    plan, assignment = plan_file(tmp_path, BY_LEAF)
    out = tmp_path / "checkpoint"
    code, _, err = run(["export", str(plan), "--to", "modelopt", "--out", str(out)], capsys)
    assert code == 0, err
    hf = json.loads((out / "hf_quant_config.json").read_text())
    details = hf["quantization"]
    assert details["quant_algo"] == "W4A16_NVFP4" and details["group_size"] == 16
    assert "model.layers.0.self_attn.o_proj" in details["exclude_modules"]
    assert "lm_head" in details["exclude_modules"]  # tied: vLLM runs it as the embedding
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == convert.convert_hf_quant_config_format(hf)
    assert config["tie_word_embeddings"] and (out / "tokenizer.json").is_file()
    tensors = load_file(out / "model.safetensors")
    expected = apply_plan(tiny_llama(tmp_path / "again"), assignment)
    ours = quantizable_layers(expected)
    for module, scheme in assignment.items():
        if scheme == "keep":
            assert torch.equal(tensors[f"{module}.weight"], ours[module].weight)
            continue
        assert tensors[f"{module}.weight"].dtype == torch.uint8
        assert tensors[f"{module}.weight_scale"].dtype == torch.float8_e4m3fn
        got = modelopt_values(tensors, module, ours[module].weight.shape)
        assert torch.equal(got, ours[module].weight), module
    attention = "model.layers.1.self_attn"  # vLLM takes one weight_scale_2 per fused layer
    assert len({float(tensors[f"{attention}.{p}_proj.weight_scale_2"]) for p in "qkv"}) == 1
    assert "lm_head.weight" not in tensors  # saved once, as the embedding


def test_several_algorithms_are_mixed_precision_as_modelopt_converts_it() -> None:
    layers = {"a.q": {"quant_algo": "W4A16_NVFP4", "group_size": 16},
              "a.o": {"quant_algo": "W4A16_NVFP4", "group_size": 32},
              "a.up": MO_ALGORITHMS["w:fp8_e4m3,a:fp8_e4m3"],
              "a.down": MO_ALGORITHMS["w:mo_mxfp8_e4m3,a:mo_mxfp8_e4m3"]}  # fmt: skip
    hf = hf_quant_config(layers, ["lm_head"])
    assert hf["quantization"]["quant_algo"] == "MIXED_PRECISION"
    assert hf["quantization"]["quantized_layers"] == layers
    assert quantization_config(hf) == convert.convert_hf_quant_config_format(hf)
    for algorithm in MO_ALGORITHMS.values():  # one alone: a group only where ModelOpt writes one
        alone = hf_quant_config({"a.q": algorithm, "a.o": algorithm}, ["lm_head"])
        assert quantization_config(alone) == convert.convert_hf_quant_config_format(alone)


@pytest.mark.parametrize(
    ("scheme", "preset"),
    [
        ("w:fp8_e4m3,a:fp8_e4m3", "FP8_PER_CHANNEL_PER_TOKEN_CFG"),
        ("w:mo_mxfp8_e4m3,a:mo_mxfp8_e4m3", "MXFP8_DEFAULT_CFG"),
    ],
)
def test_fp8_and_mxfp8_are_modelopts_own_export(
    scheme: str, preset: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same model through ModelOpt's own `mtq.quantize` + `export_hf_checkpoint` and through
    `--to modelopt`: the same algorithm, the same E4M3 weight bytes and the same scales."""
    mtq = pytest.importorskip("modelopt.torch.quantization")
    from modelopt.torch.export import export_hf_checkpoint

    plan, assignment = plan_file(tmp_path, dict.fromkeys(BY_LEAF, scheme), target="modelopt")
    ours_dir = tmp_path / "ours"
    code, _, err = run(["export", str(plan), "--to", "modelopt", "--out", str(ours_dir)], capsys)
    assert code == 0, err
    model = tiny_llama(tmp_path / "again")
    model.config.architectures = ["LlamaForCausalLM"]
    mtq.quantize(model, getattr(mtq, preset), None)  # weights and dynamic inputs: no calibration
    export_hf_checkpoint(model, dtype=torch.float32, export_dir=tmp_path / "theirs")
    ours_hf, theirs_hf = (json.loads((tmp_path / d / "hf_quant_config.json").read_text())
                          ["quantization"] for d in ("ours", "theirs"))  # fmt: skip
    for key in ("quant_algo", "group_size"):
        assert ours_hf.get(key) == theirs_hf.get(key), key
    ours, theirs = (load_file(tmp_path / d / "model.safetensors") for d in ("ours", "theirs"))
    for module in assignment:
        for name in ("weight", "weight_scale"):
            key = f"{module}.{name}"
            assert ours[key].dtype == theirs[key].dtype and ours[key].shape == theirs[key].shape
            assert torch.equal(ours[key].view(torch.uint8), theirs[key].view(torch.uint8)), key
    config = json.loads((ours_dir / "config.json").read_text())
    assert config["quantization_config"] == convert.convert_hf_quant_config_format(
        json.loads((ours_dir / "hf_quant_config.json").read_text())
    )


@pytest.mark.parametrize(
    ("schemes", "message"),
    [
        ({"o_proj": "w:nvfp4"}, "w:nvfp4 is not a ModelOpt algorithm mixprec writes; valid: "
         "w:mo_nvfp4, w:fp8_e4m3_tensor,a:fp8_e4m3_tensor, w:mo_nvfp4,a:mo_nvfp4, "
         "w:fp8_e4m3,a:fp8_e4m3, w:mo_mxfp8_e4m3,a:mo_mxfp8_e4m3, keep"),
        ({"o_proj": "w:mo_mxfp8_e4m3"},
         "w:mo_mxfp8_e4m3 is not a ModelOpt algorithm mixprec writes"),
        ({"k_proj": "keep"}, "vLLM fuses q_proj/k_proj/v_proj of model.layers.0.self_attn"),
    ],
)  # fmt: skip
def test_what_vllm_cannot_load_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], schemes: dict[str, str], message: str
) -> None:
    plan, _ = plan_file(tmp_path, {**BY_LEAF, **schemes}, target="modelopt")
    out = tmp_path / "checkpoint"
    code, _, err = run(["export", str(plan), "--to", "modelopt", "--out", str(out)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".checkpoint*"))


def test_a_tied_head_is_never_quantized(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:  # fmt: skip
    """Kept, with a warning, in a plan made for another target; one line in one made for
    modelopt (it cannot have come from a modelopt search)."""
    for target, code_wanted in (("any", 0), ("modelopt", 2)):
        plan, _ = plan_file(tmp_path / target, BY_LEAF, target=target)
        data = json.loads(plan.read_text())
        data["assignment"]["lm_head"] = "w:mo_nvfp4"
        plan.write_text(json.dumps(data))
        out = tmp_path / target / "checkpoint"
        code, _, err = run(["export", str(plan), "--to", "modelopt", "--out", str(out)], capsys)
        assert code == code_wanted, err
        if code == 2:
            assert "module lm_head is tied to the input embedding" in err and not out.exists()
            continue
        assert "w:mo_nvfp4 -> keep (vLLM runs an output head tied to the input embedding" in err
        hf = json.loads((out / "hf_quant_config.json").read_text())
        assert "lm_head" in hf["quantization"]["exclude_modules"]


@pytest.mark.parametrize(
    ("static", "preset", "algorithm"),
    [
        ("w:fp8_e4m3_tensor,a:fp8_e4m3_tensor", "FP8_DEFAULT_CFG", "FP8"),
        ("w:mo_nvfp4,a:mo_nvfp4", "NVFP4_DEFAULT_CFG", "NVFP4"),
    ],
)
def test_static_inputs_are_modelopts_own_calibration(
    static: str, preset: str, algorithm: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """FP8 and NVFP4 (static inputs): ModelOpt's `mtq.quantize` calibrated on the same batches
    and `--to modelopt` of a plan holding those batches' input ranges store the same input
    scales, and the same weight bytes and scales; FP8 only where a layer is not fused, as
    ModelOpt gives each FP8 shard its own scale and vLLM requantizes them to the largest, which
    mixprec's shards share (so the shard that holds it is byte-identical)."""
    mtq = pytest.importorskip("modelopt.torch.quantization")
    from dataclasses import replace

    from modelopt.torch.export import export_hf_checkpoint

    from mixprec.calibration import input_ranges
    from mixprec.plan import PrecisionPlan

    plan_path, assignment = plan_file(tmp_path, dict.fromkeys(BY_LEAF, static), "modelopt")
    batches = [torch.tensor([[1, 70, 300, 9000, 12, 44, 5]]), torch.tensor([[3, 8, 2000]])]
    model = tiny_llama(tmp_path / "again")
    ranges = input_ranges(model, batches, lambda m, b: m(b))
    plan = replace(PrecisionPlan.load(plan_path), input_ranges={m: ranges[m] for m in assignment})
    plan.save(plan_path)
    code, _, err = run(["export", str(plan_path), "--to", "modelopt", "--out",
                        str(tmp_path / "ours")], capsys)  # fmt: skip
    assert code == 0, err
    model.config.architectures = ["LlamaForCausalLM"]

    def calibrate(quantized: torch.nn.Module) -> None:
        for batch in batches:
            quantized(batch)

    mtq.quantize(model, getattr(mtq, preset), calibrate)
    export_hf_checkpoint(model, dtype=torch.float32, export_dir=tmp_path / "theirs")
    ours, theirs = (load_file(tmp_path / d / "model.safetensors") for d in ("ours", "theirs"))
    hf = json.loads((tmp_path / "ours" / "hf_quant_config.json").read_text())
    assert hf["quantization"]["quant_algo"] == algorithm
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["quantization_config"] == convert.convert_hf_quant_config_format(hf)

    def same(key: str) -> bool:
        a, b = ours[key], theirs[key]
        raw = [t.reshape(-1).contiguous().view(torch.uint8) for t in (a, b)]
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(*raw)

    fused = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "mlp",
             "up_proj": "mlp"}  # fmt: skip
    for module in assignment:
        parent, _, leaf = module.rpartition(".")
        assert same(f"{module}.input_scale"), module
        if leaf not in fused or algorithm == "NVFP4":
            names = ("weight", "weight_scale", "weight_scale_2")[: 3 if algorithm == "NVFP4" else 2]
            assert all(same(f"{module}.{name}") for name in names), module
            continue
        shards = [f"{parent}.{s}" for s, g in fused.items() if g == fused[leaf]]
        largest = max(float(theirs[f"{s}.weight_scale"]) for s in shards)
        assert float(ours[f"{module}.weight_scale"]) == largest, module
        if float(theirs[f"{module}.weight_scale"]) == largest:
            assert same(f"{module}.weight"), module
