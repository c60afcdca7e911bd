"""Content-addressed cache of unit scores; each entry carries a checksum and is never trusted
without it (a corrupt or truncated entry is deleted and recomputed)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mixprec.files import atomic_write_text
from mixprec.units import Unit

CACHE_VERSION = 1


def cell_key(
    fingerprint: str,
    unit: Unit,
    scheme: str,
    estimator: str,
    params: dict[str, object],
    calibration: str,
    seed: int,
) -> str:
    """SHA-256 over everything that decides a score."""
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
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _checksum(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


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
            if entry["key"] == key and entry["checksum"] == _checksum(payload):
                return dict(payload)
        except (ValueError, KeyError, TypeError, OSError):
            pass
        path.unlink(missing_ok=True)  # corrupt: recompute rather than trust it
        return None

    def put(self, key: str, payload: dict[str, Any]) -> None:
        entry = {"key": key, "checksum": _checksum(payload), "payload": payload}
        atomic_write_text(self._path(key), json.dumps(entry, sort_keys=True))
