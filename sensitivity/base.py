"""The estimator interface, per-batch scores with bootstrap confidence intervals, the registry."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mixprec.errors import MixprecError
from mixprec.models import ModelBundle
from mixprec.scheme import Scheme
from mixprec.tasks import Batch
from mixprec.units import Unit, quantizable_layers, weight_matrix

BOOTSTRAP_RESAMPLES = 2000


@dataclass(frozen=True)
class Score:
    """How much the loss grows when `unit` takes `scheme`: mean over calibration batches
    with a bootstrap 95% interval over those batches."""

    mean: float
    ci_low: float
    ci_high: float
    samples: int

    @classmethod
    def from_batches(cls, per_batch: Sequence[float], seed: int) -> Score:
        values = np.asarray(per_batch, dtype=np.float64)
        if values.size == 0:
            raise MixprecError("cannot score on an empty calibration set")
        low, high = bootstrap_ci(values, seed)
        return cls(float(values.mean()), low, high, int(values.size))


def bootstrap_ci(values: np.ndarray, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap of the mean; NaN propagates so a broken cell is visible."""
    if values.size == 1 or not np.isfinite(values).all():
        mean = float(values.mean())
        return mean, mean
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, values.size, size=(BOOTSTRAP_RESAMPLES, values.size))
    means = values[picks].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def derive_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed that depends only on its inputs, not on run order or worker."""
    digest = hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class SensitivityEstimator(ABC):
    """Scores one (unit, scheme) pair; larger means the loss grows more."""

    name: str = ""
    #: True for estimators built on the task loss (gradients, Hessians)
    needs_loss: bool = True
    #: True where one expensive pass serves every unit (keep its cells on one worker)
    shares_statistics: bool = False
    #: False where a score may be negative (a Hutchinson trace estimate can be)
    nonnegative: bool = True

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    @property
    def params(self) -> dict[str, object]:
        """Everything besides the seed that changes the scores (part of the cache key)."""
        return {}

    @abstractmethod
    def per_batch(
        self, bundle: ModelBundle, unit: Unit, scheme: Scheme, batches: Sequence[Batch]
    ) -> list[float]:
        """One score per calibration batch."""

    def score(
        self, bundle: ModelBundle, unit: Unit, scheme: Scheme, batches: Sequence[Batch]
    ) -> Score:
        if not batches:
            raise MixprecError("cannot score on an empty calibration set")
        values = self.per_batch(bundle, unit, scheme, batches)
        return Score.from_batches(values, derive_seed(self.seed, self.name, unit.name, str(scheme)))


def _registry() -> dict[str, Callable[[int], SensitivityEstimator]]:
    from mixprec.sensitivity.fisher import FisherEstimator
    from mixprec.sensitivity.hessian import HessianEstimator
    from mixprec.sensitivity.isolation import IsolationEstimator

    return {"hessian": HessianEstimator, "fisher": FisherEstimator, "isolation": IsolationEstimator}


def make_estimator(name: str, seed: int = 0) -> SensitivityEstimator:
    registry = _registry()
    if name not in registry:
        raise MixprecError(f"unknown estimator {name!r}; valid estimators: {', '.join(registry)}")
    return registry[name](seed)


class WeightDeltas:
    """(Q(W) - W)^2 per layer and scheme in [out, in] layout, the newest `capacity` kept."""

    def __init__(self, capacity: int = 128) -> None:
        self.capacity = capacity
        self._memo: OrderedDict[tuple[str, str, str], torch.Tensor] = OrderedDict()

    def squared(self, bundle: ModelBundle, layer: str, scheme: Scheme) -> torch.Tensor:
        key = (bundle.fingerprint, layer, str(scheme))
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        weight = weight_matrix(quantizable_layers(bundle.model)[layer]).detach().float()
        if scheme.weight is None:
            delta = torch.zeros_like(weight)
        else:
            delta = scheme.weight.quantize_dequantize(weight) - weight
        self._memo[key] = delta.square()
        while len(self._memo) > self.capacity:
            self._memo.popitem(last=False)
        return self._memo[key]
