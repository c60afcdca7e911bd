"""llama.cpp's importance matrix (`llama-imatrix` output, `llama-quantize --imatrix`): per GGUF
weight, the mean square of each input column over calibration text, read as llama-quantize
reads it (common/imatrix-loader.cpp and tools/quantize): the GGUF format's `NAME.in_sum2`
over `NAME.counts` per expert (a count of 0 gives 1), or the legacy binary format's sums over
its call count. Reading a file only parses numbers: nothing in it is run.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mixprec.errors import MixprecError
from mixprec.units import quantizable_layers

if TYPE_CHECKING:
    from mixprec.models import ModelBundle
    from mixprec.plan import PrecisionPlan

GGUF_MAGIC = b"GGUF"
TOKEN_EMBEDDING = "token_embd.weight"  # llama-quantize skips a mismatched entry for it


@dataclass(frozen=True)
class Imatrix:
    """An importance matrix: flat float32 per GGUF tensor name (experts one after another)."""

    path: Path
    digest: str  # sha256 of the file, recorded with what it made
    entries: Mapping[str, np.ndarray]
    datasets: tuple[str, ...]
    chunk_count: int

    def for_tensor(self, name: str, shape: tuple[int, ...]) -> torch.Tensor | None:
        """The importance llama-quantize passes for tensor `name` of (torch) `shape`: per
        column (2-D) or per expert and column (3-D); None where the file has none for it."""
        values = self.entries.get(name)
        if values is None:
            return None
        cols = shape[-1]
        experts = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        if values.size != cols * experts:
            if name == TOKEN_EMBEDDING:
                return None
            raise MixprecError(
                f"--imatrix {self.path}: {name} has {values.size} values, but its tensor needs "
                f"{cols * experts} ({cols} columns x {experts} expert(s)); made for another model?"
            )
        out = torch.from_numpy(values.copy())
        return out.reshape(*shape[:-2], cols) if len(shape) > 2 else out


def load(path: Path) -> Imatrix:
    """Read `path` (GGUF or legacy format); one-line errors for anything else."""
    if not path.is_file():
        raise MixprecError(f"--imatrix {path} is not a file; give llama-imatrix's output")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if data[:4] == GGUF_MAGIC:
        entries, datasets, chunks = _gguf(path)
    else:
        entries, datasets, chunks = _legacy(path, data)
    if not entries:
        raise MixprecError(f"--imatrix {path} holds no entries")
    for name, values in entries.items():
        if not np.isfinite(values).all():
            raise MixprecError(f"--imatrix {path}: {name} holds non-finite values")
    return Imatrix(path, digest, entries, datasets, chunks)


def _gguf(path: Path) -> tuple[dict[str, np.ndarray], tuple[str, ...], int]:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError) as error:
        raise MixprecError(f"--imatrix {path} is not a readable GGUF ({error})") from None
    keys = ("imatrix.datasets", "imatrix.chunk_count", "imatrix.chunk_size")
    if any(key not in reader.fields for key in keys):
        raise MixprecError(f"--imatrix {path} has no imatrix metadata ({', '.join(keys)}); "
                           "llama-quantize refuses it too")  # fmt: skip
    tensors = {t.name: t for t in reader.tensors}
    entries: dict[str, np.ndarray] = {}
    for name, tensor in tensors.items():
        if not name.endswith(".in_sum2"):
            continue
        weight = name.removesuffix(".in_sum2")
        counts = tensors.get(weight + ".counts")
        if counts is None or tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise MixprecError(f"--imatrix {path}: {weight} needs F32 .in_sum2 and .counts")
        sums = np.asarray(tensor.data, np.float32).reshape(-1)
        raw = np.asarray(counts.data, np.float32).reshape(-1)  # std::lround: halves away
        n = (np.sign(raw) * np.floor(np.abs(raw) + 0.5)).astype(np.int64)
        per_expert = sums.reshape(n.size, -1)
        count = n.astype(np.float32)[:, None]
        safe = np.where(count > 0, count, np.float32(1))
        entries[weight] = np.where(count > 0, per_expert / safe, np.float32(1)).reshape(-1)
    datasets = tuple(str(d) for d in reader.fields["imatrix.datasets"].contents())
    chunks = int(reader.fields["imatrix.chunk_count"].contents())
    return entries, datasets, chunks


def _legacy(path: Path, data: bytes) -> tuple[dict[str, np.ndarray], tuple[str, ...], int]:
    """int32 entries; per entry int32 name length, name, int32 calls, int32 values, float32
    values; then optionally int32 chunk count, int32 length and the dataset's name."""
    at = 0

    def take(fmt: str) -> tuple[int, ...]:
        nonlocal at
        size = struct.calcsize(fmt)
        if at + size > len(data):
            raise MixprecError(f"--imatrix {path} is neither a GGUF nor a legacy imatrix file "
                               f"(ends early at byte {at})")  # fmt: skip
        values = struct.unpack_from(fmt, data, at)
        at += size
        return values

    (count,) = take("<i")
    if count < 1:
        raise MixprecError(f"--imatrix {path} is neither a GGUF nor a legacy imatrix file")
    entries: dict[str, np.ndarray] = {}
    for _ in range(count):
        (length,) = take("<i")
        if not 0 < length <= 4096:
            raise MixprecError(f"--imatrix {path}: bad entry name length {length}")
        name = bytes(take(f"<{length}s")[0]).decode("utf-8", "replace")
        calls, size = take("<ii")
        if size < 1:
            raise MixprecError(f"--imatrix {path}: {name} has {size} values")
        values = np.frombuffer(bytes(take(f"<{4 * size}s")[0]), dtype="<f4").astype(np.float32)
        entries[name] = values / np.float32(calls) if calls > 0 else values
    chunks = 0
    datasets: tuple[str, ...] = ()
    if at + 4 <= len(data):
        (chunks,) = take("<i")
        if at + 4 <= len(data):
            (length,) = take("<i")
            if 0 < length <= len(data) - at:
                datasets = (bytes(take(f"<{length}s")[0]).decode("utf-8", "replace"),)
    return entries, datasets, chunks


def layer_importance(
    matrix: Imatrix, model: nn.Module, modules: Iterable[str]
) -> dict[str, torch.Tensor]:
    """The importance of each of `modules` (layers of `model`) that the matrix holds, found by
    the layer's GGUF tensor name (a tied head is the token embedding)."""
    from mixprec.export_llamacpp import gguf_names
    from mixprec.units import weight_matrix

    names, _ = gguf_names(model, list(modules))
    layers = quantizable_layers(model)
    found = {}
    for module, tensor in names.items():
        shape = tuple(weight_matrix(layers[module]).shape)
        values = matrix.for_tensor(tensor, shape)
        if values is not None:
            found[module] = values
    return found


def with_importance(bundle: ModelBundle, matrix: Imatrix) -> ModelBundle:
    """`bundle` whose layers are scored and measured as llama-quantize --imatrix quantizes."""
    found = layer_importance(matrix, bundle.model, quantizable_layers(bundle.model))
    if not found:
        raise MixprecError(f"--imatrix {matrix.path} holds none of {bundle.name}'s layers "
                           "(by their GGUF names); made for another model?")  # fmt: skip
    return replace(bundle, importance=found)


def scored_with_other(plan: PrecisionPlan, matrix: Imatrix | None) -> list[str]:
    """A warning when `plan` was scored with an importance matrix and goes to llama.cpp
    without it (or with another): its predictions assumed the matrix's rounding."""
    scored = plan.provenance.get("imatrix_sha256")
    if not scored or (matrix is not None and matrix.digest == scored):
        return []
    named = plan.provenance.get("imatrix", "?")
    if matrix is None:
        return [f"the plan was scored with the importance matrix {named}: pass --imatrix "
                f"{named}, or llama.cpp rounds its layers otherwise than predicted"]  # fmt: skip
    return [f"--imatrix {matrix.path} is not the importance matrix the plan was scored with "
            f"({named}): llama.cpp rounds its layers otherwise than predicted"]  # fmt: skip
