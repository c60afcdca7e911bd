"""Sensitivity of every unit under every scheme: estimators, the score table and the runner."""

from __future__ import annotations

from mixprec.sensitivity.base import Score, SensitivityEstimator, make_estimator

__all__ = ["Score", "SensitivityEstimator", "make_estimator"]
