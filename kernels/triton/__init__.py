"""Triton kernels, bit-exact with kernels/reference.py: fused quantize-dequantize, packing
and dequant-matmul. Imported lazily; without a CUDA device they run in Triton's interpreter.

Importing this package first turns the interpreter on (TRITON_INTERPRET=1) when there is no
CUDA device and Triton is not imported yet, since Triton decides at import time.
"""

from __future__ import annotations

import contextlib
import os
import sys

import torch

from mixprec.errors import MixprecError

if "triton" not in sys.modules and not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    import triton
except ImportError:
    raise MixprecError(
        "the Triton kernels need the triton package (pip install triton), or choose --kernel torch"
    ) from None


def interpreted() -> bool:
    """True when kernels run in Triton's CPU interpreter rather than compiled for a GPU."""
    return bool(triton.knobs.runtime.interpret)


def launching() -> contextlib.AbstractContextManager[object]:
    """Around a launch: the interpreter runs on numpy, which would warn on IEEE inf/NaN."""
    if interpreted():
        import numpy as np

        return np.errstate(all="ignore")
    return contextlib.nullcontext()


def check_device(t: torch.Tensor) -> None:
    """One-line error when a tensor cannot go through the kernels in this process."""
    if interpreted():
        return
    if not torch.cuda.is_available():
        raise MixprecError(
            "Triton was imported before mixprec could turn on its interpreter and there is no "
            "CUDA device: set TRITON_INTERPRET=1, or choose --kernel torch"
        )
    if not t.is_cuda:
        raise MixprecError(
            f"the compiled Triton kernels need CUDA tensors, got one on {t.device}: move the "
            "model to CUDA, or choose --kernel torch"
        )
