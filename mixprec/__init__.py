"""mixprec: find the best mixed-precision plan for a neural network.

The public API is imported lazily, so `mixprec formats` starts without loading transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "MixprecError": "mixprec.errors",
    "NumberFormat": "mixprec.kernels.formats",
    "formats": "mixprec.kernels",
    "quantize_dequantize": "mixprec.kernels",
    "KernelPreference": "mixprec.kernels.dispatch",
    "PackedTensor": "mixprec.kernels.packing",
    "Scheme": "mixprec.scheme",
    "Unit": "mixprec.units",
    "discover_units": "mixprec.units",
    "ModelBundle": "mixprec.models",
    "load_model": "mixprec.models",
    "fingerprint": "mixprec.models",
    "apply_plan": "mixprec.plan",
    "uniform_assignment": "mixprec.plan",
    "Evaluation": "mixprec.metrics",
    "evaluate": "mixprec.metrics",
    "footprint": "mixprec.metrics",
    "analyze": "mixprec.sensitivity.runner",
    "AnalysisSpec": "mixprec.sensitivity.cells",
    "ScoreTable": "mixprec.sensitivity.table",
    "score": "mixprec.scoring",
    "Calibration": "mixprec.scoring",
    "TextData": "mixprec.textdata",
    "TensorData": "mixprec.tensordata",
    "AllocationProblem": "mixprec.allocation",
    "allocate": "mixprec.allocation",
    "pareto": "mixprec.allocation",
    "PrecisionPlan": "mixprec.plan",
    "Budget": "mixprec.search.cost",
    "InfeasibleBudget": "mixprec.search.cost",
    "RunConfig": "mixprec.config",
    "StrategyConfig": "mixprec.search.configs",
    "ILPConfig": "mixprec.search.configs",
    "GreedyConfig": "mixprec.search.configs",
    "OptunaConfig": "mixprec.search.configs",
    "SACConfig": "mixprec.search.configs",
    "UniformConfig": "mixprec.search.configs",
    "SearchStrategy": "mixprec.search.base",
    "register_strategy": "mixprec.search.base",
    "SensitivityEstimator": "mixprec.sensitivity.base",
    "register_estimator": "mixprec.sensitivity.base",
    "EstimatorConfig": "mixprec.sensitivity.configs",
    "HessianConfig": "mixprec.sensitivity.configs",
    "FisherConfig": "mixprec.sensitivity.configs",
    "IsolationConfig": "mixprec.sensitivity.configs",
}

__all__ = [
    "AllocationProblem",
    "AnalysisSpec",
    "Budget",
    "Calibration",
    "EstimatorConfig",
    "Evaluation",
    "FisherConfig",
    "GreedyConfig",
    "HessianConfig",
    "ILPConfig",
    "InfeasibleBudget",
    "IsolationConfig",
    "KernelPreference",
    "MixprecError",
    "ModelBundle",
    "NumberFormat",
    "OptunaConfig",
    "PackedTensor",
    "PrecisionPlan",
    "RunConfig",
    "SACConfig",
    "Scheme",
    "ScoreTable",
    "SearchStrategy",
    "SensitivityEstimator",
    "StrategyConfig",
    "TensorData",
    "TextData",
    "UniformConfig",
    "Unit",
    "allocate",
    "analyze",
    "apply_plan",
    "discover_units",
    "evaluate",
    "fingerprint",
    "footprint",
    "formats",
    "load_model",
    "pareto",
    "quantize_dequantize",
    "register_estimator",
    "register_strategy",
    "score",
    "uniform_assignment",
]

if TYPE_CHECKING:
    from mixprec.allocation import AllocationProblem, allocate, pareto
    from mixprec.config import RunConfig
    from mixprec.errors import MixprecError
    from mixprec.kernels import formats, quantize_dequantize
    from mixprec.kernels.dispatch import KernelPreference
    from mixprec.kernels.formats import NumberFormat
    from mixprec.kernels.packing import PackedTensor
    from mixprec.metrics import Evaluation, evaluate, footprint
    from mixprec.models import ModelBundle, fingerprint, load_model
    from mixprec.plan import PrecisionPlan, apply_plan, uniform_assignment
    from mixprec.scheme import Scheme
    from mixprec.scoring import Calibration, score
    from mixprec.search.base import SearchStrategy, register_strategy
    from mixprec.search.configs import (
        GreedyConfig,
        ILPConfig,
        OptunaConfig,
        SACConfig,
        StrategyConfig,
        UniformConfig,
    )
    from mixprec.search.cost import Budget, InfeasibleBudget
    from mixprec.sensitivity.base import SensitivityEstimator, register_estimator
    from mixprec.sensitivity.cells import AnalysisSpec
    from mixprec.sensitivity.configs import (
        EstimatorConfig,
        FisherConfig,
        HessianConfig,
        IsolationConfig,
    )
    from mixprec.sensitivity.runner import analyze
    from mixprec.sensitivity.table import ScoreTable
    from mixprec.tensordata import TensorData
    from mixprec.textdata import TextData
    from mixprec.units import Unit, discover_units


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'mixprec' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
