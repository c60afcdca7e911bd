"""One writer per run folder: an OS lock on RUN/.lock that names its owner, and a heartbeat.

The lock is `flock`ed for the life of the process that writes the run, so the OS releases it
when that process dies in any way (`kill -9` too). Its file holds the owner's pid, host and
start; its modification time is the heartbeat (touched every HEARTBEAT_S seconds), which tells
"still running" from "stopped" for an owner on another host of a shared file system.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from mixprec.errors import MixprecError

LOCK_FILE = ".lock"  # a folder holding only it is a run starting

HEARTBEAT_S = 10.0
STALE_S = 6 * HEARTBEAT_S
_held: dict[Path, tuple[RunLock, int]] = {}  # reentrant within one process
_held_guard = threading.Lock()


def _describe(owner: dict[str, Any]) -> str:
    return (
        f"pid {owner.get('pid', '?')} on {owner.get('host', '?')} (since {owner.get('since', '?')})"
    )


def read_owner(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class RunLock:
    """Hold the run folder's lock (and beat its heartbeat) inside a `with` block."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder.resolve()
        self._fd = -1
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> RunLock:
        with _held_guard:
            if self.folder in _held:
                lock, depth = _held[self.folder]
                _held[self.folder] = (lock, depth + 1)
                return self
            self._acquire()
            _held[self.folder] = (self, 1)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        with _held_guard:
            lock, depth = _held[self.folder]
            if depth > 1:
                _held[self.folder] = (lock, depth - 1)
                return
            del _held[self.folder]
            lock._release()

    def _acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MixprecError(
                f"run folder {self.folder} is in use by {_describe(read_owner(self.folder))}; "
                "wait for it to finish or stop it first"
            ) from None
        owner = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        self._fd = fd
        self._beat = threading.Thread(target=self._heartbeat, name="mixprec-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.folder / LOCK_FILE)
            except OSError:
                return

    def _release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = -1


def owner_alive(folder: Path) -> bool:
    """Is some process still writing this run? (lock held here, or a fresh heartbeat there)"""
    path = folder / LOCK_FILE
    if not path.exists():
        return False
    owner = read_owner(folder)
    if owner.get("host") not in (None, socket.gethostname()):
        return time.time() - path.stat().st_mtime < STALE_S
    if folder.resolve() in _held:
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we got
    return False
