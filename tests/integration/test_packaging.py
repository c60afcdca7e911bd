"""A regular (non-editable) wheel maps every source folder into the mixprec namespace."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installs_the_mixprec_namespace(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    [wheel] = tmp_path.glob("mixprec-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"mixprec/cli.py", "mixprec/py.typed", "mixprec/kernels/formats.py"} <= names
    assert "mixprec/kernels/triton/qdq.py" in names
    assert not any(n.startswith(("kernels/", "tests/", "experiments/")) for n in names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = (
        "import mixprec, mixprec.kernels.formats as f; "
        "print(mixprec.kernels.formats.__file__); print(f.get('mxfp4').bits_per_element)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=True,
    )
    where, bits = proc.stdout.split()
    assert where.startswith(str(site)) and bits == "4.25"


def test_every_export_resolves() -> None:
    import mixprec

    assert sorted(mixprec.__all__) == sorted(mixprec._EXPORTS)
    for name in mixprec.__all__:
        assert getattr(mixprec, name) is not None


def test_top_level_api_is_lazy() -> None:
    probe = (
        "import sys, mixprec; assert 'transformers' not in sys.modules; "
        "mixprec.formats.get('nvfp4'); assert 'transformers' not in sys.modules; "
        "print(mixprec.apply_plan.__module__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "mixprec.plan"
