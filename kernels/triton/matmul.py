"""Reading packed tensors in Triton: unpack to float32, and the dequant-matmul that keeps
weights packed in memory and decodes each tile in registers just before `tl.dot`."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from mixprec.errors import MixprecError
from mixprec.kernels.packing import PackedTensor
from mixprec.kernels.triton import check_device, interpreted, launching
from mixprec.kernels.triton.elements import decode_float, decode_int, e8m0_scale, extract_code
from mixprec.kernels.triton.qdq import TILE_ELEMENTS, format_constants


@triton.jit
def dequant_tile(
    codes_ptr, scales_ptr, zeros_ptr, ts_ptr, row, col, mask, nbytes, groups_per_row, group_len,
    FAMILY: tl.constexpr, FLOAT_ELEMS: tl.constexpr, MANT: tl.constexpr, EXP_BITS: tl.constexpr,
    BIAS: tl.constexpr, MIN_EXP: tl.constexpr, STEP: tl.constexpr, BITS: tl.constexpr,
):  # fmt: skip
    """Values at (row, col) of a packed tensor, with the reference's arithmetic."""
    code = extract_code(codes_ptr + row * nbytes, col, nbytes, mask, BITS)
    if FLOAT_ELEMS:
        elems = decode_float(code, EXP_BITS, MANT, BIAS, MIN_EXP)
    else:
        elems = decode_int(code, BITS, FAMILY != 2, STEP)
    group = row * groups_per_row + col // group_len
    stored = tl.load(scales_ptr + group, mask=mask, other=0)
    if FAMILY == 3:
        scale = e8m0_scale(stored.to(tl.int32))
    elif FAMILY == 4:
        scale = decode_float(stored.to(tl.int32), 4, 3, 7, -6)
    else:
        scale = stored.to(tl.float32)
    if FAMILY == 2:
        zero = tl.load(zeros_ptr + group, mask=mask, other=0).to(tl.float32)
        return (elems - zero) * scale
    elif FAMILY == 4:
        return elems * (tl.load(ts_ptr) * scale)
    else:
        return elems * scale


@triton.jit
def _unpack_kernel(
    codes_ptr, scales_ptr, zeros_ptr, ts_ptr, out_ptr, cols, nbytes, groups_per_row, group_len,
    total, FAMILY: tl.constexpr, FLOAT_ELEMS: tl.constexpr, MANT: tl.constexpr,
    EXP_BITS: tl.constexpr, BIAS: tl.constexpr, MIN_EXP: tl.constexpr, STEP: tl.constexpr,
    BITS: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    live = idx < total
    values = dequant_tile(
        codes_ptr, scales_ptr, zeros_ptr, ts_ptr, idx // cols, idx % cols, live, nbytes,
        groups_per_row, group_len, FAMILY, FLOAT_ELEMS, MANT, EXP_BITS, BIAS, MIN_EXP, STEP, BITS,
    )  # fmt: skip
    tl.store(out_ptr + idx, values, mask=live)


@triton.jit
def _packed_linear_kernel(
    x_ptr, codes_ptr, scales_ptr, zeros_ptr, ts_ptr, bias_ptr, out_ptr, M, N, K, nbytes,
    groups_per_row, group_len, HAS_BIAS: tl.constexpr, FAMILY: tl.constexpr,
    FLOAT_ELEMS: tl.constexpr, MANT: tl.constexpr, EXP_BITS: tl.constexpr, BIAS: tl.constexpr,
    MIN_EXP: tl.constexpr, STEP: tl.constexpr, BITS: tl.constexpr, FP32_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    """out[M, N] = x[M, K] @ W[N, K].T (+ bias), W decoded tile by tile from its codes."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        x_mask = (rm < M)[:, None] & (rk < K)[None, :]
        xt = tl.load(x_ptr + rm[:, None].to(tl.int64) * K + rk[None, :], mask=x_mask, other=0.0)
        w_mask = (rn < N)[:, None] & (rk < K)[None, :]
        wt = dequant_tile(
            codes_ptr, scales_ptr, zeros_ptr, ts_ptr, rn[:, None].to(tl.int64), rk[None, :],
            w_mask, nbytes, groups_per_row, group_len, FAMILY, FLOAT_ELEMS, MANT, EXP_BITS, BIAS,
            MIN_EXP, STEP, BITS,
        )  # fmt: skip
        if FP32_DOT:
            acc += tl.dot(xt.to(tl.float32), tl.trans(wt), input_precision="ieee")
        else:
            acc += tl.dot(xt, tl.trans(wt.to(xt.dtype)))
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    out_mask = (rm < M)[:, None] & (rn < N)[None, :]
    out_ptrs = out_ptr + rm[:, None].to(tl.int64) * N + rn[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def _decode_constants(p: PackedTensor) -> dict[str, object]:
    keep = ("FAMILY", "FLOAT_ELEMS", "MANT", "EXP_BITS", "BIAS", "MIN_EXP", "STEP", "BITS")
    constants = format_constants(p.fmt)
    return {k: constants[k] for k in keep}


def _operands(p: PackedTensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    zeros = p.zero_points if p.zero_points is not None else p.codes
    ts = p.tensor_scale if p.tensor_scale is not None else p.scales.new_ones(1, dtype=torch.float32)
    return p.scales, zeros, ts.reshape(1)


def unpack(p: PackedTensor) -> torch.Tensor:
    """Triton twin of packing.unpack: float32 values in the original shape."""
    check_device(p.codes)
    total = p.rows * p.cols
    out = torch.empty((p.rows, p.cols), dtype=torch.float32, device=p.codes.device)
    scales, zeros, ts = _operands(p)
    with launching():
        _unpack_kernel[(triton.cdiv(total, TILE_ELEMENTS),)](
            p.codes, scales, zeros, ts, out, p.cols, p.codes.shape[1], scales.shape[1],
            p.group_size, total, **_decode_constants(p), BLOCK=TILE_ELEMENTS,
        )  # fmt: skip
    return out.reshape(p.shape)


def packed_linear(
    x: torch.Tensor, weight: PackedTensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`x @ W.T + bias` reading the packed (out, in) weight; output in x's dtype.

    float32 inputs use an IEEE fp32 dot; on a GPU 16-bit inputs multiply the decoded weight
    tile in their own dtype with fp32 accumulation. The interpreter's 16-bit dot is wrong
    (Triton 3.9), so there 16-bit inputs are upcast and use the fp32 dot too.
    """
    check_device(x)
    if x.shape[-1] != weight.cols:
        raise MixprecError(
            f"input has {x.shape[-1]} features but the packed weight expects {weight.cols}"
        )
    rows = x.reshape(-1, weight.cols).contiguous()
    m, n, k = rows.shape[0], weight.rows, weight.cols
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    scales, zeros, ts = _operands(weight)
    block_m = max(16, min(64, triton.next_power_of_2(m)))
    fp32_dot = x.dtype == torch.float32 or interpreted()
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, 64))
    with launching():
        _packed_linear_kernel[grid](
            rows, weight.codes, scales, zeros, ts, out if bias is None else bias, out, m, n, k,
            weight.codes.shape[1], scales.shape[1], weight.group_size, HAS_BIAS=bias is not None,
            **_decode_constants(weight), FP32_DOT=fp32_dot, BLOCK_M=block_m, BLOCK_N=64,
            BLOCK_K=64,
        )  # fmt: skip
    return out.reshape(*x.shape[:-1], n)
