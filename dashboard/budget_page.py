"""Budget page: any budget between the smallest feasible plan and the largest quantized one,
by slider or typed; the plan beside FP and the uniform plans that fit; measured in the
background and kept; saved into the run like any other plan."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.express as px
import streamlit as st

from mixprec.dashboard import budget, palette
from mixprec.dashboard.measuring import Measurer
from mixprec.dashboard.reference import fp_reference
from mixprec.dashboard.state import (
    POLL_S,
    SAVED_PLAN,
    cached_estimator,
    cached_problem,
    default_index,
    measurer,
    page_run,
    plans_stamp,
    run_scores,
)
from mixprec.errors import MixprecError
from mixprec.plan import PrecisionPlan

DEFAULT_BITS = 6.0  # where the Budget slider starts (clamped to the run's feasible range)


@st.cache_data(show_spinner=False)
def cached_plan(
    run: str, modified: float, estimator: str, method: str, value: float, unit: str
) -> dict[str, Any]:
    """`method`'s plan within `value` `unit` as its JSON document (cached per position)."""
    problem = cached_problem(run, modified, estimator)
    return budget.plan_within(problem, value, unit, method).to_json()


def budget_page() -> None:
    run = page_run("Budget")
    if run is None:
        return
    try:
        scores, modified = run_scores(run)
        estimators = sorted(scores.loc[scores["level"] == "layer", "estimator"].unique())
        if not estimators:
            raise MixprecError(f"run {run.name} has no layer-level scores to plan from")
        made_from = cached_estimator(str(run), plans_stamp(run))
        left, middle, right = st.columns(3)
        estimator = left.selectbox("Estimator", estimators, key="budget_estimator",
                                   index=default_index(estimators, made_from))  # fmt: skip
        method = middle.selectbox("Method", list(budget.METHODS), key="budget_method")
        label = right.radio("Budget in", list(budget.UNITS), horizontal=True, key="budget_unit")
        unit = budget.UNITS[label]
        problem = cached_problem(str(run), modified, estimator)
        low, high = budget.budget_range(problem, unit)
    except MixprecError as err:
        st.warning(str(err))
        return
    digits = 2 if unit == "bits" else 4
    low, high = math.ceil(low * 10**digits) / 10**digits, math.floor(high * 10**digits) / 10**digits
    value = _budget_input(label, unit, low, high, digits)
    plan = PrecisionPlan.from_json(cached_plan(str(run), modified, estimator, method, value, unit))
    left, middle, right = st.columns(3)
    left.metric("Predicted loss", f"{plan.predicted['score']:.4g}")
    middle.metric("Bits per weight", f"{plan.predicted['bits_per_weight']:.3f}")
    right.metric("Size (MB)", f"{plan.predicted['size_mb']:.3f}")
    st.caption(
        f"{run.name}: {method} plan within {value:.{digits}f} {label} ({estimator} scores); "
        "the range runs from the smallest plan to the largest quantized one."
    )
    _bars(problem, plan)
    _references(run, problem, value, unit)
    _actions(run, problem, plan, f"{method} within {value:.{digits}f} {unit}")


def _budget_input(label: str, unit: str, low: float, high: float, digits: int) -> float:
    """The slider and a typed value, kept equal; both clamped to the run's range."""
    slider, typed = f"budget_{unit}", f"budget_{unit}_typed"
    start = min(max(DEFAULT_BITS, low), high) if unit == "bits" else round((low + high) / 2, digits)
    current = st.session_state.get(slider, start)
    clamped = min(max(round(float(current), digits), low), high)
    if clamped != current or slider not in st.session_state:  # set only when it must change:
        st.session_state[slider] = clamped  # a value set here is pushed back to the browser
    st.session_state.setdefault(typed, clamped)

    def slid() -> None:
        st.session_state[typed] = st.session_state[slider]

    def entered() -> None:
        st.session_state[slider] = min(max(round(float(st.session_state[typed]), digits), low),
                                       high)  # fmt: skip
        st.session_state[typed] = st.session_state[slider]

    step = 10.0**-digits
    left, right = st.columns([4, 1])
    value = left.slider(f"Budget ({label})", low, high, step=step, key=slider, on_change=slid)
    right.number_input(f"or type it ({low:g}-{high:g})", min_value=low, max_value=high,
                       step=step, format=f"%.{digits}f", key=typed, on_change=entered)  # fmt: skip
    return float(value)


def _bars(problem: budget.AllocationProblem, plan: PrecisionPlan) -> None:
    bars = budget.plan_bars(problem, plan)
    schemes = sorted(
        set(bars["scheme"]), key=lambda s: -bars.loc[bars["scheme"] == s, "bits"].max()
    )
    figure = px.bar(bars, x="bits", y="unit", color="scheme", orientation="h",
                    color_discrete_map=palette.scheme_colours(schemes),
                    category_orders={"unit": list(bars["unit"]), "scheme": schemes},
                    hover_data=["scheme", "bits"])  # fmt: skip
    figure.update_layout(palette.row_layout(list(bars["unit"]), "bits per weight (scales included)",
                                            "unit (model order)"))  # fmt: skip
    st.plotly_chart(figure, width="stretch")


def _references(run: Path, problem: budget.AllocationProblem, value: float, unit: str) -> None:
    table = budget.references(problem, value, unit)
    st.subheader("References")
    fp = fp_reference(run, lambda: problem.bundle)
    for metric, measured in fp.items():  # FP's measured metrics beside its predicted ones
        table[f"measured {metric}"] = [measured if r == budget.FP_LABEL else math.nan
                                       for r in table["reference"]]  # fmt: skip
    if not table["fits"].any():
        st.caption("No uniform plan fits this budget; FP is shown for scale.")
    st.dataframe(table.drop(columns="fits"), hide_index=True, width="stretch")


def _actions(run: Path, problem: budget.AllocationProblem, plan: PrecisionPlan, name: str) -> None:
    work = measurer()
    label = f"{name} ({plan.predicted['bits_per_weight']:.3f} bits)"
    left, right = st.columns(2)
    if left.button("Measure this plan", key="measure"):
        work.start(str(run), label, problem.bundle, plan)
    if right.button("Save this plan to the run", key="save_plan"):
        done = work.get(str(run), plan)
        result = done.result if done is not None else None
        path = budget.save_plan(run, plan, result)
        st.session_state[SAVED_PLAN] = path.stem  # the Export page opens on it
        st.success(f"Saved as plans/{path.name}; the Pareto and Export pages list it.")
    _measured(str(run), work, plan)


def _measured(run: str, work: Measurer, plan: PrecisionPlan) -> None:
    """This session's measurements of the run's plans; refreshed while one runs."""

    def table() -> None:
        jobs = work.of_run(run)
        if not jobs:
            return
        st.subheader("Measured this session")
        rows = [{"plan": m.label, "status": m.status(), **m.metrics} for m in jobs]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        mine = work.get(run, plan)
        if mine is not None and mine.running:
            st.caption(f"Measuring this plan: {mine.status()}; the page stays usable.")

    if work.running():
        st.fragment(run_every=POLL_S)(table)()
    else:
        table()
