"""`mixprec submit` / `jobs` against a real Ray head (with its job API) on 127.0.0.1."""

from __future__ import annotations

import json
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from streamlit.testing.v1 import AppTest

from mixprec.errors import MixprecError
from mixprec.plan import PrecisionPlan
from tests.helpers.cli import run
from tests.helpers.ray_head import free_port, port_open, running_head


@dataclass(frozen=True)
class JobHead:
    address: str  # the dashboard's job API
    gcs: str  # host:port of the GCS
    process: subprocess.Popen[bytes]


@contextmanager
def job_head(log: Path, auth: dict[str, str] | None = None) -> Iterator[JobHead]:
    """A head node with its dashboard (the job API) bound to 127.0.0.1; stopped after."""
    port, dashboard = free_port(), free_port()
    ray_temp = tempfile.mkdtemp(prefix="mxr", dir="/tmp")  # Ray's socket paths must stay short
    extra = [
        f"--port={port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}", f"--temp-dir={ray_temp}",
    ]  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    try:
        with running_head(extra, log, lambda: port_open(dashboard), 120, auth) as head:
            yield JobHead(address, f"127.0.0.1:{port}", head)
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)


@pytest.fixture
def job_api(tmp_path: Path) -> Iterator[str]:
    with job_head(tmp_path / "ray-head.log") as head:
        yield head.address


def test_submit_runs_the_config_on_the_cluster(
    job_api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "store" / "job"
    config = tmp_path / "job.toml"
    config.write_text(
        f'model = "digits-cnn"\noutput = "{out}"\nschemes = ["w:mxfp4", "w:int8"]\n'
        'estimators = ["isolation"]\nlevels = ["layer"]\nbudgets = ["6bits"]\n'
        'methods = ["ilp"]\nexports = ["json"]\nworkers = 2\n'
    )  # workers: inside the job, the job's own cluster runs them
    code, stdout, err = run(["submit", str(config), "--address", job_api, "--wait",
                             "--timeout", "300"], capsys)  # fmt: skip
    assert code == 0, stdout + err
    job_id = stdout.split()[1]
    assert f"{job_id}: SUCCEEDED" in stdout
    plan = PrecisionPlan.load(out / "plans" / "ilp-6bits.json")
    assert plan.model == "digits-cnn" and plan.predicted["bits_per_weight"] <= 6
    assert json.loads((out / "manifest.json").read_text())["status"] == "finished"
    code, stdout, _ = run(["jobs", "status", job_id, "--address", job_api], capsys)
    assert code == 0 and "SUCCEEDED" in stdout
    code, stdout, _ = run(["jobs", "logs", job_id, "--address", job_api], capsys)
    assert code == 0 and "report.md" in stdout
    code, stdout, _ = run(["jobs", "list", "--address", job_api], capsys)
    assert code == 0 and job_id in stdout
    code, _, err = run(["jobs", "stop", "raysubmit_nope", "--address", job_api], capsys)
    assert code == 2 and "no job 'raysubmit_nope'" in err
    page = jobs_page(job_api)
    listed = page.dataframe[0].value.set_index("job")
    assert listed.loc[job_id, "status"] == "SUCCEEDED" and listed.loc[job_id, "run"] == str(out)
    page.selectbox(key="jobs_pick").set_value(job_id).run()
    assert not page.exception and "report.md" in page.code[0].value
    assert "jobs_stop" not in [b.key for b in page.button]  # nothing to stop once it ended
    a_running_job_shows_progress_and_stops(job_api, job_id)


def a_running_job_shows_progress_and_stops(address: str, finished: str) -> None:
    """A job that reports progress and then waits: listed first, its progress in its row,
    stopped from the page, then shown as STOPPED."""
    from mixprec import jobs
    from mixprec.progress import progress_line

    line = progress_line("scoring digits-cnn", 3, 10, 6.0)
    script = f"import time; print({line!r}, flush=True); time.sleep(300)"
    waiting = jobs.client(address).submit_job(
        entrypoint=f"{shlex.quote(sys.executable)} -c {shlex.quote(script)}"
    )
    page = jobs_page(address)
    for _ in range(60):  # the job starts, then prints its line: bounded, 1 s apart
        listed = page.dataframe[0].value
        if listed["progress"].iloc[0].startswith("scoring"):
            break
        time.sleep(1.0)
        page.run()
    assert list(listed["job"][:2]) == [waiting, finished]  # newest first
    assert listed["progress"].iloc[0] == "scoring digits-cnn: 3/10 cells, ETA 0:00:14"
    assert listed["status"].iloc[0] == "RUNNING" and listed["progress"].iloc[1] == "done"
    assert page.selectbox(key="jobs_pick").value == waiting
    page.button(key="jobs_stop").click().run()
    assert not page.exception and page.success[0].value == f"asked {address} to stop {waiting}"
    for _ in range(60):
        if page.dataframe[0].value["status"].iloc[0] == "STOPPED":
            break
        time.sleep(1.0)
        page.run()
    assert page.dataframe[0].value["status"].iloc[0] == "STOPPED"


def jobs_page(address: str) -> AppTest:
    """The dashboard's Jobs page pointed at `address`."""
    from mixprec.dashboard import views

    page = AppTest.from_file(str(Path(views.__file__).with_name("app.py")), default_timeout=60)
    page.run()
    page.sidebar.radio(key="page").set_value("Jobs").run()
    page.text_input(key="jobs_address").input(address).run()
    assert not page.exception
    return page


def test_the_jobs_page_explains_an_unreachable_address_and_a_bad_config(tmp_path: Path) -> None:
    page = jobs_page(f"http://127.0.0.1:{free_port()}")
    assert page.warning[0].value.startswith("cannot reach the Ray dashboard at http://127.0.0.1:")
    page.text_input(key="jobs_config").input(str(tmp_path / "absent.toml")).run()
    page.button(key="jobs_submit").click().run()
    assert not page.exception and "absent.toml" in page.warning[0].value


def test_unreachable_and_malformed_addresses() -> None:
    from mixprec import jobs

    with pytest.raises(
        MixprecError, match=r"cannot reach the Ray dashboard at http://127\.0\.0\.1:"
    ):
        jobs.list_jobs(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(MixprecError, match="is not http://HOST:PORT"):
        jobs.list_jobs("127.0.0.1:8265")


def job_config(tmp_path: Path, model: str = "digits-cnn", workers: int = 2) -> tuple[Path, Path]:
    out = tmp_path / "store" / "job"
    config = tmp_path / "job.toml"
    config.write_text(
        f'model = "{model}"\noutput = "{out}"\nschemes = ["w:int8"]\nestimators = ["isolation"]\n'
        f'levels = ["layer"]\nbudgets = ["9bits"]\nexports = ["json"]\nworkers = {workers}\n'
    )
    return config, out


def test_a_token_auth_cluster_takes_the_token_and_explains_a_missing_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "auth_token"
    token_file.write_text(secrets.token_hex(16))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
    with job_head(tmp_path / "ray-head.log", auth) as head:
        monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "absent"))
        code, _, err = run(["jobs", "list", "--address", head.address], capsys)
        assert code == 2 and "uses token authentication and no token was found" in err, err
        assert err.count("\n") == 1 and "RAY_AUTH_TOKEN" in err
        monkeypatch.setenv("RAY_AUTH_TOKEN", "wrong-token")
        code, _, err = run(["jobs", "list", "--address", head.address], capsys)
        assert code == 2 and "refused the token from $RAY_AUTH_TOKEN" in err, err
        monkeypatch.delenv("RAY_AUTH_TOKEN")
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token_file))
        config, out = job_config(tmp_path)
        code, stdout, err = run(["submit", str(config), "--address", head.address, "--wait",
                                 "--timeout", "300"], capsys)  # fmt: skip
        assert code == 0, stdout + err
        assert json.loads((out / "manifest.json").read_text())["status"] == "finished"
        page = jobs_page(head.address)
        assert len(page.dataframe[0].value) == 1


def test_a_failed_job_says_why_and_wrong_addresses_say_which_is_needed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with job_head(tmp_path / "ray-head.log") as head:
        config, _ = job_config(tmp_path, model=f"hf:{tmp_path / 'no-model'}", workers=0)
        code, stdout, err = run(["submit", str(config), "--address", head.address, "--wait",
                                 "--timeout", "300"], capsys)  # fmt: skip
        assert code == 2
        ours = [line for line in err.splitlines() if line.startswith("mixprec: ")]  # Ray logs too
        assert len(ours) == 1 and "ended FAILED: hf:" in ours[0], err
        assert "is not a model folder: no config.json" in ours[0]
        assert all(len(line) < 2000 for line in stdout.splitlines())
        code, _, err = run(["jobs", "list", "--address", f"http://{head.gcs}"], capsys)
        assert code == 2 and "is not a Ray dashboard's job API" in err and "GCS port" in err, err
        with other_http_server() as other:  # e.g. Streamlit's port
            code, _, err = run(["jobs", "list", "--address", other], capsys)
            assert code == 2 and "is not a Ray dashboard's job API" in err, err


def test_every_socket_of_the_loopback_head_is_on_loopback(tmp_path: Path) -> None:
    """The README's head command: no port of any of its processes on another interface."""
    with job_head(tmp_path / "ray-head.log") as head:
        tree = [psutil.Process(head.process.pid), *psutil.Process(head.process.pid).children(True)]
        pids = {p.pid for p in tree}
        listening = [c for c in psutil.net_connections(kind="inet")
                     if c.pid in pids and c.status == psutil.CONN_LISTEN]  # fmt: skip
        assert len(listening) >= 3  # GCS, dashboard, raylet at least
        loopback = ("127.0.0.1", "::1", "::ffff:127.0.0.1")
        exposed = [(c.laddr.ip, c.laddr.port) for c in listening if c.laddr.ip not in loopback]
        assert not exposed, f"listening beyond loopback: {exposed}"


@contextmanager
def other_http_server() -> Iterator[str]:
    """An HTTP server on loopback that is not Ray (answers 404 to everything)."""

    class NotRay(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotRay)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
