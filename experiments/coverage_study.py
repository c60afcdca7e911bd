"""Do the estimators' 95% intervals cover the large-sample score 95% of the time? Seeded
repeats draw calibration samples (with replacement) from a pool whose score is cheap to compute
exactly, and count how often each cell's interval holds the pool's score: the studentized
interval over samples that scores carry now, beside a plain percentile interval over the same
samples and the one scores had before (percentile over batch means). Used by adaptive.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from mixprec.comparison import resamples
from mixprec.data import content_hash
from mixprec.models import ModelBundle, load_model
from mixprec.scheme import Scheme
from mixprec.sensitivity.base import (
    SensitivityEstimator,
    bootstrap_ci,
    derive_seed,
    make_estimator,
)
from mixprec.tasks import Batch
from mixprec.units import Unit, discover_units, select

DEFAULTS: dict[str, Any] = {
    "model": "digits-cnn",
    "estimators": ["fisher", "hessian", "isolation"],
    "schemes": ["w:int4", "w:mxfp4"],
    "samples": [50, 200],  # calibration samples per repeat (digits-cnn calibrates on 200)
    "batches": 2,  # the old interval resamples this many batch means
    "repeats": 100,
    "hessian_repeats": 30,  # a trace per sample and probe costs a double backward each
    "reference": {"hessian": {"tolerance": 0.02, "min_probes": 4, "max_probes": 64}},
}
LEVEL = 0.95
#: the interval scores carry now, then the ones it is compared with
METHODS = (
    "studentized over samples",
    "percentile over samples",
    "percentile over {batches} batch means",
)


def pool(bundle: ModelBundle) -> list[Batch]:
    """Every held-out sample of the bundle (calibration and evaluation), one batch each."""
    return [one for batch in (*bundle.calibration, *bundle.evaluation)
            for one in bundle.task.split(batch)]  # fmt: skip


def batched(samples: Sequence[Batch], size: int) -> tuple[Batch, ...]:
    """Samples joined into batches of `size` (the last one may be short)."""
    groups = [samples[i : i + size] for i in range(0, len(samples), size)]
    return tuple({k: torch.cat([s[k] for s in group]) for k in group[0]} for group in groups)


def per_sample(
    estimator: SensitivityEstimator,
    bundle: ModelBundle,
    cells: Sequence[tuple[Unit, Scheme]],
    batches: Sequence[Batch],
) -> np.ndarray:
    """[cells, samples]: each cell's score per sample on `batches`."""
    digest = content_hash(batches)
    estimator.expect([scheme for _, scheme in cells])
    return np.array([estimator.per_sample(bundle, unit, scheme, batches, digest)
                     for unit, scheme in cells])  # fmt: skip


def covered(values: np.ndarray, truth: np.ndarray, seed: int, method: str) -> np.ndarray:
    """Per row: whether the interval of the row's mean (`studentized`, as scores have it, or
    `percentile`) holds `truth`."""
    draws = resamples(values.shape[1], seed)
    inside = []
    for row, target in zip(values, truth, strict=True):
        if method == "studentized":
            low, high = bootstrap_ci(row, seed, LEVEL)
        else:
            tail = (1 - LEVEL) / 2 * 100
            low, high = np.percentile(row[draws].mean(axis=1), [tail, 100 - tail])
        inside.append(low <= target <= high)
    return np.array(inside)


def wilson(hits: int, total: int) -> tuple[float, float]:
    """The Wilson 95% interval of a proportion (the coverage itself is an estimate)."""
    z, share = 1.96, hits / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total**2)) / (1 + z * z / total)
    return centre - half, centre + half


def coverage(config: dict[str, Any]) -> pd.DataFrame:
    """Coverage per estimator and sample count of the intervals over samples and batch means."""
    settings = {**DEFAULTS, **config}
    bundle = load_model(settings["model"])
    samples = pool(bundle)
    units = select(discover_units(bundle.model), "layer")
    cells = [(u, Scheme.parse(s)) for u in units for s in settings["schemes"]]
    rows = []
    for name in settings["estimators"]:
        exact = {"name": name, **settings["reference"].get(name, {})}
        truth = per_sample(make_estimator(exact), bundle, cells, batched(samples, 100)).mean(1)
        repeats = settings["hessian_repeats" if name == "hessian" else "repeats"]
        for count in settings["samples"]:
            size = math.ceil(count / settings["batches"])
            hits: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
            for repeat in range(repeats):
                gen = np.random.default_rng(derive_seed(repeat, "coverage", name, str(count)))
                drawn = [samples[i] for i in gen.integers(0, len(samples), count)]
                values = per_sample(make_estimator(name, seed=repeat), bundle, cells,
                                    batched(drawn, size))  # fmt: skip
                seed = derive_seed(repeat, "bootstrap", name, str(count))
                means = np.stack([values[:, i : i + size].mean(1)
                                  for i in range(0, values.shape[1], size)], axis=1)  # fmt: skip
                hits[METHODS[0]].append(covered(values, truth, seed, "studentized"))
                hits[METHODS[1]].append(covered(values, truth, seed, "percentile"))
                hits[METHODS[2]].append(covered(means, truth, seed, "percentile"))
            for method, each in hits.items():
                inside = np.stack(each)  # [repeats, cells]
                low, high = wilson(int(inside.sum()), inside.size)
                rows.append({"estimator": name, "samples": count,
                             "interval": method.format(batches=settings["batches"]),
                             "intervals": inside.size, "coverage": float(inside.mean()),
                             "coverage low": low, "coverage high": high,
                             "worst cell": float(inside.mean(0).min())})  # fmt: skip
    return pd.DataFrame(rows)


def coverage_verdicts(frame: pd.DataFrame, settings: dict[str, Any]) -> list[str]:
    """One line per estimator and sample count: how often its intervals held the score."""
    lines = []
    for (name, count), part in frame.groupby(["estimator", "samples"], sort=False):
        now, *others = part.to_dict("records")
        inside = now["coverage low"] <= LEVEL <= now["coverage high"]
        before = ", ".join(f"{o['interval']}: {o['coverage']:.1%}" for o in others)
        lines.append(
            f"- Coverage, {name}, {count} samples: the 95% interval held the large-sample score "
            f"in {now['coverage']:.1%} of {now['intervals']} seeded intervals "
            f"({'consistent with 95%' if inside else 'NOT 95%'}; {before})."
        )
    return lines
