"""A plan measured inside transformers: its compressed-tensors checkpoint (what vLLM loads)
written, loaded back by transformers (compressed-tensors' own decompression) and run on the
model's evaluation split, against the unquantized model's outputs, under mixprec's metrics."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import torch

from mixprec.errors import MixprecError
from mixprec.export_compressed import MX_IN_TRANSFORMERS, MX_SCHEMES, NVFP4_IN_TRANSFORMERS
from mixprec.metrics import BYTES_PER_MB, Evaluation
from mixprec.models import ModelBundle
from mixprec.plan import PrecisionPlan
from mixprec.tasks import Observed
from mixprec.units import quantizable_layers, tied_embeddings


def evaluate_in_transformers(
    bundle: ModelBundle, plan: PrecisionPlan, source: str
) -> tuple[Evaluation, list[str]]:
    """The plan's checkpoint as transformers runs it, and the export's warnings."""
    import compressed_tensors
    import transformers

    from mixprec.export import model_files, require_transformers, write_checkpoint

    what = "--runtime transformers runs transformers models"
    model = require_transformers(bundle.model, what, bundle.name)
    nvfp4 = [m for m, t in plan.assignment.items() if "ct_nvfp4" in t]
    if nvfp4:
        raise MixprecError(f"--runtime transformers cannot measure {nvfp4[0]} (w:ct_nvfp4): "
                           f"{NVFP4_IN_TRANSFORMERS}; measure it with --runtime torch")  # fmt: skip
    weight = next(model.parameters())
    mx = [(m, t) for m, t in plan.assignment.items() if t.removeprefix("w:") in MX_SCHEMES]
    if mx and weight.dtype != torch.bfloat16:
        raise MixprecError(f"--runtime transformers cannot measure {mx[0][0]} ({mx[0][1]}) of a "
                           f"{str(weight.dtype).removeprefix('torch.')} model: "
                           f"{MX_IN_TRANSFORMERS}; run it with --dtype bf16")  # fmt: skip
    _, tokenizer = model_files("compressed-tensors", source)
    reference = list(bundle.reference_outputs)  # from the unquantized weights
    with tempfile.TemporaryDirectory(prefix="mixprec-transformers-") as tmp:
        folder = Path(tmp) / "checkpoint"
        warnings = list(write_checkpoint(plan, "compressed-tensors", model, folder, tokenizer))
        loaded: torch.nn.Module = type(model).from_pretrained(folder, dtype=weight.dtype)
        loaded = loaded.to(weight.device).eval()
        with torch.no_grad():  # the first forward decompresses (compressed-tensors' own hook)
            outputs = [bundle.task.outputs(loaded, b) for b in bundle.evaluation]
        size, bits = checkpoint_size(folder, stored_names(model))
    run = Observed(outputs, reference, bundle.evaluation)
    ran = (f"transformers {transformers.__version__} + compressed-tensors "
           f"{compressed_tensors.__version__}")  # fmt: skip
    measured = Evaluation(bundle.task.metrics(run), size / BYTES_PER_MB, bits, ran,
                          per_sample=bundle.task.per_sample(run))  # fmt: skip
    return measured, warnings


def stored_names(model: torch.nn.Module) -> list[str]:
    """The module each quantizable layer's weight is saved under: its own, or for a head tied
    to the input embedding the embedding's (saved once, counted once per layer using it)."""
    tied = tied_embeddings(model)
    return [tied.get(name, name) for name in quantizable_layers(model)]


def checkpoint_size(folder: Path, layers: list[str]) -> tuple[int, float]:
    """The checkpoint's safetensors bytes, and the bits per weight of `layers` (the model's
    quantizable layers, as mixprec counts them) as stored: packed codes, scales, zero points."""
    from safetensors import safe_open

    total = stored = params = 0
    uses = Counter(layers)  # a tied tensor serves two layers
    for path in sorted(folder.glob("*.safetensors")):
        total += path.stat().st_size
        with safe_open(str(path), "pt") as tensors:
            for key in tensors.keys():  # noqa: SIM118 (safe_open is not a mapping)
                module, _, leaf = key.rpartition(".")
                if module not in uses or not leaf.startswith("weight"):
                    continue
                tensor = tensors.get_tensor(key)
                stored += uses[module] * tensor.numel() * tensor.element_size()
                if leaf == "weight":
                    params += uses[module] * tensor.numel()
                elif leaf == "weight_shape":  # packed: the codes' tensor is not the weight's shape
                    params += uses[module] * int(torch.prod(tensor.long()))
    return total, 8 * stored / max(params, 1)
