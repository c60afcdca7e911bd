"""What every dashboard page shares: the run store, the picked run and the cached loads (keyed
by file modification times, so a file written meanwhile is read again)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from mixprec.dashboard import budget, plans, views
from mixprec.dashboard.measuring import Measurer
from mixprec.errors import MixprecError
from mixprec.store import read_manifest

SAVED_PLAN = "saved_plan"  # session key: the plan last saved from the Budget page
POLL_S = 1.0  # how often a page with a measurement running looks again


def root() -> Path:
    """The run store, read on every use: the server's environment names it."""
    return Path(os.environ.get(views.RUNS_ENV, "runs"))


def trusted() -> bool:
    """Whether `module:` model sources named in run files may be imported."""
    return os.environ.get(views.TRUST_ENV) == "1"


@st.cache_data(show_spinner=False)
def cached_scores(run: str, modified: float) -> pd.DataFrame:
    """Keyed by the run and its score file's modification time."""
    return views.load_scores(Path(run))


def run_scores(run: Path) -> tuple[pd.DataFrame, float]:
    """The run's finished scores (cached) and the modification time they are keyed by."""
    modified = views.scores_file(run).stat().st_mtime
    return cached_scores(str(run), modified), modified


@st.cache_resource(show_spinner="Loading the run's model and table...")
def cached_problem(run: str, modified: float, estimator: str) -> budget.AllocationProblem:
    """Keyed by the run, its score file's modification time and the estimator."""
    from mixprec.allocation import problem_from_run

    return problem_from_run(Path(run), estimator, trust_source=trusted())


def page_run(title: str) -> Path | None:
    """A page's header, then the run it shows (None, with a message why, where there is none)."""
    st.header(title)
    return picked_run()


def picked_run() -> Path | None:
    """The run picked on the Runs page, once its manifest reads (else a message says why)."""
    name = st.session_state.get("run")
    if not name:
        st.info("Pick a run on the Runs page first.")
        return None
    try:
        run = views.run_path(root(), str(name))
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


@st.cache_data(show_spinner=False)
def cached_intervals(run: str, stamp: float, metric: str) -> dict[str, tuple[float, float]]:
    return plans.intervals(Path(run), metric)


@st.cache_data(show_spinner=False)
def cached_estimator(run: str, stamp: float) -> str | None:
    return plans.plans_estimator(Path(run))


def default_index(options: list[str], preferred: Any) -> int:
    """Where `preferred` sits among `options` (the first where it is not one)."""
    return options.index(preferred) if preferred in options else 0


@st.cache_resource(show_spinner=False)
def measurer() -> Measurer:
    """The server's one measuring worker and what it measured."""
    return Measurer()
