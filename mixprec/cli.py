"""The `mixprec` command line. User mistakes print one line `mixprec: ...` and exit 2."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mixprec.cli_data import (
    CalibSamplesOption,
    ChatTemplateOption,
    DataOption,
    DeviceOption,
    DtypeOption,
    EvalSamplesOption,
    GpusPerWorkerOption,
    SeqLenOption,
    TextFieldOption,
    WorkersOption,
    text_data,
)
from mixprec.cli_plans import ImatrixOption, TrustOption
from mixprec.cli_plans import register as register_plan_commands
from mixprec.cli_runtimes import register as register_runtime_commands
from mixprec.cli_service import register as register_service_commands
from mixprec.errors import MixprecError
from mixprec.logs import quiet_optional_backends
from mixprec.textdata import CALIB_SAMPLES, EVAL_SAMPLES, SEQ_LEN, TEXT_FIELD

app = typer.Typer(
    name="mixprec",
    help="Find the best mixed-precision plan for a neural network.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="minilm, digits-cnn, tiny-gpt, smollm2, hf:/path/to/dir or module:pkg.mod:fn",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _print_json(payload: object) -> None:
    """Strict JSON: a NaN or infinite number is written as null (JSON has neither)."""
    sys.stdout.write(json.dumps(finite_or_null(payload), indent=2, allow_nan=False) + "\n")


def finite_or_null(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(v) for v in value]
    return value


@app.command("formats")
def formats_command(as_json: JsonOption = False) -> None:
    """List every number format. Example: mixprec formats --json"""
    from mixprec.kernels import formats

    rows = [
        {
            "name": f.name,
            "family": f.family,
            "bits_per_element": f.bits_per_element,
            "element_bits": f.element_bits,
            "block_size": f.block_size or None,
            "scale_format": f.scale_format,
            "max_normal": f.max_normal if f.is_quantized else None,
            "description": f.description,
        }
        for f in formats.all()
    ]
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "family", "bits/element", "block", "scale format")
    for row in rows:
        block = str(row["block_size"]) if row["block_size"] else "channel"
        if row["family"] == "native":
            block = "-"
        table.add_row(
            str(row["name"]),
            str(row["family"]),
            f"{row['bits_per_element']:g}",
            block,
            str(row["scale_format"]),
        )
    console.print(table)


@app.command("units")
def units_command(
    model: ModelOption,
    as_json: JsonOption = False,
    no_fusion: Annotated[
        bool, typer.Option("--no-fusion", help="Do not tie q/k/v of one attention together.")
    ] = False,
) -> None:
    """List a model's quantizable units, and the layers search keeps as stored by default
    (the LM head; MoE routers always). Example: mixprec units --model minilm --json"""
    from mixprec.models import load_model
    from mixprec.search.space import kept_by_default
    from mixprec.units import DEFAULT_FUSION, LEVELS, discover_units

    bundle = load_model(model, device="cpu")
    units = discover_units(bundle.model, fusion=None if no_fusion else DEFAULT_FUSION)
    kept = {u.name: kept_by_default(u.name) for u in units if u.level == "layer"}
    if as_json:
        _print_json([{**u.to_json(), "kept": kept.get(u.name)} for u in units])
        return
    table = Table("name", "level", "role", "group", "params", "modules", "search")
    for u in units:
        searched = "-" if u.level != "layer" else f"kept: {kept[u.name]}" if kept[u.name] else "yes"
        table.add_row(u.name, u.level, u.role or "-", u.group or "-", f"{u.params:,}",
                      str(len(u.modules)), searched)  # fmt: skip
    console.print(table)
    counts = {lvl: sum(u.level == lvl for u in units) for lvl in LEVELS}
    console.print(", ".join(f"{n} {lvl} units" for lvl, n in counts.items()))


@app.command("evaluate")
def evaluate_command(
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Model source (with --scheme); a plan names its own."),
    ] = None,
    scheme: Annotated[
        str | None,
        typer.Option("--scheme", "-s", help="Uniform scheme: w:mxfp4, w:nvfp4,a:nvfp4, keep"),
    ] = None,
    plan: Annotated[
        Path | None, typer.Option("--plan", help="A PLAN.json from `mixprec search`.")
    ] = None,
    kernel: Annotated[
        str,
        typer.Option(
            help="auto (Triton on CUDA), torch (reference) or triton (CPU: interpreter, slow)."
        ),
    ] = "auto",
    packed: Annotated[
        bool, typer.Option("--packed", help="Hold weights packed and run the dequant-matmul.")
    ] = False,
    runtime: Annotated[
        str,
        typer.Option(
            help="torch (mixprec's kernels), llamacpp (the plan's GGUF in llama.cpp) or "
            "transformers (its compressed-tensors checkpoint)."
        ),
    ] = "torch",
    llamacpp_bin: Annotated[
        Path | None,
        typer.Option("--llamacpp-bin", help="Your llama.cpp build/bin (default: the cached one)."),
    ] = None,
    imatrix: ImatrixOption = None,
    as_json: JsonOption = False,
    seed: Annotated[int, typer.Option(help="Seed for trained built-ins and random inputs.")] = 0,
    trust_model_source: TrustOption = False,
    data: DataOption = None,
    text_field: TextFieldOption = TEXT_FIELD,
    seq_len: SeqLenOption = SEQ_LEN,
    calib_samples: CalibSamplesOption = CALIB_SAMPLES,
    eval_samples: EvalSamplesOption = EVAL_SAMPLES,
    chat_template: ChatTemplateOption = False,
    dtype: DtypeOption = "auto",
    device: DeviceOption = "auto",
) -> None:
    """Measure one uniform scheme, or a mixed plan, on the evaluation split.

    Examples: mixprec evaluate --model minilm --scheme w:mxfp4 --json;
    mixprec evaluate --plan plan.json --kernel triton --packed;
    mixprec evaluate --plan plan.json --runtime llamacpp (perplexity or cosine in llama.cpp);
    mixprec evaluate --plan plan.json --runtime transformers (the plan's vLLM checkpoint)
    """
    from mixprec.calibration import with_input_ranges
    from mixprec.imatrix import load as load_imatrix
    from mixprec.imatrix import scored_with_other, with_importance
    from mixprec.kernels.dispatch import KernelPreference
    from mixprec.metrics import evaluate
    from mixprec.models import load_model, source_from_file
    from mixprec.placement import Placement
    from mixprec.plan import PrecisionPlan, uniform_assignment
    from mixprec.runtimes import evaluate_in, runtime_for
    from mixprec.scheme import Scheme
    from mixprec.units import discover_units

    if (scheme is None) == (plan is None):
        raise MixprecError("give either --scheme (with --model) or --plan PLAN.json")
    KernelPreference.parse(kernel)  # fail on a bad kernel before loading anything
    Placement(dtype, device)
    where = runtime_for(runtime, llamacpp_bin, packed, imatrix is not None)  # nothing loaded
    matrix = None if imatrix is None else load_imatrix(imatrix)  # bad file: before any load
    text = text_data(data, text_field, seq_len, calib_samples, eval_samples, seed, chat_template)
    if plan is not None:
        loaded = PrecisionPlan.load(plan)  # fail on a bad plan before loading the model
        source = model or source_from_file(loaded.model, str(plan), trust_model_source)
        bundle = load_model(source, seed, text, loaded.dtype if dtype == "auto" else dtype, device)
        loaded.check_model(bundle.model, bundle.fingerprint)
        assignment: dict[str, Scheme | str] = dict(loaded.assignment)
        label = {"plan": str(plan)}
    else:
        assert scheme is not None
        parsed = Scheme.parse(scheme)  # fail on a bad scheme before loading anything
        if model is None:
            raise MixprecError("--scheme needs --model (minilm, digits-cnn, tiny-gpt, hf:DIR, ...)")
        source = model
        bundle = load_model(source, seed, text, dtype, device)
        assignment = dict(uniform_assignment(discover_units(bundle.model), parsed))
        label = {"scheme": str(parsed)}
    ranges = loaded.input_ranges if plan is not None and loaded.input_ranges else None
    if where.is_mixprec:
        bundle = bundle if matrix is None else with_importance(bundle, matrix)
        result = evaluate(bundle, assignment, kernel=kernel, packed=packed, input_ranges=ranges)
        for warning in scored_with_other(loaded, matrix) if plan is not None else []:
            sys.stderr.write(f"mixprec: warning: {warning}\n")
    else:
        plan_in = loaded if plan is not None else PrecisionPlan(
            bundle.name, bundle.fingerprint, {m: str(s) for m, s in assignment.items()}, "uniform"
        )  # fmt: skip
        plan_in = with_input_ranges(plan_in, bundle)  # static input scales: calibrated here
        result, warnings = evaluate_in(where, bundle, plan_in, source, text, matrix)
        for warning in warnings:
            sys.stderr.write(f"mixprec: warning: {warning}\n")
    unusable = sorted(k for k, v in result.metrics.items() if not math.isfinite(v))
    if unusable:
        sys.stderr.write(
            f"mixprec: warning: {', '.join(unusable)} not finite (NaN or inf): the model's "
            "outputs under this plan are not finite; JSON shows null\n"
        )
    if as_json:
        extra = {"not_finite": unusable} if unusable else {}
        _print_json({"model": bundle.name, **label, **result.to_json(), **extra})
        return
    table = Table("metric", "value", title=f"{bundle.name} under {next(iter(label.values()))}")
    for name, value in result.metrics.items():
        table.add_row(name, f"{value:.6g}")
    table.add_row("size (MB)", f"{result.size_mb:.3f}")
    table.add_row("bits per weight", f"{result.bits_per_weight:.3f}")
    table.add_row("kernel", result.kernel + (", packed weights" if result.packed else ""))
    console.print(table)


@app.command("analyze")
def analyze_command(
    model: ModelOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for scores.parquet.")],
    schemes: Annotated[
        str, typer.Option(help="'default' or a list: w:mxfp4,w:nvfp4,a:nvfp4 (a: joins its w:)")
    ] = "default",
    estimators: Annotated[
        str,
        typer.Option(
            help="'default' (hessian, fisher, isolation) or a list: fisher,isolation; "
            "adaptive (Fisher everywhere, isolation where it decides) needs --budgets"
        ),
    ] = "default",
    budgets: Annotated[
        str | None,
        typer.Option(help="The budgets adaptive decides for: 4.5bits,6bits (or 3:8:0.5)."),
    ] = None,
    workers: WorkersOption = None,
    address: Annotated[
        str | None, typer.Option(help="Join a running Ray cluster, e.g. 127.0.0.1:6379.")
    ] = None,
    gpus_per_worker: GpusPerWorkerOption = 0.0,
    calib_batches: Annotated[
        int | None, typer.Option("--calib-batches", help="Use the first K calibration batches.")
    ] = None,
    levels: Annotated[str, typer.Option(help="'default' (every level) or a list: layer,block")] = (
        "default"
    ),
    seed: Annotated[int, typer.Option(help="Seed for probes, bootstrap and built-ins.")] = 0,
    data: DataOption = None,
    text_field: TextFieldOption = TEXT_FIELD,
    seq_len: SeqLenOption = SEQ_LEN,
    calib_samples: CalibSamplesOption = CALIB_SAMPLES,
    eval_samples: EvalSamplesOption = EVAL_SAMPLES,
    chat_template: ChatTemplateOption = False,
    dtype: DtypeOption = "auto",
    device: DeviceOption = "auto",
    imatrix: ImatrixOption = None,
) -> None:
    """Score every unit under every scheme with each estimator (cached, resumable).

    Example: mixprec analyze --model digits-cnn --schemes w:mxfp4,w:int8 --out runs/digits;
    mixprec analyze --model minilm --estimators adaptive --budgets 4.5bits,6bits --out runs/m;
    mixprec analyze --model hf:DIR --data notes.jsonl --seq-len 256 --dtype bf16 --out runs/mine;
    mixprec analyze --model hf:DIR --imatrix imatrix.gguf --out runs/mine (llama.cpp's rounding)
    """
    from mixprec.scheme import parse_list, scheme_list
    from mixprec.search.cost import parse_budgets
    from mixprec.sensitivity.adaptive import with_budgets
    from mixprec.sensitivity.cells import AnalysisSpec
    from mixprec.sensitivity.configs import DEFAULT_ESTIMATORS
    from mixprec.sensitivity.runner import analyze
    from mixprec.units import LEVELS

    for option, text in (("--schemes", schemes), ("--estimators", estimators),
                         ("--levels", levels)):  # fmt: skip
        if not parse_list(text):
            raise MixprecError(f"{option} {text!r} lists nothing; give at least one")
    spec = AnalysisSpec(
        model,
        scheme_list(schemes),
        with_budgets(
            DEFAULT_ESTIMATORS if estimators == "default" else _split(estimators),
            budgets and [str(b) for b in parse_budgets(budgets)],
        ),
        LEVELS if levels == "default" else tuple(_split(levels)),
        calib_batches,
        seed,
        data=text_data(data, text_field, seq_len, calib_samples, eval_samples, seed, chat_template),
        dtype=dtype,
        device=device,
        imatrix=None if imatrix is None else str(imatrix),
    )
    try:
        table = analyze(
            spec, workers=workers, address=address, gpus_per_worker=gpus_per_worker, out=out
        )
    except KeyboardInterrupt:
        sys.stderr.write("mixprec: interrupted; finished cells are cached, re-run to resume\n")
        raise typer.Exit(130) from None
    frame = table.frame
    failed = int((frame["status"] != "ok").sum())
    console.print(f"{len(frame)} scores ({failed} failed) -> {out / 'scores.parquet'}")
    if failed:
        for error in frame.loc[frame["status"] != "ok", "error"].head(5):
            console.print(f"  failed: {error}")


@app.command("report")
def report_command(
    run: Annotated[Path, typer.Argument(help="A folder written by `mixprec analyze`.")],
    top: Annotated[int, typer.Option(help="Units shown per estimator and scheme.")] = 5,
) -> None:
    """Most sensitive units per scheme, component and block roll-ups, block interactions.

    Example: mixprec report runs/digits
    """

    from mixprec.sensitivity.table import ScoreTable
    from mixprec.store import read_manifest

    if top < 1:
        raise MixprecError(f"--top {top} must be at least 1")
    if not run.is_dir():
        raise MixprecError(f"no run folder at {run}: run `mixprec analyze --out {run}` first")
    table = ScoreTable.load(run / "scores.parquet")
    blocks = read_manifest(run).blocks
    console.print(_frame_table(table.top_units("layer", top), "Most sensitive layers"))
    for level, title in (("component", "Components"), ("block", "Blocks")):
        rolled = table.roll_up(level)
        if not rolled.empty:
            console.print(_frame_table(rolled.reset_index(), f"{title} (mean score)"))
    interactions = table.block_interactions(blocks)
    if not interactions.empty:
        console.print(_frame_table(interactions, "Blocks: measured vs sum of layers"))


def _frame_table(frame: object, title: str) -> Table:
    import pandas as pd

    assert isinstance(frame, pd.DataFrame)
    table = Table(*[str(c) for c in frame.columns], title=title)
    for row in frame.itertuples(index=False):
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    return table


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


register_plan_commands(app)
register_service_commands(app)
register_runtime_commands(app)


def interrupt_on_sigterm() -> None:
    """SIGTERM (`kill`, a stopped Ray job) ends a command the way Ctrl-C does: what finished is
    kept and the run is marked interrupted, resumable."""
    import signal
    import threading

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app; a MixprecError becomes one line on stderr and exit code 2."""
    quiet_optional_backends()
    interrupt_on_sigterm()
    try:
        app(args=argv, standalone_mode=True)
    except MixprecError as err:
        sys.stderr.write(f"mixprec: {' '.join(str(err).split())}\n")  # always one line
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
