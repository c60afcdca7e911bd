"""Local data with fixed, disjoint train / calibration / evaluation splits (nothing downloaded).

Text comes from Python's own documentation (`pydoc_data.topics`, shipped with CPython);
images from scikit-learn's bundled digits. Splits are by content hash, so they never overlap.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import torch

from mixprec.errors import MixprecError

SPLITS = ("train", "calibration", "evaluation")


@dataclass(frozen=True)
class Splits:
    """Three disjoint tuples of examples."""

    train: tuple[str, ...]
    calibration: tuple[str, ...]
    evaluation: tuple[str, ...]


def split_of(text: str, calibration_pct: int = 15, evaluation_pct: int = 15) -> str:
    """Stable split by content hash: the same text always lands in the same split."""
    bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 100
    if bucket < calibration_pct:
        return "calibration"
    if bucket < calibration_pct + evaluation_pct:
        return "evaluation"
    return "train"


@cache
def python_doc_paragraphs(min_chars: int = 120, max_chars: int = 700) -> Splits:
    """Paragraphs of the Python reference docs, de-duplicated and split by content hash."""
    from pydoc_data.topics import topics

    seen: set[str] = set()
    buckets: dict[str, list[str]] = {s: [] for s in SPLITS}
    for key in sorted(topics):
        for raw in re.split(r"\n\s*\n", topics[key]):
            text = " ".join(raw.split())
            if not min_chars <= len(text) <= max_chars or text in seen:
                continue
            if sum(ch.isalpha() for ch in text) < 0.6 * len(text):
                continue  # skip code listings and tables: we want prose
            seen.add(text)
            buckets[split_of(text)].append(text)
    return Splits(*(tuple(buckets[s]) for s in SPLITS))


def sentence_pairs(paragraphs: Sequence[str]) -> list[tuple[str, str]]:
    """(first half, second half) of each paragraph, cut at a word boundary: retrieval pairs."""
    pairs = []
    for text in paragraphs:
        words = text.split()
        half = len(words) // 2
        pairs.append((" ".join(words[:half]), " ".join(words[half:])))
    return pairs


def byte_sequences(paragraphs: Sequence[str], length: int) -> torch.Tensor:
    """Concatenate texts as UTF-8 bytes and cut into [N, length] token-id rows (vocab 256)."""
    stream = "\n".join(paragraphs).encode("utf-8")
    rows = len(stream) // length
    data = np.frombuffer(stream[: rows * length], dtype=np.uint8).astype(np.int64)
    return torch.from_numpy(data.reshape(rows, length).copy())


@dataclass(frozen=True)
class DigitsSplits:
    """scikit-learn digits as [N, 1, 8, 8] float tensors in [0, 1] and int64 labels."""

    train: tuple[torch.Tensor, torch.Tensor]
    calibration: tuple[torch.Tensor, torch.Tensor]
    evaluation: tuple[torch.Tensor, torch.Tensor]


@cache
def digits_splits(calibration: int = 200, evaluation: int = 400, seed: int = 0) -> DigitsSplits:
    """Fixed permutation of the 1,797 digits: calibration and evaluation held out of training."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    cal, ev = order[:calibration], order[calibration : calibration + evaluation]
    train = order[calibration + evaluation :]
    return DigitsSplits(
        (images[train], labels[train]), (images[cal], labels[cal]), (images[ev], labels[ev])
    )


def hash_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 over names, shapes, dtypes and bytes, in the order given."""
    digest = hashlib.sha256()
    for name, tensor in named:
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def content_hash(batches: Sequence[Any]) -> str:
    """Stable hash of a list of batches (mappings, tuples or lists of tensors, or tensors):
    names a calibration set in cache keys."""
    return hash_tensors(named for batch in batches for named in named_tensors(batch))


def named_tensors(batch: Any, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """(path, tensor) pairs of a batch, keys sorted; a mapping's keys name its tensors."""
    if isinstance(batch, torch.Tensor):
        yield prefix, batch
    elif isinstance(batch, Mapping):
        for key in sorted(batch):
            yield from named_tensors(batch[key], f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(batch, tuple | list):
        for i, item in enumerate(batch):
            yield from named_tensors(item, f"{prefix}.{i}" if prefix else str(i))
    else:
        raise MixprecError(
            f"a calibration batch must hold tensors (in a mapping, tuple or list); "
            f"{prefix or 'the batch'} is a {type(batch).__name__}"
        )
