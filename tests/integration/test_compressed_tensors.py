"""`--to compressed-tensors`: a checkpoint folder transformers loads on the CPU (compressed-
tensors' own decompression) with exactly mixprec's fake-quantized weights and logits; vLLM's
rules and a folder that is not new or empty are one line each, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mixprec.models import fingerprint
from mixprec.plan import PrecisionPlan, apply_plan
from mixprec.units import quantizable_layers
from tests.helpers.cli import run
from tests.helpers.llamacpp import tiny_llama

BY_LEAF = {"q_proj": "w:ct_w4a16", "k_proj": "w:ct_w4a16", "v_proj": "w:ct_w4a16",
           "o_proj": "w:ct_w8a16", "gate_proj": "w:fp8_e4m3", "up_proj": "w:fp8_e4m3",
           "down_proj": "keep"}  # fmt: skip


def plan_file(folder: Path, schemes: dict[str, str], target: str = "any"
              ) -> tuple[Path, dict[str, str]]:  # fmt: skip
    """A plan of `schemes` by layer leaf for the tiny Llama, recorded as made for `target`."""
    model = tiny_llama(folder / "hf")
    layers = [n for n in quantizable_layers(model) if n != "lm_head"]
    assignment = {n: schemes[n.rsplit(".", 1)[-1]] for n in layers}
    provenance = {} if target == "any" else {"target": target}
    plan = PrecisionPlan(f"hf:{folder / 'hf'}", fingerprint(model), assignment, "6bits",
                         provenance=provenance)  # fmt: skip
    plan.save(folder / "plan.json")
    return folder / "plan.json", assignment


def exported(plan: Path, out: Path, capsys: pytest.CaptureFixture[str]
             ) -> tuple[str, dict[str, Any]]:  # fmt: skip
    """`export --to compressed-tensors` of `plan` into `out`: its stderr and the checkpoint's
    quantization_config."""
    code, _, err = run(["export", str(plan), "--to", "compressed-tensors", "--out", str(out)],
                       capsys)  # fmt: skip
    assert code == 0, err
    return err, json.loads((out / "config.json").read_text())["quantization_config"]


def loads_as_planned(out: Path, folder: Path, plan: PrecisionPlan | dict[str, str]) -> None:
    """transformers' load of checkpoint `out` gives the tiny Llama under `plan` exactly (logits
    and weights), and not the logits of its weights alone (the inputs were quantized)."""
    assignment = dict(plan.assignment if isinstance(plan, PrecisionPlan) else plan)
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    expected = apply_plan(tiny_llama(folder / "again"), plan).eval()
    weights_only = {m: s.split(",")[0] for m, s in assignment.items()}
    plain = apply_plan(tiny_llama(folder / "plain"), weights_only).eval()
    ids = torch.tensor([[1, 50, 600, 7000, 30, 5]])
    with torch.no_grad():
        logits = loaded(ids).logits
        assert torch.equal(logits, expected(ids).logits)
        assert not torch.equal(logits, plain(ids).logits)
    theirs, ours = dict(loaded.named_modules()), dict(expected.named_modules())
    for module in assignment:
        assert torch.equal(theirs[module].weight + 0.0, ours[module].weight + 0.0), module


def test_transformers_loads_exactly_the_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan, assignment = plan_file(tmp_path, BY_LEAF)
    out = tmp_path / "checkpoint"
    code, _, err = run(["export", str(plan), "--to", "compressed-tensors", "--out", str(out)],
                       capsys)  # fmt: skip
    assert code == 0, err
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors"
    assert config["format"] == "mixed-precision"  # int groups packed, FP8 float-quantized
    groups = {g["format"]: g for g in config["config_groups"].values()}
    assert set(groups) == {"pack-quantized", "float-quantized"}
    targets = sorted(t for g in config["config_groups"].values() for t in g["targets"])
    assert targets == sorted(m for m, s in assignment.items() if s != "keep")
    assert "model.layers.0.mlp.down_proj" in config["ignore"] and "lm_head" in config["ignore"]
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    expected = apply_plan(tiny_llama(tmp_path / "again"), assignment).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer(["the quick brown fox jumps"], return_tensors="pt")["input_ids"]
    with torch.no_grad():  # the first forward decompresses (compressed-tensors' own hook)
        assert torch.equal(loaded(ids).logits, expected(ids).logits)
    theirs, ours = dict(loaded.named_modules()), dict(expected.named_modules())
    for module in assignment:
        assert torch.equal(theirs[module].weight + 0.0, ours[module].weight + 0.0), module


def test_fp8_with_dynamic_activations_runs_in_transformers_as_predicted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`w:fp8_e4m3,a:fp8_e4m3` is FP8_DYNAMIC (vLLM's W8A8 FP8): its config group quantizes
    each token's input on the fly, and transformers' logits are mixprec's, which differ from
    the weight-only plan's."""
    dynamic = "w:fp8_e4m3,a:fp8_e4m3"
    plan, assignment = plan_file(tmp_path, {**BY_LEAF, "gate_proj": dynamic, "up_proj": dynamic,
                                            "o_proj": dynamic})  # fmt: skip
    err, config = exported(plan, tmp_path / "checkpoint", capsys)
    groups = [g for g in config["config_groups"].values() if g["input_activations"]]
    assert len(groups) == 1 and len(groups[0]["targets"]) == 6
    activations = groups[0]["input_activations"]
    assert (activations["strategy"], activations["dynamic"], activations["type"]) == (
        "token",
        True,
        "float",
    )
    loads_as_planned(tmp_path / "checkpoint", tmp_path, assignment)
    capsys.readouterr()
    measured = {}
    for runtime in ("torch", "transformers"):
        code, out, err = run(["evaluate", "--plan", str(plan), "--runtime", runtime, "--json"],
                             capsys)  # fmt: skip
        assert code == 0, err
        measured[runtime] = json.loads(out)["metrics"]["perplexity"]
    assert measured["transformers"] == pytest.approx(measured["torch"], rel=1e-5)
    from mixprec.export_compressed import write_compressed_tensors

    bf16 = tiny_llama(tmp_path / "bf16").to(torch.bfloat16)
    warnings = write_compressed_tensors(PrecisionPlan.load(plan), bf16, tmp_path / "bf16-ck")
    assert any("computes FP8 token scales in the model's dtype" in w for w in warnings)


def test_a_plan_for_another_target_is_converted_with_a_warning_per_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan, _ = plan_file(tmp_path, {**BY_LEAF, "o_proj": "w:int4_g32", "k_proj": "w:int8"})
    out = tmp_path / "checkpoint"
    code, _, err = run(["export", str(plan), "--to", "compressed-tensors", "--out", str(out)],
                       capsys)  # fmt: skip
    assert code == 0, err
    assert (
        "warning: for compressed-tensors: w:int4_g32 -> w:ct_w4a16 (compressed-tensors has no "
        "w:int4_g32): model.layers.0.self_attn.o_proj, model.layers.1.self_attn.o_proj" in err
    )
    assert "w:ct_w4a16 -> w:ct_w8a16 (one scheme per fused layer)" in err  # k_proj's int8
    assert err.splitlines()[-1].startswith("mixprec: warning: the plan is converted for ")
    config = json.loads((out / "config.json").read_text())["quantization_config"]
    attention = "model.layers.0.self_attn"
    [group] = [g for g in config["config_groups"].values() if f"{attention}.q_proj" in g["targets"]]
    assert {f"{attention}.{p}_proj" for p in "kv"} <= set(group["targets"])
    assert group["weights"]["num_bits"] == 8


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"k_proj": "w:ct_w8a16"}, "vLLM fuses q_proj/k_proj/v_proj of model.layers.0.self_attn "
                                   "into one layer with one scheme; the plan gives k_proj "
                                   "w:ct_w8a16, q_proj w:ct_w4a16, v_proj w:ct_w4a16"),
        ({"o_proj": "w:mxfp4"}, "w:mxfp4 is not a compressed-tensors scheme mixprec writes; valid: "
                                "w:ct_w8a16, w:ct_w4a16, w:ct_w4a16_asym, w:ct_nvfp4, w:fp8_e4m3, "
                                "w:fp8_e4m3_tensor, w:ct_mxfp4, w:ct_mxfp8_e4m3, "
                                "w:fp8_e4m3,a:fp8_e4m3, w:fp8_e4m3_tensor,a:fp8_e4m3_tensor, "
                                "w:ct_fp8_e4m3_block,a:ct_fp8_e4m3_g128, w:ct_nvfp4,a:ct_nvfp4, "
                                "w:ct_mxfp8_e4m3,a:ct_mxfp8_e4m3, w:ct_mxfp4,a:ct_mxfp4, keep"),
    ],
)  # fmt: skip
def test_what_vllm_cannot_load_is_one_line(
    change: dict[str, str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan, _ = plan_file(tmp_path, {**BY_LEAF, **change}, target="compressed-tensors")
    out = tmp_path / "checkpoint"
    code, _, err = run(["export", str(plan), "--to", "compressed-tensors", "--out", str(out)],
                       capsys)  # fmt: skip
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not out.exists() and not list(tmp_path.glob(".checkpoint*"))


def test_a_folder_that_holds_something_is_never_written_into(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asym = dict.fromkeys(("q_proj", "k_proj", "v_proj"), "w:ct_w4a16_asym")
    plan, _ = plan_file(tmp_path, {**BY_LEAF, **asym})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine\n")
    (tmp_path / "file").write_text("mine\n")
    for out, what in ((mine, "a folder that is not empty"), (tmp_path / "file", "a file")):
        code, _, err = run(["export", str(plan), "--to", "compressed-tensors", "--out",
                            str(out)], capsys)  # fmt: skip
        assert code == 2 and f"is {what}; give a new or empty folder" in err
    assert (mine / "notes.txt").read_text() == "mine\n" and len(list(mine.iterdir())) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(["export", str(plan), "--to", "compressed-tensors", "--out", str(empty)],
                       capsys)  # fmt: skip
    assert code == 0 and (empty / "model.safetensors").is_file(), err
    assert "transformers cannot load asymmetric pack-quantized weights yet" in err


def test_evaluate_in_transformers_measures_what_mixprec_predicted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan, _ = plan_file(tmp_path, BY_LEAF)
    code, out, err = run(["evaluate", "--plan", str(plan), "--json"], capsys)
    assert code == 0, err
    predicted = json.loads(out)
    code, out, err = run(["evaluate", "--plan", str(plan), "--runtime", "transformers", "--json"],
                         capsys)  # fmt: skip
    assert code == 0, err
    measured = json.loads(out)
    assert measured["kernel"].startswith("transformers ") and "compressed-tensors" in \
        measured["kernel"]  # fmt: skip
    for name, value in predicted["metrics"].items():  # the same weights, the same model code
        assert measured["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    # as stored: codes and float32 scales as mixprec counts them, plus each packed weight's shape
    assert measured["bits_per_weight"] == pytest.approx(predicted["bits_per_weight"], rel=1e-3)


def test_evaluate_in_transformers_refuses_what_it_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan, _ = plan_file(tmp_path, {**BY_LEAF, "o_proj": "w:q4_0"}, target="compressed-tensors")
    cases = {
        ("--plan", str(plan), "--runtime", "transformers"): "w:q4_0 is not a compressed-tensors "
        "scheme mixprec writes",
        ("-m", "minilm", "--scheme", "w:fp8_e4m3", "--runtime", "transformers", "--packed"):
            "it goes with --runtime torch",
        ("-m", "minilm", "--scheme", "w:fp8_e4m3", "--runtime", "transformers",
         "--llamacpp-bin", str(tmp_path)): "--llamacpp-bin goes with --runtime llamacpp",
        ("-m", "digits-cnn", "--scheme", "w:fp8_e4m3", "--runtime", "transformers"):
            "runs transformers models; digits-cnn is a",
    }  # fmt: skip
    for argv, message in cases.items():
        code, _, err = run(["evaluate", *argv], capsys)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)


def test_a_run_makes_and_measures_a_plan_vllm_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny_llama(tmp_path / "hf")  # its tied head (49152 x 256, kept in FP32) is most weights
    config = tmp_path / "run.toml"
    config.write_text(f'model = "hf:{tmp_path / "hf"}"\noutput = "{tmp_path / "run"}"\n'
                      'schemes = ["w:ct_w4a16", "w:ct_w8a16", "w:fp8_e4m3"]\n'
                      'estimators = ["fisher"]\nlevels = ["layer"]\nbudgets = ["31bits"]\n'
                      'exports = ["compressed-tensors"]\ntarget = "compressed-tensors"\n'
                      'runtime = "transformers"\n')  # fmt: skip
    code, _, err = run(["run", str(config), "-q"], capsys)
    assert code == 0, err
    run_folder = tmp_path / "run"
    plan = PrecisionPlan.load(run_folder / "plans" / "ilp-31bits.json")
    assert plan.target == "compressed-tensors" and plan.assignment["lm_head"] == "keep"  # tied
    for layer in range(2):
        mlp = f"model.layers.{layer}.mlp"
        assert plan.assignment[f"{mlp}.gate_proj"] == plan.assignment[f"{mlp}.up_proj"]
    measured = json.loads((run_folder / "eval" / "ilp-31bits.json").read_text())
    assert measured["kernel"].startswith("transformers") and measured["metrics"]["perplexity"] > 1
    exported = [p for p in (run_folder / "exports").iterdir() if p.is_dir()]
    assert exported and (exported[0] / "config.json").is_file()
    written = (exported[0] / "config.json").stat().st_mtime_ns
    code, _, err = run(["run", str(config), "-q"], capsys)  # again: every step up to date
    assert code == 0, err
    assert (exported[0] / "config.json").stat().st_mtime_ns == written


def test_nvfp4_is_stored_as_compressed_tensors_decodes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NVFP4A16 (vLLM's CompressedTensorsW4A16Fp4): compressed-tensors' own unpacking and
    dequantization (in float32) give the plan's values; fused shards share a global scale.
    transformers decompresses it in bf16, so --runtime transformers says so and stops."""
    from compressed_tensors.compressors.nvfp4.helpers import unpack_fp4_from_uint8
    from compressed_tensors.quantization.lifecycle.forward import dequantize
    from compressed_tensors.quantization.quant_scheme import NVFP4A16
    from safetensors.torch import load_file

    nvfp4 = {leaf: "w:ct_nvfp4" for leaf in BY_LEAF}
    plan, assignment = plan_file(tmp_path, nvfp4, target="compressed-tensors")
    out = tmp_path / "checkpoint"
    err, config = exported(plan, out, capsys)
    assert "transformers decompresses NVFP4 weights in bf16" in err
    assert config["format"] == "nvfp4-pack-quantized"
    tensors = load_file(out / "model.safetensors")
    expected = quantizable_layers(apply_plan(tiny_llama(tmp_path / "again"), assignment))
    for module in assignment:
        packed = tensors[f"{module}.weight_packed"]
        codes = unpack_fp4_from_uint8(packed, packed.shape[0], packed.shape[1] * 2,
                                      dtype=torch.float32)  # fmt: skip
        scale, global_scale = (tensors[f"{module}.weight_{n}"] for n in ("scale", "global_scale"))
        got = dequantize(codes, scale.float(), args=NVFP4A16["weights"],
                         global_scale=global_scale, dtype=torch.float32)  # fmt: skip
        assert torch.equal(got, expected[module].weight), module
    attention = "model.layers.0.self_attn"
    assert len({float(tensors[f"{attention}.{p}_proj.weight_global_scale"]) for p in "qkv"}) == 1
    code, _, err = run(["evaluate", "--plan", str(plan), "--runtime", "transformers"], capsys)
    assert code == 2 and "w:ct_nvfp4): transformers decompresses NVFP4 weights in bf16" in err


def test_mx_is_what_transformers_decompresses_in_bf16(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MXFP4A16 / MXFP8A16 (vLLM's CompressedTensorsW4A16Mxfp4, mxfp8-quantized): transformers
    decompresses them in bf16 to exactly the plan's values; a float32 model cannot run them
    there, so the export warns and --runtime transformers says so, while a bf16 model is
    measured in transformers as mixprec predicts."""
    mx = {**BY_LEAF, "q_proj": "w:ct_mxfp4", "k_proj": "w:ct_mxfp4", "v_proj": "w:ct_mxfp4",
          "o_proj": "w:ct_mxfp8_e4m3", "down_proj": "w:ct_mxfp4"}  # fmt: skip
    plan, assignment = plan_file(tmp_path, mx, target="compressed-tensors")
    out = tmp_path / "checkpoint"
    err, config = exported(plan, out, capsys)
    assert "transformers decompresses MX weights in bf16" in err
    formats = {g["format"] for g in config["config_groups"].values()}
    assert formats == {"mxfp4-pack-quantized", "mxfp8-quantized", "float-quantized"}
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).eval()
    with torch.no_grad():  # the first forward decompresses
        loaded(torch.tensor([[1, 2, 3]]))
    expected = quantizable_layers(apply_plan(tiny_llama(tmp_path / "again"), assignment))
    theirs = dict(loaded.named_modules())
    for module, scheme in assignment.items():
        if "mx" in scheme:
            assert torch.equal(theirs[module].weight.float(), expected[module].weight), module
    capsys.readouterr()  # the loading's progress bars
    code, _, err = run(["evaluate", "--plan", str(plan), "--runtime", "transformers"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "(w:ct_mxfp4) of a float32 model: transformers decompresses MX weights" in err
    bf16 = tiny_llama(tmp_path / "bf16" / "hf").to(torch.bfloat16)
    bf16.save_pretrained(tmp_path / "bf16" / "hf")  # the checkpoint's dtype is bf16 now
    only_mx = {m: s if "mx" in s else "keep" for m, s in assignment.items()}  # FP8's bf16 scales
    made = {"target": "compressed-tensors"}
    PrecisionPlan(f"hf:{tmp_path / 'bf16' / 'hf'}", fingerprint(bf16), only_mx, "6bits",
                  provenance=made).save(tmp_path / "bf16.json")  # fmt: skip
    measured = {}
    for runtime in ("torch", "transformers"):
        code, printed, err = run(["evaluate", "--plan", str(tmp_path / "bf16.json"), "--runtime",
                                  runtime, "--json"], capsys)  # fmt: skip
        assert code == 0, err
        measured[runtime] = json.loads(printed)["metrics"]
    for name, value in measured["torch"].items():  # the same bf16 weights, the same model code
        assert measured["transformers"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


def test_fp8_block_loads_with_its_tiles_and_group_activations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """FP8_BLOCK (vLLM's DeepSeek-style W8A8): one FP32 scale per 128x128 weight tile and each
    token's input quantized per 128 columns on the fly; transformers' logits are mixprec's."""
    block = "w:ct_fp8_e4m3_block,a:ct_fp8_e4m3_g128"
    schemes = {**BY_LEAF, **dict.fromkeys(("gate_proj", "up_proj", "q_proj", "k_proj", "v_proj"),
                                          block)}  # fmt: skip
    plan, assignment = plan_file(tmp_path, schemes, target="compressed-tensors")
    out = tmp_path / "checkpoint"
    _, config = exported(plan, out, capsys)
    group = next(g for g in config["config_groups"].values() if g["input_activations"])
    assert group["weights"]["strategy"] == "block"
    assert group["weights"]["block_structure"] == [128, 128]
    activations = group["input_activations"]
    assert (activations["strategy"], activations["group_size"], activations["dynamic"]) == (
        "group",
        128,
        True,
    )
    assert len(group["targets"]) == 10
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as stored:
        scale = stored.get_tensor("model.layers.0.mlp.gate_proj.weight_scale")
    assert tuple(scale.shape) == (512 // 128, 256 // 128) and scale.dtype == torch.float32
    loads_as_planned(out, tmp_path, assignment)


def test_fp8_with_a_static_input_scale_loads_with_the_calibrated_scale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """FP8 (W8A8 static): one weight scale per tensor, shared by the shards vLLM fuses (it
    requantizes them to one), and each input under the static scale of the plan's calibrated
    range; transformers runs it with mixprec's logits. A plan without the ranges is one line."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from mixprec.calibration import input_ranges
    from mixprec.plan import static_inputs

    static = "w:fp8_e4m3_tensor,a:fp8_e4m3_tensor"
    schemes = {**BY_LEAF, **dict.fromkeys(("q_proj", "k_proj", "v_proj", "down_proj"), static)}
    plan_path, _ = plan_file(tmp_path, schemes, target="compressed-tensors")
    out = tmp_path / "checkpoint"
    code, _, err = run(["export", str(plan_path), "--to", "compressed-tensors", "--out",
                        str(out)], capsys)  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "no calibrated input range" in err, err
    assert not out.exists()
    model = tiny_llama(tmp_path / "again")
    calibration = [torch.tensor([[1, 70, 300, 9000, 12, 44, 5]]), torch.tensor([[3, 8, 2000]])]
    ranges = input_ranges(model, calibration, lambda m, b: m(b))
    plan = PrecisionPlan.load(plan_path)
    plan = replace(plan, input_ranges={m: ranges[m] for m in static_inputs(plan)})
    plan.save(plan_path)
    _, config = exported(plan_path, out, capsys)
    group = next(g for g in config["config_groups"].values() if g["input_activations"])
    assert group["weights"]["strategy"] == group["input_activations"]["strategy"] == "tensor"
    assert group["input_activations"]["dynamic"] is False and len(group["targets"]) == 8
    stored = load_file(out / "model.safetensors")
    down = "model.layers.1.mlp.down_proj"
    assert float(stored[f"{down}.input_scale"]) == pytest.approx(ranges[down] / 448, rel=1e-6)
    attention = "model.layers.0.self_attn"
    assert len({float(stored[f"{attention}.{p}_proj.weight_scale"]) for p in "qkv"}) == 1
    loads_as_planned(out, tmp_path, PrecisionPlan.load(plan_path))


def test_nvfp4_with_inputs_stores_the_calibrated_global_scale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """NVFP4 (W4A4): the config group is compressed-tensors' NVFP4 preset (inputs per 16 with
    local scales) and each layer stores the static global input scale of its calibrated range,
    which transformers loads and runs."""
    from dataclasses import replace

    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.quant_scheme import NVFP4
    from safetensors.torch import load_file

    from mixprec.calibration import input_ranges
    from mixprec.kernels import formats
    from mixprec.kernels.reference import static_scale

    w4a4 = "w:ct_nvfp4,a:ct_nvfp4"
    plan_path, assignment = plan_file(tmp_path, dict.fromkeys(BY_LEAF, w4a4), "compressed-tensors")
    model = tiny_llama(tmp_path / "again")
    ranges = input_ranges(model, [torch.tensor([[1, 70, 300, 9000, 12]])], lambda m, b: m(b))
    plan = replace(PrecisionPlan.load(plan_path), input_ranges={m: ranges[m] for m in assignment})
    plan.save(plan_path)
    out = tmp_path / "checkpoint"
    _, config = exported(plan_path, out, capsys)
    [group] = config["config_groups"].values()
    for part in ("weights", "input_activations"):
        declared = QuantizationArgs(**group[part])
        assert declared == NVFP4[part].model_copy(update={"observer": declared.observer}), part
    stored = load_file(out / "model.safetensors")
    for module in assignment:
        expected = static_scale(torch.tensor([ranges[module]]), formats.get("ct_nvfp4"))
        assert torch.equal(stored[f"{module}.input_global_scale"], expected), module
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        assert torch.isfinite(loaded(torch.tensor([[1, 50, 600, 7000]])).logits).all()
