"""Which implementation runs a quantization op: the torch reference or the Triton kernels.

AUTO picks Triton for CUDA tensors when Triton is installed and the torch reference
otherwise; TRITON on a machine without CUDA runs Triton's interpreter (exact, slow). Every
choice is logged once and returned as a `KernelChoice`, so evaluations can report it.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import torch

from mixprec.errors import MixprecError
from mixprec.kernels import packing, reference
from mixprec.kernels.formats import RUNTIME_FAMILIES

if TYPE_CHECKING:
    from mixprec.kernels.formats import NumberFormat
    from mixprec.kernels.packing import PackedTensor

log = logging.getLogger(__name__)
_logged: set[KernelChoice] = set()


class KernelPreference(StrEnum):
    """What the caller asked for (`--kernel auto|torch|triton`)."""

    AUTO = "auto"
    TORCH = "torch"
    TRITON = "triton"

    @classmethod
    def parse(cls, value: str | KernelPreference) -> KernelPreference:
        try:
            return cls(value)
        except ValueError:
            valid = ", ".join(p.value for p in cls)
            raise MixprecError(f"unknown kernel {value!r}; valid kernels: {valid}") from None


@dataclass(frozen=True)
class KernelChoice:
    """The implementation that runs, and why."""

    backend: str  # "torch" or "triton"
    reason: str

    def __str__(self) -> str:
        return f"{self.backend} ({self.reason})"


def triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def choose(preference: str | KernelPreference, device: torch.device | str) -> KernelChoice:
    """Resolve a preference for tensors on `device`; logs each distinct choice once."""
    preference = KernelPreference.parse(preference)
    on_cuda = torch.device(device).type == "cuda"
    if preference is KernelPreference.TORCH:
        choice = KernelChoice("torch", "asked for")
    elif preference is KernelPreference.TRITON:
        if not triton_installed():
            raise MixprecError(
                "--kernel triton needs the triton package (pip install 'mixprec[triton]'); "
                "valid without it: auto, torch"
            )
        choice = KernelChoice("triton", "compiled" if on_cuda else "interpreter, no CUDA tensors")
    elif on_cuda and triton_installed():
        choice = KernelChoice("triton", "auto: CUDA tensors")
    else:
        why = "triton not installed" if on_cuda else "no CUDA tensors"
        choice = KernelChoice("torch", f"auto: {why}")
    if choice not in _logged:
        _logged.add(choice)
        log.info("quantization kernels: %s", choice)
    return choice


def has_triton_kernel(fmt: NumberFormat) -> bool:
    """Quantized formats outside the runtimes' own (llama.cpp, compressed-tensors) have Triton
    kernels, except the per-tensor ones (one scale over the whole tensor)."""
    return fmt.is_quantized and fmt.family not in RUNTIME_FAMILIES and not fmt.per_tensor


def runs_on_triton(
    fmt: NumberFormat, preference: str | KernelPreference, device: torch.device | str
) -> bool:
    """Whether Triton runs `fmt` here: llama.cpp's types only have the torch reference."""
    if not fmt.is_quantized:
        return False
    triton = choose(preference, device).backend == "triton"
    if triton and not has_triton_kernel(fmt):
        choice = KernelChoice("torch", "runtime formats have no Triton kernel")
        if choice not in _logged:
            _logged.add(choice)
            log.info("quantization kernels: %s", choice)
        return False
    return triton


def quantize_dequantize(
    x: torch.Tensor, fmt: NumberFormat, kernel: str | KernelPreference = KernelPreference.AUTO
) -> torch.Tensor:
    """Fake-quantize with the chosen implementation; both give the same bits."""
    if runs_on_triton(fmt, kernel, x.device):
        from mixprec.kernels.triton import qdq

        return qdq.quantize_dequantize(x, fmt)
    return reference.quantize_dequantize(x, fmt)


def pack(
    x: torch.Tensor, fmt: NumberFormat, kernel: str | KernelPreference = KernelPreference.AUTO
) -> PackedTensor:
    """Quantize into the packed layout (kernels/packing.py) with the chosen implementation."""
    if runs_on_triton(fmt, kernel, x.device):
        from mixprec.kernels.triton import qdq

        return qdq.pack(x, fmt)
    return packing.pack(x, fmt)


def unpack(p: PackedTensor, kernel: str | KernelPreference = KernelPreference.AUTO) -> torch.Tensor:
    """Float32 values of a packed tensor."""
    if runs_on_triton(p.fmt, kernel, p.codes.device):
        from mixprec.kernels.triton import matmul

        return matmul.unpack(p)
    return packing.unpack(p)


def packed_linear(
    x: torch.Tensor,
    weight: PackedTensor,
    bias: torch.Tensor | None = None,
    kernel: str | KernelPreference = KernelPreference.AUTO,
) -> torch.Tensor:
    """`x @ W.T + bias` with W kept packed (Triton) or unpacked on the fly (torch)."""
    if runs_on_triton(weight.fmt, kernel, x.device):
        from mixprec.kernels.triton import matmul

        return matmul.packed_linear(x, weight, bias)
    return packing.packed_linear(x, weight, bias)
