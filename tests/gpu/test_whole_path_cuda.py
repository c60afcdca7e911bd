"""The whole path on CUDA (skips without a GPU): smollm2 in bf16 scored with fisher and
isolation on the GPU, a plan evaluated with the Triton kernels against the torch reference,
and the same cells on one Ray GPU actor as in this process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mixprec.metrics import evaluate
from mixprec.models import load_model
from mixprec.sensitivity.cache import CellCache
from mixprec.sensitivity.cells import AnalysisSpec
from mixprec.sensitivity.runner import analyze
from mixprec.store import RunFolder
from mixprec.units import discover_units, select

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
SCHEMES = ("w:int8", "w:int4_g128", "w:nvfp4")


def test_smollm2_bf16_scores_on_the_gpu(tmp_path: Path) -> None:
    spec = AnalysisSpec("smollm2", SCHEMES, ("fisher", "isolation"), ("block",),
                        calib_batches=2, dtype="bf16", device="cuda")  # fmt: skip
    table = analyze(spec, out=tmp_path / "run", cache=CellCache(tmp_path / "c"), progress=False)
    frame = table.frame
    assert (frame["status"] == "ok").all() and (frame["score"] > 0).all()
    record = RunFolder(tmp_path / "run").manifest().analysis
    assert record is not None and record.spec.device.startswith("cuda")
    assert record.spec.dtype == "bf16" and record.peak_cuda_mb and record.peak_cuda_mb > 0
    for estimator in ("fisher", "isolation"):  # fewer bits, more damage, block by block
        mine = frame[frame["estimator"] == estimator].pivot(index="unit", columns="scheme",
                                                            values="score")  # fmt: skip
        assert (mine["w:int8"] < mine["w:int4_g128"]).all()


def test_triton_evaluation_matches_the_torch_reference() -> None:
    """Same bits from both kernels, so the bf16 model's perplexity agrees to the rounding of
    its own matmuls on the GPU: within 0.1% (measured ~1e-5 when they were written)."""
    bundle = load_model("smollm2", dtype="bf16", device="cuda")
    layers = select(discover_units(bundle.model), "layer")
    plan = {u.name: ("w:nvfp4" if i % 2 else "w:mxfp4") for i, u in enumerate(layers)
            if u.name != "lm_head"}  # fmt: skip
    triton = evaluate(bundle, plan, kernel="triton")
    reference = evaluate(bundle, plan, kernel="torch")
    assert triton.kernel.startswith("triton") and reference.kernel.startswith("torch")
    for name, value in reference.metrics.items():
        assert triton.metrics[name] == pytest.approx(value, rel=1e-3)


def test_one_ray_gpu_actor_gives_the_cells_of_this_process(tmp_path: Path) -> None:
    spec = AnalysisSpec("digits-cnn", ("w:int4", "w:mxfp4"), ("fisher", "isolation"),
                        ("layer",), device="cuda")  # fmt: skip
    here = analyze(spec, cache=CellCache(tmp_path / "here"), progress=False)
    on_ray = analyze(spec, workers=1, gpus_per_worker=1.0, cache=CellCache(tmp_path / "ray"),
                     progress=False)  # fmt: skip
    assert (on_ray.frame["status"] == "ok").all()
    keys = ["estimator", "scheme", "unit"]
    ours, theirs = (t.frame.sort_values(keys).reset_index(drop=True) for t in (here, on_ray))
    assert ours[keys].equals(theirs[keys])
    # the same GPU and kernels; rtol for any cuBLAS algorithm picked differently per process
    assert np.allclose(ours["score"], theirs["score"], rtol=1e-4, atol=0)
