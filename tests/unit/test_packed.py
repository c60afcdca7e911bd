"""apply_plan with kernels and packed weights: same bits as the reference, packed in memory."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from transformers import GPT2LMHeadModel

from mixprec.kernels import formats
from mixprec.packed import PackedLayer
from mixprec.plan import apply_plan
from mixprec.units import quantizable_layers
from tests.helpers.cli import run


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10)
    ).eval()


@pytest.mark.parametrize("kernel", ["torch", "triton"])
def test_fake_quantized_weights_are_the_same_bits_with_either_kernel(kernel: str) -> None:
    model = conv_net()
    plan = {"0": "w:mxfp4,a:mxfp8_e4m3", "3": "w:int4_asym_g128"}
    reference = apply_plan(model, plan, kernel="torch")
    got = apply_plan(model, plan, kernel=kernel)
    for name in plan:
        assert torch.equal(got.get_submodule(name).weight, reference.get_submodule(name).weight)
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(got(x), reference(x))


@pytest.mark.parametrize("kernel", ["torch", "triton"])
def test_packed_layers_hold_only_codes_and_match_fake_quantization(kernel: str) -> None:
    model = conv_net()
    plan = {"0": "w:nvfp4", "3": "w:int4_g128,a:int8"}
    packed = apply_plan(model, plan, kernel=kernel, packed=True)
    layers = [packed.get_submodule(n) for n in plan]
    assert all(isinstance(layer, PackedLayer) for layer in layers)
    state = packed.state_dict()
    assert "3.codes" in state and "3.weight" not in state and "0.weight" not in state
    assert state["3.codes"].dtype == torch.uint8 and state["3.codes"].shape == (10, 144)
    assert layers[1].packed().nbytes == formats.get("int4_g128").storage_bytes((10, 288))
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(packed(x), apply_plan(model, plan)(x), atol=1e-5, rtol=1e-5)
    assert isinstance(model[0].weight, nn.Parameter)  # the original is untouched


def test_packed_transformers_conv1d_and_keep(tiny_gpt2: GPT2LMHeadModel) -> None:
    names = list(quantizable_layers(tiny_gpt2))
    plan = {n: "w:mxfp4" for n in names[:-1]} | {names[-1]: "keep"}
    packed = apply_plan(tiny_gpt2, plan, packed=True)
    assert isinstance(packed.get_submodule(names[0]), PackedLayer)
    assert not isinstance(packed.get_submodule(names[-1]), PackedLayer)
    ids = torch.randint(0, 64, (2, 8))
    want = apply_plan(tiny_gpt2, plan)(ids).logits
    torch.testing.assert_close(packed(ids).logits, want, atol=1e-4, rtol=1e-4)


def test_a_whole_layer_plan_returns_the_packed_layer() -> None:
    layer = nn.Linear(64, 16)
    packed = apply_plan(layer, {"": "w:mxfp4"}, packed=True)
    assert isinstance(packed, PackedLayer)
    assert "mxfp4" in repr(packed)


def test_cli_triton_kernel_gives_the_torch_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    results = {}
    for kernel in ("torch", "triton"):
        argv = ["evaluate", "-m", "digits-cnn", "-s", "w:nvfp4", "--kernel", kernel, "--json"]
        code, out, _ = run(argv, capsys)
        assert code == 0
        results[kernel] = json.loads(out)
    assert results["triton"]["metrics"] == results["torch"]["metrics"]
    assert results["triton"]["kernel"] == "triton (interpreter, no CUDA tensors)"
    assert results["torch"]["kernel"] == "torch (asked for)"


def test_cli_packed_evaluation_and_a_bad_kernel(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["evaluate", "-m", "digits-cnn", "-s", "w:int4_g128", "--packed", "--json"]
    code, out, _ = run(argv, capsys)
    result = json.loads(out)
    assert code == 0 and result["packed"] is True and result["metrics"]["accuracy"] > 0.5
    code, _, err = run(["evaluate", "-m", "digits-cnn", "-s", "keep", "--kernel", "gpu"], capsys)
    assert code == 2 and "unknown kernel 'gpu'; valid kernels: auto, torch, triton" in err
