"""compressed-tensors' schemes quantize exactly as compressed-tensors does: its own
`calculate_qparams` (from each group's min and max, as its min-max observer) then
`fake_quantize`; FP8_DYNAMIC's weights are mixprec's fp8_e4m3, value for value."""

from __future__ import annotations

import pytest
import torch
from compressed_tensors.quantization import QuantizationStatus
from compressed_tensors.quantization.lifecycle.forward import fake_quantize, forward_quantize
from compressed_tensors.quantization.quant_scheme import (
    FP8_BLOCK,
    FP8_DYNAMIC,
    MXFP4,
    MXFP4A16,
    MXFP8,
    MXFP8A16,
    NVFP4A16,
    W4A16,
    W4A16_ASYM,
    W8A16,
)
from compressed_tensors.quantization.utils import calculate_qparams, generate_gparam

from mixprec.export_compressed import CT_ACTIVATIONS
from mixprec.kernels import formats, packing
from mixprec.plan import ActivationQuantizer
from tests.unit.kernels.test_ggml_formats import weights

SCHEMES = {"ct_w8a16": W8A16, "ct_w4a16": W4A16, "ct_w4a16_asym": W4A16_ASYM,
           "ct_nvfp4": NVFP4A16, "fp8_e4m3": FP8_DYNAMIC, "ct_mxfp4": MXFP4A16,
           "ct_mxfp8_e4m3": MXFP8A16}  # fmt: skip


def compressed_tensors(x: torch.Tensor, name: str) -> torch.Tensor:
    """compressed-tensors' fake quantization of the 2-D float32 `x` under scheme `name`."""
    args = SCHEMES[name]["weights"]
    if args.group_size:
        rows = x.reshape(x.shape[0], -1, args.group_size)
        lo, hi = rows.amin(-1), rows.amax(-1)
    else:  # per output channel
        lo, hi = x.amin(1, keepdim=True), x.amax(1, keepdim=True)
    # NVFP4's global scale, from the whole tensor's range (its observer's)
    gparam = generate_gparam(x.min(), x.max()) if name == "ct_nvfp4" else None
    scale, zero = calculate_qparams(lo, hi, args, global_scale=gparam)
    return fake_quantize(x, scale, zero, args, global_scale=gparam)


@pytest.mark.parametrize("name", sorted(SCHEMES))
@pytest.mark.parametrize("kind", ["normal", "bf16", "grid"])
def test_values_are_compressed_tensors(name: str, kind: str) -> None:
    x = weights(kind, (48, 512), seed=2)
    x[4] = 0.0  # an all-zero row: compressed-tensors' eps scale
    x[5, :128] = x[5, :128].abs() + 0.5  # a group of one sign: the asymmetric range holds 0
    x[6], x[7] = x[6] * 1e-30, x[7] * 1e30  # MX: E8M0 exponents clamped at 0 and near 255
    expected = compressed_tensors(x, name)
    got = formats.get(name).quantize_dequantize(x)
    assert torch.equal(got + 0.0, expected + 0.0)  # -0.0 and 0.0 alike


def test_the_symmetric_grid_clips_the_groups_largest_value() -> None:
    """amax / 7.5: the largest magnitude is 7.5 steps, so +amax clips to 7 and -amax rounds
    (half to even) to -8, past itself."""
    x = torch.zeros(1, 128)
    x[0, 0], x[0, 1] = 7.0, -7.0
    got = formats.get("ct_w4a16").quantize_dequantize(x)
    step = torch.tensor(7.0) / 7.5
    assert got[0, 0] == 7 * step and got[0, 1] == -8 * step  # 6.53 and -7.47
    mixprec = formats.get("int4_g128").quantize_dequantize(x)  # amax / 7: both exact
    assert mixprec[0, 0] == 7.0 and mixprec[0, 1] == -7.0


@pytest.mark.parametrize("name", ["ct_w8a16", "ct_w4a16", "ct_w4a16_asym", "ct_nvfp4"])
def test_packed_codes_decode_to_the_same_values(name: str) -> None:
    fmt = formats.get(name)
    x = weights("normal", (16, 384), seed=4)
    packed = packing.pack(x, fmt)
    assert torch.equal(packing.unpack(packed) + 0.0, fmt.quantize_dequantize(x) + 0.0)
    groups = 16 * 384 // fmt.block_size  # FP32 scales per 128 (NVFP4: E4M3 per 16, one FP32)
    scales = groups * (4 + fmt.zero_point_bits / 8) if fmt.element_kind == "int" else groups + 4
    assert fmt.storage_bytes(x.shape) == 16 * 384 * fmt.element_bits // 8 + scales


def test_inf_saturates_and_nan_poisons_its_group() -> None:
    x = weights("normal", (2, 256), seed=1)
    x[0, 3], x[1, 200] = float("inf"), float("nan")
    got = formats.get("ct_w4a16").quantize_dequantize(x)
    assert torch.isfinite(got[0]).all() and got[0, 3] == got[0].max()
    assert torch.isnan(got[1, 128:]).all() and torch.isfinite(got[1, :128]).all()


def test_nvfp4_is_not_mixprecs_nvfp4() -> None:
    """The global scale divides (2688 / amax), and a block scale that rounds to zero is 0.125."""
    x = weights("normal", (16, 256), seed=6)
    x[3] *= 1e-6  # block scales below E4M3's smallest subnormal: 0 in E4M3, then 0.125
    ours = formats.get("ct_nvfp4").quantize_dequantize(x)
    assert torch.equal(ours + 0.0, compressed_tensors(x, "ct_nvfp4") + 0.0)
    assert not torch.equal(ours, formats.get("nvfp4").quantize_dequantize(x))
    assert formats.get("ct_nvfp4").storage_bytes((16, 256)) == 16 * 128 + 16 * 16 + 4


def test_mx_scales_round_the_group_max_up_from_one_and_three_quarters() -> None:
    """OCP floors log2(amax): group maxima of 1.7 and 1.8 both get scale 2^(0 - 2) and clip to
    6 x 0.25 = 1.5; compressed-tensors rounds 1.8 (not 1.7) up to 2: scale 0.5, 3.6 -> 4, 2.0."""
    x = torch.zeros(2, 32)
    x[0, 0], x[1, 0] = 1.7, 1.8
    ct = formats.get("ct_mxfp4").quantize_dequantize(x)
    ocp = formats.get("mxfp4").quantize_dequantize(x)
    assert (ct[0, 0].item(), ocp[0, 0].item()) == (1.5, 1.5)
    assert (ct[1, 0].item(), ocp[1, 0].item()) == (2.0, 1.5)


class _Frozen(torch.nn.Module):
    """What compressed-tensors' forward_quantize reads of a layer: its status."""

    quantization_status = QuantizationStatus.FROZEN


@pytest.mark.parametrize(
    ("name", "preset"), [("fp8_e4m3", FP8_DYNAMIC), ("ct_mxfp8_e4m3", MXFP8), ("ct_mxfp4", MXFP4)]
)
def test_activations_are_quantized_as_compressed_tensors_does(name: str, preset: dict) -> None:
    """A layer's input under `a:NAME` is compressed-tensors' dynamic quantization of it (per
    token; per 32 for MX), as the exported config group declares it."""
    from compressed_tensors.quantization import QuantizationArgs

    x = weights("normal", (14, 512), seed=6).reshape(2, 7, 512) * torch.logspace(-3, 2, 512)
    x[0, 3] = 0.0  # a token of zeros
    x[1, 2, :32] = 0.0  # an MX group of zeros
    declared = QuantizationArgs(**CT_ACTIVATIONS[name])
    assert declared == preset["input_activations"].model_copy(update={"observer": None})
    theirs = forward_quantize(_Frozen(), x.clone(), "input", declared)
    ours = ActivationQuantizer(formats.get(name), -1)(torch.nn.Identity(), (x.clone(),))[0]
    assert isinstance(ours, torch.Tensor)
    assert torch.equal(ours + 0.0, theirs + 0.0)


@pytest.mark.parametrize("shape", [(256, 384), (200, 300), (128, 128)])
@pytest.mark.parametrize("kind", ["normal", "bf16", "grid"])
def test_fp8_block_weights_are_compressed_tensors(shape: tuple[int, int], kind: str) -> None:
    """FP8_BLOCK: one scale per 128 x 128 tile (the edges' partial tiles too) from its min and
    max, as compressed-tensors' observer sees it; packed, one scale per tile."""
    args = FP8_BLOCK["weights"]
    x = weights(kind, shape, seed=2)
    x[:128, :128] *= 1e-3  # tiles of other magnitudes
    x[130:, 128:256] = 0.0  # an all-zero tile: compressed-tensors' eps scale
    padded = torch.nn.functional.pad(x, (0, -shape[1] % 128, 0, -shape[0] % 128))
    tiles = padded.reshape(padded.shape[0] // 128, 128, padded.shape[1] // 128, 128)
    scale, zero = calculate_qparams(tiles.amin(dim=(1, 3)), tiles.amax(dim=(1, 3)), args)
    expected = fake_quantize(x, scale, zero, args)
    fmt = formats.get("ct_fp8_e4m3_block")
    assert torch.equal(fmt.quantize_dequantize(x) + 0.0, expected + 0.0)
    packed = packing.pack(x, fmt)
    assert torch.equal(packed.scales, scale) and packed.nbytes == fmt.storage_bytes(shape)
    assert torch.equal(packing.unpack(packed), fmt.quantize_dequantize(x))


@pytest.mark.parametrize("kind", ["normal", "bf16", "grid"])
def test_fp8_per_tensor_weights_and_static_inputs_are_compressed_tensors(kind: str) -> None:
    """FP8 (W8A8 static): one scale for the whole weight from its min and max, and the inputs
    under the static scale of a calibrated range (compressed-tensors' `input_scale`, range /
    448) through its own forward_quantize; packed, one scale for the tensor."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.quant_scheme import FP8

    from mixprec.kernels.reference import static_scale

    fmt = formats.get("fp8_e4m3_tensor")
    x = weights(kind, (96, 320), seed=3)
    x[:8] *= 1e-4  # rows far below the tensor's largest: their own scale would differ
    scale, zero = calculate_qparams(x.amin().reshape(1), x.amax().reshape(1), FP8["weights"])
    assert torch.equal(fmt.quantize_dequantize(x) + 0.0,
                       fake_quantize(x, scale, zero, FP8["weights"]) + 0.0)  # fmt: skip
    packed = packing.pack(x, fmt)
    assert packed.nbytes == fmt.storage_bytes(x.shape) == 96 * 320 + 4
    assert torch.equal(packing.unpack(packed), fmt.quantize_dequantize(x))
    inputs = weights("normal", (12, 320), seed=7).reshape(2, 6, 320) * 3.0
    calibrated = float(inputs[0].abs().max()) * 0.8  # inputs beyond the range saturate
    declared = QuantizationArgs(**CT_ACTIVATIONS["fp8_e4m3_tensor"])
    assert declared == FP8["input_activations"].model_copy(update={"observer": None})
    layer = _Frozen()
    layer.input_scale = torch.nn.Parameter(static_scale(torch.tensor([calibrated]), fmt))
    theirs = forward_quantize(layer, inputs.clone(), "input", declared)
    hook = ActivationQuantizer(fmt, -1, amax=calibrated)
    ours = hook(torch.nn.Identity(), (inputs.clone(),))[0]
    assert isinstance(ours, torch.Tensor)
    assert torch.equal(ours + 0.0, theirs + 0.0)
    assert float(ours.abs().max()) == pytest.approx(calibrated, rel=1e-6)  # saturated at 448


def test_nvfp4_inputs_take_the_static_global_scale_of_their_calibrated_range() -> None:
    """NVFP4 (W4A4): the inputs' global scale is fixed from the calibrated range (compressed-
    tensors' `input_global_scale`, 2688 / range), their E4M3 scales per 16 are made on the fly
    ("local"), through compressed-tensors' own forward_quantize."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.quant_scheme import NVFP4

    from mixprec.kernels.reference import static_scale

    fmt = formats.get("ct_nvfp4")
    inputs = weights("normal", (12, 256), seed=8).reshape(2, 6, 256) * torch.logspace(-2, 1, 256)
    inputs[1, 2, :16] = 0.0  # a block of zeros
    calibrated = float(inputs.abs().max()) * 1.5  # calibrated on other, larger inputs
    declared = QuantizationArgs(**CT_ACTIVATIONS["ct_nvfp4"])
    assert declared == NVFP4["input_activations"].model_copy(update={"observer": None})
    layer = _Frozen()
    scale = static_scale(torch.tensor([calibrated]), fmt)
    assert torch.equal(scale, generate_gparam(torch.tensor([-calibrated]),
                                              torch.tensor([calibrated])))  # fmt: skip
    layer.input_global_scale = torch.nn.Parameter(scale)
    theirs = forward_quantize(layer, inputs.clone(), "input", declared)
    ours = ActivationQuantizer(fmt, -1, amax=calibrated)(torch.nn.Identity(), (inputs.clone(),))[0]
    assert isinstance(ours, torch.Tensor)
    assert torch.equal(ours + 0.0, theirs + 0.0)
    dynamic = ActivationQuantizer(fmt, -1)(torch.nn.Identity(), (inputs.clone(),))[0]
    assert not torch.equal(ours, dynamic)  # the calibrated range, not this tensor's, sets it
