"""llama.cpp's block bytes (ggml-common.h's `block_q*` structs) for the family "ggml" formats,
so a GGUF can store a planned tensor in its type without llama-quantize.

The bytes are those of ggml-quants.c's rows (what llama-quantize writes, given an importance
matrix or not): the codes and scales come from kernels/ggml*.py and kernels/kquants.py, and a
K-quant's sub-block scale codes are recovered exactly as sub-block scale / super-block scale.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mixprec.errors import MixprecError
from mixprec.kernels.formats import IQ4_NL_VALUES, NumberFormat
from mixprec.kernels.ggml import MXFP4_DOUBLED
from mixprec.kernels.packing import codebook_index
from mixprec.kernels.reference import QuantizedGroups, quantize

Packer = Callable[[QuantizedGroups], list[np.ndarray]]


def encode(
    x: torch.Tensor, fmt: NumberFormat, importance: torch.Tensor | None = None
) -> np.ndarray:
    """(rows, cols) float32 `x` as llama.cpp stores it: uint8 (rows, cols / block * bytes);
    `importance`: its entry of llama.cpp's importance matrix (per column), if one is used."""
    packer = PACKERS.get(fmt.ggml_type)
    if packer is None:
        raise MixprecError(f"no llama.cpp block layout for {fmt.name}; valid: "
                           f"{', '.join(sorted(PACKERS))}")  # fmt: skip
    rows, cols = x.shape
    if cols % fmt.row_multiple:
        raise MixprecError(
            f"{fmt.name} needs rows of a multiple of {fmt.row_multiple} values, not {cols}"
        )
    if not bool(torch.isfinite(x).all()):
        raise MixprecError(f"{fmt.name}: llama.cpp blocks hold finite values only")
    groups = quantize(x.to(torch.float32).contiguous(), fmt, importance)
    blocks = np.concatenate(packer(groups), axis=1)
    assert blocks.shape[1] == fmt.block_bytes, (fmt.name, blocks.shape)
    return blocks.reshape(rows, -1)


def _half(values: torch.Tensor) -> np.ndarray:
    """float32 values that are fp16 exactly, as their 2 little-endian bytes per row."""
    halves = values.reshape(values.shape[0], -1).numpy().astype("<f2")
    return halves.view(np.uint8).reshape(values.shape[0], -1)


def _codes(groups: QuantizedGroups, offset: int, width: int) -> np.ndarray:
    """Element codes (+ offset) as int32, one row per block of `width`."""
    return (groups.elements.reshape(-1, width).numpy() + offset).astype(np.int32)


def _nibbles(codes: np.ndarray) -> np.ndarray:
    """32 4-bit codes per block: byte j holds code j (low) and code j + 16 (high)."""
    return ((codes[:, :16] & 0xF) | ((codes[:, 16:] & 0xF) << 4)).astype(np.uint8)


def _high_bits(codes: np.ndarray) -> np.ndarray:
    """q5_0 / q5_1's qh: bit j of a little-endian uint32 is code j's fifth bit."""
    bits = ((codes >> 4) & 1).astype(np.uint64) << np.arange(32, dtype=np.uint64)
    return bits.sum(axis=1).astype("<u4").view(np.uint8).reshape(-1, 4)


def _q8_0(q: QuantizedGroups) -> list[np.ndarray]:
    return [_half(q.scale), _codes(q, 0, 32).astype(np.int8).view(np.uint8)]


def _offset(levels: int) -> Packer:
    def pack(q: QuantizedGroups) -> list[np.ndarray]:
        codes = _codes(q, levels, 32)
        return [_half(q.scale), *([_high_bits(codes)] if levels == 16 else []), _nibbles(codes)]

    return pack


def _minimum(levels: int) -> Packer:
    def pack(q: QuantizedGroups) -> list[np.ndarray]:
        assert q.minimum is not None
        codes = _codes(q, 0, 32)
        high = [_high_bits(codes)] if levels == 31 else []
        return [_half(q.scale), _half(q.minimum), *high, _nibbles(codes)]

    return pack


def _fp4_codes(q: QuantizedGroups, width: int) -> np.ndarray:
    """E2M1 element values as kvalues_mxfp4 indices (zero is code 0), one row per `width`."""
    index = {value: code for code, value in reversed(list(enumerate(MXFP4_DOUBLED)))}
    doubled = (q.elements.reshape(-1, width) * 2).numpy().astype(np.int32)
    return np.vectorize(index.__getitem__, otypes=[np.int32])(doubled)


def _mxfp4(q: QuantizedGroups) -> list[np.ndarray]:
    exponent = torch.log2(q.scale.reshape(-1, 1)).numpy().astype(np.int32) + 127
    return [np.where(q.scale.reshape(-1, 1).numpy() > 0, exponent, 0).astype(np.uint8),
            _nibbles(_fp4_codes(q, 32))]  # fmt: skip


def _nvfp4(q: QuantizedGroups) -> list[np.ndarray]:
    """4 UE4M3 scale bytes (E4M3's bytes for these values), then per 16 values 8 bytes: byte j
    holds code j (low) and code j + 8 (high)."""
    scales = q.scale.reshape(-1, 4).to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    codes = _fp4_codes(q, 16)
    return [scales, (codes[:, :8] | (codes[:, 8:] << 4)).astype(np.uint8).reshape(-1, 32)]


def _iq4_nl(q: QuantizedGroups) -> list[np.ndarray]:
    index = codebook_index(q.elements, IQ4_NL_VALUES)
    return [_half(q.scale), _nibbles(index.reshape(-1, 32).numpy().astype(np.int32))]


def _sub_scales(q: QuantizedGroups, count: int, minimum: bool = False) -> np.ndarray:
    """Each super-block's `count` sub-block scale (or minimum) codes: d_sub / d_super."""
    values = (-q.minimum if minimum else q.scale).reshape(-1, count)  # type: ignore[operator]
    parent = q.super_minimum if minimum else q.super_scale
    assert parent is not None
    parent = parent.reshape(-1, 1)
    ratio = values / torch.where(parent == 0, 1.0, parent)
    return torch.where(parent == 0, 0.0, torch.round(ratio)).numpy().astype(np.int32)


def _two_bit_planes(codes: np.ndarray) -> np.ndarray:
    """q2_k / q3_k's qs and q6_k's qh: per 128 values, byte l holds the 2-bit codes l, l+32,
    l+64 and l+96."""
    halves = codes.reshape(-1, 2, 4, 32) & 3
    planes = (
        halves[:, :, 0] | (halves[:, :, 1] << 2) | (halves[:, :, 2] << 4) | (halves[:, :, 3] << 6)
    )
    return planes.reshape(-1, 64).astype(np.uint8)


def _q2_k(q: QuantizedGroups) -> list[np.ndarray]:
    assert q.super_scale is not None and q.super_minimum is not None
    sc, m = _sub_scales(q, 16), _sub_scales(q, 16, minimum=True)
    codes = _codes(q, 0, 256)
    return [(sc | (m << 4)).astype(np.uint8), _two_bit_planes(codes),
            _half(q.super_scale), _half(q.super_minimum)]  # fmt: skip


def _six_bit_scales(sc: np.ndarray, mins: np.ndarray | None) -> np.ndarray:
    """The 12 bytes holding 16 6-bit scale codes (q3_k) or 8 scales + 8 minimums (q4/q5_k)."""
    out = np.zeros((sc.shape[0], 12), dtype=np.int32)
    if mins is None:  # q3_k: low nibbles in bytes 0-7, high 2 bits in bytes 8-11
        for j in range(16):
            out[:, j % 8] |= (sc[:, j] & 0xF) << (4 * (j // 8))
            out[:, 8 + j % 4] |= (sc[:, j] >> 4) << (2 * (j // 4))
        return out.astype(np.uint8)
    for j in range(8):  # q4_k / q5_k: get_scale_min_k4's layout
        if j < 4:
            out[:, j], out[:, j + 4] = sc[:, j], mins[:, j]
        else:
            out[:, j + 4] = (sc[:, j] & 0xF) | ((mins[:, j] & 0xF) << 4)
            out[:, j - 4] |= (sc[:, j] >> 4) << 6
            out[:, j] |= (mins[:, j] >> 4) << 6
    return out.astype(np.uint8)


def _q3_k(q: QuantizedGroups) -> list[np.ndarray]:
    assert q.super_scale is not None
    codes = _codes(q, 4, 256)
    mask = ((codes >> 2) & 1).reshape(-1, 8, 32) << np.arange(8).reshape(1, 8, 1)
    live = q.super_scale.reshape(-1, 1).numpy() != 0  # C leaves a dead block's scales 0
    scales = np.where(live, _sub_scales(q, 16) + 32, 0)
    return [mask.sum(axis=1).astype(np.uint8), _two_bit_planes(codes),
            _six_bit_scales(scales, None), _half(q.super_scale)]  # fmt: skip


def _k_with_minimum(bits: int) -> Packer:
    def pack(q: QuantizedGroups) -> list[np.ndarray]:
        assert q.super_scale is not None and q.super_minimum is not None
        codes = _codes(q, 0, 256).reshape(-1, 4, 2, 32)  # 64 values: low and high nibble
        low = (codes[:, :, 0] & 0xF) | ((codes[:, :, 1] & 0xF) << 4)
        scales = _six_bit_scales(_sub_scales(q, 8), _sub_scales(q, 8, minimum=True))
        head = [_half(q.super_scale), _half(q.super_minimum), scales]
        if bits == 4:
            return [*head, low.reshape(-1, 128).astype(np.uint8)]
        fifth = (codes >> 4) & 1  # bit 2i of qh[l]: value 64i + l, bit 2i + 1: 64i + 32 + l
        shifts = 2 * np.arange(4).reshape(1, 4, 1, 1) + np.arange(2).reshape(1, 1, 2, 1)
        high = (fifth << shifts).sum(axis=(1, 2))
        return [*head, high.astype(np.uint8), low.reshape(-1, 128).astype(np.uint8)]

    return pack


def _q6_k(q: QuantizedGroups) -> list[np.ndarray]:
    assert q.super_scale is not None
    live = q.super_scale.reshape(-1, 1).numpy() != 0  # C zeroes a dead super-block entirely
    codes = np.where(live, _codes(q, 32, 256), 0)
    low = (codes & 0xF).reshape(-1, 2, 4, 32)
    ql = np.concatenate([low[:, :, 0] | (low[:, :, 2] << 4), low[:, :, 1] | (low[:, :, 3] << 4)],
                        axis=2)  # fmt: skip
    scales = np.where(live, _sub_scales(q, 16), 0).astype(np.int8).view(np.uint8)
    return [ql.reshape(-1, 128).astype(np.uint8), _two_bit_planes(codes >> 4), scales,
            _half(q.super_scale)]  # fmt: skip


PACKERS: dict[str, Packer] = {
    "q8_0": _q8_0, "q4_0": _offset(8), "q5_0": _offset(16), "q4_1": _minimum(15),
    "q5_1": _minimum(31), "mxfp4": _mxfp4, "q2_k": _q2_k, "q3_k": _q3_k,
    "q4_k": _k_with_minimum(4), "q5_k": _k_with_minimum(5), "q6_k": _q6_k, "iq4_nl": _iq4_nl,
    "nvfp4": _nvfp4,
}  # fmt: skip
