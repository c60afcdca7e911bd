"""Adaptive scoring: the cheap estimator (Fisher) everywhere, calibrated against the exact one
(isolation) per scheme family, so a cell isolation never measured still has a score on
isolation's scale and an interval that includes the calibration's own uncertainty.

Both are second-order in the weight error (isolation's KL is about half the full Fisher form,
Fisher's score its diagonal), so log(isolation) = offset + slope * log(fisher) fits well within
one family of formats; the slope takes up what grows faster than second order at few bits.
One regression for all families (an offset each, a shared slope and spread) keeps the
calibration's own uncertainty honest with a few probes per scheme.
`runner.analyze` decides where isolation is worth its cost (sensitivity/refine.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

from mixprec.data import content_hash
from mixprec.errors import MixprecError
from mixprec.models import ModelBundle
from mixprec.scheme import Scheme
from mixprec.sensitivity.base import (
    Score,
    SensitivityEstimator,
    derive_seed,
    estimator_config,
    register_estimator,
)
from mixprec.sensitivity.configs import (
    AdaptiveConfig,
    EstimatorConfig,
    FisherConfig,
    IsolationConfig,
)
from mixprec.sensitivity.fisher import FisherEstimator
from mixprec.sensitivity.isolation import IsolationEstimator
from mixprec.tasks import Batch
from mixprec.units import Unit, discover_units, select

CHEAP, EXACT = FisherConfig.name, IsolationConfig.name  # what adaptive is built from
MIN_PROBES = 3  # layers per scheme measured both ways, at least
SLOPE_POINTS = 6  # the slope is fitted with this many points beyond one per family; else 1
Cell = tuple[str, str]  # (layer, scheme)


def family(scheme: str) -> str:
    """The calibration group of a scheme: its weight format's family (int, mx, nv, ggml...),
    apart when it quantizes inputs too."""
    parsed = Scheme.parse(scheme)
    if parsed.weight is None:
        return "keep"
    return parsed.weight.family + ("+inputs" if parsed.activation is not None else "")


def probe_layers(layers: Sequence[str], scheme: str, share: float, seed: int) -> list[str]:
    """The seeded `share` of `layers` (at least MIN_PROBES) measured both ways under `scheme`;
    each scheme's probes depend only on the seed, the layer names and the scheme."""
    count = min(len(layers), max(MIN_PROBES, math.ceil(share * len(layers))))
    ranked = sorted(layers, key=lambda name: derive_seed(seed, "probe", scheme, name))
    return sorted(ranked[:count], key=list(layers).index)


@dataclass(frozen=True)
class Fit:
    """isolation ~ exp(offset) * fisher^slope, and how far (in log units, at the asked
    confidence) a new cell may lie from it."""

    offset: float
    slope: float
    margin: float
    points: int

    def predict(self, cheap: float) -> float:
        return 0.0 if cheap <= 0 else math.exp(self.offset + self.slope * math.log(cheap))

    def score(self, cheap: Score) -> Score:
        """A cheap score on the exact estimator's scale; the interval takes in both the cheap
        score's own interval and the calibration's spread."""
        mean = self.predict(cheap.mean)
        low = self.predict(cheap.ci_low) * math.exp(-self.margin)
        high = self.predict(cheap.ci_high) * math.exp(self.margin)
        return Score(mean, min(low, mean), max(high, mean), cheap.samples)


def fit_families(
    cheap: Mapping[Cell, float], exact: Mapping[Cell, float], confidence: float
) -> dict[str, Fit]:
    """log(exact) = offset[family] + slope * log(cheap), least squares over every cell measured
    both ways (both above zero), one slope and one residual spread for all families; the
    margin is the prediction interval's half-width at `confidence`. Key "": a family nothing
    of which was measured (the mean offset)."""
    groups, xs, ys = [], [], []
    for cell, value in exact.items():
        if cheap.get(cell, 0.0) > 0 and value > 0:
            groups.append(family(cell[1]))
            xs.append(math.log(cheap[cell]))
            ys.append(math.log(value))
    names = sorted(set(groups))
    if len(xs) < len(names) + 1:
        raise MixprecError(
            f"adaptive scoring needs more cells where both {CHEAP} and {EXACT} are above zero "
            f"than families of schemes ({len(names)}) to calibrate one against the other; it "
            f"has {len(xs)}"
        )
    x, y = np.array(xs), np.array(ys)
    member = np.array([[g == name for name in names] for g in groups], dtype=float)
    slope = 1.0
    if len(xs) >= len(names) + SLOPE_POINTS:
        centred = x - member @ np.linalg.lstsq(member, x, rcond=None)[0]
        if float(centred @ centred) > 0:
            slope = float(centred @ (y - member @ np.linalg.lstsq(member, y, rcond=None)[0]))
            slope /= float(centred @ centred)
    offsets = np.linalg.lstsq(member, y - slope * x, rcond=None)[0]
    residual = y - member @ offsets - slope * x
    dof = max(len(xs) - len(names) - (slope != 1.0), 1)
    sigma = math.sqrt(float(residual @ residual) / dof)
    quantile = float(stats.t.ppf(0.5 + confidence / 2, dof))
    fits = {}
    for j, name in enumerate(names):
        count = int(member[:, j].sum())
        margin = quantile * sigma * math.sqrt(1 + 1 / count)
        fits[name] = Fit(float(offsets[j]), slope, margin, count)
    spread = float(np.std(offsets)) if len(names) > 1 else 0.0
    unseen = quantile * math.sqrt(sigma**2 + spread**2)
    fits[""] = Fit(float(np.mean(offsets)), slope, unseen, len(xs))
    return fits


def fit_for(fits: Mapping[str, Fit], scheme: str) -> Fit:
    return fits.get(family(scheme), fits[""])


def layer_names(bundle: ModelBundle) -> list[str]:
    return [u.name for u in select(discover_units(bundle.model), "layer")]


def probe_cells(layers: Sequence[str], schemes: Iterable[str], config: AdaptiveConfig) -> set[Cell]:
    """Every scheme's probes (keep has none: it scores 0 both ways)."""
    return {
        (layer, scheme)
        for scheme in schemes
        if not Scheme.parse(scheme).is_keep
        for layer in probe_layers(layers, scheme, config.probes, config.seed)
    }


def with_budgets(
    entries: Iterable[str | Mapping[str, Any] | EstimatorConfig], budgets: Sequence[str] | None,
    **plans: Any,
) -> tuple[str | Mapping[str, Any] | EstimatorConfig, ...]:  # fmt: skip
    """Estimator entries with adaptive's budgets filled in where it names none, and `plans`
    (exclude, target: what the plans it decides for keep and run on) set; budgets given
    where no entry is adaptive are a mistake."""
    out: list[str | Mapping[str, Any] | EstimatorConfig] = []
    for entry in entries:
        config = estimator_config(entry)
        if isinstance(config, AdaptiveConfig):
            entry = replace(config, budgets=tuple(config.budgets or budgets or ()), **plans)
        out.append(entry)
    if budgets and not any(isinstance(e, AdaptiveConfig) for e in out):
        names = ",".join(estimator_config(e).name for e in out)
        raise MixprecError(f"budgets {','.join(budgets)} are what adaptive decides for, and the "
                           f"estimators ({names}) have no adaptive; add it")  # fmt: skip
    return tuple(out)


@register_estimator(AdaptiveConfig)
class AdaptiveEstimator(SensitivityEstimator):
    """One cell alone: isolation where the cell is a probe, else Fisher calibrated on the
    probes of the schemes expected (and this one) — what `analyze` gives before it refines."""

    shares_statistics = True
    config: AdaptiveConfig

    def __init__(self, config: AdaptiveConfig | None = None) -> None:
        super().__init__(config)
        self.cheap = FisherEstimator(FisherConfig(seed=self.seed))
        self.exact = IsolationEstimator(IsolationConfig(seed=self.seed))
        self._fits: dict[tuple[str, str, tuple[str, ...]], dict[str, Fit]] = {}

    def expect(self, schemes: Sequence[Scheme]) -> None:
        super().expect(schemes)
        self.cheap.expect(schemes)

    def per_batch(
        self,
        bundle: ModelBundle,
        unit: Unit,
        scheme: Scheme,
        batches: Sequence[Batch],
        calibration: str,
    ) -> list[float]:
        """The exact estimator's per-batch scores on a probe, else the calibrated cheap ones."""
        if scheme.is_keep:
            return [0.0] * len(batches)
        if (unit.name, str(scheme)) in self._probes(bundle, scheme):
            return self.exact.per_batch(bundle, unit, scheme, batches, calibration)
        fit = fit_for(self._fit(bundle, scheme, batches, calibration), str(scheme))
        cheap = self.cheap.per_batch(bundle, unit, scheme, batches, calibration)
        return [fit.predict(value) for value in cheap]

    def score(
        self,
        bundle: ModelBundle,
        unit: Unit,
        scheme: Scheme,
        batches: Sequence[Batch],
        calibration: str | None = None,
    ) -> Score:
        """A probe's isolation score, or the cheap score calibrated with its widened interval."""
        if scheme.is_keep or (unit.name, str(scheme)) in self._probes(bundle, scheme):
            return super().score(bundle, unit, scheme, batches, calibration)
        cheap = self.cheap.score(bundle, unit, scheme, batches, calibration)
        digest = calibration if calibration is not None else content_hash(batches)
        return fit_for(self._fit(bundle, scheme, batches, digest), str(scheme)).score(cheap)

    def _schemes(self, scheme: Scheme) -> tuple[str, ...]:
        return tuple(sorted({str(s) for s in (*self.expected, scheme) if not s.is_keep}))

    def _probes(self, bundle: ModelBundle, scheme: Scheme) -> set[Cell]:
        return probe_cells(layer_names(bundle), [str(scheme)], self.config)

    def _fit(
        self, bundle: ModelBundle, scheme: Scheme, batches: Sequence[Batch], calibration: str
    ) -> dict[str, Fit]:
        schemes = self._schemes(scheme)
        key = (bundle.fingerprint, calibration, schemes)
        if key not in self._fits:
            units = {u.name: u for u in select(discover_units(bundle.model), "layer")}
            cheap: dict[Cell, float] = {}
            exact: dict[Cell, float] = {}
            for layer, label in sorted(probe_cells(list(units), schemes, self.config)):
                parsed = Scheme.parse(label)
                for estimator, found in ((self.cheap, cheap), (self.exact, exact)):
                    found[layer, label] = estimator.score(
                        bundle, units[layer], parsed, batches, calibration
                    ).mean
            self._fits[key] = fit_families(cheap, exact, self.config.confidence)
        return self._fits[key]
