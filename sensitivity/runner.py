"""Run estimators over (estimator, scheme, unit chunk) cells, serially or on Ray actors.

Every finished unit score is written at once to a content-addressed cache (key: model
fingerprint, unit, scheme, estimator and its parameters, calibration-set hash, seed), so a
re-run after Ctrl-C or a lost worker computes only what is missing and gives the same table.
Each worker runs torch with the same thread count, so serial and Ray tables are identical.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from mixprec.data import content_hash, hash_tensors
from mixprec.errors import MixprecError
from mixprec.imatrix import Imatrix
from mixprec.memory import PeakMemory, read_peak, reset_peak
from mixprec.metrics import layer_weight_bytes
from mixprec.models import ModelBundle, cache_dir
from mixprec.placement import dtype_name, model_device, model_dtype
from mixprec.progress import cell_progress
from mixprec.runlock import RunLock
from mixprec.scheme import Scheme
from mixprec.sensitivity.base import make_estimator
from mixprec.sensitivity.cache import CellCache, cell_key
from mixprec.sensitivity.cells import (
    AnalysisSpec,
    Cell,
    CellWorker,
    calibration_batches,
    check_forward,
)
from mixprec.sensitivity.cluster import job_cluster, ray_map
from mixprec.sensitivity.table import ScoreTable
from mixprec.store import AnalysisRecord, FailedCell, RunFolder, SpecRecord, check_run_folder
from mixprec.units import discover_units, quantizable_layers

GPU_WORKER_DEVICES = ("auto", "cuda")  # what a GPU actor's device may be asked as


@dataclass(frozen=True)
class Workers:
    """Who scores: this process (`count=0` without an address), or Ray actors (`count`, at
    least one; None for as many as the cluster holds) at `address`, each with `gpus` GPUs."""

    count: int | None = 0
    address: str | None = None
    gpus: float = 0.0

    @property
    def serial(self) -> bool:
        """No address, and none asked for (or no GPUs asked for outside a Ray job)."""
        if self.address is not None:
            return False
        return self.count == 0 or (self.count is None and not self.gpus and not job_cluster())


def analyze(
    spec: AnalysisSpec,
    *,
    workers: int | None = 0,
    address: str | None = None,
    gpus_per_worker: float = 0.0,
    out: Path | None = None,
    progress: bool = True,
    cache: CellCache | None = None,
) -> ScoreTable:
    """Score every (estimator, unit, scheme) of `spec`, serially or on Ray workers (`None`:
    as many as the cluster holds); reuse cached cells; with `out`, write OUT/scores.parquet
    and hand its record to the run store. What `mixprec analyze` and `mixprec run` call.

    >>> table = analyze(AnalysisSpec("digits-cnn", ("w:int8", "w:mxfp4")), workers=2)
    >>> table = analyze(AnalysisSpec("hf:models/llama", dtype="bf16"), gpus_per_worker=1)

    With GPU workers the driver loads the model on its CPU (it needs no GPU) and each actor
    on its own GPU. The output folder is checked and locked before any work."""
    who = Workers(workers, address, gpus_per_worker)
    spec = _validated(spec, who)
    if out is None:
        return _score_all(spec, None, who, None, progress, cache)
    check_run_folder(out, "--out")
    with RunLock(out):
        return _score_all(spec, None, who, out, progress, cache)


def _validated(spec: AnalysisSpec, who: Workers) -> AnalysisSpec:
    if who.gpus < 0:
        raise MixprecError(f"--gpus-per-worker {who.gpus:g} must be 0 (CPU workers) or more")
    if who.count is not None and who.count < 0:
        raise MixprecError(f"--workers {who.count} must be 0 (serial) or more")
    if not who.gpus:
        return spec.validated()
    if who.serial or who.count == 0 or spec.device not in GPU_WORKER_DEVICES:
        raise MixprecError(
            f"--gpus-per-worker {who.gpus:g} runs Ray actors on GPUs: give --workers other than "
            f"0 and --device {' or '.join(GPU_WORKER_DEVICES)}, not {spec.device!r}"
        )
    # the driver needs no GPU: it is checked as if on the CPU, the actors on their own GPUs
    return replace(replace(spec, device="cpu").validated(), device=spec.device)


def score_bundle(
    spec: AnalysisSpec, bundle: ModelBundle, progress: bool = False, cache: CellCache | None = None
) -> ScoreTable:
    """Score a model already loaded in this process (`spec.model` only names it), serially."""
    return _score_all(spec.validated(), bundle, Workers(), None, progress, cache)


def _score_all(
    spec: AnalysisSpec,
    bundle: ModelBundle | None,
    who: Workers,
    out: Path | None,
    progress: bool,
    cache: CellCache | None,
) -> ScoreTable:
    started = time.perf_counter()
    if out is not None:  # the record's peak memory counts from here (this process, not Ray's)
        reset_peak()
    bundle = bundle or (replace(spec, device="cpu") if who.gpus else spec).load()
    units = [u for u in discover_units(bundle.model) if u.level in spec.levels]
    by_name = {u.name: u for u in units}
    batches = calibration_batches(bundle, spec.calib_batches)
    check_forward(bundle, batches[0])
    configs = {config.name: config for config in spec.configs()}
    for name, config in configs.items():
        if make_estimator(config).needs_loss and not bundle.task.has_loss:
            raise MixprecError(
                f"estimator {name!r} needs a task loss and model {bundle.name!r} has none; "
                "use --estimators isolation, or give the model a task (a ModelBundle factory)"
            )
    calibration = content_hash(batches)
    cache = cache or CellCache(cache_dir() / "cells")
    device = "cuda" if who.gpus else model_device(bundle.model).type  # where cells are computed
    importance = hash_tensors(sorted(bundle.importance.items())) if bundle.importance else ""
    keys = {
        (name, scheme, unit.name): cell_key(
            bundle.fingerprint,
            unit,
            scheme,
            name,
            config.cache_params(),
            calibration,
            spec.seed,
            device,
            importance,
        )
        for name, config in configs.items()
        for scheme in spec.schemes
        for unit in units
    }
    found = {key: cache.get(key) for key in keys.values()}
    todo = []
    for name in configs:
        for scheme in spec.schemes:
            pending = [u for u in units if found[keys[name, scheme, u.name]] is None]
            for i in range(0, len(pending), spec.chunk):
                todo.append(Cell(name, scheme, tuple(pending[i : i + spec.chunk])))
    peaks: list[PeakMemory] = []  # of the Ray workers, where they scored
    for cell, results in _execute(spec, bundle, todo, who, progress, peaks):
        for unit, result in zip(cell.units, results, strict=True):
            key = keys[cell.estimator, cell.scheme, unit.name]
            found[key] = result
            if result["status"] == "ok":
                cache.put(key, result)  # a failed cell is not cached: a re-run tries again
    layers = quantizable_layers(bundle.model)
    rows = []
    for (estimator, scheme, unit_name), key in keys.items():
        unit, entry = by_name[unit_name], found[key]
        if entry is None:
            raise RuntimeError(f"no result for {unit_name} under {scheme} ({estimator})")
        parsed = Scheme.parse(scheme)
        cost = sum(layer_weight_bytes(layers[m], parsed) for m in unit.modules)
        rows.append(
            {
                "unit": unit.name,
                "level": unit.level,
                "scheme": str(parsed),
                "estimator": estimator,
                "cost_bytes": cost,
                **entry,
            }
        )
    table = ScoreTable.from_rows(rows)
    if out is not None:
        blocks = {u.name: list(u.modules) for u in units if u.level == "block"}
        elapsed = time.perf_counter() - started
        _write_outputs(out, table, spec, bundle, calibration, blocks, elapsed, device, peaks)
    return table


def _execute(
    spec: AnalysisSpec,
    bundle: ModelBundle,
    cells: Sequence[Cell],
    who: Workers,
    progress: bool,
    peaks: list[PeakMemory],
) -> Iterator[tuple[Cell, list[dict[str, Any]]]]:
    with cell_progress(f"scoring {spec.model}", len(cells), progress) as advance:
        if not cells:
            return
        if who.serial:
            worker = CellWorker(spec, bundle)
            for cell in cells:
                yield cell, worker.run(cell)
                advance()
            return
        count = None if who.count is None else max(who.count, 1)
        mapped = ray_map(spec, bundle.fingerprint, cells, count, who.address, who.gpus, peaks)
        for cell, results in mapped:
            yield cell, results
            advance()


def _write_outputs(
    out: Path,
    table: ScoreTable,
    spec: AnalysisSpec,
    bundle: ModelBundle,
    calibration: str,
    blocks: dict[str, list[str]],
    seconds: float,
    device: str,
    peaks: list[PeakMemory],
) -> None:
    """The table into RUN/scores.parquet, and its record handed to the run store."""
    peak = read_peak()
    out.mkdir(parents=True, exist_ok=True)
    table.save(out / "scores.parquet")
    frame = table.frame
    failed = frame.loc[frame["status"] != "ok", ["estimator", "unit", "scheme", "error"]]
    record = AnalysisRecord(
        spec=SpecRecord(
            **{
                **asdict(spec),
                "estimators": [c.name for c in spec.configs()],
                "estimator_settings": {c.name: c.cache_params() for c in spec.configs()},
                "dtype": dtype_name(model_dtype(bundle.model)),  # what auto resolved to
                "device": device if device == "cuda" else str(model_device(bundle.model)),
                "imatrix_sha256": _digest(spec.importance_matrix()),
            }
        ),
        model=bundle.name,
        fingerprint=bundle.fingerprint,
        calibration_hash=calibration,
        cells=len(frame),
        failed=[FailedCell(**row) for row in failed.to_dict("records")],
        seconds=seconds,
        blocks=blocks,
        torch=torch.__version__,
        peak_rss_mb=peak.rss_mb,
        peak_cuda_mb=peak.cuda_mb,
        worker_peak_rss_mb=_largest(p.rss_mb for p in peaks),
        worker_peak_cuda_mb=_largest(p.cuda_mb for p in peaks),
    )
    RunFolder(out).record_analysis(record)


def _largest(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _digest(matrix: Imatrix | None) -> str | None:
    return None if matrix is None else matrix.digest
