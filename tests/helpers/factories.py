"""Factories for `module:` model sources in tests."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from mixprec.models import ModelBundle
from mixprec.tasks import OutputTask


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 4))


def mlp_overflowing_fp16() -> nn.Module:
    """Its second layer holds 1e5, past FP16's range: `w:fp16` makes it inf there only."""
    model = small_mlp()
    with torch.no_grad():
        model[2].weight[0, 0] = 1e5
    return model


def no_calibration() -> ModelBundle:
    model = small_mlp()
    evaluation = ({"inputs": torch.randn(2, 16)},)
    return ModelBundle("no-calibration", model, OutputTask("no-calibration"), (), evaluation)


def not_a_model() -> str:
    return "hello"


class DiesOnce(nn.Module):
    """Kills its process on the first forward pass outside the driver (a marker file remembers;
    the driver, whose pid the test names, runs one forward to check the model)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = small_mlp()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        marker = Path(os.environ["MIXPREC_TEST_DIE_MARKER"])
        driver = int(os.environ.get("MIXPREC_TEST_DRIVER_PID", "0"))
        if os.getpid() != driver and not marker.exists():
            marker.touch()
            os._exit(1)
        return self.body(x)


def dies_once() -> nn.Module:
    return DiesOnce()
