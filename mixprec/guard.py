"""Checks made before mixprec writes anything: never into a folder of the user's own, never over
a file mixprec did not write, never over the command's own input.

A run folder is recognised by its manifest (`"kind": "mixprec-run"`); an output file by its
content (a plan, an export, a score table or Pareto frame, a GGUF carrying a plan).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from mixprec.errors import MixprecError

MANIFEST = "manifest.json"
RUN_KIND = "mixprec-run"
LOCK_FILE = ".lock"  # the run lock (mixprec.runlock); a folder holding only it is a run starting
# Files a run folder keeps for itself; no --out may name them.
RESERVED = (MANIFEST, "scores.parquet", "config.toml", "report.md", "pareto.parquet", LOCK_FILE)
GGUF_MAGIC = b"GGUF"
PARQUET_MAGIC = b"PAR1"


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
    _check_writable_parent(resolved, what, path)
    return resolved


def _check_writable_parent(resolved: Path, what: str, shown: Path) -> None:
    parent = resolved if resolved.is_dir() else resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise MixprecError(f"cannot write {what} {shown}: {parent} is not a writable folder")


def is_mixprec_output(path: Path) -> bool:
    """True for a file some mixprec command wrote (so a re-run may replace it)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
        if head == GGUF_MAGIC:
            import gguf

            from mixprec.export import PLAN_KEY

            return PLAN_KEY in gguf.GGUFReader(str(path)).fields
        if head == PARQUET_MAGIC:
            import pyarrow.parquet as pq

            names = set(pq.read_schema(path).names)
            return {"unit", "scheme", "estimator"} <= names or {"budget", "status"} <= names
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and all(line.startswith("--tensor-type ") for line in lines):
        return True  # llama.cpp overrides
    try:
        data = json.loads(text)
    except ValueError:
        return False
    if not isinstance(data, dict):
        return False
    hf = data.get("quantization_config")
    return (
        {"assignment", "fingerprint", "model"} <= set(data)  # a plan
        or {"layers", "fingerprint", "model"} <= set(data)  # its JSON export
        or (isinstance(hf, dict) and hf.get("quant_method") == "mixprec")
        or ("metrics" in data and "bits_per_weight" in data)  # a measured result
    )


def check_output_file(out: Path, inputs: Iterable[Path] = (), what: str = "--out") -> Path:
    """Refuse an --out that is a folder, the command's input, a run folder's own file, or a file
    mixprec did not write; checked before any work starts."""
    if str(out).strip() in ("", "."):
        raise MixprecError(f"{what} {str(out)!r} names no file; give one such as plan.json")
    resolved = out.expanduser().resolve()
    if resolved.is_dir():
        raise MixprecError(f"{what} {out} is a folder; give a file name inside it")
    for given in inputs:
        if given.expanduser().resolve() == resolved:
            raise MixprecError(f"{what} {out} is this command's own input; choose another file")
    if resolved.name in RESERVED and is_run_folder(resolved.parent):
        raise MixprecError(
            f"{what} {out} is the run folder's own {resolved.name}; choose another file"
        )
    if resolved.exists() and not is_mixprec_output(resolved):
        raise MixprecError(
            f"{what} {out} exists and was not written by mixprec; choose another file or move it"
        )
    _check_writable_parent(resolved, what, out)
    return resolved
