"""NVIDIA ModelOpt's NVFP4 and MXFP8 weights (family "mo"), computed as ModelOpt's exporter
computes them (`NVFP4QTensor.quantize`, dynamic weight path; `MXFP8QTensor.quantize`) for what
vLLM loads as W4A16_NVFP4 and MXFP8.

MXFP8 is not OCP MX either: the E8M0 exponent is ceil(log2(amax / 448)) in [-127, 127] (-127
for an all-zero block; OCP floors log2(amax) and subtracts 8), the block is multiplied by
2^-exponent, clamped to +-448 and cast to E4M3 (round to nearest even); an infinite value sets the
exponent to 127 and decodes to +-inf again (448 * 2^127 overflows), the rest of its block to 0,
as there. mixprec's rule where ModelOpt's arithmetic gives no meaning: a NaN makes its block NaN.

Not mixprec's `nvfp4`: the E4M3 block scale is clamped to [2^-9, 448] (not from 2^-6), an
all-zero block gets block scale 1.0, and the block is divided by (block scale * tensor scale)
rather than multiplied by reciprocals; elements round to nearest E2M1, ties to even, saturating
at 6. mixprec's own rules for what ModelOpt leaves undefined: +-inf saturates, a NaN makes the
tensor NaN (its tensor scale is NaN, as nvfp4's), an all-zero tensor gets tensor scale 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mixprec.kernels.reference import (
    E4M3_MAX,
    QuantizedGroups,
    divide,
    finite_amax,
    nv_tensor_scale,
    round_float_elements,
)

if TYPE_CHECKING:
    from mixprec.kernels.formats import NumberFormat

SMALLEST_BLOCK_SCALE = 2.0**-9  # E4M3's smallest subnormal: ModelOpt's floor (not 2^-6)


def quantize(blocks: torch.Tensor, fmt: NumberFormat, amax: torch.Tensor | None = None
             ) -> QuantizedGroups:  # fmt: skip
    """E2M1 elements, E4M3 block scales and the FP32 tensor scale of (n, 16) float32 blocks
    (`amax`: a static input's calibrated range, which sets the tensor scale); E4M3 elements
    and E8M0 scales of (n, 32) blocks for MXFP8."""
    if fmt.scale_format == "e8m0":
        return _mxfp8(blocks)
    ranged = blocks if amax is None else amax.reshape(1, 1).to(blocks.device)
    tensor_scale = nv_tensor_scale(ranged, fmt)  # amax / (6 * 448)
    block_scale = divide(finite_amax(blocks), fmt.max_normal * tensor_scale)
    block_scale = torch.where(block_scale == 0, 1.0, block_scale)
    e4m3 = block_scale.clamp(SMALLEST_BLOCK_SCALE, E4M3_MAX).to(torch.float8_e4m3fn)
    scaled = blocks / (e4m3.to(torch.float32) * tensor_scale)
    return QuantizedGroups(round_float_elements(scaled, fmt), e4m3.to(torch.float32),
                           tensor_scale=tensor_scale)  # fmt: skip


def _mxfp8(blocks: torch.Tensor) -> QuantizedGroups:
    """`MXFP8QTensor`: 2^ceil(log2(amax / 448)) per block (torch's log2, as there)."""
    descale = divide(blocks.abs().amax(dim=-1, keepdim=True), E4M3_MAX)
    log2 = torch.where(descale > 0, torch.log2(descale), -127.0)
    exponent = torch.ceil(log2).clamp(-127, 127)
    scaled = (blocks * torch.exp2(-exponent)).clamp(-E4M3_MAX, E4M3_MAX)
    elements = scaled.to(torch.float8_e4m3fn).to(torch.float32)
    scale = torch.where(torch.isnan(descale), torch.nan, torch.exp2(exponent))
    return QuantizedGroups(elements, scale)
