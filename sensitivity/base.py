"""The estimator interface, per-sample scores with bootstrap confidence intervals, the registry."""

from __future__ import annotations

import hashlib
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from mixprec.comparison import mean_interval
from mixprec.data import content_hash
from mixprec.errors import MixprecError
from mixprec.kernels.formats import NumberFormat
from mixprec.models import ModelBundle
from mixprec.registry import ConfigRegistry, config_from
from mixprec.scheme import Scheme
from mixprec.sensitivity.configs import EstimatorConfig
from mixprec.tasks import Batch
from mixprec.units import Unit, quantizable_layers, weight_matrix


@dataclass(frozen=True)
class Score:
    """How much the loss grows when `unit` takes `scheme`: mean over the calibration samples
    (sequences, texts, images) with a bootstrap 95% interval over those samples."""

    mean: float
    ci_low: float
    ci_high: float
    samples: int

    @classmethod
    def from_samples(cls, per_sample: Sequence[float], seed: int) -> Score:
        values = np.asarray(per_sample, dtype=np.float64)
        if values.size == 0:
            raise MixprecError("cannot score on an empty calibration set")
        low, high = bootstrap_ci(values, seed)
        return cls(float(values.mean()), low, high, int(values.size))


def bootstrap_ci(values: np.ndarray, seed: int, level: float = 0.95) -> tuple[float, float]:
    """BCa bootstrap of the mean; NaN propagates so a broken cell is visible."""
    if values.size == 1 or not np.isfinite(values).all():
        mean = float(values.mean())
        return mean, mean
    return mean_interval(values, seed, level)


def derive_seed(seed: int, *parts: str) -> int:
    """A 63-bit seed that depends only on its inputs, not on run order or worker."""
    digest = hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class SensitivityEstimator(ABC):
    """Scores one (unit, scheme) pair; larger means the loss grows more. A subclass registers
    with `@register_estimator(ItsConfig)` and is built from that config."""

    name: ClassVar[str] = ""
    config_type: ClassVar[type[EstimatorConfig]] = EstimatorConfig
    #: True for estimators built on the task loss (gradients, Hessians)
    needs_loss: ClassVar[bool] = True
    #: True where one expensive pass serves every unit (keep its cells on one worker)
    shares_statistics: ClassVar[bool] = False
    #: False where a score may be negative (a Hutchinson trace estimate can be)
    nonnegative: ClassVar[bool] = True

    def __init__(self, config: EstimatorConfig | None = None) -> None:
        self.config = config if config is not None else self.config_type()
        if not isinstance(self.config, self.config_type):
            raise MixprecError(f"{type(self).__name__} is built from a {self.config_type.__name__},"
                               f" not a {type(self.config).__name__}")  # fmt: skip
        self.seed = self.config.seed
        self.expected: tuple[Scheme, ...] = ()

    def expect(self, schemes: Sequence[Scheme]) -> None:
        """Say which schemes will be asked, so statistics shared by all of them (Fisher) are
        gathered in one pass over the data."""
        self.expected = tuple(schemes)

    @property
    def params(self) -> dict[str, object]:
        """Everything besides the seed that changes the scores (part of the cache key)."""
        return self.config.cache_params()

    @abstractmethod
    def per_sample(
        self,
        bundle: ModelBundle,
        unit: Unit,
        scheme: Scheme,
        batches: Sequence[Batch],
        calibration: str,
    ) -> list[float]:
        """One score per calibration sample, in batch order (the interval resamples these, so
        each should depend on its own sample only; where the loss couples a batch's samples,
        one per batch); `calibration` is the batches' content hash, the key of any statistics
        computed once per model and data."""

    def score(
        self,
        bundle: ModelBundle,
        unit: Unit,
        scheme: Scheme,
        batches: Sequence[Batch],
        calibration: str | None = None,
    ) -> Score:
        """The score over `batches`; give their content hash as `calibration` where it is known
        (the runner hashes the calibration set once, not once per cell)."""
        if not batches:
            raise MixprecError("cannot score on an empty calibration set")
        digest = calibration if calibration is not None else content_hash(batches)
        values = self.per_sample(bundle, unit, scheme, batches, digest)
        return Score.from_samples(values, derive_seed(self.seed, self.name, unit.name, str(scheme)))


ESTIMATORS = ConfigRegistry("estimator")
E = TypeVar("E", bound=type[SensitivityEstimator])


def register_estimator(config_type: type[EstimatorConfig]) -> Callable[[E], E]:
    """Class decorator: the estimator built from `config_type`, under the config's name."""
    return ESTIMATORS.register(config_type)


def estimators() -> dict[str, type[SensitivityEstimator]]:
    """Every registered estimator, by name in alphabetical order."""
    import mixprec.sensitivity.adaptive
    import mixprec.sensitivity.fisher
    import mixprec.sensitivity.hessian
    import mixprec.sensitivity.isolation  # noqa: F401 (importing registers them)

    return ESTIMATORS.classes()


def estimator_config(
    entry: str | Mapping[str, Any] | EstimatorConfig, seed: int = 0
) -> EstimatorConfig:
    """The config an estimator entry names: a name (default settings), a `{name = ...,
    setting = ...}` table or a config; the seed is `seed` unless the entry sets its own."""
    config: EstimatorConfig = config_from("estimator", estimators(), entry, seed=seed)
    return config


def make_estimator(
    entry: str | Mapping[str, Any] | EstimatorConfig, seed: int = 0
) -> SensitivityEstimator:
    """The estimator for an entry (see `estimator_config`)."""
    config = estimator_config(entry, seed)
    return estimators()[config.name](config)


DELTA_MEMO_BYTES = 512 * 2**20
ROW_CHUNK_ELEMENTS = 2**22  # a large layer is quantized this many elements at a time


def row_chunks(rows: int, columns: int, whole: bool = False, multiple: int = 1) -> list[slice]:
    """Slices of about ROW_CHUNK_ELEMENTS elements over a [rows, columns] matrix (`whole`:
    one slice; each a `multiple` of rows), so float32 temporaries of a large layer stay small."""
    step = max(1, ROW_CHUNK_ELEMENTS // max(columns, 1)) // multiple * multiple
    step = rows if whole else max(multiple, step)
    return [slice(start, start + step) for start in range(0, rows, step)]


def squared_error(
    weight: torch.Tensor, fmt: NumberFormat | None, importance: torch.Tensor | None = None
) -> torch.Tensor:
    """(Q(W) - W)^2 in float32, `fmt` applied in row chunks unless it has one scale for the
    whole tensor (each row's blocks and channel scales are its own, and chunks hold whole
    tiles of a tiled format, so chunks are exact);
    `importance`: the layer's llama.cpp importance matrix, per column."""
    out = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
    if fmt is None:
        return out
    rows, columns = weight.shape
    tiles = max(fmt.block_rows, 1)
    for chunk in row_chunks(rows, columns, whole=fmt.tensor_scale_bits > 0, multiple=tiles):
        part = weight[chunk].float()
        out[chunk] = fmt.quantize_dequantize(part, importance).sub_(part).square_()
    return out


class WeightDeltas:
    """(Q(W) - W)^2 per layer and scheme in [out, in] layout; the newest kept up to
    `capacity_bytes`, so a large model recomputes them instead of holding a float32 copy."""

    def __init__(self, capacity_bytes: int = DELTA_MEMO_BYTES) -> None:
        self.capacity_bytes = capacity_bytes
        self._memo: OrderedDict[tuple[str, str, str, bool], torch.Tensor] = OrderedDict()
        self._bytes = 0
        self._model: weakref.ref[nn.Module] | None = None
        self._layers: dict[str, nn.Module] = {}

    def layers(self, model: nn.Module) -> dict[str, nn.Module]:
        """`quantizable_layers` of the model last asked about, found once: walking a large
        model's modules for every cell cost a tenth of Fisher's time on SmolLM2."""
        if self._model is None or self._model() is not model:
            self._model, self._layers = weakref.ref(model), quantizable_layers(model)
        return self._layers

    def squared(self, bundle: ModelBundle, layer: str, scheme: Scheme) -> torch.Tensor:
        importance = (bundle.importance or {}).get(layer)
        key = (bundle.fingerprint, layer, str(scheme), importance is not None)
        if key in self._memo:
            self._memo.move_to_end(key)
            return self._memo[key]
        weight = weight_matrix(self.layers(bundle.model)[layer]).detach()
        squared = squared_error(weight, scheme.weight, importance)
        self._memo[key] = squared
        self._bytes += squared.nbytes
        while self._bytes > self.capacity_bytes and len(self._memo) > 1:
            self._bytes -= self._memo.popitem(last=False)[1].nbytes
        return squared
