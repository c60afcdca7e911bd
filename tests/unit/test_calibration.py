"""Static input scales (FP8 per tensor): each layer's input range is calibrated once on the
unquantized model, scored with, recorded in the plan search makes, and used wherever the plan is
applied; a plan without it is one line."""

from __future__ import annotations

import pytest
import torch

from mixprec.allocation import AllocationProblem, allocate
from mixprec.calibration import input_ranges
from mixprec.errors import MixprecError
from mixprec.plan import PrecisionPlan, apply_plan, static_inputs
from mixprec.scoring import score
from tests.unit.search.test_targets import scored_llama

STATIC = "w:fp8_e4m3_tensor,a:fp8_e4m3_tensor"


def test_ranges_are_the_largest_finite_input_each_layer_sees() -> None:
    layer = torch.nn.Linear(4, 2)
    model = torch.nn.Sequential(layer)
    batches = [torch.tensor([[1.0, -5.0, 2.0, 0.0]]), torch.tensor([[float("inf"), 3.0, 0, 0]])]
    ranges = input_ranges(model, batches, lambda m, b: m(b))
    assert ranges == {"0": 5.0}
    assert not layer._forward_pre_hooks  # the recorders are gone


def test_search_records_the_calibrated_ranges_its_plan_needs() -> None:
    model, data, _ = scored_llama(["w:ct_w4a16"])
    table = score(model, data, [STATIC, "w:ct_w4a16"], ["isolation"], ["layer"])
    problem = AllocationProblem.build(table, model, "isolation", data=data,
                                      target="compressed-tensors", exclude=["none"])  # fmt: skip
    plan = allocate(problem, "9bits")  # room for FP8 everywhere it is allowed
    static = static_inputs(plan)
    assert static and sorted(plan.input_ranges) == sorted(static)
    calibrated = input_ranges(model, data.batches, lambda m, b: m(b))
    assert all(plan.input_ranges[m] == calibrated[m] > 0 for m in static)
    again = PrecisionPlan.from_json(plan.to_json())
    assert again.input_ranges == plan.input_ranges
    ids = data.batches[0]
    with torch.no_grad():
        planned = apply_plan(model, again)(ids).logits
        halved = apply_plan(model, again, input_ranges={m: 0.5 * plan.input_ranges[m]
                                                        for m in static})(ids).logits  # fmt: skip
    assert not torch.equal(planned, halved)  # the recorded ranges are the ones used
    with pytest.raises(MixprecError, match=rf"module {static[0]}: {STATIC} quantizes its inputs "
                       "with a static scale, and no calibrated input range"):  # fmt: skip
        apply_plan(model, plan.assignment)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_a_plan_with_a_range_that_is_not_one_is_refused(value: float) -> None:
    data = PrecisionPlan("m", "0" * 64, {"fc": STATIC}, "8bits",
                         input_ranges={"fc": value}).to_json()  # fmt: skip
    with pytest.raises(MixprecError, match=r"plan\.json: .*input_ranges|input range of 'fc'"):
        PrecisionPlan.from_json(data, "plan.json")


def test_scores_with_static_inputs_are_cached_apart() -> None:
    """Cells scored when `a:ct_nvfp4` took each tensor's own range are never reused for its
    calibrated scale; dynamic schemes keep their keys."""
    import hashlib
    import json

    from mixprec.sensitivity.cache import CACHE_VERSION, cell_key
    from mixprec.units import Unit

    unit = Unit("fc", "layer", ("fc",), 16)

    def unmarked(scheme: str) -> str:
        parts = {"version": CACHE_VERSION, "model": "f", "unit": "fc", "modules": ["fc"],
                 "scheme": scheme, "estimator": "isolation", "params": {}, "calibration": "c",
                 "seed": 0}  # fmt: skip
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    for scheme, static in (("w:ct_nvfp4,a:ct_nvfp4", True), ("w:nvfp4,a:nvfp4", False)):
        key = cell_key("f", unit, scheme, "isolation", {}, "c", 0)
        assert (key != unmarked(scheme)) == static, scheme
