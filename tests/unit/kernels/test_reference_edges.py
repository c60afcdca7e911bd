"""Edge tensors for every quantized format: zeros, NaN, inf, exact grids, odd shapes, bad input."""

from __future__ import annotations

import pytest
import torch

from mixprec.errors import MixprecError
from mixprec.kernels import formats

QUANTIZED = [f.name for f in formats.all() if f.is_quantized]


def group_len(name: str, width: int) -> int:
    """Elements that share a scale: a block, a channel, or a K-quant's super-block of 256
    (whose sub-block scales are quantized against one scale)."""
    fmt = formats.get(name)
    block = fmt.superblock if fmt.nested_scales else fmt.block_size
    return min(block, width) if block else width


@pytest.mark.parametrize("name", QUANTIZED)
@pytest.mark.parametrize("shape", [(3, 40), (1,), (33,), (2, 3, 7), (4, 1, 3, 3)])
def test_zeros_stay_zero_in_any_shape(name: str, shape: tuple[int, ...]) -> None:
    got = formats.get(name).quantize_dequantize(torch.zeros(shape))
    assert got.shape == shape and got.dtype == torch.float32
    assert got.eq(0).all()


@pytest.mark.parametrize("name", QUANTIZED)
def test_odd_shapes_keep_shape_and_stay_close(name: str) -> None:
    x = torch.randn(5, 3, 45, generator=torch.Generator().manual_seed(0))
    got = formats.get(name).quantize_dequantize(x)
    assert got.shape == x.shape
    rel = ((got - x).norm() / x.norm()).item()
    assert rel < (0.25 if formats.get(name).element_bits >= 4 else 1.0)


def unit_scale_groups(name: str) -> torch.Tensor:
    """Every element value, in groups that each also hold the largest value (scale 1); the
    first of largest magnitude, with its sign (q4_0's grid -8..7 needs scale -8 / -8)."""
    fmt = formats.get(name)
    values = fmt.element_values()
    top = values[values.abs().argmax()].reshape(1)
    size = fmt.block_size or len(values) + 1
    rows = [
        torch.cat([chunk, top, torch.zeros(size - 1 - len(chunk))])
        for chunk in values.split(size - 1)
    ]
    x = torch.stack(rows)
    return x * 448.0 if fmt.family == "nv" else x  # NV: block scale 448 on tensor scale 1


@pytest.mark.parametrize("name", [n for n in QUANTIZED if not formats.get(n).nested_scales
                                  and formats.get(n).family != "ct"
                                  and not formats.get(n).codebook])  # fmt: skip
def test_exact_grid_values_survive(name: str) -> None:
    """(Not K-quants: their sub-block scales are 4/6-bit multiples of a super-block scale,
    so a sub-block's scale is rarely exactly 1; not compressed-tensors' schemes, whose scale
    puts the largest magnitude half a step past the grid: tests/unit/kernels/test_ct_formats;
    not iq4_nl, whose levels hold no zero and whose scale is a weighted fit, not amax.)"""
    x = unit_scale_groups(name)
    torch.testing.assert_close(formats.get(name).quantize_dequantize(x), x, atol=0, rtol=0)


@pytest.mark.parametrize("name", QUANTIZED)
def test_nan_poisons_only_its_scale_group(name: str) -> None:
    fmt = formats.get(name)
    x = torch.ones(4, 64)
    x[1, 5] = float("nan")
    got = fmt.quantize_dequantize(x)
    assert torch.isnan(got[1, 5])
    if fmt.tensor_scale_bits:  # the FP32 tensor scale is a group spanning the whole tensor
        assert torch.isnan(got).all()
        return
    g = group_len(name, 64)
    poisoned = torch.zeros(4, 64, dtype=torch.bool)
    rows = slice(None) if fmt.block_rows else 1  # a tile holds every row here
    poisoned[rows, (5 // g) * g : (5 // g + 1) * g] = True
    assert torch.isnan(got[poisoned]).all()
    assert torch.isfinite(got[~poisoned]).all()


def inf_input() -> torch.Tensor:
    x = torch.randn(2, 64, generator=torch.Generator().manual_seed(1))
    x[0, 3] = float("inf")
    x[1, 9] = float("-inf")
    return x


# ModelOpt's MXFP8 decodes an infinite value to inf (its exponent clamps at 127; 448 * 2^127
# overflows), as ModelOpt's own dequantization does
INF_STAYS = ("mo_mxfp8_e4m3",)


@pytest.mark.parametrize(
    "name", [n for n in QUANTIZED if formats.get(n).family != "mx" and n not in INF_STAYS]
)
def test_inf_saturates_to_its_groups_extreme_value(name: str) -> None:
    got = formats.get(name).quantize_dequantize(inf_input())
    assert torch.isfinite(got).all()
    g = group_len(name, 64)
    top = got[0, (3 // g) * g : (3 // g + 1) * g].max()
    bottom = got[1, (9 // g) * g : (9 // g + 1) * g].min()
    assert got[0, 3] == top and top > 0
    assert got[1, 9] == bottom and bottom < 0


MX_FLOATS = [
    n for n in QUANTIZED if formats.get(n).family == "mx" and formats.get(n).element_kind == "float"
]


@pytest.mark.parametrize("name", MX_FLOATS)
def test_mx_inf_keeps_its_sign_and_flushes_its_block(name: str) -> None:
    """OCP/torchao: inf sets the E8M0 exponent to 128 - emax; max normal times it overflows."""
    got = formats.get(name).quantize_dequantize(inf_input())
    assert got[0, 3] == float("inf") and got[1, 9] == float("-inf")
    assert got[0, :32].abs().sum() == float("inf") and got[0, :3].eq(0).all()
    assert torch.isfinite(got[:, 32:]).all()


@pytest.mark.parametrize("name", QUANTIZED)
def test_all_equal_group_stays_equal_and_close(name: str) -> None:
    x = torch.full((2, 64), 0.7)
    got = formats.get(name).quantize_dequantize(x)
    assert got.eq(got[0, 0]).all()
    assert abs(got[0, 0].item() - 0.7) <= 0.7 * 0.2


@pytest.mark.parametrize("name", QUANTIZED)
def test_bad_inputs_get_one_line_errors(name: str) -> None:
    fmt = formats.get(name)
    for bad in (torch.tensor(1.0), torch.zeros(0, 4)):
        with pytest.raises(MixprecError, match="cannot be quantized"):
            fmt.quantize_dequantize(bad)
    with pytest.raises(MixprecError, match="floating-point"):
        fmt.quantize_dequantize(torch.ones(2, 2, dtype=torch.int32))


@pytest.mark.parametrize("name", ["bf16", "fp16", "fp32"])
def test_native_formats_are_dtype_round_trips(name: str) -> None:
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(2))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]
    assert formats.get(name).quantize_dequantize(x).equal(x.to(dtype).float())


def test_bf16_input_is_accepted() -> None:
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(3))
    got = formats.get("mxfp4").quantize_dequantize(x.to(torch.bfloat16))
    assert got.dtype == torch.float32
    assert got.equal(formats.get("mxfp4").quantize_dequantize(x.to(torch.bfloat16).float()))
