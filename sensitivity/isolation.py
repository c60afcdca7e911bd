"""Output isolation: quantize only the unit and measure the output divergence to FP32.

The direct measurement of "Diagnosing FP4 inference": KL for logits, MSE for embeddings,
per calibration sample; activation formats in the scheme are applied too. Blocks that run
before the unit replay their recorded FP32 outputs (sensitivity/replay.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

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


@register_estimator(IsolationConfig)
class IsolationEstimator(SensitivityEstimator):
    needs_loss = False
    config: IsolationConfig

    def __init__(self, config: IsolationConfig | None = None) -> None:
        super().__init__(config)
        self._references: dict[tuple[str, str], Reference] = {}

    def _reference(
        self, bundle: ModelBundle, batches: Sequence[Batch], calibration: str
    ) -> Reference:
        key = (bundle.fingerprint, calibration)
        if key not in self._references:
            self._references[key] = record_blocks(bundle.model, batches, bundle.task.outputs)
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
        applied = temporarily_applied(bundle.model, assignment, importance=bundle.importance,
                                      input_ranges=calibrated(bundle, assignment))  # fmt: skip
        with applied as model:
            for index, (batch, ref) in enumerate(zip(batches, reference, strict=True)):
                with torch.inference_mode(), replaying(model, recording, modules, index):
                    out = bundle.task.outputs(model, batch)
                values.extend(bundle.task.divergence_per_sample(out, ref).tolist())
        return values
