"""From `mixprec analyze` to search, pareto, evaluate --plan and export, through the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from mixprec.cli import main
from mixprec.plan import PrecisionPlan

SCHEMES = "w:int8,w:int4_g128,w:mxfp4,w:int2"


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("run") / "digits"
    with pytest.raises(SystemExit) as exit_info:
        main(["analyze", "-m", "digits-cnn", "--schemes", SCHEMES, "--estimators",
              "isolation,fisher", "--levels", "layer", "--calib-batches", "2",
              "--out", str(folder)])  # fmt: skip
    assert exit_info.value.code in (0, None)
    return folder


@pytest.mark.parametrize("method", ["ilp", "greedy", "optuna", "sac"])
def test_search_writes_a_plan_within_budget(
    scored: Path, tmp_path: Path, method: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    argv = ["search", str(scored), "--budget", "5bits", "--method", method, "--out", str(out)]
    sac = ["--timesteps", "60", "--objective", "measured"] if method == "sac" else []
    code, text, _ = run([*argv, "--trials", "5", *sac], capsys)
    assert code == 0, text
    plan = PrecisionPlan.load(out)
    assert plan.predicted["bits_per_weight"] <= 5
    made = plan.provenance["strategy"]  # or a uniform plan that measured better (the guard)
    assert made == method or f"than the {method} plan" in plan.provenance["note"], made
    digest = hashlib.sha256((scored / "scores.parquet").read_bytes()).hexdigest()
    assert plan.provenance["table_sha256"] == digest
    assert 0 < plan.measured["accuracy"] <= 1  # measured on the evaluation split
    code, text, _ = run(["evaluate", "--plan", str(out), "--json"], capsys)
    evaluation = json.loads(text)
    assert evaluation["metrics"]["accuracy"] == plan.measured["accuracy"]
    assert evaluation["bits_per_weight"] == pytest.approx(plan.predicted["bits_per_weight"])
    if method == "optuna":
        assert (scored / "optuna.sqlite3").is_file()
    if method == "sac":  # policy, logs and a checkpoint a longer training would resume
        assert (scored / "sac" / "sac_policy.pt").is_file()
        assert len(list((scored / "sac" / "checkpoints").glob("*.pt"))) == 1
        assert made != "sac" or plan.provenance["objective"] == "measured"


def test_fisher_scores_and_a_size_budget(
    scored: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    argv = ["search", str(scored), "--budget", "0.3x", "--estimator", "fisher", "--out", str(out)]
    code, text, _ = run([*argv, "--solver", "highs", "--kappa", "1", "--no-measure"], capsys)
    assert code == 0, text
    plan = PrecisionPlan.load(out)  # not measured: so never swapped for a uniform plan
    assert plan.predicted["bits_per_weight"] <= 0.3 * 16 and not plan.measured
    assert plan.provenance["estimator"] == "fisher" and plan.provenance["solver"] == "highs"


def test_pareto_frontier(scored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["pareto", str(scored), "--budgets", "4bits,8bits", "--method", "uniform"]
    code, _, err = run(argv, capsys)
    assert code == 0, err  # a uniform sweep: the best single scheme at each budget
    uniform = pd.read_parquet(scored / "pareto.parquet")
    assert uniform["status"].tolist() == ["ok", "ok"]
    for document in uniform["plan"]:
        assert len(set(json.loads(document)["assignment"].values())) == 1
    code, text, _ = run(["pareto", str(scored), "--budgets", "1:9:2", "--evaluate"], capsys)
    assert code == 0, text
    frame = pd.read_parquet(scored / "pareto.parquet")
    assert frame["budget"].tolist() == ["1bits", "3bits", "5bits", "7bits", "9bits"]
    assert frame["status"].tolist() == ["infeasible", "ok", "ok", "ok", "ok"]
    ok = frame[frame["status"] == "ok"]
    assert (ok["predicted_bits_per_weight"] <= ok["budget"].str[:-4].astype(float)).all()
    assert ok["predicted_score"].is_monotonic_decreasing  # more bits never predict worse
    assert ok["measured_accuracy"].notna().all()
    assert (
        "infeasible" in frame["reason"].iloc[0] and "smallest plan needs" in frame["reason"].iloc[0]
    )


def test_export_from_the_cli(
    scored: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "plan.json"
    argv = ["search", str(scored), "--budget", "6bits", "--out", str(plan), "--no-measure"]
    assert run(argv, capsys)[0] == 0
    for target in ("json",):
        out = tmp_path / target
        assert run(["export", str(plan), "--to", target, "--out", str(out)], capsys)[0] == 0
        assert json.loads(out.read_text())
    code, _, err = run(["export", str(plan), "--to", "gguf", "--out", str(tmp_path / "g")], capsys)
    assert code == 2
    assert err.startswith("mixprec: --to gguf builds on a base GGUF: give --base") and (
        "has no transformers folder" in err and err.count("\n") == 1
    )
    code, _, err = run(["export", str(plan), "--to", "llamacpp", "--out", str(tmp_path / "o")],
                       capsys)  # fmt: skip
    assert code == 2
    assert (
        err == "mixprec: no GGUF architecture for model type 'None'; export with --to json or hf\n"
    )
    argv = ["export", str(plan), "--to", "json", "--out", str(tmp_path / "j"), "--imatrix", "m"]
    code, _, err = run(argv, capsys)
    assert (code, err) == (
        2,
        "mixprec: --imatrix goes with --to llamacpp or --to gguf, not --to json\n",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--budget", "lots"], "mixprec: bad budget 'lots': use a positive finite number"),
        (["--budget", "0.5bits"], "mixprec: budget 0.5bits is infeasible: the smallest plan needs"),
        (["--budget", "4bits", "--method", "anneal"], "mixprec: unknown method 'anneal'"),
        (["--budget", "4bits", "--estimator", "hessian"], "mixprec: the score table has no"),
        (["--budget", "4bits", "--solver", "glpk"], "mixprec: ilp: unknown solver 'glpk'"),
        (["--budget", "4bits", "--method", "sac", "--objective", "loss"],
         "mixprec: sac: unknown objective 'loss'; valid: predicted, measured"),
        (["--budget", "4bits", "--max-latency", "1"], "mixprec: --max-latency needs a latency"),
    ],
)  # fmt: skip
def test_bad_search_input(
    scored: Path, tmp_path: Path, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "plan.json"
    code, _, err = run(["search", str(scored), "--out", str(out), *argv], capsys)
    assert code == 2 and err.startswith(message) and err.count("\n") == 1
    assert not out.exists()


def test_bad_paths_and_evaluate_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["search", str(tmp_path), "--budget", "4bits", "--out", "p.json"], capsys)
    assert code == 2 and "no score table at" in err
    code, _, err = run(["evaluate", "--plan", str(tmp_path / "none.json")], capsys)
    assert code == 2 and err.startswith("mixprec: no plan at")
    code, _, err = run(["evaluate", "--model", "digits-cnn"], capsys)
    assert code == 2 and err == "mixprec: give either --scheme (with --model) or --plan PLAN.json\n"
    code, _, err = run(["pareto", str(tmp_path), "--budgets", "8:3:1"], capsys)
    assert code == 2 and "bad budget range '8:3:1'" in err
    code, _, err = run(["pareto", str(tmp_path), "--method", "optuna"], capsys)
    assert code == 2 and err.startswith(
        "mixprec: pareto method 'optuna' is not valid; use ilp, greedy or uniform (the strategies"
    )
