"""Quantization kernels side by side: torch reference vs Triton vs torchao, in one run.

Writes experiments/results/kernels.md. With a CUDA device: fused quantize-dequantize time and
achieved bandwidth (fraction of the device's peak and of a plain copy), and the dequant-matmul
vs a bf16 matmul at batch 1, 16 and 128. Without one: the CPU reference vs torchao, Triton's
interpreter at a small size (an exactness tool, not a speed figure), and a note that no GPU
figure was measured. Every figure names the device it was measured on.

Run: .venv/bin/python experiments/bench_kernels.py [--sizes 4096,8192 --repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
from study import publish

import mixprec.kernels.triton as triton_kernels  # first: turns the interpreter on without CUDA
from mixprec.kernels import formats, packing
from mixprec.kernels.triton import matmul, qdq
from mixprec.logs import quiet_optional_backends
from mixprec.markdown import frame_markdown

RESULTS = Path(__file__).resolve().parent / "results"
QDQ_FORMATS = ("mxfp8_e4m3", "mxfp4", "nvfp4", "int4_g128")
MATMUL_FORMATS = ("int4_g128", "mxfp4", "nvfp4")
# Memory bandwidth from the vendors' data sheets, bytes per second, by device-name prefix.
PEAK_BANDWIDTH = {
    "NVIDIA H100 80GB HBM3": 3.35e12,
    "NVIDIA H100 PCIe": 2.0e12,
    "NVIDIA H100 NVL": 3.9e12,
    "NVIDIA H200": 4.8e12,
    "NVIDIA A100-SXM4-80GB": 2.039e12,
    "NVIDIA A100-SXM4-40GB": 1.555e12,
    "NVIDIA A100 80GB PCIe": 1.935e12,
}


def millis(fn: Callable[[], object], repeats: int, cuda: bool) -> float:
    """Median milliseconds per call of `fn` after a warm-up (synchronised on CUDA)."""
    if cuda:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=max(100, 20 * repeats), return_mode="median"))
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def same_bits(got: torch.Tensor, want: torch.Tensor) -> bool:
    return torch.equal(got.view(torch.int32), want.view(torch.int32))


def table(rows: list[dict[str, object]]) -> str:
    """Rows as Markdown; a missing figure shows as a dash."""
    frame = pd.DataFrame(rows).astype(object)
    return frame_markdown(frame.where(frame.notna(), "-"))


def torchao_qdq(name: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """torchao's own quantize + dequantize for the formats it has (MX, NVFP4)."""
    from torchao.prototype.mx_formats import mx_tensor as mx
    from torchao.prototype.mx_formats import nvfp4_tensor as nv

    elements = {"mxfp8_e4m3": torch.float8_e4m3fn, "mxfp4": torch.float4_e2m1fn_x2}
    if name in elements:
        dtype = elements[name]

        def run_mx(x: torch.Tensor) -> torch.Tensor:
            scale, data = mx.to_mx(x, dtype, 32)
            return mx.to_dtype(data, scale, dtype, 32, torch.float32)

        return run_mx
    if name == "nvfp4":

        def run_nv(x: torch.Tensor) -> torch.Tensor:
            tensor_scale = nv.per_tensor_amax_to_scale(x.abs().amax())
            return nv.NVFP4Tensor.to_nvfp4(x, per_tensor_scale=tensor_scale).dequantize(
                torch.float32
            )

        return run_nv
    return None


def qdq_rows(size: int, repeats: int, device: str, peak: float | None) -> list[dict[str, object]]:
    cuda = device == "cuda"
    x = torch.randn(size, size, device=device)
    moved = 8 * x.numel()  # bytes: read fp32, write fp32
    copy_ms = millis(lambda: x.clone(), repeats, cuda)
    rows = []
    for name in QDQ_FORMATS:
        fmt = formats.get(name)
        reference = millis(lambda fmt=fmt: fmt.quantize_dequantize(x), repeats, cuda)
        other = torchao_qdq(name)
        torchao_ms = millis(lambda other=other: other(x), repeats, cuda) if other else None
        row: dict[str, object] = {
            "format": name,
            "size": f"{size}x{size}",
            "torch reference ms": reference,
            "torchao ms": torchao_ms,
            "torchao / reference": torchao_ms / reference if torchao_ms else None,
            "reference GB/s": moved / reference / 1e6,
        }
        if cuda:
            same = same_bits(qdq.quantize_dequantize(x, fmt), fmt.quantize_dequantize(x))
            triton_ms = millis(lambda fmt=fmt: qdq.quantize_dequantize(x, fmt), repeats, cuda)
            achieved = moved / triton_ms / 1e6
            row |= {
                "triton ms": triton_ms,
                "reference / triton": reference / triton_ms,
                "torchao / triton": torchao_ms / triton_ms if torchao_ms else None,
                "same bits": same,
                "triton GB/s": achieved,
                "of peak": achieved * 1e9 / peak if peak else None,
                "of copy": achieved / (moved / copy_ms / 1e6),
            }
        rows.append(row)
    return rows


def interpreter_rows(size: int) -> list[dict[str, object]]:
    """One timed call each through Triton's interpreter: exact, and far slower than torch."""
    x = torch.randn(size, size)
    rows: list[dict[str, object]] = []
    for name in QDQ_FORMATS:
        fmt = formats.get(name)
        start = time.perf_counter()
        got = qdq.quantize_dequantize(x, fmt)
        interp = time.perf_counter() - start
        start = time.perf_counter()
        want = fmt.quantize_dequantize(x)
        ref = time.perf_counter() - start
        rows.append({"format": name, "size": f"{size}x{size}", "interpreter s": interp,
                     "torch reference s": ref, "interpreter / reference": interp / ref,
                     "same bits": same_bits(got, want)})  # fmt: skip
    return rows


def matmul_rows(size: int, repeats: int) -> list[dict[str, object]]:
    """Dequant-matmul on packed weights vs a bf16 matmul on the dense weight (CUDA only)."""
    weight = torch.randn(size, size, device="cuda")
    dense = weight.to(torch.bfloat16)
    rows = []
    for name in MATMUL_FORMATS:
        packed = qdq.pack(weight, formats.get(name))
        for batch in (1, 16, 128):
            x = torch.randn(batch, size, device="cuda", dtype=torch.bfloat16)
            bf16_ms = millis(lambda x=x: torch.nn.functional.linear(x, dense), repeats, True)
            packed_ms = millis(
                lambda x=x, packed=packed: matmul.packed_linear(x, packed), repeats, True
            )
            rows.append({"format": name, "weight": f"{size}x{size}", "batch": batch,
                         "bf16 matmul ms": bf16_ms, "dequant-matmul ms": packed_ms,
                         "dequant / bf16": packed_ms / bf16_ms,
                         "weight MB packed": packed.nbytes / 1e6,
                         "weight MB bf16": dense.numel() * 2 / 1e6})  # fmt: skip
    return rows


def memory_rows(size: int) -> list[dict[str, object]]:
    weight = torch.randn(size, size)
    return [
        {"format": name, "weight": f"{size}x{size}",
         "packed MB": packing.pack(weight, formats.get(name)).nbytes / 1e6,
         "bf16 MB": size * size * 2 / 1e6, "fp32 MB": size * size * 4 / 1e6}
        for name in MATMUL_FORMATS
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4096,8192", help="square sizes, comma separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--interpreter-size", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=RESULTS / "kernels.md")
    args = parser.parse_args()
    quiet_optional_backends()
    sizes = [int(s) for s in args.sizes.split(",")]
    cuda = torch.cuda.is_available() and not triton_kernels.interpreted()
    if cuda:
        device_name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BANDWIDTH.items() if device_name.startswith(k)), None)
    else:
        device_name = f"CPU {platform.machine()} ({platform.processor() or 'cpu'})"
        device_name += f", {torch.get_num_threads()} torch threads"
        peak = None
    parts = [
        "# Quantization kernels: torch reference vs Triton vs torchao\n",
        f"Made by `python experiments/bench_kernels.py --sizes {args.sizes} --repeats "
        f"{args.repeats} --interpreter-size {args.interpreter_size}`. Device: "
        f"**{device_name}**. Times are medians in milliseconds, every ratio measured side by "
        "side in this run; fp32 input, quantize + dequantize.\n",
    ]
    if not cuda:
        parts.append(
            "**No GPU was available for this run**, so there are no Triton speed, bandwidth or "
            "dequant-matmul figures here; Triton ran only in its CPU interpreter (section 2). "
            "Re-run this script on a CUDA machine to fill them in.\n"
        )
    device = "cuda" if cuda else "cpu"
    rows = [r for size in sizes for r in qdq_rows(size, args.repeats, device, peak)]
    parts.append(f"## 1. Fused quantize-dequantize on {device_name}\n\n" + table(rows))
    if cuda:
        parts.append(
            "`triton GB/s` counts 8 bytes per element (read fp32, write fp32); `of peak` divides "
            f"by the data-sheet bandwidth ({peak and peak / 1e12} TB/s), `of copy` by a "
            "`clone()` of the same tensor. Goal on an H100: >= 0.70 of peak.\n"
        )
        mm = [r for size in sizes for r in matmul_rows(size, args.repeats)]
        parts.append(f"## 2. Dequant-matmul vs bf16 matmul on {device_name}\n\n" + table(mm))
    else:
        interp = interpreter_rows(args.interpreter_size)
        parts.append(
            "## 2. Triton through its interpreter (exactness, not speed)\n\n"
            "The CI runs every kernel this way (`TRITON_INTERPRET=1`); one call each, "
            f"{device_name}.\n\n" + table(interp)
        )
    parts.append(
        "## 3. Weight memory, packed vs dense (measured `PackedTensor.nbytes`)\n\n"
        + table([r for size in sizes for r in memory_rows(size)])
    )
    return publish(args.out, "\n".join(parts))


if __name__ == "__main__":
    sys.exit(main())
