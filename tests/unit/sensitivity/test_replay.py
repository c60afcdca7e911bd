"""Replaying upstream blocks' recorded outputs gives bit-identical isolation scores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mixprec.data import content_hash
from mixprec.models import ModelBundle
from mixprec.scheme import Scheme
from mixprec.sensitivity.configs import IsolationConfig
from mixprec.sensitivity.isolation import IsolationEstimator
from mixprec.sensitivity.replay import record_blocks, replaying
from mixprec.tasks import CausalLMTask, OutputTask, SentenceEmbeddingTask
from mixprec.units import discover_units
from tests.helpers.models import make_bert, make_gpt2


def token_batches(vocab: int, masked: bool) -> tuple[dict[str, torch.Tensor], ...]:
    gen = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        ids = torch.randint(3, vocab, (6, 12), generator=gen)
        mask = torch.ones_like(ids)
        if masked:
            for row, length in enumerate([12, 3, 7, 12, 5, 9]):
                mask[row, length:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask})
    return tuple(batches)


def bundles() -> list[ModelBundle]:
    gpt = make_gpt2()
    bert = make_bert(layers=3)
    return [
        ModelBundle("gpt2", gpt, CausalLMTask(), token_batches(64, False), ()),
        ModelBundle("bert", bert, SentenceEmbeddingTask(group=2), token_batches(64, True), ()),
    ]


@pytest.mark.parametrize("bundle", bundles(), ids=lambda b: b.name)
@pytest.mark.parametrize("scheme", ["w:mxfp4", "w:nvfp4,a:nvfp4"])
def test_replay_gives_the_same_scores_as_full_forwards(bundle: ModelBundle, scheme: str) -> None:
    parsed = Scheme.parse(scheme)
    batches = bundle.calibration
    digest = content_hash(batches)
    with_replay, without = (
        IsolationEstimator(IsolationConfig(replay=True)),
        IsolationEstimator(IsolationConfig(replay=False)),
    )
    for unit in discover_units(bundle.model):
        expected = without.per_sample(bundle, unit, parsed, batches, digest)
        assert with_replay.per_sample(bundle, unit, parsed, batches, digest) == expected, unit.name
        if not all(m.startswith("pooler") for m in unit.modules):  # the pooler goes unused
            assert all(value > 0 for value in expected), unit.name


def test_replay_skips_exactly_the_upstream_blocks() -> None:
    bert = make_bert(layers=3)
    task = SentenceEmbeddingTask(group=2)
    batches = token_batches(64, True)
    _, recording = record_blocks(bert, batches, task.outputs)
    assert len(recording.outputs[0]) == 3  # three model calls of two texts each
    blocks = list(recording.blocks)
    assert recording.upstream_of(["encoder.layer.2.output.dense"]) == blocks[:2]
    assert recording.upstream_of(["encoder.layer.0.attention.self.query"]) == []
    assert recording.upstream_of(["encoder.layer.2.output.dense", "pooler.dense"]) == blocks[:2]
    ran: list[str] = []
    hooks = [
        block.register_forward_hook(lambda m, a, o, n=name: ran.append(n))
        for name, block in recording.blocks.items()
    ]
    with torch.inference_mode(), replaying(bert, recording, ["encoder.layer.2.output.dense"], 0):
        task.outputs(bert, batches[0])
    for hook in hooks:
        hook.remove()
    assert "forward" not in vars(recording.blocks[blocks[0]])  # restored after the block
    assert ran.count(blocks[2]) == 3 and ran.count(blocks[0]) == 3  # hooks still see replays


class Twice(nn.Module):
    """One block run twice per forward: its second call depends on the first, so no replay."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4)) for _ in range(2)
        )

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.blocks[1](self.blocks[0](self.blocks[0](inputs)))


def test_a_block_called_twice_per_forward_is_never_replayed() -> None:
    torch.manual_seed(0)
    model = Twice().eval()
    batches = ({"inputs": torch.randn(3, 4)},)
    _, recording = record_blocks(model, batches, OutputTask("twice").outputs)
    assert recording.upstream_of(["blocks.1.0"]) == []


def test_sentence_outputs_ignore_padding_and_grouping() -> None:
    bert = make_bert()
    batch = token_batches(64, True)[0]
    grouped = SentenceEmbeddingTask(group=2).outputs(bert, batch)
    whole = SentenceEmbeddingTask(group=len(batch["input_ids"])).outputs(bert, batch)
    mask = batch["attention_mask"]
    singles = [
        SentenceEmbeddingTask().outputs(
            bert, {"input_ids": batch["input_ids"][i : i + 1], "attention_mask": mask[i : i + 1]}
        )
        for i in range(len(mask))
    ]
    torch.testing.assert_close(grouped, whole, rtol=0, atol=1e-6)
    torch.testing.assert_close(grouped, torch.cat(singles), rtol=0, atol=1e-6)
