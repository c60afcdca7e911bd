"""A plan measured inside llama.cpp itself: the plan's GGUF (built on the F32 base from
llama.cpp's converter) run by llama-perplexity for causal LMs (512-token chunks of held-out text)
or by llama-embedding for sentence encoders (cosine to the base's own embeddings, in llama.cpp),
under the metric names mixprec's own evaluation uses."""

from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from mixprec.data import python_doc_paragraphs, sentence_pairs
from mixprec.errors import MixprecError
from mixprec.export_gguf import planned_tensors, write_gguf
from mixprec.imatrix import Imatrix
from mixprec.llamacpp import LlamaCpp, base_gguf
from mixprec.metrics import BYTES_PER_MB, Evaluation
from mixprec.models import ModelBundle, checkpoint_folder
from mixprec.plan import PrecisionPlan
from mixprec.tasks import CausalLMTask, Observed, SentenceEmbeddingTask
from mixprec.textdata import EVAL_SAMPLES, TextData

log = logging.getLogger(__name__)

CONTEXT = 512  # tokens per perplexity chunk, as llama.cpp's published perplexities use
TIMEOUT_S = 3600


def text_only(data: object) -> TextData | None:
    """The user's data as text: llama.cpp's tools read text, not tensors."""
    if data is None or isinstance(data, TextData):
        return data
    raise MixprecError("--runtime llamacpp measures on text; give a text file as --data")


def held_out_texts(data: TextData | None) -> list[str]:
    """The text a runtime is measured on: the user's file, else the built-in evaluation split
    (Python-doc paragraphs no calibration batch saw)."""
    if data is not None:
        return [t for t in data.texts() if isinstance(t, str)]
    return list(python_doc_paragraphs().evaluation)


def evaluate_in_llamacpp(
    build: LlamaCpp, bundle: ModelBundle, plan: PrecisionPlan, source: str,
    data: TextData | None = None, imatrix: Imatrix | None = None,
) -> tuple[Evaluation, list[str]]:  # fmt: skip
    """The plan's GGUF (quantized with `imatrix` where given) measured in llama.cpp (on
    `data`'s eval_samples chunks, default 16), and the export's warnings."""
    runner = metric_runner(bundle)  # an unsupported task fails before anything is converted
    base = base_gguf(checkpoint_folder(source))
    with tempfile.TemporaryDirectory(prefix="mixprec-llamacpp-") as tmp:
        path = Path(tmp) / "plan.gguf"
        warnings = write_gguf(plan, bundle.model, base, path, imatrix)
        chunks = data.eval_samples if data is not None else EVAL_SAMPLES
        metrics = runner(build, path, base, held_out_texts(data), chunks, Path(tmp))
        planned, _ = planned_tensors(plan, bundle.model)
        size, bits = gguf_size(path, {t.name for t in planned})
    return Evaluation(metrics, size / BYTES_PER_MB, bits, f"llama.cpp ({build.bin})"), warnings


def gguf_size(path: Path, names: set[str] | None = None) -> tuple[int, float]:
    """A GGUF's size in bytes and the bits per weight of `names` (default: every tensor of two
    or more dims, the matrices llama-quantize quantizes)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    chosen = [t for t in reader.tensors
              if (t.name in names if names is not None else len(t.shape) >= 2)]  # fmt: skip
    params = sum(int(t.n_elements) for t in chosen)
    return path.stat().st_size, 8 * sum(int(t.n_bytes) for t in chosen) / max(params, 1)


def perplexity(build: LlamaCpp, model: Path, texts: list[str], chunks: int, work: Path) -> float:
    """llama-perplexity over the first `chunks` 512-token chunks of the texts."""
    text = work / "held-out.txt"
    text.write_text("\n\n".join(texts), encoding="utf-8")
    output = _run(build, "llama-perplexity", ["-m", str(model), "-f", str(text), "-c",
                                              str(CONTEXT), "--chunks", str(chunks)])  # fmt: skip
    found = re.search(r"Final estimate: PPL = ([0-9.]+)", output)
    if found is None:
        tail = " ".join(output.strip().splitlines()[-2:])
        raise MixprecError(f"llama-perplexity gave no perplexity for {model.name}: {tail}")
    return float(found.group(1))


def embeddings(build: LlamaCpp, model: Path, texts: list[str], work: Path) -> torch.Tensor:
    """llama-embedding's mean-pooled, L2-normalised embedding of each text."""
    prompts = work / "prompts.txt"
    prompts.write_text("\n".join(" ".join(t.split()) for t in texts), encoding="utf-8")
    output = _run(build, "llama-embedding", ["-m", str(model), "-f", str(prompts), "--pooling",
                                             "mean", "--embd-normalize", "2",
                                             "--embd-output-format", "array", "-c", str(CONTEXT),
                                             "-b", str(CONTEXT), "-ub", str(CONTEXT)],
                  stdout_only=True)  # fmt: skip
    rows = np.array(re.findall(r"\[([^\[\]]*)\]", output)[: len(texts)], dtype=object)
    values = [np.array(row.split(","), dtype=np.float32) for row in rows]
    if len(values) != len(texts):
        raise MixprecError(f"llama-embedding gave {len(values)} embeddings for {len(texts)} texts")
    return torch.from_numpy(np.stack(values))


# run(build, plan's GGUF, F32 base GGUF, held-out texts, chunks, work folder) -> metrics
MetricRunner = Callable[[LlamaCpp, Path, Path, list[str], int, Path], dict[str, float]]


def metric_runner(bundle: ModelBundle) -> MetricRunner:
    """How llama.cpp measures this model's task (the base is the encoders' reference)."""
    task = bundle.task
    if isinstance(task, CausalLMTask):

        def causal(build: LlamaCpp, model: Path, _base: Path, texts: list[str], chunks: int,
                   work: Path) -> dict[str, float]:  # fmt: skip
            return {"perplexity": perplexity(build, model, texts, chunks, work)}

        return causal
    if isinstance(task, SentenceEmbeddingTask):

        def encoder(build: LlamaCpp, model: Path, base: Path, texts: list[str], _chunks: int,
                    work: Path) -> dict[str, float]:  # fmt: skip
            pairs = sentence_pairs(texts)  # anchors then positives, as the task's batches
            halves = tuple([a for a, _ in pairs] + [p for _, p in pairs])
            ours = embeddings(build, model, list(halves), work)
            theirs = base_embeddings(build, base, base.stat().st_mtime_ns, halves)
            return task.task_metrics(Observed([ours], [theirs], ()))

        return encoder
    raise MixprecError(f"llama.cpp measures causal LMs (perplexity) and sentence encoders "
                       f"(cosine); {bundle.name} is neither")  # fmt: skip


@functools.lru_cache(maxsize=4)
def base_embeddings(build: LlamaCpp, base: Path, _mtime_ns: int, texts: tuple[str, ...]
                    ) -> torch.Tensor:  # fmt: skip
    """The F32 base's own embeddings of `texts`, made once per base file (as it is on disk)
    while plans of one model are measured one after another."""
    with tempfile.TemporaryDirectory(prefix="mixprec-llamacpp-base-") as tmp:
        return embeddings(build, base, list(texts), Path(tmp))


def quantize_uniform(build: LlamaCpp, base: Path, out: Path, kind: str, *flags: str) -> Path:
    """llama.cpp's own whole-model type `kind` (Q4_K_M, Q8_0, ...) made by llama-quantize."""
    _run(
        build,
        "llama-quantize",
        [*flags, str(base), str(out), kind, _threads()],
        threads=False,
    )
    return out


def _run(build: LlamaCpp, tool: str, args: list[str], stdout_only: bool = False,
         threads: bool = True) -> str:  # fmt: skip
    """Run one llama.cpp tool on all this machine's cores; its output, or one line on failure."""
    start = time.monotonic()
    log.info("running %s %s", tool, " ".join(args[:2]))
    command = [str(build.tool(tool)), *args]
    if threads:
        command += ["-t", _threads()]
    done = subprocess.run(command, capture_output=True, text=True, env=build.environment(),
                          timeout=TIMEOUT_S, check=False)  # fmt: skip
    log.info("%s finished in %.0f s", tool, time.monotonic() - start)
    if done.returncode != 0:
        last = " ".join(done.stderr.strip().splitlines()[-1:])
        raise MixprecError(f"{tool} failed (exit {done.returncode}): {last}")
    return done.stdout if stdout_only else done.stdout + done.stderr


def _threads() -> str:
    """Every core this process may run on, as the tools' thread count."""
    return str(len(os.sched_getaffinity(0)))
