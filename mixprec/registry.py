"""One registry per concept for classes built from a frozen config: the class decorator that
files a class under its config's name, and a clash check (a second class under a taken name)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from mixprec.errors import MixprecError, first_problem, one_of

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


def config_from(kind: str, classes: Mapping[str, Any], entry: object, **defaults: Any) -> Any:
    """The config an entry names: a config object as is, a name with its defaults, or a table
    `{name = "optuna", trials = 20}` (a run config's way); `defaults` fill what a name or a
    table leaves out. Every mistake is one line naming the entry and what is valid."""
    if isinstance(entry, str):
        name, settings = entry, {}
    elif isinstance(entry, Mapping):
        settings = dict(entry)
        name = settings.pop("name", None)
        if not isinstance(name, str):
            raise MixprecError(
                f'a {kind} table needs a name, e.g. {{name = "{next(iter(classes))}"}}'
            )
    else:
        names = {cls.config_type for cls in classes.values()}
        if type(entry) in names:
            return entry
        raise MixprecError(
            f"a {kind} is a name, a table with a name or a config object, "
            f"not a {type(entry).__name__}"
        )
    one_of(kind, name, tuple(classes))
    config_type = classes[name].config_type
    valid = tuple(f.name for f in fields(config_type))
    for key in settings:
        one_of(f"{name} setting", key, valid)
    chosen = {**{k: v for k, v in defaults.items() if k in valid}, **settings}
    try:
        return TypeAdapter(config_type).validate_python(chosen)
    except ValidationError as err:  # a wrong type, or the config's own check
        key, message = first_problem(err)
        raise MixprecError(f"{name}{f' setting {key}' if key else ''}: {message}") from None
