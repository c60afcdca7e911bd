"""The TOML run config behind `mixprec run` and `mixprec submit`, validated by pydantic.

Every error is one line naming the key, what was wrong and what is valid. Relative paths are
relative to the directory `mixprec run` is started in.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from mixprec.errors import MixprecError, first_problem, one_of


class RunConfig(BaseModel):
    """One study: which model, what to score, which budgets and methods, where results go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="minilm, digits-cnn, tiny-gpt, hf:DIR or module:PKG:FACTORY")
    output: Path = Field(description="the run folder, e.g. runs/digits")
    schemes: list[str] | Literal["default"] = "default"
    estimators: list[str | dict[str, Any]] = Field(
        default_factory=lambda: _entries(_registered("run estimator")),
        description="names or tables: ['fisher', {name = 'hessian', max_probes = 64}]; "
        "adaptive (the default) decides for the run's budgets",
    )
    levels: list[str] = Field(default_factory=lambda: list(_registered("level")))
    calib_batches: int | None = Field(default=None, ge=1)
    data: dict[str, Any] | None = Field(
        default=None,
        description="your own text for an hf: model: {path = 'notes.jsonl', field = 'text', "
        "seq_len = 512, calib_samples = 16, eval_samples = 16}",
    )
    dtype: str = Field(default="auto", description="auto (the checkpoint's), bf16, fp16, fp32")
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    budgets: list[str] = ["4.5bits", "6bits", "8bits"]
    methods: list[str | dict[str, Any]] = Field(
        default=["ilp"], description="names or tables: ['ilp', {name = 'optuna', trials = 200}]"
    )
    search_estimator: str | None = None
    exclude: list[str] = Field(
        default=["default"],
        description="layers kept as stored (regexes); 'default' is the LM head, 'none' nothing",
    )
    spaces: dict[str, list[str]] = Field(
        default_factory=dict, description="{regex = [schemes]}: what matching layers may take"
    )
    target: str = Field(
        default="any",
        description="the runtime plans are for: any, llamacpp, compressed-tensors, modelopt",
    )
    evaluate: bool = True
    runtime: str = Field(default="torch", description="where plans are measured: torch "
                         "(mixprec's kernels), llamacpp (their GGUF in llama.cpp) or transformers "
                         "(their compressed-tensors checkpoint)")  # fmt: skip
    llamacpp_bin: str | None = Field(default=None, description="your llama.cpp build/bin")
    imatrix: Path | None = Field(
        default=None,
        description="llama.cpp's importance matrix (llama-imatrix's output): scoring, search, "
        "evaluation and the llama.cpp exports quantize the llama.cpp types with it",
    )
    exports: list[str] = Field(default_factory=lambda: list(_registered("export target")))
    workers: int | None = Field(
        default=None, ge=0, description="Ray workers; 0 serial; unset: serial, or the cluster's"
    )
    gpus_per_worker: float = Field(default=0.0, ge=0, description="GPUs per Ray worker")
    address: str | None = None
    seed: int = 0

    @field_validator("schemes")
    @classmethod
    def _schemes_parse(cls, value: list[str] | str) -> list[str] | str:
        from mixprec.scheme import Scheme

        if isinstance(value, list):
            if not value:
                raise ValueError("needs at least one scheme, e.g. ['w:mxfp4', 'w:int8']")
            return [_parsed(Scheme.parse, s) for s in value]
        return value

    @field_validator("budgets")
    @classmethod
    def _budgets_parse(cls, value: list[str]) -> list[str]:
        from mixprec.search.cost import Budget

        if not value:
            raise ValueError("needs at least one budget, e.g. ['4.5bits', '12MB', '0.3x']")
        return [_parsed(Budget.parse, b) for b in value]

    @field_validator("data")
    @classmethod
    def _data_table(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        from pydantic import TypeAdapter

        from mixprec.tensordata import TensorData, is_tensor_file
        from mixprec.textdata import TextData

        kind = TensorData if is_tensor_file(str(value.get("path", ""))) else TextData
        settings = [f for f in kind.__dataclass_fields__ if f != "seed"]
        unknown = [k for k in value if k not in settings]
        if unknown or "path" not in value:
            problem = f"unknown setting {unknown[0]!r}" if unknown else "needs a path"
            raise ValueError(f"{problem}; settings: {', '.join(settings)}")
        try:
            TypeAdapter(kind).validate_python(value)
        except ValidationError as err:
            key, message = first_problem(err)
            raise ValueError(f"{key}: {message}" if key else message) from None
        return value

    @field_validator("exclude")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        import re

        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ValueError(f"{pattern!r} is not a regular expression: {err}") from None
        if "none" in value and len(value) > 1:
            raise ValueError("'none' keeps nothing by default: give it alone")
        return value

    @field_validator("target", "runtime")
    @classmethod
    def _one_of(cls, value: str, info: ValidationInfo) -> str:
        from mixprec.runtimes import RUNTIMES
        from mixprec.search.targets import TARGETS

        valid = {"target": TARGETS, "runtime": RUNTIMES}[str(info.field_name)]
        if value not in valid:
            raise ValueError(f"unknown {info.field_name} {value!r}; valid: {', '.join(valid)}")
        return value

    @field_validator("spaces")
    @classmethod
    def _spaces(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        from mixprec.scheme import KEEP, Scheme

        for pattern, schemes in value.items():
            if not schemes:
                raise ValueError(f"{pattern!r} lists no scheme")
            value[pattern] = [s if s == KEEP else _parsed(Scheme.parse, s) for s in schemes]
        return value

    @field_validator("dtype", "device")
    @classmethod
    def _placement(cls, value: str, info: ValidationInfo) -> str:
        from mixprec.placement import Placement

        try:
            Placement(**{str(info.field_name): value})
        except MixprecError as err:
            raise ValueError(str(err).replace("--", "", 1)) from None
        return value

    def text_data(self) -> Any:
        """The `data` table as a TextData (a TensorData for a .safetensors / .npy file) seeded
        with the run's seed (None: built-in data)."""
        from mixprec.tensordata import data_from_json

        return None if self.data is None else data_from_json({**self.data, "seed": self.seed})

    @field_validator("levels", "exports", "search_estimator")
    @classmethod
    def _registered_names(
        cls, value: list[str] | str | None, info: ValidationInfo
    ) -> list[str] | str | None:
        if value is None:
            return value
        if not value and info.field_name == "levels":
            raise ValueError("needs at least one entry")
        kind = _KINDS[str(info.field_name)]
        for name in [value] if isinstance(value, str) else value:
            _parsed(lambda text: one_of(kind, text, _registered(kind)), name)
        return value

    @field_validator("estimators", "methods")
    @classmethod
    def _config_entries(
        cls, value: list[str | dict[str, Any]], info: ValidationInfo
    ) -> list[str | dict[str, Any]]:
        """Each entry is a registered name or a table with one (a union told apart by
        `name`, generated from the registry); each name once."""
        if not value:
            raise ValueError("needs at least one entry")
        names = [_entry_config(str(info.field_name), entry).name for entry in value]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"{name!r} is listed twice; one entry per name")
        return value

    @property
    def name(self) -> str:
        return self.output.name

    def estimator_configs(self) -> list[Any]:
        """The estimators as EstimatorConfigs (scoring seeds each with the run's `seed`)."""
        return [_entry_config("estimators", e, self.seed) for e in self.estimators]

    def strategy_configs(self) -> list[Any]:
        """The methods as StrategyConfigs, seeded with `seed` unless an entry sets one."""
        return [_entry_config("methods", m, self.seed) for m in self.methods]

    @property
    def estimator_names(self) -> list[str]:
        return [config.name for config in self.estimator_configs()]

    @property
    def estimator_for_search(self) -> str:
        """The scores the allocators use: as asked, else adaptive or isolation when scored, else
        the first."""
        if self.search_estimator is not None:
            if self.search_estimator not in self.estimator_names:
                raise MixprecError(
                    f"search_estimator {self.search_estimator!r} is not among the estimators "
                    f"scored ({', '.join(self.estimator_names)})"
                )
            return self.search_estimator
        names = self.estimator_names
        return next((n for n in ("adaptive", "isolation") if n in names), names[0])

    def to_toml(self) -> str:
        """The config as TOML (what `mixprec submit` ships to the cluster)."""
        lines = []
        for key, value in self.model_dump(mode="json").items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


_KINDS = {"search_estimator": "estimator", "levels": "level", "exports": "export target"}


def _entry_config(field: str, entry: str | dict[str, Any], seed: int = 0) -> Any:
    """The config object of an `estimators` or `methods` entry (registries imported on use)."""
    try:
        if field == "estimators":
            from mixprec.sensitivity.base import estimator_config

            return estimator_config(entry, seed)
        from mixprec.strategies import strategy_config

        return strategy_config(entry, {"seed": seed})
    except MixprecError as err:
        raise ValueError(str(err)) from None


def _registered(kind: str) -> tuple[str, ...]:
    """The valid names of one kind, from the one place each is defined (imported on use)."""
    if kind == "estimator":
        from mixprec.sensitivity.base import estimators

        return tuple(estimators())
    if kind == "run estimator":
        from mixprec.sensitivity.configs import RUN_ESTIMATORS

        return RUN_ESTIMATORS
    if kind == "level":
        from mixprec.units import LEVELS

        return LEVELS
    from mixprec.store import EXPORT_SUFFIX

    return tuple(EXPORT_SUFFIX)


def _entries(names: tuple[str, ...]) -> list[str | dict[str, Any]]:
    return list(names)


def _parsed(parse: Callable[[str], object], text: str) -> str:
    """Canonical spelling, with a parse error turned into pydantic's ValueError."""
    try:
        return str(parse(text))
    except MixprecError as err:
        raise ValueError(str(err)) from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table; TOML has no null, so None is left out
        pairs = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(pairs) + "}"
    # JSON's escapes are TOML's (\n, \", \uXXXX); TOML also forbids a bare DEL
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key, ensure_ascii=False)


def parse_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a parsed TOML table; the first problem becomes a one-line MixprecError."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise MixprecError(f"{source}: {_describe(err)}") from None


def load_config(path: Path) -> RunConfig:
    if not path.is_file():
        raise MixprecError(f"no config file at {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise MixprecError(f"{path} is not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise MixprecError(f"{path} is not UTF-8 text") from None
    return parse_config(data, str(path))


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    key, message = first_problem(err)
    key = key or "top level"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    valid_keys = ", ".join(RunConfig.model_fields)
    if first["type"] == "extra_forbidden":
        return f"unknown key {key!r}; valid keys: {valid_keys}{more}"
    if first["type"] == "missing":
        return f"missing key {key!r} (required: model, output){more}"
    return f"key {key!r}: {message}{more}"
