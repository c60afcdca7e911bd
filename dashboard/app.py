"""mixprec dashboard (Streamlit): the run store, and each run's sensitivity heatmap.

Started by `mixprec dashboard`, which binds 127.0.0.1 unless told otherwise; the run store
comes from the MIXPREC_RUNS environment variable (default: ./runs).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from mixprec.dashboard import views
from mixprec.errors import MixprecError

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


PAGES = {"Runs": runs_page, "Sensitivity": sensitivity_page}
page = st.sidebar.radio("Page", list(PAGES), key="page")
st.sidebar.caption(f"run store: {ROOT}")
PAGES[page]()
