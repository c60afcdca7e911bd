"""Number formats and their quantize-dequantize kernels (torch reference; Triton is optional)."""

from __future__ import annotations

from mixprec.kernels import formats
from mixprec.kernels.formats import NumberFormat
from mixprec.kernels.reference import quantize_dequantize

__all__ = ["NumberFormat", "formats", "quantize_dequantize"]
