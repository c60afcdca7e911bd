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

from mixprec.errors import MixprecError
from mixprec.files import atomic_write_text
from mixprec.guard import MANIFEST, RUN_KIND
from mixprec.runlock import owner_alive

STORE_VERSION = 1
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


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest, or {} when there is none yet; unreadable ones fail in one line."""
    path = folder / MANIFEST
    if not path.exists():
        return {}
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
    return data


class RunFolder:
    """Read-modify-write access to one run folder's manifest and its step records."""

    def __init__(self, path: Path) -> None:
        self.path = path

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
        manifest = read_manifest(self.path)
        manifest.setdefault("created", now())
        manifest.setdefault("steps", {})
        manifest.update(
            kind=RUN_KIND,
            store_version=STORE_VERSION,
            name=self.path.name,
            model=model,
            config=dict(config),
        )
        self._write({**manifest, "status": "running", "updated": now()})

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.path)

    def is_done(self, step: str, inputs: str, unchanged: bool = False) -> bool:
        """Finished before with the same inputs, and every output is still there; with
        `unchanged`, also byte for byte as written (another command may have rewritten it:
        `mixprec analyze --out RUN` does). Plans are left to the user to edit."""
        record = self.manifest().get("steps", {}).get(step)
        if not record or record.get("status") != "done" or record.get("inputs") != inputs:
            return False
        digests = record.get("digests", {})
        for name in record.get("outputs", []):
            path = self.path / name
            if not path.is_file() or (unchanged and digests.get(name) != file_digest(path)):
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
    ) -> None:
        manifest = self.manifest()
        names = [str(p.relative_to(self.path)) for p in outputs]
        record = {
            "status": status,
            "inputs": inputs,
            "outputs": names,
            "digests": {n: file_digest(self.path / n) for n in names},
            "finished": now(),
        }
        if error:
            record["error"] = error
        if note:
            record["note"] = note
        manifest.setdefault("steps", {})[step] = record
        self._write({**manifest, "updated": now()})

    def keep_only(self, steps: Iterable[str]) -> None:
        """Forget the records of steps a changed config no longer has."""
        manifest = self.manifest()
        wanted = set(steps)
        manifest["steps"] = {k: v for k, v in manifest.get("steps", {}).items() if k in wanted}
        self._write(manifest)

    def finish(self, status: str) -> None:
        self._write({**self.manifest(), "status": status, "updated": now()})

    def _write(self, manifest: Mapping[str, Any]) -> None:
        atomic_write_text(self.path / MANIFEST, json.dumps(manifest, indent=2) + "\n")


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
        status = manifest.get("status", "analyzed" if "spec" in manifest else "unknown")
        if status == "running" and not owner_alive(folder):
            status = STOPPED.format(config=folder / "config.toml")
        date = manifest.get("updated") or manifest.get("created", "")
        model = manifest.get("model", "?")
        rows.append({"name": folder.name, "model": model, "status": status, "date": date})
    return sorted(rows, key=lambda r: r["date"], reverse=True)
