"""Model-agnostic features of each decision unit (after RAMP), for learned allocators.

Every value is scaled to roughly [-1, 1] so a policy trained on one model reads another's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mixprec.units import role_of, weight_matrix

KINDS = ("attention", "mlp", "conv", "other")
ATTENTION_ROLES = {"q", "k", "v", "qkv", "o"}
MLP_ROLES = {"gate", "up", "down"}
FEATURES = (
    "depth", *(f"kind_{k}" for k in KINDS), "log_params", "log_fan_in", "log_fan_out",
    "log_std", "log_kurtosis", "log_amax_over_std",
)  # fmt: skip


def kind_of(name: str, module: nn.Module) -> str:
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        return "conv"
    role = role_of(name)
    if role in ATTENTION_ROLES:
        return "attention"
    return "mlp" if role in MLP_ROLES else "other"


def unit_features(
    layers: Mapping[str, nn.Module], members: Mapping[str, Sequence[str]], units: Sequence[str]
) -> np.ndarray:
    """[units, len(FEATURES)]: depth fraction, kind one-hot, sizes and weight statistics."""
    rows = []
    for index, unit in enumerate(units):
        modules = [layers[m] for m in members[unit]]
        weights = torch.cat([weight_matrix(m).detach().float().reshape(-1) for m in modules])
        matrix = weight_matrix(modules[0])
        std = float(weights.std()) if weights.numel() > 1 else 0.0
        centred = weights - weights.mean()
        kurtosis = float((centred**4).mean() / (std**4)) if std > 0 else 0.0
        amax = float(weights.abs().max())
        kind = kind_of(members[unit][0], modules[0])
        rows.append(
            [
                index / max(len(units) - 1, 1),
                *(1.0 if kind == k else 0.0 for k in KINDS),
                math.log10(weights.numel()) / 8,
                math.log10(matrix.shape[1]) / 5,
                math.log10(sum(weight_matrix(m).shape[0] for m in modules)) / 5,
                math.log10(std + 1e-12) / 6,
                math.log10(kurtosis + 1.0) / 3,
                math.log10(amax / std + 1.0) / 3 if std > 0 else 0.0,
            ]
        )
    return np.asarray(rows, dtype=np.float32)
