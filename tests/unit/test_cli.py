"""The CLI: JSON shapes, tables, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mixprec.kernels import formats
from tests.helpers.cli import run


def test_formats_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["formats", "--json"], capsys)
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and len(rows) == len(formats.names())
    assert rows["q4_1"]["bits_per_element"] == 5.0 and rows["q4_1"]["family"] == "ggml"
    assert rows["mxfp4"]["bits_per_element"] == 4.25
    assert rows["nvfp4"]["bits_per_element"] == 4.5
    assert rows["int4_g128"]["bits_per_element"] == 4.125
    assert rows["fp16"]["bits_per_element"] == 16


def test_formats_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["formats"], capsys)
    assert code == 0
    assert "mxfp8_e4m3" in out and "e8m0" in out and "8.25" in out


def test_units_json_for_minilm(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["units", "--model", "minilm", "--json"], capsys)
    units = json.loads(out)
    assert code == 0
    layers = [u for u in units if u["level"] == "layer"]
    assert len(layers) == 37 and sum(u["level"] == "block" for u in units) == 6
    assert set(layers[0]) >= {"name", "level", "modules", "params", "group"}
    assert layers[0]["modules"] == ["encoder.layer.0.attention.self.query"]
    assert layers[0]["group"] == "encoder.layer.0.attention.self:qkv"


def test_units_without_fusion(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(["units", "-m", "minilm", "--json", "--no-fusion"], capsys)
    assert all(u["group"] is None for u in json.loads(out))


def test_evaluate_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["evaluate", "-m", "digits-cnn", "-s", "w:mxfp4", "--json"], capsys)
    result = json.loads(out)
    assert code == 0
    assert set(result) >= {"metrics", "size_mb", "bits_per_weight"}
    assert 0.5 < result["metrics"]["accuracy"] <= 1.0
    assert 4.25 <= result["bits_per_weight"] < 4.3


def test_evaluate_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["evaluate", "-m", "digits-cnn", "-s", "keep"], capsys)
    assert code == 0 and "accuracy" in out and "bits per weight" in out and "32.000" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "-m", "digits-cnn", "-s", "w:mxfp3"], "unknown number format 'mxfp3'"),
        (["evaluate", "-m", "digits-cnn", "-s", "w=int4"], "bad scheme 'w=int4'"),
        (["evaluate", "-m", "gpt5", "-s", "w:int4"], "unknown model 'gpt5'"),
        (["units", "-m", "module:torch.nn:ReLU"], "has no quantizable layers"),
    ],
)
def test_user_mistakes_are_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, capsys)
    assert code == 2 and out == ""
    assert err.startswith("mixprec: ") and message in err and err.count("\n") == 1


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["evaluate", "-m", "digits-cnn"], capsys)
    assert code == 2 and "--scheme" in err


def test_installed_entry_point_has_no_traceback() -> None:
    """The real console script, in a fresh process: exit 2, one line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "mixprec.cli", "evaluate", "-m", "nope", "-s", "w:int8"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("mixprec: unknown model 'nope'")
    assert proc.stderr.count("\n") == 1 and proc.stdout == ""
