"""Where a model runs and in which dtype: `--dtype auto|bf16|fp16|fp32` (auto: the checkpoint's
own) and `--device auto|cpu|cuda|cuda:N` (auto: the first GPU where one is visible).

The FP reference is the model in its own dtype. Quantize-dequantize is always computed in
float32 and cast back to the model's dtype (see `mixprec.plan.apply_plan`), so a bf16 weight
under a scheme is `qdq(w.float()).to(bfloat16)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mixprec.errors import MixprecError, one_of

if TYPE_CHECKING:  # the CLI and run configs read the names below without importing torch
    import torch

    from mixprec.models import ModelBundle

DTYPES = ("auto", "bf16", "fp16", "fp32")
DEVICE_FORMS = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def torch_dtypes() -> dict[str, torch.dtype]:
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of a torch floating dtype (`bf16`), or its torch spelling."""
    names = {v: k for k, v in torch_dtypes().items()}
    return names.get(dtype, str(dtype).removeprefix("torch."))


@dataclass(frozen=True)
class Placement:
    """A dtype and device request, checked on creation; `auto` is resolved per model."""

    dtype: str = "auto"
    device: str = "auto"

    def __post_init__(self) -> None:
        one_of("--dtype", self.dtype, DTYPES)
        if not _DEVICE.match(self.device):
            raise MixprecError(f"unknown --device {self.device!r}; valid: {DEVICE_FORMS}")

    def torch_dtype(self, own: torch.dtype) -> torch.dtype:
        """The dtype to run in: the requested one, or `own` (the checkpoint's) for auto."""
        return own if self.dtype == "auto" else torch_dtypes()[self.dtype]

    def torch_device(self) -> torch.device:
        """The device to run on; a CUDA device that is not there is one line naming what is."""
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        device = torch.device(self.device)
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0:
                raise MixprecError(
                    f"--device {self.device}: no CUDA device is visible here (use --device cpu "
                    "or auto)"
                )
            if device.index is not None and device.index >= count:
                raise MixprecError(
                    f"--device {self.device}: only {count} CUDA device(s) here (cuda:0 to "
                    f"cuda:{count - 1})"
                )
        return device


def place(bundle: ModelBundle, placement: Placement) -> ModelBundle:
    """The bundle in the requested dtype on the requested device: its model, and its batches
    (floating inputs cast to the model's dtype, token ids kept as they are)."""
    device = placement.torch_device()
    own = model_dtype(bundle.model)
    dtype = placement.torch_dtype(own)
    here = model_device(bundle.model)
    if dtype == own and (device.type, device.index or 0) == (here.type, here.index or 0):
        return bundle
    model = bundle.model.to(device=device, dtype=dtype)
    return replace(
        bundle,
        model=model,
        calibration=tuple(move_batch(b, device, dtype) for b in bundle.calibration),
        evaluation=tuple(move_batch(b, device, dtype) for b in bundle.evaluation),
    )


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype of the model's first floating parameter (float32 where it has none)."""
    import torch

    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


def model_device(model: torch.nn.Module) -> torch.device:
    import torch

    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def move_batch(batch: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """A batch (tensor, mapping, tuple or list of them) on `device`, floats in `dtype`."""
    import torch

    if isinstance(batch, torch.Tensor):
        target = dtype if batch.is_floating_point() else batch.dtype
        return batch.to(device=device, dtype=target)
    if isinstance(batch, dict):
        return {k: move_batch(v, device, dtype) for k, v in batch.items()}
    if isinstance(batch, tuple | list):
        return type(batch)(move_batch(v, device, dtype) for v in batch)
    return batch
