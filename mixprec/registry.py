"""One registry per concept for classes built from a frozen config: the class decorator that
files a class under its config's name, and a clash check (a second class under a taken name)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from mixprec.errors import MixprecError

C = TypeVar("C", bound=type)


class ConfigRegistry:
    """Classes by their config's `name`; each registered class learns its `name` and
    `config_type`. `kind` names the concept in errors ("strategy", "estimator")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, Any] = {}

    def register(self, config_type: Any) -> Callable[[C], C]:
        def register(cls: C) -> C:
            name = config_type.name
            if name in self._classes and self._classes[name] is not cls:
                article = "an" if self.kind[0] in "aeiou" else "a"
                raise MixprecError(f"{article} {self.kind} named {name!r} is registered already")
            cls.name, cls.config_type = name, config_type  # type: ignore[attr-defined]
            self._classes[name] = cls
            return cls

        return register

    def classes(self) -> dict[str, Any]:
        """Every class registered so far, by name in alphabetical order."""
        return dict(sorted(self._classes.items()))

    def forget(self, name: str) -> None:
        """Drop a registration (a test's own class, once the test is done)."""
        self._classes.pop(name, None)
