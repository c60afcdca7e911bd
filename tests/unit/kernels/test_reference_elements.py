"""Element rounding against ml_dtypes over every encoding, and per-channel FP scaling."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

from mixprec.kernels import formats
from mixprec.kernels.reference import round_float_elements

FP_ELEMENTS = {
    "fp8_e4m3": ml_dtypes.float8_e4m3fn,
    "fp8_e5m2": ml_dtypes.float8_e5m2,
    "fp6_e3m2": ml_dtypes.float6_e3m2fn,
    "fp6_e2m3": ml_dtypes.float6_e2m3fn,
    "fp4_e2m1": ml_dtypes.float4_e2m1fn,
}


def decode_all(name: str) -> np.ndarray:
    bits = formats.get(name).element_bits
    return np.arange(2**bits, dtype=np.uint8).view(FP_ELEMENTS[name]).astype(np.float32)


def ml_cast(values: np.ndarray, name: str) -> np.ndarray:
    return values.astype(np.float32).astype(FP_ELEMENTS[name]).astype(np.float32)


def ours(values: np.ndarray, name: str) -> np.ndarray:
    return round_float_elements(torch.from_numpy(values), formats.get(name)).numpy()


@pytest.mark.parametrize("name", sorted(FP_ELEMENTS))
def test_every_encoding_round_trips(name: str) -> None:
    decoded = decode_all(name)
    got = ours(decoded, name)
    finite = np.isfinite(decoded)
    np.testing.assert_array_equal(got[finite], decoded[finite])
    assert np.all(np.isnan(got[np.isnan(decoded)]))
    infinite = np.isinf(decoded)  # only E5M2 has them: they saturate
    np.testing.assert_array_equal(
        got[infinite], np.sign(decoded[infinite]) * formats.get(name).max_normal
    )


@pytest.mark.parametrize("name", sorted(FP_ELEMENTS))
def test_midpoints_and_neighbours_match_ml_dtypes(name: str) -> None:
    grid = formats.get(name).element_values().numpy()
    mids = (grid[:-1] + grid[1:]) / 2  # exact ties: round half to even
    nudged = np.concatenate(
        [np.nextafter(mids, np.float32(np.inf)), np.nextafter(mids, np.float32(-np.inf))]
    ).astype(np.float32)
    values = np.concatenate([mids, nudged, grid]).astype(np.float32)
    np.testing.assert_array_equal(ours(values, name), ml_cast(values, name))


@pytest.mark.parametrize("name", sorted(FP_ELEMENTS))
def test_random_values_in_range_match_ml_dtypes(name: str) -> None:
    rng = np.random.default_rng(0)
    top = formats.get(name).max_normal
    mags = np.exp(rng.uniform(np.log(1e-9), np.log(top), size=20_000))
    values = (mags * rng.choice([-1.0, 1.0], size=mags.size)).astype(np.float32)
    values = values[np.abs(values) <= top]
    np.testing.assert_array_equal(ours(values, name), ml_cast(values, name))


@pytest.mark.parametrize("name", sorted(FP_ELEMENTS))
def test_out_of_range_saturates_and_subnormal_inputs_flush(name: str) -> None:
    top = formats.get(name).max_normal
    values = np.array(
        [top * 1.01, -top * 4, np.inf, -np.inf, 1e-42, -1e-42, np.float32(1e38)], np.float32
    )
    got = ours(values, name)
    np.testing.assert_array_equal(got, [top, -top, top, -top, 0.0, -0.0, top])


@pytest.mark.parametrize("name", sorted(FP_ELEMENTS))
def test_per_channel_fp_scales_rows_by_amax(name: str) -> None:
    """Per-channel FP: each row's amax maps to max normal; elements are ml_dtypes casts."""
    fmt = formats.get(name)
    rng = np.random.default_rng(1)
    rows = (rng.standard_normal((6, 50)) * rng.uniform(1e-3, 1e3, (6, 1))).astype(np.float32)
    scale = (np.abs(rows).max(axis=1, keepdims=True) / np.float32(fmt.max_normal)).astype(
        np.float32
    )
    expected = ml_cast(rows / scale, name) * scale
    got = fmt.quantize_dequantize(torch.from_numpy(rows)).numpy()
    np.testing.assert_array_equal(got, expected)
