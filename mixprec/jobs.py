"""Ray cluster jobs: `mixprec submit` ships a run config and runs `mixprec run` on the cluster.

The config travels as the job's working_dir (Ray runtime_env) with its output path made
absolute, so results land in the run-store folder the config names, as seen from the
cluster. Talks to the Ray dashboard's job API; 127.0.0.1 is the default address.
"""

from __future__ import annotations

import shlex
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mixprec.config import RunConfig
from mixprec.errors import MixprecError
from mixprec.files import atomic_write_text

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
FINAL_STATES = ("SUCCEEDED", "FAILED", "STOPPED")
PASSED_ENV = ("MIXPREC_CACHE_DIR",)  # the cluster shares the submitter's model cache


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    status: str
    entrypoint: str
    message: str = ""
    start_time: int | None = None


def client(address: str = DEFAULT_ADDRESS) -> Any:
    """A JobSubmissionClient, after a fast reachability check that names the address."""
    parsed = urlparse(address)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or not parsed.port:
        raise MixprecError(
            f"Ray job address {address!r} is not http://HOST:PORT (the dashboard, e.g. "
            f"{DEFAULT_ADDRESS})"
        )
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=5):
            pass
    except OSError as err:
        raise MixprecError(f"cannot reach the Ray dashboard at {address}: {err}") from None
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address)


def shipped_config(config: RunConfig, base: Path) -> RunConfig:
    """The config as the cluster must see it: output folder absolute (relative to `base`)."""
    output = config.output if config.output.is_absolute() else (base / config.output).resolve()
    return config.model_copy(update={"output": output})


def submit(
    config: RunConfig,
    address: str = DEFAULT_ADDRESS,
    python: str | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Submit `mixprec run` for `config`; returns the job id."""
    import os

    jobs = client(address)
    shipped = shipped_config(config, Path.cwd())
    env_vars = {k: os.environ[k] for k in PASSED_ENV if k in os.environ} | (env or {})
    interpreter = python or sys.executable
    with tempfile.TemporaryDirectory(prefix="mixprec-job-") as folder:
        atomic_write_text(Path(folder) / "config.toml", shipped.to_toml())
        job_id: str = jobs.submit_job(
            entrypoint=f"{shlex.quote(interpreter)} -m mixprec run config.toml",
            runtime_env={"working_dir": folder, "env_vars": env_vars},
            metadata={"mixprec_run": str(shipped.output), "model": config.model},
        )
    return job_id


def _info(details: Any) -> JobInfo:
    status = getattr(details.status, "value", str(details.status))
    return JobInfo(
        details.submission_id or details.job_id or "?",
        str(status),
        details.entrypoint,
        details.message or "",
        details.start_time,
    )


def list_jobs(address: str = DEFAULT_ADDRESS) -> list[JobInfo]:
    return [_info(d) for d in client(address).list_jobs()]


def status(job_id: str, address: str = DEFAULT_ADDRESS) -> JobInfo:
    return _info(_details(client(address), job_id))


def logs(job_id: str, address: str = DEFAULT_ADDRESS) -> str:
    jobs = client(address)
    _details(jobs, job_id)
    return str(jobs.get_job_logs(job_id))


def stop(job_id: str, address: str = DEFAULT_ADDRESS) -> bool:
    jobs = client(address)
    _details(jobs, job_id)
    return bool(jobs.stop_job(job_id))


def wait(job_id: str, address: str = DEFAULT_ADDRESS, timeout: float = 600.0) -> Iterator[JobInfo]:
    """Poll until the job ends (or `timeout` seconds pass); yields each status change."""
    jobs = client(address)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        info = _info(_details(jobs, job_id))
        if info.status != last:
            last = info.status
            yield info
        if info.status in FINAL_STATES:
            return
        if time.monotonic() > deadline:
            raise MixprecError(f"job {job_id} still {info.status} after {timeout:.0f} s")
        time.sleep(1.0)


def _details(jobs: Any, job_id: str) -> Any:
    """The job's details from the cluster (a one-line error for an unknown id)."""
    try:
        return jobs.get_job_info(job_id)
    except RuntimeError as err:
        if "does not exist" in str(err) or "404" in str(err):
            raise MixprecError(f"no job {job_id!r} on this cluster; `mixprec jobs list`") from None
        raise
