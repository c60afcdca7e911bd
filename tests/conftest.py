"""Test-wide set-up: keep optional back ends' import-time log lines out of the output."""

from __future__ import annotations

import os

from mixprec.logs import quiet_optional_backends
from mixprec.sensitivity.runner import LOOPBACK_ONLY

quiet_optional_backends()
os.environ[LOOPBACK_ONLY] = "0"  # every Ray node the tests start stays on 127.0.0.1
