"""Measuring plans in the background, so a page stays usable while the model runs: one worker
per dashboard server (`evaluate` changes the model in place, so measurements take turns), and
every result kept for the session, per run and plan."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixprec.errors import MixprecError
from mixprec.files import atomic_write_text
from mixprec.models import ModelBundle
from mixprec.plan import PrecisionPlan


def plan_key(run: str, plan: PrecisionPlan) -> str:
    """One key per run and assignment: the same plan reached twice is measured once."""
    text = json.dumps([run, sorted(plan.assignment.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Measurement:
    """One plan's measurement: how far it got, its metrics or why it failed."""

    run: str
    label: str
    plan: PrecisionPlan
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    total: int = 0
    result: dict[str, Any] | None = None  # the evaluation's JSON document
    error: str | None = None
    finished: float | None = None
    save: Path | None = None  # where the result is written once taken (atomically)

    @property
    def running(self) -> bool:
        return self.result is None and self.error is None

    def status(self) -> str:
        if self.error is not None:
            return f"failed: {self.error}"
        seconds = (self.finished or time.monotonic()) - self.started
        if self.result is not None:
            return f"measured in {seconds:.0f} s"
        if not self.total:
            return f"waiting for the model ({seconds:.0f} s)"
        left = seconds / max(self.done, 1) * (self.total - self.done) if self.done else None
        eta = f", about {left:.0f} s left" if left is not None else ""
        return f"{self.done}/{self.total} evaluation batches, {seconds:.0f} s{eta}"

    @property
    def metrics(self) -> Mapping[str, float]:
        return dict(self.result.get("metrics", {})) if self.result else {}


class Measurer:
    """Starts measurements on its one worker and keeps them all (by `plan_key`)."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mixprec-measure")
        self._lock = threading.Lock()
        self._all: dict[str, Measurement] = {}

    def start(self, run: str, label: str, bundle: ModelBundle, plan: PrecisionPlan,
              save: Path | None = None) -> Measurement:  # fmt: skip
        """The measurement of `plan` (of `run`, shown as `label`, written to `save` when
        given), started unless one ran or runs (a failed one is tried again)."""
        key = plan_key(run, plan)
        with self._lock:
            known = self._all.get(key)
            if known is not None and known.error is None:
                return known
            job = self._all[key] = Measurement(run, label, plan, save=save)
        self._pool.submit(self._run, job, bundle)
        return job

    def get(self, run: str, plan: PrecisionPlan) -> Measurement | None:
        with self._lock:
            return self._all.get(plan_key(run, plan))

    def of_run(self, run: str) -> list[Measurement]:
        """Every measurement of `run`'s plans this session, oldest first."""
        with self._lock:
            return [m for m in self._all.values() if m.run == run]

    def running(self) -> bool:
        with self._lock:
            return any(m.running for m in self._all.values())

    @staticmethod
    def _run(job: Measurement, bundle: ModelBundle) -> None:
        from mixprec.metrics import evaluate

        def say(done: int, total: int) -> None:
            job.done, job.total = done, total

        job.total = len(bundle.evaluation)
        try:
            result = evaluate(bundle, job.plan.assignment,
                              input_ranges=job.plan.input_ranges or None, progress=say)  # fmt: skip
        except (MixprecError, RuntimeError, ValueError) as err:
            job.error = str(err).splitlines()[0] if str(err) else type(err).__name__
        else:
            if job.save is not None:
                job.save.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(job.save, json.dumps(result.to_json(), indent=2) + "\n")
            job.result = result.to_json()
        job.finished = time.monotonic()
