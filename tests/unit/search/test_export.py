"""Every export target round-trips: JSON, HF config, llama.cpp overrides and GGUF."""

from __future__ import annotations

import json
import re
from pathlib import Path

import gguf
import pytest
from torch import nn

from mixprec.errors import MixprecError
from mixprec.export import export_plan
from mixprec.export_llamacpp import LLAMACPP_NEAREST, gguf_names, llamacpp_type
from mixprec.kernels import formats
from mixprec.models import fingerprint
from mixprec.plan import PrecisionPlan
from mixprec.scheme import Scheme
from mixprec.units import quantizable_layers
from tests.helpers.models import make_gpt2


def plan_for(model: nn.Module, schemes: list[str]) -> PrecisionPlan:
    layers = list(quantizable_layers(model))
    assignment = {name: schemes[i % len(schemes)] for i, name in enumerate(layers)}
    return PrecisionPlan("gpt2", fingerprint(model), assignment, "5bits", {"score": 1.0})


def loader(model: nn.Module):  # type: ignore[no-untyped-def]
    return lambda: (model, fingerprint(model))


def test_every_format_has_a_llamacpp_type_that_gguf_knows() -> None:
    known = {t.name.lower() for t in gguf.GGMLQuantizationType}
    types = {f.name: llamacpp_type(f) for f in formats.all()}
    assert {kind for kind, _ in types.values()} <= known
    exact = {name for name, (_, same) in types.items() if same}
    ggml = {f.name for f in formats.all() if f.family == "ggml"}
    assert exact == ggml | {"bf16", "fp16", "fp32"} and len(ggml) == 13
    assert not set(LLAMACPP_NEAREST) & exact


def test_json_round_trips(tmp_path: Path) -> None:
    model = make_gpt2()
    plan = plan_for(model, ["w:mxfp4", "w:nvfp4,a:nvfp4", "keep", "w:int8"])
    export_plan(plan, "json", tmp_path / "plan.json", loader(model))
    layers = json.loads((tmp_path / "plan.json").read_text())["layers"]
    assert {m: v["scheme"] for m, v in layers.items()} == dict(plan.assignment)
    assert layers["lm_head"]["weight"] == Scheme.parse(plan.assignment["lm_head"]).weight.name


def test_llamacpp_overrides_name_gguf_tensors_and_warn(tmp_path: Path) -> None:
    model = make_gpt2()
    plan = plan_for(model, ["w:mxfp4", "w:fp8_e4m3", "keep"])
    out = tmp_path / "overrides.txt"
    exported = export_plan(plan, "llamacpp", out, loader(model))
    lines = out.read_text().splitlines()
    parsed = dict(line.split("=") for line in lines)  # bare PATTERN=TYPE, as the file wants
    names, _ = gguf_names(model, list(plan.assignment))
    tied = model.lm_head.weight is model.transformer.wte.weight
    for module, text in plan.assignment.items():  # every module's type reads back
        fmt = text.removeprefix("w:") if text != "keep" else "fp32"
        kind = llamacpp_type(formats.get(fmt))[0]
        if names[module] == "token_embd.weight":
            assert tied and f"--token-embedding-type {kind} " in exported.command
        elif names[module] == "output.weight":
            assert not tied and f"--output-tensor-type {kind} " in exported.command
        else:
            pattern = "^" + names[module].replace(".", "\\.") + "$"
            assert parsed[pattern] == kind and re.fullmatch(pattern[1:-1], names[module])
    assert lines[0] == "^blk\\.0\\.attn_qkv\\.weight$=mxfp4"
    assert lines[1] == "^blk\\.0\\.attn_output\\.weight$=q8_0"
    assert lines[2] == "^blk\\.0\\.ffn_up\\.weight$=f32"
    assert len(lines) == len(plan.assignment) - 1  # the head goes by its own flag
    assert exported.command == (
        f"llama-quantize --pure --tensor-type-file {out} --token-embedding-type f32 "
        f"--output-tensor-type {['mxfp4', 'q8_0', 'f32'][8 % 3]} MODEL-F16.gguf "
        "MODEL-mixprec.gguf MXFP4_MOE"
    )
    assert exported.warnings == (
        "llama.cpp stores mxfp4 as mxfp4, with other values (transformer.h.0.attn.c_attn, "
        "transformer.h.0.mlp.c_proj, transformer.h.1.mlp.c_fc)",
        "llama.cpp stores fp8_e4m3 as q8_0, with other values (transformer.h.0.attn.c_proj, "
        "transformer.h.1.attn.c_attn, transformer.h.1.mlp.c_proj)",
    )


def test_llamacpp_types_export_as_they_are(tmp_path: Path) -> None:
    model = make_gpt2(tie=False)
    plan = plan_for(model, ["w:q5_1", "w:q8_0", "w:q4_0"])
    exported = export_plan(plan, "llamacpp", tmp_path / "types.txt", loader(model))
    assert exported.warnings == ()
    text = (tmp_path / "types.txt").read_text()
    assert "=q5_1\n" in text and "=q8_0\n" in text and "=q4_0\n" in text
    assert "^output" not in text and "--output-tensor-type" in exported.command
    layers = quantizable_layers(model)
    weights = {t: sum(layers[m].weight.numel() for m, s in plan.assignment.items() if s == t)
               for t in set(plan.assignment.values())}  # fmt: skip
    base = max(weights, key=weights.__getitem__).removeprefix("w:").upper()
    assert exported.command.endswith(f" {base}")  # the type most weights have is the base


def test_a_k_quant_on_rows_without_whole_super_blocks_is_llamacpps_fallback(
    tmp_path: Path,
) -> None:
    """GPT-2 here has rows of 32 and 128: llama-quantize would store q4_k as q5_0 and q6_k as
    q8_0; the export says so and writes what llama.cpp will hold."""
    model = make_gpt2(tie=False)
    plan = plan_for(model, ["w:q4_k", "w:q6_k"])
    exported = export_plan(plan, "llamacpp", tmp_path / "types.txt", loader(model))
    text = (tmp_path / "types.txt").read_text()
    assert "=q5_0\n" in text and "=q8_0\n" in text and "_k\n" not in text
    assert exported.warnings[0].startswith(
        "llama.cpp stores q4_k as q5_0 on rows of 32 (no whole blocks) ("
    )


def test_rows_without_whole_blocks_go_as_llama_quantize_takes_them() -> None:
    """Its fallback for a K-quant, F16 for a 32-block type (also after a K-quant's fallback),
    and for nvfp4 (blocks of 64), which llama-quantize refuses, one line."""
    assert llamacpp_type(formats.get("q4_0"), 48) == ("f16", False)
    assert llamacpp_type(formats.get("q2_k"), 48) == ("f16", False)
    assert llamacpp_type(formats.get("q2_k"), 96) == ("q4_0", False)
    assert llamacpp_type(formats.get("nvfp4_ggml"), 192) == ("nvfp4", True)
    assert llamacpp_type(formats.get("nvfp4"), 192) == ("nvfp4", False)
    with pytest.raises(MixprecError, match=r"cannot store nvfp4 as nvfp4 on rows of 96 values "
                       r"\(blocks of 64\); plan another format"):  # fmt: skip
        llamacpp_type(formats.get("nvfp4"), 96)


def test_wrong_model_and_unknown_target(tmp_path: Path) -> None:
    model = make_gpt2()
    plan = plan_for(model, ["w:int8"])
    other = make_gpt2(tie=True)
    other.lm_head.weight.data.mul_(2)
    with pytest.raises(MixprecError, match="plan was made for model 'gpt2'"):
        export_plan(plan, "llamacpp", tmp_path / "x.txt", loader(other))
    with pytest.raises(MixprecError, match=r"--base MODEL-F16\.gguf .* goes with --to gguf$"):
        export_plan(plan, "gguf", tmp_path / "x.gguf", loader(model))
    with pytest.raises(MixprecError, match="goes with --to gguf only"):
        export_plan(plan, "json", tmp_path / "x.json", loader(model), tmp_path / "base.gguf")
    with pytest.raises(
        MixprecError, match="unknown export target 'onnx'; valid: json, compressed-tensors"
    ):
        export_plan(plan, "onnx", tmp_path / "x", loader(model))
    with pytest.raises(MixprecError, match="--imatrix goes with --to llamacpp or --to gguf"):
        export_plan(plan, "json", tmp_path / "x.json", loader(model), imatrix=tmp_path / "m")
    with pytest.raises(MixprecError, match=r"--imatrix .*missing\.gguf is not a file"):
        export_plan(plan, "llamacpp", tmp_path / "x.txt", loader(model),
                    imatrix=tmp_path / "missing.gguf")  # fmt: skip
    assert not list(tmp_path.iterdir())


def test_a_model_without_gguf_architecture(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    plan = PrecisionPlan("seq", fingerprint(model), {"0": "w:int8"}, "8bits")
    with pytest.raises(MixprecError, match="no GGUF architecture for model type 'None'"):
        export_plan(plan, "llamacpp", tmp_path / "o.txt", loader(model))


def test_a_tied_head_is_the_token_embedding_for_llamacpp(tmp_path: Path) -> None:
    """llama.cpp stores a tied head once, as token_embd: the head's scheme goes there."""
    model = make_gpt2(tie=True)
    plan = plan_for(model, ["w:q8_0", "w:q4_k"])
    exported = export_plan(plan, "llamacpp", tmp_path / "tied.txt", loader(model))
    assert gguf_names(model, ["lm_head"])[0] == {"lm_head": "token_embd.weight"}
    head = plan.assignment["lm_head"].removeprefix("w:")
    assert f"--token-embedding-type {head} " in exported.command
    assert "--output-tensor-type" not in exported.command
    assert "token_embd" not in (tmp_path / "tied.txt").read_text()
