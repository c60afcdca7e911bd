"""Measured metrics with intervals, and paired comparisons of two measured plans.

A metric that is a ratio of sums over evaluation samples (accuracy, mean cosine, perplexity =
exp(NLL / tokens), KL per position) is resampled over samples, not batches: a bootstrap over a
handful of batches sees a handful of distinct means. Two plans measured on the same samples
are compared on the same resamples (paired), so what every sample shares cancels.

Per-sample sensitivity scores are heavily skewed (a few samples carry most of a layer's
sensitivity), where a plain percentile interval of their mean covers far too rarely; their mean
gets the studentized bootstrap (bootstrap-t) and measured metrics the bias-corrected and
accelerated (BCa) interval (experiments/results/adaptive.md measures the coverage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

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

    def jackknife(self) -> np.ndarray:
        """The metric with each sample left out in turn (for the interval's skew correction)."""
        if len(self.numerator) < 2:
            return self.value()[None]
        ratio = (self.numerator.sum() - self.numerator) / (
            self.denominator.sum() - self.denominator
        )
        return np.exp(ratio) if self.link == "exp" else ratio


def resamples(samples: int, seed: int) -> np.ndarray:
    """[BOOTSTRAP_RESAMPLES, samples] sample indices drawn with replacement."""
    return np.random.default_rng(seed).integers(0, samples, size=(BOOTSTRAP_RESAMPLES, samples))


def bca_interval(
    replicates: np.ndarray, estimate: float, jackknife: np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """Efron's BCa interval: the replicates' quantiles moved by their median bias around
    `estimate` and by the skew the leave-one-out values `jackknife` show."""
    normal, count = NormalDist(), len(replicates)
    below = (np.sum(replicates < estimate) + 0.5 * np.sum(replicates == estimate)) / count
    bias = normal.inv_cdf(min(max(float(below), 0.5 / count), 1 - 0.5 / count))
    spread = jackknife.mean() - jackknife
    scale = float(np.sum(spread**2)) ** 1.5
    acceleration = float(np.sum(spread**3)) / (6 * scale) if scale > 0 else 0.0
    shares = []
    for z in (normal.inv_cdf((1 - level) / 2), normal.inv_cdf((1 + level) / 2)):
        moved = bias + (bias + z) / max(1 - acceleration * (bias + z), 1e-12)
        shares.append(normal.cdf(moved))
    low, high = np.quantile(replicates, shares)
    return float(low), float(high)


def mean_interval(values: np.ndarray, seed: int, level: float = 0.95) -> tuple[float, float]:
    """The studentized bootstrap interval of the mean of `values` (all finite), inside their
    range: each resample's mean is scaled by its own standard error, so a resample that missed
    the rare large values stretches the upper end, as it should."""
    count, mean = values.size, float(values.mean())
    error = float(values.std(ddof=1)) / math.sqrt(count) if count > 1 else 0.0
    if error == 0:
        return mean, mean
    drawn = values[resamples(count, seed)]
    spread = drawn.std(axis=1, ddof=1) / math.sqrt(count)
    shift = drawn.mean(axis=1) - mean  # a resample of one repeated value: shift / 0 = ±inf,
    with np.errstate(divide="ignore", invalid="ignore"):  # so few values give their range
        studentized = np.where(shift == 0, 0.0, shift / spread)
    low, high = np.quantile(studentized, [(1 - level) / 2, (1 + level) / 2],
                            method="inverted_cdf")  # fmt: skip  # no interpolating infinities
    return max(mean - high * error, float(values.min())), min(mean - low * error,
                                                                float(values.max()))  # fmt: skip


def interval(metric: PerSample, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """BCa bootstrap interval of the metric over evaluation samples."""
    replicates = metric.value(resamples(len(metric.numerator), seed))
    return bca_interval(replicates, float(metric.value()), metric.jackknife(), level)


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
    difference = float(a.value() - b.value())
    low, high = bca_interval(a.value(picks) - b.value(picks), difference,
                             a.jackknife() - b.jackknife(), level)  # fmt: skip
    verdict = "not distinguishable"
    if math.isfinite(difference) and (low > 0 or high < 0):  # the whole interval on one side
        verdict = "better" if (low > 0) == (name in HIGHER_IS_BETTER) else "worse"
    return Comparison(name, difference, low, high, verdict)


def better(name: str, a: float, b: float) -> bool:
    """Whether value `a` of metric `name` measures better than `b`."""
    return a > b if name in HIGHER_IS_BETTER else a < b
