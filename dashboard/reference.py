"""The FP reference every plan is compared with: the unquantized model measured once per run
(RUN/reference/fp.json), in the background, from whichever page asks first."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import plotly.graph_objects as go
import streamlit as st

from mixprec.dashboard.state import POLL_S, measurer
from mixprec.models import ModelBundle
from mixprec.plan import PrecisionPlan
from mixprec.store import RunFolder, read_manifest


def fp_metrics(run: Path) -> dict[str, float]:
    """The run's measured FP metrics; empty until measured (or where the file does not read)."""
    try:
        document = json.loads(RunFolder(run).reference_path().read_text(encoding="utf-8"))
        metrics = document["metrics"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(metrics, dict):
        return {}
    return {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def add_fp_line(figure: go.Figure, fp: float | None) -> None:
    """The FP metric as a dashed line across a chart of plans, where it was measured."""
    if fp is not None:
        figure.add_hline(y=fp, line={"dash": "dash", "color": "#222"},
                         annotation_text=f"FP (unquantized): {fp:.4g}")  # fmt: skip


def fp_reference(run: Path, bundle: Callable[[], ModelBundle]) -> dict[str, float]:
    """The FP metrics of `run`; until they exist, a button that measures them in the background
    (`bundle` loads the model) and, while that runs, its progress."""
    known = fp_metrics(run)
    if known:
        return known
    manifest = read_manifest(run)
    plan = PrecisionPlan(manifest.model, manifest.fingerprint or "", {}, "fp")
    work = measurer()
    job = work.get(str(run), plan)
    if job is None or job.error is not None:
        if job is not None:
            st.warning(f"Measuring FP failed: {job.error}")
        label = "Measure FP (the reference every plan is compared with)"
        if st.button(label, key="measure_fp"):
            work.start(str(run), "FP (unquantized)", bundle(), plan,
                       RunFolder(run).reference_path())  # fmt: skip
            st.rerun()
        return {}

    def progress() -> None:
        if not job.running:
            st.rerun(scope="app")
        st.caption(f"Measuring FP in the background: {job.status()}; the page stays usable.")

    st.fragment(run_every=POLL_S)(progress)()
    return {}
