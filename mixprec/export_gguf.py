"""A plan as a complete GGUF llama.cpp loads: a base GGUF from llama.cpp's converter gives the
metadata, tokenizer and every untouched tensor; each planned tensor is stored in its llama.cpp
type (mixprec writes the blocks itself: kernels/ggml_blocks.py), and the plan rides along."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from mixprec.errors import MixprecError
from mixprec.export_llamacpp import (
    ggml_format,
    gguf_names,
    llamacpp_type,
    model_type_of,
    substitution,
)
from mixprec.files import atomic_path
from mixprec.imatrix import scored_with_other
from mixprec.kernels import formats, ggml_blocks
from mixprec.kernels.formats import NumberFormat
from mixprec.placement import dtype_name
from mixprec.plan import PrecisionPlan
from mixprec.scheme import Scheme
from mixprec.units import layer_weight, quantizable_layers, weight_matrix

if TYPE_CHECKING:
    from gguf import GGMLQuantizationType, GGUFReader, ReaderTensor

    from mixprec.imatrix import Imatrix

PLAN_KEY = "mixprec.plan"
# A base whose tensor differs from the model's by more than this (relative, in the sum of
# squares: blind to the converter's row permutations) holds another model's weights.
OTHER_WEIGHTS = 1e-2


@dataclass(frozen=True)
class GgufTensor:
    """One planned tensor: its GGUF name, the format it is stored in and the module it is."""

    name: str
    fmt: NumberFormat
    module: str


def planned_tensors(plan: PrecisionPlan, model: nn.Module) -> tuple[list[GgufTensor], list[str]]:
    """Each planned module's GGUF tensor and stored format, and warnings (substitutions)."""
    names, missing = gguf_names(model, list(plan.assignment))
    layers = quantizable_layers(model)
    warnings = [f"module {m} has no GGUF tensor name; left out" for m in missing]
    planned = []
    for module, tensor in names.items():
        weight = layer_weight(layers[module])
        fmt = Scheme.parse(plan.assignment[module]).weight or formats.get(dtype_name(weight.dtype))
        if fmt.family == "native":
            planned.append(GgufTensor(tensor, fmt, module))
            continue
        row = int(weight_matrix(layers[module]).shape[-1])
        kind, same = llamacpp_type(fmt, row)
        stored = ggml_format(kind)
        if stored is None:
            raise MixprecError(
                f"module {module}: mixprec cannot write llama.cpp's {kind} (for {fmt.name}) into "
                "a GGUF yet; export --to llamacpp and apply it with llama-quantize"
            )
        if not same:
            warnings.append(f"module {module}: {substitution(fmt, kind, row)} "
                            f"({stored.bits_per_element:g} bits)")  # fmt: skip
        planned.append(GgufTensor(tensor, stored, module))
    return planned, warnings


def write_gguf(
    plan: PrecisionPlan, model: nn.Module, base: Path, path: Path, imatrix: Imatrix | None = None
) -> list[str]:
    """Copy `base` into `path` with the plan's tensors quantized from the base's own values
    (one tensor at a time), as llama-quantize would given `imatrix`; returns warnings. The
    base must hold this model's weights."""
    import gguf

    reader = _open_base(base)
    planned, warnings = planned_tensors(plan, model)
    warnings += scored_with_other(plan, imatrix)
    arch = _field_text(reader, "general.architecture")
    expected = model_type_of(model)
    if arch != expected:
        raise MixprecError(f"--base {base} is a {arch!r} model, not this plan's {expected!r}")
    tensors = {t.name: t for t in reader.tensors}
    layers = quantizable_layers(model)
    by_name = {p.name: p for p in planned}
    weights = {p.name: weight_matrix(layers[p.module]) for p in planned}
    for item in planned:  # shapes first; the weights of a tensor as its values are read
        tensor = _check_shape(base, tensors.get(item.name), item, weights[item.name])
        if _kept(item):
            _check_weights(base, _values(tensor), item, weights[item.name])
    requantized = [i.name for i in planned if not _kept(i) and
                   tensors[i.name].tensor_type.name not in ("F32", "F16", "BF16")]  # fmt: skip
    if requantized:
        stored = tensors[requantized[0]].tensor_type.name
        warnings.append(f"--base {base} holds {len(requantized)} planned tensors quantized "
                        f"({requantized[0]} is {stored}): they are quantized again from those "
                        "values; the converter's F32/F16 file gives the exact plan")  # fmt: skip
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), arch)
        for field in reader.fields.values():
            if field.name in ("general.architecture", "general.alignment", PLAN_KEY) or \
                    field.name.startswith("GGUF."):  # fmt: skip
                continue
            sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub)
        writer.add_string(PLAN_KEY, json.dumps(plan.to_json(), sort_keys=True))
        if imatrix is not None:  # the keys llama-quantize --imatrix writes
            writer.add_string("quantize.imatrix.file", str(imatrix.path)[:127])
            if imatrix.datasets:
                writer.add_string("quantize.imatrix.dataset", imatrix.datasets[0][:127])
            writer.add_int32("quantize.imatrix.entries_count", len(imatrix.entries))
            writer.add_int32("quantize.imatrix.chunks_count", imatrix.chunk_count)
        for tensor in reader.tensors:
            name, shape, dtype, nbytes, kind = _stored_info(tensor, by_name.get(tensor.name))
            writer.add_tensor_info(name, shape, dtype, nbytes, raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for tensor in reader.tensors:
            wanted = by_name.get(tensor.name)
            if wanted is None or _kept(wanted):
                writer.write_tensor_data(tensor.data)
                continue
            values = _values(tensor)
            _check_weights(base, values, wanted, weights[wanted.name])  # fails: nothing written
            importance = None if imatrix is None else imatrix.for_tensor(wanted.name, values.shape)
            writer.write_tensor_data(_encoded(values, wanted, importance))
        writer.close()
    return warnings


def _kept(item: GgufTensor | None) -> bool:
    """Not planned, or a kept layer: the base's tensor is written as it is."""
    return item is None or item.fmt.family == "native"


def _stored_info(
    tensor: ReaderTensor, item: GgufTensor | None
) -> tuple[str, tuple[int, ...], np.dtype, int, GGMLQuantizationType]:
    """(name, byte shape, dtype, bytes, ggml type) of a tensor as written, before its data."""
    import gguf

    data = tensor.data
    if _kept(item):
        return tensor.name, data.shape, data.dtype, data.nbytes, tensor.tensor_type
    assert item is not None
    shape = tuple(int(n) for n in reversed(tensor.shape))
    row_bytes = shape[-1] // item.fmt.row_multiple * item.fmt.block_bytes
    kind = gguf.GGMLQuantizationType[item.fmt.ggml_type.upper()]
    byte_shape = (*shape[:-1], row_bytes)
    return item.name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), kind


def _values(tensor: ReaderTensor) -> np.ndarray:
    """A base tensor's float32 values (gguf-py decodes every type)."""
    import gguf

    return np.array(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32)


def _encoded(values: np.ndarray, item: GgufTensor, importance: torch.Tensor | None) -> np.ndarray:
    """A planned tensor's ggml blocks, quantized from the base's own values."""
    if importance is None or values.ndim <= 2:
        rows = torch.from_numpy(values.reshape(-1, values.shape[-1]))
        return ggml_blocks.encode(rows, item.fmt, importance).reshape(*values.shape[:-1], -1)
    experts = values.reshape(-1, *values.shape[-2:])  # each expert with its own importance
    per_expert = importance.reshape(-1, values.shape[-1])
    parts = [ggml_blocks.encode(torch.from_numpy(e), item.fmt, w)
             for e, w in zip(experts, per_expert, strict=True)]  # fmt: skip
    return np.stack(parts).reshape(*values.shape[:-1], -1)


def _open_base(base: Path) -> GGUFReader:
    import gguf

    if not base.is_file():
        raise MixprecError(f"--base {base} is not a file; give a GGUF from llama.cpp's converter")
    try:
        return gguf.GGUFReader(str(base))
    except (ValueError, OSError) as error:
        raise MixprecError(f"--base {base} is not a GGUF file ({error})") from None


def _field_text(reader: GGUFReader, key: str) -> str:
    field = reader.fields.get(key)
    return "" if field is None else str(field.contents())


def _check_shape(base: Path, tensor: ReaderTensor | None, item: GgufTensor,
                 weight: torch.Tensor) -> ReaderTensor:  # fmt: skip
    """The base holds this tensor with the model's shape."""
    if tensor is None:
        raise MixprecError(f"--base {base} has no tensor {item.name} (module {item.module})")
    shape = tuple(int(n) for n in reversed(tensor.shape))
    if shape != tuple(weight.shape):
        raise MixprecError(f"--base {base}: {item.name} is {list(shape)}, but module "
                           f"{item.module} is {list(weight.shape)}")  # fmt: skip
    return tensor


def _check_weights(base: Path, values: np.ndarray, item: GgufTensor, weight: torch.Tensor
                   ) -> None:  # fmt: skip
    """The base's tensor holds (up to row order) this model's weights."""
    theirs = float(np.square(values, dtype=np.float64).sum())
    ours = float(weight.detach().double().square().sum())
    if abs(theirs - ours) > OTHER_WEIGHTS * max(ours, 1e-30):
        raise MixprecError(f"--base {base}: {item.name} holds other weights than module "
                           f"{item.module} of this model")  # fmt: skip
