"""llama.cpp's K-quants (q2_k .. q6_k): super-blocks of 256 with 16 or 32 sub-block scales,
quantized as ggml-quants.c's `quantize_row_q*_K_ref` does (what llama-quantize runs without an
importance matrix). C's float loops are kept in their order, one element at a time across all
sub-blocks at once, so every sum rounds as in C; `nearest_int` is round-half-even.

Each function takes (n, 256) float32 super-blocks and returns one scale group per sub-block:
codes, the float32 sub-block scale d * sc, and (q2/q4/q5_k) the minimum -(dmin * m) added back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from mixprec.kernels.ggml import clamped, signed_max, to_fp16
from mixprec.kernels.reference import divide

if TYPE_CHECKING:
    from mixprec.kernels.reference import QuantizedGroups

GROUP_MAX_EPS = 1e-15
SUPER_BLOCK = 256


def nearest_int(x: torch.Tensor) -> torch.Tensor:
    """C's `nearest_int`: round half to even, to an integer (so never -0.0)."""
    return torch.round(x) + 0.0


def sqrtf(x: torch.Tensor) -> torch.Tensor:
    """C's `sqrtf`, correctly rounded: torch's float32 sqrt on AVX-512 CPUs (Sleef, 0.5001 ulp)
    is sometimes one ulp off; the float64 root rounds to the float32 one exactly."""
    return torch.sqrt(x.double()).float()


def ordered_sum(*factors: torch.Tensor) -> torch.Tensor:
    """`for (i = 0; i < n; ++i) s += f0[i] * f1[i] * ...` in C's order (products left to
    right, sums one element at a time), for every row at once."""
    total = torch.zeros_like(factors[0][:, :1])
    for i in range(factors[0].shape[1]):
        term = factors[0][:, i : i + 1]
        for factor in factors[1:]:
            term = term * factor[:, i : i + 1]
        total = total + term
    return total


def make_qx_quants(
    x: torch.Tensor, nmax: int, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed codes in [-nmax, nmax) and a scale, the best of 19 trial scales weighted by
    `weights` or else x^2 (`make_qx_quants` with rmse_type 1)."""
    top = signed_max(x)
    empty = top.abs() < GROUP_MAX_EPS
    top = torch.where(empty, 1.0, top)
    w = x * x if weights is None else weights

    def trial(iscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        levels = nearest_int(iscale * x).clamp(-nmax, nmax - 1)
        return levels, ordered_sum(w, x, levels), ordered_sum(w, levels, levels)

    levels, sumlx, suml2 = trial(divide(-float(nmax), top))
    scale = torch.where(suml2 != 0, sumlx / torch.where(suml2 != 0, suml2, 1.0), 0.0)
    best = scale * sumlx
    for step in (*range(-9, 0), *range(1, 10)):
        iscale = divide(-(nmax + torch.tensor(0.1, dtype=torch.float32) * step), top)
        trial_levels, sumlx, suml2 = trial(iscale)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        levels = torch.where(better, trial_levels, levels)
        scale = torch.where(better, sumlx / torch.where(better, suml2, 1.0), scale)
        best = torch.where(better, scale * sumlx, best)
    return torch.where(empty, 0.0, levels), torch.where(empty, 0.0, scale)


def make_qkx2_quants(
    x: torch.Tensor, w: torch.Tensor, nmax: int, rmin: float, rdelta: float, nstep: int,
    use_mad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Codes in [0, nmax], a scale and a minimum (returned as -min >= 0): the weighted
    least-squares fit of `make_qkx2_quants` over nstep + 1 trial scales."""
    lo = torch.minimum(x.amin(dim=1, keepdim=True), torch.zeros_like(x[:, :1]))
    hi = x.amax(dim=1, keepdim=True)
    flat = hi == lo
    span = torch.where(flat, 1.0, hi - lo)
    sum_w, sum_x = ordered_sum(w), ordered_sum(w, x)  # 0 + w[0] is w[0]: C's start

    def codes(iscale: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
        return nearest_int(iscale * (x - minimum)).clamp(0, nmax)

    def error(levels: torch.Tensor, scale: torch.Tensor, minimum: torch.Tensor) -> torch.Tensor:
        diff = scale * levels + minimum - x
        diff = diff.abs() if use_mad else diff * diff
        return ordered_sum(w, diff)

    iscale = divide(float(nmax), span)
    scale = divide(1.0, iscale)
    minimum = lo  # C's `min`: each better fit replaces it, and later trials start from it
    levels = codes(iscale, minimum)
    best = error(levels, scale, minimum)
    for step in range(nstep + 1):
        width = torch.where(flat, 1.0, hi - minimum)
        iscale = (rmin + torch.tensor(rdelta, dtype=torch.float32) * step + nmax) / width
        trial = codes(iscale, minimum)
        sum_l, sum_l2, sum_xl = (
            ordered_sum(w, trial),
            ordered_sum(w, trial, trial),
            ordered_sum(w, trial, x),
        )
        det = sum_w * sum_l2 - sum_l * sum_l
        solvable = det > 0
        safe = torch.where(solvable, det, 1.0)
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe
        positive = this_min > 0
        this_min = torch.where(positive, 0.0, this_min)
        this_scale = torch.where(positive, sum_xl / torch.where(positive, sum_l2, 1.0),
                                 this_scale)  # fmt: skip
        current = error(trial, this_scale, this_min)
        better = solvable & (current < best)
        best = torch.where(better, current, best)
        levels = torch.where(better, trial, levels)
        scale = torch.where(better, this_scale, scale)
        minimum = torch.where(better, this_min, minimum)
    return (torch.where(flat, 0.0, levels), torch.where(flat, 0.0, scale),
            torch.where(flat, -lo, -minimum))  # fmt: skip


def make_q3_quants(x: torch.Tensor, nmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed codes in [-nmax, nmax) and a scale: `make_q3_quants` with its five rounds of
    moving single codes while the x^2-weighted fit improves."""
    top = signed_max(x)
    empty = top.abs() < GROUP_MAX_EPS
    top = torch.where(empty, 1.0, top)
    levels = nearest_int(divide(-float(nmax), top) * x).clamp(-nmax, nmax - 1)
    w = x * x
    sumlx, suml2 = ordered_sum(w, x, levels), ordered_sum(w, levels, levels)
    levels, sumlx, suml2 = _move_codes(x, w, levels, sumlx, suml2, (-nmax, nmax - 1), False)
    scale = torch.where(suml2 > 0, sumlx / torch.where(suml2 > 0, suml2, 1.0), 0.0)
    return torch.where(empty, 0.0, levels), torch.where(empty, 0.0, scale)


def _move_codes(
    x: torch.Tensor, w: torch.Tensor, levels: torch.Tensor, sumlx: torch.Tensor,
    suml2: torch.Tensor, bounds: tuple[int | None, int], needs_positive_sl2: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """Up to five rounds (a row stops after one with no move) of moving each code, one at a
    time, to nearest_int(x sl2 / slx) where that raises sumlx^2 / suml2 (make_q3_quants,
    make_qp_quants; the latter also skips a code whose removal leaves sl2 <= 0)."""
    active = torch.ones_like(sumlx, dtype=torch.bool)
    for _ in range(5):
        changed = torch.zeros_like(active)
        for i in range(x.shape[1]):
            wi, xi, li = w[:, i : i + 1], x[:, i : i + 1], levels[:, i : i + 1]
            slx = sumlx - wi * xi * li
            sl2 = suml2 - wi * li * li
            usable = (slx > 0) & (sl2 > 0) if needs_positive_sl2 else slx > 0
            moved = nearest_int(xi * sl2 / torch.where(usable, slx, 1.0)).clamp(*bounds)
            slx_new = slx + wi * xi * moved
            sl2_new = sl2 + wi * moved * moved
            take = (active & usable & (moved != li) & (sl2_new > 0)
                    & (slx_new * slx_new * suml2 > sumlx * sumlx * sl2_new))  # fmt: skip
            levels[:, i : i + 1] = torch.where(take, moved, li)
            sumlx = torch.where(take, slx_new, sumlx)
            suml2 = torch.where(take, sl2_new, suml2)
            changed = changed | take
        active = active & changed
    return levels, sumlx, suml2


def make_qp_quants(
    x: torch.Tensor, nmax: int, w: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes in [0, nmax] and a scale for non-negative rows (a K-quant's sub-block scales
    under an importance matrix): `make_qp_quants`' 9 trial scales, then its five rounds of
    moving single codes while the `w`-weighted fit improves."""
    top = torch.clamp(x.amax(dim=1, keepdim=True), min=0.0)
    empty = top < GROUP_MAX_EPS
    top = torch.where(empty, 1.0, top)

    def error(iscale: torch.Tensor, clamp: bool) -> torch.Tensor:
        levels = nearest_int(iscale * x)
        diff = x - divide(1.0, iscale) * (levels.clamp(max=nmax) if clamp else levels)
        return ordered_sum(w, diff, diff)

    iscale = divide(float(nmax), top)
    best = error(iscale, clamp=False)
    for step in (*range(-4, 0), *range(1, 5)):
        trial = divide(torch.tensor(0.1, dtype=torch.float32) * step + nmax, top)
        mse = error(trial, clamp=True)
        better = mse < best
        best = torch.where(better, mse, best)
        iscale = torch.where(better, trial, iscale)
    levels = nearest_int(iscale * x).clamp(max=nmax)
    sumlx, suml2 = ordered_sum(w, x, levels), ordered_sum(w, levels, levels)
    levels, sumlx, suml2 = _move_codes(x, w, levels, sumlx, suml2, (None, nmax), True)
    scale = torch.where(suml2 > 0, sumlx / torch.where(suml2 > 0, suml2, 1.0), 0.0)
    return torch.where(empty, 0.0, levels), torch.where(empty, 0.0, scale)


def positive_ratio(numerator: float, value: torch.Tensor) -> torch.Tensor:
    """`value > 0 ? numerator / value : 0.f`."""
    return torch.where(value > 0, divide(numerator, torch.where(value > 0, value, 1.0)), 0.0)


def rows_of(values: torch.Tensor, width: int) -> torch.Tensor:
    """Sub-blocks of a super-block as rows, or a super-block's sub-block scales as one row."""
    return values.reshape(-1, width)


def requantize(x: torch.Tensor, d: torch.Tensor, low: int, high: int,
                dm: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """`nearest_int((x + dm) / d)` clamped, for the sub-blocks whose d is not zero."""
    shifted = x if dm is None else x + dm
    return nearest_int(shifted / torch.where(d == 0, 1.0, d)).clamp(low, high)


def with_minimum(levels: torch.Tensor, d: torch.Tensor, m: torch.Tensor,
                  super_scale: torch.Tensor, super_minimum: torch.Tensor
                  ) -> QuantizedGroups:  # fmt: skip
    from mixprec.kernels.reference import QuantizedGroups

    return QuantizedGroups(levels, d, minimum=-m, super_scale=super_scale,
                           super_minimum=super_minimum)  # fmt: skip


def requantized_with_minimum(
    x: torch.Tensor, levels: torch.Tensor, scale: tuple[torch.Tensor, torch.Tensor],
    minimum: tuple[torch.Tensor, torch.Tensor], nmax: int,
) -> QuantizedGroups:  # fmt: skip
    """Each sub-block's d = super scale * scale code and minimum likewise (codes, super value);
    its codes found again at them (kept where d is 0), as every K-quant with a minimum does."""
    (ls, d_super), (lm, dmin_super) = scale, minimum
    d, dm = (d_super * ls).reshape(-1, 1), (dmin_super * lm).reshape(-1, 1)
    fresh = requantize(x, d, 0, nmax, dm)
    return with_minimum(torch.where(d == 0, levels, fresh), d, dm, d_super, dmin_super)


def _k_with_minimum(sub: int, nmax: int, rmin: float, nstep: int
                    ) -> Callable[[torch.Tensor], QuantizedGroups]:  # fmt: skip
    """q4_k / q5_k: 8 sub-blocks of 32 weighted by rms + |x|, 6-bit scales and minimums."""

    def quantize(blocks: torch.Tensor) -> QuantizedGroups:
        x = rows_of(clamped(blocks), sub)
        sum_x2 = ordered_sum(x, x)
        weights = sqrtf(divide(sum_x2, float(sub))) + x.abs()
        levels, scales, mins = make_qkx2_quants(x, weights, nmax, rmin, 0.1, nstep, False)
        count = SUPER_BLOCK // sub
        per_scale, per_min = rows_of(scales, count), rows_of(mins, count)
        max_scale = torch.clamp(per_scale.amax(dim=1, keepdim=True), min=0.0)
        max_min = torch.clamp(per_min.amax(dim=1, keepdim=True), min=0.0)
        inv_scale, inv_min = positive_ratio(63.0, max_scale), positive_ratio(63.0, max_min)
        ls = torch.remainder(nearest_int(inv_scale * per_scale), 256).clamp(max=63)
        lm = torch.remainder(nearest_int(inv_min * per_min), 256).clamp(max=63)
        d_super, dmin_super = to_fp16(divide(max_scale, 63.0)), to_fp16(divide(max_min, 63.0))
        return requantized_with_minimum(x, levels, (ls, d_super), (lm, dmin_super), nmax)

    return quantize


def _q2_k(blocks: torch.Tensor) -> QuantizedGroups:
    """q2_k: 16 sub-blocks of 16 weighted by |x|, 4-bit scales and minimums."""
    x = rows_of(clamped(blocks), 16)
    levels, scales, mins = make_qkx2_quants(x, x.abs(), 3, -0.5, 0.1, 15, True)
    per_scale, per_min = rows_of(scales, 16), rows_of(mins, 16)
    max_scale = torch.clamp(per_scale.amax(dim=1, keepdim=True), min=0.0)
    max_min = torch.clamp(per_min.amax(dim=1, keepdim=True), min=0.0)

    def codes(values: torch.Tensor, top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ints = nearest_int(positive_ratio(15.0, top) * values).to(torch.int32)
        return ints, torch.where(top > 0, to_fp16(divide(top, 15.0)), 0.0)

    sc, d_all = codes(per_scale, max_scale)
    m, dmin_all = codes(per_min, max_min)
    packed = (sc & 0xFF) | (m << 4)  # one byte: scale code low, minimum code high (C's |=)
    d = (d_all * (packed & 0xF)).reshape(-1, 1)
    dm = (dmin_all * ((packed >> 4) & 0xF)).reshape(-1, 1)
    fresh = requantize(x, d, 0, 3, dm)
    return with_minimum(torch.where(d == 0, levels, fresh), d, dm, d_all, dmin_all)


def signed_k(sub_quant: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]],
              nmax: int, scale_levels: int, code_range: tuple[int, int]
              ) -> Callable[[torch.Tensor], QuantizedGroups]:  # fmt: skip
    """q3_k / q6_k: 16 sub-blocks of 16 with signed scales, d = 1 / (-levels / max scale)."""

    def quantize(blocks: torch.Tensor) -> QuantizedGroups:
        from mixprec.kernels.reference import QuantizedGroups

        x = rows_of(clamped(blocks), 16)
        levels, scales = sub_quant(x, nmax)
        per_scale = rows_of(scales, 16)
        top = signed_max(per_scale)  # C's strict `>` scan from 0
        # q6_k zeroes a super-block whose largest scale is below GROUP_MAX_EPS, q3_k one of 0
        live = top.abs() >= GROUP_MAX_EPS if scale_levels == 128 else top != 0
        iscale = divide(-float(scale_levels), torch.where(live, top, 1.0))
        sc = nearest_int(iscale * per_scale)
        sc = sc.clamp(max=127) if scale_levels == 128 else sc.clamp(-32, 31)
        d_all = torch.where(live, to_fp16(divide(1.0, iscale)), 0.0)
        d = (d_all * torch.where(live, sc, 0.0)).reshape(-1, 1)
        fresh = requantize(x, d, *code_range)
        return QuantizedGroups(torch.where(d == 0, levels, fresh), d, super_scale=d_all)

    return quantize


KQUANTIZERS: dict[str, Callable[[torch.Tensor], QuantizedGroups]] = {
    "q2_k": _q2_k,
    "q3_k": signed_k(make_q3_quants, 4, 32, (-4, 3)),
    "q4_k": _k_with_minimum(32, 15, -1.0, 20),
    "q5_k": _k_with_minimum(32, 31, -0.5, 15),
    "q6_k": signed_k(make_qx_quants, 32, 128, (-32, 31)),
}
