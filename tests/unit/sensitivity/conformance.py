"""The suite every SensitivityEstimator passes (like Optuna's shared sampler tests)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mixprec.errors import MixprecError
from mixprec.models import ModelBundle
from mixprec.scheme import Scheme
from mixprec.sensitivity.base import SensitivityEstimator
from mixprec.units import Unit, discover_units, select

Factory = Callable[[int], SensitivityEstimator]


def check_estimator(factory: Factory, bundle: ModelBundle) -> None:
    """Run every conformance check for one estimator on one model."""
    units = discover_units(bundle.model)
    layer = select(units, "layer")[1]
    block = select(units, "block")[0]
    batches = bundle.calibration
    check_interval_and_samples(factory, bundle, layer, batches)
    check_keep_scores_zero(factory, bundle, layer, batches)
    check_fewer_bits_score_higher(factory, bundle, layer, batches)
    check_block_level(factory, bundle, block, batches)
    check_deterministic(factory, bundle, layer, batches)
    check_empty_calibration_is_an_error(factory, bundle, layer)


def check_interval_and_samples(factory: Factory, bundle: ModelBundle, unit: Unit, batches) -> None:  # type: ignore[no-untyped-def]
    score = factory(0).score(bundle, unit, Scheme.parse("w:mxfp4"), batches)
    assert score.ci_low <= score.mean <= score.ci_high
    assert score.samples == len(batches)


def check_keep_scores_zero(factory: Factory, bundle: ModelBundle, unit: Unit, batches) -> None:  # type: ignore[no-untyped-def]
    score = factory(0).score(bundle, unit, Scheme.parse("keep"), batches)
    assert score.mean == pytest.approx(0.0, abs=1e-12)


def check_fewer_bits_score_higher(
    factory: Factory, bundle: ModelBundle, unit: Unit, batches
) -> None:  # type: ignore[no-untyped-def]
    estimator = factory(0)
    int8 = estimator.score(bundle, unit, Scheme.parse("w:int8"), batches).mean
    int2 = estimator.score(bundle, unit, Scheme.parse("w:int2"), batches).mean
    assert 0 < int8 < int2


def check_block_level(factory: Factory, bundle: ModelBundle, unit: Unit, batches) -> None:  # type: ignore[no-untyped-def]
    assert unit.level == "block"
    score = factory(0).score(bundle, unit, Scheme.parse("w:int3"), batches)
    assert score.mean > 0


def check_deterministic(factory: Factory, bundle: ModelBundle, unit: Unit, batches) -> None:  # type: ignore[no-untyped-def]
    first = factory(7).score(bundle, unit, Scheme.parse("w:nvfp4"), batches)
    second = factory(7).score(bundle, unit, Scheme.parse("w:nvfp4"), batches)
    assert first == second


def check_empty_calibration_is_an_error(factory: Factory, bundle: ModelBundle, unit: Unit) -> None:
    with pytest.raises(MixprecError, match="empty calibration set"):
        factory(0).score(bundle, unit, Scheme.parse("w:int8"), [])
