"""The experiment scripts run end to end (quick settings) and write their results atomically."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_script(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MIXPREC_CACHE_DIR": os.environ.get("MIXPREC_CACHE_DIR", "")}
    env = {k: v for k, v in env.items() if v}
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


def test_uniform_sweep_script(tmp_path: Path) -> None:
    out = tmp_path / "uniform.md"
    script = str(ROOT / "experiments" / "uniform_sweep.py")
    proc = run_script(
        [script, "--model", "digits-cnn", "--schemes", "keep;w:int8;w:mxfp4", "--out", str(out)],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "| `w:mxfp4` | 4.25" in text and "| `keep` | 32.000 |" in text
    bad = run_script([script, "--model", "digits-cnn", "--schemes", "w:int9"], tmp_path)
    assert bad.returncode == 2 and "unknown number format 'int9'" in bad.stderr


def test_sensitivity_script_quick(tmp_path: Path) -> None:
    out = tmp_path / "sensitivity.md"
    script = str(ROOT / "experiments" / "sensitivity.py")
    proc = run_script([script, "--quick", "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "## 1. Spearman" in text and "| digits-cnn | w:mxfp4 | isolation | 6 |" in text
    assert "| ray, 2 workers |" in text and "| True |" in text
    assert "Block measured vs sum of its layers" in text


def test_search_script_quick(tmp_path: Path) -> None:
    out = tmp_path / "search.md"
    script = str(ROOT / "experiments" / "search.py")
    proc = run_script(
        [script, "--quick", "--workers", "0", "--trials", "3", "--out", str(out)], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "| digits-cnn | 4.5 |" in text and "## Where the ILP does not win" in text
    assert "none (budget 3bits is infeasible)" in text


def test_search_benchmark_script(tmp_path: Path) -> None:
    out = tmp_path / "bench.md"
    script = str(ROOT / "experiments" / "bench_search.py")
    proc = run_script(
        [script, "--units", "40", "--schemes", "6", "--repeats", "1", "--out", str(out)], tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "40 units x 6 schemes" in text
    assert text.count("| optimal |") == 8 and text.count("| feasible |") == 4


def test_kernel_benchmark_script(tmp_path: Path) -> None:
    out = tmp_path / "kernels.md"
    script = str(ROOT / "experiments" / "bench_kernels.py")
    args = ["--sizes", "128", "--repeats", "1", "--interpreter-size", "64", "--out", str(out)]
    proc = run_script([script, *args], tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "Device: **" in text and "| nvfp4 | 128x128 |" in text
    if "No GPU was available" in text:  # CPU: interpreter rows, each bit-exact
        assert "## 2. Triton through its interpreter" in text
        assert text.count("| True |") == 4 and "| False |" not in text
    else:
        assert "## 2. Dequant-matmul vs bf16 matmul" in text


def test_agents_script_quick(tmp_path: Path) -> None:
    out = tmp_path / "agents.md"
    proc = run_script([str(ROOT / "experiments" / "agents.py"), "--quick", "--out", str(out)],
                      tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "| digits-cnn | 5bits | sac |" in text and "| digits-cnn | 6bits | ilp |" in text
    assert "## 2. Transfer" in text and "| zero-shot |" in text and "| fine-tuned |" in text
