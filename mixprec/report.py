"""report.md of a run: what was asked, each plan's predicted and measured results, the files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mixprec.config import RunConfig
from mixprec.files import atomic_write_text
from mixprec.markdown import cell, rows_markdown
from mixprec.store import Manifest, RunFolder


def plan_rows(plans: list[Path], folder: Path) -> list[dict[str, Any]]:
    """One row per plan file: method, budget, predicted size and score, measured metrics."""
    rows = []
    for path in plans:
        plan = json.loads(path.read_text(encoding="utf-8"))
        predicted = plan.get("predicted", {})
        row: dict[str, Any] = {
            "plan": path.stem,
            "method": plan.get("provenance", {}).get("strategy", "?"),
            "budget": plan.get("budget", "?"),
            "bits/weight": predicted.get("bits_per_weight"),
            "size MB": predicted.get("size_mb"),
            "predicted score": predicted.get("score"),
        }
        evaluated = RunFolder(folder).eval_path(path)
        if evaluated.is_file():
            result = json.loads(evaluated.read_text(encoding="utf-8"))
            row.update({k: v for k, v in result.get("metrics", {}).items()})
        rows.append(row)
    return rows


def uniform_comparisons(plans: list[Path]) -> list[str]:
    """Per measured plan: how it compared with each uniform plan that fits its budget, and
    whether a uniform one replaced it."""
    lines = []
    for path in plans:
        provenance = json.loads(path.read_text(encoding="utf-8")).get("provenance", {})
        said = [str(provenance[k]) for k in ("note", "uniform") if provenance.get(k)]
        if said:
            lines.append(f"- {path.stem}: " + "; ".join(said))
    return lines


def write_report(config: RunConfig, manifest: Manifest, plans: list[Path], out: Path) -> None:
    folder = out.parent
    rows = plan_rows(plans, folder)
    head = list(dict.fromkeys(k for row in rows for k in row))
    table = rows_markdown(head, [[cell(row.get(k, "")) for k in head] for row in rows])
    notes = [f"- {name}: {step.note}" for name, step in manifest.steps.items() if step.note]
    analysis = manifest.analysis
    cells = analysis.cells if analysis else "?"
    schemes = analysis.spec.schemes if analysis else []
    lines = [
        f"# Run {folder.name}: {config.model}\n",
        f"Made by `mixprec run` (config below). Scores: {cells} cells, "
        f"{len(manifest.failed)} failed, estimators {', '.join(config.estimator_names)}, "
        f"schemes {', '.join(schemes)}; plans use the "
        f"{config.estimator_for_search} scores.\n",
        "## Plans\n",
        table if rows else "No plan: every budget was infeasible.\n",
    ]
    if notes:
        lines += ["## Steps that wrote nothing\n", "\n".join(notes) + "\n"]
    guarded = uniform_comparisons(plans)
    if guarded:
        lines += ["## Against uniform plans of the same budget (paired over evaluation "
                  "samples)\n", "\n".join(guarded) + "\n"]  # fmt: skip
    files = ["scores.parquet", *(f"plans/{p.name}" for p in plans)]
    if config.evaluate:
        files += [f"eval/{p.name}" for p in plans]
    run = RunFolder(folder)
    exports = [run.export_path(p, t) for p in plans for t in config.exports]
    files += [str(f.relative_to(folder)) for f in exports if f.exists()]
    lines += ["## Files\n", "\n".join(f"- `{f}`" for f in files) + "\n"]
    lines += ["## Config\n", "```toml\n" + config.to_toml() + "```\n"]
    atomic_write_text(out, "\n".join(lines))
