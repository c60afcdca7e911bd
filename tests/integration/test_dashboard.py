"""The dashboard through Streamlit's AppTest on a small real run; its view helpers directly."""

from __future__ import annotations

import base64
import json
import math
import shutil
import signal
import socket
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pytest
from streamlit.testing.v1 import AppTest

from mixprec.config import parse_config
from mixprec.dashboard import browser, exports, palette, plans, views
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


def test_runs_page_lists_the_store(app: AppTest, store: Path) -> None:
    app.run()
    assert not app.exception
    frame = app.dataframe[0].value
    assert set(frame["name"]) == {"digits", "half", "old"}
    assert list(frame.loc[frame["name"] == "old", "status"]) == ["unreadable"]
    assert app.selectbox(key="run_picker").options == list(frame["name"])
    digits = frame.set_index("name").loc["digits"]
    assert digits["schemes"] == "w:mxfp4, w:int8" and digits["budgets"] == "5bits, 6bits"
    assert digits["best measured"].startswith("accuracy ") and digits["why"] == ""
    app.selectbox(key="run_picker").set_value("digits").run()
    assert app.multiselect(key="compare_picker").options == ["half", "old"]
    downloads = {b.proto.label for b in app.get("download_button")}
    assert downloads == {"Download report.md", "Download the run (zip)"}


def test_run_archive_holds_the_run_but_not_its_exports(store: Path) -> None:
    import io
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(views.run_archive(store / "digits"))).namelist()
    assert "digits/manifest.json" in names and "digits/report.md" in names
    assert "digits/plans/ilp-6bits.json" in names
    assert not [n for n in names if "/exports/" in n or n.endswith(".lock")]


def test_sensitivity_heatmap_of_the_picked_run(app: AppTest, store: Path) -> None:
    app.run()
    app.selectbox(key="run_picker").select("digits").run()
    app.sidebar.radio(key="page").set_value("Sensitivity").run()
    assert not app.exception and not app.warning
    picker = app.selectbox(key="estimator")
    assert picker.options == ["fisher", "isolation"]
    # it opens on the estimator the run's plans were made from
    assert picker.value == plans.plans_estimator(store / "digits") == "isolation"
    picker.set_value("fisher").run()
    app.selectbox(key="level").set_value("block").run()
    assert not app.exception
    assert app.caption[0].value.startswith(
        "digits: fisher scores, block level (the run's plans were made from isolation)"
    )
    rollup = app.selectbox(key="rollup_scheme")
    assert rollup.options == ["w:int8", "w:mxfp4"]
    assert rollup.value == "w:mxfp4"  # the most sensitive scheme, where units differ most
    charts = app.get("plotly_chart")
    assert len(charts) == 3  # heatmap, block roll-up, predicted vs measured
    heatmap = json.loads(charts[0].proto.spec)
    blocks = views.model_order(views.unit_order(store / "digits"))
    shown = [u for u in blocks if u in heatmap["data"][0]["y"]]
    assert heatmap["layout"]["yaxis"]["tickvals"] == heatmap["data"][0]["y"] == shown
    assert heatmap["layout"]["yaxis"]["title"]["text"] == "unit (model order)"
    assert "block roll-up under w:mxfp4" in charts[1].proto.spec
    scatter = json.loads(charts[2].proto.spec)
    for trace in scatter["data"]:
        assert trace["marker"]["color"] == palette.method_style(trace["name"])[0]
    rho = app.caption[1].value
    plans_frame = plans.plans_frame(store / "digits")
    _, expected = views.predicted_vs_measured(plans_frame, "accuracy")
    assert rho.startswith(f"Spearman rank correlation over 6 plans: {expected:.3f}. Higher ")
    assert "a negative correlation near -1 means the scores rank plans as measured" in rho


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


def test_budget_slider_re_solves_within_the_budget_and_measures(app: AppTest, store: Path) -> None:
    from mixprec.allocation import problem_from_run
    from mixprec.dashboard import budget

    app.run()
    app.selectbox(key="run_picker").select("digits").run()
    app.sidebar.radio(key="page").set_value("Budget").run()
    assert not app.exception and not app.warning
    assert app.selectbox(key="budget_estimator").value == "isolation"  # what the plans used
    slider = app.slider(key="budget_bits")
    low, high = budget.budget_range(problem_from_run(store / "digits", "isolation"))
    assert (slider.min, slider.max) == (math.ceil(low * 100) / 100, math.floor(high * 100) / 100)
    assert slider.max < 9  # the largest quantized plan (all int8), not FP32 kept everywhere
    seen = set()
    for bits in (slider.min, 5.0, 6.5, slider.max):
        app.slider(key="budget_bits").set_value(bits).run()
        assert not app.exception
        shown = float(app.metric[1].value)
        assert shown <= bits + 1e-3  # the plan respects the slider's budget
        assert app.caption[0].value.startswith(f"digits: ilp plan within {bits:.2f} bits")
        assert app.number_input(key="budget_bits_typed").value == bits  # the two agree
        seen.add(app.metric[0].value)
    assert len(seen) > 1  # a bigger budget gives another plan
    app.number_input(key="budget_bits_typed").set_value(5.5).run()  # typed: the slider follows
    assert app.slider(key="budget_bits").value == 5.5 and float(app.metric[1].value) <= 5.5
    bars = json.loads(app.get("plotly_chart")[0].proto.spec)
    assert {t["name"]: t["marker"]["color"] for t in bars["data"]} == palette.scheme_colours(
        [t["name"] for t in bars["data"]]
    )  # one colour per format, the registry's
    references = app.dataframe[0].value
    assert references["reference"].iloc[0] == "FP (every unit kept)"
    uniform = references[references["reference"].str.startswith("uniform ")]
    assert list(uniform["reference"]) == ["uniform w:mxfp4"]  # int8 does not fit 5.5 bits
    assert (uniform["bits/weight"] <= 5.5).all()
    app.selectbox(key="budget_method").set_value("greedy").run()
    assert app.caption[0].value.startswith("digits: greedy plan within 5.50 bits")
    app.radio(key="budget_unit").set_value("MB").run()
    size = app.slider(key="budget_MB")
    target = round((size.min + size.max) / 2, 4)
    size.set_value(target).run()
    assert not app.exception and float(app.metric[2].value) <= target + 1e-3
    assert app.caption[0].value.startswith(f"digits: greedy plan within {target:.4f} MB")
    app.radio(key="budget_unit").set_value("bits per weight").run()
    app.button(key="measure").click().run()
    measured = measured_table(app)
    assert 0 < float(measured["accuracy"].iloc[0]) <= 1
    assert measured["status"].iloc[0].startswith("measured in ")


def numbers(data: Any) -> list[float]:
    """A Plotly JSON array: a list, or a typed array ({"dtype", "bdata": base64})."""
    if isinstance(data, dict):
        raw = base64.b64decode(data["bdata"])
        return [float(x) for x in np.frombuffer(raw, dtype=np.dtype(data["dtype"]))]
    return [float(x) for x in data]


def measured_table(app: AppTest) -> pd.DataFrame:
    """The Budget page's table of measured plans, once the background measurement is done."""
    for _ in range(120):  # bounded: 60 s
        assert not app.exception
        tables = [t.value for t in app.dataframe if "status" in t.value.columns]
        if tables and not tables[0]["status"].str.contains("batches|waiting").any():
            return tables[0]
        time.sleep(0.5)
        app.run()
    raise AssertionError("the measurement did not finish in 60 s")


def test_a_plan_saved_from_the_budget_page_is_a_plan_of_the_run(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(store / "digits", tmp_path / "digits")
    before = {p.name for p in (tmp_path / "digits" / "plans").iterdir()}
    monkeypatch.setenv(views.RUNS_ENV, str(tmp_path))
    app = AppTest.from_file(str(APP), default_timeout=60)
    open_page(app, "Budget")
    app.number_input(key="budget_bits_typed").set_value(5.25).run()
    app.button(key="measure").click().run()
    measured = measured_table(app)
    app.button(key="save_plan").click().run()
    assert not app.exception
    saved = tmp_path / "digits" / "plans" / "saved-ilp-5.25bits.json"
    assert app.success[0].value.startswith("Saved as plans/saved-ilp-5.25bits.json")
    plan = PrecisionPlan.load(saved)
    assert plan.predicted["bits_per_weight"] <= 5.25
    result = json.loads((tmp_path / "digits" / "eval" / saved.name).read_text())
    assert result["metrics"]["accuracy"] == pytest.approx(float(measured["accuracy"].iloc[0]))
    app.button(key="save_plan").click().run()  # the same plan again: the same file
    assert {p.name for p in (tmp_path / "digits" / "plans").iterdir()} == before | {saved.name}
    app.button(key="measure_fp").click().run()  # the FP reference, in the background too
    for _ in range(120):  # bounded: 60 s
        assert not app.exception
        references = next(t.value for t in app.dataframe if "reference" in t.value.columns)
        if "measured accuracy" in references.columns:
            break
        time.sleep(0.5)
        app.run()
    fp = json.loads((tmp_path / "digits" / "reference" / "fp.json").read_text())["metrics"]
    assert references["measured accuracy"].iloc[0] == pytest.approx(fp["accuracy"])
    app.sidebar.radio(key="page").set_value("Pareto").run()
    chart = app.get("plotly_chart")[0].proto.spec
    assert "saved-ilp-5.25bits" in chart and f"FP (unquantized): {fp['accuracy']:.4g}" in chart
    app.sidebar.radio(key="page").set_value("Sensitivity").run()
    assert any(
        f"FP (unquantized): {fp['accuracy']:.4g}" in chart.proto.spec
        for chart in app.get("plotly_chart")
    )  # the predicted-vs-measured scatter's line
    app.sidebar.radio(key="page").set_value("Export").run()
    assert app.selectbox(key="export_plan").value == "saved-ilp-5.25bits"  # opens on it


def test_budget_helpers(store: Path) -> None:
    from mixprec.allocation import problem_from_run
    from mixprec.dashboard import budget

    analysis = problem_from_run(store / "digits", "isolation")
    low, high = budget.budget_range(analysis)
    assert 4 < low < 5 and 8 < high < 9  # everything mxfp4 .. everything int8 (not FP32 kept)
    tight, roomy = (budget.plan_within(analysis, b) for b in (low, high))
    assert tight.predicted["bits_per_weight"] <= low + 1e-9
    assert roomy.predicted["score"] <= tight.predicted["score"]
    assert budget.plan_within(analysis, high, method="greedy").provenance["strategy"] == "greedy"
    bars = budget.plan_bars(analysis, tight)
    assert list(bars["unit"]) == list(analysis.costs.units) and set(bars["scheme"]) == {"w:mxfp4"}


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
    scatter = json.loads(chart)
    for trace in scatter["data"][:3]:  # one per method, in the method's fixed style
        assert (trace["marker"]["color"], trace["marker"]["symbol"]) == palette.method_style(
            trace["name"]
        )
    ilp_trace = next(t for t in scatter["data"] if t["name"] == "ilp")
    low, high = plans.intervals(store / "digits", "accuracy")[ilp_trace["hovertext"][0]]
    value = numbers(ilp_trace["y"])[0]  # its error bar is the measurement's 95% interval
    assert numbers(ilp_trace["error_y"]["array"])[0] == pytest.approx(high - value)
    assert numbers(ilp_trace["error_y"]["arrayminus"])[0] == pytest.approx(value - low)
    front = plans.frontier(frame, "accuracy")
    if len(front) > 1:
        assert scatter["data"][-1]["name"] == "front (best at each size)"
        assert scatter["data"][-1]["x"] == list(front["bits/weight"])
    # the plan map: every layer (model order) x every plan, each cell its plan's format
    planmap = json.loads(app.get("plotly_chart")[1].proto.spec)["data"]
    layers = list(PrecisionPlan.load(store / "digits" / "plans" / "ilp-5bits.json").assignment)
    assert planmap[0]["y"] == layers and len(planmap[0]["x"]) == 6
    column = planmap[0]["x"].index(next(x for x in planmap[0]["x"] if x.startswith("ilp-5bits")))
    ilp = PrecisionPlan.load(store / "digits" / "plans" / "ilp-5bits.json")
    assert [row[column] for row in planmap[0]["text"]] == [str(ilp.assignment[k]) for k in layers]
    assert {t["name"]: t["marker"]["color"] for t in planmap[1:]} == palette.scheme_colours(
        [t["name"] for t in planmap[1:]]
    )
    app.checkbox(key="map_changed").check().run()
    changing = plans.changed_only(plans.plan_map(plans.plan_documents(store / "digits")))
    assert json.loads(app.get("plotly_chart")[1].proto.spec)["data"][0]["y"] == list(changing.index)
    app.selectbox(key="diff_first").set_value("ilp-5bits").run()
    app.selectbox(key="diff_second").set_value("ilp-6bits").run()
    first, second = (PrecisionPlan.load(store / "digits" / "plans" / f"ilp-{b}.json")
                     for b in ("5bits", "6bits"))  # fmt: skip
    changed = sum(first.assignment[k] != second.assignment[k] for k in first.assignment)
    said = [c.value for c in app.caption if "layers differ" in c.value]
    assert said[0].startswith(f"{changed} of {len(first.assignment)} layers differ")
    diff = app.dataframe[0].value
    assert int(diff["differs"].sum()) == changed and len(diff) == len(first.assignment)
    app.checkbox(key="diff_changed").check().run()
    assert len(app.dataframe[0].value) == changed


def test_export_downloads_written_files_and_writes_missing_ones(app: AppTest, store: Path) -> None:
    open_page(app, "Export")
    assert app.selectbox(key="export_plan").value == "ilp-5bits"  # the config's first plan
    app.selectbox(key="export_plan").set_value("ilp-6bits").run()
    overview = app.dataframe[0].value.set_index("export")
    written = (store / "digits" / "exports" / "ilp-6bits.json").stat().st_size
    assert overview.loc["plan JSON", "size"] == exports.readable_size(written)  # json only
    assert (overview.drop("plan JSON")["size"] == "not written").all()
    downloads = {b.proto.label for b in app.get("download_button")}
    assert downloads == {"Download plan JSON", "Download everything of this plan (zip)"}
    assert app.code[0].value.startswith('{\n  "model": "digits-cnn"')  # the JSON's preview
    app.button(key="write_compressed-tensors").click().run()  # the CNN's plan: w:mxfp4, w:int8
    assert not app.exception and "writes transformers checkpoints; the plan's model is a" in \
        app.warning[0].value  # fmt: skip
    app.button(key="write_llamacpp").click().run()  # no llama.cpp names for a CNN
    assert not app.exception and app.warning[0].value.startswith("llama.cpp overrides: ")


def test_export_helpers_size_notes_and_bundle(store: Path, tmp_path: Path) -> None:
    import io
    import zipfile

    from mixprec.store import RunFolder

    run = tmp_path / "digits"
    shutil.copytree(store / "digits", run)
    plan = run / "plans" / "ilp-6bits.json"
    folder = RunFolder(run)
    folder.mark("export ilp-6bits gguf", "done", "x", note="warning: token_embd left in F16")
    found = {e.target: e for e in exports.export_files(run, plan)}
    assert found["json"].size == (run / "exports" / "ilp-6bits.json").stat().st_size
    assert found["gguf"].size is None and found["gguf"].note.endswith("left in F16")
    checkpoint = folder.export_path(plan, "modelopt")
    (checkpoint / "sub").mkdir(parents=True)
    (checkpoint / "sub" / "model.safetensors").write_bytes(b"x" * 2500)
    assert exports.size_of(checkpoint) == 2500 and exports.readable_size(2500) == "2.5 kB"
    assert exports.preview(exports.export_files(run, plan)[2]) == "sub/model.safetensors  2.5 kB"
    names = set(zipfile.ZipFile(io.BytesIO(exports.plan_bundle(run, plan))).namelist())
    assert names == {"ilp-6bits/plans/ilp-6bits.json", "ilp-6bits/eval/ilp-6bits.json",
                     "ilp-6bits/exports/ilp-6bits.json",
                     "ilp-6bits/exports/ilp-6bits-modelopt/sub/model.safetensors"}  # fmt: skip
    assert exports.default_plan(run, ["greedy-5bits", "uniform-6bits"]) == "greedy-5bits"
    assert exports.default_plan(run, ["saved-ilp-5.5bits"]) == "saved-ilp-5.5bits"


def test_heatmap_frames_order_and_hover(store: Path) -> None:
    scores = views.load_scores(store / "digits")
    order = views.unit_order(store / "digits")
    heatmap = views.heatmap_frames(scores, "isolation", "layer", order)
    colour, text = heatmap.colour, heatmap.text
    assert list(colour.columns) == ["w:int8", "w:mxfp4"]  # most bits first
    layers = set(scores.loc[scores["level"] == "layer", "unit"])
    assert list(colour.index) == [u for u in order if u in layers]  # the model's order
    row = scores[(scores["estimator"] == "isolation") & (scores["level"] == "layer")].iloc[0]
    assert colour.loc[row["unit"], row["scheme"]] == pytest.approx(math.log10(row["score"]))
    assert text.loc[row["unit"], row["scheme"]].startswith(f"{row['score']:.3g} [")
    with pytest.raises(MixprecError, match="no hessian scores at the layer level"):
        views.heatmap_frames(scores, "hessian", "layer")


def test_heatmap_marks_units_the_task_never_uses() -> None:
    rows = [{"unit": unit, "level": "layer", "scheme": scheme, "estimator": "fisher",
             "score": score, "ci_low": score, "ci_high": score, "cost_bytes": cost}
            for unit, score in (("layer.10", 2e-3), ("layer.2", 1e-3), ("pooler", 0.0))
            for scheme, cost in (("w:int8", 8), ("w:int4", 4))]  # fmt: skip
    heatmap = views.heatmap_frames(pd.DataFrame(rows), "fisher", "layer")
    assert list(heatmap.colour.index) == ["layer.2", "layer.10", "pooler"]  # numbers as numbers
    assert heatmap.unused == ["pooler"]
    assert heatmap.colour.loc["pooler"].isna().all()  # blank, not the darkest cell
    assert heatmap.colour.loc["layer.2", "w:int8"] == pytest.approx(-3)
    assert views.model_order(["b", "a", "c.1"], ["c.1", "b"]) == ["c.1", "b", "a"]


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
    log_path = tmp_path / "dashboard.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(browser.dashboard_command(store, port), stdout=log,
                                  stderr=subprocess.STDOUT)  # fmt: skip
        browser.wait_for_health(server, port, log_path)
        assert psutil.Process(server.pid).children(), "the CLI serves through a child process"
        stop_and_check_children(server, how)
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the port still answers"


def test_pages_in_headless_chromium(store: Path, tmp_path: Path) -> None:
    """Every page opens by its deep link and draws with no error element (a screenshot of each
    lands in experiments/results/screenshots/); on Budget the slider moves with the keyboard,
    a typed budget moves the slider, and the plan saved is a plan file of the run."""
    shutil.copytree(store / "digits", tmp_path / "store" / "digits")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    served = browser.served(tmp_path / "store", tmp_path / "dashboard.log")
    with served as url, browser.chromium() as page:
        for name in PAGES:
            browser.open_page(page, url, "digits", name)
            page.wait_for_timeout(1000)  # let the chart finish drawing
            assert page.locator('[data-testid="stException"]').count() == 0, name
            page.screenshot(path=str(SCREENSHOTS / f"{name.lower()}.png"), full_page=True)
        browser.open_page(page, url, "digits", "Export")  # downloads are made when clicked
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Download everything of this plan (zip)").click()
        bundle = zipfile.ZipFile(download.value.path())
        assert set(bundle.namelist()) == {"ilp-5bits/plans/ilp-5bits.json",
                                          "ilp-5bits/eval/ilp-5bits.json",
                                          "ilp-5bits/exports/ilp-5bits.json"}  # fmt: skip
        browser.open_page(page, url, "digits", "Budget")
        slider = page.get_by_role("slider")
        typed = page.get_by_label("or type it", exact=False)
        start = float(slider.input_value())
        slider.focus()
        for step in (1, 2, 3):  # one key at a time, as a user reads the result of each
            slider.press("ArrowRight")
            expect_value(typed, f"{start + 0.01 * step:.2f}")  # the typed field follows
            browser.wait_until_idle(page)
        typed.fill("5.25")
        typed.press("Enter")
        page.wait_for_selector("text=ilp plan within 5.25 bits", timeout=60_000)
        expect_value(slider, "5.25")
        browser.wait_until_idle(page)
        page.get_by_role("button", name="Save this plan to the run").click()
        page.wait_for_selector("text=Saved as plans/saved-ilp-5.25bits.json", timeout=60_000)
    plan = PrecisionPlan.load(tmp_path / "store" / "digits" / "plans" / "saved-ilp-5.25bits.json")
    assert plan.predicted["bits_per_weight"] <= 5.25 and plan.provenance["strategy"] == "ilp"
    for name in PAGES:
        assert (SCREENSHOTS / f"{name.lower()}.png").stat().st_size > 10_000


def expect_value(field: Any, value: str, timeout_s: float = 60.0) -> None:
    """Until the input `field` shows `value` (bounded): the page re-runs after each key."""
    deadline = time.monotonic() + timeout_s
    while field.input_value() != value:
        assert time.monotonic() < deadline, f"{field.input_value()!r} is not {value!r}"
        time.sleep(0.2)


PAGES = ("Runs", "Sensitivity", "Budget", "Pareto", "Export", "Jobs")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "experiments" / "results" / "screenshots"
