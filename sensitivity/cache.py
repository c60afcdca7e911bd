"""Content-addressed cache of unit scores; each entry carries a checksum and is never trusted
without it (a corrupt or truncated entry is deleted and recomputed).

What the checksum protects against: a truncated, half-written or bit-flipped entry, and an
entry filed under another key. What it does not: someone who can write the cache folder can
forge an entry with a matching checksum, so keep the folder private (mixprec creates it 0700).
An entry is JSON only (opening it never runs code), and a payload that is not a finished score
(missing or non-finite numbers, an interval that is not an interval) is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from mixprec.files import atomic_write_text
from mixprec.scheme import Scheme
from mixprec.units import Unit

CACHE_VERSION = 2  # 2: a score's interval from very few samples spans their range


def cell_key(
    fingerprint: str,
    unit: Unit,
    scheme: str,
    estimator: str,
    params: dict[str, object],
    calibration: str,
    seed: int,
    device: str = "cpu",
    imatrix: str = "",
) -> str:
    """SHA-256 over everything that decides a score; a GPU's scores (other kernels, other
    rounding), those made with an importance matrix (`imatrix`: its file's digest) and those
    whose inputs take a static calibrated scale are filed apart; other keys stay as they were."""
    parts = {
        "version": CACHE_VERSION,
        "model": fingerprint,
        "unit": unit.name,
        "modules": list(unit.modules),
        "scheme": scheme,
        "estimator": estimator,
        "params": params,
        "calibration": calibration,
        "seed": seed,
    }
    if device != "cpu":
        parts["device"] = device
    if imatrix:
        parts["imatrix"] = imatrix
    activation = Scheme.parse(scheme).activation if scheme else None
    if activation is not None and activation.static_input:  # inputs under a calibrated scale
        parts["inputs"] = "static"
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _checksum(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def valid_payload(payload: object) -> bool:
    """A finished score: finite numbers, a low..high interval, at least one sample, status ok."""
    if not isinstance(payload, dict) or payload.get("status") != "ok":
        return False
    numbers = [payload.get(k) for k in ("score", "ci_low", "ci_high", "seconds")]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in numbers):
        return False
    score, low, high, seconds = (float(v) for v in numbers)  # type: ignore[arg-type]
    samples = payload.get("samples")
    return (
        all(map(math.isfinite, (score, low, high, seconds)))
        and low <= high
        and seconds >= 0
        and isinstance(samples, int)
        and samples >= 1
    )


class CellCache:
    """One small JSON file per key under `root`, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            payload = entry["payload"]
            if (
                entry["key"] == key
                and entry["checksum"] == _checksum(payload)
                and valid_payload(payload)
            ):
                return dict(payload)
        except (ValueError, KeyError, TypeError, OSError):
            pass
        path.unlink(missing_ok=True)  # corrupt: recompute rather than trust it
        return None

    def put(self, key: str, payload: dict[str, Any]) -> None:
        if not self.root.is_dir():
            self.root.mkdir(parents=True, mode=0o700, exist_ok=True)
        entry = {"key": key, "checksum": _checksum(payload), "payload": payload}
        atomic_write_text(self._path(key), json.dumps(entry, sort_keys=True))
