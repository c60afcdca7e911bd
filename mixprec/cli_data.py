"""The options that say what a model runs on: `--data` (your own text for an hf: model),
`--dtype` / `--device` (where and in which precision it runs) and `--workers` /
`--gpus-per-worker` (who scores it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixprec.errors import MixprecError
from mixprec.placement import DEVICE_FORMS, DTYPES
from mixprec.tensordata import TensorData, is_tensor_file
from mixprec.textdata import CALIB_SAMPLES, EVAL_SAMPLES, SEQ_LEN, TEXT_FIELD, TextData

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Your own text for an hf: model: .txt, .jsonl, .parquet, .csv or a "
        "datasets.save_to_disk folder (default: the model's built-in text).",
    ),
]
TextFieldOption = Annotated[
    str, typer.Option("--text-field", help="The field (.jsonl) or column holding the text.")
]
SeqLenOption = Annotated[int, typer.Option("--seq-len", help="Tokens per sequence.")]
CalibSamplesOption = Annotated[int, typer.Option("--calib-samples", help="Sequences to score on.")]
EvalSamplesOption = Annotated[
    int, typer.Option("--eval-samples", help="Sequences to measure plans on (disjoint).")
]
ChatTemplateOption = Annotated[
    bool,
    typer.Option(
        "--chat-template",
        help="Render each text (or a .jsonl list of role/content messages) with the "
        "tokenizer's chat template.",
    ),
]
DtypeOption = Annotated[
    str,
    typer.Option(
        "--dtype", help=f"{', '.join(DTYPES)}: auto runs the model in its checkpoint's dtype."
    ),
]
DeviceOption = Annotated[
    str, typer.Option("--device", help=f"{DEVICE_FORMS}: auto takes the first GPU if any.")
]

WorkersOption = Annotated[
    int | None,
    typer.Option(
        "--workers",
        help="Ray workers; 0 runs serially. Default: serially, or as many as the cluster holds "
        "with --address, --gpus-per-worker or inside a Ray job.",
    ),
]
GpusPerWorkerOption = Annotated[
    float,
    typer.Option(
        "--gpus-per-worker", help="GPUs each Ray worker holds (one model per GPU worker)."
    ),
]


def text_data(
    data: Path | None,
    text_field: str,
    seq_len: int,
    calib_samples: int,
    eval_samples: int,
    seed: int,
    chat_template: bool = False,
) -> TextData | TensorData | None:
    """The TextData (or, for a .safetensors / .npy file, TensorData) the options describe;
    text options without --data, or with an inputs file, are a mistake."""
    given = {"--text-field": (text_field, TEXT_FIELD), "--seq-len": (seq_len, SEQ_LEN),
             "--calib-samples": (calib_samples, CALIB_SAMPLES),
             "--eval-samples": (eval_samples, EVAL_SAMPLES),
             "--chat-template": (chat_template, False)}  # fmt: skip
    if data is None:
        changed = [option for option, (value, default) in given.items() if value != default]
        if changed:
            raise MixprecError(f"{changed[0]} shapes your own text: give it with --data FILE")
        return None
    if is_tensor_file(data):
        text_only = {
            k: v for k, v in given.items() if k not in ("--calib-samples", "--eval-samples")
        }
        changed = [option for option, (value, default) in text_only.items() if value != default]
        if changed:
            raise MixprecError(f"{changed[0]} shapes text; {data} is an inputs file")
        return TensorData(str(data), calib_samples, eval_samples, seed=seed)
    return TextData(
        str(data), text_field, seq_len, calib_samples, eval_samples, seed, chat_template
    )
