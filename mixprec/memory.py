"""Peak memory of one piece of work in this process: resident set size (Linux's VmHWM, reset at
the start through /proc/self/clear_refs) and, where CUDA is in use, torch's peak allocation.

    with peak_memory() as peak:
        analyze(spec)
    peak.rss_mb, peak.cuda_mb
"""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")
MB = 1e6


@dataclass
class PeakMemory:
    """Filled in when the `with` block ends (None where this system cannot say)."""

    rss_mb: float | None = None
    cuda_mb: float | None = None


def _high_water_rss() -> float | None:
    """This process's peak RSS in MB since the last reset (else since it started)."""
    try:
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB  # KiB on Linux


def _reset_rss_peak() -> None:
    with suppress(OSError):  # no /proc: the peak then counts from the process's start
        CLEAR_REFS.write_text("5")  # "5" resets the peak RSS (Linux 4.0+) and nothing else


def _cuda_in_use() -> bool:
    import sys

    torch = sys.modules.get("torch")  # CUDA is in use only where torch already is
    return torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()


def reset_peak() -> None:
    """Start counting peaks from now."""
    _reset_rss_peak()
    if _cuda_in_use():
        import torch

        torch.cuda.reset_peak_memory_stats()


def read_peak() -> PeakMemory:
    """The peaks since the last `reset_peak` (or since the process started)."""
    cuda = None
    if _cuda_in_use():
        import torch

        cuda = torch.cuda.max_memory_allocated() / MB
    return PeakMemory(_high_water_rss(), cuda)


@contextmanager
def peak_memory() -> Iterator[PeakMemory]:
    """The peak RSS (and CUDA memory) of this process while the block runs."""
    peak = PeakMemory()
    reset_peak()
    try:
        yield peak
    finally:
        read = read_peak()
        peak.rss_mb, peak.cuda_mb = read.rss_mb, read.cuda_mb
