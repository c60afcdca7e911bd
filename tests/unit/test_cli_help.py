"""Every command and sub-command answers --help with an example; source stays pickle-free."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.main import get_command

from mixprec.cli import app
from tests.helpers.cli import run

ROOT = Path(__file__).resolve().parents[2]
EXPECTED = {
    "formats", "units", "evaluate", "analyze", "report", "search", "pareto", "export", "run",
    "demo", "runs", "submit", "dashboard", "jobs list", "jobs status", "jobs logs", "jobs stop",
}  # fmt: skip


def command_paths() -> list[str]:
    group = get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    paths = []
    for name, command in group.commands.items():
        sub = getattr(command, "commands", None)
        paths += [f"{name} {s}" for s in sub] if sub else [name]
    return sorted(paths)


def test_the_cli_has_every_command() -> None:
    assert set(command_paths()) >= EXPECTED


@pytest.mark.parametrize("path", command_paths())
def test_help_with_an_example(path: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run([*path.split(), "--help"], capsys)
    assert code == 0 and "Example" in out and "mixprec" in out


def test_no_pickle_and_torch_load_only_with_weights_only() -> None:
    sources = [
        p
        for folder in ("mixprec", "kernels", "sensitivity", "search")
        for p in (ROOT / folder).rglob("*.py")
    ]
    assert len(sources) > 30
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import pickle|from pickle|import dill)", text, re.M), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, f"{path}: {call}"
