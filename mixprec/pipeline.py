"""`mixprec run CONFIG`: analyze -> search -> evaluate -> export -> report, resumable.

Each step has a name, a hash of its inputs and a list of outputs in the run manifest. A
re-run skips a step that finished with the same inputs and still has its outputs, and redoes
one whose inputs changed (a new budget, other scores, an edited plan). Analysis cells are
also cached individually, so an interrupted analysis resumes where it stopped.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixprec.config import RunConfig
from mixprec.errors import MixprecError
from mixprec.files import atomic_write_text
from mixprec.memory import peak_memory
from mixprec.runlock import RunLock
from mixprec.store import RunFolder, check_run_folder, inputs_hash

if TYPE_CHECKING:
    from mixprec.runtimes import Runtime

Say = Callable[[str], None]


@dataclass
class RunSummary:
    """What a run did: one row per plan, and every file it wrote or kept."""

    folder: Path
    plans: list[dict[str, Any]] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0


class Pipeline:
    """The steps of one run over one run folder; `run()` executes what is not up to date."""

    def __init__(self, config: RunConfig, say: Say = print, progress: bool = True) -> None:
        self.config = config
        self.folder = RunFolder(config.output)
        self.say = say
        self.progress = progress
        self.summary = RunSummary(config.output)
        self._problem: Any = None
        self.visited: list[str] = []

    @property
    def path(self) -> Path:
        return self.config.output

    def run(self) -> RunSummary:
        """Refuse a folder that is not ours; hold its lock while the steps run."""
        check_run_folder(self.path, "the run folder")
        if self.config.evaluate:
            self.runtime()  # no llama.cpp build (or compressed-tensors): one line before any step
        with RunLock(self.path):
            return self._run_locked()

    def _run_locked(self) -> RunSummary:
        started = time.perf_counter()
        self.folder.prepare(self.config.model_dump(mode="json"), self.config.model)
        atomic_write_text(self.path / "config.toml", self.config.to_toml())
        try:
            self.analyze()
            plans = self.search()
            for plan in plans:
                if self.config.evaluate:
                    self.evaluate(plan)
                for target in self.config.exports:
                    self.export(plan, target)
            self.report(plans)
        except KeyboardInterrupt:
            self.folder.finish("interrupted")
            raise
        except BaseException:
            self.folder.finish("failed")
            raise
        self.summary.seconds = time.perf_counter() - started
        self.folder.finish("finished")
        return self.summary

    def step(
        self,
        name: str,
        inputs: str,
        outputs: list[Path],
        work: Callable[[], str | None],
        unchanged: bool = False,
    ) -> bool:
        """Run `work` unless the step is up to date; True when it ran.

        `work` returns None, or the reason it produced nothing (an infeasible budget, a
        target the model has no mapping for); that is recorded and the run goes on.
        """
        self.visited.append(name)
        if self.folder.is_done(name, inputs, unchanged):
            self.summary.skipped.append(name)
            self.say(f"{name}: up to date")
            return False
        self.say(f"{name} ...")
        self.folder.mark(name, "running", inputs)
        try:
            with peak_memory() as peak:
                note = work()
        except BaseException as err:
            self.folder.mark(name, "failed", inputs, error=str(err) or type(err).__name__)
            raise
        if note:
            self.say(f"  {name}: {note}")
        written = [p for p in outputs if p.exists()]
        self.folder.mark(name, "done", inputs, written, note=note or "", peak=peak)
        self.summary.written.extend(written)
        return True

    def analyze(self) -> None:
        from mixprec.scheme import scheme_list
        from mixprec.sensitivity.adaptive import with_budgets
        from mixprec.sensitivity.cells import AnalysisSpec
        from mixprec.sensitivity.runner import analyze

        c = self.config
        schemes = scheme_list(c.schemes)
        data = c.text_data()
        adaptive = "adaptive" in c.estimator_names  # it decides for this run's plans
        decided = [c.budgets, c.exclude, c.target] if adaptive else []
        estimators = with_budgets(c.estimators, c.budgets if adaptive else None,
                                  exclude=tuple(c.exclude), target=c.target)  # fmt: skip
        spec = AnalysisSpec(c.model, schemes, estimators, tuple(c.levels),
                            c.calib_batches, c.seed, data=data, dtype=c.dtype, device=c.device,
                            imatrix=None if c.imatrix is None else str(c.imatrix))  # fmt: skip
        text = [c.data, Path(data.path)] if data else []  # the file's bytes: edited text redoes it
        placed = [c.dtype, c.device] if (c.dtype, c.device) != ("auto", "auto") else []
        weighted = [c.imatrix] if c.imatrix else []  # its bytes: another matrix redoes it
        inputs = inputs_hash("analyze", c.model, schemes, c.estimators, c.levels,
                             c.calib_batches, c.seed, *text, *placed, *weighted,
                             *decided)  # fmt: skip
        scores = self.folder.scores_path

        def work() -> None:
            analyze(spec, workers=c.workers, address=c.address,
                    gpus_per_worker=c.gpus_per_worker, out=self.path,
                    progress=self.progress)  # fmt: skip
            return None

        self.step("analyze", inputs, [scores], work, unchanged=True)  # what the config asked for

    def problem(self) -> Any:
        """The scored folder's allocation problem (loads the model once, only when needed)."""
        from mixprec.allocation import problem_from_run

        if self._problem is None:
            record = self.folder.manifest().analysis
            scored = record.spec.model if record else None
            trusted = scored == self.config.model  # the config's own source is the user's word
            estimator = self.config.estimator_for_search
            self._problem = problem_from_run(self.path, estimator, trust_source=trusted,
                                             exclude=self.config.exclude,
                                             spaces=self.config.spaces,
                                             target=self.config.target)  # fmt: skip
        return self._problem

    def search(self) -> list[Path]:
        from mixprec.allocation import allocate
        from mixprec.search.cost import InfeasibleBudget
        from mixprec.search.space import DEFAULT

        c = self.config
        estimator = c.estimator_for_search
        plans = []
        narrowed = [c.exclude, c.spaces] if (c.exclude, c.spaces) != ([DEFAULT], {}) else []
        if c.target != "any":  # a plan for another runtime is another plan
            narrowed.append(c.target)
        for strategy in c.strategy_configs():
            for budget in c.budgets:
                out = self.folder.plan_path(strategy.name, budget)
                name = f"search {strategy.name} {budget}"
                settings = strategy.provenance()
                inputs = inputs_hash(name, self.folder.scores_path, estimator, c.seed, settings,
                                     *narrowed, *(["measured"] if c.evaluate else []))  # fmt: skip

                def work(
                    strategy: Any = strategy, budget: str = budget, out: Path = out
                ) -> str | None:
                    out.unlink(missing_ok=True)
                    try:  # measured: never worse than a uniform plan that fits (see allocate)
                        plan = allocate(self.problem(), budget, strategy, workdir=self.path,
                                        measure=c.evaluate)  # fmt: skip
                    except InfeasibleBudget as err:  # a result, not a crash
                        return str(err)
                    plan.save(out)
                    if "note" in plan.provenance:
                        self.say(f"  {plan.provenance['note']}")
                    return None

                self.step(name, inputs, [out], work)
                if out.exists():
                    plans.append(out)
        return plans

    def runtime(self) -> Runtime:
        """Where plans are measured (its llama.cpp build found)."""
        from mixprec.runtimes import runtime_for

        c = self.config
        bin_dir = Path(c.llamacpp_bin).expanduser() if c.llamacpp_bin else None
        return runtime_for(c.runtime, bin_dir)

    def imatrix(self) -> Any:
        """The config's importance matrix, read (None without one)."""
        from mixprec.imatrix import load

        return None if self.config.imatrix is None else load(self.config.imatrix)

    def evaluate(self, plan_path: Path) -> None:
        from mixprec.metrics import evaluate
        from mixprec.plan import PrecisionPlan

        out = self.folder.eval_path(plan_path)

        c = self.config
        measured_in: list[Any] = [c.runtime, c.llamacpp_bin] if c.runtime != "torch" else []
        measured_in += [c.imatrix] if c.imatrix else []

        def work() -> None:
            plan = PrecisionPlan.load(plan_path)
            bundle = self.problem().bundle  # with the run's importance matrix, if it has one
            runtime = self.runtime()
            if runtime.is_mixprec:
                result = evaluate(bundle, plan.assignment, input_ranges=plan.input_ranges or None)
            else:
                from mixprec.runtimes import evaluate_in

                result, warnings = evaluate_in(runtime, bundle, plan, c.model, c.text_data(),
                                               self.imatrix())  # fmt: skip
                for warning in warnings:
                    self.say(f"  warning: {warning}")
            atomic_write_text(out, json.dumps(result.to_json(), indent=2) + "\n")
            return None

        self.step(f"evaluate {plan_path.stem}", inputs_hash(plan_path, *measured_in), [out], work)

    def export(self, plan_path: Path, target: str) -> None:
        from mixprec.export import export_plan, model_files
        from mixprec.plan import PrecisionPlan

        out = self.folder.export_path(plan_path, target)

        def load() -> tuple[Any, str]:
            bundle = self.problem().bundle
            return bundle.model, bundle.fingerprint

        def work() -> str | None:
            if out.is_dir():  # this run's own earlier checkpoint folder
                shutil.rmtree(out)
            out.unlink(missing_ok=True)
            try:
                files = model_files(target, self.config.model)
                weighted = self.config.imatrix if target in ("llamacpp", "gguf") else None
                exported = export_plan(PrecisionPlan.load(plan_path), target, out, load, *files,
                                       imatrix=weighted)  # fmt: skip
            except MixprecError as err:  # e.g. no llama.cpp names for this architecture
                return f"not exported: {err}"
            return "; ".join(f"warning: {w}" for w in exported.warnings) or None  # kept as note

        weighted = [self.config.imatrix] if self.config.imatrix else []
        inputs = inputs_hash(plan_path, target, *weighted)
        self.step(f"export {plan_path.stem} {target}", inputs, [out], work)

    def report(self, plans: list[Path]) -> None:
        from mixprec.report import plan_rows, write_report

        out = self.path / "report.md"
        evals = [self.folder.eval_path(p) for p in plans]
        inputs = inputs_hash("report", self.config.model_dump(mode="json"), *plans, *evals)

        def work() -> None:
            self.folder.keep_only(self.visited)  # steps of an earlier config do not report
            write_report(self.config, self.folder.manifest(), plans, out)
            return None

        self.step("report", inputs, [out], work)
        self.summary.plans = plan_rows(plans, self.path)


def run_pipeline(config: RunConfig, say: Say = print, progress: bool = True) -> RunSummary:
    """Run (or resume) every step of `config`; see the module docstring."""
    return Pipeline(config, say, progress).run()
