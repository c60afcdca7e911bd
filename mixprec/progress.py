"""Progress of long work: a live bar on a terminal, and a plain line every few seconds where
output goes to a log (a Ray job, a redirected run), so a log never sits silent for minutes."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

LINE_EVERY_S = 5.0


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def progress_line(
    description: str, done: int, total: int, elapsed: float, unit: str = "cells"
) -> str:
    """`scoring X: 12/40 cells (30%), 0:00:15 elapsed, ETA 0:00:35`"""
    share = done / total if total else 1.0
    eta = f", ETA {_clock(elapsed / done * (total - done))}" if 0 < done < total else ""
    return (f"{description}: {done}/{total} {unit} ({share:.0%}), "
            f"{_clock(elapsed)} elapsed{eta}")  # fmt: skip


PROGRESS_LINE = re.compile(
    r"^(?P<what>.+): (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \(\d+%\), "
    r"(?P<elapsed>[\d:]+) elapsed(?:, ETA (?P<eta>[\d:]+))?$"
)


def last_progress(log: str) -> str:
    """The newest progress line in a log (a job's output), shortened for a table cell:
    `scoring X: 12/40 cells, ETA 0:00:35`; empty when the log has none."""
    for line in reversed(log.splitlines()):
        found = PROGRESS_LINE.match(line.strip())
        if found:
            eta = f", ETA {found['eta']}" if found["eta"] else ""
            return f"{found['what']}: {found['done']}/{found['total']} {found['unit']}{eta}"
    return ""


@contextmanager
def cell_progress(
    description: str,
    total: int,
    enabled: bool = True,
    every: float = LINE_EVERY_S,
    unit: str = "cells",
) -> Iterator[Callable[[], None]]:
    """Yield `advance()`; show progress as a bar on a terminal, else as periodic lines."""
    if not enabled or not total:
        yield lambda: None
        return
    if Console().is_terminal:
        counts = TextColumn(f"{{task.completed}}/{{task.total}} {unit}")
        with Progress(TextColumn("{task.description}"), BarColumn(), counts,
                      TimeRemainingColumn()) as bar:  # fmt: skip
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)
        return
    started = last = time.monotonic()
    done = 0

    def advance() -> None:
        nonlocal done, last
        done += 1
        now = time.monotonic()
        if now - last >= every or done == total:
            last = now
            print(progress_line(description, done, total, now - started, unit), flush=True)

    print(progress_line(description, 0, total, 0.0, unit), flush=True)
    yield advance
    if done < total:
        print(progress_line(description, done, total, time.monotonic() - started, unit), flush=True)
