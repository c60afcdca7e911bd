"""The search strategies mixprec ships, registered by importing their modules, and the
lookup by name that the CLI, run configs and the dashboard use.

A strategy of your own registers itself with `@register_strategy(MyConfig)` and is then
found here by its config's name like the built-in ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mixprec.errors import one_of
from mixprec.registry import config_from
from mixprec.search.base import SearchStrategy, registered_strategies
from mixprec.search.configs import StrategyConfig


def strategies() -> dict[str, type[SearchStrategy]]:
    """Every registered strategy, by name in alphabetical order."""
    import mixprec.agents.sac
    import mixprec.search.greedy
    import mixprec.search.ilp
    import mixprec.search.optuna_search
    import mixprec.search.uniform  # noqa: F401 (importing registers them)

    return registered_strategies()


def strategy_config(
    entry: str | Mapping[str, Any] | StrategyConfig, options: Mapping[str, Any] | None = None
) -> StrategyConfig:
    """The config a method entry names (a name, a `{name = ..., setting = ...}` table or a
    config), with `options` filling the settings it leaves out; another strategy's options in
    the pool are left out, so one pool serves every method."""
    config: StrategyConfig = config_from("method", strategies(), entry, **(options or {}))
    return config


def strategy_for(config: StrategyConfig, **context: Any) -> SearchStrategy:
    """The strategy that runs `config`, given what the caller supplies (see SearchStrategy)."""
    registry = strategies()
    one_of("method", config.name, tuple(registry))
    return registry[config.name](config, **context)
