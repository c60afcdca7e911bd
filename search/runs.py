"""Search and Pareto sweeps over a run folder written by `mixprec analyze`.

The folder's manifest names the model; it is loaded once, checked against the fingerprint
the scores were made with, and turned into a cost model. Every budget is then a re-solve.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from mixprec.errors import MixprecError
from mixprec.files import atomic_path
from mixprec.metrics import evaluate
from mixprec.models import ModelBundle, load_model, source_from_file
from mixprec.plan import PrecisionPlan
from mixprec.search.base import make_strategy, table_schemes
from mixprec.search.cost import Budget, CostModel, build_cost_model
from mixprec.sensitivity.table import ScoreTable

MAX_BUDGETS = 1000  # one Pareto sweep; each is a solve (and a measurement with --evaluate)


@dataclass(frozen=True)
class Analysis:
    """A run folder's scores with the model they were made for and its cost model."""

    folder: Path
    table: ScoreTable
    bundle: ModelBundle
    costs: CostModel
    table_sha256: str = ""  # of scores.parquet, recorded in every plan's provenance


def open_analysis(
    folder: Path,
    estimator: str = "isolation",
    latency_table: Path | None = None,
    trust_source: bool = False,
) -> Analysis:
    """Scores, model and costs of a scored folder; its manifest's model source is untrusted
    (a `module:` source runs only with `trust_source`)."""
    from mixprec.store import file_digest, read_manifest

    if not folder.is_dir():
        raise MixprecError(f"no run folder at {folder}: run `mixprec analyze --out {folder}` first")
    table_file = folder / "scores.parquet"
    table = ScoreTable.load(table_file)
    table.check_usable(estimator)  # before the model loads: a bad table fails fast
    manifest = read_manifest(folder)
    spec, fingerprint = manifest.get("spec"), manifest.get("fingerprint")
    if not isinstance(spec, dict) or not isinstance(fingerprint, str):
        raise MixprecError(
            f"{folder / 'manifest.json'} has no analysis record (spec, fingerprint): "
            f"run `mixprec analyze --out {folder}`"
        )
    source = source_from_file(spec.get("model"), f"{folder / 'manifest.json'}", trust_source)
    seed = spec.get("seed", 0)
    if not isinstance(seed, int):
        raise MixprecError(f"{folder / 'manifest.json'}: spec.seed {seed!r} is not an integer")
    bundle = load_model(source, seed=seed)
    if bundle.fingerprint != fingerprint:
        raise MixprecError(
            f"{folder} was scored on other weights of {source!r} than load now "
            f"({fingerprint[:12]} vs {bundle.fingerprint[:12]}); re-run analyze"
        )
    costs = build_cost_model(bundle, table_schemes(table, estimator), latency_table)
    return Analysis(folder, table, bundle, costs, file_digest(table_file))


def search(
    analysis: Analysis, method: str, budget: Budget | str, measure: bool = False, **options: Any
) -> PrecisionPlan:
    """One plan; `measure` adds the evaluation-split metrics to it."""
    if method == "optuna":
        options.setdefault("storage", analysis.folder / "optuna.sqlite3")
    if method in ("optuna", "sac"):
        options.setdefault("bundle", analysis.bundle)
    strategy = make_strategy(method, **options)
    plan = strategy.solve(analysis.table, analysis.costs, budget)
    table = {"table": str(analysis.folder), "table_sha256": analysis.table_sha256}
    provenance = {**plan.provenance, **table}
    plan = replace(plan, provenance=provenance)
    if measure:
        plan = plan.with_measured(evaluate(analysis.bundle, plan.assignment).metrics)
    return plan


def parse_budgets(text: str) -> list[Budget]:
    """`3:8:0.5` (bits, both ends included) or a comma list such as `3bits,12MB,0.3x`."""
    if ":" in text:
        parts = text.split(":")
        try:
            start, stop, step = (float(p) for p in parts)
        except ValueError:
            raise MixprecError(f"bad budget range {text!r}: use START:STOP:STEP in bits") from None
        if not all(map(np.isfinite, (start, stop, step))):
            raise MixprecError(f"bad budget range {text!r}: START, STOP and STEP must be finite")
        if step <= 0 or stop < start or start <= 0:
            raise MixprecError(f"bad budget range {text!r}: need 0 < START <= STOP and STEP > 0")
        count = int(np.floor((stop - start) / step + 1e-9)) + 1
        if count > MAX_BUDGETS:
            raise MixprecError(
                f"budget range {text!r} has {count:,} budgets; at most {MAX_BUDGETS:,} "
                "(use a larger STEP)"
            )
        return [Budget(round(start + i * step, 10), "bits") for i in range(count)]
    budgets = [Budget.parse(item) for item in text.split(",") if item.strip()]
    if not budgets or len(budgets) > MAX_BUDGETS:
        raise MixprecError(f"--budgets {text!r} must list 1 to {MAX_BUDGETS:,} budgets")
    return budgets


def pareto(
    analysis: Analysis,
    budgets: Iterable[Budget],
    method: str = "ilp",
    measure: bool = False,
    progress: bool = True,
    **options: Any,
) -> pd.DataFrame:
    """One plan per budget; infeasible budgets are rows with their reason, not a failure."""
    rows = []
    for budget in tqdm(list(budgets), desc="budgets", disable=not progress):
        row: dict[str, Any] = {"budget": str(budget)}
        try:
            plan = search(analysis, method, budget, measure, **options)
        except MixprecError as err:
            rows.append({**row, "status": "infeasible", "reason": str(err)})
            continue
        rows.append(
            {
                **row,
                "status": "ok",
                "reason": "",
                **{f"predicted_{k}": v for k, v in plan.predicted.items()},
                **{f"measured_{k}": v for k, v in plan.measured.items()},
                "plan": json.dumps(plan.to_json()),
            }
        )
    return pd.DataFrame(rows)


def save_frame(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
