"""`mixprec run`, `demo`, `runs`, `submit` and `jobs`: the pipeline, the run store, Ray jobs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mixprec.errors import MixprecError
from mixprec.markdown import cell

console = Console()
jobs_app = typer.Typer(
    help="Follow Ray cluster jobs. Example: mixprec jobs status raysubmit_XYZ",
    no_args_is_help=True,
)
AddressOption = Annotated[
    str, typer.Option(help="The Ray dashboard's job API, e.g. http://127.0.0.1:8265.")
]
DEFAULT_ADDRESS = "http://127.0.0.1:8265"
LOG_LINES = 30  # of a failed job's log, shown by `submit --wait`
# A quick tour (a few minutes on 2 cores); examples/minilm_full.toml is the whole study.
DEMO_SCHEMES = ["w:int8", "w:mxfp6_e2m3", "w:int4_g128", "w:nvfp4", "w:mxfp4"]


def _run(config: object, quiet: bool) -> None:
    from mixprec.config import RunConfig
    from mixprec.pipeline import run_pipeline

    assert isinstance(config, RunConfig)
    say = (lambda _: None) if quiet else (lambda line: console.print(line, soft_wrap=True))
    try:
        summary = run_pipeline(config, say=say, progress=not quiet)
    except KeyboardInterrupt:
        sys.stderr.write(
            f"mixprec: interrupted; finished steps and cells are kept in {config.output}, "
            "re-run to resume\n"
        )
        raise typer.Exit(130) from None
    if summary.plans:
        brief = ("method", "budget", "predicted score")  # in the plan's name, or in report.md
        head = [k for k in dict.fromkeys(k for row in summary.plans for k in row) if k not in brief]
        table = Table(*head, title=f"{config.model}: plans in {config.output}")
        for row in summary.plans:
            table.add_row(*[cell(row.get(k, "")) for k in head])
        console.print(table)
    console.print(
        f"{len(summary.written)} files written, {len(summary.skipped)} steps up to date, "
        f"{summary.seconds:.0f} s; report: {config.output / 'report.md'}",
        soft_wrap=True,
    )
    for path in summary.written:
        console.print(f"  {path}", highlight=False, soft_wrap=True)


def run_command(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="A run config (TOML).")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only the summary.")] = False,
    dtype: Annotated[
        str | None, typer.Option("--dtype", help="Overrides the config's dtype (auto, bf16, ...).")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="Overrides the config's device (cpu, cuda:N).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Overrides the config's Ray workers.")
    ] = None,
    gpus_per_worker: Annotated[
        float | None, typer.Option("--gpus-per-worker", help="Overrides the config's GPUs each.")
    ] = None,
) -> None:
    """Analyze, search every budget and method, evaluate, export and report; resumable.

    Example: mixprec run study.toml  (a re-run skips the steps that are up to date);
    mixprec run mine.toml --dtype bf16 --device cuda; mixprec run mine.toml --gpus-per-worker 1
    """
    from mixprec.config import load_config, parse_config
    from mixprec.placement import Placement

    placed = {k: v for k, v in (("dtype", dtype), ("device", device)) if v is not None}
    Placement(**placed)  # a bad name fails before the config is read
    ray = {"workers": workers, "gpus_per_worker": gpus_per_worker}
    given = {**placed, **{k: v for k, v in ray.items() if v is not None}}
    config = load_config(config_path)
    if given:
        options = "/".join(f"--{k.replace('_', '-')}" for k in given)
        config = parse_config({**config.model_dump(exclude_none=True), **given}, options)
    _run(config, quiet)


def demo_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")] = Path("runs/demo"),
    workers: Annotated[int, typer.Option(help="Ray workers for the analysis.")] = 2,
) -> None:
    """The whole path on the bundled MiniLM in minutes: score 5 schemes with 2 estimators, ILP
    and uniform plans at 3 budgets, measure, export (examples/minilm_full.toml: the full study).

    Example: mixprec demo --out runs/demo
    """
    from mixprec.config import RunConfig

    config = RunConfig(
        model="minilm",
        output=out,
        schemes=DEMO_SCHEMES,
        estimators=["fisher", "isolation"],
        levels=["layer"],
        calib_batches=2,
        budgets=["4.5bits", "5bits", "6bits"],
        methods=["ilp", "uniform"],
        exports=["json", "llamacpp"],  # gguf, compressed-tensors: for llama.cpp's / vLLM's types
        workers=workers,
    )
    _run(config, quiet=False)


def runs_command(
    root: Annotated[Path, typer.Option("--root", help="The run store.")] = Path("runs"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the runs in the store with model, status and date. Example: mixprec runs --root runs"""
    import json

    from mixprec.store import list_runs

    rows = list_runs(root)
    if as_json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return
    table = Table("name", "model", "status", "date", title=f"runs in {root}")
    for row in rows:
        table.add_row(row["name"], row["model"], row["status"], row["date"])
    console.print(table)


def submit_command(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="A run config (TOML).")],
    address: AddressOption = DEFAULT_ADDRESS,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it ends.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits at most.")] = 3600.0,
    python: Annotated[
        str | None, typer.Option(help="Python on the cluster (default: this one).")
    ] = None,
) -> None:
    """Run a config on a Ray cluster as a job; results land in the config's output folder.

    Example: mixprec submit study.toml --address http://127.0.0.1:8265 --wait
    """
    from mixprec import jobs
    from mixprec.config import load_config

    config = load_config(config_path)
    job_id = jobs.submit(config, address, python)
    output = jobs.shipped_config(config, Path.cwd()).output
    console.print(f"submitted {job_id} -> {output}", soft_wrap=True)
    if wait:
        final = None
        for info in jobs.wait(job_id, address, timeout):
            console.print(f"{job_id}: {info.status}")
            final = info
        if final is None or final.status != "SUCCEEDED":
            text = jobs.logs(job_id, address)
            tail = text.splitlines()[-LOG_LINES:]  # whole lines, never cut mid-word
            sys.stdout.write("".join(f"{line}\n" for line in tail))
            status = final.status if final else "?"
            raise MixprecError(f"job {job_id} ended {status}: {jobs.job_error(final, text)}")


@jobs_app.command("list")
def jobs_list(address: AddressOption = DEFAULT_ADDRESS) -> None:
    """Every job on the cluster, newest first. Example: mixprec jobs list"""
    from mixprec import jobs

    table = Table("job", "status", "run (or entrypoint)", title=address)
    for info in jobs.list_jobs(address):  # newest first
        table.add_row(info.job_id, info.status, info.run or info.entrypoint)
    console.print(table)


@jobs_app.command("status")
def jobs_status(job_id: str, address: AddressOption = DEFAULT_ADDRESS) -> None:
    """One job's status. Example: mixprec jobs status raysubmit_XYZ"""
    from mixprec import jobs

    info = jobs.status(job_id, address)
    console.print(f"{info.job_id}: {info.status} {info.message}".rstrip())


@jobs_app.command("logs")
def jobs_logs(job_id: str, address: AddressOption = DEFAULT_ADDRESS) -> None:
    """A job's output so far. Example: mixprec jobs logs raysubmit_XYZ"""
    from mixprec import jobs

    sys.stdout.write(jobs.logs(job_id, address))


@jobs_app.command("stop")
def jobs_stop(job_id: str, address: AddressOption = DEFAULT_ADDRESS) -> None:
    """Ask a running job to stop. Example: mixprec jobs stop raysubmit_XYZ"""
    from mixprec import jobs

    stopped = jobs.stop(job_id, address)
    console.print(f"{job_id}: {'stopping' if stopped else 'not running'}")


def dashboard_command(
    runs: Annotated[Path, typer.Option("--runs", help="The run store.")] = Path("runs"),
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless you say so.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="Port to serve on.")] = 8501,
    trust_model_source: Annotated[
        bool,
        typer.Option(
            "--trust-model-source",
            help="Honour module:PKG:FN model sources named in run files (imports and runs them).",
        ),
    ] = False,
) -> None:
    """Explore runs and their sensitivity in the browser (Streamlit).

    Example: mixprec dashboard --runs runs --port 8501  (stops its server when it stops)
    """
    import os

    from mixprec.dashboard import views

    check_bindable(host, port)
    app_file = Path(views.__file__).with_name("app.py")
    command = [
        sys.executable, "-m", "streamlit", "run", str(app_file), "--server.address", host,
        "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    env = {**os.environ, views.RUNS_ENV: str(runs.resolve()),
           views.TRUST_ENV: "1" if trust_model_source else "0"}  # fmt: skip
    console.print(f"dashboard on http://{host}:{port} for {runs}", soft_wrap=True)
    raise typer.Exit(serve_until_stopped(command, env))


def check_bindable(host: str, port: int) -> None:
    """A bad host or port is one line before Streamlit starts, not its traceback after."""
    import socket

    if not 1 <= port <= 65535:
        raise MixprecError(f"--port {port} is not a TCP port (1-65535)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise MixprecError(f"--host {host!r} is not an address of this machine ({err})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise MixprecError(f"cannot serve on {host}:{port}: {err.strerror}") from None


def serve_until_stopped(command: list[str], env: dict[str, str]) -> int:
    """Run the server as a child that ends with this process: on Ctrl-C, SIGTERM or SIGHUP
    it is terminated (then killed), and the kernel sends it SIGTERM if this process dies."""
    import signal
    import subprocess

    from mixprec.processes import terminate

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    server = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent)
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        code = server.wait()
    except KeyboardInterrupt:
        code = 130
    finally:
        terminate(server)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):  # not Linux: the handlers still stop it
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def register(app: typer.Typer) -> None:
    app.command("run")(run_command)
    app.command("demo")(demo_command)
    app.command("runs")(runs_command)
    app.command("submit")(submit_command)
    app.add_typer(jobs_app, name="jobs")
    app.command("dashboard")(dashboard_command)
