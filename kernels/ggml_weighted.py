"""llama.cpp's types quantized with an importance matrix (llama-quantize `--imatrix`): the
`quantize_row_*_impl` searches that ggml-quants.c runs when it is given per-column importance.

An importance matrix holds, per weight tensor, the mean square of each input column over
calibration text. q4_0 / q5_0 then pick their scale by `make_qx_quants` and q4_1 / q5_1 by
`make_qkx3_quants`, each value weighted by importance * sqrt(sigma2 + x^2), sigma2 being the
mean square of the value's whole row; iq4_nl weights its own search the same way with sigma2 =
2 * the block's mean square. q8_0, mxfp4 and nvfp4 ignore the matrix, as in llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from mixprec.errors import MixprecError
from mixprec.kernels.ggml import clamped, to_fp16
from mixprec.kernels.ggml_nonlinear import _iq4_nl
from mixprec.kernels.kquants import make_qkx2_quants, make_qx_quants, ordered_sum, sqrtf
from mixprec.kernels.reference import divide

if TYPE_CHECKING:
    from mixprec.kernels.formats import NumberFormat
    from mixprec.kernels.reference import QuantizedGroups

# ggml types whose quantize_* takes no importance (q8_0, mxfp4, nvfp4: GGML_UNUSED)
IGNORES_IMPORTANCE = ("q8_0", "mxfp4", "nvfp4")
Quantizer = Callable[[torch.Tensor], "QuantizedGroups"]


@dataclass(frozen=True)
class Weighting:
    """Per value of (n, block) blocks: its column's importance and its row's mean square."""

    importance: torch.Tensor
    row_mean_square: torch.Tensor  # (n, 1)


def weighting(x: torch.Tensor, importance: torch.Tensor, fmt: NumberFormat) -> Weighting:
    """Blocks of `importance` (per column of `x`, or per expert and column for a 3-D `x`) laid
    out as `x`'s blocks are, with each row's sum of squares / row length as C sums it."""
    cols = x.shape[-1]
    want = (cols,) if x.dim() < 3 else (*x.shape[:-2], cols)
    if tuple(importance.shape) != want and tuple(importance.shape) != (cols,):
        raise MixprecError(
            f"importance of shape {tuple(importance.shape)} does not fit a weight of shape "
            f"{tuple(x.shape)}: need {want}"
        )
    if cols % fmt.row_multiple:
        raise MixprecError(f"{fmt.name} needs rows of a multiple of {fmt.row_multiple} values "
                           f"to take an importance matrix, not {cols}")  # fmt: skip
    if x.dim() >= 3 and importance.dim() > 1:
        importance = importance.unsqueeze(-2)
    per_value = torch.broadcast_to(importance.to(x.device, torch.float32), x.shape)
    rows = x.reshape(-1, cols)
    mean_square = divide(ordered_sum(rows, rows), float(cols))
    block = fmt.row_multiple
    per_block = cols // block
    return Weighting(
        per_value.reshape(-1, block),
        mean_square.repeat_interleave(per_block, dim=0),
    )


def _weights(x: torch.Tensor, w: Weighting) -> torch.Tensor:
    """`qw[j] * sqrtf(sigma2 + x[j]*x[j])`."""
    return w.importance * sqrtf(w.row_mean_square + x * x)


def _signed(nmax: int, w: Weighting) -> Quantizer:
    """q4_0 / q5_0: `make_qx_quants(32, nmax, x, L, 1, weight)`, codes -nmax..nmax-1."""

    def quantize_signed(blocks: torch.Tensor) -> QuantizedGroups:
        from mixprec.kernels.reference import QuantizedGroups

        levels, scale = make_qx_quants(clamped(blocks), nmax, _weights(blocks, w))
        return QuantizedGroups(levels, to_fp16(scale))

    return quantize_signed


def _with_minimum(nmax: int, w: Weighting) -> Quantizer:
    """q4_1 / q5_1: `make_qkx3_quants(32, nmax, x, weight, L, &min, Laux, -0.9, 0.05, 36)`
    (make_qkx2_quants' search, with these weights), m = -min."""

    def quantize_with_minimum(blocks: torch.Tensor) -> QuantizedGroups:
        from mixprec.kernels.reference import QuantizedGroups

        x = clamped(blocks)
        levels, scale, the_min = make_qkx2_quants(x, _weights(blocks, w), nmax, -0.9, 0.05, 36,
                                                  use_mad=False)  # fmt: skip
        return QuantizedGroups(levels, to_fp16(scale), minimum=to_fp16(-the_min))

    return quantize_with_minimum


_QUANTIZERS: dict[str, Callable[[Weighting], Quantizer]] = {
    "q4_0": lambda w: _signed(8, w),
    "q5_0": lambda w: _signed(16, w),
    "q4_1": lambda w: _with_minimum(15, w),
    "q5_1": lambda w: _with_minimum(31, w),
    "iq4_nl": lambda w: lambda blocks: _iq4_nl(blocks, w.importance),
}
WEIGHTED = tuple(_QUANTIZERS)  # the ggml types whose importance-weighted search is modelled


def weighted_quantizer(fmt: NumberFormat, w: Weighting) -> Quantizer:
    """The quantizer llama.cpp runs for `fmt` given an importance matrix."""
    make = _QUANTIZERS.get(fmt.ggml_type)
    if make is None:
        raise MixprecError(
            f"{fmt.name} with an importance matrix is not modelled yet (llama.cpp runs another "
            f"search for it); with --imatrix plan with {', '.join(WEIGHTED)} or "
            f"{', '.join(IGNORES_IMPORTANCE)}"
        )
    return make(w)
