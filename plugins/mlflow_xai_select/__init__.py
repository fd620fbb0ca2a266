"""Feature-selection methods: filters on data and targets, and model-driven selectors.

Filters (no model calls): ``mutual_info``, ``distance_correlation``, ``outrank``, ``inf_fs``,
``ec_fs``, ``lasso``, and ``sequential_attention`` (trains its own small torch network).
Model-driven: ``permutation`` and ``attribution_rfe`` (any registered black-box explainer).
"""

from __future__ import annotations

from mlflow_xai.plugin_api import hookimpl

from .distance import DistanceCorrelation
from .filters import ECFS, InfFS, MutualInfo, OutRank
from .lasso import Lasso
from .model_based import AttributionRFE, Permutation
from .sequential_attention import SequentialAttention

SELECTORS = [MutualInfo, DistanceCorrelation, Permutation, AttributionRFE, InfFS, ECFS, OutRank,
             Lasso, SequentialAttention]


@hookimpl
def xai_register_selectors() -> list[type]:
    return list(SELECTORS)
