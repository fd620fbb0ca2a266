"""The standard error of a global importance (mean |value| over rows) from the values' own
standard errors, shared by ``importance.json``, the bar plots' error bars and the
``rank_uncertainty`` check, so that all three state the same uncertainty."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd


def importance_standard_errors(se: np.ndarray, row_error_correlation: float = 1.0
                               ) -> np.ndarray:
    """Per-feature standard error of mean_i |value_ij|, from the values' standard errors ``se``
    (rows, features) and the correlation rho of the rows' errors:
    sqrt((1 - rho) * sum_i se_ij^2 / n^2 + rho * (mean_i se_ij)^2).

    |.| is 1-Lipschitz, so the error of mean |value| is at most that of the mean of the signed
    errors; with equicorrelated errors its variance is the formula above (signs can only lower
    it). rho = 1 (rows share one error, as rows explained with one shared sampling design may)
    is always safe; rho = 0 holds for estimators that draw each row's samples independently.
    """
    se = np.asarray(se, dtype=float)
    n = max(1, len(se))
    rho = float(np.clip(row_error_correlation, 0.0, 1.0))
    independent = (se ** 2).sum(axis=0) / n ** 2
    shared = se.mean(axis=0) ** 2
    return np.sqrt((1.0 - rho) * independent + rho * shared)


def row_error_correlation(entry: Mapping[str, Any] | None) -> float:
    """The method's measured correlation of its rows' errors (``summary.json`` entry
    ``row_error_correlation``), 1 (the safe bound) when it did not measure one."""
    value = (entry or {}).get("row_error_correlation")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 1.0
    return float(np.clip(value, 0.0, 1.0)) if np.isfinite(value) else 1.0


def importance_errors(expl: Any) -> dict[str, pd.Series]:
    """method -> per-feature standard error of an :class:`~mlflow_xai.explanations.
    Explanations`' global importance (the methods that report standard errors)."""
    methods = expl.summary.get("methods") or {}
    return {m: pd.Series(importance_standard_errors(frame.to_numpy(),
                                                    row_error_correlation(methods.get(m))),
                         index=frame.columns)
            for m, frame in getattr(expl, "standard_errors", {}).items()}
