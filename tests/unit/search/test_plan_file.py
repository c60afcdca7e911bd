"""PrecisionPlan JSON: round trip, schema validation and the model checks on load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mixprec.errors import MixprecError
from mixprec.models import load_model
from mixprec.plan import PrecisionPlan
from mixprec.search.ilp import ILPStrategy
from tests.helpers.search import digits_problem


def saved_plan(tmp_path: Path) -> tuple[PrecisionPlan, Path]:
    _, table, costs = digits_problem()
    plan = ILPStrategy().solve(table, costs, "4.5bits")
    path = tmp_path / "plan.json"
    plan.save(path)
    return plan, path


def test_round_trip_and_no_temp_files_left(tmp_path: Path) -> None:
    plan, path = saved_plan(tmp_path)
    assert PrecisionPlan.load(path) == plan
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["provenance"]["strategy"] == "ilp"
    assert data["provenance"]["solver"] == "cbc"


def rewrite(path: Path, **changes: object) -> Path:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))
    return path


def test_unknown_version(tmp_path: Path) -> None:
    _, path = saved_plan(tmp_path)
    with pytest.raises(
        MixprecError, match="plan version 7 is unknown; this mixprec reads version 1"
    ):
        PrecisionPlan.load(rewrite(path, version=7))


def test_schema_violations_name_the_place(tmp_path: Path) -> None:
    _, path = saved_plan(tmp_path)
    with pytest.raises(MixprecError, match="not a valid plan at fingerprint"):
        PrecisionPlan.load(rewrite(path, fingerprint="abc"))
    _, path = saved_plan(tmp_path)
    with pytest.raises(MixprecError, match="not a valid plan at top level: 'budget' is a required"):
        data = json.loads(path.read_text())
        del data["budget"]
        PrecisionPlan.from_json(data)
    path.write_text("{not json")
    with pytest.raises(MixprecError, match="is not JSON"):
        PrecisionPlan.load(path)
    with pytest.raises(MixprecError, match="no plan at"):
        PrecisionPlan.load(tmp_path / "missing.json")


def test_unknown_scheme_module_and_model(tmp_path: Path) -> None:
    plan, path = saved_plan(tmp_path)
    first = next(iter(plan.assignment))
    with pytest.raises(MixprecError, match=f"module '{first}': bad scheme 'w:int9'"):
        PrecisionPlan.load(rewrite(path, assignment={first: "w:int9"}))
    bundle = load_model("digits-cnn")
    odd = PrecisionPlan.from_json({**plan.to_json(), "assignment": {"nope": "w:int8"}})
    with pytest.raises(MixprecError, match="module 'nope' is not a quantizable layer"):
        odd.check_model(bundle.model, bundle.fingerprint)
    with pytest.raises(MixprecError, match="plan was made for model 'digits-cnn' with fingerprint"):
        plan.check_model(bundle.model, "0" * 64)


def test_apply_plan_takes_a_plan_as_well_as_a_mapping() -> None:
    import torch

    from mixprec.plan import apply_plan

    bundle = load_model("digits-cnn")
    plan = PrecisionPlan("digits-cnn", bundle.fingerprint, {"head": "w:int2"}, "8bits")
    from_plan = apply_plan(bundle.model, plan)
    from_mapping = apply_plan(bundle.model, {"head": "w:int2"})
    assert torch.equal(from_plan.head.weight, from_mapping.head.weight)
    assert not torch.equal(from_plan.head.weight, bundle.model.head.weight)
