"""Atomic file writes (a reader never sees a half-written file under the final name) and the
writable-folder check made before any."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from mixprec.errors import MixprecError

if TYPE_CHECKING:
    import pandas as pd


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a finished file gets the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield a temp folder beside `path` (new or empty); it becomes `path` only if the block
    succeeds, so a folder there is never half-written."""
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staged
        if path.exists():
            path.rmdir()  # only an empty folder is replaced
        os.replace(staged, path)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def check_writable_parent(resolved: Path, what: str, shown: Path) -> None:
    """The nearest existing folder above `resolved` must be writable."""
    parent = resolved if resolved.is_dir() else resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise MixprecError(f"cannot write {what} {shown}: {parent} is not a writable folder")


@contextmanager
def held_lock(beside: Path) -> Iterator[None]:
    """An exclusive OS lock on a hidden file beside `beside`: processes that make the same
    cached file at once (a driver and its Ray workers) take turns, one makes it."""
    beside.parent.mkdir(parents=True, exist_ok=True)
    lock = beside.with_name(f".{beside.name}.lock")
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
