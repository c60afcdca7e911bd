"""What each search strategy is asked to do: one frozen, validated config per strategy.

A config holds the strategy's own settings only; the problem (scores and costs), the budget
and what the caller supplies (the model, a work folder) come apart. `name` and `VERSION` go
into every plan's provenance, so a changed strategy is told apart from an old one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from mixprec.errors import MixprecError, at_least, one_of

SOLVERS = ("cbc", "highs")
SAMPLERS = ("tpe", "nsga2")
GRANULARITIES = ("auto", "unit", "block")
OBJECTIVES = ("predicted", "measured")


@dataclass(frozen=True, kw_only=True)
class StrategyConfig:
    """Settings every strategy shares: `kappa` adds kappa x the CI half-width to each score
    (a robust plan); `seed` fixes stochastic strategies."""

    name: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    # Solves a budget in well under a second, so `mixprec pareto` may sweep many budgets with it.
    FAST: ClassVar[bool] = False
    kappa: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        at_least("kappa", self.kappa, 0)

    @property
    def needs_model(self) -> bool:
        """True where plans are judged by measuring the model (the caller must give it)."""
        return getattr(self, "objective", "predicted") == "measured"

    def provenance(self) -> dict[str, Any]:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}
        return {"strategy": self.name, "strategy_version": self.VERSION, **settings}


@dataclass(frozen=True, kw_only=True)
class ILPConfig(StrategyConfig):
    """The optimal plan under the additive model, solved exactly (`time_limit` in seconds);
    `interactions`: with the problem's measured pairwise terms (sensitivity/pairs.py); `fill`:
    the most of the byte budget a plan may leave unused where the best plan that full scores
    at most `fill_cost` (a share of the optimum's score) worse: a fuller plan predicted worse
    than that is not worth its bytes (1 lets the scores alone decide)."""

    name: ClassVar[str] = "ilp"
    VERSION: ClassVar[int] = 3  # 2: fills the budget to within `fill`; 3: at most `fill_cost`
    FAST: ClassVar[bool] = True
    solver: str = "cbc"
    time_limit: float | None = None
    interactions: bool = False
    fill: float = 0.005
    fill_cost: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of("solver", self.solver, SOLVERS)
        if not 0 <= self.fill <= 1:
            raise MixprecError(f"fill {self.fill} must be a share of the budget in [0, 1]")
        at_least("fill_cost", self.fill_cost, 0)
        if self.time_limit is not None:
            at_least("time_limit", self.time_limit, 0)


@dataclass(frozen=True, kw_only=True)
class GreedyConfig(StrategyConfig):
    """Upgrade the unit that saves the most score per extra byte (a baseline)."""

    name: ClassVar[str] = "greedy"
    FAST: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class UniformConfig(StrategyConfig):
    """One scheme for every unit: what a single-format quantizer gives (the reference)."""

    name: ClassVar[str] = "uniform"
    FAST: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True)
class OptunaConfig(StrategyConfig):
    """Black-box search with Optuna (TPE or NSGA-II) over units, or blocks of them."""

    name: ClassVar[str] = "optuna"
    sampler: str = "tpe"
    trials: int = 50
    objective: str = "predicted"
    granularity: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of("sampler", self.sampler, SAMPLERS)
        one_of("objective", self.objective, OBJECTIVES)
        one_of("granularity", self.granularity, GRANULARITIES)
        at_least("trials", self.trials, 1)


@dataclass(frozen=True, kw_only=True)
class SACConfig(StrategyConfig):
    """A soft actor-critic agent trained on the problem (or started from `policy`)."""

    name: ClassVar[str] = "sac"
    VERSION: ClassVar[int] = 2  # also the policy file layout: older policies are refused
    timesteps: int = 3000
    objective: str = "predicted"
    policy: Path | None = None
    learning_rate: float = 3e-3
    gradient_steps: int = 2
    gamma: float = 0.9
    hidden: int = 64
    checkpoint_every: int = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        one_of("objective", self.objective, OBJECTIVES)
        at_least("timesteps", self.timesteps, 0)
        for option in ("gradient_steps", "hidden", "checkpoint_every"):
            at_least(option, getattr(self, option), 1)
        at_least("learning_rate", self.learning_rate, 0)
        if not 0 <= self.gamma <= 1:
            raise MixprecError(f"gamma {self.gamma} must be within [0, 1]")


def builtin_strategies() -> tuple[type[StrategyConfig], ...]:
    """The configs of the strategies mixprec ships (for help texts that must not import them)."""
    return tuple(StrategyConfig.__subclasses__())


def spoken_list(names: tuple[str, ...] | list[str]) -> str:
    """`a, b or c`: a list of valid values for a help text."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
