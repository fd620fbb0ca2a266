"""Kernel SHAP (Lundberg & Lee, 2017) through ``shap.KernelExplainer``.

Interventional: absent features take values from the background rows. The constrained weighted
regression makes attributions sum exactly to f(x) - E[f(background)].
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlflow_xai.base import Attribution, Explainer, ExplainTask
from mlflow_xai_shap._seeding import seeded_global_numpy


class KernelShap(Explainer):
    name: ClassVar[str] = "kernel_shap"
    description: ClassVar[str] = (
        "Kernel SHAP: Shapley values from a weighted regression over sampled coalitions "
        "(shap.KernelExplainer, interventional background)."
    )
    shapley: ClassVar[bool] = True
    #: n_samples: coalitions per explained row (each costs one model call per background row);
    #: 'auto' is shap's 2 * n_features + 2048. With 2**n_features - 2 or more, the result is exact.
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 512}

    def explain(self, task: ExplainTask) -> Attribution:
        import shap

        params = self.validate_params()
        self._shap = shap.KernelExplainer(task.predict, task.background,
                                          feature_names=task.feature_names)
        with seeded_global_numpy(task.seed):
            return super().explain(task)

    def explain_rows(self, task: ExplainTask, X: np.ndarray, params: dict[str, Any]
                     ) -> Attribution:
        n_samples = params["n_samples"]
        values = self._shap.shap_values(X, nsamples=n_samples, l1_reg=False, silent=True)
        values = np.asarray(values, dtype=float).reshape(len(X), task.n_features)
        base = float(np.ravel(self._shap.expected_value)[0])
        return Attribution(values=values, base_values=np.full(len(X), base),
                           info={"n_samples_effective": n_samples})
