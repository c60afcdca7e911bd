"""mixprec: find the best mixed-precision plan for a neural network."""

from __future__ import annotations

__version__ = "0.1.0"
