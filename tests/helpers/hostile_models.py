"""Model factories for the hostile-input tests: a forward that raises, outputs that are NaN."""

from __future__ import annotations

import torch
from torch import nn


class Raising(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        raise ValueError("this forward always fails")


class NotFinite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.fc(inputs) * float("nan")


def raising() -> nn.Module:
    return Raising()


def not_finite() -> nn.Module:
    return NotFinite()
