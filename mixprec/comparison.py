"""Measured metrics with intervals, and paired comparisons of two measured plans.

A metric that is a ratio of sums over evaluation samples (accuracy, mean cosine, perplexity =
exp(NLL / tokens), KL per position) is resampled over samples, not batches: a bootstrap over a
handful of batches sees a handful of distinct means. Two plans measured on the same samples
are compared on the same resamples (paired), so what every sample shares cancels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mixprec.errors import MixprecError

BOOTSTRAP_RESAMPLES = 2000
LINKS = ("identity", "exp")
#: metrics where more is better; every other one (perplexity, output divergence) is a loss
HIGHER_IS_BETTER = frozenset({"accuracy", "cosine", "top1_agreement", "retrieval_top1"})
VERDICTS = ("better", "worse", "not distinguishable")


@dataclass(frozen=True)
class PerSample:
    """A metric as link(sum(numerator) / sum(denominator)) over evaluation samples."""

    numerator: np.ndarray
    denominator: np.ndarray
    link: str = "identity"

    def __post_init__(self) -> None:
        if self.link not in LINKS or self.numerator.shape != self.denominator.shape:
            raise MixprecError(f"a per-sample metric needs a link in {LINKS} and one "
                               "denominator per numerator")  # fmt: skip

    def value(self, picks: np.ndarray | None = None) -> np.ndarray:
        """The metric, or one per row of `picks` (resampled sample indices)."""
        if picks is None:
            ratio = np.asarray(self.numerator.sum() / self.denominator.sum())
        else:
            ratio = self.numerator[picks].sum(axis=-1) / self.denominator[picks].sum(axis=-1)
        return np.exp(ratio) if self.link == "exp" else ratio


def resamples(samples: int, seed: int) -> np.ndarray:
    """[BOOTSTRAP_RESAMPLES, samples] sample indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, samples, size=(BOOTSTRAP_RESAMPLES, samples))


def percentile_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` share of bootstrap replicates."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def interval(metric: PerSample, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the metric over evaluation samples."""
    return percentile_interval(metric.value(resamples(len(metric.numerator), seed)), level)


@dataclass(frozen=True)
class Comparison:
    """Plan A against plan B on one metric: A - B with its paired interval, and the verdict
    for A ("better" only when the whole interval says so)."""

    metric: str
    difference: float
    ci_low: float
    ci_high: float
    verdict: str

    def __str__(self) -> str:
        return (f"{self.verdict} ({self.metric} {self.difference:+.4g}, 95% interval "
                f"{self.ci_low:+.4g} to {self.ci_high:+.4g})")  # fmt: skip


def compare(
    name: str, a: PerSample, b: PerSample, seed: int = 0, level: float = 0.95
) -> Comparison:
    """Paired bootstrap of A - B over the samples both were measured on."""
    if a.numerator.shape != b.numerator.shape:
        raise MixprecError(
            f"plans measured on {len(a.numerator)} and {len(b.numerator)} samples cannot be "
            "compared pairwise; measure both on the same evaluation split"
        )
    picks = resamples(len(a.numerator), seed)
    low, high = percentile_interval(a.value(picks) - b.value(picks), level)
    difference = float(a.value() - b.value())
    verdict = "not distinguishable"
    if math.isfinite(difference) and (low > 0 or high < 0):  # the whole interval on one side
        verdict = "better" if (low > 0) == (name in HIGHER_IS_BETTER) else "worse"
    return Comparison(name, difference, low, high, verdict)


def better(name: str, a: float, b: float) -> bool:
    """Whether value `a` of metric `name` measures better than `b`."""
    return a > b if name in HIGHER_IS_BETTER else a < b
