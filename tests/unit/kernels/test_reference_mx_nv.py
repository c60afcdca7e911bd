"""MX and NVFP4 blocks bit-exact against torchao; MXINT8 and NVINT4 against the spec by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torchao.prototype.mx_formats import mx_tensor as mx
from torchao.prototype.mx_formats import nvfp4_tensor as nv

from mixprec.kernels import formats

TORCHAO_ELEM = {
    "mxfp8_e4m3": torch.float8_e4m3fn,
    "mxfp8_e5m2": torch.float8_e5m2,
    "mxfp6_e3m2": "fp6_e3m2",
    "mxfp6_e2m3": "fp6_e2m3",
    "mxfp4": torch.float4_e2m1fn_x2,
}


def torchao_mx(x: torch.Tensor, name: str) -> torch.Tensor:
    scale, data = mx.to_mx(x, TORCHAO_ELEM[name], 32)
    return mx.to_dtype(data, scale, TORCHAO_ELEM[name], 32, torch.float32)


def torchao_nvfp4(x: torch.Tensor) -> torch.Tensor:
    tensor_scale = nv.per_tensor_amax_to_scale(x.abs().amax())
    return nv.NVFP4Tensor.to_nvfp4(x, per_tensor_scale=tensor_scale).dequantize(torch.float32)


def log_uniform(shape: tuple[int, ...], low: float, high: float, seed: int) -> torch.Tensor:
    """Signed values spread over many binades, so every exponent path is taken."""
    gen = torch.Generator().manual_seed(seed)
    logs = torch.empty(shape).uniform_(math.log(low), math.log(high), generator=gen)
    signs = torch.randint(0, 2, shape, generator=gen) * 2 - 1
    return logs.exp() * signs


def random_inputs() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [
        torch.randn(8, 64, generator=gen),
        torch.randn(3, 4, 96, generator=gen) * 1e4,
        log_uniform((16, 128), 1e-30, 1e30, seed=1),
        log_uniform((4, 256), 1e-3, 1e3, seed=2),
    ]


def edge_input(max_normal: float) -> torch.Tensor:
    """One row per edge case, each a whole 32-block (torchao needs full blocks)."""
    rows = torch.zeros(8, 32)
    rows[1] = 0.7  # all equal
    rows[2, :4] = torch.tensor([max_normal, -max_normal, max_normal * 1.5, 3.0])
    rows[3, :3] = torch.tensor([float("inf"), 1.0, -2.0])
    rows[4, :3] = torch.tensor([float("-inf"), 0.25, 8.0])
    rows[5, :3] = torch.tensor([float("nan"), 1.0, 2.0])
    rows[6, :4] = torch.tensor([1.0, 1e-40, -3e-39, 1e-45])  # float32 subnormals beside a normal
    rows[7] = torch.linspace(-max_normal * 2, max_normal * 2, 32)  # at and past max normal
    return rows


@pytest.mark.parametrize("name", sorted(TORCHAO_ELEM))
def test_mx_matches_torchao_on_random_tensors(name: str) -> None:
    fmt = formats.get(name)
    for x in random_inputs():
        torch.testing.assert_close(fmt.quantize_dequantize(x), torchao_mx(x, name), atol=0, rtol=0)


@pytest.mark.parametrize("name", sorted(TORCHAO_ELEM))
def test_mx_matches_torchao_on_edge_blocks(name: str) -> None:
    fmt = formats.get(name)
    x = edge_input(fmt.max_normal)
    torch.testing.assert_close(
        fmt.quantize_dequantize(x), torchao_mx(x, name), atol=0, rtol=0, equal_nan=True
    )
    assert torch.isnan(fmt.quantize_dequantize(x)[5]).all()  # a NaN poisons its block
    assert fmt.quantize_dequantize(x)[0].eq(0).all()


@pytest.mark.parametrize("name", sorted(TORCHAO_ELEM))
def test_mx_smallest_e8m0_scale_follows_the_spec(name: str) -> None:
    """A block whose scale is 2^-127: OCP says quantize and dequantize with 2^-127.

    torchao divides by 2^-126 there (a float32-normal floor) but multiplies back by 2^-127,
    so it halves such values; we keep the spec. This is the one place we differ from it.
    """
    fmt = formats.get(name)
    block = torch.zeros(1, 32)
    block[0, 0] = 2.0**-127 * fmt.max_normal
    block[0, 1] = 2.0**-127
    got = fmt.quantize_dequantize(block)
    torch.testing.assert_close(got, block, atol=0, rtol=0)


@pytest.mark.parametrize("name", sorted(TORCHAO_ELEM))
def test_mx_pads_a_ragged_last_dim(name: str) -> None:
    fmt = formats.get(name)
    x = torch.randn(5, 70, generator=torch.Generator().manual_seed(3))
    padded = torch.nn.functional.pad(x, (0, 26))
    expected = torchao_mx(padded, name)[:, :70]
    torch.testing.assert_close(fmt.quantize_dequantize(x), expected, atol=0, rtol=0)


def test_mxint8_by_the_ocp_spec() -> None:
    """INT8 elements with an implicit 2^-6, E8M0 scale 2^floor(log2 amax) (emax_elem = 0)."""
    fmt = formats.get("mxint8")
    block = torch.zeros(2, 32)
    # amax 1.99 -> scale 1; 1.99*64 = 127.36 -> 127; 3/128*64 = 1.5 -> 2 (ties to even);
    # 1/128*64 = 0.5 -> 0; -0.3*64 = -19.2 -> -19
    block[0, :5] = torch.tensor([1.99, 3 / 128, 1 / 128, -0.3, 1.0])
    # amax 6 -> scale 4: 6/4*64 = 96; 0.1/4*64 = 1.6 -> 2; -5.99/4*64 = -95.84 -> -96
    block[1, :3] = torch.tensor([6.0, 0.1, -5.99])
    got = fmt.quantize_dequantize(block)
    assert got[0, :5].tolist() == [127 / 64, 2 / 64, 0.0, -19 / 64, 1.0]
    assert got[1, :3].tolist() == [6.0, 2 * 4 / 64, -6.0]
    assert got[:, 5:].eq(0).all()


def test_mxint4_like_mxint8_with_two_fraction_bits() -> None:
    """INT4 codes -7..7 times 2^-2 under the same E8M0 scale 2^floor(log2 amax)."""
    block = torch.zeros(1, 32)
    # amax 3 -> scale 2: 3/2*4 = 6; 0.9/2*4 = 1.8 -> 2; -0.25/2*4 = -0.5 -> -0 (ties to even);
    # 1.3/2*4 = 2.6 -> 3
    block[0, :4] = torch.tensor([3.0, 0.9, -0.25, 1.3])
    got = formats.get("mxint4").quantize_dequantize(block)
    assert got[0, :4].tolist() == [3.0, 2 * 2 / 4, 0.0, 3 * 2 / 4]
    # 1.99 * 4 = 7.96 rounds to 8 and saturates at 7: the largest element is 7/4
    assert formats.get("mxint4").quantize_dequantize(torch.full((1, 32), 1.99)).eq(1.75).all()


def test_mxint8_saturates_at_127_over_64() -> None:
    block = torch.full((1, 32), 1.999)  # 1.999*64 = 127.94 rounds to 128, saturates to 127
    got = formats.get("mxint8").quantize_dequantize(block)
    assert got.eq(127 / 64).all()


def test_mxint8_inf_block_has_no_e8m0_scale() -> None:
    """Inf needs exponent 128 - 0 > 127: no E8M0 scale exists, so the block is NaN."""
    block = torch.ones(2, 32)
    block[0, 3] = float("inf")
    got = formats.get("mxint8").quantize_dequantize(block)
    assert torch.isnan(got[0]).all() and got[1].eq(1).all()


def test_nvfp4_matches_torchao() -> None:
    fmt = formats.get("nvfp4")
    gen = torch.Generator().manual_seed(4)
    cases = [
        torch.randn(8, 64, generator=gen),
        log_uniform((16, 128), 1e-4, 1e4, seed=5),
        torch.randn(32, 16, generator=gen) * 1e-3,
    ]
    zero_block = torch.randn(4, 48, generator=gen)
    zero_block[1, 16:32] = 0  # an all-zero block inside a nonzero tensor
    equal_block = torch.randn(4, 32, generator=gen)
    equal_block[2, :16] = 0.37
    for x in [*cases, zero_block, equal_block]:
        torch.testing.assert_close(fmt.quantize_dequantize(x), torchao_nvfp4(x), atol=0, rtol=0)


def test_nvfp4_all_zero_tensor_stays_zero() -> None:
    """torchao's per-tensor scale is 0/0 here (NaN); we use scale 1 and keep zeros."""
    assert formats.get("nvfp4").quantize_dequantize(torch.zeros(2, 32)).eq(0).all()


def test_nvint4_two_level_scaling_by_hand() -> None:
    """amax 3136 = 448*7 gives tensor scale 1; block scales are then amax/7 in E4M3."""
    fmt = formats.get("nvint4")
    x = torch.zeros(2, 16)
    x[0, :3] = torch.tensor([3136.0, 224.0, -700.0])  # scale 448: codes 7, 0.5->0, -1.5625->-2
    x[1, :4] = torch.tensor([7.0, 3.5, 2.5, -1.4])  # scale 1: codes 7, 4, 2, -1
    got = fmt.quantize_dequantize(x)
    assert got[0, :3].tolist() == [3136.0, 0.0, -896.0]
    assert got[1, :4].tolist() == [7.0, 4.0, 2.0, -1.0]
    # block amax 13 -> scale 13/7 = 1.857 -> E4M3 1.875; 13/1.875 = 6.93 -> 7 -> 13.125
    y = torch.zeros(1, 16)
    y[0, :2] = torch.tensor([3136.0, 0.0])
    z = torch.cat([y, torch.tensor([[13.0] + [0.0] * 15])])
    assert formats.get("nvint4").quantize_dequantize(z)[1, 0].item() == 13.125
