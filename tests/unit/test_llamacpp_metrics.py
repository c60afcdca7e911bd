"""How llama.cpp measures a model's task: an encoder's plans are compared with the F32 base's
own embeddings, which are made once per base file while plans are measured one after another
(and again when the base file changes)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from mixprec import runtime_llamacpp
from mixprec.errors import MixprecError
from mixprec.llamacpp import LlamaCpp
from mixprec.tasks import CausalLMTask, SentenceEmbeddingTask

TEXTS = ["the quick brown fox jumps over the lazy dog", "a plan is only as good as its runtime"]


def test_the_base_is_embedded_once_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:  # fmt: skip
    calls: list[str] = []

    def fake_embeddings(build: LlamaCpp, model: Path, texts: list[str], work: Path
                        ) -> torch.Tensor:  # fmt: skip
        calls.append(model.name)
        seed = 0 if model.name == "base.gguf" else 1
        noise = torch.randn(len(texts), 8, generator=torch.Generator().manual_seed(seed))
        return F.normalize(noise, dim=-1)

    monkeypatch.setattr(runtime_llamacpp, "embeddings", fake_embeddings)
    runtime_llamacpp.base_embeddings.cache_clear()
    base = tmp_path / "base.gguf"
    base.write_bytes(b"base")
    run = runtime_llamacpp.metric_runner(SimpleNamespace(task=SentenceEmbeddingTask(), name="m"))
    build = LlamaCpp(tmp_path)
    for plan in ("a.gguf", "b.gguf"):
        metrics = run(build, tmp_path / plan, base, TEXTS, 16, tmp_path)
        assert 0.0 < metrics["cosine"] < 1.0
    assert calls == ["a.gguf", "base.gguf", "b.gguf"]
    os.utime(base, ns=(1, 1))  # another base file (as on disk): embedded again
    run(build, tmp_path / "c.gguf", base, TEXTS, 16, tmp_path)
    assert calls[-2:] == ["c.gguf", "base.gguf"]


def test_other_tasks_are_one_line() -> None:
    assert runtime_llamacpp.metric_runner(SimpleNamespace(task=CausalLMTask(), name="lm"))
    with pytest.raises(MixprecError, match=r"causal LMs \(perplexity\) and sentence encoders"):
        runtime_llamacpp.metric_runner(SimpleNamespace(task=object(), name="cnn"))
