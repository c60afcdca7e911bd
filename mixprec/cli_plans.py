"""`mixprec search`, `pareto` and `export`: from a scored run folder to plans and runtimes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
RunArgument = Annotated[Path, typer.Argument(help="A folder written by `mixprec analyze`.")]
EstimatorOption = Annotated[
    str, typer.Option(help="Whose scores to use: isolation, fisher or hessian.")
]
SolverOption = Annotated[str, typer.Option(help="ILP solver: cbc or highs.")]
KappaOption = Annotated[
    float, typer.Option(help="Robust plans: minimise mean + kappa x CI half-width.")
]
BopsOption = Annotated[float | None, typer.Option("--max-bops", help="Upper limit on BOPs.")]
LatencyOption = Annotated[
    float | None, typer.Option("--max-latency", help="Upper limit on summed latency (s).")
]
LatencyTableOption = Annotated[
    Path | None,
    typer.Option("--latency-table", help="CSV with columns format, shape (OUTxIN or *), seconds."),
]


def _strategy_options(
    method: str,
    estimator: str,
    solver: str,
    kappa: float,
    seed: int,
    max_bops: float | None,
    max_latency: float | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    from mixprec.search.base import Limits

    options: dict[str, Any] = {
        "estimator": estimator,
        "kappa": kappa,
        "seed": seed,
        "limits": Limits(max_bops, max_latency),
    }
    if method == "ilp":
        options["solver"] = solver
    if method == "optuna":
        options.update(
            {k: extra[k] for k in ("trials", "sampler", "objective", "progress") if k in extra}
        )
    if method == "sac":
        options.update(
            {
                k: extra[k]
                for k in ("timesteps", "policy", "progress", "run_dir", "objective")
                if k in extra
            }
        )
    return options


def search_command(
    run: RunArgument,
    budget: Annotated[str, typer.Option(help="4.5bits, 12MB (whole model) or 0.3x (of FP16).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write PLAN.json.")],
    method: Annotated[str, typer.Option(help="ilp, greedy, optuna, sac or uniform.")] = "ilp",
    estimator: EstimatorOption = "isolation",
    solver: SolverOption = "cbc",
    kappa: KappaOption = 0.0,
    max_bops: BopsOption = None,
    max_latency: LatencyOption = None,
    latency_table: LatencyTableOption = None,
    trials: Annotated[int, typer.Option(help="Optuna trials.")] = 50,
    sampler: Annotated[str, typer.Option(help="Optuna sampler: tpe or nsga2.")] = "tpe",
    objective: Annotated[
        str,
        typer.Option(help="Optuna/SAC objective: predicted (table) or measured (eval split)."),
    ] = "predicted",
    measure: Annotated[
        bool, typer.Option(help="Measure the plan on the evaluation split and store it.")
    ] = True,
    timesteps: Annotated[int, typer.Option(help="SAC training steps (0: use --policy as is).")] = (
        3000
    ),
    policy: Annotated[
        Path | None, typer.Option(help="SAC: start from a trained policy (sac_policy.pt).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for stochastic methods.")] = 0,
) -> None:
    """Find the plan with the least predicted loss within a budget.

    Example: mixprec search runs/minilm --budget 4.5bits --out plan.json  (--method sac
    trains an agent; its policy, checkpoints and CSV logs go to RUN/sac/, and an interrupted
    or longer training resumes from there)
    """
    from mixprec.search.cost import Budget
    from mixprec.search.runs import open_analysis, search

    parsed = Budget.parse(budget)
    extra = {"trials": trials, "sampler": sampler, "objective": objective, "progress": True,
             "timesteps": timesteps, "policy": policy, "run_dir": run / "sac"}  # fmt: skip
    options = _strategy_options(
        method, estimator, solver, kappa, seed, max_bops, max_latency, extra
    )
    analysis = open_analysis(run, estimator, latency_table)
    plan = search(analysis, method, parsed, measure, **options)
    plan.save(out)
    table = Table("", "value", title=f"{method} plan for {plan.model} within {plan.budget}")
    for key, value in {**plan.predicted, **plan.measured}.items():
        table.add_row(key, f"{value:.6g}")
    console.print(table)
    if "note" in plan.provenance:
        console.print(plan.provenance["note"])
    console.print(f"plan -> {out}")


def pareto_command(
    run: RunArgument,
    budgets: Annotated[
        str, typer.Option(help="START:STOP:STEP in bits (3:8:0.5) or a list: 3bits,12MB,0.3x")
    ] = "3:8:0.5",
    evaluate: Annotated[
        bool, typer.Option("--evaluate", help="Measure each plan on the evaluation split.")
    ] = False,
    method: Annotated[str, typer.Option(help="ilp or greedy.")] = "ilp",
    estimator: EstimatorOption = "isolation",
    solver: SolverOption = "cbc",
    kappa: KappaOption = 0.0,
) -> None:
    """Solve many budgets from the cached scores -> RUN/pareto.parquet and the frontier.

    Example: mixprec pareto runs/minilm --budgets 3:8:0.5 --evaluate
    """
    from mixprec.errors import MixprecError
    from mixprec.search.runs import open_analysis, pareto, parse_budgets, save_frame

    if method not in ("ilp", "greedy"):
        raise MixprecError(f"pareto method {method!r} is not valid; use ilp or greedy")
    chosen = parse_budgets(budgets)
    analysis = open_analysis(run, estimator)
    options = _strategy_options(method, estimator, solver, kappa, 0, None, None, {})
    frame = pareto(analysis, chosen, method, evaluate, **options)
    save_frame(frame, run / "pareto.parquet")
    shown = [c for c in frame.columns if c not in ("plan", "reason")]
    table = Table(*shown, title=f"Pareto frontier of {analysis.bundle.name} ({method})")
    for row in frame[shown].itertuples(index=False):
        table.add_row(*[f"{v:.5g}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    console.print(f"{len(frame)} budgets -> {run / 'pareto.parquet'}")


def export_command(
    plan_path: Annotated[Path, typer.Argument(metavar="PLAN", help="A PLAN.json.")],
    to: Annotated[str, typer.Option("--to", help="json, hf, llamacpp or gguf.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model source, if not the plan's own.")
    ] = None,
) -> None:
    """Write a plan for a runtime: JSON, an HF quantization config, llama.cpp overrides, GGUF.

    Example: mixprec export plan.json --to llamacpp --out overrides.txt
    """
    from mixprec.export import export_plan
    from mixprec.models import load_model
    from mixprec.plan import PrecisionPlan

    plan = PrecisionPlan.load(plan_path)

    def load() -> tuple[Any, str]:
        bundle = load_model(model or plan.model)
        return bundle.model, bundle.fingerprint

    exported = export_plan(plan, to, out, load)
    for warning in exported.warnings:
        sys.stderr.write(f"mixprec: warning: {warning}\n")
    console.print(f"{to} -> {exported.path}")


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)
    app.command("pareto")(pareto_command)
    app.command("export")(export_command)
