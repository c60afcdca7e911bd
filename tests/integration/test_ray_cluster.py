"""`--address` joins a real Ray cluster: a head started here on 127.0.0.1, stopped after."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mixprec.errors import MixprecError
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.cells import AnalysisSpec
from mixprec.sensitivity.runner import analyze
from mixprec.sensitivity.table import ScoreTable
from mixprec.store import read_manifest
from tests.helpers.ray_head import free_port, port_open, running_head

# Ray against serial for the Hessian too: tests/integration/test_runner.py
SPEC = AnalysisSpec(
    "digits-cnn", schemes=("w:int4", "w:mxfp8_e4m3"), estimators=("fisher", "isolation"), chunk=4
)


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    extra = [f"--port={port}", "--include-dashboard=false"]
    with running_head(extra, tmp_path / "ray-head.log", lambda: port_open(port)):
        yield f"127.0.0.1:{port}"


def test_analysis_on_an_existing_cluster_matches_serial(ray_head: str, tmp_path: Path) -> None:
    """A local Ray run first: it must leave nothing behind (Ray sets RAY_AUTH_MODE=token in
    os.environ) that breaks the cluster run of a `mixprec analyze` started from here after."""
    local = analyze(SPEC, workers=1, cache=CellCache(tmp_path / "l"), progress=False)
    command = [
        sys.executable, "-m", "mixprec", "analyze", "--model", SPEC.model,
        "--schemes", ",".join(SPEC.schemes), "--estimators", "fisher,isolation",
        "--workers", "2", "--address", ray_head,
        "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    env = {**os.environ, "MIXPREC_CACHE_DIR": str(tmp_path / "fresh")}  # every cell on the cluster
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr
    on_cluster = ScoreTable.load(tmp_path / "run" / "scores.parquet")
    serial = analyze(SPEC, cache=CellCache(tmp_path / "b"), progress=False)
    assert (on_cluster.frame["status"] == "ok").all()
    assert on_cluster.same_scores(serial) and local.same_scores(serial)
    record = read_manifest(tmp_path / "run").analysis
    assert record is not None and record.worker_peak_rss_mb and record.worker_peak_rss_mb > 50


def test_gpu_workers_on_a_machine_without_gpus_say_what_it_has() -> None:
    """The driver needs no GPU (`--device cuda` passes its checks on this CPU machine); the
    local Ray instance has none to give, which the error says, and Ray is shut down again."""
    import ray
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: tests/gpu runs GPU workers")
    spec = AnalysisSpec("digits-cnn", ("w:int8",), ("isolation",), device="cuda")
    with pytest.raises(MixprecError, match=r"^--gpus-per-worker 1: this machine has 0 GPUs and "):
        analyze(spec, workers=1, gpus_per_worker=1.0, progress=False)
    assert not ray.is_initialized()
