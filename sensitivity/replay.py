"""Replay the FP32 outputs of blocks that run before a quantized unit, instead of recomputing.

Quantizing a unit changes nothing upstream of it, so when isolation scores a layer of block k
the outputs of blocks 0..k-1 are the reference ones, bit for bit. They are recorded once per
calibration batch and model call (a task may call the model several times per batch) and
returned by those blocks' `forward` while the unit is scored: about 40% fewer block
evaluations for a layer-by-layer analysis, with identical scores.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_map_only

from mixprec.tasks import Batch
from mixprec.units import discover_units, quantizable_layers

#: recordings larger than this are dropped (a big model's activations would crowd memory)
MAX_RECORDED_BYTES = 1 << 30

Outputs = list[dict[str, Any]]  # per model call: block -> its output


@dataclass
class BlockRecording:
    """Per batch and model call, each block's output; and the order things ran in a call."""

    blocks: dict[str, nn.Module]
    #: block -> (event index at its start, at its end) within one model call
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: quantizable layer -> event index of its first call within one model call
    first_call: dict[str, int] = field(default_factory=dict)
    outputs: list[Outputs] = field(default_factory=list)

    def upstream_of(self, modules: Sequence[str]) -> list[str]:
        """Blocks whose whole call ends before any of `modules` first runs."""
        starts = [self.first_call[m] for m in modules if m in self.first_call]
        if not self.outputs or not starts or len(starts) != len(modules):
            return []
        first = min(starts)
        return [name for name, (_, end) in self.spans.items() if end < first]


def record_blocks(
    model: nn.Module, batches: Sequence[Batch], run: Callable[[nn.Module, Batch], torch.Tensor]
) -> tuple[list[torch.Tensor], BlockRecording]:
    """Run `run` on every batch (the reference pass) while recording block outputs."""
    modules = dict(model.named_modules())
    blocks = [u.name for u in discover_units(model, fusion=None) if u.level == "block"]
    recording = BlockRecording({name: modules[name] for name in blocks})
    calls: Outputs = []
    events: list[list[tuple[str, str]]] = []
    repeated: set[str] = set()

    def new_call(module: nn.Module, args: Any) -> None:
        calls.append({})
        events.append([])

    def on_start(name: str, kind: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any) -> None:
            if events:
                events[-1].append((kind, name))

        return hook

    def on_end(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if calls:
                repeated.update([name] if name in calls[-1] else [])
                calls[-1][name] = output
                events[-1].append(("end", name))

        return hook

    handles = [model.register_forward_pre_hook(new_call)]
    for name, block in recording.blocks.items():
        handles += [block.register_forward_pre_hook(on_start(name, "block"))]
        handles += [block.register_forward_hook(on_end(name))]
    for name, layer in quantizable_layers(model).items():
        handles += [layer.register_forward_pre_hook(on_start(name, "layer"))]
    outputs = []
    try:
        with torch.inference_mode():
            for batch in batches:
                calls.clear()
                events.clear()
                outputs.append(run(model, batch))
                recording.outputs.append(list(calls))
                if len(recording.outputs) == 1 and events:
                    _index_events(recording, events[0])
    finally:
        for handle in handles:
            handle.remove()
    shapes = {tuple(map(len, per_batch)) for per_batch in recording.outputs}
    stored = sum(_nbytes(call) for per_batch in recording.outputs for call in per_batch)
    if repeated or len(shapes) != 1 or stored > MAX_RECORDED_BYTES:
        recording.outputs = []  # blocks called twice a call, or calls differing: no replay
    return outputs, recording


def _index_events(recording: BlockRecording, events: list[tuple[str, str]]) -> None:
    starts: dict[str, int] = {}
    for index, (kind, name) in enumerate(events):
        if kind == "block":
            starts[name] = index
        elif kind == "end":
            recording.spans[name] = (starts[name], index)
        else:
            recording.first_call.setdefault(name, index)


def _nbytes(output: Any) -> int:
    leaves, _ = tree_flatten(output)
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))


@contextmanager
def replaying(
    model: nn.Module, recording: BlockRecording, modules: Sequence[str], batch: int
) -> Iterator[None]:
    """While active, blocks upstream of `modules` return their recorded output for `batch`."""
    patched = recording.upstream_of(modules)
    if not patched:
        yield
        return
    calls = iter(recording.outputs[batch])
    current: list[dict[str, Any]] = [{}]

    def next_call(module: nn.Module, args: Any) -> None:
        current[0] = next(calls)

    def recorded(name: str) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            # a copy, so in-place edits downstream cannot touch the record
            return tree_map_only(torch.Tensor, torch.clone, current[0][name])

        return forward

    saved = {name: recording.blocks[name].__dict__.get("forward") for name in patched}
    handle = model.register_forward_pre_hook(next_call)
    try:
        for name in patched:
            recording.blocks[name].forward = recorded(name)
        yield
    finally:
        handle.remove()
        for name, forward in saved.items():
            recording.blocks[name].__dict__.pop("forward", None)
            if forward is not None:
                recording.blocks[name].forward = forward
