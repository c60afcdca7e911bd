"""Test-wide set-up: keep optional back ends' import-time log lines out of the output."""

from __future__ import annotations

from mixprec.logs import quiet_optional_backends

quiet_optional_backends()
