"""``lasso``: embedded selection along the L1 regularisation path (Tibshirani, 1996).

Score = how early a feature enters the path: the penalty at which it joins the active set,
relative to the penalty at which the first feature joins (1 = first in, 0 = never; on the
logistic grid, the largest grid penalty with a non-zero coefficient).
The method's own subset = the non-zero coefficients at the cross-validated penalty.
Regression uses LARS-lasso (``lars_path``, ``LassoLarsCV``); classification an L1 logistic
regression (liblinear, one-vs-rest for several classes) over a grid of ``C`` from
``l1_min_c``. Features are standardised first so the penalty treats them alike.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import SUBSET_DEFAULTS, ExplainTask, Selection, Selector, choose_subset

from ._common import check_positive_int, standardized, targets_of


class Lasso(Selector):
    name: ClassVar[str] = "lasso"
    description: ClassVar[str] = (
        "L1 path (lasso / L1 logistic regression): features ranked by how early they enter "
        "the path; own subset = non-zero coefficients at the cross-validated penalty."
    )
    #: n_penalties: grid points of the logistic path; cv: folds choosing the penalty.
    defaults: ClassVar[dict[str, Any]] = {**SUBSET_DEFAULTS, "n_penalties": 20, "cv": 3}
    param_types: ClassVar[dict[str, str]] = {"n_penalties": "int >= 2", "cv": "int >= 2"}

    def select(self, task: ExplainTask) -> Selection:
        params = self.validate_params()
        grid = check_positive_int(params["n_penalties"], self.name, "n_penalties", minimum=2)
        cv = check_positive_int(params["cv"], self.name, "cv", minimum=2)
        y, discrete = targets_of(task, self.name)
        X = standardized(task.X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # convergence chatter on the weakest penalties
            if discrete:
                scores, own, chosen, coef = _logistic_path(X, y, grid, cv, task.seed)
            else:
                scores, own, chosen, coef = _lars_path(X, y, cv)
        # Features entering at the same grid point: the larger coefficient at the chosen
        # penalty first.
        ranking = np.lexsort((-coef, -scores))
        return Selection(scores=scores, ranking=ranking,
                         selected=choose_subset(scores, params, own=own, ranking=ranking),
                         info={"penalty": chosen,
                               "model": "L1 logistic regression" if discrete else "lasso"})


def _lars_path(X: np.ndarray, y: np.ndarray, cv: int
               ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    from sklearn.linear_model import LassoLarsCV, lars_path

    alphas, _, coefs = lars_path(X, y - y.mean(), method="lasso")
    # A feature joins the active set at the knot before its first non-zero coefficient.
    scores = np.zeros(X.shape[1])
    for j, row in enumerate(np.abs(coefs) > 0):
        if row.any():
            scores[j] = alphas[max(int(np.argmax(row)) - 1, 0)] / alphas[0]
    fitted = LassoLarsCV(cv=cv).fit(X, y)
    coef = np.abs(fitted.coef_)
    return scores, np.flatnonzero(coef > 0), float(fitted.alpha_), coef


def _logistic_path(X: np.ndarray, y: np.ndarray, grid: int, cv: int, seed: int
                   ) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.svm import l1_min_c

    # From the smallest C with a non-zero coefficient up three decades.
    Cs = l1_min_c(X, y, loss="log") * np.logspace(0, 3, grid)
    nonzero = np.zeros((X.shape[1], grid), dtype=bool)
    for i, C in enumerate(Cs):
        model = LogisticRegression(penalty="l1", C=C, solver="liblinear", random_state=seed)
        coef = np.atleast_2d(model.fit(X, y).coef_)
        nonzero[:, i] = np.any(np.abs(coef) > 0, axis=0)
    # The penalty is 1/C: entry "alpha" on the same descending scale as the lasso path.
    scores = _entry_scores(nonzero, 1.0 / Cs)
    fitted = LogisticRegressionCV(Cs=Cs, penalty="l1", solver="liblinear", cv=cv,
                                  random_state=seed).fit(X, y)
    coef = np.abs(np.atleast_2d(fitted.coef_)).max(axis=0)
    return scores, np.flatnonzero(coef > 0), float(1.0 / np.atleast_1d(fitted.C_)[0]), coef


def _entry_scores(nonzero: np.ndarray, penalties: np.ndarray) -> np.ndarray:
    """Largest penalty with a non-zero coefficient, over the largest penalty on the path."""
    scores = np.zeros(nonzero.shape[0])
    top = float(np.max(penalties)) or 1.0
    for j, row in enumerate(nonzero):
        if row.any():
            scores[j] = float(np.max(penalties[row])) / top
    return scores
