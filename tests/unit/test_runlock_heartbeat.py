"""A run owned by a process on another host (a shared file system) is judged by its heartbeat."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from mixprec.runlock import HEARTBEAT_S, LOCK_FILE, STALE_S, RunLock, owner_alive, read_owner


def plant_owner(folder: Path, host: str, age_s: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    lock.write_text(json.dumps({"pid": 4242, "host": host, "since": "2026-12-01T00:00:00"}))
    beat = time.time() - age_s
    os.utime(lock, (beat, beat))


def test_another_hosts_fresh_heartbeat_is_alive_and_a_stale_one_is_stopped(tmp_path: Path) -> None:
    other = f"not-{socket.gethostname()}"
    plant_owner(tmp_path / "fresh", other, age_s=HEARTBEAT_S)
    plant_owner(tmp_path / "stale", other, age_s=STALE_S + 1)
    assert owner_alive(tmp_path / "fresh")  # no local lock can be seen, only the heartbeat
    assert not owner_alive(tmp_path / "stale")


def test_a_held_lock_names_this_process_and_beats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mixprec.runlock.HEARTBEAT_S", 0.05)
    folder = tmp_path / "run"
    with RunLock(folder):
        owner = read_owner(folder)
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        lock = folder / LOCK_FILE
        old = time.time() - 3600
        os.utime(lock, (old, old))
        deadline = time.monotonic() + 10
        while lock.stat().st_mtime < time.time() - 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.stat().st_mtime > time.time() - 60  # the heartbeat touched it again
        assert owner_alive(folder)
    assert not owner_alive(folder)


def test_a_dead_local_owner_is_stopped_even_with_a_fresh_heartbeat(tmp_path: Path) -> None:
    """On this host the OS lock decides: a crashed owner's recent mtime does not keep it alive."""
    plant_owner(tmp_path / "crashed", socket.gethostname(), age_s=0)
    assert not owner_alive(tmp_path / "crashed")
