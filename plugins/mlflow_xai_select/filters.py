"""Filters: scores from the data and targets alone, no model calls.

* ``mutual_info``: scikit-learn's k-nearest-neighbour mutual information (Kraskov et al., 2004;
  Ross, 2014 for discrete targets); categorical columns are treated as discrete.
* ``outrank``: cardinality-aware mutual information (Skrlj & Mramor, 2023): plug-in MI of each
  discretised column with the target minus the MI a column of the same cardinality gets by
  chance (the mean over permutations of the target), so that ID-like columns score about 0.
* ``inf_fs``: Infinite Feature Selection (Roffo et al., 2015): paths of every length through a
  feature graph, summed in closed form.
* ``ec_fs``: eigenvector centrality of a relevance-plus-dispersion feature graph (Roffo &
  Melzi, "Ranking to Learn", 2016).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import (
    SUBSET_DEFAULTS,
    ConfigError,
    ExplainTask,
    Selection,
    Selector,
    choose_subset,
)

from ._common import (
    chance_corrected_mi,
    check_fraction,
    check_positive_int,
    relevance,
    targets_of,
    two_cluster_cut,
)


class MutualInfo(Selector):
    name: ClassVar[str] = "mutual_info"
    description: ClassVar[str] = (
        "Mutual information of each feature with the target (scikit-learn's k-nearest-"
        "neighbour estimator); categorical columns are treated as discrete."
    )
    #: n_neighbors: neighbours of the kNN estimator (3, scikit-learn's default).
    defaults: ClassVar[dict[str, Any]] = {**SUBSET_DEFAULTS, "n_neighbors": 3}
    param_types: ClassVar[dict[str, str]] = {"n_neighbors": "int >= 1"}
    stochastic: ClassVar[bool] = True  # scikit-learn adds a little noise to break ties

    def select(self, task: ExplainTask) -> Selection:
        from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

        params = self.validate_params()
        k = check_positive_int(params["n_neighbors"], self.name, "n_neighbors")
        y, discrete = targets_of(task, self.name)
        mask = np.zeros(task.n_features, dtype=bool)
        mask[list(task.categorical)] = True
        estimate = mutual_info_classif if discrete else mutual_info_regression
        scores = estimate(task.X, y, discrete_features=mask, n_neighbors=k,
                          random_state=task.seed)
        return Selection(scores=scores, selected=choose_subset(scores, params),
                         info={"target": "classes" if discrete else "continuous",
                               "discrete_features": int(mask.sum())})


class OutRank(Selector):
    name: ClassVar[str] = "outrank"
    description: ClassVar[str] = (
        "Cardinality-aware mutual information (OutRank): plug-in MI with the target minus the MI "
        "of a same-cardinality column by chance; high-cardinality ID-like columns score ~0."
    )
    #: bins: quantile bins for non-integer numeric columns (and continuous targets);
    #: permutations: target shuffles that estimate the chance MI of each column.
    defaults: ClassVar[dict[str, Any]] = {**SUBSET_DEFAULTS, "bins": 32, "permutations": 5}
    param_types: ClassVar[dict[str, str]] = {"bins": "int >= 2", "permutations": "int >= 1"}
    stochastic: ClassVar[bool] = True

    def select(self, task: ExplainTask) -> Selection:
        params = self.validate_params()
        bins = check_positive_int(params["bins"], self.name, "bins", minimum=2)
        permutations = check_positive_int(params["permutations"], self.name, "permutations")
        raw, null, codes = chance_corrected_mi(task, self.name, bins, permutations)
        scores = raw - null
        cardinality = [int(codes[:, j].max()) + 1 for j in range(task.n_features)]
        # Own rule: clearly above chance (more than the chance level itself again).
        own = np.flatnonzero(scores > np.maximum(null, 1e-12))
        return Selection(scores=scores, selected=choose_subset(scores, params, own=own),
                         info={"mutual_info": raw.round(6).tolist(),
                               "chance_mutual_info": null.round(6).tolist(),
                               "cardinality": cardinality})


class InfFS(Selector):
    name: ClassVar[str] = "inf_fs"
    description: ClassVar[str] = (
        "Infinite Feature Selection: every path through a feature graph (relevance or "
        "dispersion, and 1 - |Spearman|) summed in closed form, (I - rA)^-1 - I."
    )
    requires: ClassVar[tuple[str, ...]] = ()
    #: alpha: weight of relevance/dispersion against decorrelation in the edge weights;
    #: supervised: 'auto' uses the targets' chance-corrected MI as node relevance when targets
    #: are given (else each feature's dispersion, as in the 2015 paper); decay: r * rho(A).
    defaults: ClassVar[dict[str, Any]] = {**SUBSET_DEFAULTS, "alpha": 0.5,
                                          "supervised": "auto", "decay": 0.9}
    param_types: ClassVar[dict[str, str]] = {"alpha": "float in [0, 1]",
                                         "supervised": "'auto' | True | False",
                                         "decay": "float in (0, 1)"}

    def select(self, task: ExplainTask) -> Selection:
        params = self.validate_params()
        alpha = check_fraction(params["alpha"], self.name, "alpha")
        decay = check_fraction(params["decay"], self.name, "decay")
        if not 0 < decay < 1:
            raise ConfigError(f"{self.name}: decay must be in (0, 1), got {decay}.")
        node, mode = _node_weights(task, params["supervised"], self.name)
        A = alpha * np.maximum.outer(node, node) + (1 - alpha) * (1 - np.abs(_spearman(task.X)))
        scores, r, rho = path_scores(A, decay)
        return Selection(scores=scores,
                         selected=choose_subset(scores, params, own=two_cluster_cut(scores)),
                         info={"node_weights": mode, "r": r, "spectral_radius": rho})


class ECFS(Selector):
    name: ClassVar[str] = "ec_fs"
    description: ClassVar[str] = (
        "Eigenvector-centrality feature selection (Ranking to Learn): the principal eigenvector "
        "of a graph mixing feature-target relevance and dispersion."
    )
    #: alpha: weight of the relevance kernel against the dispersion kernel.
    defaults: ClassVar[dict[str, Any]] = {**SUBSET_DEFAULTS, "alpha": 0.5}
    param_types: ClassVar[dict[str, str]] = {"alpha": "float in [0, 1]"}

    def select(self, task: ExplainTask) -> Selection:
        params = self.validate_params()
        alpha = check_fraction(params["alpha"], self.name, "alpha")
        rel = relevance(task, self.name)
        spread = _dispersion(task.X)
        # Both kernels scaled to spectral norm 1, so that alpha alone sets their balance
        # (unscaled, the dense dispersion kernel's eigenvalue grows with d and drowns relevance).
        A = alpha * _unit(np.outer(rel, rel)) + (1 - alpha) * _unit(np.maximum.outer(spread,
                                                                                     spread))
        values, vectors = np.linalg.eigh(A)
        centrality = np.abs(vectors[:, np.argmax(values)])  # Perron vector: one sign
        return Selection(scores=centrality,
                         selected=choose_subset(centrality, params,
                                                own=two_cluster_cut(centrality)),
                         info={"relevance": rel.round(6).tolist(),
                               "dispersion": spread.round(6).tolist()})


def path_scores(A: np.ndarray, decay: float) -> tuple[np.ndarray, float, float]:
    """Inf-FS scores: row sums of ``sum_{l>=1} (rA)^l = (I - rA)^-1 - I`` with
    ``r = decay / rho(A)`` (the series converges because ``r rho(A) < 1``).
    Returns ``(scores, r, rho)``."""
    rho = float(np.max(np.abs(np.linalg.eigvalsh(A)))) if A.size else 0.0
    r = decay / rho if rho > 0 else 0.0
    eye = np.eye(len(A))
    S = np.linalg.inv(eye - r * A) - eye
    return S.sum(axis=1), r, rho


def _node_weights(task: ExplainTask, supervised: Any, name: str) -> tuple[np.ndarray, str]:
    if supervised not in ("auto", True, False):
        raise ConfigError(f"{name}: supervised must be 'auto', True or False, got {supervised!r}.")
    if supervised is True or (supervised == "auto" and task.targets is not None):
        return relevance(task, name), "relevance (chance-corrected mutual information)"
    return _dispersion(task.X), "dispersion (std of min-max scaled features)"


def _unit(K: np.ndarray) -> np.ndarray:
    norm = float(np.max(np.abs(np.linalg.eigvalsh(K)))) if K.size else 0.0
    return K / norm if norm > 0 else K


def _dispersion(X: np.ndarray) -> np.ndarray:
    span = np.ptp(X, axis=0)
    span[span == 0] = 1.0
    spread = ((X - X.min(axis=0)) / span).std(axis=0)
    top = spread.max()
    return spread / top if top > 0 else spread


def _spearman(X: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    ranks = rankdata(X, axis=0)
    corr = np.corrcoef(ranks, rowvar=False)
    corr = np.atleast_2d(np.nan_to_num(corr, nan=0.0))  # constant columns correlate with none
    np.fill_diagonal(corr, 1.0)
    return corr
