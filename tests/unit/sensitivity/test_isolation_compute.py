"""Isolation of a 16-bit model computes in float32 on the model's own weights: at the stored
width any change to one weight re-rounds everything after it, a floor above INT8's effect."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from mixprec.errors import MixprecError
from mixprec.models import load_model
from mixprec.scheme import Scheme
from mixprec.sensitivity.configs import IsolationConfig
from mixprec.sensitivity.isolation import IsolationEstimator
from mixprec.units import discover_units, select

INT8 = Scheme.parse("w:int8")


def test_a_bf16_model_scores_as_its_weights_do_in_float32_and_stays_bf16() -> None:
    bundle = load_model("tiny-gpt", dtype="bf16")
    before = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    wide = replace(bundle, model=copy.deepcopy(bundle.model).float())
    units = select(discover_units(bundle.model), "layer")[:3]
    batches = bundle.calibration[:2]
    widened, stored = IsolationEstimator(), IsolationEstimator(IsolationConfig(compute="stored"))
    for unit in units:
        got = widened.score(bundle, unit, INT8, batches).mean
        assert got == pytest.approx(stored.score(wide, unit, INT8, batches).mean, rel=1e-6)
    after = bundle.model.state_dict()
    assert all(v.dtype == torch.bfloat16 and torch.equal(v, after[k]) for k, v in before.items())


def test_at_the_stored_width_int8_sits_on_a_rounding_floor() -> None:
    for name in ("tiny-gpt", "digits-cnn"):  # token inputs, and image inputs widened too
        bundle = load_model(name, dtype="bf16")
        batches = bundle.calibration[:2]
        widened, stored = (
            IsolationEstimator(),
            IsolationEstimator(IsolationConfig(compute="stored")),
        )
        for unit in select(discover_units(bundle.model), "layer")[:1]:
            floor = stored.score(bundle, unit, INT8, batches).mean
            assert floor > 2 * widened.score(bundle, unit, INT8, batches).mean  # 3-5x measured


def test_an_unknown_compute_is_one_line() -> None:
    with pytest.raises(MixprecError, match="compute 'fp16' is unknown; valid: float32, stored"):
        IsolationConfig(compute="fp16")
