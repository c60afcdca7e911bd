"""Run mypy on the package as it is installed: folders mapped into `mixprec.*` by package-dir.

mypy cannot follow setuptools' editable-install finder, so this builds a tree of symlinks
with the installed layout (from pyproject's package-dir table) and checks that.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def build_link_tree(dest: Path) -> None:
    """Lay out `dest/mixprec/...` as symlinks to the source folders named in package-dir."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(dest, ignore_errors=True)
    for package, folder in sorted(mapping.items()):
        target = dest.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted((ROOT / folder).rglob("*.py")):
            link = target / source.relative_to(ROOT / folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
        typed = ROOT / folder / "py.typed"
        if typed.exists():
            (target / "py.typed").symlink_to(typed)


def main() -> int:
    tree = ROOT / "build" / "typecheck"
    build_link_tree(tree)
    command = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
    return subprocess.call([*command, "-p", "mixprec"], cwd=tree)


if __name__ == "__main__":
    sys.exit(main())
