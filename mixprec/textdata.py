"""Your own calibration and evaluation text: read with safe loaders only (no pickle), tokenised
with the model's own tokenizer, cut into sequences of `seq_len` tokens, and drawn into fixed,
seeded, disjoint calibration and evaluation splits.

    data = TextData("notes.jsonl", seq_len=512, calib_samples=32, eval_samples=32)
    calibration, evaluation = data.batches(tokenizer)

Files: `.txt` (paragraphs split at blank lines), `.jsonl` (`field` of each object), `.parquet`
and `.csv` (column `field`), or a `datasets.save_to_disk` folder (its Arrow files, column
`field`). The batches' content hash keys every cached score, so other text is scored anew.

With `chat_template`, each text is rendered by the tokenizer's own chat template as one user
turn, or, where a `.jsonl` field holds a list of `{"role", "content"}` messages, as that
conversation: the text a chat model sees when it serves.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixprec.errors import MixprecError, at_least, gist

if TYPE_CHECKING:  # torch is imported on use: the CLI reads the defaults below at start-up
    import torch

    from mixprec.tasks import Batch

SUFFIXES = (".txt", ".jsonl", ".parquet", ".csv")
Text = str | tuple[dict[str, str], ...]  # plain text, or a conversation for the chat template
BATCH_SEQUENCES = 4  # sequences per batch: one forward pass holds 4 x seq_len tokens
TEXT_FIELD, SEQ_LEN, CALIB_SAMPLES, EVAL_SAMPLES = "text", 512, 16, 16


@dataclass(frozen=True)
class TextData:
    """Where the text is and how it becomes token sequences (defaults fit LLM calibration)."""

    path: str
    field: str = TEXT_FIELD
    seq_len: int = SEQ_LEN
    calib_samples: int = CALIB_SAMPLES
    eval_samples: int = EVAL_SAMPLES
    seed: int = 0
    chat_template: bool = False

    def __post_init__(self) -> None:
        # absolute, so a manifest read from another folder (or a Ray worker) finds it
        object.__setattr__(self, "path", str(Path(self.path).expanduser().absolute()))
        at_least("--seq-len", self.seq_len, 2)
        at_least("--calib-samples", self.calib_samples, 1)
        at_least("--eval-samples", self.eval_samples, 1)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TextData:
        return cls(**data)

    def texts(self) -> tuple[Text, ...]:
        """The file's texts, in file order; one line naming the problem otherwise."""
        path = Path(self.path)
        if not path.exists():
            raise MixprecError(f"no data file at {path}")
        texts: Sequence[Text]
        if path.is_dir():
            texts = _arrow_folder(path, self.field)
        elif path.suffix == ".txt":
            texts = [p.strip() for p in _read(path).split("\n\n")]
        elif path.suffix == ".jsonl":
            texts = _jsonl(path, self.field, self.chat_template)
        elif path.suffix == ".csv":
            texts = _csv(path, self.field)
        elif path.suffix == ".parquet":
            texts = _parquet(path, self.field)
        else:
            raise MixprecError(
                f"data file {path} is not {', '.join(SUFFIXES)} or a datasets.save_to_disk folder"
            )
        kept = tuple(t for t in texts if not isinstance(t, str) or t.strip())
        if not kept:
            raise MixprecError(f"data file {path} holds no text")
        return kept

    def batches(self, tokenizer: Any) -> tuple[tuple[Batch, ...], tuple[Batch, ...]]:
        """Calibration and evaluation batches: the texts tokenised and joined (an EOS token
        between texts), cut into `seq_len` sequences, drawn without overlap by `seed`."""
        import torch

        ids = self.token_ids(tokenizer)
        count = len(ids) // self.seq_len
        needed = self.calib_samples + self.eval_samples
        if count < needed:
            raise MixprecError(
                f"{self.path} gives {count} sequences of {self.seq_len} tokens; {needed} needed "
                f"({self.calib_samples} calibration + {self.eval_samples} evaluation): give "
                "more text or lower --seq-len, --calib-samples or --eval-samples"
            )
        sequences = torch.tensor(ids[: count * self.seq_len]).view(count, self.seq_len)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed))
        chosen = sequences[order[:needed]]
        return _batched(chosen[: self.calib_samples]), _batched(chosen[self.calib_samples :])

    def token_ids(self, tokenizer: Any) -> list[int]:
        separator = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        ids: list[int] = []
        texts = self.texts()  # its own one-line errors stay as they are
        if self.chat_template and not getattr(tokenizer, "chat_template", None):
            raise MixprecError(
                f"--chat-template: the model's tokenizer has no chat template; drop the option "
                f"to tokenize {self.path} as plain text"
            )
        try:
            for text in texts:
                if self.chat_template:
                    turns = [{"role": "user", "content": text}] if isinstance(text, str) else text
                    text = tokenizer.apply_chat_template(turns, tokenize=False)
                ids += tokenizer(text, add_special_tokens=False)["input_ids"] + separator
        except Exception as err:  # the tokenizer's own failure on this text
            raise MixprecError(f"the tokenizer cannot encode {self.path}: {gist(err)}") from None
        return ids


def _batched(sequences: torch.Tensor) -> tuple[Batch, ...]:
    import torch

    return tuple(
        {"input_ids": chunk, "attention_mask": torch.ones_like(chunk)}
        for chunk in sequences.split(BATCH_SEQUENCES)
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MixprecError(f"data file {path} is not UTF-8 text") from None


def _missing(path: Path, field: str, fields: object) -> MixprecError:
    shown = ", ".join(map(str, fields)) if isinstance(fields, list | tuple) else fields
    return MixprecError(f"{path} has no field {field!r}; fields: {shown} (use --text-field)")


def _jsonl(path: Path, field: str, messages: bool) -> list[Text]:
    """The field of every line; with `messages`, a list of role/content objects is kept too."""
    texts: list[Text] = []
    for number, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise MixprecError(f"{path} line {number} is not JSON") from None
        if not isinstance(row, dict):
            raise MixprecError(f"{path} line {number} is not a JSON object")
        if field not in row:
            raise _missing(path, field, sorted(row))
        value = row[field]
        if messages and isinstance(value, list):
            texts.append(_messages(value, path, number))
            continue
        if not isinstance(value, str):
            kind = "text or a list of messages" if messages else "text"
            raise MixprecError(f"{path} line {number}: {field!r} is not {kind}")
        texts.append(value)
    return texts


def _messages(value: list[Any], path: Path, number: int) -> tuple[dict[str, str], ...]:
    turns = []
    for turn in value:
        if not (
            isinstance(turn, dict)
            and isinstance(turn.get("role"), str)
            and isinstance(turn.get("content"), str)
        ):
            raise MixprecError(
                f'{path} line {number}: a message is not {{"role": ..., "content": ...}} text'
            )
        turns.append({"role": turn["role"], "content": turn["content"]})
    if not turns:
        raise MixprecError(f"{path} line {number}: an empty list of messages")
    return tuple(turns)


def _csv(path: Path, field: str) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        try:
            reader = csv.DictReader(handle)
            if field not in (reader.fieldnames or []):
                raise _missing(path, field, list(reader.fieldnames or []))
            return [row[field] or "" for row in reader]
        except UnicodeDecodeError:
            raise MixprecError(f"data file {path} is not UTF-8 text") from None
        except csv.Error as err:
            raise MixprecError(f"{path} is not CSV: {err}") from None


def _column(table: Any, path: Path, field: str) -> list[str]:
    if field not in table.column_names:
        raise _missing(path, field, list(table.column_names))
    values = table.column(field).to_pylist()
    if not all(isinstance(v, str) or v is None for v in values):
        raise MixprecError(f"{path}: column {field!r} is not text")
    return [v or "" for v in values]


def _parquet(path: Path, field: str) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return _column(pq.read_table(path), path, field)
    except (pa.ArrowInvalid, OSError) as err:
        raise MixprecError(f"{path} is not a Parquet file: {gist(err)}") from None


def _arrow_folder(path: Path, field: str) -> list[str]:
    """A `datasets.save_to_disk` folder: state.json lists its Arrow stream files."""
    import pyarrow as pa

    state = path / "state.json"
    if not state.is_file():
        raise MixprecError(
            f"data folder {path} is not a datasets.save_to_disk folder (no state.json); give a "
            f"{', '.join(SUFFIXES)} file"
        )
    try:
        files = [path / f["filename"] for f in json.loads(_read(state))["_data_files"]]
    except (ValueError, KeyError, TypeError):
        raise MixprecError(f"{state} does not list the folder's data files") from None
    texts: list[str] = []
    for file in files:
        if file.parent != path or not file.is_file():
            raise MixprecError(f"{state} names {file.name}, which is not a file in {path}")
        try:
            with pa.memory_map(str(file)) as source:
                texts += _column(pa.ipc.open_stream(source).read_all(), path, field)
        except pa.ArrowInvalid as err:
            raise MixprecError(f"{file} is not an Arrow file: {gist(err)}") from None
    return texts
