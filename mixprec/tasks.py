"""What a model is for: how to run it, its task loss, and the metrics that judge a quantized copy.

The task loss has a nonzero gradient at the FP32 weights (cross-entropy, next-token loss,
in-batch contrastive loss); a loss against the model's own FP32 output would not.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mixprec.comparison import PerSample
from mixprec.errors import MixprecError

Batch = Mapping[str, torch.Tensor]
DIVERGENCES = ("mse", "kl")  # how a quantized output is compared with FP32 (logits: kl)


@dataclass(frozen=True)
class Observed:
    """A quantized model's outputs on the evaluation batches, beside the FP32 model's."""

    outputs: Sequence[torch.Tensor]
    reference: Sequence[torch.Tensor]
    batches: Sequence[Batch]


class Task(ABC):
    """How to run a model on a batch, its task loss, and its quality metrics vs FP32."""

    #: "kl" where outputs are logits of a distribution, "mse" otherwise
    divergence: str = "mse"
    #: False where the task knows only the model's output and so has no task loss
    has_loss: bool = True
    #: True where the loss is the mean of each sample's own loss (not coupled in a batch)
    separable: bool = False

    @abstractmethod
    def outputs(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """The tensor compared with the FP32 model's (logits or embeddings)."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Scalar task loss whose gradient at the FP32 weights is not zero."""

    def task_metrics(self, run: Observed) -> dict[str, float]:
        """Task-specific metrics of the quantized outputs (FP32 `reference` alongside)."""
        return {}

    #: the metric a plan is judged by ("": the output divergence to FP32)
    primary: str = ""

    def primary_metric(self) -> str:
        return self.primary or f"output_{self.divergence}"

    def per_sample(self, run: Observed) -> dict[str, PerSample]:
        """The metrics that are ratios of sums over samples, per sample (for intervals and
        paired comparisons): the output divergence, and the task's own where it has them."""
        if self.divergence == "kl":
            parts = [_kl_rows(o, r) for o, r in zip(run.outputs, run.reference, strict=True)]
        else:
            parts = [_mse_rows(o, r) for o, r in zip(run.outputs, run.reference, strict=True)]
        sums, counts = (np.concatenate([p[i] for p in parts]) for i in (0, 1))
        return {f"output_{self.divergence}": PerSample(sums, counts)}

    def metrics(self, run: Observed) -> dict[str, float]:
        """Task metrics plus the output divergence to FP32 (KL or MSE)."""
        result = self.task_metrics(run)
        result[f"output_{self.divergence}"] = self.divergence_to_reference(
            run.outputs, run.reference
        )
        return result

    def divergence_to_reference(
        self, outputs: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]
    ) -> float:
        """Mean KL(FP32 || quantized) per position for logits, else mean squared error."""
        if self.divergence == "kl":
            return _mean_kl(outputs, reference)
        return _mean_mse(outputs, reference)

    def divergence_per_sample(self, output: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
        """`divergence_to_reference` of each sample (the output's leading dim) on its own."""
        rows = _kl_rows if self.divergence == "kl" else _mse_rows
        sums, counts = rows(output, reference)
        return sums / np.maximum(counts, 1.0)

    def samples(self, batch: Batch) -> int:
        """How many examples a batch holds (the leading dim of its tensors)."""
        return int(next(iter(batch.values())).shape[0])

    def split(self, batch: Batch) -> list[Batch]:
        """The batch as one batch per sample where the loss is separable, else whole."""
        if not self.separable:
            return [batch]
        return [
            {k: v[row : row + 1] for k, v in batch.items()} for row in range(self.samples(batch))
        ]


def _mean_kl(outputs: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    """Mean over positions of KL(P_fp32 || P_quantized) in nats."""
    total, count = 0.0, 0
    for out, ref in zip(outputs, reference, strict=True):
        ref_logp = F.log_softmax(ref.float().reshape(-1, ref.shape[-1]), dim=-1)
        out_logp = F.log_softmax(out.float().reshape(-1, out.shape[-1]), dim=-1)
        per_position = F.kl_div(out_logp, ref_logp, log_target=True, reduction="none").sum(-1)
        # KL is never negative; float32 sums over a large vocabulary can dip just below 0
        total += float(per_position.clamp_min(0.0).sum())
        count += ref_logp.shape[0]
    return total / count


def _kl_rows(out: torch.Tensor, ref: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per sample (leading dim): summed KL over its positions, and its position count."""
    positions = ref[0].numel() // ref.shape[-1] if ref.shape[0] else 0
    ref_logp = F.log_softmax(ref.float().reshape(-1, ref.shape[-1]), dim=-1)
    out_logp = F.log_softmax(out.float().reshape(-1, out.shape[-1]), dim=-1)
    kl = F.kl_div(out_logp, ref_logp, log_target=True, reduction="none").sum(-1).clamp_min(0.0)
    sums = kl.reshape(ref.shape[0], positions).sum(-1).double().cpu().numpy()
    return sums, np.full(ref.shape[0], float(positions))


def _mse_rows(out: torch.Tensor, ref: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    squared = (out.float() - ref.float()).pow(2).reshape(ref.shape[0], -1)
    return squared.sum(-1).double().cpu().numpy(), np.full(ref.shape[0], float(squared.shape[1]))


def _mean_mse(outputs: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    sq = sum(
        float((o.float() - r.float()).pow(2).sum()) for o, r in zip(outputs, reference, strict=True)
    )
    return sq / sum(r.numel() for r in reference)


class ClassificationTask(Task):
    """Logits over classes; batches hold `inputs` and `labels`."""

    divergence = "kl"
    separable = True

    def outputs(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(batch["inputs"])

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.outputs(model, batch), batch["labels"])

    primary = "accuracy"

    def per_sample(self, run: Observed) -> dict[str, PerSample]:
        pairs = zip(run.outputs, run.batches, strict=True)
        correct = np.concatenate([(o.argmax(-1) == b["labels"]).double().cpu().numpy()
                                  for o, b in pairs])  # fmt: skip
        return {**super().per_sample(run), "accuracy": PerSample(correct, np.ones_like(correct))}

    def task_metrics(self, run: Observed) -> dict[str, float]:
        correct = sum(
            int((o.argmax(-1) == b["labels"]).sum())
            for o, b in zip(run.outputs, run.batches, strict=True)
        )
        return {"accuracy": correct / sum(len(b["labels"]) for b in run.batches)}


class CausalLMTask(Task):
    """Next-token prediction; batches hold `input_ids` (and optionally `attention_mask`)."""

    divergence = "kl"
    separable = True

    def outputs(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return model(**batch).logits

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        return _next_token_nll(self.outputs(model, batch), batch).mean()

    primary = "perplexity"

    def per_sample(self, run: Observed) -> dict[str, PerSample]:
        """Perplexity per sequence: its summed NLL and its token count (exp of their ratio)."""
        sums, counts = [], []
        for logits, batch in zip(run.outputs, run.batches, strict=True):
            for row, one in enumerate(self.split(batch)):
                nll = _next_token_nll(logits[row : row + 1], one)
                sums.append(float(nll.double().sum()))
                counts.append(float(nll.numel()))
        perplexity = PerSample(np.array(sums), np.array(counts), "exp")
        return {**super().per_sample(run), "perplexity": perplexity}

    def task_metrics(self, run: Observed) -> dict[str, float]:
        pairs = zip(run.outputs, run.batches, strict=True)
        nll = torch.cat([_next_token_nll(o, b) for o, b in pairs])
        return {"perplexity": math.exp(float(nll.mean()))}


def _next_token_nll(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-token negative log-likelihood of each next token, padding positions dropped."""
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    nll = F.cross_entropy(shifted, batch["input_ids"][:, 1:].reshape(-1), reduction="none")
    mask = batch.get("attention_mask")
    return nll if mask is None else nll[mask[:, 1:].reshape(-1).bool()]


class SentenceEmbeddingTask(Task):
    """Mean-pooled, L2-normalised sentence embeddings of (anchor, positive) pairs.

    A batch holds 2N tokenised texts: rows 0..N-1 are anchors, rows N..2N-1 their positives.
    """

    def __init__(self, temperature: float = 0.05, group: int = 8) -> None:
        self.temperature = temperature
        self.group = group

    def outputs(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Texts embed independently, so they run `group` at a time sorted by length, each
        group cut to its longest text: padded positions cost nothing."""
        ids, mask = batch["input_ids"], batch["attention_mask"]
        order = torch.argsort(mask.sum(1), stable=True)
        pooled = []
        for rows in order.split(self.group):
            used = mask[rows].any(0).nonzero()
            width = int(used.max()) + 1 if len(used) else 1
            part = mask[rows, :width]
            hidden = model(input_ids=ids[rows, :width], attention_mask=part).last_hidden_state
            weights = part.unsqueeze(-1).to(hidden.dtype)
            pooled.append((hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9))
        embeddings = torch.cat(pooled)[torch.argsort(order)]
        return F.normalize(embeddings.float(), dim=-1)

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """In-batch contrastive (InfoNCE) loss: each anchor should pick its own positive."""
        emb = self.outputs(model, batch)
        anchors, positives = emb.chunk(2)
        logits = anchors @ positives.T / self.temperature
        return F.cross_entropy(logits, torch.arange(len(anchors), device=logits.device))

    primary = "cosine"

    def per_sample(self, run: Observed) -> dict[str, PerSample]:
        """Cosine to FP32 per text (the retrieval metrics rank the whole split: not a sum)."""
        out, ref = torch.cat(list(run.outputs)), torch.cat(list(run.reference))
        cosine = F.cosine_similarity(out, ref, dim=-1).double().cpu().numpy()
        return {**super().per_sample(run), "cosine": PerSample(cosine, np.ones_like(cosine))}

    def task_metrics(self, run: Observed) -> dict[str, float]:
        out, ref = torch.cat(list(run.outputs)), torch.cat(list(run.reference))
        cosine = float(F.cosine_similarity(out, ref, dim=-1).mean())
        out_top1, ref_top1 = _pair_top1(run.outputs), _pair_top1(run.reference)
        truth = torch.arange(len(out_top1), device=out_top1.device)
        return {
            "cosine": cosine,
            "top1_agreement": float((out_top1 == ref_top1).float().mean()),
            "retrieval_top1": float((out_top1 == truth).float().mean()),
        }


def _pair_top1(embeddings: Sequence[torch.Tensor]) -> torch.Tensor:
    """For every anchor, the index of the nearest positive over the whole evaluation split."""
    halves = [e.chunk(2) for e in embeddings]
    anchors = torch.cat([a for a, _ in halves])
    positives = torch.cat([p for _, p in halves])
    return (anchors @ positives.T).argmax(-1)


class OutputTask(Task):
    """Any model: compare its main output with FP32 by MSE. It has no task loss of its own."""

    has_loss = False

    def __init__(self, name: str, input_key: str = "inputs") -> None:
        self.name = name
        self.input_key = input_key

    def outputs(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        if self.input_key == "inputs":
            return main_tensor(model(batch["inputs"]))
        return main_tensor(model(**batch))

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        raise MixprecError(
            f"model {self.name!r} has no task loss (only its output is known): have the factory "
            "return a mixprec.ModelBundle with a Task whose loss fits the model"
        )


def main_tensor(output: Any) -> torch.Tensor:
    """The tensor a model call returns: itself, `.logits`, `.last_hidden_state` or item 0."""
    if isinstance(output, torch.Tensor):
        return output
    for attr in ("logits", "last_hidden_state"):
        value = getattr(output, attr, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise MixprecError(f"cannot find the output tensor in a {type(output).__name__}")


class CallableTask(Task):
    """A task made of the user's own callables, in ModelOpt's style: `forward(model, batch)`
    gives the output, `loss(output, batch)` the task loss (None: output-only estimators)."""

    def __init__(
        self,
        forward: Callable[[nn.Module, Any], Any] | None = None,
        loss: Callable[[Any, Any], torch.Tensor] | None = None,
        divergence: str = "mse",
    ) -> None:
        if divergence not in DIVERGENCES:
            raise MixprecError(
                f"unknown divergence {divergence!r}; valid: {', '.join(DIVERGENCES)}"
            )
        self.forward, self.loss_of = forward, loss
        self.divergence = divergence
        self.has_loss = loss is not None

    def raw(self, model: nn.Module, batch: Any) -> Any:
        if self.forward is not None:
            return self.forward(model, batch)
        if isinstance(batch, Mapping):
            return model(**batch)
        if isinstance(batch, tuple | list):
            return model(*batch)
        return model(batch)

    def outputs(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return main_tensor(self.raw(model, batch))

    def loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        if self.loss_of is None:
            raise MixprecError(
                "this model has no task loss: pass loss=(output, batch) -> scalar, or use "
                "--estimators isolation"
            )
        return self.loss_of(self.raw(model, batch), batch)

    def samples(self, batch: Any) -> int:
        return int(first_tensor(batch).shape[0])


def first_tensor(batch: Any) -> torch.Tensor:
    """The first tensor of a batch (a tensor, a mapping or a tuple of them)."""
    if isinstance(batch, torch.Tensor):
        return batch
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(values, Iterable) and not isinstance(values, str | bytes):
        for value in values:
            if isinstance(value, torch.Tensor):
                return value
    raise MixprecError(f"a batch must hold tensors; got a {type(batch).__name__}")
