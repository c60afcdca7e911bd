"""Empirical Fisher: F = mean over samples of g_i^2 per weight; score = sum F * (Q(W) - W)^2,
which is the mean over samples of each one's sum g_i^2 * (Q(W) - W)^2: one score per sample.

The first-order score ModelOpt and GWQ use. Per-sample gradients come from one backward pass
per batch: each layer's input and output gradient are captured by hooks and multiplied per
sample (g_i = dy_i^T x_i), which is exact for losses that sum over samples (cross-entropy,
next-token) and gives each text's contribution for the in-batch contrastive loss.

Memory stays near one forward-backward: no weight gradient is formed (the backward pass runs
only to each layer's output), and each layer's squared per-sample gradients are reduced against
the squared errors of every expected scheme as soon as they arrive, then dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers.pytorch_utils import Conv1D

from mixprec.errors import MixprecError
from mixprec.models import ModelBundle
from mixprec.moe import Routed
from mixprec.scheme import Scheme
from mixprec.sensitivity.base import SensitivityEstimator, WeightDeltas, register_estimator
from mixprec.sensitivity.configs import FisherConfig
from mixprec.tasks import Batch
from mixprec.units import Unit, layer_weight, quantizable_layers, weight_matrix

GRADIENT_CHUNK_BYTES = 256 * 2**20  # per-sample gradients held at once, at most (or one)
LayerScores = dict[tuple[str, str], list[float]]  # (layer, scheme) -> score per sample
#: a layer's squared per-sample gradients: (layer, first sample, [samples, out, in])
Squares = Callable[[str, int, torch.Tensor], None]


@register_estimator(FisherConfig)
class FisherEstimator(SensitivityEstimator):
    shares_statistics = True

    def __init__(self, config: FisherConfig | None = None) -> None:
        super().__init__(config)
        self._scores: dict[tuple[str, str], LayerScores] = {}
        self._deltas = WeightDeltas()

    def layer_scores(
        self, bundle: ModelBundle, batches: Sequence[Batch], calibration: str, scheme: Scheme
    ) -> LayerScores:
        """Per-layer, per-sample scores; a scheme not yet seen costs one pass over the batches,
        which also scores every expected scheme not yet seen."""
        scores = self._scores.setdefault((bundle.fingerprint, calibration), {})
        first = next(iter(self._deltas.layers(bundle.model)))
        wanted = {str(s): s for s in (*self.expected, scheme) if (first, str(s)) not in scores}
        if not wanted:
            return scores
        fresh: LayerScores = {}
        for batch in batches:
            for key, values in self._batch_scores(bundle, batch, wanted).items():
                fresh.setdefault(key, []).extend(values.tolist())
        scores.update(fresh)
        return scores

    def _batch_scores(
        self, bundle: ModelBundle, batch: Batch, wanted: dict[str, Scheme]
    ) -> dict[tuple[str, str], torch.Tensor]:
        """Each (layer, scheme)'s score per sample of one batch, from one backward pass."""
        size = bundle.task.samples(batch)
        parts = {(name, label): torch.zeros(size, dtype=torch.float64)
                 for name in self._deltas.layers(bundle.model) for label in wanted}  # fmt: skip

        def reduce(name: str, start: int, squares: torch.Tensor) -> None:
            flat = squares.flatten(1)
            for label, each in wanted.items():  # no stacked copy of a large layer's deltas
                delta = self._deltas.squared(bundle, name, each).to(flat.device, flat.dtype)
                parts[name, label][start : start + len(flat)] += (
                    (flat @ delta.flatten()).double().cpu()
                )

        stream_squares(bundle, batch, reduce)
        return parts

    def per_sample(
        self,
        bundle: ModelBundle,
        unit: Unit,
        scheme: Scheme,
        batches: Sequence[Batch],
        calibration: str,
    ) -> list[float]:
        scores = self.layer_scores(bundle, batches, calibration, scheme)
        per_layer = [scores[m, str(scheme)] for m in unit.modules]
        return [sum(values) for values in zip(*per_layer, strict=True)]


def empirical_fisher(bundle: ModelBundle, batch: Batch) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of every quantizable layer's weight on one batch ([out, in])."""
    layers = quantizable_layers(bundle.model)
    totals = {n: torch.zeros_like(weight_matrix(m), dtype=torch.float32) for n, m in layers.items()}

    def add(name: str, start: int, squares: torch.Tensor) -> None:
        totals[name].add_(squares.sum(0).to(totals[name].device))

    stream_squares(bundle, batch, add)
    samples = max(bundle.task.samples(batch), 1)
    return {name: total.div_(samples) for name, total in totals.items()}


def stream_squares(bundle: ModelBundle, batch: Batch, consume: Squares) -> None:
    """Hands each layer's squared per-sample gradients on `batch` to `consume`, a few samples
    at a time, as soon as the backward pass reaches each call of the layer (a layer called more
    than once adds a part per call; a layer no gradient reaches gets none). A zero scalar added
    to every layer's output is the one thing differentiated, so no weight gradient is formed."""
    layers = quantizable_layers(bundle.model)
    anchor = torch.zeros((), device=layer_weight(next(iter(layers.values()))).device)
    anchor.requires_grad_(True)
    inputs: dict[str, dict[int, tuple[torch.Tensor, Routed | None]]] = {n: {} for n in layers}
    calls = dict.fromkeys(layers, 0)
    samples = bundle.task.samples(batch)

    def received(name: str, call: int, dy: torch.Tensor) -> None:
        x, routed = inputs[name].pop(call)
        dy = dy.detach()
        if routed is not None:  # an expert's rows: gradients added up per sample, not per token
            x, dy = _per_sample_rows(x, dy, routed, samples)
        for start, squares in _squared_grads(layers[name], x, dy):
            consume(name, start, squares)

    def capture(name: str) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], object]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> object:
            call = calls[name]
            calls[name] += 1
            inputs[name][call] = (args[0].detach(), getattr(module, "routed", None))
            anchored = output + anchor.to(output.dtype)
            anchored.register_hook(lambda g: received(name, call, g))
            return anchored

        return hook

    handles = [mod.register_forward_hook(capture(n)) for n, mod in layers.items()]
    try:
        loss = bundle.task.loss(bundle.model, batch) * samples  # sum over samples
        torch.autograd.grad(loss, [anchor], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()


def _per_sample_rows(
    x: torch.Tensor, dy: torch.Tensor, routed: Routed, samples: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """An expert's [rows, features] input and gradient as [samples, rows, features], zeros where
    a row belongs to another sample: then x^T dy per sample is that sample's gradient."""
    rows, tokens = routed
    owner = rows.to(x.device) * samples // tokens
    mask = owner[None, :] == torch.arange(samples, device=x.device)[:, None]  # [samples, rows]
    return x[None] * mask[..., None].to(x.dtype), dy[None] * mask[..., None].to(dy.dtype)


def _squared_grads(
    module: nn.Module, x: torch.Tensor, dy: torch.Tensor
) -> Iterator[tuple[int, torch.Tensor]]:
    """Each leading-dim sample's squared weight gradient ([k, out, in]) with the index of the
    chunk's first sample, a few samples at a time so all of them never exist at once."""
    n = x.shape[0]
    if isinstance(module, nn.Linear | Conv1D):
        xs = x.reshape(n, -1, x.shape[-1])
        ds = dy.reshape(n, -1, dy.shape[-1])
        equation, size = "nto,nti->noi", ds.shape[-1] * xs.shape[-1]
    elif isinstance(module, nn.Conv1d | nn.Conv2d):
        xs, ds = _unfolded(module, x), dy.reshape(n, dy.shape[1], -1)
        equation, size = "nol,nil->noi", ds.shape[1] * xs.shape[1]
    else:
        raise MixprecError(f"fisher cannot take per-sample gradients of {type(module).__name__}")
    if n == 0:
        raise MixprecError(f"fisher got an empty batch for {type(module).__name__}")
    step = max(1, GRADIENT_CHUNK_BYTES // (4 * size))
    for first in range(0, n, step):
        chunk = slice(first, first + step)
        yield first, torch.einsum(equation, ds[chunk].float(), xs[chunk].float()).square_()


def _unfolded(module: nn.Conv1d | nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A convolution's input as [samples, in * kernel, positions] columns."""
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
    return F.unfold(x4, kernel, dilation=dilation, padding=pad, stride=stride)
