"""mixprec dashboard (Streamlit): the run store, each run's sensitivity heatmap and budget.

Started by `mixprec dashboard`, which binds 127.0.0.1 unless told otherwise; the run store
comes from the MIXPREC_RUNS environment variable (default: ./runs).
"""

from __future__ import annotations

from functools import partial

import streamlit as st

from mixprec.dashboard import views
from mixprec.dashboard.budget_page import budget_page
from mixprec.dashboard.export_page import export_page
from mixprec.dashboard.jobs_page import jobs_page
from mixprec.dashboard.pareto_page import pareto_page
from mixprec.dashboard.sensitivity_page import sensitivity_page
from mixprec.dashboard.state import picked_run, root

st.set_page_config(page_title="mixprec", layout="wide")


def runs_page() -> None:
    st.header("Runs")
    runs = views.runs_frame(root())
    if runs.empty:
        st.info(f"No runs in {root()} yet: `mixprec run CONFIG` or `mixprec demo` makes one.")
        return
    st.dataframe(runs, hide_index=True, width="stretch")
    names = list(runs["name"])
    current = st.session_state.get("run")
    index = names.index(current) if current in names else 0
    st.session_state["run"] = st.selectbox("Run", names, index=index, key="run_picker")
    others = [n for n in names if n != st.session_state["run"]]
    st.session_state["compare"] = st.multiselect(
        "Compare with (on the Pareto page)", others, key="compare_picker",
        default=[n for n in st.session_state.get("compare", []) if n in others],
    )  # fmt: skip
    run = picked_run()
    if run is None:
        return
    left, right = st.columns(2)
    report = run / "report.md"
    if report.is_file():
        left.download_button("Download report.md", report.read_bytes(),
                             file_name=f"{run.name}-report.md", key="download_report")  # fmt: skip
    else:
        left.caption("No report yet: the run writes report.md when it finishes.")
    right.download_button("Download the run (zip)", partial(views.run_archive, run),
                          file_name=f"{run.name}.zip", key="download_run")  # fmt: skip


PAGES = {"Runs": runs_page, "Sensitivity": sensitivity_page, "Budget": budget_page,
         "Pareto": pareto_page, "Export": export_page, "Jobs": jobs_page}  # fmt: skip
for key, valid in (("page", list(PAGES)), ("run", None)):  # deep links: ?run=NAME&page=Budget
    linked = st.query_params.get(key)
    if linked and key not in st.session_state and (valid is None or linked in valid):
        st.session_state[key] = linked
page = st.sidebar.radio("Page", list(PAGES), key="page")
st.sidebar.caption(f"run store: {root()}")
PAGES[page]()
