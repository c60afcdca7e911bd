"""Uniform sweep: every layer under one scheme at a time, measured side by side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.progress import Progress

from mixprec.markdown import cell, rows_markdown
from mixprec.metrics import Evaluation, evaluate
from mixprec.models import ModelBundle
from mixprec.plan import uniform_assignment
from mixprec.scheme import Scheme
from mixprec.units import discover_units

DEFAULT_SWEEP = (
    "keep",
    "w:bf16",
    "w:fp8_e4m3",
    "w:int8",
    "w:mxfp8_e4m3",
    "w:mxint8",
    "w:mxfp6_e3m2",
    "w:mxfp6_e2m3",
    "w:int4_g128",
    "w:int4_asym_g128",
    "w:int4",
    "w:mxfp4",
    "w:nvfp4",
    "w:nvint4",
    "w:fp4_e2m1",
    "w:int3_g128",
    "w:int2_g64",
    "w:mxfp8_e4m3,a:mxfp8_e4m3",
    "w:nvfp4,a:nvfp4",
)


@dataclass(frozen=True)
class SweepRow:
    scheme: str
    evaluation: Evaluation


def sweep_uniform(
    bundle: ModelBundle, schemes: Sequence[str] = DEFAULT_SWEEP, progress: bool = True
) -> list[SweepRow]:
    """Evaluate each scheme on every layer; rows sorted by effective bits, then scheme."""
    parsed = [Scheme.parse(s) for s in schemes]  # reject a bad scheme before any work
    units = discover_units(bundle.model)
    rows = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"uniform sweep on {bundle.name}", total=len(parsed))
        for scheme in parsed:
            rows.append(SweepRow(str(scheme), evaluate(bundle, uniform_assignment(units, scheme))))
            bar.advance(task)
    return sorted(rows, key=lambda r: (r.evaluation.bits_per_weight, r.scheme))


def markdown_table(rows: Sequence[SweepRow]) -> str:
    """One row per scheme: bits per weight, size and every metric the task reports."""
    metric_names = list(rows[0].evaluation.metrics)
    head = ["scheme", "bits/weight", "size (MB)", *metric_names]
    body = [
        [f"`{r.scheme}`", f"{r.evaluation.bits_per_weight:.3f}", f"{r.evaluation.size_mb:.2f}"]
        + [cell(r.evaluation.metrics[m]) for m in metric_names]
        for r in rows
    ]
    return rows_markdown(head, body)
