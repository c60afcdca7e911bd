"""The analysis runner: serial vs Ray, cache reuse, resume, corruption, failures, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from mixprec.errors import MixprecError
from mixprec.scheme import parse_list
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.cells import AnalysisSpec, Cell, CellWorker
from mixprec.sensitivity.cluster import schedule, start_local_ray, undo_environment_changes
from mixprec.sensitivity.configs import HessianConfig
from mixprec.sensitivity.runner import analyze
from mixprec.sensitivity.table import ScoreTable

ROOT = Path(__file__).resolve().parents[2]
# the three estimators; the Hessian with two probe rounds, its slowest part cut short
ESTIMATORS = (HessianConfig(max_probes=2), "fisher", "isolation")
SPEC = AnalysisSpec("digits-cnn", schemes=("w:mxfp4", "w:int8"), estimators=ESTIMATORS, chunk=3)


class CountingCache(CellCache):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts = 0

    def put(self, key: str, payload: dict[str, Any]) -> None:
        self.puts += 1
        super().put(key, payload)


@pytest.fixture
def cache(tmp_path: Path) -> CountingCache:
    return CountingCache(tmp_path / "cells")


def test_serial_table_and_outputs(cache: CountingCache, tmp_path: Path) -> None:
    table = analyze(SPEC, out=tmp_path / "run", cache=cache, progress=False)
    frame = table.frame
    assert len(frame) == 3 * 2 * 8  # estimators x schemes x (6 layers + 2 blocks)
    assert (frame["status"] == "ok").all() and (frame["samples"] == 200).all()  # 2 x 100 images
    assert (frame["ci_low"] <= frame["score"]).all() and (frame["score"] <= frame["ci_high"]).all()
    assert set(frame["level"]) == {"layer", "block"}
    saved = table.load(tmp_path / "run" / "scores.parquet")
    assert saved.same_scores(table)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["cells"] == 48 and manifest["failed"] == []
    assert manifest["fingerprint"] and manifest["spec"]["schemes"] == ["w:mxfp4", "w:int8"]
    mxfp4 = frame[(frame.scheme == "w:mxfp4") & (frame.unit == "head")]
    assert (mxfp4["cost_bytes"] == 320 // 2 + 10).all()  # 320 nibbles + 10 E8M0 scales


def test_ray_workers_give_the_identical_table(tmp_path: Path) -> None:
    serial = analyze(SPEC, cache=CellCache(tmp_path / "a"), progress=False)
    on_ray = analyze(SPEC, workers=2, cache=CellCache(tmp_path / "b"), progress=False)
    assert on_ray.same_scores(serial)


def test_local_ray_workers_keep_the_drivers_priority() -> None:
    """Ray nices its workers to 15 by default: beside any busy process they would barely run."""
    import ray

    environment = dict(os.environ)
    start_local_ray(1)
    try:
        niceness = ray.get(ray.remote(lambda: os.nice(0)).remote())
    finally:
        ray.shutdown()
        undo_environment_changes(environment)
    assert niceness == os.nice(0)


def test_added_schemes_compute_only_new_cells(cache: CountingCache) -> None:
    analyze(SPEC, cache=cache, progress=False)
    assert cache.puts == 48
    wider = AnalysisSpec("digits-cnn", schemes=("w:mxfp4", "w:int8", "w:nvfp4"),
                         estimators=ESTIMATORS, chunk=3)  # fmt: skip
    table = analyze(wider, cache=cache, progress=False)
    assert cache.puts == 48 + 24
    assert len(table.frame) == 72


def test_interrupted_run_resumes_to_the_same_table(
    cache: CountingCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = analyze(SPEC, cache=CellCache(tmp_path / "ref"), progress=False)
    real_run = CellWorker.run
    calls = {"n": 0}

    def interrupted(self: CellWorker, cell: Cell) -> list[dict[str, Any]]:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_run(self, cell)

    monkeypatch.setattr(CellWorker, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        analyze(SPEC, cache=cache, progress=False)
    done = cache.puts
    assert 0 < done < 48
    monkeypatch.setattr(CellWorker, "run", real_run)
    resumed = analyze(SPEC, cache=cache, progress=False)
    assert cache.puts == 48  # only the missing cells were computed
    assert resumed.same_scores(reference)


def test_corrupt_entries_are_recomputed(cache: CountingCache) -> None:
    first = analyze(SPEC, cache=cache, progress=False)
    files = sorted((cache.root).rglob("*.json"))
    files[0].write_text(files[0].read_text().replace('"score": ', '"score": 1'))
    files[1].write_text("{truncated")
    again = analyze(SPEC, cache=cache, progress=False)
    assert cache.puts == 48 + 2
    assert again.same_scores(first)


def test_a_nan_cell_is_marked_failed_and_the_rest_finish(
    cache: CountingCache, tmp_path: Path
) -> None:
    spec = AnalysisSpec(
        "module:tests.helpers.factories:mlp_overflowing_fp16",
        schemes=("w:fp16", "w:int8"),
        estimators=("isolation",),
    )
    table = analyze(spec, cache=cache, out=tmp_path / "run", progress=False)
    failed = table.frame[table.frame["status"] != "ok"]
    assert list(zip(failed["unit"], failed["scheme"], strict=True)) == [("2", "w:fp16")]
    assert "2 under w:fp16" in failed["error"].iloc[0]
    assert (table.frame["status"] == "ok").sum() == 3
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert [f["unit"] for f in manifest["failed"]] == ["2"]
    assert cache.puts == 3  # the failed cell is retried next time, never cached


def test_a_killed_ray_worker_is_restarted_and_the_table_completes(
    cache: CountingCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    marker = tmp_path / "died"
    monkeypatch.setenv("MIXPREC_TEST_DIE_MARKER", str(marker))
    monkeypatch.setenv("MIXPREC_TEST_DRIVER_PID", str(os.getpid()))
    spec = AnalysisSpec(
        "module:tests.helpers.factories:dies_once",
        schemes=("w:int8", "w:mxfp4"),
        estimators=("isolation",),
    )
    table = analyze(spec, workers=1, cache=cache, progress=False)
    assert marker.exists()  # a worker really died
    assert (table.frame["status"] == "ok").all() and len(table.frame) == 4
    serial = analyze(spec, cache=CellCache(tmp_path / "serial"), progress=False)
    assert serial.same_scores(table)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (AnalysisSpec("digits-cnn", estimators=("taylor",)), "unknown estimator 'taylor'"),
        (AnalysisSpec("digits-cnn", schemes=("w:int9",)), "unknown number format 'int9'"),
        (AnalysisSpec("digits-cnn", levels=("row",)), "unknown level 'row'"),
        (AnalysisSpec("digits-cnn", calib_batches=0), "must be at least 1"),
        (AnalysisSpec("module:tests.helpers.factories:no_calibration"), "empty calibration set"),
        (
            AnalysisSpec("module:tests.helpers.factories:small_mlp", estimators=("fisher",)),
            "needs a task loss",
        ),
    ],
)
def test_bad_input(spec: AnalysisSpec, message: str, cache: CountingCache) -> None:
    with pytest.raises(MixprecError, match=message):
        analyze(spec, cache=cache, progress=False)


def test_unreachable_ray_address_names_it(cache: CountingCache) -> None:
    with pytest.raises(MixprecError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:9"):
        analyze(SPEC, address="127.0.0.1:9", cache=cache, progress=False)


def test_cli_analyze_then_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mixprec.cli import main

    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path / "cache"))
    run = tmp_path / "run"
    argv = ["analyze", "-m", "digits-cnn", "--schemes", "w:int8,w:nvfp4,a:nvfp4", "--out", str(run)]
    with pytest.raises(SystemExit) as done:
        main([*argv, "--estimators", "fisher,isolation", "--calib-batches", "1"])
    assert done.value.code == 0
    table = ScoreTable.load(run / "scores.parquet")
    assert set(table.frame["scheme"]) == {"w:int8", "w:nvfp4,a:nvfp4"}
    assert (table.frame["samples"] == 100).all()  # one batch of 100 images
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["report", str(run), "--top", "1"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "Most sensitive layers" in out and "measured vs sum of layers" in out


def test_cli_analyze_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mixprec.cli import main

    for argv, message in [
        (["--estimators", "taylor"], "unknown estimator 'taylor'"),
        (["--schemes", "w:int9"], "unknown number format 'int9'"),
        (["--address", "127.0.0.1:9", "--estimators", "fisher"], "cannot reach the Ray cluster"),
    ]:
        with pytest.raises(SystemExit) as done:
            main(["analyze", "-m", "digits-cnn", "--out", str(tmp_path / "x"), *argv])
        err = capsys.readouterr().err
        assert done.value.code == 2 and message in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as done:
        main(["report", str(tmp_path / "nothing")])
    assert done.value.code == 2 and "no run folder at" in capsys.readouterr().err


def test_python_api_and_scheme_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mixprec

    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path))
    assert parse_list("w:mxfp4,w:nvfp4,a:nvfp4;keep") == [
        "w:mxfp4",
        "w:nvfp4,a:nvfp4",
        "keep",
    ]
    spec = mixprec.AnalysisSpec("digits-cnn", ("w:int4",), ("isolation",), ("block",))
    table = mixprec.analyze(spec, progress=False)
    assert list(table.frame["unit"]) == ["stages.0", "stages.1"]
    assert list(table.frame["level"]) == ["block", "block"]


def test_a_worker_with_other_weights_refuses_to_score() -> None:
    with pytest.raises(MixprecError, match="other weights than the driver"):
        CellWorker(SPEC, fingerprint="0" * 64)


def test_statistics_heavy_cells_stay_on_one_worker() -> None:
    cells = [Cell(e, "w:int8", ()) for e in ("hessian", "isolation", "fisher", "isolation")]
    queues = schedule(SPEC, cells, workers=2)
    assert queues.pinned == {0: [0], 1: [2]} and queues.free == [1, 3]
    assert queues.take(0) == 0 and queues.take(0) == 1  # its own first, then shared work
    assert queues.take(1) == 2 and queues.take(1) == 3
    assert not queues.has_work(0) and not queues.has_work(1)
    solo = schedule(SPEC, cells, workers=1)
    assert solo.pinned == {0: [0, 2]}


def test_cli_ctrl_c_keeps_finished_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mixprec.cli import main

    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path / "cache"))
    real_run = CellWorker.run
    calls: list[int] = []  # units each finished cell scored

    def interrupted(self: CellWorker, cell: Cell) -> list[dict[str, Any]]:
        if len(calls) == 1:
            calls.append(0)
            raise KeyboardInterrupt
        results = real_run(self, cell)
        calls.append(len(results))
        return results

    monkeypatch.setattr(CellWorker, "run", interrupted)
    argv = ["analyze", "-m", "digits-cnn", "--schemes", "w:int8", "--out", str(tmp_path / "r")]
    argv += ["--estimators", "fisher,isolation"]
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 130
    assert "interrupted; finished cells are cached" in capsys.readouterr().err
    entries = list((tmp_path / "cache" / "cells").rglob("*.json"))
    assert len(entries) == calls[0] >= 1  # exactly the first cell's scores were kept
    assert not (tmp_path / "r" / "scores.parquet").exists()  # no partial table as if complete
    with pytest.raises(SystemExit) as done:
        main(argv)  # resumed: the cached cell is not scored again
    assert done.value.code == 0
    table = ScoreTable.load(tmp_path / "r" / "scores.parquet")
    assert sum(calls[2:]) == len(table.frame) - calls[0]
