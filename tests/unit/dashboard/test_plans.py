"""The dashboard's plan views: the front, the plan map, a sweep read back, saving a plan."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mixprec.dashboard import budget, plans
from mixprec.plan import PrecisionPlan


def document(method: str, bits: float, assignment: dict[str, str]) -> dict[str, object]:
    plan = PrecisionPlan("m", "0" * 64, assignment, f"{bits}bits", {"bits_per_weight": bits},
                         provenance={"strategy": method})  # fmt: skip
    return plan.to_json()


def test_the_front_keeps_only_plans_nothing_smaller_beats() -> None:
    frame = pd.DataFrame({"plan": list("abcde"), "bits/weight": [4.0, 4.5, 5.0, 5.0, 6.0],
                          "accuracy": [0.90, 0.89, 0.93, 0.95, 0.94]})  # fmt: skip
    assert list(plans.frontier(frame, "accuracy")["plan"]) == ["a", "d"]
    frame["perplexity"] = [9.0, 8.0, 8.5, 7.0, 7.5]  # lower is better
    assert list(plans.frontier(frame, "perplexity")["plan"]) == ["a", "b", "d"]


def test_the_plan_map_orders_plans_by_method_and_size_and_layers_by_the_model() -> None:
    named = [
        ("ilp-6", document("ilp", 6.0, {"l.2": "w:int8", "l.10": "w:int8", "head": "keep"})),
        ("ilp-4", document("ilp", 4.0, {"l.2": "w:int4", "l.10": "w:int8"})),
        ("greedy-5", document("greedy", 5.0, {"l.2": "w:int8", "l.10": "w:int4"})),
    ]
    table = plans.plan_map(named, ["l.10", "l.2", "head"])
    assert list(table.columns) == ["greedy-5 (5.00 bits)", "ilp-4 (4.00 bits)", "ilp-6 (6.00 bits)"]
    assert list(table.index) == ["l.10", "l.2", "head"]
    assert list(table.loc["head"]) == ["keep", "keep", "keep"]  # left out: kept
    assert list(plans.changed_only(table).index) == ["l.10", "l.2"]
    assert list(plans.plan_map(named[1:]).index) == ["l.2", "l.10"]  # the first plan's order


def test_a_pareto_sweep_is_read_as_plans(tmp_path: Path) -> None:
    (tmp_path / "plans").mkdir()
    (tmp_path / "plans" / "ilp-4bits.json").write_text(
        json.dumps(document("ilp", 4.0, {"a": "w:int4"}))
    )
    (tmp_path / "plans" / "broken.json").write_text("{not json")
    solved = json.dumps(document("ilp", 5.0, {"a": "w:int8"}))
    sweep = pd.DataFrame([{"budget": "5bits", "status": "ok", "plan": solved},
                          {"budget": "1bits", "status": "infeasible", "plan": None}])  # fmt: skip
    sweep.to_parquet(tmp_path / "pareto.parquet")
    named = plans.plan_documents(tmp_path)
    assert [name for name, _ in named] == ["ilp-4bits", "sweep 5bits"]


def test_saving_never_replaces_a_file_and_the_same_plan_is_saved_once(tmp_path: Path) -> None:
    plan = PrecisionPlan.from_json(document("ilp", 4.5, {"a": "w:int4"}))
    first = budget.save_plan(tmp_path, plan, {"metrics": {"accuracy": 0.9}})
    assert first.name == "saved-ilp-4.5bits.json"
    assert json.loads((tmp_path / "eval" / first.name).read_text())["metrics"]["accuracy"] == 0.9
    assert budget.save_plan(tmp_path, plan) == first  # the same plan: the same file
    other = PrecisionPlan.from_json(document("ilp", 4.5, {"a": "w:int8"}))
    second = budget.save_plan(tmp_path, other)
    assert second.name == "saved-ilp-4.5bits-2.json"
    assert PrecisionPlan.load(first).assignment == {"a": "w:int4"}  # untouched
    assert not (tmp_path / "eval" / second.name).exists()  # not measured: no measurement


def test_shared_points_name_every_plan_on_a_point() -> None:
    frame = pd.DataFrame({"plan": ["ilp-5", "uniform-5", "greedy-6"],
                          "method": ["ilp", "uniform", "greedy"],
                          "predicted score": [1.0, 1.0, 2.0],
                          "accuracy": [0.9, 0.9, 0.8]})  # fmt: skip
    points, distinct = plans.shared_points(frame, "predicted score", "accuracy")
    assert distinct == 2
    assert list(points["plans here"]) == ["ilp-5, uniform-5", "ilp-5, uniform-5", "greedy-6"]
