"""Mixture-of-experts layers as one `nn.Linear` per expert projection, so each expert is a
quantizable layer like any other and the experts of one MoE layer form one fusion group (vLLM
runs one scheme for all of them).

transformers stores the experts of Mixtral, Qwen2/3-MoE, DeepSeek-V3 and most others as two
3-D parameters (`gate_up_proj` [experts, 2 x inner, hidden], `down_proj` [experts, hidden,
inner]). `linear_experts` swaps each such module for `LinearExperts`, whose linear layers are
views of the same storage (no copy) and whose forward is transformers' eager expert loop, so
the model's outputs do not change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from mixprec.errors import MixprecError

# `...experts.3.gate_up_proj`: a layer of one expert; every expert of `...experts` shares a group
EXPERT_LAYER = re.compile(r"^(?P<experts>.*\.experts)\.\d+\.[^.]+$")
FUSED = ("gate_up_proj", "down_proj")
Routed = tuple[torch.Tensor, int]  # rows of the flattened batch an expert saw, of how many


class ExpertProjection(nn.Linear):
    """One expert's projection. `routed` says which of the flattened batch's tokens its last
    input rows were, so Fisher can add gradients up per sample rather than per token."""

    def __init__(self, weight: torch.Tensor, requires_grad: bool) -> None:
        super().__init__(weight.shape[1], weight.shape[0], bias=False, device="meta")
        self.weight = nn.Parameter(weight, requires_grad=requires_grad)
        self.routed: Routed | None = None


class Expert(nn.Module):
    def __init__(self, gate_up: torch.Tensor, down: torch.Tensor, requires_grad: bool) -> None:
        super().__init__()
        self.gate_up_proj = ExpertProjection(gate_up, requires_grad)
        self.down_proj = ExpertProjection(down, requires_grad)


class LinearExperts(nn.Module):
    """The experts of one MoE layer as children `0`, `1`, ... (the names checkpoints use),
    called like transformers' fused experts."""

    def __init__(self, fused: nn.Module) -> None:
        super().__init__()
        gate_up, down = (getattr(fused, name) for name in FUSED)
        grad = gate_up.requires_grad
        self.experts: list[Expert] = []
        for index in range(gate_up.shape[0]):
            expert = Expert(gate_up.detach()[index], down.detach()[index], grad)
            self.add_module(str(index), expert)
            self.experts.append(expert)
        self.act_fn = cast("Callable[[torch.Tensor], torch.Tensor]", fused.act_fn)

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        out = torch.zeros_like(hidden_states)
        tokens = hidden_states.shape[0]
        by_slot = top_k_index.t()  # [top_k, tokens]: rows in transformers' own order
        for index, expert in enumerate(self.experts):
            slot, rows = torch.where(by_slot == index)
            if rows.numel() == 0:
                continue
            expert.gate_up_proj.routed = expert.down_proj.routed = (rows, tokens)
            gate, up = expert.gate_up_proj(hidden_states[rows]).chunk(2, dim=-1)
            hidden = expert.down_proj(self.act_fn(gate) * up)
            hidden = hidden * top_k_weights[rows, slot, None]
            out.index_add_(0, rows, hidden.to(out.dtype))
        return out


def is_fused_experts(module: nn.Module) -> bool:
    """A transformers experts module holding its experts as 3-D parameters."""
    params = dict(module.named_parameters(recurse=False))
    return all(name in params and params[name].dim() == 3 for name in FUSED)


def linear_experts(model: nn.Module) -> int:
    """Swaps every fused experts module of `model` for `LinearExperts`, in place; the count."""
    fused = [(name, mod) for name, mod in model.named_modules() if is_fused_experts(mod)]
    for name, module in fused:
        _check_layout(name, module)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, LinearExperts(module))
    return len(fused)


def _check_layout(name: str, module: nn.Module) -> None:
    """Only the layout of transformers' default expert loop is known to give the same output."""
    from transformers.integrations import moe

    layout: dict[str, Any] = {
        "has_gate": True, "has_bias": False, "is_transposed": False, "is_concatenated": True,
        "has_post_expert_norm": False,
    }  # fmt: skip
    odd = [f"{k}={getattr(module, k)}" for k, v in layout.items() if getattr(module, k, v) != v]
    gating = getattr(type(module), "_apply_gate", moe._default_apply_gate)
    if gating is not moe._default_apply_gate:
        odd.append("its own gating")
    if not callable(getattr(module, "act_fn", None)):
        odd.append("no act_fn")
    if odd:
        raise MixprecError(
            f"MoE experts {name} ({type(module).__name__}) have a layout mixprec cannot split "
            f"into linear layers ({', '.join(odd)}); supported: gate_up [E, 2I, H] and down "
            "[E, H, I] without bias (Mixtral, Qwen2/3-MoE, DeepSeek-V3 and alike)"
        )


def expert_group(layer: str) -> str | None:
    """The fusion group of a layer that belongs to one expert: `...experts:experts`."""
    match = EXPERT_LAYER.match(layer)
    return f"{match['experts']}:experts" if match else None
