"""A model scored, searched, measured and exported in bf16 through the CLI and `mixprec run`:
the manifest and plan record the dtype, a plan is measured in the dtype it was made in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixprec.sensitivity.table import ScoreTable
from mixprec.store import read_manifest
from tests.helpers.cli import run
from tests.helpers.models import make_llama

SCHEMES = ["--schemes", "w:int8,w:int4_g32", "--levels", "layer"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("fp32") / "llama"
    make_llama().save_pretrained(path)  # stored in float32: --dtype bf16 casts it
    return f"hf:{path}"


def test_scored_searched_measured_in_bf16(
    model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, plan = tmp_path / "run", tmp_path / "plan.json"
    code, _, err = run(["analyze", "-m", model, *SCHEMES, "--dtype", "bf16", "--device", "cpu",
                        "--out", str(folder)], capsys)  # fmt: skip
    assert code == 0, err
    spec = read_manifest(folder).analysis.spec  # type: ignore[union-attr]
    assert (spec.dtype, spec.device) == ("bf16", "cpu")
    table = ScoreTable.load(folder / "scores.parquet")
    assert set(table.frame["estimator"]) == {"hessian", "fisher", "isolation"}
    assert (table.frame["status"] == "ok").all()
    fp32 = tmp_path / "fp32"
    code, _, err = run(["analyze", "-m", model, *SCHEMES, "--out", str(fp32)], capsys)
    assert code == 0, err
    assert read_manifest(fp32).analysis.fingerprint != read_manifest(folder).analysis.fingerprint  # type: ignore[union-attr]
    code, _, err = run(["search", str(folder), "--budget", "6bits", "--out", str(plan)], capsys)
    assert code == 0, err
    made = json.loads(plan.read_text())
    assert made["provenance"]["dtype"] == "bf16"
    code, out, err = run(["evaluate", "--plan", str(plan), "--json"], capsys)  # plan's dtype
    assert code == 0, err
    assert json.loads(out)["metrics"]["perplexity"] == pytest.approx(made["measured"]["perplexity"])
    code, _, err = run(["evaluate", "--plan", str(plan), "--dtype", "fp32"], capsys)
    assert code == 2 and "made in dtype bf16" in err and err.count("\n") == 1
    overrides = tmp_path / "plan.txt"
    code, _, err = run(["export", str(plan), "--to", "llamacpp", "--out", str(overrides)], capsys)
    assert code == 0 and "$=q" in overrides.read_text(), err


def test_run_takes_dtype_from_the_config_or_the_command_line(
    model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "study.toml"
    config.write_text(
        f'model = "{model}"\noutput = "{tmp_path / "run"}"\nschemes = ["w:int8", "w:int4_g32"]\n'
        'estimators = ["isolation"]\nlevels = ["layer"]\nbudgets = ["6bits"]\nexports = []\n'
        'dtype = "fp16"\n'
    )
    code, _, err = run(["run", str(config), "--dtype", "bf16", "-q"], capsys)
    assert code == 0, err
    manifest = read_manifest(tmp_path / "run")
    assert manifest.analysis.spec.dtype == "bf16"  # type: ignore[union-attr]
    # every step records this process's peak memory (at least the loaded libraries: 100 MB)
    assert manifest.analysis.peak_rss_mb > 100  # type: ignore[union-attr,operator]
    assert all(step.peak_rss_mb > 100 for step in manifest.steps.values())  # type: ignore[operator]
    assert set(manifest.steps) >= {"analyze", "search ilp 6bits", "evaluate ilp-6bits"}
    code, _, err = run(["run", str(config), "--device", "tpu"], capsys)
    assert code == 2 and "unknown --device 'tpu'" in err and err.count("\n") == 1
    config.write_text(config.read_text().replace('"fp16"', '"float16"'))
    code, _, err = run(["run", str(config)], capsys)
    assert code == 2 and "dtype" in err and "'float16'" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dtype", "half"], "mixprec: unknown --dtype 'half'; valid: auto, bf16, fp16, fp32"),
        (["--device", "cuda:99"], "mixprec: --device cuda:99:"),
    ],
)
def test_bad_placement_is_one_line_before_any_folder(
    model: str, argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["analyze", "-m", model, *argv, "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "r").exists()


def test_search_keeps_the_head_by_default_and_takes_spaces(
    model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "run"
    code, _, err = run(["analyze", "-m", model, *SCHEMES, "--estimators", "isolation",
                        "--out", str(folder)], capsys)  # fmt: skip
    assert code == 0, err

    def plan(*options: str) -> dict[str, str]:
        out = tmp_path / "plan.json"
        out.unlink(missing_ok=True)
        code, _, err = run(["search", str(folder), "--budget", "8bits", "--out", str(out),
                            *options], capsys)  # fmt: skip
        assert code == 0, err
        return json.loads(out.read_text())["assignment"]

    assert plan()["lm_head"] == "keep"
    assert plan("--exclude", "none")["lm_head"] != "keep"  # 8 bits: int8 beats keeping it
    spaced = plan("--exclude", "none", "--space", "self_attn=w:int4_g32", "--space", ".=w:int8")
    assert {s for k, s in spaced.items() if "self_attn" in k} == {"w:int4_g32"}
    assert {s for k, s in spaced.items() if "self_attn" not in k} == {"w:int8"}
    code, _, err = run(["search", str(folder), "--budget", "8bits", "--out",
                        str(tmp_path / "p.json"), "--space", "mlp=w:fp3"], capsys)  # fmt: skip
    assert code == 2 and "w:fp3" in err and err.count("\n") == 1
    code, _, err = run(["search", str(folder), "--budget", "2bits", "--out",
                        str(tmp_path / "p.json")], capsys)  # fmt: skip
    assert code == 2 and "(1 units have one choice: excluded (--exclude)" in err
    code, out, _ = run(["units", "-m", model, "--json"], capsys)
    kept = {u["name"]: u["kept"] for u in json.loads(out) if u["level"] == "layer"}
    assert kept.pop("lm_head") == "LM head (default)" and set(kept.values()) == {None}
