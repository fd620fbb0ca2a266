"""Shared by the Shapley explainers of this pack: the Shapley kernel and the endpoints."""

from __future__ import annotations

from math import comb

import numpy as np

from mlflow_xai.plugin_api import ExplainTask, as_tensor


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
