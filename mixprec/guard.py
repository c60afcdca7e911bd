"""Checks made before a command writes an output file: never over a file mixprec did not
write, never over the command's own input or a run folder's own files. An output file is
recognised by its content (a plan, an export, a score table or Pareto frame, a GGUF carrying a
plan); run folders are checked by the run store (`mixprec.store.check_run_folder`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from mixprec.errors import MixprecError
from mixprec.files import check_writable_parent
from mixprec.store import RUN_FILES, is_run_folder

GGUF_MAGIC = b"GGUF"
PARQUET_MAGIC = b"PAR1"
OVERRIDE_LINE = re.compile(r"\^.+\$=[a-z0-9_]+")  # one `--tensor-type-file` entry


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
    if lines and all(OVERRIDE_LINE.fullmatch(line) for line in lines):
        return True  # llama.cpp overrides (a --tensor-type-file)
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
    if resolved.name in RUN_FILES and is_run_folder(resolved.parent):
        raise MixprecError(
            f"{what} {out} is the run folder's own {resolved.name}; choose another file"
        )
    if resolved.exists() and not is_mixprec_output(resolved):
        raise MixprecError(
            f"{what} {out} exists and was not written by mixprec; choose another file or move it"
        )
    check_writable_parent(resolved, what, out)
    return resolved
