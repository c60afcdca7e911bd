"""Budgets parse and convert exactly; costs match the footprint and hand-counted MACs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mixprec.errors import MixprecError
from mixprec.metrics import footprint
from mixprec.models import ModelBundle
from mixprec.search.cost import Budget, build_cost_model, trace_macs
from mixprec.tasks import OutputTask
from tests.helpers.search import SCHEMES, digits_problem


@pytest.mark.parametrize(
    ("text", "value", "unit"),
    [("4.5bits", 4.5, "bits"), ("12MB", 12, "MB"), ("0.3x", 0.3, "x"), (" 8 BITS", 8, "bits")],
)
def test_budget_parse(text: str, value: float, unit: str) -> None:
    budget = Budget.parse(text)
    assert (budget.value, budget.unit) == (value, unit)


@pytest.mark.parametrize(
    "text", ["4.5", "-1bits", "0bits", "12GB", "abc", "", "1e999bits", "nanbits"]
)
def test_bad_budget(text: str) -> None:
    with pytest.raises(MixprecError, match=f"bad budget {text!r}: use a positive finite number"):
        Budget.parse(text)


# Hand-counted bytes of a Linear(256, 16) and a Linear(16, 8) weight under each scheme: elements
# bit-packed, plus one scale per output channel (int8: FP16), per 128 (int4_g128: FP16; the
# 16-wide row is one short group) or per 32 (mxfp4: E8M0); `keep` is float32.
HAND_BYTES = {
    "w:int8": (4096 + 16 * 2, 128 + 8 * 2),
    "w:int4_g128": (2048 + 32 * 2, 64 + 8 * 2),
    "w:mxfp4": (2048 + 128 * 1, 64 + 8 * 1),
    "keep": (4096 * 4, 128 * 4),
}
BIAS_BYTES = (16 + 8) * 4


def test_cost_bytes_are_the_hand_counted_storage_of_each_uniform_plan() -> None:
    model = nn.Sequential(nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 8))
    batch = {"inputs": torch.randn(2, 256)}
    bundle = ModelBundle("m", model, OutputTask("m"), (batch,), (batch,))
    costs = build_cost_model(bundle, list(HAND_BYTES))
    assert costs.units == ("0", "2")
    for scheme, (first, second) in HAND_BYTES.items():
        choice = [costs.index(scheme)] * 2
        assert costs.bytes[[0, 1], choice].tolist() == [first, second]
        totals = costs.totals(choice)
        assert totals["weight_bytes"] == first + second
        assert totals["size_mb"] * 1e6 == pytest.approx(first + second + BIAS_BYTES)
        assert totals["bits_per_weight"] == pytest.approx((first + second) * 8 / (4096 + 128))
        size = footprint(model, costs.assignment(choice))
        assert (size.quantizable_bytes, size.total_bytes) == (
            first + second,
            first + second + BIAS_BYTES,
        )


def test_budget_units_convert_to_weight_bytes() -> None:
    _, _, costs = digits_problem()
    params = costs.total_params
    assert Budget.parse("4bits").weight_bytes(costs) == 4 * params / 8
    assert Budget.parse("0.25x").weight_bytes(costs) == 0.25 * 2 * params
    assert Budget.parse("1MB").weight_bytes(costs) == 1e6 - costs.fixed_bytes
    for text in ("4bits", "0.25x", "1MB"):
        budget = Budget.parse(text)
        back = budget.from_weight_bytes(budget.weight_bytes(costs), costs)
        assert back.value == pytest.approx(budget.value)


def test_macs_and_bops_of_a_linear_and_a_conv() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 7))
    batch = {"inputs": torch.randn(2, 3, 5, 5)}
    macs = trace_macs(model, batch, OutputTask("m").outputs)
    assert macs == {"0": 2 * 4 * 5 * 5 * (3 * 3 * 3), "2": 2 * 7 * 100}
    bundle = ModelBundle("m", model, OutputTask("m"), (batch,), (batch,))
    costs = build_cost_model(bundle, ["w:int4_g128", "w:nvfp4,a:nvfp4", "keep"])
    assert costs.bops[costs.units.index("2"), 2] == 2 * 7 * 100 * 32 * 32
    assert costs.bops[costs.units.index("2"), 1] == 2 * 7 * 100 * 4.5 * 4.5
    assert costs.bops[costs.units.index("2"), 0] == 2 * 7 * 100 * 4.125 * 32


def test_latency_table(tmp_path: Path) -> None:
    bundle, _, _ = digits_problem()
    table = tmp_path / "latency.csv"
    table.write_text("format,shape,seconds\nint8,*,2\nkeep,*,5\nmxfp4,*,1\n")
    costs = build_cost_model(bundle, ["w:int8", "w:mxfp4", "keep"], latency_csv=table)
    assert costs.latency is not None
    members = np.array([len(costs.members[u]) for u in costs.units])
    assert costs.latency[:, costs.index("keep")].tolist() == (5 * members).tolist()
    with pytest.raises(MixprecError, match="has no row for format 'nvfp4'"):
        build_cost_model(bundle, ["w:nvfp4"], latency_csv=table)
    table.write_text("format,shape,seconds\nint8,*,fast\n")
    with pytest.raises(MixprecError, match="seconds 'fast' is not a number"):
        build_cost_model(bundle, ["w:int8"], latency_csv=table)


def test_fusion_groups_are_one_decision_unit(tiny_llama: nn.Module) -> None:
    batch = {"input_ids": torch.randint(0, 64, (2, 8))}
    bundle = ModelBundle("llama", tiny_llama, OutputTask("llama", "input_ids"), (batch,), ())
    costs = build_cost_model(bundle, list(SCHEMES))
    fused = [u for u in costs.units if len(costs.members[u]) > 1]
    assert len(fused) == 2 and all(len(costs.members[u]) == 3 for u in fused)
    assert sum(len(m) for m in costs.members.values()) == 2 * 7 + 1
