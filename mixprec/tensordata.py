"""Your own inputs for a model that does not read text: a `.safetensors` file of named tensors
(each one key of the model's batches, dim 0 the samples) or a `.npy` array (the model's one
input), drawn into fixed, seeded, disjoint calibration and evaluation samples and batched like
the model's own batches. Both are read without pickle.

    data = TensorData("images.safetensors", calib_samples=64, eval_samples=64)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixprec.errors import MixprecError, at_least, gist

if TYPE_CHECKING:
    import torch

    from mixprec.tasks import Batch
    from mixprec.textdata import TextData

SUFFIXES = (".safetensors", ".npy")
CALIB_SAMPLES, EVAL_SAMPLES, BATCH_SIZE = 64, 64, 16


@dataclass(frozen=True)
class TensorData:
    """Where the inputs are, how many samples each split takes and how many go in a batch."""

    path: str
    calib_samples: int = CALIB_SAMPLES
    eval_samples: int = EVAL_SAMPLES
    batch_size: int = BATCH_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", str(Path(self.path).expanduser().absolute()))
        at_least("--calib-samples", self.calib_samples, 1)
        at_least("--eval-samples", self.eval_samples, 1)
        at_least("batch_size", self.batch_size, 1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorData:
        return cls(**data)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The file's tensors by name (`.npy`: one, named ""); one line naming the problem."""
        import torch

        path = Path(self.path)
        if not path.is_file():
            raise MixprecError(f"no input file at {path}")
        if path.suffix == ".npy":
            import numpy as np

            try:
                array = np.load(path, allow_pickle=False)
            except (ValueError, OSError) as err:
                raise MixprecError(f"{path} is not a .npy array: {gist(err)}") from None
            tensors = {"": torch.from_numpy(np.ascontiguousarray(array))}
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            try:
                tensors = load_file(str(path))
            except Exception as err:  # safetensors raises its own error types
                raise MixprecError(f"{path} is not a safetensors file: {gist(err)}") from None
        else:
            raise MixprecError(f"input file {path} is not {' or '.join(SUFFIXES)}")
        if not tensors or any(t.dim() == 0 for t in tensors.values()):
            raise MixprecError(f"{path} holds no tensor with a samples dimension")
        counts = {t.shape[0] for t in tensors.values()}
        if len(counts) > 1:
            raise MixprecError(f"{path}: its tensors have different sample counts {sorted(counts)}")
        return tensors

    def batches(self, example: Batch) -> tuple[tuple[Batch, ...], tuple[Batch, ...]]:
        """Calibration and evaluation batches with the keys of `example` (one of the model's own
        batches) and its floating dtype, samples drawn without overlap by `seed`."""
        import torch

        tensors = self.tensors()
        keys = _keys(example, tensors, Path(self.path))
        count = next(iter(tensors.values())).shape[0]
        needed = self.calib_samples + self.eval_samples
        if count < needed:
            raise MixprecError(
                f"{self.path} holds {count} samples; {needed} needed ({self.calib_samples} "
                f"calibration + {self.eval_samples} evaluation): lower --calib-samples or "
                "--eval-samples"
            )
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed))
        chosen = {}
        for name, tensor in tensors.items():
            key = keys[name]
            wanted = example[key].dtype
            if wanted.is_floating_point != tensor.is_floating_point():
                raise MixprecError(
                    f"{self.path}: tensor {name or 'the array'} is {tensor.dtype}; the model's "
                    f"{key!r} is {wanted}"
                )
            chosen[key] = tensor[order[:needed]].to(wanted)

        def split(first: int, last: int) -> tuple[Batch, ...]:
            starts = range(first, last, self.batch_size)
            return tuple(
                {k: v[s : min(s + self.batch_size, last)] for k, v in chosen.items()}
                for s in starts
            )

        return split(0, self.calib_samples), split(self.calib_samples, needed)


def is_tensor_file(path: str | Path) -> bool:
    """Inputs (`.safetensors`, `.npy`) rather than text: the file's suffix decides."""
    return Path(path).suffix in SUFFIXES


def data_from_json(data: dict[str, Any]) -> TextData | TensorData:
    """The data a manifest or plan records, as the kind its file is."""
    from mixprec.textdata import TextData

    return TensorData.from_json(data) if is_tensor_file(data["path"]) else TextData.from_json(data)


def _keys(example: Batch, tensors: dict[str, torch.Tensor], path: Path) -> dict[str, str]:
    """Each file tensor's key in the model's batches; a mismatch names both sides."""
    wanted = sorted(example)
    if list(tensors) == [""]:
        if len(wanted) != 1:
            raise MixprecError(
                f"{path} is one array; this model's batches have keys {', '.join(wanted)}: give "
                "a .safetensors file with one tensor per key"
            )
        return {"": wanted[0]}
    if sorted(tensors) != wanted:
        raise MixprecError(
            f"{path} holds tensors {', '.join(sorted(tensors))}; this model's batches have keys "
            f"{', '.join(wanted)}"
        )
    return {name: name for name in tensors}
