"""Allocation: a scored model's problem (score matrix + cost model), built once, and the plans
strategies make of it for any budget.

    problem = AllocationProblem.build(table, model, "isolation", data=data)
    plans = [allocate(problem, b) for b in ("4bits", "4.5bits", "6bits")]
    frontier = pareto(problem, parse_budgets("3:8:0.5"), GreedyConfig())
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from mixprec.calibration import with_input_ranges
from mixprec.comparison import better, compare
from mixprec.data import content_hash
from mixprec.errors import MixprecError
from mixprec.metrics import evaluate
from mixprec.models import ModelBundle, load_model, source_from_file
from mixprec.placement import dtype_name, model_dtype
from mixprec.plan import PrecisionPlan
from mixprec.progress import cell_progress
from mixprec.scheme import KEEP, Scheme
from mixprec.scoring import Calibration, as_bundle
from mixprec.search.base import Limits, plan_from_selection, score_matrix, table_schemes
from mixprec.search.configs import ILPConfig, StrategyConfig, UniformConfig
from mixprec.search.cost import Budget, CostModel, InfeasibleBudget, build_cost_model
from mixprec.search.selection import Interactions, Selection, within
from mixprec.search.space import expand_exclude, search_space
from mixprec.search.targets import check_spaces, fusion, target_space
from mixprec.search.uniform import uniform_choice
from mixprec.sensitivity.table import ScoreTable
from mixprec.strategies import strategy_for
from mixprec.tensordata import data_from_json
from mixprec.units import quantizable_layers, tied_to_embedding, weight_matrix


@dataclass(frozen=True)
class AllocationProblem:
    """One estimator's scores and the model's costs, for every budget, strategy and slider
    move; `provenance` (where the table came from) goes into every plan."""

    table: ScoreTable
    bundle: ModelBundle
    costs: CostModel
    estimator: str
    provenance: Mapping[str, Any] = field(default_factory=dict)
    #: [units, schemes]: which scheme each unit may take (exclusions and search spaces)
    allowed: np.ndarray | None = field(default=None, compare=False, repr=False)
    #: (unit i, scheme a, unit j, scheme b) -> the score a pair adds (`with_interactions`)
    interactions: Interactions | None = field(default=None, compare=False)
    _matrices: dict[float, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def build(
        cls,
        table: ScoreTable,
        model: nn.Module | ModelBundle | str,
        estimator: str = "isolation",
        *,
        data: Calibration | None = None,
        schemes: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        spaces: Mapping[str, Sequence[str]] | None = None,
        target: str = "any",
        latency_table: Path | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> AllocationProblem:
        """The problem of `table` for `model` (the one it was scored on, with its `data` for
        an `nn.Module`); costs do not depend on the estimator and are computed once here.
        `schemes` narrows the candidates (default: every scheme scored, and `keep`); a unit
        matching an `exclude` regex is kept as stored (its bytes count, fixed; `"default"`
        adds the LM head; MoE routers always are); one matching a `spaces` regex (the first
        that matches) may take only that pattern's schemes; `target` (search.targets) keeps
        only what that runtime runs on each layer's shape.

        >>> problem = AllocationProblem.build(table, model, "fisher", data=data)
        >>> int4_or_int8 = AllocationProblem.build(table, model, schemes=["w:int4", "w:int8"])
        >>> AllocationProblem.build(table, model, exclude=[r"lm_head"],
        ...                         spaces={r"attn": ["w:int8", "w:mxfp8_e4m3"]})
        """
        table.check_usable(estimator)
        bundle = as_bundle(model, data)
        layers = quantizable_layers(bundle.model)
        rows = table.frame[
            (table.frame["estimator"] == estimator) & (table.frame["level"] == "layer")
        ]
        unknown = sorted(set(rows["unit"]) - set(layers))
        if unknown:
            raise MixprecError(
                f"the score table names layers {bundle.name!r} does not have ({unknown[0]!r} "
                f"and {len(unknown) - 1} more): it was scored on another model"
            )
        scored = table_schemes(table, estimator)
        chosen = scored if schemes is None else [str(Scheme.parse(s)) for s in schemes]
        missing = [s for s in chosen if s not in scored]
        if missing:
            raise MixprecError(
                f"scheme {missing[0]!r} has no {estimator} scores in the table; "
                f"scored: {', '.join(scored)}"
            )
        costs = build_cost_model(bundle, chosen, latency_table, fusion(target))
        exclude = expand_exclude(list(layers), exclude)
        shapes = {name: tuple(weight_matrix(layer).shape) for name, layer in layers.items()}
        tied = tied_to_embedding(bundle.model)
        check_spaces(costs, shapes, target, spaces or {}, tied)
        allowed = search_space(costs, exclude, spaces or {})
        runnable = target_space(costs, shapes, target, tied)
        if runnable is not None:
            allowed = runnable if allowed is None else allowed & runnable
        recorded = {**(provenance or {}), "dtype": dtype_name(model_dtype(bundle.model))}
        if target != "any":
            recorded["target"] = target
        if exclude:
            recorded["exclude"] = exclude
        if spaces:
            recorded["spaces"] = {k: [str(Scheme.parse(s)) for s in v] for k, v in spaces.items()}
        return cls(table, bundle, costs, estimator, recorded, allowed)

    def with_interactions(self, frame: pd.DataFrame) -> AllocationProblem:
        """The problem with the kept pairwise terms of `measure_interactions` (for
        `ILPConfig(interactions=True)`)."""
        from mixprec.sensitivity.pairs import interaction_terms

        return replace(self, interactions=interaction_terms(frame, self.costs), _matrices={})

    def scores(self, kappa: float = 0.0) -> np.ndarray:
        """[units, schemes] score matrix (see `score_matrix`), built once per kappa."""
        if kappa not in self._matrices:
            matrix = score_matrix(self.table, self.costs, self.estimator, kappa)
            if self.allowed is not None:
                matrix = np.where(self.allowed, matrix, np.inf)
            self._matrices[kappa] = matrix
        return self._matrices[kappa]


def allocate(
    problem: AllocationProblem,
    budget: Budget | str,
    strategy: StrategyConfig | None = None,
    *,
    limits: Limits = Limits(),
    workdir: Path | None = None,
    measure: bool = False,
    progress: bool = False,
) -> PrecisionPlan:
    """The plan `strategy` (ILP by default) makes within `budget`; `measure` adds the
    evaluation-split metrics. Raises InfeasibleBudget, which names the smallest budget.

    >>> plan = allocate(problem, "4.5bits", OptunaConfig(trials=20), workdir=Path("runs/x"))
    """
    config = ILPConfig() if strategy is None else strategy
    solver = strategy_for(
        config, estimator=problem.estimator, limits=limits, bundle=problem.bundle,
        workdir=workdir, progress=progress, interactions=problem.interactions,
    )  # fmt: skip
    plan = solver.solve_matrix(problem.scores(config.kappa), problem.costs, Budget.parse(budget))
    plan = replace(plan, provenance={**plan.provenance, **problem.provenance})
    plan = with_input_ranges(plan, problem.bundle)  # static input scales, calibrated once
    if measure:
        plan = never_worse_than_uniform(problem, Budget.parse(budget), plan,
                                        uniform=isinstance(config, UniformConfig))  # fmt: skip
    return plan


def measured_plan(problem: AllocationProblem, plan: PrecisionPlan) -> tuple[PrecisionPlan, Any]:
    """The plan with its evaluation-split metrics (and each one's 95% interval over samples)."""
    measured = evaluate(problem.bundle, plan.assignment, input_ranges=plan.input_ranges)
    bounds = {f"{name}_{end}": value for name, pair in measured.intervals().items()
              for end, value in zip(("low", "high"), pair, strict=True)}  # fmt: skip
    return plan.with_measured({**measured.metrics, **bounds}), measured


def uniform_plans(problem: AllocationProblem, budget: Budget) -> dict[str, PrecisionPlan]:
    """Scheme -> the uniform plan of it (every unit that may take it; a unit with one choice
    keeps that one) for every scheme whose uniform plan fits `budget`."""
    scores, costs = problem.scores(), problem.costs
    rows = np.arange(len(costs.units))
    made = {**UniformConfig().provenance(), "estimator": problem.estimator, **problem.provenance}
    plans = {}
    for k, scheme in enumerate(costs.schemes):
        choice = None if scheme == KEEP else uniform_choice(scores, k)
        if choice is not None and within(costs.bytes[rows, choice].sum(),
                                          budget.weight_bytes(costs)):  # fmt: skip
            total = float(scores[rows, choice].sum())
            selection = Selection(tuple(int(c) for c in choice), "feasible", total)
            plan = plan_from_selection(selection, scores, costs, budget, made)
            plans[scheme] = with_input_ranges(plan, problem.bundle)
    return plans


def never_worse_than_uniform(
    problem: AllocationProblem, budget: Budget, plan: PrecisionPlan, uniform: bool = False
) -> PrecisionPlan:
    """Measure the plan and every uniform plan within the budget on the task's primary metric;
    where a uniform one measures better it is returned instead, noted, and every comparison
    (paired over evaluation samples) is recorded in the plan's provenance."""
    plan, measured = measured_plan(problem, plan)
    metric = problem.bundle.task.primary_metric()
    if uniform or metric not in measured.per_sample:
        return plan
    best, best_measured, best_scheme, lines = plan, measured, "", []
    for scheme, other in uniform_plans(problem, budget).items():
        if other.assignment == plan.assignment:
            continue
        other, theirs = measured_plan(problem, other)
        verdict = compare(metric, measured.per_sample[metric], theirs.per_sample[metric])
        lines.append(f"vs uniform {scheme} ({theirs.metrics[metric]:.5g}): {verdict}")
        if better(metric, theirs.metrics[metric], best_measured.metrics[metric]):
            best, best_measured, best_scheme = other, theirs, scheme
    summary = {"uniform": "; ".join(lines) or "no uniform plan fits this budget"}
    if best is plan:
        return replace(plan, provenance={**plan.provenance, **summary})
    note = (f"uniform {best_scheme} measured better {metric} "
            f"({best_measured.metrics[metric]:.5g}) than the {plan.provenance.get('strategy')} "
            f"plan ({measured.metrics[metric]:.5g}) and is returned instead")  # fmt: skip
    return replace(best, provenance={**best.provenance, **summary, "note": note})


def pareto(
    problem: AllocationProblem,
    budgets: Iterable[Budget | str],
    strategy: StrategyConfig | None = None,
    *,
    limits: Limits = Limits(),
    workdir: Path | None = None,
    measure: bool = False,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per budget: the plan's predicted (and measured) numbers and the plan itself;
    an infeasible budget is a row with its reason, not a failure."""
    chosen = [Budget.parse(b) for b in budgets]
    rows: list[dict[str, Any]] = []
    with cell_progress("budgets", len(chosen), progress, unit="budgets") as advance:
        for budget in chosen:
            row: dict[str, Any] = {"budget": str(budget)}
            try:
                plan = allocate(problem, budget, strategy, limits=limits, workdir=workdir,
                                measure=measure)  # fmt: skip
            except InfeasibleBudget as err:
                rows.append({**row, "status": "infeasible", "reason": str(err)})
            else:
                rows.append({
                    **row, "status": "ok", "reason": "",
                    **{f"predicted_{k}": v for k, v in plan.predicted.items()},
                    **{f"measured_{k}": v for k, v in plan.measured.items()},
                    "plan": json.dumps(plan.to_json()),
                })  # fmt: skip
            advance()
    return pd.DataFrame(rows)


def problem_from_run(
    folder: Path,
    estimator: str = "isolation",
    latency_table: Path | None = None,
    trust_source: bool = False,
    exclude: Sequence[str] = (),
    spaces: Mapping[str, Sequence[str]] | None = None,
    target: str = "any",
) -> AllocationProblem:
    """The problem of a scored run folder. Its manifest's model source is untrusted (a
    `module:` source runs only with `trust_source`); the model must load to the weights the
    scores were made with."""
    from mixprec.sensitivity.cells import calibration_batches
    from mixprec.store import RunFolder, file_digest

    if not folder.is_dir():
        raise MixprecError(f"no run folder at {folder}: run `mixprec analyze --out {folder}` first")
    run = RunFolder(folder)
    table_file = run.scores_path
    table = ScoreTable.load(table_file)
    table.check_usable(estimator)  # before the model loads: a bad table fails fast
    analysis = run.manifest().analysis
    if analysis is None:
        raise MixprecError(
            f"{run.manifest_path} has no analysis record (spec, fingerprint): "
            f"run `mixprec analyze --out {folder}`"
        )
    spec, fingerprint = analysis.spec, analysis.fingerprint
    source = source_from_file(spec.model, str(run.manifest_path), trust_source)
    data = data_from_json(spec.data) if spec.data else None
    bundle = load_model(source, spec.seed, data, spec.dtype, spec.device)  # as it was scored
    if bundle.fingerprint != fingerprint:
        raise MixprecError(
            f"{folder} was scored on other weights of {source!r} than load now "
            f"({fingerprint[:12]} vs {bundle.fingerprint[:12]}); re-run analyze"
        )
    if spec.imatrix is not None:
        from mixprec.imatrix import load, with_importance

        matrix = load(Path(spec.imatrix))
        if matrix.digest != spec.imatrix_sha256:
            raise MixprecError(f"--imatrix {spec.imatrix} changed since {folder} was scored; "
                               "re-run analyze")  # fmt: skip
        bundle = with_importance(bundle, matrix)
    scored_on = calibration_batches(bundle, spec.calib_batches)
    if data is not None and content_hash(scored_on) != analysis.calibration_hash:
        raise MixprecError(f"{data.path} changed since {folder} was scored; re-run analyze")
    provenance: dict[str, Any] = {"table": str(folder), "table_sha256": file_digest(table_file)}
    if spec.imatrix is not None:  # export warns when the plan goes out without it
        provenance |= {"imatrix": spec.imatrix, "imatrix_sha256": spec.imatrix_sha256}
    return AllocationProblem.build(table, bundle, estimator, exclude=exclude, spaces=spaces,
                                   target=target, latency_table=latency_table,
                                   provenance=provenance)  # fmt: skip
