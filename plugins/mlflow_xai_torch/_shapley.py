"""Shared by the Shapley explainers of this pack: the Shapley kernel, the endpoints, and the
adaptive-sampling rules (standard errors, stopping) of the two sampling estimators."""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Any

import numpy as np

from mlflow_xai.plugin_api import ConfigError, ExplainTask, as_tensor

#: Fewest i.i.d. sampling units (antithetic pairs) an adaptive run starts with: a standard
#: error estimated from fewer pairs is itself too noisy to decide when to stop on.
MIN_PAIRS = 8

#: Rows whose largest |attribution| is below this share of the largest over all rows are
#: judged against that floor instead: an all-~0 row must not demand machine precision.
NEGLIGIBLE_ROW_SHARE = 0.01


def kernel_weight(n_features: int, size: int) -> float:
    """The Shapley kernel pi(z) for one coalition of ``size`` features (0 < size < M)."""
    M = n_features
    return (M - 1) / (comb(M, size) * size * (M - size))


def size_mass(n_features: int, size: int) -> float:
    """Total kernel weight of all coalitions of one size: C(M, s) * pi(s)."""
    return (n_features - 1) / (size * (n_features - size))


def tensors(task: ExplainTask, X: np.ndarray):
    """X, background on the device, and the endpoints f(x) and E[f(background)]."""
    predict = task.tensor_predict()
    x = as_tensor(X, task.device)
    background = as_tensor(task.background, task.device)
    f_x = predict(x)
    base = predict(background).mean()
    return predict, x, background, f_x, base


def endpoint_rows(n_rows: int, n_background: int) -> int:
    """Model rows spent on the endpoints f(x) (one per row) and E[f(background)]."""
    return n_rows + n_background


@dataclass(frozen=True)
class Adaptive:
    """The ``n_samples='auto'`` settings: the first round's budget, the cap and the tolerance."""

    min_samples: int
    max_samples: int
    tolerance: float

    @classmethod
    def from_params(cls, method: str, params: dict[str, Any]) -> Adaptive:
        low, high = int(params["min_samples"]), int(params["max_samples"])
        if low > high:
            raise ConfigError(f"{method}: min_samples ({low}) is larger than max_samples "
                              f"({high}); lower min_samples or raise max_samples.")
        return cls(low, high, float(params["tolerance"]))


def row_scale(phi: np.ndarray) -> np.ndarray:
    """The size each row's standard errors are judged against: its largest |attribution|,
    floored at a small share of the largest over all rows.

    Why max_j |phi_j| and not |f(x) - base|: the latter can be ~0 while the attributions are
    large and cancel, and the reader's question ("are the top features right?") is about the
    largest attributions. The floor keeps rows whose attributions are all ~0 (f(x) ~ base,
    no interactions) from blocking the stop on a precision nobody reads.
    """
    largest = np.abs(phi).max(axis=1)
    floor = NEGLIGIBLE_ROW_SHARE * float(largest.max(initial=0.0))
    return np.maximum(largest, max(floor, 1e-12))


def converged(phi: np.ndarray, se: np.ndarray, tolerance: float) -> bool:
    """True when every row has max_j SE_j <= tolerance * its scale (see :func:`row_scale`)."""
    if not np.all(np.isfinite(se)):
        return False  # too few samples to estimate the error yet
    return bool(np.all(se.max(axis=1) <= tolerance * row_scale(phi)))


def doubling_targets(first: int, cap: int):
    """Cumulative budgets of the rounds: ``first``, then doubling, never above ``cap``."""
    target = min(first, cap)
    yield target
    while target < cap:
        target = min(2 * target, cap)
        yield target


def standard_error_info(se: np.ndarray, samples_used: int) -> dict[str, Any]:
    """The info entries every sampling Shapley method reports next to its standard errors."""
    finite = se.size > 0 and bool(np.all(np.isfinite(se)))
    return {"max_standard_error": float(se.max()) if finite else None,
            "samples_used": int(samples_used)}


def adaptive_info(rounds: int, is_converged: bool) -> dict[str, Any]:
    """The info entries of an ``n_samples='auto'`` run."""
    return {"rounds": int(rounds), "converged": bool(is_converged)}


def adaptive_param_types(min_samples: int) -> dict[str, str]:
    """``param_types`` of the adaptive parameters (shared by kernel and permutation SHAP)."""
    return {"tolerance": "float > 0", "min_samples": f"int >= {min_samples}",
            "max_samples": f"int >= {min_samples}"}
