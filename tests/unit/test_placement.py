"""--dtype and --device: checked names, the checkpoint's own dtype for auto, batches placed
beside the model, and quantize-dequantize in float32 cast back to the model's dtype."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mixprec.errors import MixprecError
from mixprec.kernels.dispatch import quantize_dequantize
from mixprec.kernels.formats import get
from mixprec.models import load_model
from mixprec.placement import Placement, dtype_name, model_dtype, move_batch
from mixprec.plan import apply_plan
from mixprec.units import quantizable_layers, weight_matrix
from tests.helpers.models import make_llama


@pytest.fixture(scope="module")
def bf16_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bf16") / "llama"
    make_llama().to(torch.bfloat16).save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("auto", torch.bfloat16),
        ("bf16", torch.bfloat16),
        ("fp16", torch.float16),
        ("fp32", torch.float32),
    ],
)
def test_auto_is_the_checkpoints_own_dtype(
    bf16_folder: Path, requested: str, expected: torch.dtype
) -> None:
    bundle = load_model(f"hf:{bf16_folder}", dtype=requested, device="cpu")
    assert {p.dtype for p in bundle.model.parameters()} == {expected}
    assert bundle.calibration[0]["input_ids"].dtype == torch.int64  # token ids stay ids


def test_a_built_in_is_cast_with_its_float_inputs() -> None:
    bundle = load_model("digits-cnn", dtype="bf16")
    assert model_dtype(bundle.model) == torch.bfloat16
    batch = bundle.calibration[0]
    assert batch["inputs"].dtype == torch.bfloat16 and batch["labels"].dtype == torch.int64
    assert bundle.task.outputs(bundle.model, batch).dtype == torch.bfloat16


def test_a_bf16_weight_is_qdq_of_its_float32_cast_back(bf16_folder: Path) -> None:
    bundle = load_model(f"hf:{bf16_folder}")
    name, module = next(iter(quantizable_layers(bundle.model).items()))
    weight = weight_matrix(module).detach()
    expected = quantize_dequantize(weight.float(), get("int4_g32")).to(torch.bfloat16)
    quantized = apply_plan(bundle.model, {name: "w:int4_g32"})
    got = weight_matrix(quantizable_layers(quantized)[name])
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)
    assert not torch.equal(got, weight)  # the scheme did change it


@pytest.mark.parametrize(
    ("dtype", "device", "message"),
    [
        ("bfloat16", "auto", "unknown --dtype 'bfloat16'; valid: auto, bf16, fp16, fp32"),
        ("auto", "gpu", "unknown --device 'gpu'; valid: auto, cpu, cuda or cuda:N"),
        ("auto", "cuda:x", "unknown --device 'cuda:x'"),
    ],
)
def test_bad_names_are_one_line(dtype: str, device: str, message: str) -> None:
    with pytest.raises(MixprecError, match=message.replace("(", r"\(")):
        Placement(dtype, device)


def test_a_missing_cuda_device_names_what_is_there() -> None:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(MixprecError, match="cuda:99"):
        Placement(device="cuda:99").torch_device()
    if count == 0:
        with pytest.raises(MixprecError, match="no CUDA device is visible"):
            Placement(device="cuda").torch_device()


def test_batches_keep_their_shape_and_move_floats_only() -> None:
    batch = {"x": torch.ones(2, dtype=torch.float32), "pair": (torch.arange(3), [torch.zeros(1)])}
    moved = move_batch(batch, torch.device("cpu"), torch.float16)
    assert moved["x"].dtype == torch.float16 and moved["pair"][0].dtype == torch.int64
    assert isinstance(moved["pair"], tuple) and moved["pair"][1][0].dtype == torch.float16
    assert dtype_name(torch.bfloat16) == "bf16" and dtype_name(torch.float64) == "float64"


def test_a_bf16_model_object_is_scored_and_planned_where_it_is(tmp_path: Path) -> None:
    import mixprec
    from mixprec.sensitivity.cache import CellCache

    model = make_llama().to(torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 64, (2, 16), generator=gen)} for _ in range(3)]

    def loss(output: object, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = output.logits[:, :-1].float()  # type: ignore[attr-defined]
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, 64), batch["input_ids"][:, 1:].reshape(-1)
        )

    data = mixprec.Calibration(batches, loss=loss, divergence="kl")
    table = mixprec.score(model, data, ["w:int8", "w:int4_g32"], ["fisher", "isolation"],
                          ["layer"], cache=CellCache(tmp_path))  # fmt: skip
    assert (table.frame["status"] == "ok").all() and (table.frame["score"] >= 0).all()
    assert model_dtype(model) == torch.bfloat16  # scored where and as it was
    problem = mixprec.AllocationProblem.build(table, model, "fisher", data=data)
    plan = mixprec.allocate(problem, "6bits", measure=True)
    assert plan.provenance["dtype"] == "bf16" and plan.measured["output_kl"] >= 0
