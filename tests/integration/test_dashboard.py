"""The dashboard through Streamlit's AppTest on a small real run; its view helpers directly."""

from __future__ import annotations

import json
import math
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
from streamlit.testing.v1 import AppTest

from mixprec.config import parse_config
from mixprec.dashboard import plans, views
from mixprec.errors import MixprecError
from mixprec.pipeline import run_pipeline
from mixprec.plan import PrecisionPlan
from tests.helpers.ray_head import free_port

APP = Path(views.__file__).with_name("app.py")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("store")
    config = {
        "model": "digits-cnn", "output": str(root / "digits"), "schemes": ["w:mxfp4", "w:int8"],
        "estimators": ["isolation", "fisher"], "levels": ["layer", "block"],
        "budgets": ["5bits", "6bits"], "methods": ["ilp", "greedy", "uniform"], "exports": ["json"],
    }  # fmt: skip
    run_pipeline(parse_config(config), say=lambda _: None, progress=False)
    (root / "half").mkdir()  # a run whose analysis never finished
    shutil.copy(root / "digits" / "manifest.json", root / "half" / "manifest.json")
    old = json.loads((root / "digits" / "manifest.json").read_text())
    (root / "old").mkdir()  # a run written by an older store schema
    (root / "old" / "manifest.json").write_text(json.dumps({**old, "store_version": 0}))
    return root


@pytest.fixture
def app(store: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AppTest]:
    monkeypatch.setenv(views.RUNS_ENV, str(store))
    yield AppTest.from_file(str(APP), default_timeout=60)


def test_runs_page_lists_the_store(app: AppTest) -> None:
    app.run()
    assert not app.exception
    frame = app.dataframe[0].value
    assert set(frame["name"]) == {"digits", "half", "old"}
    assert list(frame.loc[frame["name"] == "old", "status"]) == ["unreadable"]
    assert app.selectbox(key="run_picker").options == list(frame["name"])


def test_sensitivity_heatmap_of_the_picked_run(app: AppTest, store: Path) -> None:
    app.run()
    app.selectbox(key="run_picker").select("digits").run()
    app.sidebar.radio(key="page").set_value("Sensitivity").run()
    assert not app.exception and not app.warning
    assert app.selectbox(key="estimator").options == ["fisher", "isolation"]
    app.selectbox(key="level").set_value("block").run()
    assert not app.exception
    assert app.caption[0].value.startswith("digits: fisher scores, block level")
    assert app.selectbox(key="rollup_scheme").options == ["w:int8", "w:mxfp4"]
    charts = app.get("plotly_chart")
    assert len(charts) == 3  # heatmap, block roll-up, predicted vs measured
    assert "block roll-up under w:int8" in charts[1].proto.spec
    rho = app.caption[1].value
    assert rho.startswith("Spearman rank correlation over 6 plans: ")
    plans_frame = plans.plans_frame(store / "digits")
    _, expected = views.predicted_vs_measured(plans_frame, "accuracy")
    assert rho.endswith(f"{expected:.3f}")


def test_a_half_finished_run_and_an_empty_store_explain_themselves(
    app: AppTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.run()
    app.selectbox(key="run_picker").select("half").run()
    app.sidebar.radio(key="page").set_value("Sensitivity").run()
    assert not app.exception and "has no scores yet" in app.warning[0].value
    for page in ("Sensitivity", "Budget", "Pareto", "Export"):
        app.sidebar.radio(key="page").set_value("Runs").run()
        app.selectbox(key="run_picker").select("old").run()
        app.sidebar.radio(key="page").set_value(page).run()
        assert not app.exception
        assert "was written by store version 0; this mixprec reads 1" in app.warning[0].value
    monkeypatch.setenv(views.RUNS_ENV, str(tmp_path / "empty"))
    empty = AppTest.from_file(str(APP), default_timeout=60)
    empty.run()
    assert not empty.exception and "No runs in" in empty.info[0].value


def test_budget_slider_re_solves_within_the_budget_and_measures(app: AppTest) -> None:
    app.run()
    app.selectbox(key="run_picker").select("digits").run()
    app.sidebar.radio(key="page").set_value("Budget").run()
    assert not app.exception and not app.warning
    slider = app.slider(key="budget_bits")
    seen = set()
    for bits in (slider.min, 5.0, 6.5, slider.max):
        app.slider(key="budget_bits").set_value(bits).run()
        assert not app.exception
        shown = float(app.metric[1].value)
        assert shown <= bits + 1e-3  # the plan respects the slider's budget
        assert app.caption[0].value.startswith(f"digits: ILP plan within {bits:.2f} bits")
        assert len(app.get("plotly_chart")) == 1
        seen.add(app.metric[0].value)
    assert len(seen) > 1  # a bigger budget gives another plan
    app.radio(key="budget_unit").set_value("MB").run()
    size = app.slider(key="budget_MB")
    target = round((size.min + size.max) / 2, 4)
    size.set_value(target).run()
    assert not app.exception and float(app.metric[2].value) <= target + 1e-3
    assert app.caption[0].value.startswith(f"digits: ILP plan within {target:.4f} MB")
    app.radio(key="budget_unit").set_value("bits per weight").run()
    app.button(key="measure").click().run()
    assert not app.exception
    measured = app.dataframe[0].value
    assert 0 < float(measured["accuracy"].iloc[0]) <= 1


def test_budget_helpers(store: Path) -> None:
    from mixprec.allocation import problem_from_run
    from mixprec.dashboard import budget

    analysis = problem_from_run(store / "digits", "isolation")
    low, high = budget.budget_range(analysis)
    assert 4 < low < 5 and high == 32  # everything mxfp4 .. everything kept in FP32
    tight, roomy = (budget.plan_within(analysis, b) for b in (low, high))
    assert tight.predicted["bits_per_weight"] <= low + 1e-9
    assert roomy.predicted["score"] <= tight.predicted["score"]
    bars = budget.plan_bars(analysis, tight)
    assert list(bars["unit"]) == list(analysis.costs.units) and set(bars["scheme"]) == {"w:mxfp4"}
    weights = analysis.costs.params / analysis.costs.params.sum()
    assert float((bars["bits"] * weights).sum()) == pytest.approx(
        tight.predicted["bits_per_weight"]
    )


def open_page(app: AppTest, page: str) -> None:
    app.run()
    app.selectbox(key="run_picker").select("digits").run()
    app.sidebar.radio(key="page").set_value(page).run()
    assert not app.exception


def test_pareto_shows_every_plan_and_diffs_two(app: AppTest, store: Path) -> None:
    open_page(app, "Pareto")
    assert not app.warning
    frame = plans.plans_frame(store / "digits")
    assert set(frame["plan"]) == {f"{m}-{b}" for m in ("ilp", "greedy", "uniform")
                                  for b in ("5bits", "6bits")}  # fmt: skip
    assert set(frame["method"]) == {"ilp", "greedy", "uniform"}
    assert "accuracy" in app.selectbox(key="pareto_metric").options
    chart = app.get("plotly_chart")[0].proto.spec
    for name in frame["plan"]:
        assert name in chart  # every plan is a hover name
    app.selectbox(key="diff_first").set_value("ilp-5bits").run()
    app.selectbox(key="diff_second").set_value("ilp-6bits").run()
    first, second = (PrecisionPlan.load(store / "digits" / "plans" / f"ilp-{b}.json")
                     for b in ("5bits", "6bits"))  # fmt: skip
    changed = sum(first.assignment[k] != second.assignment[k] for k in first.assignment)
    assert app.caption[0].value.startswith(f"{changed} of {len(first.assignment)} layers differ")
    diff = app.dataframe[0].value
    assert int(diff["differs"].sum()) == changed


def test_export_downloads_written_files_and_writes_missing_ones(app: AppTest, store: Path) -> None:
    open_page(app, "Export")
    app.selectbox(key="export_plan").set_value("ilp-6bits").run()
    downloads = {b.proto.label for b in app.get("download_button")}
    assert downloads == {"Download plan JSON"}  # the run exported json only
    app.button(key="write_compressed-tensors").click().run()  # the CNN's plan: w:mxfp4, w:int8
    assert not app.exception and "writes transformers checkpoints; the plan's model is a" in \
        app.warning[0].value  # fmt: skip
    app.button(key="write_llamacpp").click().run()  # no llama.cpp names for a CNN
    assert not app.exception and app.warning[0].value.startswith("llama.cpp overrides: ")


def test_heatmap_frames_order_and_hover(store: Path) -> None:
    scores = views.load_scores(store / "digits")
    colour, text = views.heatmap_frames(scores, "isolation", "layer")
    assert list(colour.columns) == ["w:int8", "w:mxfp4"]  # most bits first
    assert list(colour.index) == list(dict.fromkeys(scores[scores["level"] == "layer"]["unit"]))
    row = scores[(scores["estimator"] == "isolation") & (scores["level"] == "layer")].iloc[0]
    assert colour.loc[row["unit"], row["scheme"]] == pytest.approx(math.log10(row["score"]))
    assert text.loc[row["unit"], row["scheme"]].startswith(f"{row['score']:.3g} [")
    with pytest.raises(MixprecError, match="no hessian scores at the layer level"):
        views.heatmap_frames(scores, "hessian", "layer")


@contextmanager
def served(store: Path, log_path: Path) -> Iterator[str]:
    """`mixprec dashboard` on a free loopback port, until its health check answers; stopped
    after."""
    port = free_port()
    command = [sys.executable, "-m", "mixprec", "dashboard", "--runs", str(store), "--port",
               str(port)]  # fmt: skip
    log = log_path.open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_health(server, port, log_path)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_and_check_children(server, signal.SIGTERM)
        log.close()


def wait_for_health(server: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert server.poll() is None, log_path.read_text()
        try:
            url = f"http://127.0.0.1:{port}/_stcore/health"
            with urllib.request.urlopen(url, timeout=2) as reply:
                assert reply.read() == b"ok"
            return
        except OSError:
            assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
            time.sleep(0.5)


def stop_and_check_children(server: subprocess.Popen[bytes], how: signal.Signals) -> None:
    """Signal the CLI; every process it started must be gone within 30 s."""
    children = psutil.Process(server.pid).children(recursive=True)
    server.send_signal(how)
    server.wait(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=30)
    for process in alive:
        process.kill()
    assert not alive, f"still running after the CLI stopped: {[p.pid for p in alive]}"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_the_server_stops_with_the_cli(store: Path, tmp_path: Path, how: signal.Signals) -> None:
    port = free_port()
    command = [sys.executable, "-m", "mixprec", "dashboard", "--runs", str(store), "--port",
               str(port)]  # fmt: skip
    log_path = tmp_path / "dashboard.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        wait_for_health(server, port, log_path)
        assert psutil.Process(server.pid).children(), "the CLI serves through a child process"
        stop_and_check_children(server, how)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the port still answers"


def test_cli_serves_the_app_on_loopback(store: Path, tmp_path: Path) -> None:
    with served(store, tmp_path / "dashboard.log") as url:
        assert url.startswith("http://127.0.0.1:")


def test_pages_render_in_headless_chromium(store: Path, tmp_path: Path) -> None:
    """Deep links open the Sensitivity and Budget pages; each draws its Plotly chart with no
    error element; the screenshots land in experiments/results/screenshots/."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).is_file(), (
        f"{CHROMIUM} is missing: `make test` installs Debian's chromium"
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with served(store, tmp_path / "dashboard.log") as url, sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for name, chart in (("Sensitivity", ".heatmaplayer"), ("Budget", ".barlayer")):
                page.goto(f"{url}/?run=digits&page={name}", timeout=60_000)
                page.wait_for_selector(f".js-plotly-plot {chart}", timeout=60_000)
                page.wait_for_timeout(1000)  # let the chart finish drawing
                assert page.locator('[data-testid="stException"]').count() == 0
                assert page.locator(f"h1:has-text('{name}'), h2:has-text('{name}')").count() >= 1
                page.screenshot(path=str(SCREENSHOTS / f"{name.lower()}.png"))
        finally:
            browser.close()
    for name in ("sensitivity", "budget"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 10_000


CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium keeps dialling out of a closed network.
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "experiments" / "results" / "screenshots"
