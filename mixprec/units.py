"""Find the quantizable units of a model: layers, components by role, blocks, fusion groups.

Roles and fusion sets are data (regex rules), so a new architecture needs a rule, not a branch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from mixprec.errors import MixprecError
from mixprec.moe import expert_group

Level = Literal["layer", "component", "block"]
LEVELS: tuple[Level, ...] = get_args(Level)

# (role, regex searched in the module's fully-qualified name); the first match wins.
ROLE_RULES: tuple[tuple[str, str], ...] = (
    ("gate_up", r"gate_up_proj$"),  # Phi-3 fuses the two input projections of its MLP
    ("qkv", r"(c_attn|qkv_proj|query_key_value|Wqkv|\.qkv)$"),
    ("q", r"(q_proj|\.query|q_lin|\.wq)$"),
    ("k", r"(k_proj|\.key|k_lin|\.wk)$"),
    ("v", r"(v_proj|\.value|v_lin|\.wv)$"),
    ("o", r"(o_proj|out_proj|out_lin|\.wo|(attn|attention)\.(c_proj|output\.dense|dense))$"),
    ("gate", r"(gate_proj|\.w1)$"),
    ("up", r"(up_proj|intermediate\.dense|mlp\.c_fc|\.fc1|lin1|dense_h_to_4h|\.w3)$"),
    ("down", r"(down_proj|output\.dense|mlp\.c_proj|\.fc2|lin2|dense_4h_to_h|\.w2)$"),
)
# Roles that read the same input and are usually fused into one GEMM share a format.
DEFAULT_FUSION: tuple[tuple[str, ...], ...] = (("q", "k", "v"),)
# the shards a serving runtime loads into one fused matrix (vLLM's QKVParallelLinear and
# MergedColumnParallelLinear, ModelOpt's export): one scheme, and one per-tensor scale
RUNTIME_FUSION: tuple[tuple[str, ...], ...] = (("q", "k", "v"), ("gate", "up"))
QUANTIZABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, Conv1D)


@dataclass(frozen=True)
class Unit:
    """A quantizable thing: one layer, a role across blocks, or one whole block."""

    name: str
    level: Level
    modules: tuple[str, ...]
    params: int
    group: str | None = None
    role: str | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "level": self.level,
            "modules": list(self.modules),
            "params": self.params,
            "group": self.group,
            "role": self.role,
        }


def is_quantizable(module: nn.Module) -> bool:
    return isinstance(module, QUANTIZABLE_TYPES)


def layer_weight(module: nn.Module) -> torch.Tensor:
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise MixprecError(f"{type(module).__name__} has no weight tensor to quantize")
    return weight


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The weight as [out_features, in_features * kernel]: scales per row, blocks along rows."""
    weight = layer_weight(module)
    if isinstance(module, Conv1D):  # transformers' Conv1D stores [in, out]
        return weight.t()
    return weight.reshape(weight.shape[0], -1)


def matrix_to_weight(module: nn.Module, matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of `weight_matrix`: back to the module's own weight layout."""
    if isinstance(module, Conv1D):
        return matrix.t().contiguous()
    return matrix.reshape(layer_weight(module).shape)


def activation_channel_dim(module: nn.Module) -> int:
    """The input dim that holds channels: blocks of an activation format run along it."""
    return 1 if isinstance(module, nn.Conv1d | nn.Conv2d) else -1


def role_of(name: str, rules: Sequence[tuple[str, str]] = ROLE_RULES) -> str | None:
    for role, pattern in rules:
        if re.search(pattern, name):
            return role
    return None


def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every quantizable module by fully-qualified name, in module order."""
    layers = {name: mod for name, mod in model.named_modules() if is_quantizable(mod)}
    if not layers:
        kinds = ", ".join(t.__name__ for t in QUANTIZABLE_TYPES)
        raise MixprecError(
            f"model {type(model).__name__} has no quantizable layers (looked for {kinds})"
        )
    return layers


def tied_embeddings(model: nn.Module) -> dict[str, str]:
    """Quantizable layers whose weight is an input embedding's (a tied LM head), each with
    the embedding module that holds (and saves) that weight."""
    embeddings = {id(m.weight): name for name, m in model.named_modules()
                  if isinstance(m, nn.Embedding)}  # fmt: skip
    return {name: embeddings[id(layer.weight)] for name, layer in quantizable_layers(model).items()
            if id(getattr(layer, "weight", None)) in embeddings}  # fmt: skip


def tied_to_embedding(model: nn.Module) -> frozenset[str]:
    """Quantizable layers whose weight is an input embedding's (a tied LM head)."""
    return frozenset(tied_embeddings(model))


def discover_units(
    model: nn.Module, fusion: Iterable[tuple[str, ...]] | None = DEFAULT_FUSION
) -> tuple[Unit, ...]:
    """Layers (module order), then components by role, then blocks; `fusion=None` unfuses.
    The experts of one MoE layer are one group either way (runtimes give them one scheme)."""
    layers = quantizable_layers(model)
    roles = {name: role_of(name) for name in layers}
    params = {name: int(layer_weight(mod).numel()) for name, mod in layers.items()}
    groups = _fusion_groups(roles, tuple(fusion or ()))
    for name in layers:
        group = expert_group(name)
        if group is not None:
            groups[name] = group
    units = [
        Unit(name, "layer", (name,), params[name], groups.get(name), roles[name]) for name in layers
    ]
    by_role: dict[str, list[str]] = {}
    for name, role in roles.items():
        if role is not None:
            by_role.setdefault(role, []).append(name)
    for role, members in by_role.items():
        total = sum(params[m] for m in members)
        units.append(Unit(f"component:{role}", "component", tuple(members), total, role=role))
    for block in _block_prefixes(model, set(layers)):
        inside = tuple(n for n in layers if n.startswith(block + "."))
        units.append(Unit(block, "block", inside, sum(params[m] for m in inside)))
    return tuple(units)


def fusion_groups(
    names: Iterable[str], fusion: tuple[tuple[str, ...], ...] = RUNTIME_FUSION
) -> dict[str, str]:
    """The fused group of each of the layers `names` that has one (shards under one parent)."""
    return _fusion_groups({name: role_of(name) for name in names}, fusion)


def _fusion_groups(
    roles: dict[str, str | None], fusion: tuple[tuple[str, ...], ...]
) -> dict[str, str]:
    """Layers whose roles form a fusion set under one parent module get one group name."""
    groups: dict[str, str] = {}
    for fused in fusion:
        by_parent: dict[str, list[str]] = {}
        for name, role in roles.items():
            if role in fused:
                by_parent.setdefault(name.rpartition(".")[0], []).append(name)
        for parent, members in by_parent.items():
            if len(members) > 1:
                group = f"{parent}:{''.join(fused)}" if parent else "".join(fused)
                groups.update(dict.fromkeys(members, group))
    return groups


def _block_prefixes(model: nn.Module, layer_names: set[str]) -> list[str]:
    """Children of the outermost ModuleLists whose every child holds quantizable layers."""
    blocks: list[str] = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if any(name.startswith(b + ".") for b in blocks):
            continue
        children = [f"{name}.{i}" if name else str(i) for i in range(len(module))]
        if all(any(n.startswith(c + ".") for n in layer_names) for c in children):
            blocks.extend(children)
    return blocks


def select(units: Iterable[Unit], level: Level) -> tuple[Unit, ...]:
    return tuple(u for u in units if u.level == level)
