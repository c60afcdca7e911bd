"""Inputs shared by the Triton kernel tests (CPU interpreter) and tests/gpu (CUDA)."""

from __future__ import annotations

import torch

from mixprec.kernels import formats
from mixprec.kernels.dispatch import has_triton_kernel

QUANTIZED = [f.name for f in formats.all() if f.is_quantized]
TRITON = [f.name for f in formats.all() if has_triton_kernel(f)]
PACKED_MATMUL = ["int4_g128", "mxfp4", "nvfp4", "int8", "fp8_e4m3", "int3_g128", "mxfp6_e2m3"]


def random_tensor(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """Normal values with rows spread over six decades."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen)
    spread = torch.logspace(-3, 3, x.shape[0]).reshape(-1, *([1] * (x.dim() - 1)))
    return x * spread


def edge_tensor() -> torch.Tensor:
    """Zeros, -0, inf, NaN, subnormals, FP32 extremes and an all-equal row, in odd groups."""
    x = random_tensor((12, 150), seed=1)
    x[0] = 0.0
    x[1] = -0.0
    x[2, 3], x[2, 90] = float("inf"), -float("inf")
    x[3, 7] = float("nan")
    x[4, :20] = 1e-40
    x[5] = 3.0e38
    x[5, 1::2] = -3.4e38
    x[6] = 2.5
    x[7, :64] = torch.linspace(-448.0, 448.0, 64)
    x[8] = torch.linspace(-7.0, 7.0, 150)
    x[9, :40] = 1e-30
    return x


def same_bits(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal bit patterns (so -0.0 and 0.0 differ), any NaN matching any NaN."""
    both_nan = torch.isnan(got) & torch.isnan(want)
    same = got.contiguous().view(torch.int32) == want.contiguous().view(torch.int32)
    return got.shape == want.shape and bool((same | both_nan).all())
