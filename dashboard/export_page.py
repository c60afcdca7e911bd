"""The Export page: a plan's exports with their sizes, previews and warnings, written on demand,
and everything of the plan as one zip."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from mixprec.dashboard import exports, plans
from mixprec.dashboard.state import SAVED_PLAN, page_run, trusted
from mixprec.errors import MixprecError
from mixprec.plan import PrecisionPlan

WRITTEN = "export_written"  # session key: {(run, plan, target): (warnings, command)}


@st.cache_resource(show_spinner="Loading the model...")
def cached_model(name: str, origin: str, dtype: str = "auto") -> tuple[Any, str]:
    from mixprec.models import load_model, source_from_file

    bundle = load_model(source_from_file(name, origin, trusted()), dtype=dtype, device="cpu")
    return bundle.model, bundle.fingerprint


def export_page() -> None:
    run = page_run("Export")
    if run is None:
        return
    try:
        files = plans.plan_files(run)
    except MixprecError as err:
        st.warning(str(err))
        return
    names = [f.stem for f in files]
    saved = st.session_state.get(SAVED_PLAN)
    first = saved if saved in names else exports.default_plan(run, names)
    name = st.selectbox("Plan", names, index=names.index(first), key="export_plan")
    plan_path = files[names.index(name)]
    plan = PrecisionPlan.load(plan_path)
    predicted = plan.predicted
    st.caption(f"{predicted.get('bits_per_weight', float('nan')):.3f} bits per weight, "
               f"{predicted.get('size_mb', float('nan')):.3g} MB predicted; "
               f"{len(plan.assignment)} layers")  # fmt: skip
    found = exports.export_files(run, plan_path)
    st.dataframe(_overview(found), hide_index=True, width="stretch")
    st.download_button("Download everything of this plan (zip)",  # zipped when clicked
                       partial(exports.plan_bundle, run, plan_path),
                       file_name=f"{run.name}-{name}.zip", key="download_bundle")  # fmt: skip
    for export in found:
        with st.expander(export.label, expanded=export.size is not None):
            _target(run, plan, plan_path, export)


def _overview(found: list[exports.ExportFile]) -> pd.DataFrame:
    rows = [{"export": e.label, "file": e.path.name,
             "size": exports.readable_size(e.size) if e.size is not None else "not written",
             "notes": e.note} for e in found]  # fmt: skip
    return pd.DataFrame(rows)


def _target(run: Path, plan: PrecisionPlan, plan_path: Path, export: exports.ExportFile) -> None:
    key = (str(run), plan_path.stem, export.target)
    warnings, command = st.session_state.get(WRITTEN, {}).get(key, ((), ""))
    for warning in (export.note, *warnings):
        if warning:
            st.warning(warning)
    if command:
        st.code(command, language="bash")
    path = export.path
    if path.is_file():
        st.download_button(f"Download {export.label}", path.read_bytes,  # read when clicked
                           file_name=path.name, key=f"download_{export.target}")  # fmt: skip
    elif path.is_dir():  # a checkpoint folder: loaded from where it is
        st.caption(f"`{path}`")
    elif st.button(f"Write {export.label}", key=f"write_{export.target}"):
        _write(plan, plan_path, export, key)
        return
    if export.size is not None:
        st.code(exports.preview(export), language=None)


def _write(plan: PrecisionPlan, plan_path: Path, export: exports.ExportFile,
           key: tuple[str, str, str]) -> None:  # fmt: skip
    from mixprec.export import export_plan, model_files

    try:
        load = partial(cached_model, plan.model, f"plan {plan_path.stem}", plan.dtype)
        done = export_plan(plan, export.target, export.path, load,
                           *model_files(export.target, plan.model))  # fmt: skip
    except MixprecError as err:
        st.warning(f"{export.label}: {err}")
        return
    written = st.session_state.setdefault(WRITTEN, {})
    written[key] = (done.warnings, done.command)
    st.rerun()
