"""`mixprec search`, `pareto` and `export`: from a scored run folder to plans and runtimes."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mixprec.errors import MixprecError, one_of
from mixprec.search.configs import OBJECTIVES, SAMPLERS, SOLVERS, builtin_strategies, spoken_list
from mixprec.search.targets import TARGETS

METHODS = spoken_list([c.name for c in builtin_strategies()])
FAST_METHODS = [c.name for c in builtin_strategies() if c.FAST]

console = Console()
RunArgument = Annotated[Path, typer.Argument(help="A folder written by `mixprec analyze`.")]
EstimatorOption = Annotated[
    str, typer.Option(help="Whose scores to use: any estimator the run scored.")
]
SolverOption = Annotated[str, typer.Option(help=f"ILP solver: {spoken_list(SOLVERS)}.")]
KappaOption = Annotated[
    float, typer.Option(help="Robust plans: minimise mean + kappa x CI half-width.")
]
BopsOption = Annotated[float | None, typer.Option("--max-bops", help="Upper limit on BOPs.")]
LatencyOption = Annotated[
    float | None, typer.Option("--max-latency", help="Upper limit on summed latency (s).")
]
TrustOption = Annotated[
    bool,
    typer.Option(
        "--trust-model-source",
        help="Honour a module:PKG:FN model source named inside the file (imports and runs it).",
    ),
]
ImatrixOption = Annotated[
    Path | None,
    typer.Option(
        help="llama.cpp's importance matrix (llama-imatrix's output): the llama.cpp types are "
        "quantized as llama-quantize --imatrix quantizes them.",
    ),
]
ExcludeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--exclude",
        help="Keep matching layers as stored (regex; repeatable). 'default' keeps the LM head, "
        "'none' nothing; MoE routers are always kept. Default: default.",
    ),
]
SpaceOption = Annotated[
    list[str] | None,
    typer.Option(
        "--space",
        help="'REGEX=SCHEME,SCHEME': matching layers may take only these (repeatable; the first "
        "match decides), e.g. 'self_attn=w:int8,keep'.",
    ),
]
TargetOption = Annotated[
    str,
    typer.Option(
        "--target",
        help="The runtime the plan is for: any (every format), llamacpp (its own types, on "
        "rows of whole blocks), compressed-tensors (vLLM: its weight-only schemes) or modelopt "
        "(vLLM: ModelOpt's W4A16_NVFP4).",
    ),
]
LatencyTableOption = Annotated[
    Path | None,
    typer.Option("--latency-table", help="CSV with columns format, shape (OUTxIN or *), seconds."),
]


def check_number(option: str, value: float | None, allow_zero: bool = False) -> None:
    """A finite number above 0 (or at least 0); None means the option was not given."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise MixprecError(f"{option} {value} must be a finite number {bound}")


def _strategy(
    method: str, options: dict[str, Any], max_bops: float | None, max_latency: float | None
) -> tuple[Any, Any]:
    """The strategy config of `method` from the command's options, and its limits; the flags
    are checked by their own names first."""
    from mixprec.search.base import Limits
    from mixprec.strategies import strategy_config

    check_number("--kappa", options.get("kappa"), allow_zero=True)
    check_number("--max-bops", max_bops)
    check_number("--max-latency", max_latency)
    for option, key, least in (("--trials", "trials", 1), ("--timesteps", "timesteps", 0)):
        if key in options and options[key] < least:
            raise MixprecError(f"{option} {options[key]} must be at least {least}")
    return strategy_config(method, options), Limits(max_bops, max_latency)


def search_command(
    run: RunArgument,
    budget: Annotated[str, typer.Option(help="4.5bits, 12MB (whole model) or 0.3x (of FP16).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write PLAN.json.")],
    method: Annotated[str, typer.Option(help=f"{METHODS}, or a registered one.")] = "ilp",
    estimator: EstimatorOption = "isolation",
    solver: SolverOption = "cbc",
    kappa: KappaOption = 0.0,
    max_bops: BopsOption = None,
    max_latency: LatencyOption = None,
    latency_table: LatencyTableOption = None,
    trials: Annotated[int, typer.Option(help="Optuna trials.")] = 50,
    sampler: Annotated[str, typer.Option(help=f"Optuna sampler: {spoken_list(SAMPLERS)}.")] = "tpe",
    objective: Annotated[
        str,
        typer.Option(help=f"Optuna/SAC objective: {spoken_list(OBJECTIVES)} (eval split)."),
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
    trust_model_source: TrustOption = False,
    exclude: ExcludeOption = None,
    space: SpaceOption = None,
    target: TargetOption = "any",
) -> None:
    """Find the plan with the least predicted loss within a budget.

    Example: mixprec search runs/minilm --budget 4.5bits --out plan.json  (--method sac
    trains an agent; its policy, checkpoints and CSV logs go to RUN/sac/, and an interrupted
    or longer training resumes from there)
    """
    from mixprec.allocation import allocate, problem_from_run
    from mixprec.guard import check_output_file
    from mixprec.search.cost import Budget
    from mixprec.search.space import DEFAULT, parse_spaces
    from mixprec.store import RunFolder

    one_of("--target", target, TARGETS)
    check_output_file(out, [RunFolder(run).scores_path, RunFolder(run).manifest_path])
    parsed = Budget.parse(budget)
    options = {"kappa": kappa, "seed": seed, "solver": solver, "trials": trials,
               "sampler": sampler, "objective": objective, "timesteps": timesteps,
               "policy": policy}  # fmt: skip
    config, limits = _strategy(method, options, max_bops, max_latency)
    spaces = parse_spaces(space or [])
    problem = problem_from_run(run, estimator, latency_table, trust_model_source,
                               exclude or [DEFAULT], spaces, target)  # fmt: skip
    plan = allocate(problem, parsed, config, limits=limits, workdir=run, measure=measure,
                    progress=True)  # fmt: skip
    plan.save(out)
    table = Table("", "value", title=f"{method} plan for {plan.model} within {plan.budget}")
    for key, value in {**plan.predicted, **plan.measured}.items():
        table.add_row(key, f"{value:.6g}")
    console.print(table)
    for key in ("note", "uniform"):  # a uniform plan returned instead; every comparison
        if key in plan.provenance:
            console.print(plan.provenance[key])
    console.print(f"plan -> {out}")


def pareto_command(
    run: RunArgument,
    budgets: Annotated[
        str, typer.Option(help="START:STOP:STEP in bits (3:8:0.5) or a list: 3bits,12MB,0.3x")
    ] = "3:8:0.5",
    evaluate: Annotated[
        bool, typer.Option("--evaluate", help="Measure each plan on the evaluation split.")
    ] = False,
    method: Annotated[str, typer.Option(help=f"{spoken_list(FAST_METHODS)}.")] = "ilp",
    estimator: EstimatorOption = "isolation",
    solver: SolverOption = "cbc",
    kappa: KappaOption = 0.0,
    trust_model_source: TrustOption = False,
    exclude: ExcludeOption = None,
    space: SpaceOption = None,
    target: TargetOption = "any",
) -> None:
    """Solve many budgets from the cached scores -> RUN/pareto.parquet and the frontier.

    Example: mixprec pareto runs/minilm --budgets 3:8:0.5 --evaluate
    """
    from mixprec.allocation import pareto, problem_from_run
    from mixprec.files import atomic_write_parquet
    from mixprec.search.cost import parse_budgets
    from mixprec.search.space import DEFAULT, parse_spaces

    one_of("--target", target, TARGETS)
    if method not in FAST_METHODS:
        raise MixprecError(
            f"pareto method {method!r} is not valid; use {spoken_list(FAST_METHODS)} (the "
            "strategies fast enough to sweep many budgets)"
        )
    chosen = parse_budgets(budgets)
    config, _ = _strategy(method, {"kappa": kappa, "solver": solver}, None, None)
    spaces = parse_spaces(space or [])
    problem = problem_from_run(run, estimator, trust_source=trust_model_source,
                               exclude=exclude or [DEFAULT], spaces=spaces,
                               target=target)  # fmt: skip
    frame = pareto(problem, chosen, config, measure=evaluate, progress=True)
    atomic_write_parquet(run / "pareto.parquet", frame)
    shown = [c for c in frame.columns if c not in ("plan", "reason")]
    table = Table(*shown, title=f"Pareto frontier of {problem.bundle.name} ({method})")
    for row in frame[shown].itertuples(index=False):
        table.add_row(*[f"{v:.5g}" if isinstance(v, float) else str(v) for v in row])
    console.print(table)
    console.print(f"{len(frame)} budgets -> {run / 'pareto.parquet'}")


def export_command(
    plan_path: Annotated[Path, typer.Argument(metavar="PLAN", help="A PLAN.json.")],
    to: Annotated[str, typer.Option("--to", help="Export target, e.g. hf or gguf.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="File to write.")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model source, if not the plan's own.")
    ] = None,
    trust_model_source: TrustOption = False,
    base: Annotated[
        Path | None,
        typer.Option(
            help="--to gguf: the GGUF of llama.cpp's converter to build on "
            "(default: converted from the plan's model)."
        ),
    ] = None,
    imatrix: ImatrixOption = None,
) -> None:
    """Write a plan for a runtime: JSON, a compressed-tensors or ModelOpt checkpoint, llama.cpp
    overrides, GGUF.

    Examples: mixprec export plan.json --to llamacpp --out overrides.txt;
    mixprec export plan.json --to gguf --base model-f16.gguf --out model-mixprec.gguf
    """
    from mixprec.export import CHECKPOINTS, TARGETS, export_plan, model_files
    from mixprec.export_compressed import check_export_folder
    from mixprec.guard import check_output_file
    from mixprec.models import load_model, source_from_file
    from mixprec.plan import PrecisionPlan

    one_of("export target", to, TARGETS)
    if to in CHECKPOINTS:
        check_export_folder(out)
    else:
        check_output_file(out, [plan_path])
    plan = PrecisionPlan.load(plan_path)
    source = model or source_from_file(plan.model, str(plan_path), trust_model_source)

    def load() -> tuple[Any, str]:
        bundle = load_model(source, dtype=plan.dtype, device="cpu")  # weights as planned
        return bundle.model, bundle.fingerprint

    base_file, tokenizer = model_files(to, source, base)
    exported = export_plan(plan, to, out, load, base_file, tokenizer, imatrix)
    for warning in exported.warnings:
        sys.stderr.write(f"mixprec: warning: {warning}\n")
    console.print(f"{to} -> {exported.path}")
    if exported.command:
        console.print(f"apply it with: {exported.command}", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)
    app.command("pareto")(pareto_command)
    app.command("export")(export_command)
