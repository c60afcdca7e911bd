"""The run store: one folder per run, with a manifest that records every pipeline step.

runs/NAME/
  manifest.json    config, status, dates, each step's status, input hash and outputs
                   (and, from the analyze step, the analysis record `mixprec search` reads)
  scores.parquet   the sensitivity table
  plans/           METHOD-BUDGET.json precision plans
  eval/            METHOD-BUDGET.json measured metrics of each plan
  exports/         each plan for each runtime target
  report.md        the summary
Every file is written to a temporary name and renamed, so a folder never holds a partial file
that looks complete; a step is only marked done after its outputs exist.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mixprec.errors import MixprecError
from mixprec.files import atomic_write_text, check_writable_parent
from mixprec.memory import PeakMemory
from mixprec.runlock import LOCK_FILE, owner_alive

STORE_VERSION = 1
MANIFEST = "manifest.json"
RUN_KIND = "mixprec-run"
SCORES = "scores.parquet"
# Files a run folder keeps for itself; no --out may name them.
RUN_FILES = (MANIFEST, SCORES, "config.toml", "report.md", "pareto.parquet", LOCK_FILE)
# Every export target, and the suffix of its file (or folder) beside the plan in RUN/exports/.
EXPORT_SUFFIX: dict[str, str] = {
    "json": ".json",
    "compressed-tensors": "-compressed-tensors",
    "modelopt": "-modelopt",
    "llamacpp": ".llamacpp.txt",
    "gguf": ".gguf",
}
STOPPED = "stopped — resumable with `mixprec run {config}`"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def inputs_hash(*parts: object) -> str:
    """A stable hash of a step's inputs (JSON-able values and file contents)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update(part.read_bytes() if part.is_file() else b"<missing>")
        else:
            digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def output_digest(path: Path) -> str:
    """A step output's digest: a file's, or for a folder (a checkpoint) that of every file's
    relative name and digest."""
    if not path.is_dir():
        return file_digest(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return inputs_hash(*[f"{p.relative_to(path)}:{file_digest(p)}" for p in files])


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class StepRecord(BaseModel):
    """One pipeline step: done or not, the hash of its inputs, its outputs and their digests."""

    model_config = ConfigDict(extra="forbid")

    status: str
    inputs: str
    outputs: list[str] = []
    digests: dict[str, str] = {}
    finished: str = ""
    error: str = ""
    note: str = ""
    peak_rss_mb: float | None = None  # this process's peak while the step ran
    peak_cuda_mb: float | None = None


class FailedCell(BaseModel):
    model_config = ConfigDict(extra="forbid")

    estimator: str
    unit: str
    scheme: str
    error: str


class SpecRecord(BaseModel):
    """What was scored (an AnalysisSpec as JSON): what `search` reloads the model from."""

    model_config = ConfigDict(extra="forbid")

    model: str
    schemes: list[str]
    estimators: list[str]
    estimator_settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    levels: list[str]
    calib_batches: int | None = None
    seed: int = 0
    chunk: int = 8
    threads: int = 1
    data: dict[str, Any] | None = None  # a TextData as JSON: the user's own text
    dtype: str = "fp32"  # runs recorded before --dtype were all upcast to float32
    device: str = "cpu"
    imatrix: str | None = None  # llama.cpp's importance matrix the scores were made with
    imatrix_sha256: str | None = None


class AnalysisRecord(BaseModel):
    """What a scoring run hands the store about its table: the spec, the model's fingerprint
    and calibration hash, cell counts, failures, time and the blocks' layers."""

    model_config = ConfigDict(extra="forbid")

    spec: SpecRecord
    model: str
    fingerprint: str
    calibration_hash: str
    cells: int
    failed: list[FailedCell] = []
    seconds: float
    blocks: dict[str, list[str]] = {}
    units: list[str] = []  # every unit scored, in the model's order (the table's is by name)
    torch: str = ""
    peak_rss_mb: float | None = None  # the scoring process's peak (Ray workers not counted)
    peak_cuda_mb: float | None = None
    worker_peak_rss_mb: float | None = None  # the largest Ray worker's peak, where Ray scored
    worker_peak_cuda_mb: float | None = None


_ANALYSIS_FIELDS = tuple(AnalysisRecord.model_fields)


class Manifest(BaseModel):
    """RUN/manifest.json: what the run is, how far it got, and (flat, as store version 1 lays
    it out) the analysis record of its scores. Keys it does not know are kept as they are."""

    model_config = ConfigDict(extra="allow")

    kind: str = RUN_KIND
    store_version: int = STORE_VERSION
    name: str = ""
    model: str = ""
    config: dict[str, Any] = {}
    created: str = ""
    updated: str = ""
    status: str = ""
    steps: dict[str, StepRecord] = {}
    spec: SpecRecord | None = None
    fingerprint: str | None = None
    calibration_hash: str | None = None
    cells: int | None = None
    failed: list[FailedCell] = []
    seconds: float | None = None
    blocks: dict[str, list[str]] = {}
    units: list[str] = []
    torch: str | None = None
    peak_rss_mb: float | None = None
    peak_cuda_mb: float | None = None
    worker_peak_rss_mb: float | None = None
    worker_peak_cuda_mb: float | None = None

    @property
    def analysis(self) -> AnalysisRecord | None:
        """The scores' record, once a scoring run has written one."""
        if self.spec is None or self.fingerprint is None:
            return None
        return AnalysisRecord.model_validate(
            {k: getattr(self, k) for k in _ANALYSIS_FIELDS if getattr(self, k) is not None}
        )


def read_manifest(folder: Path) -> Manifest:
    """The folder's manifest (an empty one when there is none yet); an unreadable, foreign or
    wrongly typed one fails in one line."""
    path = folder / MANIFEST
    if not path.exists():
        return Manifest(kind="", store_version=STORE_VERSION)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MixprecError(
            f"{path} is not a readable run manifest ({err}); move the run folder away"
        ) from None
    if not isinstance(data, dict):
        raise MixprecError(f"{path} is not a run manifest (a JSON object)")
    version = data.get("store_version", STORE_VERSION)
    if version != STORE_VERSION:
        raise MixprecError(
            f"{path} was written by store version {version}; this mixprec reads {STORE_VERSION} "
            "(re-run `mixprec run` on its config to rebuild it)"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise MixprecError(f"{path}: key {key!r}: {first['msg']}") from None


class RunFolder:
    """The one reader and writer of a run folder's manifest, and where each file of the run
    lies (scores, plans, measurements, exports)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def scores_path(self) -> Path:
        return self.path / SCORES

    def plan_path(self, method: str, budget: str) -> Path:
        return self.path / "plans" / f"{method}-{budget}.json"

    def plans(self) -> list[Path]:
        """The run's plans, by name."""
        return sorted((self.path / "plans").glob("*.json"))

    def eval_path(self, plan: Path) -> Path:
        """Where the measurement of `plan` goes."""
        return self.path / "eval" / plan.name

    def reference_path(self) -> Path:
        """Where the measurement of the unquantized model goes (every plan's FP reference)."""
        return self.path / "reference" / "fp.json"

    def export_path(self, plan: Path, target: str) -> Path:
        return self.path / "exports" / f"{plan.stem}{EXPORT_SUFFIX[target]}"

    def prepare(self, config: Mapping[str, Any], model: str) -> None:
        """Create the folder (and sub-folders) and start or resume its manifest."""
        try:
            for sub in ("", "plans", "eval", "exports"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-probe"
            probe.write_text("ok")
            probe.unlink()
        except OSError as err:
            raise MixprecError(f"cannot write the run folder {self.path}: {err.strerror}") from None
        created = self.manifest().created or now()
        self._update(kind=RUN_KIND, store_version=STORE_VERSION, name=self.path.name, model=model,
                     config=dict(config), status="running", created=created)  # fmt: skip

    def manifest(self) -> Manifest:
        return read_manifest(self.path)

    def record_analysis(self, record: AnalysisRecord) -> None:
        """Keep a scoring run's record (beside the steps, config and status already there)."""
        self._update(kind=RUN_KIND, **dict(record))

    def is_done(self, step: str, inputs: str, unchanged: bool = False) -> bool:
        """Finished before with the same inputs, and every output is still there; with
        `unchanged`, also byte for byte as written (another command may have rewritten it:
        `mixprec analyze --out RUN` does). Plans are left to the user to edit."""
        record = self.manifest().steps.get(step)
        if record is None or record.status != "done" or record.inputs != inputs:
            return False
        for name in record.outputs:
            path = self.path / name
            if not path.exists() or (unchanged and record.digests.get(name) != output_digest(path)):
                return False
        return True

    def mark(
        self,
        step: str,
        status: str,
        inputs: str,
        outputs: Iterable[Path] = (),
        error: str = "",
        note: str = "",
        peak: PeakMemory | None = None,
    ) -> None:
        names = [str(p.relative_to(self.path)) for p in outputs]
        digests = {n: output_digest(self.path / n) for n in names}
        memory = {"peak_rss_mb": peak.rss_mb, "peak_cuda_mb": peak.cuda_mb} if peak else {}
        record = StepRecord(status=status, inputs=inputs, outputs=names, digests=digests,
                            finished=now(), error=error, note=note, **memory)  # fmt: skip
        self._update(steps={**self.manifest().steps, step: record})

    def keep_only(self, steps: Iterable[str]) -> None:
        """Forget the records of steps a changed config no longer has."""
        wanted = set(steps)
        self._update(steps={k: v for k, v in self.manifest().steps.items() if k in wanted})

    def finish(self, status: str) -> None:
        self._update(status=status)

    def _update(self, **changes: Any) -> None:
        """Read, change, check and write the manifest (atomically); `updated` is now."""
        current = dict(self.manifest())
        manifest = Manifest.model_validate({**current, **changes, "updated": now()})
        text = json.dumps(manifest.model_dump(mode="json", exclude_none=True), indent=2)
        atomic_write_text(self.path / MANIFEST, text + "\n")


def list_runs(root: Path) -> list[dict[str, str]]:
    """Every run folder under `root`: name, model, status and last update, newest first."""
    if not root.is_dir():
        raise MixprecError(f"no run store at {root}; `mixprec run CONFIG` creates one")
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if not (folder / MANIFEST).exists():
            continue
        try:
            manifest = read_manifest(folder)
        except MixprecError:
            rows.append({"name": folder.name, "model": "?", "status": "unreadable", "date": ""})
            continue
        status = manifest.status or ("analyzed" if manifest.analysis else "unknown")
        if status == "running" and not owner_alive(folder):
            status = STOPPED.format(config=folder / "config.toml")
        date = manifest.updated or manifest.created
        model = manifest.model or "?"
        rows.append({"name": folder.name, "model": model, "status": status, "date": date})
    return sorted(rows, key=lambda r: r["date"], reverse=True)


def is_run_folder(path: Path) -> bool:
    """A folder whose manifest says mixprec wrote it (or an older mixprec's analysis record)."""
    try:
        data = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    legacy = ("spec" in data and "fingerprint" in data) or (
        "steps" in data and "store_version" in data
    )
    return data.get("kind") == RUN_KIND or legacy


def _refuse_root(path: Path, what: str) -> Path:
    if str(path).strip() in ("", "."):
        raise MixprecError(f"{what} {str(path)!r} names no folder; give one such as runs/NAME")
    resolved = path.expanduser().resolve()
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        raise MixprecError(
            f"{what} {str(path)!r} is {resolved}; give a folder of its own such as runs/NAME"
        )
    return resolved


def check_run_folder(path: Path, what: str = "the run folder") -> Path:
    """`path` may be a new folder, an empty one or a mixprec run; anything else is refused."""
    resolved = _refuse_root(path, what)
    manifest = resolved / MANIFEST
    if manifest.is_file() and not is_run_folder(resolved):
        try:
            json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise MixprecError(
                f"{manifest} is not a readable run manifest ({err}); move the folder away "
                "or give another one"
            ) from None
    if resolved.exists() and not resolved.is_dir():
        raise MixprecError(f"{what} {path} is a file, not a folder; give one such as runs/NAME")
    if resolved.is_dir() and not is_run_folder(resolved):
        try:
            present = sorted(p.name for p in resolved.iterdir() if p.name != LOCK_FILE)
        except OSError as err:
            raise MixprecError(f"cannot read {what} {path}: {err.strerror}") from None
        if present:
            shown = ", ".join(present[:3]) + (" ..." if len(present) > 3 else "")
            raise MixprecError(
                f"{what} {path} holds files that are not a mixprec run ({shown}); "
                "give a new or empty folder"
            )
    check_writable_parent(resolved, what, path)
    return resolved
