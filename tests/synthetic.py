"""Synthetic data with known informative features, shared by the selector tests and benchmark.

Every generator returns ``(X, y, informative)``: a DataFrame with columns ``f0..f{d-1}``, the
targets, and the names of the columns the target depends on (the rest are independent noise).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _frame(X: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])


def linear_classification(n: int = 1000, d: int = 20, seed: int = 0
                          ) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Binary labels from a logistic model on four standard-normal features (weights 2, -2,
    1.5, -1.5), the other ``d - 4`` pure noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    logit = X[:, :4] @ np.array([2.0, -2.0, 1.5, -1.5])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return _frame(X), y, ["f0", "f1", "f2", "f3"]


def friedman1(n: int = 1000, d: int = 15, seed: int = 0, noise: float = 1.0
              ) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """scikit-learn's make_friedman1: 10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 + 10 x3 + 5 x4 + noise,
    with ``d - 5`` uniform noise features. x2 is non-monotone: linear filters miss it."""
    from sklearn.datasets import make_friedman1

    X, y = make_friedman1(n_samples=n, n_features=d, noise=noise, random_state=seed)
    return _frame(X), y, [f"f{i}" for i in range(5)]


def low_snr(n: int = 2000, d: int = 50, seed: int = 0, snr: float = 0.5
            ) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """ChaosMining-style low signal-to-noise regression: y = x0 + sin(2 x1) + x2^2 - 1 plus Gaussian noise of variance signal_var / snr, among
    ``d - 3`` noise features."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    signal = X[:, 0] + np.sin(2 * X[:, 1]) + X[:, 2] ** 2 - 1
    y = signal + rng.normal(scale=np.sqrt(signal.var() / snr), size=n)
    return _frame(X), y, ["f0", "f1", "f2"]


def with_id_like_column(n: int = 2000, seed: int = 0
                        ) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Categorical columns for OutRank: ``signal`` (5 levels, drives the label), ``user_id``
    (n distinct integers: a row ID, pure noise), ``zip_bucket`` (200 levels of noise) and
    three Gaussian noise columns. Plain mutual information rewards the ID."""
    rng = np.random.default_rng(seed)
    signal = rng.integers(0, 5, size=n)
    p = np.array([0.15, 0.3, 0.5, 0.7, 0.85])[signal]
    y = (rng.random(n) < p).astype(int)
    X = pd.DataFrame({"signal": signal, "user_id": rng.permutation(n),
                      "zip_bucket": rng.integers(0, 200, size=n)})
    for j in range(3):
        X[f"noise{j}"] = rng.normal(size=n)
    return X, y, ["signal"]
