"""Test-wide set-up: Triton's interpreter without CUDA, quiet optional back ends, one torch
thread per process, loopback Ray."""

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
# One intra-op thread per process, here and (through the environment) in the CLI subprocesses
# and Ray workers the tests start: the suite runs many small models side by side, and on a
# busy machine OpenMP threads spinning for a descheduled peer made it several times slower.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
os.environ[LOOPBACK_ONLY] = "0"  # every Ray node the tests start stays on 127.0.0.1
