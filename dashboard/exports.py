"""The Export page's model: which plan to offer first, what each export target holds of a plan
(written or not, its size, what the run said when writing it), a preview and one zip of it all.

Kept free of Streamlit (tested directly); files are read as data, never run.
"""

from __future__ import annotations

import io
import itertools
import zipfile
from dataclasses import dataclass
from pathlib import Path

from mixprec.store import EXPORT_SUFFIX, RunFolder, read_manifest

LABELS = {"json": "plan JSON", "compressed-tensors": "compressed-tensors checkpoint",
          "modelopt": "ModelOpt checkpoint", "llamacpp": "llama.cpp overrides",
          "gguf": "GGUF"}  # fmt: skip
assert set(LABELS) == set(EXPORT_SUFFIX), "every export target has a label"
PREVIEW_LINES = 40


@dataclass(frozen=True)
class ExportFile:
    """One export target of one plan: where it goes, how big it is (None: not written yet)
    and what the run noted when it wrote it (warnings, or why it could not)."""

    target: str
    path: Path
    size: int | None
    note: str

    @property
    def label(self) -> str:
        return LABELS[self.target]


def default_plan(run: Path, names: list[str]) -> str:
    """The plan the run's config asked for first (its first method at its first budget), so
    the page opens on the user's own choice rather than the alphabetically first file."""
    config = read_manifest(run).config
    for method in config.get("methods", []) or []:
        for budget in config.get("budgets", []) or []:
            if f"{method}-{budget}" in names:
                return f"{method}-{budget}"
    return names[0]


def export_files(run: Path, plan: Path) -> list[ExportFile]:
    """Every export target of `plan`, in the registry's order."""
    folder = RunFolder(run)
    steps = read_manifest(run).steps
    files = []
    for target in EXPORT_SUFFIX:
        path = folder.export_path(plan, target)
        step = steps.get(f"export {plan.stem} {target}")
        files.append(ExportFile(target, path, size_of(path), step.note if step else ""))
    return files


def size_of(path: Path) -> int | None:
    """Bytes in a file, or in every file of a checkpoint folder; None when there is nothing."""
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return None


def readable_size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} B"


def preview(export: ExportFile) -> str:
    """What the export holds, in a few lines: a text file's start, a checkpoint's files, a
    GGUF's tensor types."""
    path = export.path
    if path.is_dir():
        return "\n".join(f"{p.relative_to(path)}  {readable_size(p.stat().st_size)}"
                         for p in sorted(path.rglob("*")) if p.is_file())  # fmt: skip
    if export.target == "gguf":
        return gguf_types(path)
    with path.open(encoding="utf-8", errors="replace") as handle:
        lines = [line.rstrip("\n") for line in itertools.islice(handle, PREVIEW_LINES + 1)]
    more = len(lines) > PREVIEW_LINES
    return "\n".join(lines[:PREVIEW_LINES]) + ("\n..." if more else "")


def gguf_types(path: Path) -> str:
    """How many of the GGUF's tensors have each type (what llama.cpp will run)."""
    import gguf

    counts: dict[str, int] = {}
    for tensor in gguf.GGUFReader(str(path)).tensors:
        name = tensor.tensor_type.name
        counts[name] = counts.get(name, 0) + 1
    return "\n".join(f"{name}: {count} tensors" for name, count in sorted(counts.items()))


def plan_bundle(run: Path, plan: Path) -> bytes:
    """One zip of the plan, its measurement and every export written of it."""
    folder = RunFolder(run)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        measured = folder.eval_path(plan)
        for path in (plan, measured):
            if path.is_file():
                archive.write(path, f"{plan.stem}/{path.parent.name}/{path.name}")
        for export in export_files(run, plan):
            inside = [export.path] if export.path.is_file() else sorted(export.path.rglob("*"))
            for path in inside:
                if path.is_file() and not path.is_symlink():
                    name = path.relative_to(export.path.parent)
                    archive.write(path, f"{plan.stem}/exports/{name}")
    return buffer.getvalue()
