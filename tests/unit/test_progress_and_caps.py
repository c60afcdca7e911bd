"""Progress lines for logs, and worker counts capped at what the machine has."""

from __future__ import annotations

import os

import pytest

from mixprec.progress import cell_progress, progress_line
from mixprec.sensitivity.cluster import capped_workers


def test_progress_line_counts_share_and_eta() -> None:
    assert progress_line("scoring m", 0, 40, 0.0) == "scoring m: 0/40 cells (0%), 0:00:00 elapsed"
    assert progress_line("scoring m", 10, 40, 15.0) == (
        "scoring m: 10/40 cells (25%), 0:00:15 elapsed, ETA 0:00:45"
    )
    assert progress_line("scoring m", 40, 40, 3725.0).endswith("(100%), 1:02:05 elapsed")


def test_a_log_gets_lines_at_the_start_the_end_and_every_interval(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with cell_progress("scoring m", 3, every=0.0) as advance:  # pytest's stdout is no terminal
        for _ in range(3):
            advance()
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[1].split()[0] for line in lines] == ["0/3", "1/3", "2/3", "3/3"]
    with cell_progress("scoring m", 3, enabled=False) as advance:
        advance()
    assert capsys.readouterr().out == ""


def test_workers_are_capped_with_a_note(capsys: pytest.CaptureFixture[str]) -> None:
    assert capped_workers(2, 4, "this machine") == 2
    assert capped_workers(1_000_000_000, 2, "this machine") == 2
    assert "1000000000 workers asked for, this machine has room for 2; using 2" in (
        capsys.readouterr().err
    )


def test_only_the_variables_ray_changed_are_put_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from mixprec.sensitivity.cluster import undo_environment_changes

    monkeypatch.setenv("MIXPREC_KEPT", "yes")
    monkeypatch.setenv("MIXPREC_CHANGED", "before")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    saved = dict(os.environ)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # what ray.init leaves behind
    monkeypatch.setenv("MIXPREC_CHANGED", "after")
    undo_environment_changes(saved)
    assert "RAY_AUTH_MODE" not in os.environ
    assert os.environ["MIXPREC_CHANGED"] == "before" and os.environ["MIXPREC_KEPT"] == "yes"
