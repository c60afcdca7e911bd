"""mixprec dashboard (Streamlit): the run store, each run's sensitivity heatmap and budget.

Started by `mixprec dashboard`, which binds 127.0.0.1 unless told otherwise; the run store
comes from the MIXPREC_RUNS environment variable (default: ./runs).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from mixprec.dashboard import budget, views
from mixprec.errors import MixprecError
from mixprec.metrics import evaluate
from mixprec.plan import PrecisionPlan

st.set_page_config(page_title="mixprec", layout="wide")
ROOT = Path(os.environ.get(views.RUNS_ENV, "runs"))


@st.cache_data(show_spinner=False)
def cached_scores(run: str, modified: float) -> pd.DataFrame:
    """Keyed by the run and its score file's modification time."""
    return views.load_scores(Path(run))


def runs_page() -> None:
    st.header("Runs")
    runs = views.runs_frame(ROOT)
    if runs.empty:
        st.info(f"No runs in {ROOT} yet: `mixprec run CONFIG` or `mixprec demo` makes one.")
        return
    st.dataframe(runs, hide_index=True, use_container_width=True)
    names = list(runs["name"])
    current = st.session_state.get("run")
    index = names.index(current) if current in names else 0
    st.session_state["run"] = st.selectbox("Run", names, index=index, key="run_picker")


def sensitivity_page() -> None:
    st.header("Sensitivity")
    name = st.session_state.get("run")
    if not name:
        st.info("Pick a run on the Runs page first.")
        return
    run = ROOT / name
    try:
        path = views.scores_file(run)
        scores = cached_scores(str(run), path.stat().st_mtime)
    except MixprecError as err:
        st.warning(str(err))
        return
    left, right = st.columns(2)
    estimator = left.selectbox("Estimator", sorted(scores["estimator"].unique()), key="estimator")
    levels = [lv for lv in ("layer", "component", "block") if lv in set(scores["level"])]
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
    st.plotly_chart(figure, use_container_width=True)
    st.caption(f"{name}: {estimator} scores, {level} level; hover shows the 95% interval.")


@st.cache_resource(show_spinner="Loading the run's model and table...")
def cached_analysis(run: str, modified: float, estimator: str) -> budget.Analysis:
    """Keyed by the run, its score file's modification time and the estimator."""
    return budget.open_run(Path(run), estimator)


@st.cache_data(show_spinner=False)
def cached_plan(run: str, modified: float, estimator: str, bits: float) -> dict[str, Any]:
    """The ILP plan at `bits` as its JSON document (cached per slider position)."""
    analysis = cached_analysis(run, modified, estimator)
    return budget.plan_within(analysis, estimator, bits).to_json()


def budget_page() -> None:
    st.header("Budget")
    name = st.session_state.get("run")
    if not name:
        st.info("Pick a run on the Runs page first.")
        return
    run = ROOT / name
    try:
        path = views.scores_file(run)
        modified = path.stat().st_mtime
        scores = cached_scores(str(run), modified)
        estimators = sorted(scores.loc[scores["level"] == "layer", "estimator"].unique())
        if not estimators:
            raise MixprecError(f"run {name} has no layer-level scores to plan from")
        estimator = st.selectbox("Estimator", estimators, key="budget_estimator")
        analysis = cached_analysis(str(run), modified, estimator)
        low, high = budget.bits_range(analysis, estimator)
    except MixprecError as err:
        st.warning(str(err))
        return
    low, high = math.ceil(low * 100) / 100, math.floor(high * 100) / 100
    bits = st.slider("Budget (bits per weight)", low, high, value=round((low + high) / 2, 2),
                     step=0.01, key="budget_bits")  # fmt: skip
    plan = PrecisionPlan.from_json(cached_plan(str(run), modified, estimator, bits))
    left, middle, right = st.columns(3)
    left.metric("Predicted loss", f"{plan.predicted['score']:.4g}")
    middle.metric("Bits per weight", f"{plan.predicted['bits_per_weight']:.3f}")
    right.metric("Size (MB)", f"{plan.predicted['size_mb']:.3f}")
    bars = budget.plan_bars(analysis, plan)
    figure = px.bar(bars, x="unit", y="bits", color="scheme", hover_data=["scheme", "bits"])
    figure.update_layout(xaxis={"categoryorder": "array", "categoryarray": list(bars["unit"])})
    st.plotly_chart(figure, use_container_width=True)
    st.caption(f"{name}: ILP plan within {bits:.2f} bits per weight ({estimator} scores).")
    if st.button("Measure this plan", key="measure"):
        with st.spinner("Measuring on the evaluation split..."):
            measured = evaluate(analysis.bundle, plan.assignment).metrics
        st.dataframe(pd.DataFrame([measured]), hide_index=True)


PAGES = {"Runs": runs_page, "Sensitivity": sensitivity_page, "Budget": budget_page}
page = st.sidebar.radio("Page", list(PAGES), key="page")
st.sidebar.caption(f"run store: {ROOT}")
PAGES[page]()
