"""The CLI run in this process: exit code, stdout and stderr of one command."""

from __future__ import annotations

import pytest

from mixprec.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()  # what came before (a model's saving progress) is not this command's
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err
