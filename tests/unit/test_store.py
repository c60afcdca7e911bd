"""The typed run store: the manifest's schema, RunFolder as its one reader and writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixprec.errors import MixprecError
from mixprec.store import (
    AnalysisRecord,
    RunFolder,
    SpecRecord,
    is_run_folder,
    list_runs,
    read_manifest,
)

RECORD = AnalysisRecord(
    spec=SpecRecord(
        model="digits-cnn", schemes=["w:int8"], estimators=["fisher"], levels=["layer"], seed=3
    ),
    model="digits-cnn",
    fingerprint="f" * 64,
    calibration_hash="c" * 64,
    cells=12,
    failed=[],
    seconds=1.5,
    blocks={"stages.0": ["stages.0.conv1", "stages.0.conv2"]},
    torch="2.13.0",
)


def test_steps_analysis_and_status_round_trip(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path / "run")
    folder.prepare({"model": "digits-cnn"}, "digits-cnn")
    folder.record_analysis(RECORD)
    folder.scores_path.write_bytes(b"PAR1")
    folder.mark("analyze", "done", "abc", [folder.scores_path])
    assert folder.is_done("analyze", "abc", unchanged=True)
    assert not folder.is_done("analyze", "other inputs")
    folder.scores_path.write_bytes(b"PAR1 rewritten")
    assert not folder.is_done("analyze", "abc", unchanged=True)  # another command rewrote it
    folder.finish("finished")
    manifest = read_manifest(folder.path)
    assert manifest.status == "finished" and manifest.analysis == RECORD
    assert manifest.steps["analyze"].outputs == ["scores.parquet"]
    assert is_run_folder(folder.path)
    [row] = list_runs(tmp_path)
    assert (row["name"], row["model"], row["status"]) == ("run", "digits-cnn", "finished")


def test_file_places_come_from_the_folder(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    plan = folder.plan_path("ilp", "4.5bits")
    assert plan == tmp_path / "plans" / "ilp-4.5bits.json"
    assert folder.eval_path(plan) == tmp_path / "eval" / "ilp-4.5bits.json"
    assert (
        folder.export_path(plan, "compressed-tensors")
        == tmp_path / "exports" / "ilp-4.5bits-compressed-tensors"
    )
    plan.parent.mkdir()
    plan.write_text("{}")
    assert folder.plans() == [plan]


def test_keys_it_does_not_know_are_kept(tmp_path: Path) -> None:
    folder = RunFolder(tmp_path)
    folder.prepare({}, "digits-cnn")
    data = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**data, "note_for_me": [1, 2]}))
    folder.finish("finished")
    assert json.loads((tmp_path / "manifest.json").read_text())["note_for_me"] == [1, 2]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": {"analyze": {"status": "done"}}}, "key 'steps.analyze.inputs': Field required"),
        ({"cells": "many"}, "key 'cells': Input should be a valid integer"),
        ({"spec": {"model": "x"}}, "key 'spec.schemes': Field required"),
    ],
)
def test_a_wrongly_typed_manifest_is_one_line(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    folder = RunFolder(tmp_path)
    folder.prepare({}, "digits-cnn")
    data = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / "manifest.json").write_text(json.dumps({**data, **change}))
    with pytest.raises(MixprecError) as info:
        folder.manifest()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_peak_memory_counts_the_block_it_wraps() -> None:
    import numpy as np

    from mixprec.memory import peak_memory

    with peak_memory() as big:
        held = np.ones(300_000_000 // 8)  # 300 MB, touched
        held += 1
    del held
    with peak_memory() as small:
        np.ones(10)
    assert big.rss_mb is not None and small.rss_mb is not None
    assert big.rss_mb > small.rss_mb + 250  # the second block's peak starts again from now
