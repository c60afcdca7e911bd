"""Who scores: GPU Ray workers sized by what the cluster has, the driver needing no GPU, and
every contradiction between --workers, --gpus-per-worker and --device one line (exit 2)."""

from __future__ import annotations

import pytest

from mixprec.errors import MixprecError
from mixprec.sensitivity.cells import AnalysisSpec
from mixprec.sensitivity.cluster import worker_room
from mixprec.sensitivity.runner import Workers, analyze
from tests.helpers.cli import run


def test_room_is_cpus_per_thread_count_and_gpus_per_worker() -> None:
    assert worker_room({"CPU": 8.0}, 2, 0.0, "the cluster") == 4
    assert worker_room({"CPU": 1.0}, 2, 0.0, "the cluster") == 1  # one worker at least
    assert worker_room({"CPU": 16.0, "GPU": 4.0}, 1, 1.0, "the cluster") == 4
    assert worker_room({"CPU": 16.0, "GPU": 4.0}, 1, 0.5, "the cluster") == 8
    assert worker_room({"CPU": 2.0, "GPU": 4.0}, 1, 1.0, "the cluster") == 2  # CPUs bind too


def test_gpus_asked_of_a_place_without_them_name_what_it_has() -> None:
    with pytest.raises(MixprecError, match=r"^--gpus-per-worker 1: the cluster has 0 GPUs and 8 "):
        worker_room({"CPU": 8.0}, 1, 1.0, "the cluster")
    with pytest.raises(MixprecError, match=r"has 1 GPUs and 4 CPUs"):
        worker_room({"CPU": 4.0, "GPU": 1.0}, 1, 2.0, "the cluster")


def test_serial_only_when_nothing_asks_for_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert Workers().serial and Workers(None).serial
    assert not Workers(2).serial
    assert not Workers(None, "127.0.0.1:6379").serial
    assert not Workers(None, gpus=1.0).serial
    assert not Workers(0, "127.0.0.1:6379").serial  # an address: one worker there at least


@pytest.mark.parametrize(
    ("workers", "gpus", "device", "message"),
    [
        (0, 1.0, "auto", r"give --workers other than 0 and --device auto or cuda"),
        (None, 1.0, "cpu", r"--device auto or cuda, not 'cpu'"),
        (2, -1.0, "auto", r"--gpus-per-worker -1 must be 0 \(CPU workers\) or more"),
        (-1, 0.0, "auto", r"--workers -1 must be 0 \(serial\) or more"),
    ],
)
def test_contradictions_fail_before_any_work(
    workers: int | None, gpus: float, device: str, message: str
) -> None:
    spec = AnalysisSpec("digits-cnn", ("w:int8",), ("isolation",), device=device)
    with pytest.raises(MixprecError, match=message):
        analyze(spec, workers=workers, gpus_per_worker=gpus, progress=False)


def test_gpu_workers_see_their_own_gpus_as_cuda_so_a_numbered_one_is_refused() -> None:
    spec = AnalysisSpec("digits-cnn", ("w:int8",), ("isolation",), device="cuda:1")
    with pytest.raises(MixprecError, match=r"--device auto or cuda, not 'cuda:1'"):
        analyze(spec, workers=1, gpus_per_worker=1.0, progress=False)


def test_cli_gpu_option_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        ["analyze", "--model", "digits-cnn", "--out", "unused", "--workers", "0",
         "--gpus-per-worker", "1"], capsys,
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "--gpus-per-worker 1" in err
