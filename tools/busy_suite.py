"""Run CI (`.ci/run`) from fresh clones on a machine kept busy, then time `make demo` there.

The suite must pass on a loaded machine (issue: hardening). This starts BUSY processes that
spin a core each, runs `CI=true bash .ci/run` RUNS times in a row, each from a new clone of
HEAD, times `make demo` in the last clone with an empty cell cache, stops the spinners and
writes experiments/results/busy_suite.md.

    python tools/busy_suite.py [--runs 3] [--busy 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mixprec.files import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "experiments" / "results" / "busy_suite.md"
SPIN = "while True:\n    pass\n"
SUMMARY = re.compile(r"^=*\s*(\d+ (passed|failed).*) in ([\d.]+)s", re.MULTILINE)


def cpu_name() -> str:
    """The processor's model name (Linux), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_logged(command: list[str], cwd: Path, log_path: Path, env: dict[str, str]) -> float:
    started = time.monotonic()
    with log_path.open("w") as out:
        code = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    elapsed = time.monotonic() - started
    if code.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {code.returncode}; see {log_path}")
    return elapsed


def ci_once(index: int, work: Path, env: dict[str, str]) -> dict[str, str]:
    clone = work / f"clone{index}"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    log_path = work / f"ci{index}.log"
    log(f"run {index}: CI=true bash .ci/run in {clone} (log {log_path})")
    started = time.monotonic()
    with log_path.open("w") as out:
        proc = subprocess.run(["bash", ".ci/run"], cwd=clone, stdout=out,
                              stderr=subprocess.STDOUT, env={**env, "CI": "true"})  # fmt: skip
    wall = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    found = SUMMARY.findall(text)
    summary, pytest_s = (found[-1][0], found[-1][2]) if found else ("no pytest summary", "-")
    log(f"run {index}: exit {proc.returncode}, {summary}, {wall:.0f} s")
    return {"run": str(index), "commit": commit, "exit": str(proc.returncode), "summary": summary,
            "pytest_s": pytest_s, "wall_s": f"{wall:.0f}", "clone": str(clone)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--busy", type=int, default=2, help="spinning processes, a core each")
    args = parser.parse_args()
    if args.runs < 1 or args.busy < 0:
        parser.error(f"--runs {args.runs} must be at least 1 and --busy {args.busy} at least 0")
    work = Path(tempfile.mkdtemp(prefix="mixprec-busy-"))
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy)]
    rows: list[dict[str, str]] = []
    try:
        for index in range(1, args.runs + 1):
            rows.append(ci_once(index, work, env))
            if index < args.runs:  # keep the disk: only the last clone is needed after
                shutil.rmtree(Path(rows[-1]["clone"]) / ".venv", ignore_errors=True)
        clone = Path(rows[-1]["clone"])
        demo_env = {**env, "MIXPREC_CACHE_DIR": str(work / "empty-cache")}
        log("make demo in the last clone, empty cell cache")
        demo_s = run_logged(["make", "demo"], clone, work / "demo.log", demo_env)
        log(f"make demo: {demo_s:.0f} s")
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    lines = [
        "# The suite on a busy machine",
        "",
        f"Measured by `python tools/busy_suite.py --runs {args.runs} --busy {args.busy}` on "
        f"{time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores ({cpu_name()}), "
        f"{args.busy} processes spinning a core each for the whole time; each run is "
        "`CI=true bash .ci/run` (set-up, lint, typecheck, browser, pytest) from a new clone.",
        "",
        "| run | commit | exit | pytest | pytest s | wall s (with set-up) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['run']} | {r['commit']} | {r['exit']} | {r['summary']} | {r['pytest_s']} "
            f"| {r['wall_s']} |"
            for r in rows
        ),
        "",
        f"`make demo` afterwards in the last clone (installed, empty cell cache), same load: "
        f"{demo_s:.0f} s.",
        "",
    ]
    atomic_write_text(RESULT, "\n".join(lines))
    log(f"wrote {RESULT}")
    return 0 if all(r["exit"] == "0" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
