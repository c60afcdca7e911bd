"""Run estimators over (estimator, scheme, unit chunk) cells, serially or on Ray actors.

Every finished unit score is written at once to a content-addressed cache (key: model
fingerprint, unit, scheme, estimator and its parameters, calibration-set hash, seed), so a
re-run after Ctrl-C or a lost worker computes only what is missing and gives the same table.
Each worker runs torch with the same thread count, so serial and Ray tables are identical.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from mixprec.data import content_hash
from mixprec.errors import MixprecError, gist
from mixprec.files import atomic_write_text
from mixprec.guard import RUN_KIND, check_run_folder
from mixprec.metrics import layer_weight_bytes
from mixprec.models import ModelBundle, cache_dir, load_model
from mixprec.progress import cell_progress
from mixprec.runlock import RunLock
from mixprec.scheme import Scheme
from mixprec.sensitivity.base import make_estimator
from mixprec.sensitivity.cache import CellCache, cell_key
from mixprec.sensitivity.table import ScoreTable
from mixprec.units import Unit, discover_units, quantizable_layers

DEFAULT_SCHEMES = (
    "w:fp8_e4m3", "w:int8", "w:mxfp8_e4m3", "w:mxfp6_e2m3", "w:int4_g128", "w:int4_asym_g128",
    "w:mxfp4", "w:nvfp4", "w:nvint4", "w:fp4_e2m1", "w:int3_g128", "w:nvfp4,a:nvfp4",
)  # fmt: skip
LEVELS = ("layer", "component", "block")
# Ray reads this at import: "0" makes a node use the loopback address rather than its NIC's.
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for a job's entrypoint


@dataclass(frozen=True)
class AnalysisSpec:
    """What to score. `model` is a source string, so every worker can load it itself."""

    model: str
    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    estimators: tuple[str, ...] = ("hessian", "fisher", "isolation")
    levels: tuple[str, ...] = LEVELS
    calib_batches: int | None = None
    seed: int = 0
    chunk: int = 8
    threads: int = 1

    def validated(self) -> AnalysisSpec:
        """Checked, with schemes in canonical spelling (they are part of cache keys)."""
        schemes = tuple(str(Scheme.parse(s)) for s in self.schemes)
        for name in self.estimators:
            make_estimator(name)
        bad = [lvl for lvl in self.levels if lvl not in LEVELS]
        if bad:
            raise MixprecError(f"unknown level {bad[0]!r}; valid levels: {', '.join(LEVELS)}")
        if self.calib_batches is not None and self.calib_batches < 1:
            raise MixprecError(f"--calib-batches {self.calib_batches} must be at least 1")
        return replace(self, schemes=schemes)


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
        self.bundle = bundle or load_model(spec.model, seed=spec.seed)
        if fingerprint and self.bundle.fingerprint != fingerprint:
            raise MixprecError(
                f"a worker loaded {spec.model!r} with other weights than the driver "
                f"({self.bundle.fingerprint[:12]} vs {fingerprint[:12]}); give every node the "
                "same model files"
            )
        self.batches = calibration_batches(self.bundle, spec.calib_batches)
        self.estimators = {n: make_estimator(n, spec.seed) for n in spec.estimators}

    def run(self, cell: Cell) -> list[dict[str, Any]]:
        estimator = self.estimators[cell.estimator]
        scheme = Scheme.parse(cell.scheme)
        results = []
        for unit in cell.units:
            start = time.perf_counter()
            payload: dict[str, Any] = {"score": None, "ci_low": None, "ci_high": None}
            status, error, samples = "failed", "", 0
            try:
                score = estimator.score(self.bundle, unit, scheme, self.batches)
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


def run_analysis(
    spec: AnalysisSpec,
    workers: int = 0,
    address: str | None = None,
    out: Path | None = None,
    progress: bool = True,
    cache: CellCache | None = None,
) -> ScoreTable:
    """Score every (estimator, unit, scheme); reuse cached cells; write DIR/scores.parquet.

    The output folder is checked (new, empty or a mixprec run) and locked before any work."""
    spec = spec.validated()
    if out is None:
        return _score_all(spec, workers, address, None, progress, cache)
    check_run_folder(out, "--out")
    with RunLock(out):
        return _score_all(spec, workers, address, out, progress, cache)


def _score_all(
    spec: AnalysisSpec,
    workers: int,
    address: str | None,
    out: Path | None,
    progress: bool,
    cache: CellCache | None,
) -> ScoreTable:
    started = time.perf_counter()
    bundle = load_model(spec.model, seed=spec.seed)
    units = [u for u in discover_units(bundle.model) if u.level in spec.levels]
    by_name = {u.name: u for u in units}
    batches = calibration_batches(bundle, spec.calib_batches)
    check_forward(bundle, batches[0])
    for name in spec.estimators:
        if make_estimator(name).needs_loss and not bundle.task.has_loss:
            raise MixprecError(
                f"estimator {name!r} needs a task loss and model {bundle.name!r} has none; "
                "use --estimators isolation, or give the model a task (a ModelBundle factory)"
            )
    calibration = content_hash(batches)
    cache = cache or CellCache(cache_dir() / "cells")
    keys = {
        (estimator, scheme, unit.name): cell_key(
            bundle.fingerprint, unit, scheme, estimator, params, calibration, spec.seed
        )
        for estimator in spec.estimators
        for params in [make_estimator(estimator, spec.seed).params]
        for scheme in spec.schemes
        for unit in units
    }
    found = {key: cache.get(key) for key in keys.values()}
    todo = []
    for estimator in spec.estimators:
        for scheme in spec.schemes:
            pending = [u for u in units if found[keys[estimator, scheme, u.name]] is None]
            for i in range(0, len(pending), spec.chunk):
                todo.append(Cell(estimator, scheme, tuple(pending[i : i + spec.chunk])))
    for cell, results in _execute(spec, bundle, todo, workers, address, progress):
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
        _write_outputs(out, table, spec, bundle, calibration, blocks, elapsed)
    return table


def _execute(
    spec: AnalysisSpec,
    bundle: ModelBundle,
    cells: Sequence[Cell],
    workers: int,
    address: str | None,
    progress: bool,
) -> Iterator[tuple[Cell, list[dict[str, Any]]]]:
    with cell_progress(f"scoring {spec.model}", len(cells), progress) as advance:
        if not cells:
            return
        if workers == 0 and address is None:
            worker = CellWorker(spec, bundle)
            for cell in cells:
                yield cell, worker.run(cell)
                advance()
            return
        for cell, results in _ray_map(spec, bundle.fingerprint, cells, max(workers, 1), address):
            yield cell, results
            advance()


def _ray_map(
    spec: AnalysisSpec, fingerprint: str, cells: Sequence[Cell], workers: int, address: str | None
) -> Iterator[tuple[Cell, list[dict[str, Any]]]]:
    """Cells on `workers` Ray actors, each loading the model once; lost actors restart."""
    if address is None:
        # A local cluster advertises its own node address; keep it on loopback instead.
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    import ray

    started_here = not ray.is_initialized()
    environment = dict(os.environ)  # ray.init sets RAY_AUTH_MODE and more; shutdown leaves them
    if address is None and job_cluster():
        address = os.environ["RAY_ADDRESS"]  # inside a Ray job: its own cluster
    if started_here:
        if address is None:
            room = max((os.cpu_count() or 1) // spec.threads, 1)
            workers = capped_workers(workers, room, "this machine")
            ray.init(
                address="local",  # a new local instance, never a cluster left running
                num_cpus=workers * spec.threads,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        else:
            check_reachable(address)
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    if address is not None:
        room = max(int(ray.cluster_resources().get("CPU", 1)) // spec.threads, 1)
        workers = capped_workers(workers, room, "the cluster")
    actor = ray.remote(num_cpus=spec.threads, max_restarts=3, max_task_retries=3)(CellWorker)
    actors: list[Any] = [actor.remote(spec, None, fingerprint) for _ in range(workers)]
    queues = schedule(spec, cells, workers)
    in_flight: dict[Any, int] = {}

    def feed(worker: int) -> None:
        if queues.has_work(worker):
            index = queues.take(worker)
            in_flight[actors[worker].run_indexed.remote(index, cells[index])] = worker

    try:
        for worker in range(workers):
            feed(worker)
        while in_flight:
            [done], _ = ray.wait(list(in_flight), num_returns=1)
            worker = in_flight.pop(done)
            index, results = ray.get(done)
            feed(worker)
            yield cells[index], results
    finally:
        if started_here:
            ray.shutdown()
            os.environ.clear()
            os.environ.update(environment)


def job_cluster() -> bool:
    """Running as a Ray job's entrypoint (Ray sets these): use that cluster, not a new one whose
    workers could not fetch the job's runtime_env package."""
    return bool(os.environ.get("RAY_ADDRESS")) and JOB_CONFIG_ENV in os.environ


def capped_workers(wanted: int, available: int, where: str) -> int:
    """At most what `where` has, saying so when that is fewer than asked for."""
    if wanted <= available:
        return wanted
    sys.stderr.write(f"mixprec: {wanted} workers asked for, {where} has room for {available}; "
                     f"using {available}\n")  # fmt: skip
    return available


@dataclass
class WorkQueues:
    """Cells of an estimator that builds shared statistics (Hessian traces, Fisher diagonals)
    stay on one worker so the statistics are built once; the rest go to whoever is free."""

    pinned: dict[int, list[int]]
    free: list[int]

    def has_work(self, worker: int) -> bool:
        return bool(self.pinned.get(worker)) or bool(self.free)

    def take(self, worker: int) -> int:
        mine = self.pinned.get(worker)
        return mine.pop(0) if mine else self.free.pop(0)


def schedule(spec: AnalysisSpec, cells: Sequence[Cell], workers: int) -> WorkQueues:
    shared = [n for n in spec.estimators if make_estimator(n).shares_statistics]
    owner = {name: i % workers for i, name in enumerate(shared)}
    pinned: dict[int, list[int]] = {}
    free = []
    for index, cell in enumerate(cells):
        if cell.estimator in owner:
            pinned.setdefault(owner[cell.estimator], []).append(index)
        else:
            free.append(index)
    return WorkQueues(pinned, free)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast with the address in the message instead of Ray's long connection retries."""
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    host, port = parsed.hostname, parsed.port
    if not host or not port:
        raise MixprecError(f"Ray address {address!r} is not host:port or ray://host:port")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return
    except OSError as err:
        raise MixprecError(f"cannot reach the Ray cluster at {address}: {err}") from None


def _write_outputs(
    out: Path,
    table: ScoreTable,
    spec: AnalysisSpec,
    bundle: ModelBundle,
    calibration: str,
    blocks: dict[str, list[str]],
    seconds: float,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table.save(out / "scores.parquet")
    frame = table.frame
    failed = frame[frame["status"] != "ok"]
    try:  # keep what else the run store keeps there (steps, config, status)
        kept = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        kept = {}
    manifest = {
        **(kept if isinstance(kept, dict) else {}),
        "kind": RUN_KIND,
        "spec": asdict(spec),
        "model": bundle.name,
        "fingerprint": bundle.fingerprint,
        "calibration_hash": calibration,
        "cells": len(frame),
        "failed": failed[["estimator", "unit", "scheme", "error"]].to_dict("records"),
        "seconds": seconds,
        "blocks": blocks,
        "torch": torch.__version__,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2) + "\n")


def analyze(
    model: str,
    schemes: Sequence[str] | str = "default",
    estimators: Sequence[str] = ("hessian", "fisher", "isolation"),
    workers: int = 0,
    out: Path | str | None = None,
    address: str | None = None,
    calib_batches: int | None = None,
    seed: int = 0,
    levels: Sequence[str] = LEVELS,
    progress: bool = True,
) -> ScoreTable:
    """Score every unit of `model` under every scheme; what `mixprec analyze` runs."""
    chosen = DEFAULT_SCHEMES if schemes == "default" else tuple(parse_list(schemes))
    spec = AnalysisSpec(model, chosen, tuple(estimators), tuple(levels), calib_batches, seed)
    return run_analysis(spec, workers, address, Path(out) if out is not None else None, progress)


def parse_list(text: Sequence[str] | str) -> list[str]:
    """`w:mxfp4,w:nvfp4,a:nvfp4` -> [w:mxfp4, w:nvfp4,a:nvfp4]: an `a:` item joins the scheme
    before it; ';' and spaces separate too."""
    if not isinstance(text, str):
        return list(text)
    schemes: list[str] = []
    for item in text.replace(";", ",").replace(" ", ",").split(","):
        item = item.strip()
        if item.startswith("a:") and schemes:
            schemes[-1] += f",{item}"
        elif item:
            schemes.append(item)
    return schemes
