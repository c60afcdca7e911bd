"""Layers whose weights stay packed in memory (`apply_plan(..., packed=True)`).

Linear layers (and transformers' Conv1D) run the dequant-matmul on the packed codes; convolutions
decode their weight for each call. Every packed tensor is a registered buffer, so `.to(device)`
and `state_dict()` carry the packed form, never a dense copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from mixprec.kernels import dispatch
from mixprec.kernels.dispatch import KernelPreference
from mixprec.kernels.formats import NumberFormat
from mixprec.kernels.packing import PackedTensor
from mixprec.units import layer_weight, weight_matrix

if TYPE_CHECKING:
    from mixprec.plan import FusedShard


class PackedLayer(nn.Module):
    """Stands in for one quantizable layer; the weight is only ever held packed."""

    def __init__(self, module: nn.Module, fmt: NumberFormat, kernel: KernelPreference,
                 fused: FusedShard | None = None) -> None:  # fmt: skip
        super().__init__()
        weight = layer_weight(module)
        if fused is None:
            packed = dispatch.pack(weight_matrix(module).detach().float(), fmt, kernel)
        else:  # its rows of the fused layer it is packed with (one per-tensor scale)
            packed = fused.packed(kernel)
        self.fmt = fmt
        self.kernel = kernel
        self.matrix_shape = packed.shape
        self.weight_shape = tuple(weight.shape)
        self.linear = isinstance(module, nn.Linear | Conv1D)
        for name in ("codes", "scales", "zero_points", "tensor_scale", "minimums"):
            self.register_buffer(name, getattr(packed, name))
        self.bias = module.bias
        self.conv: nn.Module | None = None
        if not self.linear:
            del module.weight  # keeps stride, padding, groups; the weight lives packed here
            self.conv = module

    def packed(self) -> PackedTensor:
        buffers = self._buffers  # plain dict access: keeps the types and the None entries
        codes, scales = buffers["codes"], buffers["scales"]
        assert codes is not None and scales is not None
        return PackedTensor(
            self.fmt,
            self.matrix_shape,
            codes,
            scales,
            buffers["zero_points"],
            buffers["tensor_scale"],
            buffers["minimums"],
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self._parameters["bias"]
        if self.linear:
            return dispatch.packed_linear(x, self.packed(), bias, self.kernel)
        assert self.conv is not None
        weight = dispatch.unpack(self.packed(), self.kernel).reshape(self.weight_shape)
        cast_bias = None if bias is None else bias.to(x.dtype)
        return self.conv._conv_forward(x, weight.to(x.dtype), cast_bias)  # type: ignore[operator]

    def extra_repr(self) -> str:
        return f"{self.fmt.name}, {tuple(self.matrix_shape)}, {self.packed().nbytes} bytes"


def replace_module(root: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put `new` where `name` is in `root`; returns the new root (itself when name is '')."""
    if not name:
        return new
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)
    return root
