"""The torch reference gives the same bits on every device, shown on the CPU: CUDA's way of
dividing by a number is reproduced here (tests/gpu compares the two devices themselves)."""

from __future__ import annotations

import pytest
import torch

from mixprec.kernels import formats, packing
from tests.helpers.cuda_division import cuda_scalar_division
from tests.helpers.triton_cases import QUANTIZED, edge_tensor, random_tensor, same_bits

SHAPES = [(64, 256), (7, 45), (2, 3, 40), (3, 9000)]


def test_the_emulation_rounds_as_cuda_does() -> None:
    """x / 3 differs from x * fl(1/3) on some values: the emulation must produce the latter."""
    x = torch.arange(1, 200, dtype=torch.float32)
    with cuda_scalar_division():
        emulated = x / 3.0
    third = torch.tensor(1.0) / torch.tensor(3.0)
    assert torch.equal(emulated, x * third.item())
    assert not torch.equal(emulated, x / torch.full_like(x, 3.0))


@pytest.mark.parametrize("name", QUANTIZED)
def test_reference_bits_do_not_depend_on_scalar_division(name: str) -> None:
    fmt = formats.get(name)
    inputs = [random_tensor(shape, seed=seed) for shape in SHAPES for seed in range(2)]
    for x in [*inputs, edge_tensor()]:
        want = fmt.quantize_dequantize(x)
        with cuda_scalar_division():
            got = fmt.quantize_dequantize(x)
        assert same_bits(got, want), f"{name} on shape {tuple(x.shape)}"


@pytest.mark.parametrize("name", QUANTIZED)
def test_reference_makes_its_tables_on_the_inputs_device(name: str) -> None:
    """On the meta device, a table made on the CPU (or a tensor moved there) fails as it would
    on CUDA; the only other failure allowed is meta's own: no value to read back."""
    fmt = formats.get(name)
    x = torch.randn(8, 256, device="meta")
    for step in (fmt.quantize_dequantize, lambda t: packing.pack(t, fmt)):
        try:
            step(x)
        except RuntimeError as error:
            if "item() cannot be called on meta tensors" not in str(error):
                raise
