"""A run folder has one writer, says when its writer is gone, survives SIGTERM and SIGKILL, and
re-analyses when another command rewrote its scores; cache entries that are not scores are
recomputed; the dashboard never leaves the store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mixprec.config import load_config, parse_config
from mixprec.errors import MixprecError
from mixprec.models import cache_dir, load_model
from mixprec.pipeline import run_pipeline
from mixprec.runlock import owner_alive
from mixprec.sensitivity.cache import CellCache, _checksum
from mixprec.sensitivity.cells import AnalysisSpec
from mixprec.sensitivity.runner import analyze
from mixprec.sensitivity.table import ScoreTable
from mixprec.store import list_runs, read_manifest

ROOT = Path(__file__).resolve().parents[2]


def config_for(out: Path, **changes: object) -> dict[str, object]:
    return {"model": "digits-cnn", "output": str(out), "schemes": ["w:int8", "w:int4_g128"],
            "estimators": ["isolation"], "levels": ["layer"], "budgets": ["6bits"],
            "exports": ["json"], **changes}  # fmt: skip


def fresh_cache(tmp_path: Path) -> Path:
    """A cell cache with no cells but the trained digits-cnn, so every cell is computed."""
    load_model("digits-cnn")
    folder = tmp_path / "cache"
    folder.mkdir()
    for trained in cache_dir().glob("digits-cnn-*.safetensors"):
        shutil.copy(trained, folder / trained.name)
    return folder


def start_run(config: Path, cache: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "MIXPREC_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "mixprec", "run", str(config)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip


def wait_for_scoring(run: subprocess.Popen[str], timeout: float = 120) -> str:
    """Read the run's (non-terminal) output until its first progress line."""
    assert run.stdout is not None
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        line = run.stdout.readline()
        if not line:
            break
        seen += line
        if line.startswith("scoring digits-cnn: 0/"):
            return seen
    run.kill()
    pytest.fail(f"no progress line within {timeout:.0f} s: {seen}")


SLOW = {"schemes": ["w:int8", "w:mxfp4", "w:int4_g128", "w:nvfp4"],
        "estimators": ["hessian", "fisher", "isolation"], "levels": ["layer", "block"]}  # fmt: skip


def test_sigkill_shows_stopped_sigterm_interrupts_and_a_rerun_finishes(tmp_path: Path) -> None:
    cache = fresh_cache(tmp_path)
    out = tmp_path / "store" / "slow"
    config = tmp_path / "slow.toml"
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in
                              config_for(out, **SLOW).items()))  # fmt: skip

    killed = start_run(config, cache)
    wait_for_scoring(killed)
    assert owner_alive(out)
    [row] = list_runs(out.parent)
    assert row["status"] == "running"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=30)
    assert read_manifest(out).status == "running"  # what the dead run left
    [row] = list_runs(out.parent)
    assert row["status"] == f"stopped — resumable with `mixprec run {out / 'config.toml'}`"

    stopped = start_run(config, cache)
    wait_for_scoring(stopped)
    stopped.send_signal(signal.SIGTERM)
    _, err = stopped.communicate(timeout=60)
    assert stopped.returncode == 130, err
    assert "interrupted; finished steps and cells are kept" in err
    assert read_manifest(out).status == "interrupted"
    assert read_manifest(out).steps["analyze"].status == "failed"

    done = start_run(config, cache)
    stdout, err = done.communicate(timeout=600)
    assert done.returncode == 0, err
    assert read_manifest(out).status == "finished" and (out / "plans" / "ilp-6bits.json").is_file()
    assert "elapsed" in stdout  # progress lines in a log, not only a bar on a terminal


def test_a_second_writer_is_told_who_holds_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from mixprec.runlock import RunLock\n"
         "with RunLock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(120)",
         str(out)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(MixprecError, match=f"in use by pid {holder.pid} on "):
            run_pipeline(parse_config(config_for(out)), say=lambda _: None, progress=False)
        with pytest.raises(MixprecError, match=f"in use by pid {holder.pid}"):
            analyze(AnalysisSpec("digits-cnn", ("w:int8",), ("isolation",), ("layer",)),
                         out=out, progress=False)  # fmt: skip
        assert owner_alive(out)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    assert not owner_alive(out)  # the OS dropped the lock with its owner
    summary = run_pipeline(parse_config(config_for(out)), say=lambda _: None, progress=False)
    assert (out / "plans" / "ilp-6bits.json") in summary.written


def test_scores_rewritten_by_analyze_are_redone_from_the_config(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_pipeline(parse_config(config_for(out)), say=lambda _: None, progress=False)
    other = AnalysisSpec("digits-cnn", ("w:mxfp4", "w:int2"), ("isolation",), ("layer",))
    analyze(other, out=out, progress=False)
    assert set(ScoreTable.load(out / "scores.parquet").frame["scheme"]) == {"w:mxfp4", "w:int2"}
    summary = run_pipeline(parse_config(config_for(out)), say=lambda _: None, progress=False)
    assert "analyze" not in summary.skipped
    assert set(ScoreTable.load(out / "scores.parquet").frame["scheme"]) == {"w:int8", "w:int4_g128"}
    plan = json.loads((out / "plans" / "ilp-6bits.json").read_text())
    assert set(plan["assignment"].values()) <= {"w:int8", "w:int4_g128", "keep"}


def test_a_cache_entry_that_is_not_a_score_is_recomputed(tmp_path: Path) -> None:
    cache = CellCache(tmp_path / "cells")
    good = {"score": 0.5, "ci_low": 0.4, "ci_high": 0.6, "samples": 2, "seconds": 0.1,
            "status": "ok", "error": ""}  # fmt: skip
    for name, payload in {"good": good, "empty": {}, "nan": {**good, "score": float("nan")},
                          "inverted": {**good, "ci_low": 0.7}, "failed": {**good, "status": "x"},
                          "no samples": {**good, "samples": 0}}.items():  # fmt: skip
        key = f"{abs(hash(name)):064x}"[:64]
        path = tmp_path / "cells" / key[:2] / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"key": key, "checksum": _checksum(payload), "payload": payload}  # forged
        path.write_text(json.dumps(entry))
        assert (cache.get(key) is not None) == (name == "good"), name
        assert path.exists() == (name == "good"), name  # an invalid entry is dropped
    private = CellCache(tmp_path / "private")
    private.put("ab" * 32, good)
    assert private.get("ab" * 32) == good
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700


def test_the_dashboard_confines_runs_to_the_store(tmp_path: Path) -> None:
    from mixprec.dashboard import views

    store = tmp_path / "store"
    run_pipeline(parse_config(config_for(store / "mine")), say=lambda _: None, progress=False)
    outside = tmp_path / "outside"
    shutil.copytree(store / "mine", outside)
    assert views.run_path(store, "mine") == (store / "mine").resolve()
    for name in ("../outside", str(outside), "mine/../../outside", "..", ".", "", "a/b"):
        with pytest.raises(MixprecError, match="not a run folder name inside the store"):
            views.run_path(store, name)
    with pytest.raises(MixprecError, match="no run 'absent'"):
        views.run_path(store, "absent")


def test_the_dashboard_deep_link_cannot_leave_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    from mixprec.dashboard import views

    store = tmp_path / "store"
    store.mkdir()
    outside = tmp_path / "outside"
    run_pipeline(parse_config(config_for(outside)), say=lambda _: None, progress=False)
    before = sorted(p.relative_to(outside) for p in outside.rglob("*"))
    monkeypatch.setenv(views.RUNS_ENV, str(store))
    app = AppTest.from_file(str(Path(views.__file__).with_name("app.py")), default_timeout=60)
    app.query_params["run"] = "../outside"
    app.query_params["page"] = "Export"
    app.run()
    assert not app.exception
    assert "not a run folder name inside the store" in app.warning[0].value
    assert not app.button  # nothing to write with
    assert sorted(p.relative_to(outside) for p in outside.rglob("*")) == before


def test_a_config_asking_for_a_billion_workers_gets_what_the_machine_has(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`workers = 1e9` in TOML runs on Ray with as many workers as there are cores, and says so."""
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(fresh_cache(tmp_path)))  # every cell on Ray
    path = tmp_path / "big.toml"
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in config_for(tmp_path / "run").items())
    path.write_text(body + "workers = 1e9\n")
    config = load_config(path)
    assert config.workers == 10**9
    run_pipeline(config, say=lambda _: None, progress=False)
    room = os.cpu_count() or 1
    assert f"1000000000 workers asked for, this machine has room for {room}; using {room}" in (
        capsys.readouterr().err
    )
    serial = analyze(AnalysisSpec("digits-cnn", ("w:int8", "w:int4_g128"), ("isolation",),
                                       ("layer",)), progress=False,
                          cache=CellCache(tmp_path / "serial"))  # fmt: skip
    assert ScoreTable.load(tmp_path / "run" / "scores.parquet").same_scores(serial)
