"""Adaptive scoring: the calibration, the decision of where isolation is worth its cost, the
whole loop through analyze, the CLI and the config, and its bad input."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mixprec.allocation import AllocationProblem
from mixprec.errors import MixprecError
from mixprec.models import load_model
from mixprec.search.cost import Budget, InfeasibleBudget
from mixprec.search.ilp import selected_total
from mixprec.sensitivity.adaptive import (
    MIN_PROBED_LAYERS,
    calibrate,
    isolation_cap,
    probe_cells,
    probe_layers,
    with_budgets,
)
from mixprec.sensitivity.base import Score
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.cells import AnalysisSpec
from mixprec.sensitivity.configs import AdaptiveConfig
from mixprec.sensitivity.refine import PLANS, contested, decided_plans, lagrange_price
from mixprec.sensitivity.runner import analyze
from mixprec.sensitivity.table import ScoreTable
from tests.helpers.cli import run

SCHEMES = ("w:int8", "w:int4_g128", "w:mxfp4", "w:int3_g128")
BUDGETS = ("5bits", "6bits")


def test_the_fit_recovers_offsets_and_slope_and_its_interval_covers_new_cells() -> None:
    gen = np.random.default_rng(0)
    layer_offset = {f"l{n}": gen.normal(0, 1) for n in range(20)}
    family_offset = {"w:int4_g128": -0.7, "w:mxfp4": 0.4}  # families int and mx
    cheap, exact, fresh = {}, {}, []
    for n in range(120):
        layer, scheme = f"l{n % 20}", ("w:int4_g128", "w:mxfp4")[n % 3 % 2]
        value = float(np.exp(gen.uniform(-12, -4)))
        log_truth = family_offset[scheme] + layer_offset[layer] + 1.2 * math.log(value)
        truth = math.exp(log_truth + gen.normal(0, 0.1))
        if n < 80:
            cheap[layer, scheme], exact[layer, scheme] = value, truth
        else:
            fresh.append((layer, scheme, value, truth))
    fit = calibrate(cheap, exact, confidence=0.95)
    assert fit.slope == pytest.approx(1.2, abs=0.03)
    int_, mx = (fit.predict(["l0"], s, 1e-6) for s in ("w:int4_g128", "w:mxfp4"))
    assert math.log(mx / int_) == pytest.approx(1.1, abs=0.1)
    assert 0.05 < fit.sigma < 0.15
    inside = []
    for layer, scheme, value, truth in fresh:
        score = fit.score([layer], scheme, Score(value, value, value, 4))
        inside.append(score.ci_low <= truth <= score.ci_high)
    assert sum(inside) >= 35  # 95% of 40, with room for chance
    unseen = fit.score(["l99"], "w:mxfp4", Score(1e-6, 1e-6, 1e-6, 4))  # its layer: wider
    seen = fit.score(["l0"], "w:mxfp4", Score(1e-6, 1e-6, 1e-6, 4))
    assert unseen.ci_high / unseen.mean > 2 * seen.ci_high / seen.mean


def test_too_few_measured_cells_to_calibrate_is_one_line() -> None:
    with pytest.raises(MixprecError, match="needs more cells where both fisher and isolation"):
        calibrate({("a", "w:int8"): 1.0}, {("a", "w:int8"): 2.0}, 0.95)


def test_probes_cover_every_layer_and_scheme_and_depend_only_on_the_seed() -> None:
    layers = [f"layer{i}" for i in range(40)]
    schemes = ["w:int8", "w:int4_g128", "w:mxfp4", "keep"]
    config = AdaptiveConfig(probes=0.05, seed=3, max_share=1.0)
    cells = probe_cells(layers, schemes, config)
    assert {layer for layer, _ in cells} == set(layers)
    per_scheme = {s: sum(1 for _, t in cells if t == s) for s in schemes}
    assert per_scheme["keep"] == 0 and all(14 <= per_scheme[s] <= 16 for s in schemes[:3])
    assert cells == probe_cells(layers, schemes, config)
    assert cells != probe_cells(layers, schemes, replace(config, seed=4))
    assert len(probe_layers(layers, "w:int8", 0.05, seed=3)) == 2


def test_where_a_probe_per_layer_passes_the_cap_a_few_layers_are_probed_under_every_scheme() -> (
    None
):
    layers = [f"layer{i}" for i in range(40)]
    schemes = ["w:int8", "w:int4_g128", "w:mxfp4", "keep"]
    config = AdaptiveConfig(seed=3)  # max_share 0.2 of 120 cells: 24, half of it for probes
    assert isolation_cap(layers, schemes, config) == 24
    cells = probe_cells(layers, schemes, config)
    probed = {layer for layer, _ in cells}
    assert len(probed) == 4 and cells == {(layer, s) for layer in probed for s in schemes[:3]}
    assert cells != probe_cells(layers, schemes, replace(config, seed=4))
    tiny = probe_cells(layers[:5], schemes, config)  # a cap of 3: still enough to calibrate
    assert len({layer for layer, _ in tiny}) == MIN_PROBED_LAYERS and len(tiny) == 6
    roomier = probe_cells(layers, schemes, replace(config, max_share=0.4))  # 48: one per layer fits
    assert {layer for layer, _ in roomier} == set(layers)


def test_the_lagrange_price_makes_every_units_priced_pick_fit() -> None:
    scores = np.array([[0.0, 1.0, 5.0], [0.0, 2.0, 3.0]])
    cost = np.array([[8.0, 4.0, 2.0], [8.0, 4.0, 2.0]])
    assert lagrange_price(scores, cost, 16) == 0.0
    price = lagrange_price(scores, cost, 8)
    picks = (scores + price * cost).argmin(axis=1)
    assert cost[[0, 1], picks].sum() <= 8
    assert price == pytest.approx(0.5, rel=1e-6)  # unit 1: 0 + 8p = 2 + 4p


def test_only_cells_whose_interval_reaches_the_decision_are_contested() -> None:
    point = np.array([[0.0, 1.0, 9.0], [0.0, 0.5, 0.52]])
    cost = np.array([[8.0, 4.0, 2.0], [8.0, 4.0, 3.99]])
    # within 12 bytes unit 0 keeps its 8 and unit 1 takes 4; the price is 1/8, where unit 1's
    # first two cells tie (the marginal unit) and its third lies 0.0188 above them
    regrets = contested(point, np.full_like(point, 0.01), cost, 12.0, choice=[0, 1])
    assert set(regrets) == {(1, 0), (1, 1), (1, 2)}
    assert regrets[1, 1] == pytest.approx(regrets[1, 0] + regrets[1, 2])
    narrow = contested(point, np.full_like(point, 0.001), cost, 12.0, choice=[0, 1])
    assert set(narrow) == {(1, 0), (1, 1)}  # 0.0188 is beyond 1.96 standard deviations
    assert contested(point, np.zeros_like(point), cost, 12.0, choice=[0, 1]) == {}
    flipped = contested(point, np.zeros_like(point), cost, 12.0, [0, 1], neighbours=[[1, 1]])
    assert set(flipped) == {(0, 0), (0, 1)}


@pytest.fixture(scope="module")
def tiny_gpt_adaptive(tmp_path_factory: pytest.TempPathFactory) -> tuple[ScoreTable, Path]:
    cache = tmp_path_factory.mktemp("cells")
    entry = {"name": "adaptive", "budgets": list(BUDGETS)}
    spec = AnalysisSpec("tiny-gpt", SCHEMES, (entry,), ("layer", "block"), calib_batches=4)
    return analyze(spec, cache=CellCache(cache), progress=False), cache


def test_analyze_scores_every_cell_and_isolation_only_some(
    tiny_gpt_adaptive: tuple[ScoreTable, Path],
) -> None:
    table, _ = tiny_gpt_adaptive
    frame = table.ok()
    layers = frame[frame["level"] == "layer"]
    adaptive = layers[layers["estimator"] == "adaptive"].set_index(["unit", "scheme"])
    fisher = layers[layers["estimator"] == "fisher"]
    isolation = layers[layers["estimator"] == "isolation"].set_index(["unit", "scheme"])
    assert len(adaptive) == len(fisher) == 17 * len(SCHEMES)
    cap = isolation_cap(list(adaptive.index.unique("unit")), SCHEMES, AdaptiveConfig())
    assert cap == 13  # a fifth of 68 cells: below one probe per layer, so 2 layers' worth
    assert MIN_PROBED_LAYERS * len(SCHEMES) <= len(isolation) <= cap
    measured = adaptive.loc[isolation.index]
    assert (measured["score"] == isolation["score"]).all()
    assert (adaptive["ci_low"] <= adaptive["score"]).all()
    assert (adaptive["score"] <= adaptive["ci_high"]).all()
    blocks = frame[(frame["level"] == "block") & (frame["estimator"] == "adaptive")]
    assert len(blocks) == 4 * len(SCHEMES) and (blocks["score"] > 0).all()
    table.check_usable("adaptive")


def test_adaptive_decides_for_the_filled_plans_allocate_makes(
    tiny_gpt_adaptive: tuple[ScoreTable, Path],
) -> None:
    table, _ = tiny_gpt_adaptive
    problem = AllocationProblem.build(table, load_model("tiny-gpt"), "adaptive", exclude=["none"])
    flat = np.where(np.isfinite(problem.scores()), 0.0, np.inf)  # the optimum: the cheapest plan
    budget = Budget.parse("6bits")
    plans = decided_plans(flat, problem.costs, budget)
    assert len(plans) == 3
    for plan, factor in zip(plans, (1.0, 0.98, 1.02), strict=True):
        limit = Budget(budget.value * factor, budget.unit).weight_bytes(problem.costs)
        used = selected_total(problem.costs.bytes, plan)
        assert (1 - PLANS.config.fill) * limit <= used <= limit


class CountingCache(CellCache):
    """Counts the cells written: those computed, not found."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.written = 0

    def put(self, key: str, payload: dict[str, Any]) -> None:
        self.written += 1
        super().put(key, payload)


def test_a_later_budget_computes_only_the_cells_it_adds(
    tiny_gpt_adaptive: tuple[ScoreTable, Path],
) -> None:
    table, cache = tiny_gpt_adaptive
    entry = {"name": "adaptive", "budgets": ["4.5bits"], "cell_limit": 5}
    spec = AnalysisSpec("tiny-gpt", SCHEMES, (entry,), ("layer", "block"), calib_batches=4)
    counting = CountingCache(cache)
    later = analyze(spec, cache=counting, progress=False).frame
    assert counting.written <= 5  # Fisher and the probes were all cached: only new isolation
    before = table.frame.set_index(["estimator", "unit", "scheme"]).loc["isolation"]
    after = later.set_index(["estimator", "unit", "scheme"]).loc["isolation"]
    assert len(set(after.index) - set(before.index)) == counting.written
    common = before.index.intersection(after.index)
    assert len(common) >= MIN_PROBED_LAYERS * len(SCHEMES)
    assert (after.loc[common, "score"] == before.loc[common, "score"]).all()


def test_analyze_through_the_cli_reports_the_cells_per_estimator(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path / "cache"))
    load_model("digits-cnn")  # trained into this cache first, so its progress is not ours
    argv = ["analyze", "-m", "digits-cnn", "--schemes", "w:int8,w:int4_g128,w:int2",
            "--estimators", "adaptive", "--budgets", "5bits,6bits", "--levels", "layer",
            "--out", str(tmp_path / "run")]  # fmt: skip
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "adaptive: 18 fisher cells, 6 isolation cells of 18" in out  # 2 layers' probes
    assert "isolation cap of 0.2 of the cells reached (max_share)" in out  # 3 cells: none left
    frame = ScoreTable.load(tmp_path / "run" / "scores.parquet").frame
    assert set(frame["estimator"]) == {"adaptive", "fisher", "isolation"}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "estimator 'adaptive' runs isolation where it changes the plans"),
        (["--budgets", "5bits", "--estimators", "fisher"], "have no adaptive; add it"),
        (["--budgets", "five"], "bad budget 'five'"),
        (["--budgets", "0.5bits"], "budget 0.5bits is infeasible: the smallest plan needs"),
    ],
)
def test_bad_adaptive_input_is_one_line(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["analyze", "-m", "digits-cnn", "--schemes", "w:int8", "--levels", "layer",
            "--estimators", "adaptive", *extra, "--out", str(tmp_path / "run")]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_bad_adaptive_settings_are_refused() -> None:
    with pytest.raises(MixprecError, match="cell_limit 0 must be a finite number >= 1"):
        AdaptiveConfig(budgets=("4bits",), cell_limit=0)
    with pytest.raises(MixprecError, match=r"probes 1.5 must be a share of layers in \[0, 1\]"):
        AdaptiveConfig(probes=1.5)
    with pytest.raises(MixprecError, match=r"max_share 0 must be a share of cells in \(0, 1\]"):
        AdaptiveConfig(max_share=0)
    with pytest.raises(MixprecError, match="bad budget"):
        AdaptiveConfig(budgets=("4 bytes",))


def test_only_infeasible_budgets_are_an_error_others_are_skipped() -> None:
    spec = AnalysisSpec("digits-cnn", ("w:int8", "w:int4_g128"), (
        {"name": "adaptive", "budgets": ["1bits", "6bits"]},), ("layer",))  # fmt: skip
    table = analyze(spec, progress=False)
    assert len(table.frame[table.frame["estimator"] == "adaptive"]) > 0
    alone = AnalysisSpec("digits-cnn", ("w:int8",), (
        {"name": "adaptive", "budgets": ["1bits"]},), ("layer",))  # fmt: skip
    with pytest.raises(InfeasibleBudget, match="budget 1bits is infeasible"):
        analyze(alone, progress=False)


def test_with_budgets_fills_in_what_adaptive_lacks() -> None:
    entries = with_budgets(["fisher", "adaptive"], ["4.5bits"], exclude=("none",))
    config = entries[1]
    assert entries[0] == "fisher" and isinstance(config, AdaptiveConfig)
    assert config.budgets == ("4.5bits",) and config.exclude == ("none",)
    own = with_budgets([AdaptiveConfig(budgets=("6bits",))], ["4.5bits"])[0]
    assert isinstance(own, AdaptiveConfig) and own.budgets == ("6bits",)


def test_a_table_without_adaptive_scores_is_one_line_for_search(tmp_path: Path) -> None:
    spec = AnalysisSpec("digits-cnn", ("w:int8",), ("isolation",), ("layer",))
    table = analyze(spec, progress=False)
    with pytest.raises(MixprecError, match=r"no layer scores for estimator 'adaptive' \(nor the "
                       "fisher scores it is built from"):  # fmt: skip
        table.check_usable("adaptive")


def test_a_model_without_a_loss_gets_isolation_for_every_cell() -> None:
    from mixprec.scoring import score
    from mixprec.testing import synthetic_bundle

    bundle = synthetic_bundle()
    assert not bundle.task.has_loss
    config = AdaptiveConfig(budgets=("6bits",))
    frame = score(bundle, schemes=["w:int8", "w:int4_g128"], estimators=[config],
                  levels=["layer"]).frame  # fmt: skip
    assert set(frame["estimator"]) == {"adaptive", "isolation"}
    adaptive, isolation = (frame[frame["estimator"] == e].set_index(["unit", "scheme"])
                           for e in ("adaptive", "isolation"))  # fmt: skip
    assert adaptive["score"].equals(isolation["score"])


def test_the_python_api_scores_a_model_object_adaptively() -> None:
    from mixprec.scoring import score

    bundle = load_model("digits-cnn")
    config = AdaptiveConfig(budgets=("6bits",), probes=0.5)
    frame = score(bundle, schemes=["w:int8", "w:int3_g128"], estimators=[config],
                  levels=["layer"]).frame  # fmt: skip
    adaptive = frame[frame["estimator"] == "adaptive"]
    assert len(adaptive) == len(frame[frame["estimator"] == "fisher"]) == 12
    assert (adaptive["status"] == "ok").all()


def test_round_cells_caps_what_each_round_measures(tmp_path: Path) -> None:
    """Contested cells measured a few at a time, re-ranked after each refit."""
    from mixprec.scoring import score

    cache = CellCache(tmp_path)  # shared: later calls only read what earlier ones scored

    def isolation_cells(**settings: Any) -> int:
        config = AdaptiveConfig(budgets=("5bits",), tolerance=0.0, **{"max_share": 1.0, **settings})
        frame = score("digits-cnn", schemes=["w:int8", "w:int4_g128", "w:int2"],
                      estimators=[config], levels=["layer"], cache=cache).frame  # fmt: skip
        return int((frame["estimator"] == "isolation").sum())

    probes = isolation_cells(cell_limit=1) - 1
    capped = isolation_cells(rounds=2, round_cells=1)
    every = isolation_cells()
    assert probes < capped <= probes + 2 < every  # one a round; at once, every contested one
    assert probes <= isolation_cells(max_share=0.5) <= 9 < every  # half of 18 cells at most
    with pytest.raises(MixprecError, match="round_cells 0 must be a finite number >= 1"):
        AdaptiveConfig(round_cells=0)
