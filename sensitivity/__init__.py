"""Sensitivity of every unit under every scheme: estimators, the score table and the runner."""

from __future__ import annotations

from mixprec.sensitivity.base import Score, SensitivityEstimator, estimator_names, make_estimator

__all__ = ["Score", "SensitivityEstimator", "estimator_names", "make_estimator"]
