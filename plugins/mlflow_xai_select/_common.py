"""Shared pieces of the selectors: target encoding, discretisation, plug-in mutual information
with a permutation null, and the two-cluster cut of a score vector."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlflow_xai.plugin_api import ConfigError, ExplainTask

#: Integer targets with at most this many distinct values are treated as classes when the model
#: does not say whether it is a classifier.
MAX_CLASSES_GUESS = 20


def require_targets(task: ExplainTask, name: str) -> None:
    if task.targets is None:
        raise ConfigError(f"selector '{name}' needs targets: pass targets= (labels, one per row, "
                          "or the name of a column of data).")


def targets_of(task: ExplainTask, name: str) -> tuple[np.ndarray, bool]:
    """``(y, discrete)``: class codes 0..k-1 for classification, floats for regression."""
    require_targets(task, name)
    y = np.asarray(task.targets)
    if len(y) != len(task.X):
        raise ConfigError(f"selector '{name}': {len(y)} targets for {len(task.X)} rows.")
    numeric = y.dtype.kind in "biuf"
    if task.is_classifier is not None and (task.is_classifier or not numeric):
        discrete = task.is_classifier or not numeric
    else:
        discrete = not numeric or (y.dtype.kind in "biu"
                                   and len(np.unique(y)) <= MAX_CLASSES_GUESS)
    if discrete:
        _, codes = np.unique(y, return_inverse=True)
        return codes.astype(np.int64), True
    values = y.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"selector '{name}': targets hold NaN or infinite values; drop those "
                          "rows first.")
    return values, False


def discretize(column: np.ndarray, bins: int, categorical: bool) -> np.ndarray:
    """Integer codes of one column: categories and integer-valued columns keep every distinct
    value (their cardinality is what OutRank corrects for); other numbers go to quantile bins."""
    column = np.asarray(column, dtype=np.float64)
    uniques, codes = np.unique(column, return_inverse=True)
    if categorical or len(uniques) <= bins or np.all(uniques == np.round(uniques)):
        return codes.astype(np.int64)
    edges = np.unique(np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1]))
    return np.searchsorted(edges, column, side="right").astype(np.int64)


def discretize_all(X: np.ndarray, bins: int, categorical: tuple[int, ...] = ()) -> np.ndarray:
    return np.column_stack([discretize(X[:, j], bins, j in categorical)
                            for j in range(X.shape[1])]) if X.shape[1] else \
        np.zeros((len(X), 0), dtype=np.int64)


def plugin_mutual_info(codes: np.ndarray, y_codes: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two integer-coded variables, from counts."""
    n = len(codes)
    ky = int(y_codes.max()) + 1
    joint = np.bincount(codes * ky + y_codes, minlength=(int(codes.max()) + 1) * ky)
    joint = joint.reshape(-1, ky).astype(np.float64)
    px, py = joint.sum(1), joint.sum(0)
    nz = joint > 0
    outer = np.outer(px, py)
    return float(np.sum(joint[nz] / n * np.log(joint[nz] * n / outer[nz])))


def mutual_info_with_null(codes: np.ndarray, y_codes: np.ndarray, permutations: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per column: plug-in MI with the target, and its mean over ``permutations`` shuffles of
    the target (the MI a feature of the same cardinality gets by chance)."""
    d = codes.shape[1]
    raw = np.array([plugin_mutual_info(codes[:, j], y_codes) for j in range(d)])
    null = np.zeros(d)
    for _ in range(permutations):
        shuffled = rng.permutation(y_codes)
        null += np.array([plugin_mutual_info(codes[:, j], shuffled) for j in range(d)])
    return raw, null / max(permutations, 1)


def target_codes(y: np.ndarray, discrete: bool, bins: int) -> np.ndarray:
    return y if discrete else discretize(y, bins, categorical=False)


def chance_corrected_mi(task: ExplainTask, name: str, bins: int, permutations: int
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of the task: ``(plug-in MI with the target, its chance level, codes)`` after
    discretising columns (and continuous targets) into ``bins``."""
    y, discrete = targets_of(task, name)
    codes = discretize_all(task.X, bins, task.categorical)
    raw, null = mutual_info_with_null(codes, target_codes(y, discrete, bins), permutations,
                                      np.random.default_rng(task.seed))
    return raw, null, codes


def relevance(task: ExplainTask, name: str, bins: int = 16, permutations: int = 3
              ) -> np.ndarray:
    """Supervised relevance of each feature in [0, 1]: chance-corrected plug-in mutual
    information with the target, divided by its maximum."""
    raw, null, _ = chance_corrected_mi(task, name, bins, permutations)
    score = np.clip(raw - null, 0.0, None)
    top = score.max()
    return score / top if top > 0 else score


def two_cluster_cut(scores: np.ndarray) -> np.ndarray:
    """Indices in the upper of the two clusters that best split the 1-D scores (exact 2-means):
    Inf-FS's unsupervised rule for where the ranking stops."""
    scores = np.asarray(scores, dtype=float)
    if len(scores) < 2 or np.ptp(scores) == 0:
        return np.arange(len(scores))
    order = np.argsort(scores)
    s = scores[order]
    csum, csq = np.cumsum(s), np.cumsum(s * s)
    n = len(s)
    i = np.arange(1, n)  # lower cluster = s[:i]
    low = csq[i - 1] - csum[i - 1] ** 2 / i
    high = (csq[-1] - csq[i - 1]) - (csum[-1] - csum[i - 1]) ** 2 / (n - i)
    cut = int(i[np.argmin(low + high)])
    return np.sort(order[cut:])


def standardized(X: np.ndarray) -> np.ndarray:
    scale = X.std(axis=0)
    scale[scale == 0] = 1.0
    return (X - X.mean(axis=0)) / scale


def check_fraction(value: Any, name: str, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{name}: {param} must be a number in [0, 1], got {value!r}.")
    return float(value)


def check_positive_int(value: Any, name: str, param: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}: {param} must be an integer >= {minimum}, got {value!r}.")
    return int(value)
