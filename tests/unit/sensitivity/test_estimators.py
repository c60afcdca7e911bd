"""Every estimator passes the conformance suite; each also meets its own exact reference."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from mixprec.data import content_hash
from mixprec.models import ModelBundle, load_model
from mixprec.plan import apply_plan, temporarily_applied
from mixprec.scheme import Scheme
from mixprec.sensitivity.adaptive import AdaptiveEstimator
from mixprec.sensitivity.base import Score, SensitivityEstimator, estimators
from mixprec.sensitivity.configs import (
    AdaptiveConfig,
    FisherConfig,
    HessianConfig,
    IsolationConfig,
)
from mixprec.sensitivity.fisher import FisherEstimator, empirical_fisher
from mixprec.sensitivity.hessian import HessianEstimator
from mixprec.sensitivity.isolation import IsolationEstimator
from mixprec.tasks import CausalLMTask, ClassificationTask, SentenceEmbeddingTask
from mixprec.testing import EstimatorTestCase
from mixprec.units import discover_units, select, weight_matrix
from tests.helpers.models import make_gpt2


class TestHessian(EstimatorTestCase):
    def make_estimator(self, seed: int) -> SensitivityEstimator:
        return HessianEstimator(HessianConfig(seed=seed, max_probes=4))  # the suite, sooner


class TestFisher(EstimatorTestCase):
    def make_estimator(self, seed: int) -> SensitivityEstimator:
        return FisherEstimator(FisherConfig(seed=seed))


class TestIsolation(EstimatorTestCase):
    def make_estimator(self, seed: int) -> SensitivityEstimator:
        return IsolationEstimator(IsolationConfig(seed=seed))


class TestAdaptive(EstimatorTestCase):
    def make_estimator(self, seed: int) -> SensitivityEstimator:
        return AdaptiveEstimator(AdaptiveConfig(seed=seed, budgets=("5bits", "6bits")))


def test_every_registered_estimator_is_in_the_conformance_suite() -> None:
    covered = {suite().make_estimator(0).name for suite in EstimatorTestCase.__subclasses__()}
    assert covered == set(estimators())


def tiny_mlp_bundle(seed: int = 0) -> ModelBundle:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)).eval()
    gen = torch.Generator().manual_seed(seed)
    batches = tuple(
        {
            "inputs": torch.randn(5, 4, generator=gen),
            "labels": torch.randint(0, 2, (5,), generator=gen),
        }
        for _ in range(2)
    )
    return ModelBundle("tiny-mlp", model, ClassificationTask(), batches, batches)


def exact_hessian(bundle: ModelBundle, batch: dict) -> tuple[torch.Tensor, dict[str, slice]]:
    """The cross-entropy Hessian w.r.t. every layer's weight at once, by autograd, and each
    layer's slice of its rows."""
    params = dict(bundle.model.named_parameters())
    names = [n.removesuffix(".weight") for n in params if n.endswith(".weight")]
    weights = [params[f"{n}.weight"].detach() for n in names]
    sizes = [w.numel() for w in weights]
    starts = np.cumsum([0, *sizes])
    slices = {n: slice(int(a), int(a) + s) for n, a, s in zip(names, starts, sizes, strict=False)}

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        parts = {
            f"{n}.weight": flat[slices[n]].reshape(w.shape)
            for n, w in zip(names, weights, strict=False)
        }
        logits = functional_call(bundle.model, parts, (batch["inputs"],))
        return F.cross_entropy(logits, batch["labels"])

    flat = torch.cat([w.reshape(-1) for w in weights])
    return torch.autograd.functional.hessian(loss_of, flat).double(), slices


def exact_trace(bundle: ModelBundle, name: str, batch: dict) -> float:
    hessian, slices = exact_hessian(bundle, batch)
    return float(hessian[slices[name], slices[name]].diagonal().sum())


def test_hutchinson_trace_matches_the_exact_hessian_trace() -> None:
    bundle = tiny_mlp_bundle()
    one = bundle.calibration[:1]
    estimator = HessianEstimator(
        HessianConfig(seed=0, tolerance=1e-9, min_probes=4_000, max_probes=4_000)
    )
    traces = estimator.traces(bundle, one, content_hash(one))
    rows = ClassificationTask().split(one[0])
    for name in ["0", "2"]:
        assert len(traces[name]) == len(rows)  # one trace per sample, each with its own probes
        exact = exact_trace(bundle, name, one[0])
        assert float(np.mean(traces[name])) == pytest.approx(exact, rel=0.03)  # ~4 std errors
        assert abs(exact) > 0.1
        for trace, row in zip(traces[name], rows, strict=True):
            hessian, slices = exact_hessian(bundle, row)
            own, rows_of = hessian[slices[name], slices[name]], hessian[slices[name]]
            # v_l^T (H v)_l with one Rademacher v over every layer has the variance
            # 2 (||H_ll||_F^2 - ||diag H_ll||^2) + ||H_lm||_F^2 over the other layers m
            spread = 2 * float(own.square().sum() - own.diagonal().square().sum())
            spread += float(rows_of.square().sum() - own.square().sum())
            error = math.sqrt(spread / 4_000)
            assert abs(trace - float(own.diagonal().sum())) <= 5 * error + 1e-9


def test_hessian_stops_early_when_converged_and_caps_probes() -> None:
    bundle = tiny_mlp_bundle()
    capped = HessianEstimator(HessianConfig(seed=0, tolerance=1e-9, min_probes=2, max_probes=6))
    capped.traces(
        bundle, bundle.calibration, content_hash(bundle.calibration)
    )  # must stop at the cap, not loop forever
    loose = HessianEstimator(HessianConfig(seed=0, tolerance=0.9, min_probes=2, max_probes=1000))
    assert set(loose.traces(bundle, bundle.calibration, content_hash(bundle.calibration))) == {
        "0",
        "2",
    }


def brute_force_fisher(bundle: ModelBundle, batch: dict, layer: nn.Module, one) -> torch.Tensor:  # type: ignore[no-untyped-def]
    total = torch.zeros_like(weight_matrix(layer))
    samples = bundle.task.samples(batch)
    for i in range(samples):
        single = one(batch, i)
        (grad,) = torch.autograd.grad(bundle.task.loss(bundle.model, single), [layer.weight])
        total += weight_matrix_of_grad(layer, grad).square()
    return total / samples


def weight_matrix_of_grad(layer: nn.Module, grad: torch.Tensor) -> torch.Tensor:
    return grad.t() if type(layer).__name__ == "Conv1D" else grad.reshape(grad.shape[0], -1)


def test_fisher_matches_per_sample_gradients_for_linear_and_conv() -> None:
    """Gradients in float64, so the two summation orders agree whatever the thread count (in
    float32 they differ by ~1e-4 relative on near-zero entries); the estimator accumulates
    squares of those in float32: 6 samples, a few float32 roundings, hence rtol 1e-5."""
    loaded = load_model("digits-cnn")
    bundle = dataclasses.replace(loaded, model=copy.deepcopy(loaded.model).double())
    batch = {
        k: v[:6].double() if v.is_floating_point() else v[:6]
        for k, v in loaded.calibration[0].items()
    }
    fisher = empirical_fisher(bundle, batch)
    for name in ["stem", "stages.1.conv2", "head"]:
        layer = dict(bundle.model.named_modules())[name]
        expected = brute_force_fisher(
            bundle, batch, layer, lambda b, i: {k: v[i : i + 1] for k, v in b.items()}
        )
        torch.testing.assert_close(fisher[name], expected.float(), rtol=1e-5, atol=1e-12)


def test_fisher_matches_per_sequence_gradients_for_gpt2_conv1d() -> None:
    model = make_gpt2()
    gen = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(0, 64, (3, 10), generator=gen)}
    bundle = ModelBundle("tiny-gpt2", model, CausalLMTask(), (batch,), (batch,))
    fisher = empirical_fisher(bundle, batch)
    for name in ["transformer.h.0.attn.c_attn", "transformer.h.1.mlp.c_proj", "lm_head"]:
        layer = dict(model.named_modules())[name]
        expected = brute_force_fisher(
            bundle, batch, layer, lambda b, i: {"input_ids": b["input_ids"][i : i + 1]}
        )
        torch.testing.assert_close(fisher[name], expected, rtol=1e-4, atol=1e-10)


def test_fisher_score_is_the_weighted_distortion() -> None:
    bundle = load_model("digits-cnn")
    unit = select(discover_units(bundle.model), "layer")[2]
    scheme = Scheme.parse("w:int4")
    calibration = content_hash(bundle.calibration)
    per_sample = FisherEstimator().per_sample(bundle, unit, scheme, bundle.calibration, calibration)
    assert len(per_sample) == sum(bundle.task.samples(b) for b in bundle.calibration)
    layer = dict(bundle.model.named_modules())[unit.name]
    w = weight_matrix(layer).detach()
    delta = (scheme.weight.quantize_dequantize(w) - w).square()  # type: ignore[union-attr]
    first = bundle.calibration[0]
    size = bundle.task.samples(first)
    whole = float((empirical_fisher(bundle, first)[unit.name] * delta).sum())
    assert float(np.mean(per_sample[:size])) == pytest.approx(whole, rel=1e-5)
    for row, sample in enumerate(bundle.task.split(first)[:3]):
        alone = float((empirical_fisher(bundle, sample)[unit.name] * delta).sum())
        assert per_sample[row] == pytest.approx(alone, rel=1e-4)


def test_isolation_equals_the_divergence_of_a_quantized_copy() -> None:
    bundle = load_model("digits-cnn")
    unit = select(discover_units(bundle.model), "layer")[0]
    assignment = dict.fromkeys(unit.modules, "w:nvfp4,a:nvfp4")
    copy = apply_plan(bundle.model, assignment)
    expected = []
    with torch.no_grad():
        for batch in bundle.calibration:
            out = F.log_softmax(copy(batch["inputs"]), -1)
            ref = F.log_softmax(bundle.model(batch["inputs"]), -1)
            expected.extend((ref.exp() * (ref - out)).sum(-1).clamp_min(0.0).tolist())
    scheme = Scheme.parse("w:nvfp4,a:nvfp4")
    got = IsolationEstimator().score(bundle, unit, scheme, bundle.calibration)
    assert got.samples == len(expected)
    got = IsolationEstimator().per_sample(
        bundle, unit, scheme, bundle.calibration, content_hash(bundle.calibration)
    )
    assert got == pytest.approx(expected, rel=1e-5)


def test_temporarily_applied_restores_weights_and_hooks() -> None:
    bundle = load_model("digits-cnn")
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    with temporarily_applied(bundle.model, {"head": "w:int2,a:mxfp4"}) as model:
        assert not torch.equal(model.head.weight, before["head.weight"])
        assert model.head._forward_pre_hooks
    after = bundle.model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert not bundle.model.head._forward_pre_hooks


def test_samples_are_scored_alone_only_where_the_loss_is_their_mean() -> None:
    batch = {"input_ids": torch.ones(4, 3, dtype=torch.long), "attention_mask": torch.ones(4, 3)}
    rows = CausalLMTask().split(batch)
    assert [r["input_ids"].shape for r in rows] == [torch.Size([1, 3])] * 4
    assert SentenceEmbeddingTask().split(batch) == [batch]  # in-batch negatives: one loss


def test_bootstrap_interval() -> None:
    same = Score.from_samples([2.0, 2.0, 2.0], seed=0)
    assert (same.mean, same.ci_low, same.ci_high) == (2.0, 2.0, 2.0)
    spread = Score.from_samples([1.0, 2.0, 3.0, 10.0], seed=0)
    assert spread.ci_low < spread.mean < spread.ci_high
    assert spread.ci_low >= 1.0 and spread.ci_high <= 10.0
    assert Score.from_samples([1.0, 2.0, 3.0, 10.0], seed=0) == spread
