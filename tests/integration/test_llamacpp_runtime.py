"""Inside llama.cpp itself: a plan exported with `--to llamacpp`, applied by llama-quantize to a
base GGUF from llama.cpp's own converter, stores every planned tensor in its planned type with
exactly the values mixprec's fake quantization gives, and the file runs in llama-perplexity.
(The first run builds llama.cpp's tools from the sdist into the cache: minutes.)"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader, quants
from transformers import LlamaForCausalLM

from mixprec import imatrix, llamacpp, runtime_llamacpp
from mixprec.data import python_doc_paragraphs
from mixprec.export import export_plan
from mixprec.export_llamacpp import gguf_names
from mixprec.kernels import formats
from mixprec.kernels.ggml_weighted import WEIGHTED
from mixprec.models import fingerprint
from mixprec.plan import PrecisionPlan, apply_plan
from mixprec.units import quantizable_layers, weight_matrix
from tests.helpers.cli import run
from tests.helpers.llamacpp import llama_quantize, tiny_llama, write_imatrix

TYPES = ["w:q4_k", "w:q6_k", "w:q8_0", "w:q4_0", "w:q5_1", "w:mxfp4_ggml", "w:q2_k", "w:q3_k",
         "w:q5_k", "w:q4_1", "w:q5_0", "w:iq4_nl", "w:nvfp4_ggml"]  # fmt: skip


@pytest.fixture(scope="module")
def tools() -> llamacpp.LlamaCpp:
    return llamacpp.build("tools")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[LlamaForCausalLM, Path]:
    """A random 2-block Llama with SmolLM2's tokenizer and tied head, and its F16 GGUF."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    model = tiny_llama(folder / "hf")
    return model, llamacpp.convert_to_gguf(folder / "hf", folder / "model-f16.gguf")


def test_llama_quantize_stores_the_plan_exactly(
    tools: llamacpp.LlamaCpp, tiny: tuple[LlamaForCausalLM, Path], tmp_path: Path
) -> None:
    model, base = tiny
    layers = list(quantizable_layers(model))
    assignment = {name: TYPES[i % len(TYPES)] for i, name in enumerate(layers)}
    plan = PrecisionPlan("tiny-llama", fingerprint(model), assignment, "5bits")
    types_file = tmp_path / "plan.txt"
    exported = export_plan(plan, "llamacpp", types_file, lambda: (model, fingerprint(model)))
    assert exported.warnings == ()
    llama_quantize(tools, exported, base, tmp_path / "mixed.gguf")
    source = {t.name: t for t in GGUFReader(str(base)).tensors}
    mixed = {t.name: t for t in GGUFReader(str(tmp_path / "mixed.gguf")).tensors}
    names, missing = gguf_names(model, layers)
    assert not missing and names["lm_head"] == "token_embd.weight"  # tied: one tensor
    for module, tensor in names.items():
        fmt = formats.get(assignment[module].removeprefix("w:"))
        stored = mixed[tensor]
        assert stored.tensor_type.name.lower() == fmt.ggml_type, tensor
        weights = quants.dequantize(source[tensor].data, source[tensor].tensor_type)
        ours = fmt.quantize_dequantize(torch.from_numpy(np.array(weights, dtype=np.float32)))
        theirs = quants.dequantize(stored.data, stored.tensor_type)
        np.testing.assert_array_equal(ours.numpy(), theirs, err_msg=tensor)


def test_the_mixed_file_runs_in_llama_perplexity(
    tools: llamacpp.LlamaCpp, tiny: tuple[LlamaForCausalLM, Path], tmp_path: Path
) -> None:
    model, base = tiny
    layers = list(quantizable_layers(model))
    plan = PrecisionPlan("tiny-llama", fingerprint(model),
                         {n: TYPES[i % 3] for i, n in enumerate(layers)}, "5bits")  # fmt: skip
    exported = export_plan(plan, "llamacpp", tmp_path / "plan.txt",
                           lambda: (model, fingerprint(model)))  # fmt: skip
    llama_quantize(tools, exported, base, tmp_path / "mixed.gguf")
    from pydoc_data.topics import topics

    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(list(topics.values())[:40]), encoding="utf-8")
    done = subprocess.run([str(tools.tool("llama-perplexity")), "-m", str(tmp_path / "mixed.gguf"),
                           "-f", str(text), "-c", "128", "--chunks", "2", "-t", "2"],
                          capture_output=True, text=True, env=tools.environment(), timeout=300,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r"Final estimate: PPL = ([0-9.]+)", done.stdout + done.stderr)
    assert found and float(found.group(1)) > 1.0


def test_our_gguf_holds_llama_quantizes_bytes_and_runs(
    tools: llamacpp.LlamaCpp, tiny: tuple[LlamaForCausalLM, Path], tmp_path: Path
) -> None:
    """`--to gguf --base` writes, without llama-quantize, the very file content it would."""
    model, base = tiny
    layers = list(quantizable_layers(model))
    assignment = {n: TYPES[(i + 3) % len(TYPES)] for i, n in enumerate(layers)}
    plan = PrecisionPlan("tiny-llama", fingerprint(model), assignment, "5bits")
    load = lambda: (model, fingerprint(model))  # noqa: E731
    exported = export_plan(plan, "llamacpp", tmp_path / "plan.txt", load)
    llama_quantize(tools, exported, base, tmp_path / "theirs.gguf")
    assert export_plan(plan, "gguf", tmp_path / "ours.gguf", load, base).warnings == ()
    theirs = {t.name: t for t in GGUFReader(str(tmp_path / "theirs.gguf")).tensors}
    ours = {t.name: t for t in GGUFReader(str(tmp_path / "ours.gguf")).tensors}
    names, _ = gguf_names(model, layers)
    assert set(ours) == set(theirs)
    for tensor in names.values():
        assert ours[tensor].tensor_type == theirs[tensor].tensor_type, tensor
        assert np.array_equal(np.asarray(ours[tensor].data), np.asarray(theirs[tensor].data))
    texts = tmp_path / "text.txt"
    texts.write_text("\n\n".join(python_doc_paragraphs().evaluation[:30]), encoding="utf-8")
    assert runtime_llamacpp.perplexity(tools, tmp_path / "ours.gguf",
                                       [texts.read_text()], 2, tmp_path) > 1.0  # fmt: skip


def test_evaluate_in_llamacpp_from_the_cli(
    tools: llamacpp.LlamaCpp, tiny: tuple[LlamaForCausalLM, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    source = f"hf:{tiny[1].parent / 'hf'}"
    argv = ["evaluate", "-m", source, "--scheme", "w:q8_0", "--runtime", "llamacpp", "--json"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["kernel"].startswith("llama.cpp") and result["bits_per_weight"] == 8.5
    assert result["metrics"]["perplexity"] > 1.0
    code, out, err = run(["evaluate", "-m", "minilm", "--scheme", "w:q8_0", "--runtime",
                          "llamacpp", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    metrics = json.loads(out)["metrics"]
    assert 0.99 < metrics["cosine"] <= 1.0 and metrics["top1_agreement"] > 0.9
    assert "pooler.dense has no GGUF tensor name" in err  # llama.cpp's BERT has no pooler


def test_evaluate_in_llamacpp_refuses_what_it_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    scheme = ["--scheme", "w:q8_0"]
    cases = {
        ("-m", "digits-cnn", *scheme, "--runtime", "llamacpp"): "causal LMs (perplexity) and "
        "sentence encoders (cosine); digits-cnn is neither",
        ("-m", "minilm", *scheme, "--runtime", "onnx"): "unknown --runtime 'onnx'; valid: "
        "torch, llamacpp, transformers",
        ("-m", "minilm", *scheme, "--runtime", "llamacpp", "--packed"): "it goes with --runtime "
        "torch",
        ("-m", "minilm", *scheme, "--llamacpp-bin", str(tmp_path)): "--llamacpp-bin goes with",
        ("-m", "minilm", *scheme, "--runtime", "llamacpp", "--llamacpp-bin", str(tmp_path)):
            "has no llama-quantize",
    }  # fmt: skip
    for argv, message in cases.items():
        code, _, err = run(["evaluate", *argv], capsys)
        assert code == 2 and message in err and err.count("\n") == 1, (argv, err)
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path))
    code, _, err = run(["evaluate", "-m", "minilm", *scheme, "--runtime", "llamacpp"], capsys)
    assert code == 2 and "mixprec llamacpp-build" in err and err.count("\n") == 1


def test_a_run_measures_its_plans_in_llamacpp(
    tools: llamacpp.LlamaCpp, tiny: tuple[LlamaForCausalLM, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    source = tiny[1].parent / "hf"
    config = tmp_path / "run.toml"
    head = (f'model = "hf:{source}"\noutput = "{tmp_path / "run"}"\nschemes = ["w:q8_0", '
            '"w:q4_0"]\nestimators = ["fisher"]\nlevels = ["layer"]\nbudgets = ["6bits"]\n'
            'exports = []\ntarget = "llamacpp"\nexclude = ["none"]\n')  # fmt: skip
    config.write_text(head + f'runtime = "llamacpp"\nllamacpp_bin = "{tmp_path / "none"}"\n')
    code, _, err = run(["run", str(config), "-q"], capsys)
    assert code == 2 and "has no llama-quantize" in err and not (tmp_path / "run").exists()
    config.write_text(head + 'runtime = "onnx"\n')
    code, _, err = run(["run", str(config), "-q"], capsys)
    assert code == 2 and "unknown runtime 'onnx'; valid: torch, llamacpp" in err
    config.write_text(head + 'runtime = "llamacpp"\n')
    code, _, err = run(["run", str(config), "-q"], capsys)
    assert code == 0, err
    measured = json.loads((tmp_path / "run" / "eval" / "ilp-6bits.json").read_text())
    assert measured["kernel"].startswith("llama.cpp") and measured["metrics"]["perplexity"] > 1
    assert 4.5 <= measured["bits_per_weight"] <= 6.0


def test_with_an_importance_matrix_our_gguf_is_llama_quantizes(
    tools: llamacpp.LlamaCpp, tiny: tuple[LlamaForCausalLM, Path], tmp_path: Path
) -> None:
    """`--imatrix`: llama-quantize reads the matrix as mixprec does and stores each tensor as
    `--to gguf --imatrix` does; without the matrix some tensor's bytes differ."""
    model, base = tiny
    layers = list(quantizable_layers(model))
    kinds = [f"w:{fmt.name}" for fmt in formats.all() if fmt.family == "ggml"]
    assignment = {n: kinds[i % len(kinds)] for i, n in enumerate(layers)}
    plan = PrecisionPlan("tiny-llama", fingerprint(model), assignment, "5bits")
    names, _ = gguf_names(model, layers)
    rng = np.random.default_rng(0)
    columns = {tensor: int(weight_matrix(quantizable_layers(model)[module]).shape[-1])
               for module, tensor in names.items()}  # fmt: skip
    matrix = write_imatrix(tmp_path / "imatrix.gguf", {
        tensor: ((rng.random((1, cols)) * np.logspace(-2, 2, cols)).astype(np.float32),
                 np.array([40.0])) for tensor, cols in columns.items()})  # fmt: skip
    load = lambda: (model, fingerprint(model))  # noqa: E731
    exported = export_plan(plan, "llamacpp", tmp_path / "plan.txt", load, imatrix=matrix)
    assert "--imatrix" in exported.command and exported.warnings == ()
    llama_quantize(tools, exported, base, tmp_path / "theirs.gguf")
    ours_path = tmp_path / "ours.gguf"
    assert export_plan(plan, "gguf", ours_path, load, base, imatrix=matrix).warnings == ()
    export_plan(plan, "gguf", tmp_path / "plain.gguf", load, base)
    theirs, ours, plain = (
        {t.name: t for t in GGUFReader(str(p)).tensors}
        for p in (tmp_path / "theirs.gguf", ours_path, tmp_path / "plain.gguf")
    )
    changed = 0
    for tensor in names.values():
        assert np.array_equal(np.asarray(ours[tensor].data), np.asarray(theirs[tensor].data)), (
            tensor
        )
        changed += not np.array_equal(np.asarray(ours[tensor].data), np.asarray(plain[tensor].data))
    assert changed >= len(WEIGHTED)  # each weighted type changed at least one tensor
    fields = GGUFReader(str(ours_path)).fields
    assert int(fields["quantize.imatrix.entries_count"].contents()) == len(columns)


def test_predictions_with_an_importance_matrix_are_llamacpps_values(
    tools: llamacpp.LlamaCpp, tiny: tuple[LlamaForCausalLM, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`evaluate --imatrix` (torch) quantizes each layer to the values llama.cpp stores with
    that matrix, and `--runtime llamacpp --imatrix` measures that file."""
    model, base = tiny
    layers = [n for n in quantizable_layers(model) if n != "lm_head"]  # the vocabulary is slow
    kinds = ["w:q4_k", "w:q4_0", "w:iq4_nl", "w:q3_k", "w:q5_1"]
    assignment = {n: kinds[i % len(kinds)] for i, n in enumerate(layers)}
    plan = PrecisionPlan("tiny-llama", fingerprint(model), assignment, "5bits")
    names, _ = gguf_names(model, layers)
    rng = np.random.default_rng(1)
    matrix_path = write_imatrix(tmp_path / "imatrix.gguf", {
        names[m]: (rng.random((1, int(weight_matrix(quantizable_layers(model)[m]).shape[-1])),
                              np.float32) * 50, np.array([8.0])) for m in layers})  # fmt: skip
    importance = imatrix.layer_importance(imatrix.load(matrix_path), model, layers)
    assert set(importance) == set(layers)
    load = lambda: (model, fingerprint(model))  # noqa: E731
    f32 = llamacpp.base_gguf(base.parent / "hf")  # the model's exact weights, as evaluate's
    export_plan(plan, "gguf", tmp_path / "ours.gguf", load, f32, imatrix=matrix_path)
    stored = {t.name: t for t in GGUFReader(str(tmp_path / "ours.gguf")).tensors}
    predicted = apply_plan(model, plan.assignment, importance=importance)
    plain = apply_plan(model, plan.assignment)
    compared = 0
    for module, tensor in names.items():
        if ".attn_q." in tensor or ".attn_k." in tensor:
            continue  # llama.cpp's converter permutes these rows
        ours = weight_matrix(quantizable_layers(predicted)[module]).detach().numpy()
        theirs = quants.dequantize(stored[tensor].data, stored[tensor].tensor_type)
        np.testing.assert_array_equal(ours, theirs, err_msg=tensor)
        assert not np.array_equal(
            weight_matrix(quantizable_layers(plain)[module]).detach().numpy(), ours
        )
        compared += 1
    assert compared >= 8
    plan_path = tmp_path / "plan.json"
    plan.save(plan_path)
    source = f"hf:{base.parent / 'hf'}"
    results = {}
    for runtime, extra in [("torch", []), ("torch", ["--imatrix", str(matrix_path)]),
                           ("llamacpp", ["--imatrix", str(matrix_path)])]:  # fmt: skip
        argv = ["evaluate", "--plan", str(plan_path), "-m", source, "--runtime", runtime,
                "--json", *extra]  # fmt: skip
        code, out, err = run(argv, capsys)
        assert code == 0, err
        results[runtime, bool(extra)] = json.loads(out)["metrics"]["perplexity"]
    assert results["torch", True] != results["torch", False]
    assert math.isfinite(results["llamacpp", True])
    argv = ["evaluate", "--plan", str(plan_path), "-m", source, "--runtime", "transformers",
            "--imatrix", str(matrix_path)]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 2 and "--imatrix is llama.cpp's" in err and err.count("\n") == 1
    code, _, err = run([*argv[:6], "torch", "--imatrix", str(tmp_path / "none.gguf")], capsys)
    assert code == 2 and "none.gguf is not a file" in err and err.count("\n") == 1
