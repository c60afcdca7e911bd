"""KernelPreference resolution and the dispatching ops: either backend, the same bits."""

from __future__ import annotations

import logging

import pytest
import torch

from mixprec.errors import MixprecError
from mixprec.kernels import dispatch, formats, packing
from mixprec.kernels.dispatch import KernelChoice, KernelPreference, choose
from tests.helpers.triton_cases import random_tensor, same_bits


def test_preferences_parse_and_bad_names_list_the_valid_ones() -> None:
    assert KernelPreference.parse("triton") is KernelPreference.TRITON
    assert KernelPreference("auto") == "auto"  # a str Enum
    with pytest.raises(MixprecError, match="unknown kernel 'cuda'; valid kernels: auto, torch"):
        KernelPreference.parse("cuda")


def test_auto_uses_torch_for_cpu_tensors_and_triton_for_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(dispatch, "triton_installed", lambda: True)
    assert choose("auto", "cpu") == KernelChoice("torch", "auto: no CUDA tensors")
    assert choose("auto", "cuda").backend == "triton"
    assert choose("torch", "cuda") == KernelChoice("torch", "asked for")
    assert choose("triton", "cpu") == KernelChoice("triton", "interpreter, no CUDA tensors")


def test_triton_without_the_package_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "triton_installed", lambda: False)
    with pytest.raises(MixprecError, match="needs the triton package"):
        choose("triton", "cpu")
    assert choose("auto", "cuda") == KernelChoice("torch", "auto: triton not installed")


def test_each_choice_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    dispatch._logged.clear()
    with caplog.at_level(logging.INFO, logger="mixprec.kernels.dispatch"):
        for _ in range(3):
            choose("torch", "cpu")
    assert [r.getMessage() for r in caplog.records] == ["quantization kernels: torch (asked for)"]


@pytest.mark.parametrize("name", ["nvfp4", "int4_asym_g128", "fp6_e2m3", "bf16"])
def test_every_op_gives_the_same_result_on_either_backend(name: str) -> None:
    fmt = formats.get(name)
    x = random_tensor((6, 64))
    torch_out = dispatch.quantize_dequantize(x, fmt, "torch")
    assert same_bits(dispatch.quantize_dequantize(x, fmt, "triton"), torch_out)
    if not fmt.is_quantized:
        return
    by_torch, by_triton = dispatch.pack(x, fmt, "torch"), dispatch.pack(x, fmt, "triton")
    assert torch.equal(by_torch.codes, by_triton.codes)
    assert same_bits(dispatch.unpack(by_triton, "triton"), packing.unpack(by_torch))
    inputs = torch.randn(3, 64, generator=torch.Generator().manual_seed(2))
    by_kernel = dispatch.packed_linear(inputs, by_torch, None, "triton")
    reference = dispatch.packed_linear(inputs, by_torch, None, "torch")
    # two float32 sums of 64 products in other orders: each within 64 eps * sum |x w| of exact
    dense = packing.unpack(by_torch).reshape(6, 64)
    bound = 2 * 64 * torch.finfo(torch.float32).eps * (inputs.abs() @ dense.abs().T)
    assert bool(((by_kernel - reference).abs() <= bound).all())
