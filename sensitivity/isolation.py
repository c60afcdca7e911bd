"""Output isolation: quantize only the unit and measure the output divergence to FP32.

The direct measurement of "Diagnosing FP4 inference": KL for logits, MSE for embeddings,
per calibration batch; activation formats in the scheme are applied too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mixprec.data import content_hash
from mixprec.models import ModelBundle
from mixprec.plan import temporarily_applied
from mixprec.scheme import Scheme
from mixprec.sensitivity.base import SensitivityEstimator
from mixprec.tasks import Batch
from mixprec.units import Unit


class IsolationEstimator(SensitivityEstimator):
    name = "isolation"
    needs_loss = False

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._references: dict[tuple[str, str], list[torch.Tensor]] = {}

    def _reference(self, bundle: ModelBundle, batches: Sequence[Batch]) -> list[torch.Tensor]:
        key = (bundle.fingerprint, content_hash(batches))
        if key not in self._references:
            with torch.inference_mode():
                self._references[key] = [bundle.task.outputs(bundle.model, b) for b in batches]
        return self._references[key]

    def per_batch(
        self, bundle: ModelBundle, unit: Unit, scheme: Scheme, batches: Sequence[Batch]
    ) -> list[float]:
        reference = self._reference(bundle, batches)
        values = []
        with temporarily_applied(bundle.model, dict.fromkeys(unit.modules, scheme)) as model:
            for batch, ref in zip(batches, reference, strict=True):
                with torch.inference_mode():
                    out = bundle.task.outputs(model, batch)
                values.append(bundle.task.divergence_to_reference([out], [ref]))
        return values
