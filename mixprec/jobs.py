"""Ray cluster jobs: `mixprec submit` ships a run config and runs `mixprec run` on the cluster.

The config travels as the job's working_dir (Ray runtime_env) with its output path made
absolute, so results land in the run-store folder the config names, as seen from the
cluster. Talks to the Ray dashboard's job API; 127.0.0.1 is the default address.
"""

from __future__ import annotations

import json
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
TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"  # Ray's own names
AGENT_WAIT_S = 180.0  # after `ray start` the job agent may take minutes on a starved machine


@dataclass(frozen=True)
class JobInfo:
    job_id: str
    status: str
    entrypoint: str
    message: str = ""
    start_time: int | None = None  # milliseconds since the epoch, as Ray gives it
    run: str = ""  # the run folder the job writes (mixprec's own jobs)


def client(address: str = DEFAULT_ADDRESS) -> Any:
    """A JobSubmissionClient, after a fast check that `address` is a Ray dashboard's job API
    this process may use (token-auth clusters get the token; a missing one is one line)."""
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
    headers = auth_headers()
    probe_job_api(address, headers)
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address, headers=headers)


def auth_token() -> str | None:
    """The cluster token as Ray looks for it: $RAY_AUTH_TOKEN, the file $RAY_AUTH_TOKEN_PATH,
    then ~/.ray/auth_token."""
    import os

    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    path = Path(os.environ.get(TOKEN_PATH_ENV) or Path.home() / ".ray" / "auth_token")
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def auth_headers() -> dict[str, str]:
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def probe_job_api(address: str, headers: dict[str, str]) -> None:
    """GET /api/version: a Ray dashboard answers JSON; anything else is named in one line."""
    import urllib.error
    import urllib.request
    from http.client import HTTPException

    not_jobs = (
        f"{address} is not a Ray dashboard's job API; jobs need the dashboard address (e.g. "
        f"{DEFAULT_ADDRESS}), while the GCS port (e.g. 127.0.0.1:6379) is for "
        "`mixprec analyze --address`"
    )
    request = urllib.request.Request(f"{address.rstrip('/')}/api/version", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            body = json.loads(answer.read(65536).decode("utf-8"))
    except urllib.error.HTTPError as err:
        if err.code == 401:
            raise MixprecError(
                f"the Ray cluster at {address} uses token authentication and no token was "
                f"found: set {TOKEN_ENV}, or {TOKEN_PATH_ENV} to a file holding it (default "
                "~/.ray/auth_token; `ray get-auth-token` on the head prints it)"
            ) from None
        if err.code == 403:
            raise MixprecError(
                f"the Ray cluster at {address} refused the token from {token_origin()}; "
                "give the head's token (`ray get-auth-token` on the head prints it)"
            ) from None
        raise MixprecError(not_jobs) from None
    except (urllib.error.URLError, HTTPException, OSError, ValueError):
        raise MixprecError(not_jobs) from None
    if not isinstance(body, dict) or "ray_version" not in body:
        raise MixprecError(not_jobs)


def token_origin() -> str:
    import os

    if os.environ.get(TOKEN_ENV):
        return f"${TOKEN_ENV}"
    return os.environ.get(TOKEN_PATH_ENV) or "~/.ray/auth_token"


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
        deadline, waiting = time.monotonic() + AGENT_WAIT_S, False
        while True:
            try:
                job_id: str = jobs.submit_job(
                    entrypoint=f"{shlex.quote(interpreter)} -m mixprec run config.toml",
                    runtime_env={"working_dir": folder, "env_vars": env_vars},
                    metadata={"mixprec_run": str(shipped.output), "model": config.model},
                )
                return job_id
            except RuntimeError as err:
                no_agent = "No available agent" in str(err)
                if not no_agent or time.monotonic() > deadline:
                    reason = f"the cluster at {address} refused the job: {last_line(str(err))}"
                    if no_agent:  # its agent failed to start, e.g. another Ray holds its port
                        reason += f" (no job agent registered within {AGENT_WAIT_S:.0f} s)"
                    raise MixprecError(reason) from None
                if not waiting:
                    sys.stderr.write(f"mixprec: waiting up to {AGENT_WAIT_S:.0f} s for the job "
                                     f"agent of {address} to start\n")  # fmt: skip
                    waiting = True
                time.sleep(2.0)


def job_error(info: JobInfo | None, logs: str) -> str:
    """Why a job failed: mixprec's own one-line error if it printed one, else Ray's message."""
    ours = [line for line in logs.splitlines() if line.startswith("mixprec: ")]
    if ours:
        return ours[-1].removeprefix("mixprec: ")
    if info is not None and info.message.strip():
        return last_line(info.message)
    return last_line(logs)


def last_line(text: str) -> str:
    """The last non-empty line: a traceback's message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "(no message)"


def _info(details: Any) -> JobInfo:
    status = getattr(details.status, "value", str(details.status))
    return JobInfo(
        details.submission_id or details.job_id or "?",
        str(status),
        details.entrypoint,
        details.message or "",
        details.start_time,
        str((details.metadata or {}).get("mixprec_run", "")),
    )


def list_jobs(address: str = DEFAULT_ADDRESS) -> list[JobInfo]:
    """Every job on the cluster, newest first."""
    listed = [_info(d) for d in client(address).list_jobs()]
    return sorted(listed, key=lambda info: info.start_time or 0, reverse=True)


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
