"""Inside llama.cpp itself: a plan exported with `--to llamacpp`, applied by llama-quantize to a
base GGUF from llama.cpp's own converter, stores every planned tensor in its planned type with
exactly the values mixprec's fake quantization gives, and the file runs in llama-perplexity.
(The first run builds llama.cpp's tools from the sdist into the cache: minutes.)"""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader, quants
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from mixprec import llamacpp
from mixprec.export import export_plan
from mixprec.export_llamacpp import gguf_names
from mixprec.kernels import formats
from mixprec.models import fingerprint
from mixprec.plan import PrecisionPlan
from mixprec.smollm2 import smollm2_folder
from mixprec.units import quantizable_layers

TYPES = ["w:q4_k", "w:q6_k", "w:q8_0", "w:q4_0", "w:q5_1", "w:mxfp4_ggml", "w:q2_k", "w:q3_k",
         "w:q5_k", "w:q4_1", "w:q5_0"]  # fmt: skip


@pytest.fixture(scope="module")
def tools() -> llamacpp.LlamaCpp:
    return llamacpp.build("tools")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[LlamaForCausalLM, Path]:
    """A random 2-block Llama with SmolLM2's tokenizer and tied head, and its F16 GGUF."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder / "hf")
    tokenizer.save_pretrained(folder / "hf")
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
    argv = shlex.split(exported.command.replace("MODEL-F16.gguf", str(base)).replace(
        "MODEL-mixprec.gguf", str(tmp_path / "mixed.gguf")))  # fmt: skip
    argv[0] = str(tools.tool("llama-quantize"))
    done = subprocess.run(argv, capture_output=True, text=True, env=tools.environment(),
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "malformed" not in done.stdout + done.stderr
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
    argv = shlex.split(exported.command.replace("MODEL-F16.gguf", str(base)).replace(
        "MODEL-mixprec.gguf", str(tmp_path / "mixed.gguf")))  # fmt: skip
    argv[0] = str(tools.tool("llama-quantize"))
    subprocess.run(argv, capture_output=True, env=tools.environment(), timeout=300, check=True)
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
