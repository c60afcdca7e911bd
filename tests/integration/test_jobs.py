"""`mixprec submit` / `jobs` against a real Ray head (with its job API) on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from mixprec.errors import MixprecError
from mixprec.plan import PrecisionPlan
from tests.integration.test_ray_cluster import free_port, running_head
from tests.unit.test_cli import run


def job_api_answers(address: str) -> bool:
    from mixprec import jobs

    try:
        jobs.list_jobs(address)
    except Exception:
        return False
    return True


@pytest.fixture
def job_api(tmp_path: Path) -> Iterator[str]:
    """A head node with its dashboard (the job API) bound to 127.0.0.1; stopped after."""
    port, dashboard = free_port(), free_port()
    ray_temp = tempfile.mkdtemp(prefix="mxr", dir="/tmp")  # Ray's socket paths must stay short
    extra = [
        f"--port={port}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}", f"--temp-dir={ray_temp}",
    ]  # fmt: skip
    address = f"http://127.0.0.1:{dashboard}"
    try:
        with running_head(extra, tmp_path / "ray-head.log", lambda: job_api_answers(address), 120):
            yield address
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)


def test_submit_runs_the_config_on_the_cluster(
    job_api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "store" / "job"
    config = tmp_path / "job.toml"
    config.write_text(
        f'model = "digits-cnn"\noutput = "{out}"\nschemes = ["w:mxfp4", "w:int8"]\n'
        'estimators = ["isolation"]\nlevels = ["layer"]\nbudgets = ["6bits"]\n'
        'methods = ["ilp"]\nexports = ["json"]\n'
    )
    code, stdout, _ = run(["submit", str(config), "--address", job_api, "--wait",
                           "--timeout", "300"], capsys)  # fmt: skip
    assert code == 0, stdout
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
    assert job_id in list(page.dataframe[0].value["job_id"])
    page.selectbox(key="jobs_pick").set_value(job_id).run()
    assert not page.exception and "report.md" in page.code[0].value


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
