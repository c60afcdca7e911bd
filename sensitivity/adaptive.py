"""Adaptive scoring: the cheap estimator (Fisher) everywhere, calibrated against the exact one
(isolation) per scheme family, so a cell isolation never measured still has a score on
isolation's scale and an interval that includes the calibration's own uncertainty.

Both are second-order in the weight error (isolation's KL is about half the full Fisher form,
Fisher's score its diagonal), so log(isolation) = offset + slope * log(fisher) fits well; the
offset is a family's plus a layer's (on MiniLM the layer's accounts for nearly all of the
spread: residual 0.55 in log units with family offsets only, 0.10 with both), the slope takes
up what grows faster than second order at few bits. Every layer is probed once for its own
offset, every scheme on a few layers for its family's.
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
SLOPE_POINTS = 6  # the slope is fitted with this many points beyond one per family; else 1
MIN_PROBED_LAYERS = 2  # under every scheme, where one probe per layer would pass the cap
Cell = tuple[str, str]  # (layer, scheme)


def family(scheme: str) -> str:
    """The calibration group of a scheme: its weight format's family (int, mx, nv, ggml...),
    apart when it quantizes inputs too."""
    parsed = Scheme.parse(scheme)
    if parsed.weight is None:
        return "keep"
    return parsed.weight.family + ("+inputs" if parsed.activation is not None else "")


def probe_layers(layers: Sequence[str], scheme: str, share: float, seed: int) -> list[str]:
    """The seeded `share` of `layers` measured both ways under `scheme` besides each layer's
    own probe; they depend only on the seed, the layer names and the scheme."""
    count = min(len(layers), math.ceil(share * len(layers)))
    ranked = sorted(layers, key=lambda name: derive_seed(seed, "probe", scheme, name))
    return sorted(ranked[:count], key=list(layers).index)


@dataclass(frozen=True)
class Calibration:
    """log(exact) = family offset + layer offset + slope * log(cheap), least squares over every
    cell measured both ways: how far a layer's output error carries to the model's output
    beyond what the loss's gradient sees is the layer's own, the format's effect is the
    family's. `margin`: the prediction interval's half-width at the fit's confidence."""

    families: tuple[str, ...]
    layers: tuple[str, ...]
    coefficients: np.ndarray  # [families + layers]: offsets
    slope: float
    inverse: np.ndarray  # pseudo-inverse of the design's Gram matrix, for each prediction's spread
    sigma: float  # residual standard deviation, log units
    spread: float  # of the offsets of layers, for a layer nothing of which was measured
    quantile: float  # Student's t at the confidence asked

    def _row(self, modules: Sequence[str], scheme: str) -> tuple[np.ndarray, float]:
        """The design row of a unit (its layers' offsets averaged) and any extra variance."""
        row = np.zeros(len(self.families) + len(self.layers))
        name = family(scheme)
        extra = 0.0
        if name in self.families:
            row[self.families.index(name)] = 1.0
        else:  # an unmeasured family: the mean of the others, and their spread
            row[: len(self.families)] = 1 / len(self.families)
            extra += float(np.var(self.coefficients[: len(self.families)]))
        for module in modules:
            if module in self.layers:
                row[len(self.families) + self.layers.index(module)] += 1 / len(modules)
            elif self.layers:
                row[len(self.families) :] += 1 / len(modules) / len(self.layers)
                extra += self.spread**2 / len(modules)
        return row, extra

    def predict(self, modules: Sequence[str], scheme: str, cheap: float) -> float:
        """A cheap score of a unit (its layers) on the exact estimator's scale."""
        if cheap <= 0:
            return 0.0
        row, _ = self._row(modules, scheme)
        return math.exp(float(row @ self.coefficients) + self.slope * math.log(cheap))

    def score(self, modules: Sequence[str], scheme: str, cheap: Score) -> Score:
        """`predict` of a cheap score, with the interval in which the exact estimator would
        put it on the same data (the fit's residuals already hold how the cheap score's own
        sampling differs from the exact one's, so its interval is not added again)."""
        row, extra = self._row(modules, scheme)
        leverage = float(row @ self.inverse @ row)
        margin = self.quantile * math.sqrt(self.sigma**2 * (1 + leverage) + extra)
        mean = self.predict(modules, scheme, cheap.mean)
        return Score(mean, mean * math.exp(-margin), mean * math.exp(margin), cheap.samples)


def calibrate(
    cheap: Mapping[Cell, float], exact: Mapping[Cell, float], confidence: float
) -> Calibration:
    """The fit of `exact` on `cheap` over the (layer, scheme) cells both hold above zero."""
    cells = [c for c, v in exact.items() if v > 0 and cheap.get(c, 0.0) > 0]
    families = tuple(sorted({family(s) for _, s in cells}))
    for layers in (tuple(sorted({layer for layer, _ in cells})), ()):  # without: too few cells
        design = np.zeros((len(cells), len(families) + len(layers)))
        for n, (layer, scheme) in enumerate(cells):
            design[n, families.index(family(scheme))] = 1.0
            if layers:
                design[n, len(families) + layers.index(layer)] = 1.0
        rank = int(np.linalg.matrix_rank(design)) if cells else 0
        if len(cells) > rank:
            break
    if len(cells) <= rank:
        raise MixprecError(
            f"adaptive scoring needs more cells where both {CHEAP} and {EXACT} are above zero "
            f"than the offsets it fits ({rank}) to calibrate one against the other; it has "
            f"{len(cells)}"
        )
    x = np.array([math.log(cheap[c]) for c in cells])
    y = np.array([math.log(exact[c]) for c in cells])
    slope = 1.0
    if len(cells) >= rank + SLOPE_POINTS:
        centred = x - design @ np.linalg.lstsq(design, x, rcond=None)[0]
        if float(centred @ centred) > 1e-12:
            along = y - design @ np.linalg.lstsq(design, y, rcond=None)[0]
            slope = float(centred @ along / (centred @ centred))
    coefficients = np.linalg.lstsq(design, y - slope * x, rcond=None)[0]
    residual = y - slope * x - design @ coefficients
    dof = max(len(cells) - rank - (slope != 1.0), 1)
    sigma = math.sqrt(float(residual @ residual) / dof)
    spread = float(np.std(coefficients[len(families) :])) if layers else 0.0  # else in sigma
    quantile = float(stats.t.ppf(0.5 + confidence / 2, dof))
    inverse = np.linalg.pinv(design.T @ design)
    return Calibration(families, layers, coefficients, slope, inverse, sigma, spread, quantile)


def isolation_cap(layers: Sequence[str], schemes: Iterable[str], config: AdaptiveConfig) -> int:
    """The most isolation cells adaptive measures, probes included: `max_share` of the layer cells
    (keep scores 0 both ways and is no cell)."""
    quantized = [s for s in schemes if not Scheme.parse(s).is_keep]
    return math.floor(config.max_share * len(layers) * len(quantized))


def probe_cells(layers: Sequence[str], schemes: Iterable[str], config: AdaptiveConfig) -> set[Cell]:
    """One scheme for every layer (its own offset; the schemes in turn over the layers in a
    seeded order, so every family is seen) and each scheme's extra `probes` share (keep has
    none: it scores 0 both ways). Where those pass the isolation cap (few schemes: a probe per
    layer is a large share of the cells), half the cap goes to a seeded few layers under every
    scheme, at least MIN_PROBED_LAYERS: their offsets' spread stands for the other layers'."""
    chosen = sorted(s for s in schemes if not Scheme.parse(s).is_keep)
    cells = _per_layer_probes(layers, chosen, config)
    cap = isolation_cap(layers, chosen, config)
    if len(cells) <= cap or not chosen:
        return cells
    count = max(MIN_PROBED_LAYERS, cap // (2 * len(chosen)))
    ranked = sorted(layers, key=lambda name: derive_seed(config.seed, "whole probe", name))
    return {(layer, scheme) for layer in ranked[:count] for scheme in chosen}


def _per_layer_probes(
    layers: Sequence[str], chosen: list[str], config: AdaptiveConfig
) -> set[Cell]:
    cells = {
        (layer, scheme)
        for scheme in chosen
        for layer in probe_layers(layers, scheme, config.probes, config.seed)
    }
    shuffled = sorted(layers, key=lambda name: derive_seed(config.seed, "layer probe", name))
    for n, layer in enumerate(shuffled if chosen else ()):  # schemes in turn: each gets its share
        cells.add((layer, chosen[n % len(chosen)]))
    return cells


def layer_names(bundle: ModelBundle) -> list[str]:
    return [u.name for u in select(discover_units(bundle.model), "layer")]


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
        self._fits: dict[tuple[str, str, tuple[str, ...]], Calibration] = {}

    def expect(self, schemes: Sequence[Scheme]) -> None:
        super().expect(schemes)
        self.cheap.expect(schemes)

    def per_sample(
        self,
        bundle: ModelBundle,
        unit: Unit,
        scheme: Scheme,
        batches: Sequence[Batch],
        calibration: str,
    ) -> list[float]:
        """The exact estimator's per-sample scores on a probe, else the calibrated cheap ones."""
        if scheme.is_keep:
            return [0.0] * sum(bundle.task.samples(batch) for batch in batches)
        if (unit.name, str(scheme)) in self._probes(bundle, scheme):
            return self.exact.per_sample(bundle, unit, scheme, batches, calibration)
        fit = self._fit(bundle, scheme, batches, calibration)
        cheap = self.cheap.per_sample(bundle, unit, scheme, batches, calibration)
        return [fit.predict(unit.modules, str(scheme), value) for value in cheap]

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
        return self._fit(bundle, scheme, batches, digest).score(unit.modules, str(scheme), cheap)

    def _schemes(self, scheme: Scheme) -> tuple[str, ...]:
        return tuple(sorted({str(s) for s in (*self.expected, scheme) if not s.is_keep}))

    def _probes(self, bundle: ModelBundle, scheme: Scheme) -> set[Cell]:
        return probe_cells(layer_names(bundle), self._schemes(scheme), self.config)

    def _fit(
        self, bundle: ModelBundle, scheme: Scheme, batches: Sequence[Batch], calibration: str
    ) -> Calibration:
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
            self._fits[key] = calibrate(cheap, exact, self.config.confidence)
        return self._fits[key]
