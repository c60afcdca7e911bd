"""Factories for `module:` model sources in tests."""

from __future__ import annotations

import torch
from torch import nn


def small_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.GELU(), nn.Linear(64, 4))


def not_a_model() -> str:
    return "hello"
