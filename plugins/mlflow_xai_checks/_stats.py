"""Small statistics shared by the checks."""

from __future__ import annotations

import numpy as np


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(spearmanr(a, b).statistic)


def kendall(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import kendalltau

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 1.0 if np.allclose(a, b) else 0.0
    return float(kendalltau(a, b).statistic)


def top_k(importance: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-np.asarray(importance), kind="stable")[:k]


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = set(a.tolist()), set(b.tolist())
    return len(sa & sb) / max(1, len(sa | sb))


def pairwise_mean(values: list[np.ndarray], fn) -> float:
    pairs = [fn(values[i], values[j]) for i in range(len(values))
             for j in range(i + 1, len(values))]
    return float(np.mean(pairs)) if pairs else float("nan")


def default_k(n_features: int) -> int:
    return max(1, min(5, n_features))
