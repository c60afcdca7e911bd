"""Bad, careless and hostile input through the real CLI: exit 2, one line, no traceback, and
every file the user owns (and the run's own inputs) byte-identical afterwards."""

from __future__ import annotations

import hashlib
import json
import shutil
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from mixprec.cli import main

SCHEMES = "w:int8,w:int4_g128"
MODELS = "module:tests.helpers.hostile_models"


@dataclass(frozen=True)
class Workspace:
    """A scored run, a plan, a Pareto frame and a folder of the user's own files."""

    root: Path
    run: Path
    plan: Path
    mine: Path

    def sentinels(self) -> dict[str, str]:
        files = [p for p in sorted(self.root.rglob("*")) if p.is_file()]
        kept = [p for p in files if "sac" not in p.parts and p.name != ".lock"]
        return {
            str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in kept
        }


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str
    trace: str | None


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Outcome:
    """Run the CLI in this process; an exception that escapes it is a traceback."""
    trace = None
    code = 0
    try:
        main(argv)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        trace, code = traceback.format_exc(), 1
    out, err = capsys.readouterr()
    return Outcome(code, out, err, trace)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    run = root / "run"
    for argv in (
        [
            "analyze",
            "-m",
            "digits-cnn",
            "--schemes",
            SCHEMES,
            "--estimators",
            "isolation",
            "--levels",
            "layer",
            "--calib-batches",
            "1",
            "--out",
            str(run),
        ],
        ["search", str(run), "--budget", "6bits", "--out", str(root / "plan.json"), "--no-measure"],
        ["pareto", str(run), "--budgets", "5:7:1"],
    ):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code in (0, None), argv
    mine = root / "mine"
    mine.mkdir()
    (mine / "config.toml").write_text("# my own config\n")
    (mine / "manifest.json").write_text('{"mine": true}\n')
    (mine / "report.md").write_text("# my report\n")
    (mine / "notes.txt").write_text("do not lose\n")
    return root


@pytest.fixture
def ws(template: Path, tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    shutil.copytree(template, root)
    return Workspace(root, root / "run", root / "plan.json", root / "mine")


def write_config(ws: Workspace, name: str, **keys: object) -> Path:
    body = {
        "model": "digits-cnn",
        "schemes": ["w:int8"],
        "estimators": ["isolation"],
        "levels": ["layer"],
        "budgets": ["6bits"],
        "exports": ["json"],
        **keys,
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in body.items()]
    path = ws.root / name
    path.write_text("\n".join(lines) + "\n")
    return path


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def evil_plan(ws: Workspace) -> Path:
    """A plan whose model source would import a module that leaves a marker when imported."""
    (ws.root / "evil_factory.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(ws.root / 'IMPORTED')!r}).write_text('ran')\n"
        "def make():\n    raise SystemExit('ran')\n"
    )
    edit_json(ws.plan, lambda d: d.update(model="module:evil_factory:make"))
    return ws.plan


def evil_manifest(ws: Workspace) -> Path:
    evil_plan(ws)
    edit_json(
        ws.run / "manifest.json", lambda d: d["spec"].update(model="module:evil_factory:make")
    )
    return ws.run


def scores_with(ws: Workspace, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    path = ws.run / "scores.parquet"
    change(pd.read_parquet(path)).to_parquet(path, index=False)


def nan_scores(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=float("nan"))


def negative_scores(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(score=-frame["score"].abs() - 1.0)


def all_failed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(status="failed", score=float("nan"), error="loss is not finite")


def duplicate_rows(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.head(3)])


def hf_folder(ws: Workspace, config: str | None, weights: bool = False) -> str:
    folder = ws.root / "hf"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(config)
    if weights:
        (folder / "model.safetensors").write_bytes(b"\x00" * 16)
    return f"hf:{folder}"


# name -> (set-up returning argv, a fragment the one-line error must contain)
Case = tuple[Callable[[Workspace], list[str]], str]
CASES: dict[str, Case] = {
    # 1. nothing the user owns is lost
    "run into a folder of the user's": (
        lambda w: ["run", str(write_config(w, "c.toml", output=str(w.mine)))],
        "not a mixprec run",
    ),
    "run into /": (lambda w: ["run", str(write_config(w, "c.toml", output="/"))], "of its own"),
    "run into ''": (lambda w: ["run", str(write_config(w, "c.toml", output=""))], "names no"),
    "analyze --out ''": (
        lambda w: ["analyze", "-m", "digits-cnn", "--schemes", "w:int8", "--out", ""],
        "names no folder",
    ),
    "analyze --out a user folder": (
        lambda w: ["analyze", "-m", "digits-cnn", "--schemes", "w:int8", "--out", str(w.mine)],
        "not a mixprec run",
    ),
    "analyze --out a file": (
        lambda w: ["analyze", "-m", "digits-cnn", "--out", str(w.mine / "notes.txt")],
        "is a file",
    ),
    "search --out its own scores": (
        lambda w: [
            "search",
            str(w.run),
            "--budget",
            "6bits",
            "--out",
            str(w.run / "scores.parquet"),
        ],
        "own input",
    ),
    "search --out the run manifest": (
        lambda w: [
            "search",
            str(w.run),
            "--budget",
            "6bits",
            "--out",
            str(w.run / "manifest.json"),
        ],
        "own input",
    ),
    "search --out the run's report": (
        lambda w: ["search", str(w.run), "--budget", "6bits", "--out", str(w.run / "report.md")],
        "run folder's own",
    ),
    "search --out a user file": (
        lambda w: ["search", str(w.run), "--budget", "6bits", "--out", str(w.mine / "notes.txt")],
        "not written by mixprec",
    ),
    "search --out a folder": (
        lambda w: ["search", str(w.run), "--budget", "6bits", "--out", str(w.mine)],
        "is a folder",
    ),
    "search --out under a file": (
        lambda w: [
            "search",
            str(w.run),
            "--budget",
            "6bits",
            "--out",
            str(w.mine / "notes.txt" / "p.json"),
        ],
        "not a writable folder",
    ),
    "export --out its own plan": (
        lambda w: ["export", str(w.plan), "--to", "json", "--out", str(w.plan)],
        "own input",
    ),
    "export --out a user file": (
        lambda w: ["export", str(w.plan), "--to", "json", "--out", str(w.mine / "config.toml")],
        "not written by mixprec",
    ),
    "export --to bogus": (
        lambda w: ["export", str(w.plan), "--to", "onnx", "--out", str(w.root / "x")],
        "unknown export target 'onnx'; valid: json, compressed-tensors",
    ),
    # 2. opening a file never runs code
    "evaluate a plan naming module:": (
        lambda w: ["evaluate", "--plan", str(evil_plan(w))],
        "would import and run code",
    ),
    "export a plan naming module:": (
        lambda w: ["export", str(evil_plan(w)), "--to", "gguf", "--out", str(w.root / "x.gguf")],
        "would import and run code",
    ),
    "search a run whose manifest names module:": (
        lambda w: [
            "search",
            str(evil_manifest(w)),
            "--budget",
            "6bits",
            "--out",
            str(w.root / "p2.json"),
        ],
        "would import and run code",
    ),
    # 4. every bad value is one line
    "report on a corrupt score table": (
        lambda w: [
            (w.run / "scores.parquet").write_bytes(b"PAR1garbage") and "report",
            str(w.run),
        ],
        "scores.parquet",
    ),
    "search on an empty score table file": (
        lambda w: [
            (w.run / "scores.parquet").write_bytes(b"") or "search",
            str(w.run),
            "--budget",
            "6bits",
            "--out",
            str(w.root / "p2.json"),
        ],
        "scores.parquet",
    ),
    "pareto on a truncated score table": (
        lambda w: [
            (w.run / "scores.parquet").write_bytes((w.run / "scores.parquet").read_bytes()[:200])
            and "pareto",
            str(w.run),
        ],
        "scores.parquet",
    ),
    "report on a score table of other columns": (
        lambda w: [
            pd.DataFrame({"a": [1]}).to_parquet(w.run / "scores.parquet") or "report",
            str(w.run),
        ],
        "lacks columns",
    ),
    "search on wrong-typed scores": (
        lambda w: [
            scores_with(w, lambda f: f.assign(score="high")) or "search",
            str(w.run),
            "--budget",
            "6bits",
            "--out",
            str(w.root / "p2.json"),
        ],
        "score",
    ),
    "search on NaN scores": (
        lambda w: [
            scores_with(w, nan_scores) or "search",
            str(w.run),
            "--budget",
            "6bits",
            "--out",
            str(w.root / "p2.json"),
        ],
        "not finite",
    ),
    "search on negative scores": (
        lambda w: [
            scores_with(w, negative_scores) or "search",
            str(w.run),
            "--budget",
            "6bits",
            "--out",
            str(w.root / "p2.json"),
        ],
        "negative",
    ),
    "search on duplicate scores": (
        lambda w: [
            scores_with(w, duplicate_rows) or "search",
            str(w.run),
            "--budget",
            "6bits",
            "--out",
            str(w.root / "p2.json"),
        ],
        "more than once",
    ),
    "search on a corrupt manifest": (
        lambda w: [
            (w.run / "manifest.json").write_text("{") and "search",
            str(w.run),
            "--budget",
            "6bits",
            "--out",
            str(w.root / "p2.json"),
        ],
        "manifest",
    ),
    "report on an empty manifest": (
        lambda w: [(w.run / "manifest.json").write_text("") or "report", str(w.run)],
        "manifest",
    ),
    "search on a manifest that is a list": (
        lambda w: [
            (w.run / "manifest.json").write_text("[1]") and "search",
            str(w.run),
            "--budget",
            "6bits",
            "--out",
            str(w.root / "p2.json"),
        ],
        "manifest",
    ),
    "search on a manifest whose spec.seed is text": (
        lambda w: [
            edit_json(w.run / "manifest.json", lambda d: d["spec"].update(seed="zero")) or "search",
            str(w.run),
            "--budget",
            "6bits",
            "--out",
            str(w.root / "p2.json"),
        ],
        "key 'spec.seed'",
    ),
    "report on a manifest whose blocks are a list": (
        lambda w: [
            edit_json(w.run / "manifest.json", lambda d: d.update(blocks=[1, 2])) or "report",
            str(w.run),
        ],
        "key 'blocks'",
    ),
    "search on store_version 999": (
        lambda w: [
            edit_json(w.run / "manifest.json", lambda d: d.update(store_version=999)) or "search",
            str(w.run),
            "--budget",
            "6bits",
            "--out",
            str(w.root / "p2.json"),
        ],
        "store version 999",
    ),
    "--out checked before analyze works": (
        lambda w: ["analyze", "-m", "digits-cnn", "--out", str(w.mine / "notes.txt" / "run")],
        "not a writable folder",
    ),
    "budget nanbits": (
        lambda w: ["search", str(w.run), "--budget", "nanbits", "--out", str(w.root / "p.json")],
        "nan",
    ),
    "budget 1e999bits": (
        lambda w: ["search", str(w.run), "--budget", "1e999bits", "--out", str(w.root / "p.json")],
        "1e999",
    ),
    "budget infMB": (
        lambda w: ["search", str(w.run), "--budget", "infMB", "--out", str(w.root / "p.json")],
        "inf",
    ),
    "--kappa nan": (
        lambda w: [
            "search",
            str(w.run),
            "--budget",
            "6bits",
            "--kappa",
            "nan",
            "--out",
            str(w.root / "p.json"),
        ],
        "--kappa",
    ),
    "--kappa -1": (
        lambda w: [
            "search",
            str(w.run),
            "--budget",
            "6bits",
            "--kappa",
            "-1",
            "--out",
            str(w.root / "p.json"),
        ],
        "--kappa",
    ),
    "--max-bops nan": (
        lambda w: [
            "search",
            str(w.run),
            "--budget",
            "6bits",
            "--max-bops",
            "nan",
            "--out",
            str(w.root / "p.json"),
        ],
        "--max-bops",
    ),
    "--max-latency -1": (
        lambda w: [
            "search",
            str(w.run),
            "--budget",
            "6bits",
            "--max-latency",
            "-1",
            "--out",
            str(w.root / "p.json"),
        ],
        "--max-latency",
    ),
    "--trials 0": (
        lambda w: [
            "search",
            str(w.run),
            "--budget",
            "6bits",
            "--method",
            "optuna",
            "--trials",
            "0",
            "--out",
            str(w.root / "p.json"),
        ],
        "--trials",
    ),
    "pareto 3:nan:1": (lambda w: ["pareto", str(w.run), "--budgets", "3:nan:1"], "3:nan:1"),
    "pareto 3:1e12:1": (lambda w: ["pareto", str(w.run), "--budgets", "3:1e12:1"], "at most"),
    "pareto 4bits,nanbits": (
        lambda w: ["pareto", str(w.run), "--budgets", "4bits,nanbits"],
        "nanbits",
    ),
    "pareto --budgets ','": (lambda w: ["pareto", str(w.run), "--budgets", ","], "1 to"),
    "pareto 1e999:2e999:1": (
        lambda w: ["pareto", str(w.run), "--budgets", "1e999:2e999:1"],
        "1e999",
    ),
    "pareto --estimator bogus": (
        lambda w: ["pareto", str(w.run), "--estimator", "bogus"],
        "bogus",
    ),
    "pareto --method sac": (
        lambda w: ["pareto", str(w.run), "--method", "sac"],
        "use ilp, greedy or uniform",
    ),
    "search --estimator fisher (not scored)": (
        lambda w: [
            "search",
            str(w.run),
            "--budget",
            "6bits",
            "--estimator",
            "fisher",
            "--out",
            str(w.root / "p.json"),
        ],
        "fisher",
    ),
    "analyze --schemes ''": (
        lambda w: ["analyze", "-m", "digits-cnn", "--schemes", "", "--out", str(w.root / "n")],
        "--schemes",
    ),
    "analyze --estimators ''": (
        lambda w: ["analyze", "-m", "digits-cnn", "--estimators", "", "--out", str(w.root / "n")],
        "--estimators",
    ),
    "analyze --levels ''": (
        lambda w: ["analyze", "-m", "digits-cnn", "--levels", "", "--out", str(w.root / "n")],
        "--levels",
    ),
    "analyze --workers -1": (
        lambda w: ["analyze", "-m", "digits-cnn", "--workers", "-1", "--out", str(w.root / "n")],
        "--workers",
    ),
    "analyze --calib-batches 0": (
        lambda w: [
            "analyze",
            "-m",
            "digits-cnn",
            "--calib-batches",
            "0",
            "--out",
            str(w.root / "n"),
        ],
        "--calib-batches",
    ),
    "report --top -1": (lambda w: ["report", str(w.run), "--top", "-1"], "--top"),
    "report on a missing folder": (lambda w: ["report", str(w.root / "absent")], "absent"),
    "export a plan naming missing modules (json)": (
        lambda w: [
            edit_json(w.plan, lambda d: d["assignment"].update({"nope.layer": "w:int8"}))
            or "export",
            str(w.plan),
            "--to",
            "json",
            "--out",
            str(w.root / "x.json"),
        ],
        "nope.layer",
    ),
    "evaluate a plan that is not JSON": (
        lambda w: [
            (w.mine / "notes.txt").exists() and "evaluate",
            "--plan",
            str(w.mine / "notes.txt"),
        ],
        "not JSON",
    ),
    "hf: garbage config": (
        lambda w: ["units", "-m", hf_folder(w, "{not json", weights=True)],
        "config.json is not JSON",
    ),
    "hf: unknown architecture": (
        lambda w: ["units", "-m", hf_folder(w, '{"model_type": "nonexistent-arch"}', True)],
        "cannot read its config",
    ),
    "hf: auto_map": (
        lambda w: [
            "units",
            "-m",
            hf_folder(w, '{"model_type": "bert", "auto_map": {"AutoModel": "x.Y"}}', True),
        ],
        "remote code",
    ),
    "hf: no weights": (
        lambda w: ["units", "-m", hf_folder(w, '{"model_type": "bert"}')],
        "no safetensors",
    ),
    "hf: garbage weights": (
        lambda w: ["units", "-m", hf_folder(w, '{"model_type": "bert"}', weights=True)],
        "cannot load the model",
    ),
    "hf: no config": (lambda w: ["units", "-m", hf_folder(w, None)], "no config.json"),
    "analyze a model whose forward raises": (
        lambda w: [
            "analyze",
            "-m",
            f"{MODELS}:raising",
            "--estimators",
            "isolation",
            "--out",
            str(w.root / "n"),
        ],
        "raised ValueError",
    ),
    "analyze a model whose outputs are NaN": (
        lambda w: [
            "analyze",
            "-m",
            f"{MODELS}:not_finite",
            "--estimators",
            "isolation",
            "--out",
            str(w.root / "n"),
        ],
        "non-finite outputs",
    ),
    "search a table whose every score failed": (
        lambda w: [
            scores_with(w, all_failed) or "search",
            str(w.run),
            "--budget",
            "6bits",
            "--out",
            str(w.root / "p2.json"),
        ],
        "every isolation layer score failed",
    ),
    "dashboard --port 99999": (lambda w: ["dashboard", "--port", "99999"], "99999"),
    "dashboard --host bogus.invalid": (
        lambda w: ["dashboard", "--host", "bogus.invalid"],
        "bogus.invalid",
    ),
    "jobs at a port that is no Ray dashboard": (
        lambda w: ["jobs", "list", "--address", "http://127.0.0.1:1"],
        "cannot reach",
    ),
    "config workers = -3": (
        lambda w: ["run", str(write_config(w, "c.toml", output=str(w.root / "new"), workers=-3))],
        "workers",
    ),
    "config budgets = ['nanbits']": (
        lambda w: [
            "run",
            str(write_config(w, "c.toml", output=str(w.root / "new"), budgets=["nanbits"])),
        ],
        "budgets",
    ),
    "config schemes = []": (
        lambda w: ["run", str(write_config(w, "c.toml", output=str(w.root / "new"), schemes=[]))],
        "schemes",
    ),
    "config methods with a misspelt setting": (
        lambda w: ["run", str(with_line(write_config(w, "c.toml", output=str(w.root / "new")),
                                        'methods = [{name = "optuna", trails = 5}]'))],
        "unknown optuna setting 'trails'; valid: kappa, seed, sampler, trials",
    ),
    "config estimators with a setting of the wrong type": (
        lambda w: ["run", str(with_line(write_config(w, "c.toml", output=str(w.root / "new")),
                                        'estimators = [{name = "hessian", max_probes = "many"}]'))],
        "hessian setting max_probes: input should be a valid integer",
    ),
}  # fmt: skip


def with_line(config: Path, line: str) -> Path:
    """The config with one key replaced by a raw TOML line (inline tables are not JSON)."""
    key = line.split("=")[0].strip()
    kept = [k for k in config.read_text().splitlines() if not k.startswith(f"{key} =")]
    config.write_text("\n".join([*kept, line]) + "\n")
    return config


def test_evaluate_json_of_a_nan_model_is_strict_json(capsys: pytest.CaptureFixture[str]) -> None:
    result = cli(["evaluate", "-m", f"{MODELS}:not_finite", "-s", "w:int8", "--json"], capsys)
    assert result.trace is None and result.code == 0, result.err
    payload = json.loads(result.out)  # would fail on a bare NaN
    assert payload["metrics"]["output_mse"] is None and payload["not_finite"] == ["output_mse"]
    assert "not finite" in result.err


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_loses_nothing(
    name: str, ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(ws.root))  # where a planted evil_factory would import from
    argv, expected = CASES[name][0](ws), CASES[name][1]
    before = ws.sentinels()  # after the set-up: the command itself must change nothing
    result = cli(argv, capsys)
    assert result.trace is None, result.trace
    assert result.code == 2, (result.code, result.out[-2000:], result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mixprec: "), result.err
    assert expected.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in result.out + result.err
    after = ws.sentinels()
    changed = [k for k, v in before.items() if after.get(k) != v]
    assert not changed, f"files changed or lost: {changed}"
    assert not (ws.root / "IMPORTED").exists(), "a module named inside a file was imported"
