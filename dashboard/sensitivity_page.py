"""Sensitivity page: each unit's score under each scheme (model order, every row labelled),
roll-ups, and how the run's plans' predicted scores rank against what they measured."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from mixprec.comparison import HIGHER_IS_BETTER
from mixprec.dashboard import palette, plans, views
from mixprec.dashboard.reference import add_fp_line, fp_metrics
from mixprec.dashboard.state import (
    cached_estimator,
    cached_plans,
    default_index,
    page_run,
    plans_stamp,
    run_scores,
)
from mixprec.errors import MixprecError
from mixprec.units import LEVELS

MANY_UNITS = 60  # above this many, the heatmap offers a filter


def sensitivity_page() -> None:
    run = page_run("Sensitivity")
    if run is None:
        return
    try:
        scores, _ = run_scores(run)
    except MixprecError as err:
        st.warning(str(err))
        return
    stamp = plans_stamp(run)
    estimators = sorted(scores["estimator"].unique())
    made_from = cached_estimator(str(run), stamp)
    left, right = st.columns(2)
    estimator = left.selectbox("Estimator", estimators, key="estimator",
                               index=default_index(estimators, made_from))  # fmt: skip
    levels = [lv for lv in LEVELS if lv in set(scores["level"])]
    level = right.selectbox("Level", levels, key="level")
    try:
        heatmap = views.heatmap_frames(scores, estimator, level, views.unit_order(run))
    except MixprecError as err:
        st.warning(str(err))
        return
    shown = _filtered(heatmap, level)
    st.plotly_chart(_heatmap_figure(shown, estimator), width="stretch")
    note = f"{run.name}: {estimator} scores, {level} level"
    if made_from is not None:
        note += f" (the run's plans were made from {made_from})"
    st.caption(note + "; hover shows the 95% interval.")
    if heatmap.unused:
        st.caption(f"Blank rows score 0 under every scheme: the task never uses "
                   f"{', '.join(heatmap.unused)}, so quantizing it costs nothing.")  # fmt: skip
    _rollups(scores, estimator, levels, list(heatmap.colour.columns))
    _predicted_vs_measured(run, stamp)


def _filtered(heatmap: views.Heatmap, level: str) -> views.Heatmap:
    """All units, or those whose name holds the filter text (offered for long models)."""
    if len(heatmap.colour) <= MANY_UNITS:
        return heatmap
    text = st.text_input(f"Filter {level} units (part of a name, e.g. 'layers.3.' or "
                         "'mlp')", key="unit_filter").strip()  # fmt: skip
    if not text:
        return heatmap
    keep = [u for u in heatmap.colour.index if text in u]
    if not keep:
        st.info(f"No {level} unit name contains {text!r}; showing all.")
        return heatmap
    return views.Heatmap(heatmap.colour.loc[keep], heatmap.text.loc[keep],
                         [u for u in heatmap.unused if u in keep])  # fmt: skip


def _heatmap_figure(heatmap: views.Heatmap, estimator: str) -> go.Figure:
    colour = heatmap.colour
    figure = go.Figure(
        go.Heatmap(
            z=colour.to_numpy(), x=list(colour.columns), y=list(colour.index),
            text=heatmap.text.to_numpy(), colorscale="Viridis", hoverongaps=False,
            hovertemplate="%{y}<br>%{x}<br>score %{text}<extra></extra>",
            colorbar={"title": {"text": f"log10 {estimator} score"}},
        )
    )  # fmt: skip
    x_title = "scheme (most bits per weight first)"
    figure.update_layout(palette.row_layout(list(colour.index), x_title, "unit (model order)",
                                            top=110))  # fmt: skip
    return figure


def _rollups(
    scores: pd.DataFrame, estimator: str, levels: Sequence[str], schemes: list[str]
) -> None:
    rollups = [lv for lv in reversed(LEVELS) if lv != "layer" and lv in levels]
    if not rollups:
        return
    opened = views.rollup_default(schemes, scores, estimator)
    scheme = st.selectbox("Scheme for the roll-up", schemes, key="rollup_scheme",
                          index=default_index(schemes, opened))  # fmt: skip
    for lv in rollups:
        bars = views.rollup_frame(scores, estimator, lv, scheme)
        chart = go.Figure(go.Bar(
            x=bars["unit"], y=bars["score"], name=lv, marker_color=palette.scheme_colour(scheme),
            error_y={"type": "data", "symmetric": False,
                     "array": bars["ci_high"] - bars["score"],
                     "arrayminus": bars["score"] - bars["ci_low"]},
        ))  # fmt: skip
        chart.update_layout(title=f"{lv} roll-up under {scheme}", height=320,
                            xaxis={"title": {"text": lv}},
                            yaxis={"title": {"text": f"{estimator} score"},
                                   "exponentformat": "e"})  # fmt: skip
        st.plotly_chart(chart, width="stretch")


def _predicted_vs_measured(run: Path, stamp: float) -> None:
    try:
        frame = cached_plans(str(run), stamp)
    except MixprecError:
        return  # no plans yet: nothing measured to compare with
    metrics = plans.measured_metrics(frame)
    if not metrics:
        return
    metric = st.selectbox("Measured metric", metrics, key="scatter_metric")
    both, rho = views.predicted_vs_measured(frame, metric)
    points, distinct = plans.shared_points(both, "predicted score", metric)
    methods = list(dict.fromkeys(points["method"]))
    scatter = px.scatter(points, x="predicted score", y=metric, hover_name="plan",
                         hover_data=["plans here", "budget"], color="method", symbol="method",
                         color_discrete_map=palette.method_colours(methods),
                         symbol_map=palette.method_symbols(methods),
                         title="Plans: predicted vs measured")  # fmt: skip
    scatter.update_traces(marker=palette.PLAN_MARKER)
    scatter.update_layout(xaxis={"title": {"text": "predicted score (summed over units)"},
                                 "exponentformat": "e"})  # fmt: skip
    add_fp_line(scatter, fp_metrics(run).get(metric))  # measured on the Budget or Pareto page
    st.plotly_chart(scatter, width="stretch")
    good = "negative" if metric in HIGHER_IS_BETTER else "positive"
    way = "higher" if metric in HIGHER_IS_BETTER else "lower"
    st.caption(
        f"Spearman rank correlation over {len(both)} plans: {rho:.3f}. {way.capitalize()} "
        f"{metric} is better and a lower predicted score is better, so a {good} correlation "
        f"near {'-1' if good == 'negative' else '1'} means the scores rank plans as measured."
        + (f" {len(both)} plans fall on {distinct} distinct points; hover one for every plan "
           "there." if distinct < len(both) else "")
    )  # fmt: skip
