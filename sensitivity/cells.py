"""What is scored and who scores it: the analysis spec, a cell of work, and the worker that
holds one loaded model and runs estimators over cells (serially or as a Ray actor)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeAlias

import torch

from mixprec.data import content_hash
from mixprec.errors import MixprecError, gist, one_of
from mixprec.imatrix import Imatrix, with_importance
from mixprec.imatrix import load as load_imatrix
from mixprec.memory import PeakMemory, read_peak
from mixprec.models import ModelBundle, check_data_source, load_model
from mixprec.placement import Placement
from mixprec.scheme import DEFAULT_SCHEMES, Scheme
from mixprec.sensitivity.base import estimator_config, make_estimator
from mixprec.sensitivity.configs import DEFAULT_ESTIMATORS, AdaptiveConfig, EstimatorConfig
from mixprec.tensordata import TensorData
from mixprec.textdata import TextData
from mixprec.units import LEVELS, Unit

Estimators: TypeAlias = tuple[str | Mapping[str, Any] | EstimatorConfig, ...]


@dataclass(frozen=True)
class AnalysisSpec:
    """What to score. `model` is a source string, so every worker can load it itself;
    `estimators` are names, `{name = ..., setting = ...}` tables or configs, each seeded
    with `seed`."""

    model: str
    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    estimators: Estimators = DEFAULT_ESTIMATORS
    levels: tuple[str, ...] = LEVELS
    calib_batches: int | None = None
    seed: int = 0
    chunk: int = 8
    threads: int = 1
    data: TextData | TensorData | None = None  # your text (hf:) or inputs, else its own data
    dtype: str = "auto"  # the model's own dtype, or bf16 / fp16 / fp32
    device: str = "auto"  # the first GPU where one is visible, else the CPU
    imatrix: str | None = None  # llama.cpp's importance matrix the llama.cpp types are scored with

    def load(self) -> ModelBundle:
        """The model this spec names, with its data, in its dtype on its device (and its
        layers' importance, where the spec names a matrix)."""
        bundle = load_model(self.model, self.seed, self.data, self.dtype, self.device)
        matrix = self.importance_matrix()
        return bundle if matrix is None else with_importance(bundle, matrix)

    def importance_matrix(self) -> Imatrix | None:
        """The importance matrix the spec names, read (its digest keys the cells)."""
        return None if self.imatrix is None else load_imatrix(Path(self.imatrix))

    def validated(self) -> AnalysisSpec:
        """Checked, with schemes in canonical spelling and estimators as configs (both are
        part of cache keys)."""
        schemes = tuple(str(Scheme.parse(s)) for s in self.schemes)
        configs = self.configs()
        names = [c.name for c in configs]
        for name in names:
            if names.count(name) > 1:
                raise MixprecError(f"estimator {name!r} is listed twice; one entry per estimator")
        for config in configs:
            if isinstance(config, AdaptiveConfig) and not config.budgets:
                raise MixprecError(
                    "estimator 'adaptive' runs isolation where it changes the plans at the "
                    "budgets asked, and none were given: add them, e.g. --budgets 4.5bits,6bits"
                )
        for level in self.levels:
            one_of("level", level, LEVELS)
        check_data_source(self.model, self.data)
        Placement(self.dtype, self.device).torch_device()  # a device not here: before any work
        if self.calib_batches is not None and self.calib_batches < 1:
            raise MixprecError(f"--calib-batches {self.calib_batches} must be at least 1")
        self.importance_matrix()  # a bad file: before any work
        imatrix = None if self.imatrix is None else str(Path(self.imatrix).resolve())
        return replace(self, schemes=schemes, estimators=configs, imatrix=imatrix)

    def configs(self) -> tuple[EstimatorConfig, ...]:
        """The estimators as configs (what `validated` leaves in `estimators`)."""
        return tuple(replace(estimator_config(e), seed=self.seed) for e in self.estimators)


@dataclass(frozen=True)
class Cell:
    """The unit of work: one estimator and scheme over a chunk of units."""

    estimator: str
    scheme: str
    units: tuple[Unit, ...]


class CellWorker:
    """Holds one loaded model and its estimators; scores cells. Wrapped as a Ray actor too."""

    def __init__(
        self, spec: AnalysisSpec, bundle: ModelBundle | None = None, fingerprint: str = ""
    ) -> None:
        torch.set_num_threads(spec.threads)
        self.spec = spec
        self.bundle = bundle or spec.load()
        if fingerprint and self.bundle.fingerprint != fingerprint:
            raise MixprecError(
                f"a worker loaded {spec.model!r} with other weights than the driver "
                f"({self.bundle.fingerprint[:12]} vs {fingerprint[:12]}); give every node the "
                "same model files"
            )
        self.batches = calibration_batches(self.bundle, spec.calib_batches)
        self.calibration = content_hash(self.batches)
        self.estimators = {c.name: make_estimator(c) for c in spec.configs()}
        for estimator in self.estimators.values():
            estimator.expect([Scheme.parse(s) for s in spec.schemes])

    def run(self, cell: Cell) -> list[dict[str, Any]]:
        estimator = self.estimators[cell.estimator]
        scheme = Scheme.parse(cell.scheme)
        results = []
        for unit in cell.units:
            start = time.perf_counter()
            payload: dict[str, Any] = {"score": None, "ci_low": None, "ci_high": None}
            status, error, samples = "failed", "", 0
            try:
                score = estimator.score(self.bundle, unit, scheme, self.batches, self.calibration)
                payload.update(score=score.mean, ci_low=score.ci_low, ci_high=score.ci_high)
                samples = score.samples
                if all(map(math.isfinite, (score.mean, score.ci_low, score.ci_high))):
                    status = "ok"
                else:
                    error = f"loss is not finite for {unit.name} under {scheme}"
            except (MixprecError, RuntimeError) as err:
                error = f"{unit.name} under {scheme}: {err}"
            payload.update(
                samples=samples, seconds=time.perf_counter() - start, status=status, error=error
            )
            results.append(payload)
        return results

    def run_indexed(self, index: int, cell: Cell) -> tuple[int, list[dict[str, Any]]]:
        return index, self.run(cell)

    def peak(self) -> PeakMemory:
        """This worker process's peak memory so far (a Ray actor's, asked at the end)."""
        return read_peak()


def check_forward(bundle: ModelBundle, batch: Any) -> None:
    """The FP32 model must run and give finite outputs, or no score can mean anything."""
    try:
        with torch.inference_mode():
            outputs = bundle.task.outputs(bundle.model, batch)
    except Exception as err:  # the user's own forward: any exception is theirs to fix
        raise MixprecError(
            f"model {bundle.name!r}: the FP32 forward pass on a calibration batch raised "
            f"{type(err).__name__}: {gist(err)}"
        ) from None
    if isinstance(outputs, torch.Tensor) and not bool(torch.isfinite(outputs).all()):
        raise MixprecError(
            f"model {bundle.name!r} gives non-finite outputs (NaN or inf) in FP32 on its "
            "calibration data; no sensitivity can be measured against them"
        )


def calibration_batches(bundle: ModelBundle, count: int | None) -> tuple[Any, ...]:
    batches = bundle.calibration if count is None else bundle.calibration[:count]
    if not batches:
        raise MixprecError(f"model {bundle.name!r} has an empty calibration set")
    return tuple(batches)
