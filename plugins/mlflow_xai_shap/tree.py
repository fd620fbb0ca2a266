"""Tree SHAP: exact Shapley values from the trees themselves, no model calls.

scikit-learn trees use ``shap.TreeExplainer`` with the interventional background, explaining the
same output (probability for classifiers) as the model-agnostic methods. XGBoost and LightGBM
use their own built-in contribution output (path-dependent, in margin space).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Attribution, Explainer, ExplainTask


class TreeShap(Explainer):
    name: ClassVar[str] = "tree_shap"
    description: ClassVar[str] = (
        "Tree SHAP: exact Shapley values from tree internals (shap.TreeExplainer for "
        "scikit-learn trees; native pred_contribs for XGBoost and LightGBM)."
    )
    requires: ClassVar[tuple[str, ...]] = ("tree",)
    shapley: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}

    def explain_rows(self, task: ExplainTask, X: np.ndarray, params: dict[str, Any]
                     ) -> Attribution:
        kind = task.tree_kind
        if kind == "xgboost":
            return _xgboost(task, X)
        if kind == "lightgbm":
            return _lightgbm(task, X)
        return _sklearn(task, X)


def _sklearn(task: ExplainTask, X: np.ndarray) -> Attribution:
    import shap

    est = task.raw_model
    classifier = task.output_index is not None
    explainer = shap.TreeExplainer(
        est, data=task.background, feature_perturbation="interventional",
        model_output="probability" if classifier else "raw",
    )
    values = np.asarray(explainer.shap_values(X, check_additivity=False), dtype=float)
    expected = np.ravel(explainer.expected_value)
    if values.ndim == 3:  # (rows, features, outputs)
        values = values[:, :, task.output_index]
        base = expected[task.output_index]
    else:
        base = expected[0]
    outputs = task.predict(X)
    return Attribution(values=values, base_values=np.full(len(X), float(base)), outputs=outputs,
                       output_space="probability" if classifier else "raw",
                       info={"feature_perturbation": "interventional"})


def _signed_class(contribs: np.ndarray, margins: np.ndarray, task: ExplainTask
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Pick the explained class from native contributions ``(n, k, d + 1)`` or ``(n, d + 1)``."""
    if contribs.ndim == 3:
        return contribs[:, task.output_index, :], margins[:, task.output_index]
    # Binary models have one margin, for the positive class; class 0 is its negation.
    sign = -1.0 if task.output_index == 0 else 1.0
    return sign * contribs, sign * margins


def _xgboost(task: ExplainTask, X: np.ndarray) -> Attribution:
    import xgboost

    model = task.raw_model
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    matrix = xgboost.DMatrix(task.to_model_input(X))
    contribs = np.asarray(booster.predict(matrix, pred_contribs=True), dtype=float)
    margins = np.asarray(booster.predict(matrix, output_margin=True), dtype=float)
    contribs, margins = _signed_class(contribs, margins, task)
    return Attribution(values=contribs[:, :-1], base_values=contribs[:, -1], outputs=margins,
                       output_space="margin", info={"feature_perturbation": "tree_path_dependent"})


def _lightgbm(task: ExplainTask, X: np.ndarray) -> Attribution:
    model = task.raw_model
    booster = model.booster_ if hasattr(model, "booster_") else model
    frame = task.to_model_input(X)
    contribs = np.asarray(booster.predict(frame, pred_contrib=True), dtype=float)
    margins = np.asarray(booster.predict(frame, raw_score=True), dtype=float)
    d = task.n_features
    if contribs.shape[1] != d + 1:  # multiclass: classes side by side, (d + 1) columns each
        contribs = contribs.reshape(len(X), -1, d + 1)
    contribs, margins = _signed_class(contribs, margins, task)
    return Attribution(values=contribs[:, :-1], base_values=contribs[:, -1], outputs=margins,
                       output_space="margin", info={"feature_perturbation": "tree_path_dependent"})
