"""Integer formats by hand: FP16 scales, ties to even, saturation, zero points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixprec.kernels import formats


def qdq(name: str, values: list[list[float]]) -> list[list[float]]:
    return formats.get(name).quantize_dequantize(torch.tensor(values)).tolist()


def test_int4_per_channel_rounds_half_to_even() -> None:
    # amax 7 -> scale 1: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -3.5 -> -4; row 2 amax 14 -> scale 2,
    # where -13/2 = -6.5 ties to -6
    got = qdq("int4", [[7, 0.5, 1.5, 2.5, -3.5], [14, 1, 3, 5, -13]])
    assert got == [[7, 0, 2, 2, -4], [14, 0, 4, 4, -12]]


def test_int2_is_ternary_and_int3_has_seven_levels() -> None:
    assert qdq("int2", [[1, 0.4, 0.6, -0.5, -1]]) == [[1, 0, 1, -0.0, -1]]
    assert qdq("int3", [[3, 1.2, -2.6, 0.5]]) == [[3, 1, -3, 0]]


def test_int8_scale_is_rounded_to_fp16() -> None:
    row = np.array([1.0, 0.3, -0.77], np.float32)
    scale = np.float32(np.float16(np.float32(1.0) / np.float32(127)))
    codes = np.clip(np.round(row / scale), -127, 127)
    got = formats.get("int8").quantize_dequantize(torch.from_numpy(row[None])).numpy()
    np.testing.assert_array_equal(got[0], (codes * scale).astype(np.float32))


def test_groups_scale_independently() -> None:
    x = torch.zeros(1, 64)
    x[0, 0], x[0, 1] = 7.0, 3.0  # group 0: scale 1
    x[0, 32], x[0, 33] = 0.07, 0.03  # group 1: scale 0.01 in FP16
    got = formats.get("int4_g32").quantize_dequantize(x)
    s = float(np.float16(0.07 / 7))
    assert got[0, :2].tolist() == [7.0, 3.0]
    np.testing.assert_allclose(got[0, 32:34].numpy(), [7 * s, 3 * s], rtol=0, atol=0)


def test_asymmetric_group_uses_zero_point() -> None:
    # range [0, 15] -> scale 1, zero 0: exact integers
    x = torch.arange(16.0).repeat(8).reshape(1, 128)
    assert formats.get("int4_asym_g128").quantize_dequantize(x).equal(x)
    # all negative: range [-3, 0] -> scale fp16(0.2), zero point 15
    neg = torch.zeros(1, 128)
    neg[0, :3] = torch.tensor([-3.0, -1.5, -0.2])
    s = np.float32(np.float16(np.float32(3.0) / np.float32(15)))
    expected = (np.round(np.array([-3.0, -1.5, -0.2], np.float32) / s) * s).astype(np.float32)
    got = formats.get("int4_asym_g128").quantize_dequantize(neg)
    np.testing.assert_array_equal(got[0, :3].numpy(), expected)
    assert got[0, 3:].eq(0).all()


def test_asymmetric_beats_symmetric_on_a_one_sided_group() -> None:
    x = torch.rand(4, 128, generator=torch.Generator().manual_seed(0)) + 1.0
    asym = formats.get("int4_asym_g128").quantize_dequantize(x)
    sym = formats.get("int4_g128").quantize_dequantize(x)
    assert (asym - x).abs().mean() < (sym - x).abs().mean()


@pytest.mark.parametrize("name", ["int8", "int4_g128", "int4_asym_g128"])
def test_tiny_and_huge_groups_keep_a_finite_fp16_scale(name: str) -> None:
    x = torch.zeros(2, 128)
    x[0, 0] = 1e-12  # below FP16's range: the scale floors at 2^-24, the value rounds to 0
    x[1, 0] = 1e9  # above FP16's range: the scale caps at 65504 and the code saturates
    got = formats.get(name).quantize_dequantize(x)
    assert torch.isfinite(got).all()
    assert got[0, 0].item() == 0.0
    assert got[1, 0].item() == formats.get(name).qmax * 65504.0
