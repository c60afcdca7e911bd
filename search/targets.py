"""The runtimes a plan is made for, and what each runs: `any` is mixprec's own evaluation
(every format, every shape); `llamacpp` runs llama.cpp's own types (family "ggml") and its
f16/bf16/f32, weights only, on rows that hold whole blocks (32; 256 for K-quants), where
llama-quantize would silently fall back to another type; `compressed-tensors` (vLLM) runs the
schemes mixprec writes (weight-only, and FP8 / MXFP8 / MXFP4 with their dynamic activations),
integer groups only on rows of whole groups (its kernels refuse others), one scheme per fused
layer (q/k/v, gate/up), and never quantizes an output head tied to the embedding; `modelopt`
(vLLM's ModelOpt loader) runs ModelOpt's W4A16_NVFP4, FP8_PER_CHANNEL_PER_TOKEN and MXFP8 on rows
of whole blocks, with the same fusion and tied-head rules. A plan records its target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mixprec.errors import MixprecError, one_of
from mixprec.kernels import formats
from mixprec.scheme import KEEP, Scheme
from mixprec.search.cost import CostModel
from mixprec.search.space import matching_units
from mixprec.units import DEFAULT_FUSION, RUNTIME_FUSION

TARGETS = ("any", "llamacpp", "compressed-tensors", "modelopt")
# the shards a target's runtime loads into one fused layer, which must share one scheme (vLLM:
# QKVParallelLinear, MergedColumnParallelLinear); other targets tie what mixprec ties by default
FUSION: dict[str, tuple[tuple[str, ...], ...]] = {
    "compressed-tensors": RUNTIME_FUSION,
    "modelopt": RUNTIME_FUSION,
}


TIED_HEAD = "vLLM runs an output head tied to the input embedding as the embedding, unquantized"
EXAMPLES = {"llamacpp": "w:q4_k, w:iq4_nl, w:q6_k, w:q8_0",
            "compressed-tensors": "w:ct_w4a16, w:ct_nvfp4, w:ct_w8a16, w:fp8_e4m3",
            "modelopt": "w:mo_nvfp4, w:fp8_e4m3,a:fp8_e4m3, "
                        "w:mo_mxfp8_e4m3,a:mo_mxfp8_e4m3"}  # fmt: skip


def fusion(target: str) -> tuple[tuple[str, ...], ...]:
    """The roles whose layers under one parent are one decision for `target`."""
    one_of("target", target, TARGETS)
    return FUSION.get(target, DEFAULT_FUSION)


def refusal(target: str, scheme: Scheme, shape: Sequence[int], tied: bool = False
            ) -> str | None:  # fmt: skip
    """Why `target` cannot run `scheme` on a weight of `shape` (out, in), `tied` to the input
    embedding or not; None: it can."""
    one_of("target", target, TARGETS)
    if target == "any" or scheme.is_keep:
        return None
    if target == "compressed-tensors":
        return _compressed_tensors_refusal(scheme, shape, tied)
    if target == "modelopt":
        return _modelopt_refusal(scheme, shape, tied)
    if scheme.activation is not None:
        return f"llama.cpp has no activation formats ({scheme})"
    fmt = scheme.weight
    assert fmt is not None
    if fmt.is_quantized and fmt.family != "ggml":
        own = ", ".join(f.name for f in formats.all() if f.family == "ggml")
        return f"llama.cpp has no {fmt.name} (its own types: {own})"
    row = int(shape[-1])
    if row % fmt.row_multiple:
        return f"rows of {row} are not a multiple of {fmt.name}'s block of {fmt.row_multiple}"
    return None


def _compressed_tensors_refusal(scheme: Scheme, shape: Sequence[int], tied: bool) -> str | None:
    from mixprec.export_compressed import CT_WRITTEN

    return _vllm_refusal(scheme, shape, tied, CT_WRITTEN, "compressed-tensors schemes")


def _modelopt_refusal(scheme: Scheme, shape: Sequence[int], tied: bool) -> str | None:
    from mixprec.export_modelopt import MO_ALGORITHMS

    return _vllm_refusal(scheme, shape, tied, tuple(MO_ALGORITHMS), "ModelOpt's algorithms")


def _vllm_refusal(scheme: Scheme, shape: Sequence[int], tied: bool, written: Sequence[str],
                  what: str) -> str | None:  # fmt: skip
    """vLLM's rules for the checkpoint formats mixprec writes (`written` schemes, named
    `what`)."""
    fmt = scheme.weight
    if fmt is None or str(scheme) not in written:
        return f"mixprec writes {what} ({', '.join(written)}), not {scheme}"
    if tied:
        return TIED_HEAD
    row = int(shape[-1])
    if fmt.block_size and row % fmt.block_size:
        return (f"rows of {row} are not a multiple of {fmt.name}'s group of {fmt.block_size} "
                "(vLLM's kernels need whole groups)")  # fmt: skip
    if fmt.block_rows and int(shape[0]) % fmt.block_rows:
        return (f"{shape[0]} outputs are not a multiple of {fmt.name}'s tile of "
                f"{fmt.block_rows} rows (vLLM's kernels need whole tiles)")  # fmt: skip
    return None


def target_space(
    costs: CostModel, shapes: Mapping[str, Sequence[int]], target: str,
    tied: frozenset[str] = frozenset(),
) -> np.ndarray | None:  # fmt: skip
    """[units, schemes] booleans: what `target` runs for each unit (None: everything); `tied`
    names the layers whose weight is the input embedding's."""
    one_of("target", target, TARGETS)
    if target == "any":
        return None
    allowed = np.ones((len(costs.units), len(costs.schemes)), dtype=bool)
    for row, unit in enumerate(costs.units):
        layers = costs.members[unit] or (unit,)
        for column, text in enumerate(costs.schemes):
            scheme = Scheme.parse(text)
            allowed[row, column] = all(refusal(target, scheme, shapes[m], m in tied) is None
                                       for m in layers)  # fmt: skip
    runnable = [s for i, s in enumerate(costs.schemes) if s != KEEP and allowed[:, i].any()]
    if not runnable:
        raise MixprecError(
            f"target {target} runs none of the candidates ({', '.join(costs.schemes)}); "
            f"score its own schemes, e.g. {EXAMPLES[target]}"
        )
    return allowed


def check_spaces(
    costs: CostModel,
    shapes: Mapping[str, Sequence[int]],
    target: str,
    spaces: Mapping[str, Sequence[str]],
    tied: frozenset[str] = frozenset(),
) -> None:
    """A search space that asks for a scheme the target cannot run on a layer it names is a
    mistake: one line naming the layer and why."""
    if target == "any":
        return
    for pattern, schemes in spaces.items():
        for row in matching_units(costs, pattern, "search space"):
            unit = costs.units[row]
            layers = costs.members[unit] or (unit,)
            for text in schemes:
                scheme = Scheme.parse(text)
                reasons = [(m, refusal(target, scheme, shapes[m], m in tied)) for m in layers]
                for layer, why in reasons:
                    if why:
                        raise MixprecError(
                            f"search space {pattern!r} asks for {scheme} on {layer}, which "
                            f"target {target} cannot run: {why}"
                        )
