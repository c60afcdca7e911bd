"""Run configs: TOML parsing and one-line errors naming the key and what is valid."""

from __future__ import annotations

from pathlib import Path

import pytest

from mixprec.config import RunConfig, load_config, parse_config
from mixprec.errors import MixprecError

BASE = {"model": "digits-cnn", "output": "runs/digits"}


def test_defaults_and_canonical_spellings(tmp_path: Path) -> None:
    path = tmp_path / "study.toml"
    path.write_text(
        'model = "digits-cnn"\noutput = "runs/x"\nschemes = ["w:nvfp4, a:nvfp4", "w:int8"]\n'
        'budgets = ["4.50bits", "12MB"]\n'
    )
    config = load_config(path)
    assert config.schemes == ["w:nvfp4,a:nvfp4", "w:int8"]
    assert config.budgets == ["4.5bits", "12MB"]
    assert config.methods == ["ilp"] and config.exports == [
        "json",
        "compressed-tensors",
        "modelopt",
        "llamacpp",
        "gguf",
    ]
    assert config.name == "x" and config.estimator_for_search == "adaptive"


def test_toml_round_trip() -> None:
    import tomllib

    config = parse_config({**BASE, "methods": ["ilp", "optuna"], "calib_batches": 2})
    assert parse_config(tomllib.loads(config.to_toml())) == config


def test_strategy_and_estimator_settings_live_in_the_config() -> None:
    import tomllib

    from mixprec.search.configs import GreedyConfig, OptunaConfig
    from mixprec.sensitivity.configs import HessianConfig, IsolationConfig

    text = (
        'model = "digits-cnn"\noutput = "runs/x"\nseed = 4\n'
        'methods = ["greedy", {name = "optuna", trials = 20, sampler = "nsga2", seed = 9}]\n'
        'estimators = [{name = "hessian", max_probes = 64}, "isolation"]\n'
    )
    config = parse_config(tomllib.loads(text))
    assert config.strategy_configs() == [
        GreedyConfig(seed=4),
        OptunaConfig(trials=20, sampler="nsga2", seed=9),
    ]
    assert config.estimator_configs() == [
        HessianConfig(max_probes=64, seed=4),
        IsolationConfig(seed=4),
    ]
    assert config.estimator_names == ["hessian", "isolation"]
    assert parse_config(tomllib.loads(config.to_toml())) == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"model": "x"}, "missing key 'output'"),
        (
            {**BASE, "methods": [{"name": "optuna", "trails": 5}]},
            "key 'methods': unknown optuna setting 'trails'; valid: kappa, seed, sampler, trials",
        ),
        (
            {**BASE, "methods": [{"name": "optuna", "trials": 0}]},
            "key 'methods': optuna: trials 0 must be a finite number >= 1",
        ),
        (
            {**BASE, "methods": [{"name": "ilp", "solver": "gurobi"}]},
            "key 'methods': ilp: unknown solver 'gurobi'; valid: cbc, highs",
        ),
        (
            {**BASE, "methods": [{"name": "sac", "timesteps": "many"}]},
            "key 'methods': sac setting timesteps: Input should be a valid integer",
        ),
        ({**BASE, "methods": [{"trials": 5}]}, "key 'methods': a method table needs a name"),
        ({**BASE, "methods": ["ilp", {"name": "ilp"}]}, "'ilp' is listed twice; one entry"),
        (
            {**BASE, "estimators": [{"name": "isolation", "replay": "sometimes"}]},
            "key 'estimators': isolation setting replay: Input should be a valid boolean",
        ),
        ({**BASE, "budget": "4bits"}, "unknown key 'budget'; valid keys: model, output, schemes"),
        ({**BASE, "data": {"pth": "a.txt"}}, "key 'data': unknown setting 'pth'; settings: path"),
        ({**BASE, "data": {"field": "body"}}, "key 'data': needs a path; settings: path, field"),
        ({**BASE, "data": {"path": "a.txt", "seq_len": "long"}}, "key 'data': seq_len: Input"),
        ({**BASE, "data": {"path": "a.txt", "eval_samples": 0}}, "key 'data': --eval-samples 0"),
        ({**BASE, "methods": ["rl"]}, "key 'methods': unknown method 'rl'; valid: greedy, ilp"),
        (
            {**BASE, "estimators": ["taylor"]},
            "key 'estimators': unknown estimator 'taylor'; valid: adaptive, fisher, hessian, "
            "isolation",
        ),
        ({**BASE, "levels": ["row"]}, "key 'levels': unknown level 'row'; valid: layer, compo"),
        ({**BASE, "search_estimator": "taylor"}, "key 'search_estimator': unknown estimator"),
        ({**BASE, "schemes": ["w:int9"]}, "key 'schemes': bad scheme 'w:int9'"),
        ({**BASE, "budgets": ["lots"]}, "key 'budgets': bad budget 'lots'"),
        ({**BASE, "budgets": []}, "key 'budgets': needs at least one budget"),
        ({**BASE, "workers": -1}, "key 'workers': Input should be greater than or equal to 0"),
        ({**BASE, "exports": ["onnx"]}, "key 'exports': unknown export target 'onnx'; valid: j"),
        ({**BASE, "dtype": "half"}, "key 'dtype': unknown dtype 'half'; valid: auto, bf16, fp16"),
        ({**BASE, "device": "tpu:0"}, "key 'device': unknown device 'tpu:0'; valid: auto, cpu"),
        ({**BASE, "exclude": ["("]}, "key 'exclude': '(' is not a regular expression"),
        ({**BASE, "exclude": ["none", "x"]}, "key 'exclude': 'none' keeps nothing by default"),
        ({**BASE, "spaces": {"attn": []}}, "key 'spaces': 'attn' lists no scheme"),
        ({**BASE, "spaces": {"attn": ["w:int9"]}}, "key 'spaces': bad scheme 'w:int9'"),
        (
            {**BASE, "target": "vllm"},
            "key 'target': unknown target 'vllm'; valid: any, llamacpp, compressed-tensors",
        ),
    ],
)
def test_bad_configs_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(MixprecError, match=r"^study\.toml: ") as info:
        parse_config(data, "study.toml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_malformed_toml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('model = "digits-cnn\noutput = 3\n')
    with pytest.raises(MixprecError, match="is not valid TOML"):
        load_config(path)
    with pytest.raises(MixprecError, match="no config file at"):
        load_config(tmp_path / "absent.toml")


def test_search_estimator_must_have_been_scored() -> None:
    config = RunConfig.model_validate(
        {**BASE, "estimators": ["fisher"], "search_estimator": "isolation"}
    )
    with pytest.raises(MixprecError, match="'isolation' is not among the estimators scored"):
        _ = config.estimator_for_search


def test_every_example_config_is_valid() -> None:
    from pathlib import Path

    from mixprec.config import load_config

    examples = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.toml"))
    assert examples
    for path in examples:
        config = load_config(path)
        assert config.model and config.budgets, path


def test_the_readmes_study_config_is_valid() -> None:
    import re
    import tomllib

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "# study.toml" in b]
    assert len(blocks) == 1
    config = parse_config(tomllib.loads(blocks[0]), "README.md")
    assert [s.name for s in config.strategy_configs()] == ["ilp", "greedy", "optuna"]
    assert config.estimator_names == ["isolation", "hessian"]
