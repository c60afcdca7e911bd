"""`--address` joins a real Ray cluster: a head started here on 127.0.0.1, stopped after."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.runner import LOOPBACK_ONLY, AnalysisSpec, run_analysis

SPEC = AnalysisSpec("digits-cnn", schemes=("w:int4", "w:mxfp8_e4m3"), chunk=4)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    ray = Path(sys.executable).parent / "ray"
    command = [
        str(ray), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
        "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
    ]  # fmt: skip
    log = (tmp_path / "ray-head.log").open("w")
    env = {**os.environ, LOOPBACK_ONLY: "0", "RAY_AUTH_MODE": "disabled"}  # loopback only
    head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert head.poll() is None, (tmp_path / "ray-head.log").read_text()
            time.sleep(0.5)
        else:
            pytest.fail("the Ray head did not open its port within 90 s")
        yield f"127.0.0.1:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait(timeout=30)
        log.close()


def test_analysis_on_an_existing_cluster_matches_serial(ray_head: str, tmp_path: Path) -> None:
    on_cluster = run_analysis(
        SPEC, workers=2, address=ray_head, cache=CellCache(tmp_path / "a"), progress=False
    )
    serial = run_analysis(SPEC, cache=CellCache(tmp_path / "b"), progress=False)
    assert (on_cluster.frame["status"] == "ok").all()
    assert on_cluster.same_scores(serial)
