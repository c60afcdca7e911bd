"""Cells on Ray actors: a local loopback instance, the cluster at an address, or the cluster a
Ray job runs on; each actor loads the model once, lost actors restart, worker counts are capped
at what the machine or cluster has."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from mixprec.errors import MixprecError
from mixprec.memory import PeakMemory
from mixprec.sensitivity.base import make_estimator
from mixprec.sensitivity.cells import AnalysisSpec, Cell, CellWorker

# Ray reads this at import: "0" makes a node use the loopback address rather than its NIC's.
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for a job's entrypoint


def ray_map(
    spec: AnalysisSpec,
    fingerprint: str,
    cells: Sequence[Cell],
    workers: int | None,
    address: str | None,
    gpus: float = 0.0,
    peaks: list[PeakMemory] | None = None,
) -> Iterator[tuple[Cell, list[dict[str, Any]]]]:
    """Cells on `workers` Ray actors (None: as many as the cluster holds), each loading the
    model once and holding `gpus` GPUs; lost actors restart. Once every cell is done, each
    actor's peak memory is added to `peaks`."""
    if address is None:
        # A local cluster advertises its own node address; keep it on loopback instead.
        os.environ.setdefault(LOOPBACK_ONLY, "0")
    import ray

    started_here = not ray.is_initialized()
    environment = dict(os.environ)  # ray.init sets RAY_AUTH_MODE and more; shutdown leaves them
    if address is None and job_cluster():
        address = os.environ["RAY_ADDRESS"]  # inside a Ray job: its own cluster
    where = "this machine" if address is None else "the cluster"
    if started_here:
        if address is None:
            room = max((os.cpu_count() or 1) // spec.threads, 1)
            start_local_ray(min(workers or room, room) * spec.threads)
        else:
            check_reachable(address)
            ray.init(address=address, log_to_driver=False, configure_logging=False)
    try:  # from here on, whatever fails, a Ray instance started here is shut down
        room = worker_room(ray.cluster_resources(), spec.threads, gpus, where)
        workers = room if workers is None else capped_workers(workers, room, where)
        yield from _on_actors(spec, fingerprint, cells, workers, gpus, peaks)
    finally:
        if started_here:
            ray.shutdown()
            undo_environment_changes(environment)


def _on_actors(
    spec: AnalysisSpec,
    fingerprint: str,
    cells: Sequence[Cell],
    workers: int,
    gpus: float,
    peaks: list[PeakMemory] | None,
) -> Iterator[tuple[Cell, list[dict[str, Any]]]]:
    """The cells on `workers` new actors of the Ray instance this process is connected to."""
    import ray

    actor = ray.remote(num_cpus=spec.threads, num_gpus=gpus, max_restarts=3, max_task_retries=3)(
        CellWorker
    )
    actors: list[Any] = [actor.remote(spec, None, fingerprint) for _ in range(workers)]
    queues = schedule(spec, cells, workers)
    in_flight: dict[Any, int] = {}

    def feed(worker: int) -> None:
        if queues.has_work(worker):
            index = queues.take(worker)
            in_flight[actors[worker].run_indexed.remote(index, cells[index])] = worker

    for worker in range(workers):
        feed(worker)
    while in_flight:
        [done], _ = ray.wait(list(in_flight), num_returns=1)
        worker = in_flight.pop(done)
        index, results = ray.get(done)
        feed(worker)
        yield cells[index], results
    if peaks is not None:
        peaks.extend(ray.get([a.peak.remote() for a in actors]))


def start_local_ray(cpus: int) -> None:
    """A new local Ray instance (never a cluster left running) whose workers keep the driver's
    priority: Ray nices them to 15 by default, and on a busy machine they then starve."""
    import ray

    ray.init(
        address="local",
        num_cpus=cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _system_config={"worker_niceness": 0},
    )


def undo_environment_changes(saved: dict[str, str]) -> None:
    """Put back only the variables that changed since `saved` (ray.init adds RAY_AUTH_MODE and
    more, and shutdown leaves them), so nothing else another thread set is lost."""
    for key in set(os.environ) - set(saved):
        del os.environ[key]
    for key, value in saved.items():
        if os.environ.get(key) != value:
            os.environ[key] = value


def job_cluster() -> bool:
    """Running as a Ray job's entrypoint (Ray sets these): use that cluster, not a new one whose
    workers could not fetch the job's runtime_env package."""
    return bool(os.environ.get("RAY_ADDRESS")) and JOB_CONFIG_ENV in os.environ


def worker_room(resources: Mapping[str, float], threads: int, gpus: float, where: str) -> int:
    """How many actors fit: CPUs per `threads` each, and GPUs per `gpus` where asked for;
    GPUs asked of a place with none is an error that names what it has."""
    cpus, have = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    room = max(int(cpus // threads), 1)
    if gpus <= 0:
        return room
    if have < gpus:
        raise MixprecError(
            f"--gpus-per-worker {gpus:g}: {where} has {have:g} GPUs and {cpus:g} CPUs; drop the "
            "option to score on CPUs, or join a cluster with GPUs (--address)"
        )
    return min(room, int(have // gpus))


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
    shared = [c.name for c in spec.configs() if make_estimator(c).shares_statistics]
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
