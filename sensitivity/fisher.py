"""Empirical Fisher: F = mean over samples of g_i^2 per weight; score = sum F * (Q(W) - W)^2.

The first-order score ModelOpt and GWQ use. Per-sample gradients come from one backward pass
per batch: each layer's input and output gradient are captured by hooks and multiplied per
sample (g_i = dy_i^T x_i), which is exact for losses that sum over samples (cross-entropy,
next-token) and gives each text's contribution for the in-batch contrastive loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from mixprec.errors import MixprecError
from mixprec.models import ModelBundle
from mixprec.scheme import Scheme
from mixprec.sensitivity.base import SensitivityEstimator, WeightDeltas, register_estimator
from mixprec.sensitivity.configs import FisherConfig
from mixprec.tasks import Batch
from mixprec.units import Unit, layer_weight, quantizable_layers, weight_matrix

FisherDiagonals = dict[str, list[torch.Tensor]]  # layer -> F per batch, [out, in] layout


@register_estimator(FisherConfig)
class FisherEstimator(SensitivityEstimator):
    shares_statistics = True

    def __init__(self, config: FisherConfig | None = None) -> None:
        super().__init__(config)
        self._fisher: dict[tuple[str, str], FisherDiagonals] = {}
        self._deltas = WeightDeltas()

    def diagonals(
        self, bundle: ModelBundle, batches: Sequence[Batch], calibration: str
    ) -> FisherDiagonals:
        key = (bundle.fingerprint, calibration)
        if key not in self._fisher:
            per_batch = [empirical_fisher(bundle, b) for b in batches]
            self._fisher[key] = {name: [f[name] for f in per_batch] for name in per_batch[0]}
        return self._fisher[key]

    def per_batch(
        self,
        bundle: ModelBundle,
        unit: Unit,
        scheme: Scheme,
        batches: Sequence[Batch],
        calibration: str,
    ) -> list[float]:
        fisher = self.diagonals(bundle, batches, calibration)
        deltas = {m: self._deltas.squared(bundle, m, scheme) for m in unit.modules}
        return [
            sum(float((fisher[m][b] * deltas[m]).sum()) for m in unit.modules)
            for b in range(len(batches))
        ]


def empirical_fisher(bundle: ModelBundle, batch: Batch) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of every quantizable layer's weight on one batch."""
    layers = quantizable_layers(bundle.model)
    inputs: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    grads: dict[str, dict[int, torch.Tensor]] = {n: {} for n in layers}

    def capture(name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            call = len(inputs[name])  # pairs each call's input with its output gradient
            inputs[name].append(args[0].detach())
            if output.requires_grad:
                output.register_hook(lambda g: grads[name].__setitem__(call, g.detach()))

        return hook

    handles = [mod.register_forward_hook(capture(n)) for n, mod in layers.items()]
    try:
        samples = bundle.task.samples(batch)
        loss = bundle.task.loss(bundle.model, batch) * samples  # sum over samples
        weights = [layer_weight(m) for m in layers.values()]
        torch.autograd.grad(loss, weights, allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    fisher = {}
    for name, module in layers.items():
        total = torch.zeros_like(weight_matrix(module), dtype=torch.float32)
        for call, dy in grads[name].items():
            total += _per_sample_grads(module, inputs[name][call], dy).square().sum(0)
        fisher[name] = total / max(samples, 1)
    return fisher


def _per_sample_grads(module: nn.Module, x: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """[samples, out, in] gradients of the weight matrix, one per leading-dim sample."""
    n = x.shape[0]
    if isinstance(module, nn.Linear | Conv1D):
        xs = x.reshape(n, -1, x.shape[-1]).float()
        ds = dy.reshape(n, -1, dy.shape[-1]).float()
        return torch.einsum("nto,nti->noi", ds, xs)
    if isinstance(module, nn.Conv1d | nn.Conv2d):
        if module.groups != 1:
            raise MixprecError(f"grouped convolutions are not supported by fisher: {module}")
        flat = isinstance(module, nn.Conv1d)
        x4 = x.unsqueeze(2) if flat else x
        kernel = (1, *module.kernel_size) if flat else module.kernel_size
        pad = (0, *module.padding) if flat else module.padding
        stride = (1, *module.stride) if flat else module.stride
        dilation = (1, *module.dilation) if flat else module.dilation
        if isinstance(pad, str):
            raise MixprecError(f"string padding is not supported by fisher: {module}")
        cols = F.unfold(x4.float(), kernel, dilation=dilation, padding=pad, stride=stride)
        return torch.einsum("nol,nil->noi", dy.reshape(n, dy.shape[1], -1).float(), cols)
    raise MixprecError(f"fisher cannot take per-sample gradients of {type(module).__name__}")
