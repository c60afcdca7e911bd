"""Shared plumbing for the studies in experiments/: config, metrics, plots, the results header.

Every study is `python experiments/NAME.py [--config experiments/configs/NAME.toml]` and writes
experiments/results/NAME.md plus NAME_*.png beside it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from mixprec import AnalysisSpec, analyze
from mixprec.allocation import AllocationProblem
from mixprec.files import atomic_write_text
from mixprec.metrics import evaluate
from mixprec.models import ModelBundle, load_model
from mixprec.plan import PrecisionPlan
from mixprec.search.configs import ILPConfig
from mixprec.search.cost import Budget
from mixprec.search.ilp import best_full, least_left, total_score
from mixprec.sensitivity.cache import CellCache

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CONFIGS = HERE / "configs"
# scored cells are shared between studies (same model, scheme, estimator, batches -> same cell)
CACHE = ROOT / "runs" / "experiments-cache"
# the metric a plan is judged by, and whether larger is better
PRIMARY: dict[str, tuple[str, bool]] = {
    "minilm": ("cosine", True),
    "tiny-gpt": ("perplexity", False),
    "digits-cnn": ("accuracy", True),
    "smollm2": ("perplexity", False),
}


def isolation_problem(
    model: str, schemes: Sequence[str], cache: Path, workers: int = 2, calib_batches: int = 2
) -> AllocationProblem:
    """Isolation scores at layer level (cells cached in `cache`) with the model's cost model."""
    spec = AnalysisSpec(model, tuple(schemes), ("isolation",), ("layer",), calib_batches)
    table = analyze(spec, workers=workers, cache=CellCache(cache), progress=False)
    return AllocationProblem.build(table, load_model(model), "isolation")


def primary_metric(bundle: ModelBundle) -> Callable[[Mapping[str, str]], float]:
    """The model's primary metric of an assignment on the evaluation split; plans that several
    methods or limits share are measured once."""
    name = PRIMARY[bundle.name][0]
    measured: dict[frozenset[tuple[str, str]], float] = {}

    def measure(assignment: Mapping[str, str]) -> float:
        key = frozenset((module, str(scheme)) for module, scheme in assignment.items())
        if key not in measured:
            measured[key] = evaluate(bundle, dict(assignment)).metrics[name]
        return measured[key]

    return measure


def is_better(a: float, b: float, higher: bool) -> bool:
    return a > b if higher else a < b


def row_text(row: dict[str, Any], metric: str) -> str:
    """A results row as a verdict names it: file, bits per weight and the metric."""
    return f"{row['file']} ({row['bits/weight']:.2f} bits, {metric} {row[metric]:.4g})"


def fits_verdicts(metric: str, higher: bool, plans: Sequence[dict[str, Any]],
                  uniform: Sequence[dict[str, Any]], label: str) -> list[str]:  # fmt: skip
    """Each plan row against every uniform row that fits its bits (as many or fewer): met when
    none of those is better; `label` names the model in each line."""
    lines = []
    for plan in plans:
        fitting = [u for u in uniform if u["bits/weight"] <= plan["bits/weight"] + 1e-9]
        losing = [
            row_text(u, metric) for u in fitting if is_better(u[metric], plan[metric], higher)
        ]
        if losing:
            lines.append(f"- {label}, {row_text(plan, metric)}: **not met**: {', '.join(losing)} "
                         "is better in as few bits or fewer.")  # fmt: skip
            continue
        fits = ", ".join(u["file"] for u in fitting) or "none is that small"
        beaten = [u["file"] for u in uniform if u not in fitting and
                  is_better(plan[metric], u[metric], higher)]  # fmt: skip
        lines.append(f"- {label}, {row_text(plan, metric)}: at least as good as every uniform "
                     f"type that fits its bits ({fits})" + (f"; better than the larger "
                     f"{', '.join(beaten)}" if beaten else "") + ".")  # fmt: skip
    return lines


OPTIMUM = ILPConfig(fill=1.0)  # the additive score's optimum, wherever it leaves the budget
BUDGET_GOAL = 100 * ILPConfig.fill  # % of the budget a plan may leave unused where a fuller
# plan is feasible: what the ILP fills to by default
LEFT = "budget left %"
FULLEST = "fullest left %"  # the least any plan of the same units and formats can leave
FULLER = "full plan's score +%"  # how much worse the best plan within BUDGET_GOAL predicts


def budget_columns(problem: AllocationProblem, budget: Budget | str,
                   plan: PrecisionPlan) -> dict[str, float]:  # fmt: skip
    """How much of its budget a plan leaves unused, beside the least any plan could (%); where
    it leaves more than BUDGET_GOAL though some plan does not, how much worse the best such
    plan predicts (% of this plan's score): why the ILP did not take it (ILPConfig.fill_cost)."""
    scores, limit = problem.scores(), Budget.parse(budget).weight_bytes(problem.costs)
    key = (problem.costs.bytes.tobytes(), np.isfinite(scores).tobytes(), limit)
    if key not in _FULLEST:
        _FULLEST[key] = 100 * least_left(scores, problem.costs.bytes, limit)
    left, fullest = 100 * plan.predicted["budget_left"], _FULLEST[key]
    worse = float("nan")
    if left > BUDGET_GOAL >= fullest:
        full = best_full(scores, [(problem.costs.bytes, limit)], BUDGET_GOAL / 100)
        own = plan.predicted["score"]
        if full.choice:
            worse = 100 * (total_score(scores, full.choice) - own) / abs(own)
    return {LEFT: left, FULLEST: fullest, FULLER: worse}


_FULLEST: dict[tuple[bytes, bytes, float], float] = {}  # one solve per units, formats, budget


def budget_verdicts(frame: Any, by: str = "method") -> list[str]:
    """Per `by` value: the most of its budget any of its plans leaves unused; where the fullest
    possible plan is known, the goal applies only to budgets some plan fills within BUDGET_GOAL
    (the ILP's should be within it there; the others say how close they get)."""
    lines = []
    for name, part in frame[frame[LEFT].notna()].groupby(by, sort=False):
        most = float(part[LEFT].max())
        said = f"- Budget, {name}: at most {most:.3g}% of the budget left unused over "
        said += f"{len(part)} plans"
        if FULLEST not in part or part[FULLEST].isna().any():
            met = "within" if most <= BUDGET_GOAL else "NOT within"
            lines.append(f"{said} ({met} {BUDGET_GOAL:g}%).")
            continue
        reachable = part[part[FULLEST] <= BUDGET_GOAL]
        met = int((reachable[LEFT] <= BUDGET_GOAL).sum())
        beyond = len(part) - len(reachable)
        costly = reachable[FULLER].dropna() if FULLER in reachable else reachable[[]]
        lines.append(
            f"{said}; within {BUDGET_GOAL:g}% at {met} of the {len(reachable)} plans whose "
            f"budget some plan fills that closely" + (
                f" (at {beyond} no plan can: the fullest leaves up to "
                f"{float(part[FULLEST].max()):.3g}%)" if beyond else "") + (
                f"; at the other {len(costly)} the best plan that full predicts "
                f"{float(costly.min()):.3g}% to {float(costly.max()):.3g}% worse (the ILP fills "
                f"only at most {100 * ILPConfig.fill_cost:g}% worse)" if len(costly) else "")
            + "."
        )  # fmt: skip
    return lines


def model_sections(results: Any, models: Sequence[str], where: str) -> list[tuple[str, str]]:
    """One results section per model: its rows (without the model column) as a table."""
    from mixprec.markdown import frame_markdown

    return [(f"{model}: {where}",
             frame_markdown(results[results["model"] == model].drop(columns="model")
                            .dropna(axis=1, how="all"), digits=5))
            for model in models]  # fmt: skip


def check_models(path: Path, config: Mapping[str, Any], known: Sequence[str],
                 keys: Sequence[str]) -> None:  # fmt: skip
    """Every configured model is one the study knows, with an entry under each of `keys`."""
    for model in config["models"]:
        if model not in known or any(model not in config[k] for k in keys):
            fail(f"{path}: model {model!r} needs an entry in {', '.join(keys)} and is one of "
                 f"{', '.join(known)}")  # fmt: skip


def fail(message: str) -> NoReturn:
    """A user mistake: one line on stderr, exit code 2."""
    print(f"{Path(sys.argv[0]).name}: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(name: str, description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", type=Path, default=CONFIGS / f"{name}.toml")
    parser.add_argument("--out", type=Path, default=RESULTS / f"{name}.md")
    parser.add_argument("--cache", type=Path, default=CACHE, help="scored-cell cache folder")
    args = parser.parse_args()
    args.name = name
    from mixprec.logs import quiet_optional_backends

    quiet_optional_backends()
    return args


def load_config(path: Path, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The study's TOML over its defaults; unknown keys and wrong types are one-line errors."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        fail(f"config {path} does not exist")
    except tomllib.TOMLDecodeError as err:
        fail(f"{path} is not valid TOML: {err}")
    unknown = sorted(set(data) - set(defaults))
    if unknown:
        fail(f"{path}: unknown key {unknown[0]!r}; valid keys: {', '.join(defaults)}")
    for key, value in data.items():
        expected = type(defaults[key])
        if expected is float and isinstance(value, int):
            data[key] = float(value)
        elif not isinstance(value, expected):
            fail(f"{path}: key {key!r} must be a {expected.__name__}, got {value!r}")
    return {**defaults, **data}


def device_name() -> str:
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    return f"CPU {platform.machine()}, {os.cpu_count()} cores"


def command(args: argparse.Namespace) -> str:
    """The exact command that made a results file (paths relative to the repository)."""
    parts = [f"python experiments/{args.name}.py"]
    if args.config.resolve() != (CONFIGS / f"{args.name}.toml").resolve():
        parts.append(f"--config {_relative(args.config)}")
    if args.out.resolve() != (RESULTS / f"{args.name}.md").resolve():
        parts.append(f"--out {_relative(args.out)}")
    return " ".join(parts)


def header(title: str, args: argparse.Namespace, seconds: float, what: str) -> str:
    return (
        f"# {title}\n\n"
        f"Made by `{command(args)}` (config `{_relative(args.config)}`) in {seconds:.0f} s on "
        f"{device_name()}, torch {torch.__version__}, {torch.get_num_threads()} torch "
        f"thread(s). {what}\n\n"
    )


def publish(path: Path, text: str) -> int:
    """An experiment's last step: write its results file atomically, echo it, exit code 0."""
    atomic_write_text(path, text)
    print(text)
    return 0


def publish_study(
    args: argparse.Namespace,
    title: str,
    seconds: float,
    what: str,
    verdicts: Sequence[str],
    sections: Sequence[tuple[str, str]],
    figures: str,
) -> int:
    """Write the results file: header, verdicts, one section per table, then the plots."""
    text = (
        header(title, args, seconds, what)
        + "## What matches and what does not\n\n"
        + "\n".join(verdicts)
        + "\n\n"
        + "".join(f"## {heading}\n\n{body}\n\n" for heading, body in sections)
        + "## Plots\n\n"
        + figures
    )
    return publish(args.out, text)


def save_figure(figure: Any, out: Path, suffix: str, caption: str) -> str:
    """Write the figure as OUT-STEM_SUFFIX.png (atomically); return its Markdown image line."""
    import matplotlib.pyplot as plt

    target = out.with_name(f"{out.stem}_{suffix}.png")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".png", delete=False) as handle:
        temp = Path(handle.name)
    try:
        figure.savefig(temp, dpi=110, bbox_inches="tight")
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
        plt.close(figure)
    return f"![{caption}]({target.name})\n"


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
