"""A real `ray start --head` on 127.0.0.1 for the tests, stopped (with every process it
started) when the block ends, and the loopback port helpers it needs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from mixprec.dashboard.browser import free_port
from mixprec.processes import terminate
from mixprec.sensitivity.cluster import LOOPBACK_ONLY

__all__ = ["free_port", "port_open", "running_head"]


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
        "--disable-usage-stats", f"--dashboard-agent-listen-port={free_port()}", *extra,
    ]  # fmt: skip  # the agent's default port (52365) may belong to another Ray on this box
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
            terminate(head, timeout=60)
            _, alive = psutil.wait_procs(children, timeout=30)
            for process in alive:
                process.kill()
            assert not alive, f"Ray processes outlived their head: {[p.pid for p in alive]}"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
