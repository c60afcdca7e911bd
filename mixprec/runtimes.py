"""Where `mixprec evaluate` (and a run's evaluate step) measures a plan: `torch` (mixprec's own
kernels), `llamacpp` (the plan's GGUF in llama.cpp's tools) or `transformers` (the plan's
compressed-tensors checkpoint, loaded and run by transformers). Each is found, and its options
checked, before any model loads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mixprec.errors import MixprecError, one_of
from mixprec.imatrix import Imatrix
from mixprec.llamacpp import LlamaCpp, find
from mixprec.metrics import Evaluation
from mixprec.models import ModelBundle
from mixprec.plan import PrecisionPlan
from mixprec.tensordata import TensorData
from mixprec.textdata import TextData

RUNTIMES = ("torch", "llamacpp", "transformers")


@dataclass(frozen=True)
class Runtime:
    """A runtime by name, with the llama.cpp build it runs in (llamacpp only)."""

    name: str
    build: LlamaCpp | None = None

    @property
    def is_mixprec(self) -> bool:
        """True where mixprec's own kernels measure the plan (the other runtimes load a file)."""
        return self.name == "torch"


def runtime_for(
    name: str, llamacpp_bin: Path | None = None, packed: bool = False, imatrix: bool = False
) -> Runtime:
    """The runtime `name`, its build found and the other runtimes' options refused."""
    one_of("--runtime", name, RUNTIMES)
    if imatrix:
        _check_imatrix(name)
    if llamacpp_bin is not None and name != "llamacpp":
        raise MixprecError("--llamacpp-bin goes with --runtime llamacpp")
    if name == "torch":
        return Runtime(name)
    if packed:
        raise MixprecError("--packed measures mixprec's own kernels; it goes with --runtime torch")
    if name == "llamacpp":
        return Runtime(name, find(llamacpp_bin))
    try:
        import compressed_tensors  # noqa: F401
    except ImportError:
        raise MixprecError("--runtime transformers loads compressed-tensors checkpoints: "
                           "pip install 'compressed-tensors>=0.20,<0.21'") from None  # fmt: skip
    return Runtime(name)


def evaluate_in(
    runtime: Runtime, bundle: ModelBundle, plan: PrecisionPlan, source: str,
    data: TextData | TensorData | None = None, imatrix: Imatrix | None = None,
) -> tuple[Evaluation, list[str]]:  # fmt: skip
    """`plan` exported for `runtime` (llama.cpp: quantized with `imatrix` where given) and
    measured there, with the export's warnings."""
    if imatrix is not None:
        _check_imatrix(runtime.name)
    if runtime.build is not None:
        from mixprec.runtime_llamacpp import evaluate_in_llamacpp, text_only

        return evaluate_in_llamacpp(runtime.build, bundle, plan, source, text_only(data),
                                    imatrix)  # fmt: skip
    if runtime.name == "transformers":
        from mixprec.runtime_transformers import evaluate_in_transformers

        return evaluate_in_transformers(bundle, plan, source)
    raise MixprecError(f"runtime {runtime.name} measures with mixprec's own evaluate()")


def _check_imatrix(name: str) -> None:
    """llama.cpp's importance matrix goes where llama.cpp's types are quantized."""
    if name not in ("torch", "llamacpp"):
        raise MixprecError(f"--imatrix is llama.cpp's: it goes with --runtime torch or "
                           f"llamacpp, not {name}")  # fmt: skip
