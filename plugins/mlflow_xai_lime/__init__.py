"""LIME for tabular data (Ribeiro et al., 2016) through the ``lime`` library."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlflow_xai import hookimpl
from mlflow_xai.base import Attribution, Explainer, ExplainTask


class Lime(Explainer):
    name: ClassVar[str] = "lime"
    description: ClassVar[str] = (
        "LIME: a locally weighted linear surrogate per row (lime.lime_tabular, no "
        "discretization); attributions are the surrogate's weights, global = mean |weight|."
    )
    #: n_samples: perturbed samples (model calls) per explained row; kernel_width None means
    #: lime's default 0.75 * sqrt(n_features).
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 1000, "kernel_width": None}

    def explain(self, task: ExplainTask) -> Attribution:
        from lime.lime_tabular import LimeTabularExplainer

        params = self.validate_params()
        # The background sets the perturbation scale; lime samples around its statistics.
        self._lime = LimeTabularExplainer(
            task.background, mode="regression", feature_names=task.feature_names,
            discretize_continuous=False, kernel_width=params["kernel_width"],
            random_state=task.seed,
        )
        return super().explain(task)

    def explain_rows(self, task: ExplainTask, X: np.ndarray, params: dict[str, Any]
                     ) -> Attribution:
        d = task.n_features
        values = np.zeros((len(X), d))
        intercepts = np.zeros(len(X))
        for i, row in enumerate(X):  # lime fits one surrogate per row
            exp = self._lime.explain_instance(row, task.predict, num_features=d,
                                              num_samples=int(params["n_samples"]))
            for feature, weight in exp.local_exp[exp.dummy_label if hasattr(exp, "dummy_label")
                                                 else next(iter(exp.local_exp))]:
                values[i, feature] = weight
            intercepts[i] = float(np.ravel(list(exp.intercept.values()))[0])
        return Attribution(values=values, base_values=intercepts,
                           output_space="surrogate weights")


@hookimpl
def xai_register_explainers() -> list[type]:
    return [Lime]
