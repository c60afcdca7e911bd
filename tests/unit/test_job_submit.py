"""Submitting right after `ray start`: the job agent may not be there yet, so submit waits for
it (bounded, saying so once) instead of failing; other refusals are one line at once."""

from __future__ import annotations

from typing import Any

import pytest

from mixprec import jobs
from mixprec.config import RunConfig
from mixprec.errors import MixprecError

AGENT_MISSING = "Request failed with status code 500: No available agent to submit job, try later."


class LateAgent:
    """Ray's JobSubmissionClient as it answers while its job agent is still starting."""

    def __init__(self, refusals: int, error: str = AGENT_MISSING) -> None:
        self.refusals, self.error, self.calls = refusals, error, 0

    def submit_job(self, **job: Any) -> str:
        self.calls += 1
        if self.calls <= self.refusals:
            raise RuntimeError(self.error)
        assert job["entrypoint"].endswith("-m mixprec run config.toml")
        return "raysubmit_1"


@pytest.fixture
def config(tmp_path: Any) -> RunConfig:
    return RunConfig(model="digits-cnn", output=tmp_path / "run")


def use(monkeypatch: pytest.MonkeyPatch, fake: LateAgent) -> None:
    monkeypatch.setattr(jobs, "client", lambda address: fake)
    monkeypatch.setattr(jobs.time, "sleep", lambda seconds: None)


def test_submit_waits_for_a_job_agent_that_is_still_starting(
    monkeypatch: pytest.MonkeyPatch, config: RunConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = LateAgent(refusals=3)
    use(monkeypatch, fake)
    assert jobs.submit(config, "http://127.0.0.1:8265") == "raysubmit_1"
    assert fake.calls == 4
    assert capsys.readouterr().err.count("waiting up to 180 s for the job agent") == 1


def test_the_wait_is_bounded(monkeypatch: pytest.MonkeyPatch, config: RunConfig) -> None:
    fake = LateAgent(refusals=10**9)
    use(monkeypatch, fake)
    monkeypatch.setattr(jobs, "AGENT_WAIT_S", 0.0)
    with pytest.raises(MixprecError, match=r"refused the job: .*No available agent.*within \d+ s"):
        jobs.submit(config, "http://127.0.0.1:8265")


def test_another_refusal_is_not_retried(monkeypatch: pytest.MonkeyPatch, config: RunConfig) -> None:
    fake = LateAgent(refusals=1, error="Request failed with status code 400: bad runtime_env")
    use(monkeypatch, fake)
    with pytest.raises(MixprecError, match=r"refused the job: .*bad runtime_env"):
        jobs.submit(config, "http://127.0.0.1:8265")
    assert fake.calls == 1
