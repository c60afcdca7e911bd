"""A tiny random Llama with SmolLM2's tokenizer (so llama.cpp's converter takes it) and the
llama-quantize call an exported command asks for."""

from __future__ import annotations

import shlex
import struct
import subprocess
from pathlib import Path

import gguf
import numpy as np
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from mixprec import llamacpp
from mixprec.export import Exported
from mixprec.smollm2 import smollm2_folder


def tiny_llama(folder: Path, hidden: int = 256, seed: int = 0) -> LlamaForCausalLM:
    """A random 2-block Llama with a tied head, saved with SmolLM2's tokenizer in `folder`."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=512,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model


def llama_quantize(tools: llamacpp.LlamaCpp, exported: Exported, base: Path, out: Path) -> None:
    """Run the command `--to llamacpp` printed on `base`, writing `out`."""
    argv = shlex.split(exported.command.replace("MODEL-F16.gguf", str(base)).replace(
        "MODEL-mixprec.gguf", str(out)))  # fmt: skip
    argv[0] = str(tools.tool("llama-quantize"))
    done = subprocess.run(argv, capture_output=True, text=True, env=tools.environment(),
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "malformed" not in done.stdout + done.stderr


def write_imatrix(path: Path, entries: dict[str, tuple[np.ndarray, np.ndarray]],
                  legacy: bool = False) -> Path:  # fmt: skip
    """An importance matrix laid out as llama-imatrix writes it: per tensor name, the sums of
    squares (experts, columns) and the token counts (experts,); GGUF, or the legacy format
    (one call count per entry: the first expert's)."""
    if legacy:
        parts = [struct.pack("<i", len(entries))]
        for name, (sums, counts) in entries.items():
            raw = name.encode()
            calls = int(counts.reshape(-1)[0])
            flat = sums.astype(np.float32).reshape(-1)
            parts += [struct.pack("<i", len(raw)), raw, struct.pack("<ii", calls, flat.size),
                      flat.astype("<f4").tobytes()]  # fmt: skip
        parts += [struct.pack("<i", 10), struct.pack("<i", 4), b"docs"]
        path.write_bytes(b"".join(parts))
        return path
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("general.type", "imatrix")
    writer.add_array("imatrix.datasets", ["docs"])
    writer.add_uint32("imatrix.chunk_count", 10)
    writer.add_uint32("imatrix.chunk_size", 512)
    for name, (sums, counts) in entries.items():
        writer.add_tensor(f"{name}.in_sum2", np.ascontiguousarray(sums, np.float32))
        writer.add_tensor(f"{name}.counts", np.asarray(counts, np.float32).reshape(-1, 1))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
