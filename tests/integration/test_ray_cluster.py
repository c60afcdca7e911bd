"""`--address` joins a real Ray cluster: a head started here on 127.0.0.1, stopped after."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.cluster import LOOPBACK_ONLY
from mixprec.sensitivity.runner import AnalysisSpec, run_analysis
from mixprec.sensitivity.table import ScoreTable

SPEC = AnalysisSpec("digits-cnn", schemes=("w:int4", "w:mxfp8_e4m3"), chunk=4)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running_head(
    extra: list[str],
    log_path: Path,
    ready: Callable[[], bool],
    timeout: float = 90.0,
    auth: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`ray start --head --block` on 127.0.0.1 until `ready()`; SIGTERM (then kill) on exit.
    `auth` replaces RAY_AUTH_MODE=disabled (e.g. token mode with RAY_AUTH_TOKEN_PATH)."""
    ray = Path(sys.executable).parent / "ray"
    command = [
        str(ray), "start", "--head", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=2",
        "--disable-usage-stats", *extra,
    ]  # fmt: skip
    env = {**os.environ, LOOPBACK_ONLY: "0", **(auth or {"RAY_AUTH_MODE": "disabled"})}
    env["RAY_worker_niceness"] = "0"  # as the README says: Ray's nice 15 starves on a busy box
    with log_path.open("w") as log:
        head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + timeout
            while not ready():
                assert head.poll() is None, log_path.read_text()
                if time.monotonic() > deadline:
                    pytest.fail(f"the Ray head was not ready within {timeout:.0f} s")
                time.sleep(0.5)
            yield head
        finally:
            children = psutil.Process(head.pid).children(recursive=True)
            head.send_signal(signal.SIGTERM)
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                head.kill()
                head.wait(timeout=30)
            _, alive = psutil.wait_procs(children, timeout=30)
            for process in alive:
                process.kill()
            assert not alive, f"Ray processes outlived their head: {[p.pid for p in alive]}"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    extra = [f"--port={port}", "--include-dashboard=false"]
    with running_head(extra, tmp_path / "ray-head.log", lambda: port_open(port)):
        yield f"127.0.0.1:{port}"


def test_analysis_on_an_existing_cluster_matches_serial(ray_head: str, tmp_path: Path) -> None:
    """A local Ray run first: it must leave nothing behind (Ray sets RAY_AUTH_MODE=token in
    os.environ) that breaks the cluster run of a `mixprec analyze` started from here after."""
    local = run_analysis(SPEC, workers=1, cache=CellCache(tmp_path / "l"), progress=False)
    command = [
        sys.executable, "-m", "mixprec", "analyze", "--model", SPEC.model,
        "--schemes", ",".join(SPEC.schemes), "--workers", "2", "--address", ray_head,
        "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    env = {**os.environ, "MIXPREC_CACHE_DIR": str(tmp_path / "fresh")}  # every cell on the cluster
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    on_cluster = ScoreTable.load(tmp_path / "run" / "scores.parquet")
    serial = run_analysis(SPEC, cache=CellCache(tmp_path / "b"), progress=False)
    assert (on_cluster.frame["status"] == "ok").all()
    assert on_cluster.same_scores(serial) and local.same_scores(serial)
