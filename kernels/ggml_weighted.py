"""llama.cpp's types quantized with an importance matrix (llama-quantize `--imatrix`): the
`quantize_row_*_impl` searches that ggml-quants.c runs when it is given per-column importance.

An importance matrix holds, per weight tensor, the mean square of each input column over
calibration text. q4_0 / q5_0 then pick their scale by `make_qx_quants` and q4_1 / q5_1 by
`make_qkx3_quants`, each value weighted by importance * sqrt(sigma2 + x^2), sigma2 being the
mean square of the value's whole row; iq4_nl weights its own search the same way with sigma2 =
2 * the block's mean square; the K-quants weight theirs with sigma2 from the super-block of 256
(q6_k by the raw importance) and fit their sub-block scales by `make_qp_quants` (q3_k:
`make_qx_quants`). q8_0, mxfp4 and nvfp4 ignore the matrix, as in llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import torch

from mixprec.errors import MixprecError
from mixprec.kernels.ggml import clamped, to_fp16
from mixprec.kernels.ggml_nonlinear import _iq4_nl
from mixprec.kernels.kquants import (
    SUPER_BLOCK,
    make_qkx2_quants,
    make_qp_quants,
    make_qx_quants,
    ordered_sum,
    requantize,
    requantized_with_minimum,
    rows_of,
    signed_k,
    sqrtf,
)
from mixprec.kernels.reference import divide

if TYPE_CHECKING:
    from mixprec.kernels.formats import NumberFormat
    from mixprec.kernels.reference import QuantizedGroups

# ggml types whose quantize_* takes no importance (q8_0, mxfp4, nvfp4: GGML_UNUSED)
IGNORES_IMPORTANCE = ("q8_0", "mxfp4", "nvfp4")
Quantizer = Callable[[torch.Tensor], "QuantizedGroups"]


@dataclass(frozen=True)
class Weighting:
    """Per value of (n, block) blocks: its column's importance, and (made on first use: only
    q4_0 .. q5_1 need it) its row's mean square."""

    importance: torch.Tensor
    rows: torch.Tensor  # the (rows, cols) matrix the blocks were cut from
    block: int

    @cached_property
    def row_mean_square(self) -> torch.Tensor:
        """(n, 1): each block's row's sum of squares / row length, summed as C sums it."""
        cols = self.rows.shape[1]
        mean_square = divide(ordered_sum(self.rows, self.rows), float(cols))
        return mean_square.repeat_interleave(cols // self.block, dim=0)


def weighting(x: torch.Tensor, importance: torch.Tensor, fmt: NumberFormat) -> Weighting:
    """Blocks of `importance` (per column of `x`, or per expert and column for a 3-D `x`) laid
    out as `x`'s blocks are, with `x`'s rows for the row mean squares."""
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
    block = fmt.row_multiple
    return Weighting(per_value.reshape(-1, block), x.reshape(-1, cols), block)


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


def _legacy_with_minimum(nmax: int, w: Weighting) -> Quantizer:
    """q4_1 / q5_1: `make_qkx3_quants(32, nmax, x, weight, L, &min, Laux, -0.9, 0.05, 36)`
    (make_qkx2_quants' search, with these weights), m = -min."""

    def quantize_with_minimum(blocks: torch.Tensor) -> QuantizedGroups:
        from mixprec.kernels.reference import QuantizedGroups

        x = clamped(blocks)
        levels, scale, the_min = make_qkx2_quants(x, _weights(blocks, w), nmax, -0.9, 0.05, 36,
                                                  use_mad=False)  # fmt: skip
        return QuantizedGroups(levels, to_fp16(scale), minimum=to_fp16(-the_min))

    return quantize_with_minimum


def _super_block_weights(blocks: torch.Tensor, w: Weighting, factor: float) -> torch.Tensor:
    """K-quants: importance * sqrt(sigma2 + x^2), sigma2 = factor * the (n, 256) super-block's
    sum of squares / 256 (factor 1 for q2_k, 2 for the others)."""
    sigma2 = ordered_sum(blocks, blocks) * (factor / SUPER_BLOCK)
    return w.importance * sqrtf(sigma2 + blocks * blocks)


def _q2_k(w: Weighting) -> Quantizer:
    """`quantize_row_q2_K_impl`: make_qkx3_quants per 16, make_qp_quants for both scales."""

    def quantize(blocks: torch.Tensor) -> QuantizedGroups:
        x = rows_of(clamped(blocks), 16)
        weights = rows_of(_super_block_weights(blocks, w, 1.0), 16)
        levels, scales, mins = make_qkx2_quants(x, weights, 3, -0.9, 0.05, 36, use_mad=False)
        sw = rows_of(ordered_sum(weights), 16)
        ls, d_block = make_qp_quants(rows_of(scales, 16), 15, sw)
        lm, m_block = make_qp_quants(rows_of(mins, 16), 15, sw)
        return requantized_with_minimum(
            x, levels, (ls, to_fp16(d_block)), (lm, to_fp16(m_block)), 3
        )

    return quantize


def _k_with_minimum(nmax: int, w: Weighting) -> Quantizer:
    """`quantize_row_q4_K_impl` / `q5_K_impl`: make_qkx3_quants per 32, make_qp_quants (63
    levels) for the scales and the minimums."""

    def quantize(blocks: torch.Tensor) -> QuantizedGroups:
        x = rows_of(clamped(blocks), 32)
        weights = rows_of(_super_block_weights(blocks, w, 2.0), 32)
        levels, scales, mins = make_qkx2_quants(x, weights, nmax, -0.9, 0.05, 36, use_mad=False)
        sw = rows_of(ordered_sum(weights), 8)
        ls, d_block = make_qp_quants(rows_of(scales, 8), 63, sw)
        lm, m_block = make_qp_quants(rows_of(mins, 8), 63, sw)
        return requantized_with_minimum(
            x, levels, (ls, to_fp16(d_block)), (lm, to_fp16(m_block)), nmax
        )

    return quantize


def _q3_k(w: Weighting) -> Quantizer:
    """`quantize_row_q3_K_impl`: make_qx_quants per 16 and for the 16 signed scales."""

    def quantize(blocks: torch.Tensor) -> QuantizedGroups:
        from mixprec.kernels.reference import QuantizedGroups

        x = rows_of(clamped(blocks), 16)
        weights = rows_of(_super_block_weights(blocks, w, 2.0), 16)
        levels, scales = make_qx_quants(x, 4, weights)
        sc, d_block = make_qx_quants(rows_of(scales, 16), 32, rows_of(ordered_sum(weights), 16))
        d_all = to_fp16(d_block)
        d = (d_all * sc).reshape(-1, 1)
        fresh = requantize(x, d, -4, 3)
        return QuantizedGroups(torch.where(d == 0, levels, fresh), d, super_scale=d_all)

    return quantize


def _q6_k(w: Weighting) -> Quantizer:
    """`quantize_row_q6_K_impl`: the reference's search, each sub-block's fit weighted by the
    raw importance."""
    importance = rows_of(w.importance, 16)
    return signed_k(lambda x, nmax: make_qx_quants(x, nmax, importance), 32, 128, (-32, 31))


_QUANTIZERS: dict[str, Callable[[Weighting], Quantizer]] = {
    "q4_0": lambda w: _signed(8, w),
    "q5_0": lambda w: _signed(16, w),
    "q4_1": lambda w: _legacy_with_minimum(15, w),
    "q5_1": lambda w: _legacy_with_minimum(31, w),
    "iq4_nl": lambda w: lambda blocks: _iq4_nl(blocks, w.importance),
    "q2_k": _q2_k,
    "q3_k": _q3_k,
    "q4_k": lambda w: _k_with_minimum(15, w),
    "q5_k": lambda w: _k_with_minimum(31, w),
    "q6_k": _q6_k,
}
WEIGHTED = tuple(_QUANTIZERS)  # the ggml types whose importance-weighted search is modelled


def weighted_quantizer(fmt: NumberFormat, w: Weighting) -> Quantizer:
    """The quantizer llama.cpp runs for `fmt` given an importance matrix."""
    return _QUANTIZERS[fmt.ggml_type](w)
