"""Footprints by hand, divergences against direct formulas, metrics on real models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mixprec.metrics import evaluate, footprint
from mixprec.models import load_model
from mixprec.plan import uniform_assignment
from mixprec.tasks import Observed, SentenceEmbeddingTask, _mean_kl, _mean_mse
from mixprec.units import discover_units
from tests.helpers.models import make_gpt2


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.proj = nn.Linear(64, 32)


def test_footprint_by_hand() -> None:
    net = TinyNet()
    size = footprint(net, {"proj": "w:int4_g32"})
    # 2048 nibbles + 64 groups x FP16 scale = 1152; bias 32 x 4; embedding 80 x 4
    assert size.total_bytes == 1152 + 128 + 320
    assert size.quantizable_bytes == 1152 and size.quantizable_params == 2048
    assert size.bits_per_weight == 4.5
    assert footprint(net, {}).bits_per_weight == 32.0
    assert size.size_mb == 1600 / 1e6


def test_tied_weights_are_counted_once() -> None:
    model = make_gpt2(tie=True)
    unique = sum(p.numel() * 4 for p in model.parameters())
    assert footprint(model, {}).total_bytes == unique


def test_kl_and_mse_match_direct_formulas() -> None:
    ref = torch.tensor([[[2.0, 0.0, -1.0]]])
    out = torch.tensor([[[0.0, 1.0, 0.0]]])
    p = torch.softmax(ref, -1)[0, 0]
    q = torch.softmax(out, -1)[0, 0]
    expected = float((p * (p / q).log()).sum())
    assert math.isclose(_mean_kl([out], [ref]), expected, rel_tol=1e-6)
    assert _mean_kl([ref], [ref]) == 0.0
    assert math.isclose(_mean_mse([out], [ref]), (4 + 1 + 1) / 3, rel_tol=1e-7)


def test_retrieval_agreement_by_hand() -> None:
    # two pairs; anchors a0,a1 and positives p0,p1 (rows N..2N-1)
    ref = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    swapped = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # a1 now picks p0
    metrics = SentenceEmbeddingTask().task_metrics(Observed([swapped], [ref], [{}]))
    assert metrics["top1_agreement"] == 0.5
    assert metrics["retrieval_top1"] == 0.5
    assert math.isclose(metrics["cosine"], 0.75)


@pytest.mark.parametrize("name", ["digits-cnn", "tiny-gpt", "minilm"])
def test_keep_is_perfect_and_fewer_bits_hurt_more(name: str) -> None:
    bundle = load_model(name)
    units = discover_units(bundle.model)
    keep = evaluate(bundle, uniform_assignment(units, "keep"))
    int8 = evaluate(bundle, uniform_assignment(units, "w:int8"))
    int2 = evaluate(bundle, uniform_assignment(units, "w:int2"))
    divergence = "output_mse" if name == "minilm" else "output_kl"
    assert keep.metrics[divergence] == 0.0
    assert 0 < int8.metrics[divergence] < int2.metrics[divergence]
    assert keep.bits_per_weight == 32.0
    assert 8.0 < int8.bits_per_weight < 8.2 and 2.0 < int2.bits_per_weight < 2.2
    assert keep.size_mb > int8.size_mb > int2.size_mb
    if name == "minilm":
        assert keep.metrics["cosine"] == pytest.approx(1.0, abs=1e-6)
        assert keep.metrics["top1_agreement"] == 1.0
        assert int8.metrics["cosine"] > 0.99 > int2.metrics["cosine"]
    if name == "digits-cnn":
        assert int8.metrics["accuracy"] > 0.9 > int2.metrics["accuracy"]
    if name == "tiny-gpt":
        assert keep.metrics["perplexity"] < int8.metrics["perplexity"] * 1.01
        assert int2.metrics["perplexity"] > keep.metrics["perplexity"] * 1.5
