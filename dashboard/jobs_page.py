"""The Jobs page: submit a run config to a Ray cluster; every job newest first with its run
folder and progress, its log, a stop button, refreshed while anything runs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import streamlit as st

from mixprec import jobs
from mixprec.errors import MixprecError

LOG_TAIL = 20_000  # characters of a job's log shown
REFRESH_S = 2.0  # how often the page looks again while a job runs
LOGS_READ = 10  # newest running or failed jobs whose logs give their progress or error


def jobs_page() -> None:
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
    if any(j.status not in jobs.FINAL_STATES for j in listed):
        st.fragment(run_every=REFRESH_S)(_listing)(address, None)
    else:
        _listing(address, listed)


def _listing(address: str, listed: list[jobs.JobInfo] | None) -> None:
    """The jobs (`listed`, or fetched again on every refresh where None: while one runs),
    the one picked, its stop button and its log."""
    refreshing = listed is None
    try:
        listed = jobs.list_jobs(address) if listed is None else listed
        frame = jobs_frame(listed, address)
    except MixprecError as err:
        st.warning(str(err))
        return
    if not listed:
        st.info(f"No jobs at {address} yet.")
        return
    if refreshing and not any(j.status not in jobs.FINAL_STATES for j in listed):
        st.rerun(scope="app")  # everything ended: stop refreshing
    if refreshing:
        st.caption(f"A job is running: this list refreshes every {REFRESH_S:g} s.")
    st.dataframe(frame, hide_index=True, width="stretch")
    ids = [j.job_id for j in listed]
    chosen = st.selectbox("Job", ids, key="jobs_pick")  # the newest until one is picked
    info = listed[ids.index(chosen)]
    if info.status not in jobs.FINAL_STATES and st.button("Stop this job", key="jobs_stop"):
        try:
            jobs.stop(chosen, address)
        except MixprecError as err:
            st.warning(str(err))
        else:
            st.success(f"asked {address} to stop {chosen}")
    try:
        text = jobs.logs(chosen, address)
    except MixprecError as err:
        st.warning(str(err))
        return
    st.code(text[-LOG_TAIL:] or "(no output yet)", language=None)


def jobs_frame(listed: list[jobs.JobInfo], address: str) -> pd.DataFrame:
    """One row per job, as listed (newest first): run folder, progress (from a running job's
    log; why a failed one failed), start time and entrypoint."""
    from mixprec.progress import last_progress

    rows, read = [], 0
    for info in listed:
        progress = "done" if info.status == "SUCCEEDED" else ""
        running = info.status not in jobs.FINAL_STATES
        if (running or info.status == "FAILED") and read < LOGS_READ:
            read += 1
            log = jobs.logs(info.job_id, address)
            progress = (last_progress(log) or "starting") if running else jobs.job_error(info, log)
        started = (datetime.fromtimestamp(info.start_time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
                   if info.start_time else "")  # fmt: skip
        rows.append({"job": info.job_id, "status": info.status, "run": info.run,
                     "progress": progress, "started (UTC)": started,
                     "entrypoint": info.entrypoint})  # fmt: skip
    return pd.DataFrame(rows)
