"""A plan as llama.cpp's llama-quantize takes it: a `--tensor-type-file` of bare
`PATTERN=TYPE` entries (each an anchored regex naming one GGUF tensor), a quantized base type
(llama-quantize ignores every override when the base type is F16/BF16/F32) and the command
that applies them; the token embedding and the output head go by their own flags, and a tied
head is the token embedding (llama.cpp stores it once)."""

from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from mixprec.errors import MixprecError
from mixprec.kernels import formats
from mixprec.kernels.formats import NumberFormat
from mixprec.placement import dtype_name
from mixprec.plan import PrecisionPlan
from mixprec.scheme import Scheme
from mixprec.units import layer_weight, quantizable_layers, weight_matrix

# The llama.cpp type each other format is stored as: llama.cpp's values differ from the format's
# (other rounding, scale dtype or block), so each use is warned about. Family "ggml" formats
# are llama.cpp's own types, and the native ones its f32/f16/bf16.
LLAMACPP_NEAREST: dict[str, str] = {
    "mxfp4": "mxfp4", "nvfp4": "nvfp4", "int8": "q8_0", "int8_g128": "q8_0", "int4_g32": "q4_0",
    "int4": "q4_0", "int4_g64": "q4_0", "int4_g128": "q4_0", "int4_asym_g128": "q4_1",
    "nvint4": "q4_0", "int3": "q3_k", "int3_g128": "q3_k", "int2": "q2_k", "int2_g64": "q2_k",
    "fp8_e4m3": "q8_0", "fp8_e5m2": "q8_0", "mxfp8_e4m3": "q8_0", "mxfp8_e5m2": "q8_0",
    "mxint8": "q8_0", "mxint4": "q4_0", "fp6_e3m2": "q6_k", "fp6_e2m3": "q6_k",
    "mxfp6_e3m2": "q6_k", "mxfp6_e2m3": "q6_k", "fp4_e2m1": "iq4_nl", "ct_w8a16": "q8_0",
    "ct_w4a16": "q4_0", "ct_w4a16_asym": "q4_1", "ct_nvfp4": "nvfp4", "mo_nvfp4": "nvfp4",
    "ct_mxfp4": "mxfp4", "ct_mxfp8_e4m3": "q8_0", "mo_mxfp8_e4m3": "q8_0",
    "ct_fp8_e4m3_block": "q8_0", "ct_fp8_e4m3_g128": "q8_0", "fp8_e4m3_tensor": "q8_0",
}  # fmt: skip
LLAMACPP_NATIVE = {"fp32": "f32", "fp16": "f16", "bf16": "bf16"}
# What llama-quantize stores instead of a K-quant on a row that does not hold whole super-blocks
# of 256 (its own fallback, at least as many bits).
ROW_FALLBACK = {"q2_k": "q4_0", "q3_k": "q4_0", "q4_k": "q5_0", "q5_k": "q5_1", "q6_k": "q8_0"}
# llama-quantize's name for a whole-model type with this ggml type (with --pure: every tensor)
BASE_TYPES = {
    "q8_0": "Q8_0", "q6_k": "Q6_K", "q5_k": "Q5_K", "q5_1": "Q5_1", "q5_0": "Q5_0",
    "q4_k": "Q4_K", "q4_1": "Q4_1", "q4_0": "Q4_0", "iq4_nl": "IQ4_NL", "mxfp4": "MXFP4_MOE",
    "q3_k": "Q3_K", "q2_k": "Q2_K",
}  # fmt: skip
TOKEN_EMBEDDING, OUTPUT = "token_embd.weight", "output.weight"


def ggml_format(ggml_type: str) -> NumberFormat | None:
    """mixprec's format holding exactly llama.cpp type `ggml_type`, if it has one."""
    return next((f for f in formats.all() if f.ggml_type == ggml_type), None)


def llamacpp_type(fmt: NumberFormat, row: int | None = None) -> tuple[str, bool]:
    """The llama.cpp type that stores `fmt` (on rows of `row` values, where given, as
    llama-quantize falls back on rows without whole blocks), and whether it holds exactly the
    same values."""
    if not fmt.is_quantized:
        return LLAMACPP_NATIVE[fmt.name], True
    kind, same = (fmt.ggml_type, True) if fmt.ggml_type else (LLAMACPP_NEAREST[fmt.name], False)
    if row is None:
        return kind, same
    if row % 256 and kind in ROW_FALLBACK:
        kind, same = ROW_FALLBACK[kind], False
    stored = ggml_format(kind)
    if stored is None or row % stored.row_multiple == 0:
        return kind, same
    if stored.row_multiple > 32:  # llama-quantize has no fallback for it and stops
        raise MixprecError(
            f"llama.cpp cannot store {fmt.name} as {kind} on rows of {row} values (blocks of "
            f"{stored.row_multiple}); plan another format"
        )
    return "f16", False  # llama-quantize's "must use F16 due to unusual shape"


def substitution(fmt: NumberFormat, kind: str, row: int) -> str:
    """Why a layer planned as `fmt` is stored as llama.cpp's `kind` instead."""
    if fmt.ggml_type and fmt.ggml_type != kind:
        return f"llama.cpp stores {fmt.name} as {kind} on rows of {row} (no whole blocks)"
    return f"llama.cpp stores {fmt.name} as {kind}, with other values"


@dataclass(frozen=True)
class LlamaCppOverrides:
    """What llama-quantize needs to apply a plan."""

    types: dict[str, str]  # GGUF tensor -> ggml type, in the file
    base: str  # llama-quantize's whole-model type
    token_embedding: str | None
    output: str | None
    warnings: tuple[str, ...]

    def text(self) -> str:
        """The `--tensor-type-file`: one `^name$=type` per line."""
        return "".join(f"^{re.escape(t)}$={kind}\n" for t, kind in self.types.items())

    def command(self, types_file: Path, imatrix: Path | None = None) -> str:
        flags = ["llama-quantize", "--pure", "--tensor-type-file", shlex.quote(str(types_file))]
        if imatrix is not None:
            flags += ["--imatrix", shlex.quote(str(imatrix))]
        if self.token_embedding:
            flags += ["--token-embedding-type", self.token_embedding]
        if self.output:
            flags += ["--output-tensor-type", self.output]
        return " ".join([*flags, "MODEL-F16.gguf", "MODEL-mixprec.gguf", self.base])


def gguf_names(model: nn.Module, modules: list[str]) -> tuple[dict[str, str], list[str]]:
    """module -> GGUF tensor name (gguf's own HF name map for the model's architecture; a
    head tied to the input embedding is the token embedding)."""
    import gguf

    model_type = model_type_of(model)
    arch = {name: key for key, name in gguf.MODEL_ARCH_NAMES.items()}.get(model_type)
    if arch is None:
        raise MixprecError(
            f"no GGUF architecture for model type {model_type!r}; export with --to json or hf"
        )
    config = getattr(model, "config", None)
    blocks = int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layer", 0))
    mapping = gguf.get_tensor_name_map(arch, blocks)
    embedding = _input_embedding(model)
    layers = quantizable_layers(model)
    names, missing = {}, []
    for module in modules:
        found = mapping.get_name(module, try_suffixes=(".weight",))
        if embedding is not None and layer_weight(layers[module]) is embedding:
            names[module] = TOKEN_EMBEDDING
        elif found is None:
            missing.append(module)
        else:
            names[module] = f"{found}.weight"
    return names, missing


def model_type_of(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", None))


def _input_embedding(model: nn.Module) -> torch.Tensor | None:
    getter = getattr(model, "get_input_embeddings", None)
    module = getter() if callable(getter) else None
    return getattr(module, "weight", None)


def llamacpp_overrides(plan: PrecisionPlan, model: nn.Module) -> LlamaCppOverrides:
    """The plan's types per GGUF tensor, its base type and flags, and warnings."""
    names, missing = gguf_names(model, list(plan.assignment))
    layers = quantizable_layers(model)
    warnings = [f"module {m} has no GGUF tensor name; left out" for m in missing]
    substituted: dict[str, list[str]] = {}  # one warning per substitution, naming its modules
    types: dict[str, str] = {}
    weights: Counter[str] = Counter()
    for module, tensor in names.items():
        scheme = Scheme.parse(plan.assignment[module])
        weight = layer_weight(layers[module])
        fmt = scheme.weight or formats.get(dtype_name(weight.dtype))
        row = int(weight_matrix(layers[module]).shape[-1])
        kind, same = llamacpp_type(fmt, row)
        if not same:
            message = substitution(fmt, kind, row)
            substituted.setdefault(message, []).append(module)
        if scheme.activation is not None:
            message = f"llama.cpp ignores the activation format of {scheme}"
            substituted.setdefault(message, []).append(module)
        types[tensor] = kind
        weights[kind] += weight.numel()
    for message, modules in substituted.items():
        shown = ", ".join(modules[:3]) + (
            f" and {len(modules) - 3} more" if len(modules) > 3 else ""
        )
        warnings.append(f"{message} ({shown})")
    embedding = _input_embedding(model)
    token_embedding = types.pop(TOKEN_EMBEDDING, None)
    if token_embedding is None and embedding is not None:  # not searched: kept as stored
        token_embedding = LLAMACPP_NATIVE[dtype_name(embedding.dtype)]
    output = types.pop(OUTPUT, None)
    based = [kind for kind, _ in weights.most_common() if kind in BASE_TYPES]
    base = BASE_TYPES[based[0]] if based else "Q8_0"
    return LlamaCppOverrides(types, base, token_embedding, output, tuple(warnings))
