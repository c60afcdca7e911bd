"""mixprec dashboard (Streamlit): the run store, each run's sensitivity heatmap and budget.

Started by `mixprec dashboard`, which binds 127.0.0.1 unless told otherwise; the run store
comes from the MIXPREC_RUNS environment variable (default: ./runs).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from mixprec.dashboard import budget, plans, views
from mixprec.errors import MixprecError
from mixprec.metrics import evaluate
from mixprec.plan import PrecisionPlan
from mixprec.store import RunFolder, read_manifest
from mixprec.units import LEVELS

st.set_page_config(page_title="mixprec", layout="wide")
ROOT = Path(os.environ.get(views.RUNS_ENV, "runs"))
TRUSTED = os.environ.get(views.TRUST_ENV) == "1"


@st.cache_data(show_spinner=False)
def cached_scores(run: str, modified: float) -> pd.DataFrame:
    """Keyed by the run and its score file's modification time."""
    return views.load_scores(Path(run))


def run_scores(run: Path) -> tuple[pd.DataFrame, float]:
    """The run's finished scores (cached) and the modification time they are keyed by."""
    modified = views.scores_file(run).stat().st_mtime
    return cached_scores(str(run), modified), modified


def runs_page() -> None:
    st.header("Runs")
    runs = views.runs_frame(ROOT)
    if runs.empty:
        st.info(f"No runs in {ROOT} yet: `mixprec run CONFIG` or `mixprec demo` makes one.")
        return
    st.dataframe(runs, hide_index=True, width="stretch")
    names = list(runs["name"])
    current = st.session_state.get("run")
    index = names.index(current) if current in names else 0
    st.session_state["run"] = st.selectbox("Run", names, index=index, key="run_picker")


def sensitivity_page() -> None:
    st.header("Sensitivity")
    run = picked_run()
    if run is None:
        return
    name = run.name
    try:
        scores, _ = run_scores(run)
    except MixprecError as err:
        st.warning(str(err))
        return
    left, right = st.columns(2)
    estimator = left.selectbox("Estimator", sorted(scores["estimator"].unique()), key="estimator")
    levels = [lv for lv in LEVELS if lv in set(scores["level"])]
    level = right.selectbox("Level", levels, key="level")
    try:
        colour, text = views.heatmap_frames(scores, estimator, level)
    except MixprecError as err:
        st.warning(str(err))
        return
    figure = go.Figure(
        go.Heatmap(
            z=colour.to_numpy(), x=list(colour.columns), y=list(colour.index),
            text=text.to_numpy(), hovertemplate="%{y}<br>%{x}<br>score %{text}<extra></extra>",
            colorscale="Viridis", colorbar={"title": "log10 score"},
        )
    )  # fmt: skip
    figure.update_layout(height=max(300, 18 * len(colour)), yaxis={"autorange": "reversed"})
    st.plotly_chart(figure, width="stretch")
    st.caption(f"{name}: {estimator} scores, {level} level; hover shows the 95% interval.")
    rollups = [lv for lv in reversed(LEVELS) if lv != "layer" and lv in levels]
    if rollups:
        schemes = list(colour.columns)
        scheme = st.selectbox("Scheme for the roll-up", schemes, key="rollup_scheme")
        for lv in rollups:
            bars = views.rollup_frame(scores, estimator, lv, scheme)
            chart = go.Figure(go.Bar(
                x=bars["unit"], y=bars["score"], name=lv,
                error_y={"type": "data", "symmetric": False,
                         "array": bars["ci_high"] - bars["score"],
                         "arrayminus": bars["score"] - bars["ci_low"]},
            ))  # fmt: skip
            chart.update_layout(title=f"{lv} roll-up under {scheme}", height=320)
            st.plotly_chart(chart, width="stretch")
    try:
        frame = cached_plans(str(run), plans_stamp(run))
    except MixprecError:
        return  # no plans yet: nothing measured to compare with
    metrics = plans.measured_metrics(frame)
    if metrics:
        metric = st.selectbox("Measured metric", metrics, key="scatter_metric")
        both, rho = views.predicted_vs_measured(frame, metric)
        scatter = px.scatter(both, x="predicted score", y=metric, hover_name="plan",
                             color="method", title="Plans: predicted vs measured")  # fmt: skip
        st.plotly_chart(scatter, width="stretch")
        st.caption(f"Spearman rank correlation over {len(both)} plans: {rho:.3f}")


@st.cache_resource(show_spinner="Loading the run's model and table...")
def cached_problem(run: str, modified: float, estimator: str) -> budget.AllocationProblem:
    """Keyed by the run, its score file's modification time and the estimator."""
    from mixprec.allocation import problem_from_run

    return problem_from_run(Path(run), estimator, trust_source=TRUSTED)


@st.cache_data(show_spinner=False)
def cached_plan(
    run: str, modified: float, estimator: str, value: float, unit: str
) -> dict[str, Any]:
    """The ILP plan within `value` `unit` as its JSON document (cached per slider position)."""
    problem = cached_problem(run, modified, estimator)
    return budget.plan_within(problem, value, unit).to_json()


def budget_page() -> None:
    st.header("Budget")
    run = picked_run()
    if run is None:
        return
    name = run.name
    try:
        scores, modified = run_scores(run)
        estimators = sorted(scores.loc[scores["level"] == "layer", "estimator"].unique())
        if not estimators:
            raise MixprecError(f"run {name} has no layer-level scores to plan from")
        left, right = st.columns(2)
        estimator = left.selectbox("Estimator", estimators, key="budget_estimator")
        label = right.radio("Budget in", list(budget.UNITS), horizontal=True, key="budget_unit")
        unit = budget.UNITS[label]
        problem = cached_problem(str(run), modified, estimator)
        low, high = budget.budget_range(problem, unit)
    except MixprecError as err:
        st.warning(str(err))
        return
    digits = 2 if unit == "bits" else 4
    low, high = math.ceil(low * 10**digits) / 10**digits, math.floor(high * 10**digits) / 10**digits
    start = min(max(DEFAULT_BITS, low), high) if unit == "bits" else round((low + high) / 2, digits)
    value = st.slider(f"Budget ({label})", low, high, value=start, step=10.0**-digits,
                      key=f"budget_{unit}")  # fmt: skip
    plan = PrecisionPlan.from_json(cached_plan(str(run), modified, estimator, value, unit))
    left, middle, right = st.columns(3)
    left.metric("Predicted loss", f"{plan.predicted['score']:.4g}")
    middle.metric("Bits per weight", f"{plan.predicted['bits_per_weight']:.3f}")
    right.metric("Size (MB)", f"{plan.predicted['size_mb']:.3f}")
    bars = budget.plan_bars(problem, plan)
    figure = px.bar(bars, x="unit", y="bits", color="scheme", hover_data=["scheme", "bits"])
    figure.update_layout(xaxis={"categoryorder": "array", "categoryarray": list(bars["unit"])})
    st.plotly_chart(figure, width="stretch")
    st.caption(f"{name}: ILP plan within {value:.{digits}f} {label} ({estimator} scores).")
    if st.button("Measure this plan", key="measure"):
        with st.spinner("Measuring on the evaluation split..."):
            measured = evaluate(problem.bundle, plan.assignment).metrics
        st.dataframe(pd.DataFrame([measured]), hide_index=True)


def picked_run() -> Path | None:
    """The run picked on the Runs page, once its manifest reads (else a message says why)."""
    name = st.session_state.get("run")
    if not name:
        st.info("Pick a run on the Runs page first.")
        return None
    try:
        run = views.run_path(ROOT, str(name))
        read_manifest(run)
    except MixprecError as err:
        st.warning(str(err))
        return None
    return run


def plans_stamp(run: Path) -> float:
    """Changes whenever a plan or a measurement of the run is written."""
    files = [*run.glob("plans/*.json"), *run.glob("eval/*.json")]
    return max((f.stat().st_mtime for f in files), default=0.0)


@st.cache_data(show_spinner=False)
def cached_plans(run: str, stamp: float) -> pd.DataFrame:
    return plans.plans_frame(Path(run))


def pareto_page() -> None:
    st.header("Pareto")
    run = picked_run()
    if run is None:
        return
    try:
        frame = cached_plans(str(run), plans_stamp(run))
    except MixprecError as err:
        st.warning(str(err))
        return
    metrics = plans.measured_metrics(frame)
    if not metrics:
        st.info("No plan of this run has been measured yet; showing predicted scores.")
    metric = st.selectbox("Metric", metrics or ["predicted score"], key="pareto_metric")
    figure = px.scatter(frame, x="bits/weight", y=metric, color="method", hover_name="plan",
                        hover_data=["budget", "predicted score"])  # fmt: skip
    st.plotly_chart(figure, width="stretch")
    names = list(frame["plan"])
    left, right = st.columns(2)
    first = left.selectbox("First plan", names, key="diff_first")
    second = right.selectbox("Second plan", names, index=min(1, len(names) - 1), key="diff_second")
    diff = plans.plan_diff(
        *(PrecisionPlan.load(run / "plans" / f"{n}.json") for n in (first, second))
    )
    st.caption(
        f"{int(diff['differs'].sum())} of {len(diff)} layers differ between {first} and {second}."
    )
    st.dataframe(diff, hide_index=True, width="stretch")


@st.cache_resource(show_spinner="Loading the model...")
def cached_model(name: str, origin: str, dtype: str = "auto") -> tuple[Any, str]:
    from mixprec.models import load_model, source_from_file

    bundle = load_model(source_from_file(name, origin, TRUSTED), dtype=dtype, device="cpu")
    return bundle.model, bundle.fingerprint


def export_page() -> None:
    from mixprec.export import export_plan, model_files

    st.header("Export")
    run = picked_run()
    if run is None:
        return
    try:
        names = [f.stem for f in plans.plan_files(run)]
    except MixprecError as err:
        st.warning(str(err))
        return
    name = st.selectbox("Plan", names, key="export_plan")
    plan_path = next(p for p in plans.plan_files(run) if p.stem == name)
    plan = PrecisionPlan.load(plan_path)
    for target, label in EXPORT_LABELS.items():
        path = RunFolder(run).export_path(plan_path, target)
        if path.is_file():
            st.download_button(f"Download {label}", path.read_bytes(), file_name=path.name,
                               key=f"download_{target}")  # fmt: skip
        elif path.is_dir():  # a checkpoint folder: loaded from where it is
            st.caption(f"{label}: `{path}`")
        elif st.button(f"Write {label}", key=f"write_{target}"):
            try:
                load = partial(cached_model, plan.model, f"plan {name}", plan.dtype)
                export_plan(plan, target, path, load, *model_files(target, plan.model))
            except MixprecError as err:
                st.warning(f"{label}: {err}")
            else:
                st.rerun()


def jobs_page() -> None:
    from mixprec import jobs
    from mixprec.config import load_config

    st.header("Jobs")
    address = st.text_input("Ray dashboard address", jobs.DEFAULT_ADDRESS, key="jobs_address")
    config = st.text_input("Run config (TOML path)", key="jobs_config")
    if st.button("Submit", key="jobs_submit"):
        try:
            st.success(f"submitted {jobs.submit(load_config(Path(config)), address)}")
        except MixprecError as err:
            st.warning(str(err))
    try:
        listed = jobs.list_jobs(address)
    except MixprecError as err:
        st.warning(str(err))
        return
    if not listed:
        st.info(f"No jobs at {address} yet.")
        return
    st.dataframe(pd.DataFrame([asdict(j) for j in listed]), hide_index=True)
    chosen = st.selectbox("Job", [j.job_id for j in listed], key="jobs_pick")
    try:
        text = jobs.logs(chosen, address)
    except MixprecError as err:
        st.warning(str(err))
        return
    st.code(text[-LOG_TAIL:] or "(no output yet)", language=None)


DEFAULT_BITS = 6.0  # where the Budget slider starts (clamped to the run's feasible range)
LOG_TAIL = 20_000  # characters of a job's log shown
EXPORT_LABELS = {"json": "plan JSON", "compressed-tensors": "compressed-tensors checkpoint",
                 "modelopt": "ModelOpt checkpoint", "llamacpp": "llama.cpp overrides",
                 "gguf": "GGUF"}  # fmt: skip
PAGES = {"Runs": runs_page, "Sensitivity": sensitivity_page, "Budget": budget_page,
         "Pareto": pareto_page, "Export": export_page, "Jobs": jobs_page}  # fmt: skip
for key, valid in (("page", list(PAGES)), ("run", None)):  # deep links: ?run=NAME&page=Budget
    linked = st.query_params.get(key)
    if linked and key not in st.session_state and (valid is None or linked in valid):
        st.session_state[key] = linked
page = st.sidebar.radio("Page", list(PAGES), key="page")
st.sidebar.caption(f"run store: {ROOT}")
PAGES[page]()
