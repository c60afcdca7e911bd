"""Test-wide set-up: Triton's interpreter without CUDA, quiet optional back ends, loopback Ray."""

from __future__ import annotations

import os

import torch

# Triton picks interpreter or compiler when it is first imported (torchao imports it too), so
# CPU-only runs test the kernels through TRITON_INTERPRET=1 from the very start.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from mixprec.logs import quiet_optional_backends
from mixprec.sensitivity.cluster import LOOPBACK_ONLY

quiet_optional_backends()
os.environ[LOOPBACK_ONLY] = "0"  # every Ray node the tests start stays on 127.0.0.1
