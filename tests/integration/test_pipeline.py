"""`mixprec run`: every step's files, resuming, redoing changed steps, broken folders, `runs`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mixprec.config import parse_config
from mixprec.errors import MixprecError
from mixprec.pipeline import run_pipeline
from mixprec.plan import PrecisionPlan
from mixprec.sensitivity.table import ScoreTable
from mixprec.store import list_runs
from tests.helpers.cli import run

ROOT = Path(__file__).resolve().parents[2]


def config_for(out: Path, **changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "model": "digits-cnn",
        "output": str(out),
        "schemes": ["w:mxfp4", "w:int8"],
        "estimators": ["isolation"],
        "levels": ["layer"],
        "budgets": ["5bits", "1bits"],
        "methods": ["ilp", "greedy"],
        "exports": ["json", "compressed-tensors", "llamacpp"],
    }
    return {**base, **changes}


def steps(folder: Path) -> dict[str, dict[str, object]]:
    return json.loads((folder / "manifest.json").read_text())["steps"]


def test_a_run_writes_every_step_and_a_rerun_skips_them(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "digits"
    lines: list[str] = []
    summary = run_pipeline(parse_config(config_for(out)), say=lines.append, progress=False)
    assert sorted(p.name for p in (out / "plans").iterdir()) == [
        "greedy-5bits.json",
        "ilp-5bits.json",
    ]
    assert (out / "eval" / "ilp-5bits.json").is_file() and (out / "report.md").is_file()
    assert (out / "exports" / "ilp-5bits.json").is_file()
    assert not (out / "exports" / "ilp-5bits-compressed-tensors").exists()  # not its schemes
    assert not (out / "exports" / "ilp-5bits.llamacpp.txt").exists()  # a CNN has no GGUF names
    plan = PrecisionPlan.load(out / "plans" / "ilp-5bits.json")
    assert plan.model == "digits-cnn" and plan.predicted["bits_per_weight"] <= 5
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["spec"]["model"] == "digits-cnn"
    recorded = steps(out)
    assert recorded["search ilp 1bits"]["note"].startswith("budget 1bits is infeasible")
    assert "no GGUF architecture" in recorded["export ilp-5bits llamacpp"]["note"]
    assert all(s["status"] == "done" for s in recorded.values())
    report = (out / "report.md").read_text()
    made = plan.provenance["strategy"]  # or a uniform plan that measured better (the guard)
    assert made == "ilp" or "than the ilp plan" in plan.provenance["note"], made
    assert f"| ilp-5bits | {made} | 5bits |" in report and "search greedy 1bits" in report
    assert "vs uniform w:mxfp4" in plan.provenance["uniform"]  # measured against uniform too
    guarded = report.split("## Against uniform plans")[1]
    assert "- ilp-5bits: " in guarded and "vs uniform w:mxfp4" in guarded
    assert len(summary.plans) == 2 and summary.plans[0]["accuracy"] > 0.5

    again = run_pipeline(parse_config(config_for(out)), say=lines.append, progress=False)
    assert again.written == [] and len(again.skipped) == len(recorded)
    [row] = list_runs(tmp_path / "runs")
    assert (row["name"], row["model"], row["status"]) == ("digits", "digits-cnn", "finished")


def test_changed_inputs_redo_only_their_steps(tmp_path: Path) -> None:
    out = tmp_path / "digits"
    run_pipeline(parse_config(config_for(out, methods=["ilp"])), say=lambda _: None, progress=False)
    plan_path = out / "plans" / "ilp-5bits.json"
    edited = json.loads(plan_path.read_text())
    edited["assignment"] = {k: "w:int8" for k in edited["assignment"]}
    plan_path.write_text(json.dumps(edited))
    (out / "eval" / "ilp-5bits.json").unlink()  # a lost output is made again, too
    changed = parse_config(config_for(out, methods=["ilp"], budgets=["5bits", "6bits"]))
    summary = run_pipeline(changed, say=lambda _: None, progress=False)
    assert "analyze" in summary.skipped and "search ilp 5bits" in summary.skipped
    rewritten = {p.relative_to(out).as_posix() for p in summary.written}
    assert {"plans/ilp-6bits.json", "eval/ilp-5bits.json", "exports/ilp-5bits.json"} <= rewritten
    assert "search ilp 1bits" not in steps(out)  # a step the config dropped is forgotten
    measured = json.loads((out / "eval" / "ilp-5bits.json").read_text())
    assert measured["bits_per_weight"] > 7.9  # the edited (all int8) plan was evaluated


def test_half_written_and_unwritable_run_folders(tmp_path: Path) -> None:
    out = tmp_path / "broken"
    out.mkdir()
    (out / "manifest.json").write_text('{"steps": {"analyze": ')
    with pytest.raises(MixprecError, match="is not a readable run manifest"):
        run_pipeline(parse_config(config_for(out)), say=lambda _: None, progress=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(MixprecError, match="cannot write the run folder"):
        run_pipeline(parse_config(config_for(blocker / "run")), progress=False)
    rows = list_runs(tmp_path)
    assert {"name": "broken", "model": "?", "status": "unreadable", "date": ""} in rows


def test_cli_run_and_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "store" / "cli"
    config = tmp_path / "study.toml"
    config.write_text(
        f'model = "digits-cnn"\noutput = "{out}"\nschemes = ["w:mxfp4", "w:int8"]\n'
        'estimators = ["isolation"]\nlevels = ["layer"]\nbudgets = ["6bits"]\nexports = ["json"]\n'
    )
    code, stdout, _ = run(["run", str(config), "--quiet"], capsys)
    assert code == 0 and "report.md" in stdout and (out / "exports" / "ilp-6bits.json").is_file()
    code, stdout, _ = run(["runs", "--root", str(tmp_path / "store"), "--json"], capsys)
    assert code == 0 and json.loads(stdout)[0]["status"] == "finished"
    config.write_text(config.read_text() + 'colour = "blue"\n')
    code, _, err = run(["run", str(config)], capsys)
    assert code == 2 and "unknown key 'colour'; valid keys: model, output" in err
    code, _, err = run(["runs", "--root", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "no run store at" in err


def test_a_killed_ray_worker_still_gives_the_serial_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    marker = tmp_path / "died"
    monkeypatch.setenv("MIXPREC_TEST_DIE_MARKER", str(marker))
    monkeypatch.setenv("MIXPREC_TEST_DRIVER_PID", str(os.getpid()))
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path / "ray-cache"))  # every cell computed
    changes = {
        "model": "module:tests.helpers.factories:dies_once",
        "exports": ["json"],
        "schemes": ["w:int8", "w:mxfp4"],
        "budgets": ["6bits"],
        "methods": ["ilp"],
    }
    on_ray = parse_config(config_for(tmp_path / "ray", workers=1, **changes))
    run_pipeline(on_ray, say=lambda _: None, progress=False)
    assert marker.exists()  # a Ray worker really died mid-analysis (never this process)
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path / "fresh-cache"))  # no cached cells
    serial = parse_config(config_for(tmp_path / "serial", **changes))
    run_pipeline(serial, say=lambda _: None, progress=False)
    ray_table = ScoreTable.load(tmp_path / "ray" / "scores.parquet")
    assert ray_table.same_scores(ScoreTable.load(tmp_path / "serial" / "scores.parquet"))
    assert json.loads((tmp_path / "ray" / "manifest.json").read_text())["status"] == "finished"
    assert (tmp_path / "ray" / "plans" / "ilp-6bits.json").is_file()
