"""Output isolation: quantize only the unit and measure the output divergence to FP32.

The direct measurement of "Diagnosing FP4 inference": KL for logits, MSE for embeddings,
per calibration sample; activation formats in the scheme are applied too. Blocks that run
before the unit replay their recorded FP32 outputs (sensitivity/replay.py).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils._pytree import tree_map_only

from mixprec.metrics import calibrated
from mixprec.models import ModelBundle
from mixprec.plan import temporarily_applied
from mixprec.scheme import Scheme
from mixprec.sensitivity.base import SensitivityEstimator, register_estimator
from mixprec.sensitivity.configs import IsolationConfig
from mixprec.sensitivity.replay import BlockRecording, record_blocks, replaying
from mixprec.tasks import Batch
from mixprec.units import Unit

Reference = tuple[list[torch.Tensor], BlockRecording]
NARROW = (torch.bfloat16, torch.float16)  # stored widths computed in float32 by default


@register_estimator(IsolationConfig)
class IsolationEstimator(SensitivityEstimator):
    needs_loss = False
    config: IsolationConfig

    def __init__(self, config: IsolationConfig | None = None) -> None:
        super().__init__(config)
        self._references: dict[tuple[str, str], Reference] = {}
        self._inputs: dict[tuple[str, str], list[Batch]] = {}  # the batches as computed on
        self._computed: tuple[str, nn.Module] | None = None  # the latest model's float32 copy

    def _widened(self, bundle: ModelBundle) -> bool:
        narrow = any(p.dtype in NARROW for p in bundle.model.parameters())
        return narrow and self.config.compute == "float32"

    def _model(self, bundle: ModelBundle) -> nn.Module:
        """The model the outputs are computed with: a float32 copy of a 16-bit model (its
        weights exactly, so the quantized ones are the same), unless `compute` is "stored"."""
        if not self._widened(bundle):
            return bundle.model
        if self._computed is None or self._computed[0] != bundle.fingerprint:
            self._computed = None  # the old copy goes before the new one is made
            self._computed = (bundle.fingerprint, copy.deepcopy(bundle.model).float())
        return self._computed[1]

    def _batches(self, bundle: ModelBundle, batches: Sequence[Batch]) -> list[Batch]:
        """The batches as the computing model takes them: 16-bit inputs widened with it."""
        if not self._widened(bundle):
            return list(batches)
        return [tree_map_only(torch.Tensor, _widen, batch) for batch in batches]

    def _reference(
        self, bundle: ModelBundle, batches: Sequence[Batch], calibration: str
    ) -> Reference:
        key = (bundle.fingerprint, calibration)
        if key not in self._references:
            self._inputs[key] = self._batches(bundle, batches)  # widened once, not per cell
            model = self._model(bundle)
            self._references[key] = record_blocks(model, self._inputs[key], bundle.task.outputs)
        return self._references[key]

    def per_sample(
        self,
        bundle: ModelBundle,
        unit: Unit,
        scheme: Scheme,
        batches: Sequence[Batch],
        calibration: str,
    ) -> list[float]:
        reference, recording = self._reference(bundle, batches, calibration)
        modules = unit.modules if self.config.replay else ()
        values: list[float] = []
        assignment = dict.fromkeys(unit.modules, scheme)
        applied = temporarily_applied(self._model(bundle), assignment, importance=bundle.importance,
                                      input_ranges=calibrated(bundle, assignment))  # fmt: skip
        inputs = self._inputs[bundle.fingerprint, calibration]
        with applied as model:
            for index, (batch, ref) in enumerate(zip(inputs, reference, strict=True)):
                with torch.inference_mode(), replaying(model, recording, modules, index):
                    out = bundle.task.outputs(model, batch)
                values.extend(bundle.task.divergence_per_sample(out, ref).tolist())
        return values


def _widen(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.dtype in NARROW else tensor
