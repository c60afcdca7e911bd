"""What keeps a large model's analysis near one forward-backward in memory: quantization
errors computed a row chunk at a time (exact for every format without a tensor-wide scale), a
byte-bounded memo of them, Fisher without weight gradients, and one pass over the data for
every scheme the run will ask for."""

from __future__ import annotations

import pytest
import torch

from mixprec.data import content_hash
from mixprec.kernels import formats
from mixprec.models import load_model
from mixprec.scheme import Scheme
from mixprec.sensitivity import base
from mixprec.sensitivity.base import WeightDeltas, squared_error
from mixprec.sensitivity.fisher import FisherEstimator, stream_squares
from mixprec.units import discover_units, quantizable_layers, select

QUANTIZED = [f.name for f in formats.all() if f.is_quantized]


@pytest.mark.parametrize("name", QUANTIZED)
def test_row_chunks_give_the_whole_tensors_error(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fmt = formats.get(name)
    gen = torch.Generator().manual_seed(0)
    weight = (torch.randn(37, 96, generator=gen) * torch.logspace(-2, 2, 37)[:, None]).bfloat16()
    whole = (fmt.quantize_dequantize(weight.float()) - weight.float()).square()
    monkeypatch.setattr(base, "ROW_CHUNK_ELEMENTS", 96 * 5)  # 8 chunks, the last one short
    torch.testing.assert_close(squared_error(weight, fmt), whole, rtol=0, atol=0)


def test_the_error_memo_is_bounded_in_bytes() -> None:
    bundle = load_model("digits-cnn")
    layers = list(quantizable_layers(bundle.model))
    deltas = WeightDeltas(capacity_bytes=1)  # keeps only the newest one
    first = deltas.squared(bundle, layers[0], Scheme.parse("w:int4"))
    deltas.squared(bundle, layers[1], Scheme.parse("w:int4"))
    again = deltas.squared(bundle, layers[0], Scheme.parse("w:int4"))
    assert again is not first and torch.equal(again, first)  # recomputed, the same


def test_fisher_forms_no_weight_gradient() -> None:
    bundle = load_model("digits-cnn")
    reached: list[str] = []
    handles = [
        layer.weight.register_hook(lambda g, n=name: reached.append(n))
        for name, layer in quantizable_layers(bundle.model).items()
    ]
    got: dict[str, torch.Tensor] = {}
    try:
        stream_squares(bundle, bundle.calibration[0], lambda n, _, s: got.__setitem__(n, s))
    finally:
        for handle in handles:
            handle.remove()
    assert reached == [] and set(got) == set(quantizable_layers(bundle.model))
    assert all(float(f.sum()) > 0 for f in got.values())


def test_expected_schemes_share_one_pass_and_score_as_if_asked_alone() -> None:
    bundle = load_model("digits-cnn")
    batches = bundle.calibration[:2]
    calibration = content_hash(batches)
    unit = select(discover_units(bundle.model), "layer")[1]
    schemes = [Scheme.parse(s) for s in ("w:int4", "w:mxfp4", "w:int8")]
    passes = 0
    loss = bundle.task.loss

    def counted(*args: object) -> torch.Tensor:
        nonlocal passes
        passes += 1
        return loss(*args)  # type: ignore[arg-type]

    shared = FisherEstimator()
    shared.expect(schemes)
    object.__setattr__(bundle.task, "loss", counted)
    try:
        together = [shared.per_sample(bundle, unit, s, batches, calibration) for s in schemes]
    finally:
        object.__delattr__(bundle.task, "loss")
    assert passes == len(batches)  # one pass over the data served all three schemes
    alone = [FisherEstimator().per_sample(bundle, unit, s, batches, calibration) for s in schemes]
    # one matrix product over all schemes sums in another order than one per scheme (float32)
    for shared_scores, own in zip(together, alone, strict=True):
        assert shared_scores == pytest.approx(own, rel=1e-5, abs=1e-30)
