"""`--to gguf --base`: the base GGUF from llama.cpp's converter with every planned tensor in its
llama.cpp type (read back by gguf-py to exactly mixprec's fake-quantized values), everything
else as the base has it; a base that is not this model's is one line and writes nothing.
(Loading in llama.cpp and llama-quantize's bytes: tests/integration/test_llamacpp_runtime.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader, quants

from mixprec import llamacpp
from mixprec.export import PLAN_KEY, read_gguf_plan
from mixprec.export_llamacpp import gguf_names
from mixprec.kernels import formats
from mixprec.models import checkpoint_folder, fingerprint
from mixprec.plan import PrecisionPlan
from mixprec.units import quantizable_layers
from tests.helpers.cli import run
from tests.helpers.llamacpp import tiny_llama

SCHEMES = ["w:q4_k", "w:int8", "keep", "w:q5_0", "w:mxfp4_ggml", "w:q6_k"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PrecisionPlan, Path]:
    """A tiny Llama's folder, a plan for it (saved beside it) and its F16 base GGUF."""
    folder = tmp_path_factory.mktemp("tiny")
    model = tiny_llama(folder / "hf")
    layers = list(quantizable_layers(model))
    assignment = {n: SCHEMES[i % len(SCHEMES)] for i, n in enumerate(layers)}
    plan = PrecisionPlan(f"hf:{folder / 'hf'}", fingerprint(model), assignment, "5bits")
    plan.save(folder / "plan.json")
    return folder, plan, llamacpp.convert_to_gguf(folder / "hf", folder / "base-f16.gguf")


def test_the_gguf_is_the_base_with_the_plan_in_it(
    tiny: tuple[Path, PrecisionPlan, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, plan, base = tiny
    out = tmp_path / "model-mixprec.gguf"
    code, _, err = run(["export", str(folder / "plan.json"), "--to", "gguf", "--base", str(base),
                        "--out", str(out)], capsys)  # fmt: skip
    assert code == 0, err
    assert "llama.cpp stores int8 as q8_0, with other values (8.5 bits)" in err
    source, written = GGUFReader(str(base)), GGUFReader(str(out))
    assert set(written.fields) == set(source.fields) | {PLAN_KEY}
    for key in ("tokenizer.ggml.tokens", "llama.block_count", "general.architecture"):
        assert written.fields[key].contents() == source.fields[key].contents()
    assert read_gguf_plan(out) == plan
    model = tiny_llama(tmp_path / "again")  # the same seed: the same weights
    names, _ = gguf_names(model, list(plan.assignment))
    planned = {names[m]: s for m, s in plan.assignment.items()}
    theirs = {t.name: t for t in source.tensors}
    assert [t.name for t in written.tensors] == [t.name for t in source.tensors]
    for tensor in written.tensors:
        before = theirs[tensor.name]
        scheme = planned.get(tensor.name, "keep")
        if scheme == "keep":  # norms, and the layers the plan keeps: as the base has them
            assert tensor.tensor_type == before.tensor_type
            assert np.array_equal(np.asarray(tensor.data), np.asarray(before.data))
            continue
        fmt = formats.get({"w:int8": "q8_0"}.get(scheme, scheme.removeprefix("w:")))
        assert tensor.tensor_type.name.lower() == fmt.ggml_type, tensor.name
        values = torch.from_numpy(np.array(quants.dequantize(before.data, before.tensor_type)))
        expected = fmt.quantize_dequantize(values.float()).numpy()
        got = quants.dequantize(tensor.data, tensor.tensor_type)
        np.testing.assert_array_equal(got + 0.0, expected + 0.0, err_msg=tensor.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "model-mixprec.gguf"]


def test_a_quantized_base_is_warned_about(
    tiny: tuple[Path, PrecisionPlan, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, plan, base = tiny
    q8 = PrecisionPlan(plan.model, plan.fingerprint, dict.fromkeys(plan.assignment, "w:q8_0"),
                       "8.5bits")  # fmt: skip
    q8.save(tmp_path / "q8.json")
    argv = ["export", str(tmp_path / "q8.json"), "--to", "gguf", "--base", str(base), "--out"]
    assert run([*argv, str(tmp_path / "q8.gguf")], capsys)[0] == 0
    again = ["export", str(folder / "plan.json"), "--to", "gguf", "--base"]
    code, _, err = run([*again, str(tmp_path / "q8.gguf"), "--out", str(tmp_path / "x.gguf")],
                       capsys)  # fmt: skip
    assert code == 0 and "planned tensors quantized (" in err and "is Q8_0" in err, err


def test_without_base_the_models_own_is_converted(
    tiny: tuple[Path, PrecisionPlan, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("MIXPREC_CACHE_DIR", str(tmp_path / "cache"))
    folder, plan, _ = tiny
    out = tmp_path / "auto.gguf"
    code, _, err = run(["export", str(folder / "plan.json"), "--to", "gguf", "--out",
                        str(out)], capsys)  # fmt: skip
    assert code == 0, err
    [made] = (tmp_path / "cache").rglob("*-f32.gguf")  # the F32 base, kept for the next export
    assert {t.tensor_type.name for t in GGUFReader(str(made)).tensors} == {"F32"}
    assert read_gguf_plan(out) == plan


def test_a_base_that_is_not_this_model_is_one_line(
    tiny: tuple[Path, PrecisionPlan, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _, _ = tiny
    tiny_llama(tmp_path / "narrow", hidden=128)
    tiny_llama(tmp_path / "other", seed=1)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf at all")
    bases = {
        llamacpp.base_gguf(checkpoint_folder("minilm")): "is a 'bert' model, not this plan's "
        "'llama'",
        llamacpp.convert_to_gguf(tmp_path / "narrow", tmp_path / "narrow.gguf"): "blk.0.attn_q."
        "weight is [128, 128], but module model.layers.0.self_attn.q_proj is [256, 256]",
        llamacpp.convert_to_gguf(tmp_path / "other", tmp_path / "other.gguf"): "holds other "
        "weights than module",
        tmp_path / "junk.gguf": "is not a GGUF file",
        tmp_path / "missing.gguf": "is not a file; give a GGUF from llama.cpp's converter",
    }
    for base, message in bases.items():
        out = tmp_path / "x.gguf"
        code, _, err = run(["export", str(folder / "plan.json"), "--to", "gguf", "--base",
                            str(base), "--out", str(out)], capsys)  # fmt: skip
        assert code == 2 and message in err and err.count("\n") == 1, (base, err)
        assert not out.exists() and not list(tmp_path.glob(".x.gguf*"))
    argv = ["export", str(folder / "plan.json"), "--to", "json", "--base",
            str(tmp_path / "other.gguf"), "--out", str(tmp_path / "p.json")]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 2 and "goes with --to gguf only" in err


def test_exports_mixprec_wrote_may_be_written_again(
    tiny: tuple[Path, PrecisionPlan, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, _, base = tiny
    for target, extra in (("gguf", ["--base", str(base)]), ("llamacpp", [])):
        out = tmp_path / f"plan.{target}"
        argv = ["export", str(folder / "plan.json"), "--to", target, *extra, "--out", str(out)]
        assert run(argv, capsys)[0] == 0
        code, _, err = run(argv, capsys)  # its own earlier file: replaced
        assert code == 0, err
    (tmp_path / "notes.txt").write_text("my notes\n")
    argv = ["export", str(folder / "plan.json"), "--to", "llamacpp", "--out",
            str(tmp_path / "notes.txt")]  # fmt: skip
    code, _, err = run(argv, capsys)
    assert code == 2 and "was not written by mixprec" in err
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"
