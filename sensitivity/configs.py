"""What each sensitivity estimator is built from: one frozen, validated config per estimator.

`name` and `VERSION` (bumped whenever an estimator's numbers change) are part of every cached
cell's key together with the settings, so a changed estimator never reuses an old score.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

from mixprec.errors import MixprecError, at_least


@dataclass(frozen=True, kw_only=True)
class EstimatorConfig:
    """Settings every estimator shares: `seed` fixes its probes and bootstrap intervals."""

    name: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    seed: int = 0

    def cache_params(self) -> dict[str, object]:
        """Everything besides the seed that decides a score (the seed is keyed on its own)."""
        settings = {k: v for k, v in asdict(self).items() if k != "seed"}
        return {"version": self.VERSION, **settings}


@dataclass(frozen=True, kw_only=True)
class HessianConfig(EstimatorConfig):
    """Hutchinson trace of the task loss's Hessian per layer and sample: rounds of one probe
    per sample are added from `min_probes` until the probes' standard error of each trace is
    under `tolerance` of it, at most `max_probes` rounds."""

    name: ClassVar[str] = "hessian"
    VERSION: ClassVar[int] = 3  # 3: a trace per sample with its own probes (2: per batch)
    tolerance: float = 0.1
    min_probes: int = 2
    max_probes: int = 16

    def __post_init__(self) -> None:
        at_least("tolerance", self.tolerance, 0)
        at_least("min_probes", self.min_probes, 1)
        at_least("max_probes", self.max_probes, self.min_probes)


@dataclass(frozen=True, kw_only=True)
class FisherConfig(EstimatorConfig):
    """Empirical Fisher diagonal of the task loss, weighted by each weight's squared error."""

    name: ClassVar[str] = "fisher"
    VERSION: ClassVar[int] = 2  # 2: a score per sample (1: per batch)


COMPUTE = ("float32", "stored")  # what isolation computes a 16-bit model in


@dataclass(frozen=True, kw_only=True)
class IsolationConfig(EstimatorConfig):
    """Distance of the model's output to FP32 with one unit quantized; `replay` feeds the
    unit's block its FP32 inputs so the errors of earlier blocks do not mix in. `compute`:
    "float32" runs a 16-bit model on a float32 copy of its weights (at the stored width any
    change to one weight re-rounds everything after it: on SmolLM2 in bf16 that floor, a KL of
    about 0.002, is above INT8's whole effect), "stored" at the model's own dtype (no copy)."""

    name: ClassVar[str] = "isolation"
    VERSION: ClassVar[int] = 4  # 4: 16-bit models computed in float32; 3: a score per sample
    replay: bool = True
    compute: str = "float32"

    def __post_init__(self) -> None:
        if self.compute not in COMPUTE:
            raise MixprecError(f"compute {self.compute!r} is unknown; valid: {', '.join(COMPUTE)}")


@dataclass(frozen=True, kw_only=True)
class AdaptiveConfig(EstimatorConfig):
    """Fisher for every cell, calibrated against isolation on one seeded scheme per layer and
    a `probes` share of layers per scheme, then isolation only where a cell's interval
    straddles the ILP's decision at `budgets` (plans that keep `exclude` for `target`) until
    the expected regret left is under `tolerance` of the plan's score, at most `cell_limit`
    isolation cells, at most `round_cells` a round (the rest re-ranked after a refit);
    intervals are at `confidence`. Isolation never covers more than `max_share` of the layer
    cells, probes included: where one probe per layer would not fit, a seeded few layers are
    probed under every scheme instead."""

    name: ClassVar[str] = "adaptive"
    # 3: isolation capped at `max_share` of the cells; 4: tolerance 0.01 (was 0.1): on MiniLM
    # the plans then sum to within 0.9% of isolation's best on its own scores (0.1: 2.8%)
    VERSION: ClassVar[int] = 4
    budgets: tuple[str, ...] = ()
    probes: float = 0.05
    max_share: float = 0.2
    cell_limit: int | None = None
    rounds: int = 8
    round_cells: int | None = None
    confidence: float = 0.95
    tolerance: float = 0.01
    exclude: tuple[str, ...] = ("default",)
    target: str = "any"

    def __post_init__(self) -> None:
        from mixprec.search.cost import Budget

        budgets = tuple(str(Budget.parse(b)) for b in self.budgets)  # a TOML list is a list
        object.__setattr__(self, "budgets", budgets)
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if not 0 <= self.probes <= 1:
            raise MixprecError(f"probes {self.probes} must be a share of layers in [0, 1]")
        if not 0 < self.max_share <= 1:
            raise MixprecError(f"max_share {self.max_share} must be a share of cells in (0, 1]")
        if self.cell_limit is not None:
            at_least("cell_limit", self.cell_limit, 1)
        at_least("rounds", self.rounds, 1)
        if self.round_cells is not None:
            at_least("round_cells", self.round_cells, 1)
        at_least("tolerance", self.tolerance, 0)
        if not 0 < self.confidence < 1:
            raise MixprecError(f"confidence {self.confidence} must lie strictly between 0 and 1")


# What is scored when nobody says: every built-in estimator, in this order.
DEFAULT_ESTIMATORS: tuple[str, ...] = tuple(
    config.name for config in (HessianConfig, FisherConfig, IsolationConfig)
)

# What `mixprec run` scores when nobody says: it knows the budgets adaptive decides for.
RUN_ESTIMATORS: tuple[str, ...] = (AdaptiveConfig.name,)
