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


def background_mean(background: np.ndarray) -> np.ndarray:
    """Per-feature mean of the background rows, the value that "removes" a feature.

    Missing values (NaN, kept when the model accepts them) are left out of the mean, so one
    missing background value does not make the whole feature's removal value missing. A
    feature missing in every background row stays missing (NaN): the model accepts that, and
    it is the only removal value the background offers.
    """
    background = np.asarray(background, dtype=np.float64)
    if not np.isnan(background).any():
        return background.mean(axis=0)
    observed = ~np.isnan(background)
    counts = observed.sum(axis=0)
    sums = np.where(observed, background, 0.0).sum(axis=0)
    # Written out rather than np.nanmean: that warns ("Mean of empty slice") for all-NaN columns.
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def background_scale(background: np.ndarray) -> np.ndarray:
    """Per-feature standard deviation of the background over its observed (non-missing)
    values; 1 where it is 0 or undefined, so it can scale perturbations."""
    background = np.asarray(background, dtype=np.float64)
    if not np.isnan(background).any():
        scale = background.std(axis=0)
        return np.where(scale > 0, scale, 1.0)
    mean = background_mean(background)
    observed = ~np.isnan(background)
    counts = np.maximum(observed.sum(axis=0), 1)
    spread = np.where(observed, background - mean, 0.0)
    scale = np.sqrt((spread ** 2).sum(axis=0) / counts)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
