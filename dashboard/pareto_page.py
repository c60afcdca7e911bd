"""Pareto page: the run's plans by size and metric with their front, a plan map (which layers
change format as the budget grows, per method) and the diff of two plans."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from mixprec.dashboard import palette, plans, views
from mixprec.dashboard.reference import add_fp_line, fp_reference
from mixprec.dashboard.state import (
    cached_estimator,
    cached_intervals,
    cached_plans,
    cached_problem,
    page_run,
    plans_stamp,
    run_scores,
)
from mixprec.errors import MixprecError
from mixprec.models import ModelBundle
from mixprec.plan import PrecisionPlan

ABOVE, BELOW = "interval above", "interval below"  # error bar lengths: the 95% interval


def pareto_page() -> None:
    run = page_run("Pareto")
    if run is None:
        return
    try:
        frame = cached_plans(str(run), plans_stamp(run))
    except MixprecError as err:
        st.warning(str(err))
        return
    frame = frame.assign(run=run.name)
    parts = [(run, frame), *_compared_runs(run)]
    shown = pd.concat([part for _, part in parts], ignore_index=True)
    metrics = [m for m in plans.measured_metrics(shown) if m != "run"]
    if not metrics:
        st.info("No plan of this run has been measured yet; showing predicted scores.")
    metric = st.selectbox("Metric", metrics or ["predicted score"], key="pareto_metric")
    compared = [_with_intervals(path, part, metric) for path, part in parts]
    fp = fp_reference(run, partial(_bundle, run)) if metrics else {}
    st.plotly_chart(_pareto_figure(compared, metric, fp.get(metric)), width="stretch")
    if len(compared) > 1:
        names = ", ".join(part["run"].iloc[0] for part in compared)
        st.caption(f"Runs compared: {names} (chosen on the Runs page); colour: run, marker: "
                   "method, dotted: each run's front.")  # fmt: skip
    if any(ABOVE in part for part in compared):
        st.caption("Bars: each measurement's 95% interval over evaluation samples; plans whose "
                   "bars overlap are not told apart by this evaluation set.")  # fmt: skip
    _plan_map(run)
    _diff(run, list(frame["plan"]))


def _with_intervals(run: Path, frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """`frame` with the distances from `metric` to its 95% interval's ends (error bars)."""
    found = cached_intervals(str(run), plans_stamp(run), metric)
    if metric not in frame or not found:
        return frame
    value = frame[metric].astype(float)
    low = frame["plan"].map(lambda p: found.get(p, (math.nan, math.nan))[0])
    high = frame["plan"].map(lambda p: found.get(p, (math.nan, math.nan))[1])
    return frame.assign(**{ABOVE: high - value, BELOW: value - low})


def _compared_runs(run: Path) -> list[tuple[Path, pd.DataFrame]]:
    """The runs picked for comparison on the Runs page (those that have plans), each with its
    plans."""
    frames = []
    for name in st.session_state.get("compare", []):
        try:
            other = views.run_path(run.parent, str(name))
            frames.append((other, cached_plans(str(other), plans_stamp(other)).assign(run=name)))
        except MixprecError as err:
            st.warning(f"{name}: {err}")
    return frames


def _bundle(run: Path) -> ModelBundle:
    """The run's model (loaded through the estimator its plans were made from)."""
    scores, modified = run_scores(run)
    estimator = cached_estimator(str(run), plans_stamp(run)) or str(scores["estimator"].iloc[0])
    return cached_problem(str(run), modified, estimator).bundle


def _pareto_figure(compared: list[pd.DataFrame], metric: str, fp: float | None) -> go.Figure:
    """One run: coloured by method; several: coloured by run, marked by method; a front each;
    the picked run's FP metric as a line, where measured."""
    shown = pd.concat(compared, ignore_index=True)
    methods = list(dict.fromkeys(shown["method"]))
    several = len(compared) > 1
    runs = list(dict.fromkeys(shown["run"]))
    run_colours = {name: palette.METHOD_COLOURS[n % len(palette.METHOD_COLOURS)]
                   for n, name in enumerate(runs)}  # fmt: skip
    figure = px.scatter(shown, x="bits/weight", y=metric, color="run" if several else "method",
                        symbol="method", hover_name="plan",
                        hover_data=["run", "budget", "predicted score"],
                        color_discrete_map=run_colours if several
                        else palette.method_colours(methods),
                        symbol_map=palette.method_symbols(methods),
                        **({"error_y": ABOVE, "error_y_minus": BELOW} if ABOVE in shown
                           else {}))  # fmt: skip
    figure.update_traces(marker=palette.PLAN_MARKER)
    for part in compared:
        front = plans.frontier(part, metric) if metric in part else part.iloc[:0]
        if len(front) < 2:
            continue
        name = part["run"].iloc[0]
        colour = run_colours[name] if several else "#444"
        line = go.Scatter(x=front["bits/weight"].tolist(), y=front[metric].tolist(), mode="lines",
                          name=f"front of {name}" if several else "front (best at each size)",
                          line={"color": colour, "dash": "dot"})  # fmt: skip
        figure.add_trace(line)
    add_fp_line(figure, fp)
    figure.update_layout(xaxis={"title": {"text": "bits per weight (scales included)"}},
                         yaxis={"title": {"text": metric}})  # fmt: skip
    return figure


def _plan_map(run: Path) -> None:
    """Layers x plans, coloured by format: where each layer's format changes with budget."""
    named = plans.plan_documents(run)
    if not named:
        return
    table = plans.plan_map(named, views.unit_order(run))
    st.subheader("Plan map")
    if st.checkbox("Only layers whose format differs between plans", key="map_changed"):
        table = plans.changed_only(table)
    if table.empty:
        st.caption("Every plan gives every layer the same format.")
        return
    schemes = sorted({s for column in table for s in table[column]})
    code = {s: n for n, s in enumerate(schemes)}
    figure = go.Figure(go.Heatmap(
        z=table.map(code.get).to_numpy(), x=list(table.columns), y=list(table.index),
        text=table.to_numpy(), hovertemplate="%{y}<br>%{x}<br>%{text}<extra></extra>",
        colorscale=_discrete(schemes), zmin=-0.5, zmax=len(schemes) - 0.5, showscale=False,
    ))  # fmt: skip
    for scheme in schemes:  # a legend entry per format, in its colour
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=scheme,
                                    marker={"color": palette.scheme_colour(scheme),
                                            "symbol": "square", "size": 12}))  # fmt: skip
    figure.update_layout(palette.row_layout(list(table.index), "plan (by method, then size)",
                                            "layer (model order)", top=160))  # fmt: skip
    st.plotly_chart(figure, width="stretch")
    st.caption(f"{len(table)} layers x {len(table.columns)} plans (the run's plan files, then "
               "its `mixprec pareto` sweep); hover a cell for its format.")  # fmt: skip


def _discrete(schemes: list[str]) -> list[list[object]]:
    """A colour scale that gives code n exactly scheme n's colour (bands of equal width)."""
    count = len(schemes)
    scale: list[list[object]] = []
    for n, scheme in enumerate(schemes):
        colour = palette.scheme_colour(scheme)
        scale += [[n / count, colour], [(n + 1) / count, colour]]
    return scale


def _diff(run: Path, names: list[str]) -> None:
    st.subheader("Two plans side by side")
    left, right = st.columns(2)
    first = left.selectbox("First plan", names, key="diff_first")
    second = right.selectbox("Second plan", names, index=min(1, len(names) - 1), key="diff_second")
    diff = plans.plan_diff(
        *(PrecisionPlan.load(run / "plans" / f"{n}.json") for n in (first, second))
    )
    st.caption(
        f"{int(diff['differs'].sum())} of {len(diff)} layers differ between {first} and {second}."
    )
    if st.checkbox("Only changed layers", key="diff_changed"):
        diff = diff[diff["differs"]]
    st.dataframe(diff, hide_index=True, width="stretch")
