"""Run estimators over (estimator, scheme, unit chunk) cells, serially or on Ray actors.

Every finished unit score is written at once to a content-addressed cache (key: model
fingerprint, unit, scheme, estimator and its parameters, calibration-set hash, seed), so a
re-run after Ctrl-C or a lost worker computes only what is missing and gives the same table.
Each worker runs torch with the same thread count, so serial and Ray tables are identical.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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
from mixprec.sensitivity.adaptive import CHEAP, EXACT
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
from mixprec.sensitivity.configs import AdaptiveConfig, FisherConfig, IsolationConfig
from mixprec.sensitivity.refine import ADAPTIVE, Key, adaptive_entries, refine
from mixprec.sensitivity.table import ScoreTable
from mixprec.store import AnalysisRecord, FailedCell, RunFolder, SpecRecord, check_run_folder
from mixprec.units import Unit, discover_units, quantizable_layers

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
    lossless = ADAPTIVE in configs and not bundle.task.has_loss  # no Fisher: isolation for all
    for name, config in configs.items():
        if name == ADAPTIVE and lossless:
            if progress:
                print(f"adaptive: {bundle.name} has no task loss for {CHEAP}; {EXACT} scores "
                      "every cell", flush=True)  # fmt: skip
        elif make_estimator(config).needs_loss and not bundle.task.has_loss:
            raise MixprecError(
                f"estimator {name!r} needs a task loss and model {bundle.name!r} has none; "
                "use --estimators isolation, or give the model a task (a ModelBundle factory)"
            )
    calibration = content_hash(batches)
    cache = cache or CellCache(cache_dir() / "cells")
    device = "cuda" if who.gpus else model_device(bundle.model).type  # where cells are computed
    importance = hash_tensors(sorted(bundle.importance.items())) if bundle.importance else ""
    listed = set(configs)
    adaptive = configs.pop(ADAPTIVE, None)
    if adaptive is not None:  # built from the cheap and the exact estimator, as configured
        for name, config_type in ((CHEAP, FisherConfig), (EXACT, IsolationConfig)):
            if name == EXACT or not lossless:
                configs.setdefault(name, config_type(seed=spec.seed))
    cells = _Cells(replace(spec, estimators=tuple(configs.values())), bundle, who, progress,
                   cache, peaks=[])  # fmt: skip

    def key_of(name: str, scheme: str, unit: Unit) -> str:
        config = configs[name]
        return cell_key(bundle.fingerprint, unit, scheme, name, config.cache_params(),
                        calibration, spec.seed, device, importance)  # fmt: skip

    everything = [(n, s, u.name) for n in configs for s in spec.schemes for u in units]
    eager = [k for k in everything
             if adaptive is None or k[0] != EXACT or EXACT in listed or lossless]  # fmt: skip
    cells.measure(eager, key_of, by_name, f"scoring {spec.model}")
    layers = quantizable_layers(bundle.model)

    def table_of(extra: dict[tuple[str, str], dict[str, Any]] | None = None) -> ScoreTable:
        rows = [_row(by_name[u], s, n, layers, entry)
                for (n, s, u), entry in cells.found.items() if entry is not None]  # fmt: skip
        rows += [_row(by_name[u], s, ADAPTIVE, layers, e) for (s, u), e in (extra or {}).items()]
        return ScoreTable.from_rows(rows)

    if adaptive is not None and lossless:
        table = table_of({(s, u): e for (n, s, u), e in cells.found.items()
                          if n == EXACT and e is not None})  # fmt: skip
    elif adaptive is not None:
        from mixprec.allocation import AllocationProblem

        assert isinstance(adaptive, AdaptiveConfig)
        confidence = adaptive.confidence

        def adaptive_table() -> ScoreTable:
            return table_of(adaptive_entries(units, spec.schemes, cells.found, confidence))

        provisional = table_of({(s, u): e for (n, s, u), e in cells.found.items()
                                if n == CHEAP and e is not None})  # fmt: skip
        problem = AllocationProblem.build(
            provisional, bundle, ADAPTIVE, exclude=adaptive.exclude, target=adaptive.target
        )

        def measure(keys: list[Key]) -> None:
            cells.measure(keys, key_of, by_name, f"isolation where it decides ({spec.model})")

        report = refine(adaptive, problem, units, spec.schemes, cells.found, measure,
                        adaptive_table)  # fmt: skip
        if progress:
            print(report.summary(len(units) * len(spec.schemes)), flush=True)
        table = adaptive_table()
    else:
        table = table_of()
    peaks = cells.peaks
    if out is not None:
        blocks = {u.name: list(u.modules) for u in units if u.level == "block"}
        elapsed = time.perf_counter() - started
        _write_outputs(
            out,
            table,
            spec,
            bundle,
            calibration,
            blocks,
            elapsed,
            device,
            peaks,
            [u.name for u in units],
        )
    return table


class _Cells:
    """Every cell scored so far (cached or computed), and how missing ones get computed: in
    this process (one worker kept across rounds) or on Ray actors."""

    def __init__(self, spec: AnalysisSpec, bundle: ModelBundle, who: Workers, progress: bool,
                 cache: CellCache, peaks: list[PeakMemory]) -> None:  # fmt: skip
        self.spec, self.bundle, self.who, self.progress = spec, bundle, who, progress
        self.cache, self.peaks = cache, peaks  # peaks: of the Ray workers, where they scored
        self.found: dict[Key, dict[str, Any] | None] = {}
        self._worker: CellWorker | None = None

    def measure(
        self, wanted: Sequence[Key], key_of: Callable[[str, str, Unit], str],
        by_name: dict[str, Unit], description: str,
    ) -> None:  # fmt: skip
        """Score the `wanted` cells not yet found, from the cache where it has them."""
        keys = {k: key_of(k[0], k[1], by_name[k[2]]) for k in wanted if k not in self.found}
        for key, cached in keys.items():
            self.found[key] = self.cache.get(cached)
        todo = []
        for name in dict.fromkeys(k[0] for k in keys):
            for scheme in dict.fromkeys(k[1] for k in keys):
                pending = [by_name[u] for (n, s, u) in keys
                           if (n, s) == (name, scheme) and self.found[n, s, u] is None]  # fmt: skip
                for i in range(0, len(pending), self.spec.chunk):
                    todo.append(Cell(name, scheme, tuple(pending[i : i + self.spec.chunk])))
        for cell, results in self._execute(todo, description):
            for unit, result in zip(cell.units, results, strict=True):
                key = (cell.estimator, cell.scheme, unit.name)
                self.found[key] = result
                if result["status"] == "ok":  # a failed cell is not cached: a re-run tries again
                    self.cache.put(keys[key], result)

    def _execute(
        self, cells: Sequence[Cell], description: str
    ) -> Iterator[tuple[Cell, list[dict[str, Any]]]]:
        with cell_progress(description, len(cells), self.progress) as advance:
            if not cells:
                return
            if self.who.serial:
                self._worker = self._worker or CellWorker(self.spec, self.bundle)
                for cell in cells:
                    yield cell, self._worker.run(cell)
                    advance()
                return
            who, fingerprint = self.who, self.bundle.fingerprint
            count = None if who.count is None else max(who.count, 1)
            mapped = ray_map(self.spec, fingerprint, cells, count, who.address, who.gpus,
                             self.peaks)  # fmt: skip
            for cell, results in mapped:
                yield cell, results
                advance()


def _row(
    unit: Unit, scheme: str, estimator: str, layers: dict[str, Any], entry: dict[str, Any]
) -> dict[str, Any]:
    """A table row: the cell's result with its unit, level, scheme and exact cost."""
    parsed = Scheme.parse(scheme)
    cost = sum(layer_weight_bytes(layers[m], parsed) for m in unit.modules)
    return {"unit": unit.name, "level": unit.level, "scheme": str(parsed),
            "estimator": estimator, "cost_bytes": cost, **entry}  # fmt: skip


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
    order: list[str],
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
        units=order,
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
