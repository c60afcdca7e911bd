"""Scoring from Python: the model you have loaded (or a source string) and your own batches in,
a ScoreTable out; the cell cache works as it does for `mixprec analyze`.

    data = Calibration(batches, evaluation=held_out, loss=lambda out, b: F.cross_entropy(out, b[1]))
    table = score(model, data, ["w:int8", "w:int4_g128", "w:mxfp4"], ["fisher", "isolation"])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mixprec.data import named_tensors
from mixprec.errors import MixprecError
from mixprec.models import ModelBundle, load_model
from mixprec.placement import Placement, model_device, model_dtype, move_batch, place
from mixprec.scheme import DEFAULT_SCHEMES, scheme_list
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.cells import AnalysisSpec
from mixprec.sensitivity.configs import DEFAULT_ESTIMATORS, EstimatorConfig
from mixprec.sensitivity.runner import analyze, score_bundle
from mixprec.sensitivity.table import ScoreTable
from mixprec.tasks import CallableTask, Task
from mixprec.tensordata import TensorData
from mixprec.textdata import TextData
from mixprec.units import LEVELS

Forward = Callable[[nn.Module, Any], Any]
Loss = Callable[[Any, Any], torch.Tensor]


@dataclass(frozen=True)
class Calibration:
    """Batches to score on, batches to measure plans on (the calibration ones where none are
    given), and how to run the model: `forward(model, batch)` (default: `model(**batch)`,
    `model(*batch)` or `model(batch)`) and `loss(output, batch)`, as in ModelOpt. `divergence`
    compares quantized outputs with FP32: "kl" for logits, "mse" otherwise."""

    batches: tuple[Any, ...]
    evaluation: tuple[Any, ...] = ()
    forward: Forward | None = None
    loss: Loss | None = None
    divergence: str = "mse"

    def __post_init__(self) -> None:
        object.__setattr__(self, "batches", tuple(self.batches))
        object.__setattr__(self, "evaluation", tuple(self.evaluation))
        if not self.batches:
            raise MixprecError("Calibration needs at least one batch")
        for batch in (*self.batches, *self.evaluation):
            for _ in named_tensors(batch):  # a batch that holds no tensors fails here, in one line
                pass

    @classmethod
    def of(
        cls, data: Calibration | Iterable[Any], forward: Forward | None, loss: Loss | None
    ) -> Calibration:
        """`data` as a Calibration: given as one, or a plain iterable of batches."""
        if isinstance(data, Calibration):
            if forward is not None or loss is not None:
                raise MixprecError("give forward/loss inside the Calibration or beside plain "
                                   "batches, not both")  # fmt: skip
            return data
        return cls(tuple(data), forward=forward, loss=loss)

    @property
    def measured_on(self) -> tuple[Any, ...]:
        """The batches plans are measured on: the evaluation ones, else the calibration ones."""
        return self.evaluation or self.batches

    def task(self) -> Task:
        return CallableTask(self.forward, self.loss, self.divergence)


def as_bundle(
    model: nn.Module | ModelBundle | str, data: Calibration | None = None, seed: int = 0
) -> ModelBundle:
    """A ModelBundle for what the API was given: a bundle as is, a source string loaded (with
    `data` replacing its batches), or an nn.Module with its `data`."""
    if isinstance(model, ModelBundle):
        if data is not None:
            raise MixprecError("a ModelBundle carries its own data; pass data=None")
        return model
    if isinstance(model, str):
        bundle = load_model(model, seed)
        if data is None:
            return bundle
        task = bundle.task if data.forward is None and data.loss is None else data.task()
        return ModelBundle(bundle.name, bundle.model, task, *_batches_beside(bundle.model, data))
    if not isinstance(model, nn.Module):
        raise MixprecError(
            f"model must be an nn.Module, a ModelBundle or a source string, "
            f"not a {type(model).__name__}"
        )
    if data is None:
        raise MixprecError(
            "an nn.Module needs its data: pass Calibration(batches, forward=..., loss=...) "
            "or a list of batches"
        )
    if model.training:
        raise MixprecError(
            f"the {type(model).__name__} is in training mode (dropout would make every score "
            "noise); call model.eval() first"
        )
    name = f"python:{type(model).__module__}.{type(model).__qualname__}"
    return ModelBundle(name, model, data.task(), *_batches_beside(model, data))


def _batches_beside(model: nn.Module, data: Calibration) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Your calibration and evaluation batches on the model's device, floats in its dtype."""
    device, dtype = model_device(model), model_dtype(model)
    calibration, evaluation = (tuple(move_batch(b, device, dtype) for b in part)
                               for part in (data.batches, data.measured_on))  # fmt: skip
    return calibration, evaluation


def score(
    model: nn.Module | ModelBundle | str,
    data: Calibration | TextData | TensorData | Iterable[Any] | None = None,
    schemes: Sequence[str] | str = DEFAULT_SCHEMES,
    estimators: Sequence[str | Mapping[str, Any] | EstimatorConfig] = DEFAULT_ESTIMATORS,
    levels: Sequence[str] = LEVELS,
    *,
    loss: Loss | None = None,
    forward: Forward | None = None,
    cache: CellCache | None = None,
    workers: int | None = 0,
    address: str | None = None,
    gpus_per_worker: float = 0.0,
    seed: int = 0,
    calib_batches: int | None = None,
    progress: bool = False,
    dtype: str = "auto",
    device: str = "auto",
    imatrix: str | Path | None = None,
) -> ScoreTable:
    """How much the loss grows for every (estimator, unit, scheme): what `mixprec analyze`
    computes, for the model in your process and your batches.

    >>> table = score(model, batches, ["w:int8", "w:mxfp4"], ["fisher"], loss=my_loss)
    >>> table = score(model, data, "default", [HessianConfig(max_probes=64), "isolation"])

    Estimators are names (default settings), configs or `{"name": ..., setting: ...}` dicts;
    `seed` seeds every one of them.

    Ray workers (`workers`, `address`) load the model themselves, so they take a source string
    (`hf:DIR`, `module:pkg.mod:factory`, a built-in) with its own data, or an `hf:` source
    with your text as a `TextData` (each worker reads and tokenises it the same way), or any
    source with your inputs as a `TensorData` (.safetensors / .npy).
    `calib_batches` uses the first K calibration batches. `dtype` / `device` place the model
    (a model object is moved in place; by default everything runs where it already is).
    `imatrix` (llama-imatrix's file) makes the llama.cpp types round as llama-quantize does
    with it (a transformers model of an architecture llama.cpp names).

    >>> table = score("hf:models/llama", TextData("notes.jsonl", seq_len=512), workers=2)
    >>> table = score("hf:models/llama", TextData("notes.jsonl"), dtype="bf16", device="cuda")
    >>> table = score("hf:models/llama", TextData("notes.jsonl"), workers=4, gpus_per_worker=1)
    """
    chosen = scheme_list(schemes)
    placement = Placement(dtype, device)
    weighted = None if imatrix is None else str(imatrix)
    text = data if isinstance(data, TextData | TensorData) else None
    if isinstance(model, str) and (data is None or text) and forward is None and loss is None:
        spec = AnalysisSpec(model, chosen, tuple(estimators), tuple(levels), calib_batches, seed,
                            data=text, dtype=dtype, device=device, imatrix=weighted)  # fmt: skip
        return analyze(spec, workers=workers, address=address, gpus_per_worker=gpus_per_worker,
                       progress=progress, cache=cache)  # fmt: skip
    if isinstance(data, TextData | TensorData):
        raise MixprecError(
            f"{type(data).__name__} is read for a source string: pass model='hf:DIR' (or any "
            "source for TensorData) and no forward/loss, or give a model object your own batches"
        )
    if workers or address is not None or gpus_per_worker:
        raise MixprecError(
            "a model object or your own batches are scored in this process (workers=0): "
            "Ray workers load a source string (hf:DIR, module:pkg.mod:factory) themselves"
        )
    if data is None and (forward is not None or loss is not None):
        raise MixprecError("forward/loss were given without data: pass the batches too")
    calibration = None if data is None else Calibration.of(data, forward, loss)
    bundle = as_bundle(model, calibration, seed)
    if placement != Placement():  # by default everything runs where it already is
        bundle = place(bundle, placement)
    spec = AnalysisSpec(bundle.name, chosen, tuple(estimators), tuple(levels), calib_batches, seed,
                        imatrix=weighted)  # fmt: skip
    bundle = bundle if imatrix is None else bundle.with_imatrix(imatrix)
    return score_bundle(spec, bundle, progress, cache)
