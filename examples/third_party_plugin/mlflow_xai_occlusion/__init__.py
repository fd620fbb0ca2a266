"""Occlusion (Zeiler & Fergus, 2014) for tabular data, as an outside mlflow-xai plugin.

The attribution of feature j is f(x) - mean_b f(x with x_j replaced by b_j), over the background
rows b: one model call per feature per background row, all rows in one batch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Attribution, Explainer, ExplainTask, hookimpl


class Occlusion(Explainer):
    name: ClassVar[str] = "occlusion"
    description: ClassVar[str] = "Occlusion: output drop when one feature takes background values."
    stochastic: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}

    def explain_rows(self, task: ExplainTask, X: np.ndarray, params: dict[str, Any]
                     ) -> Attribution:
        n, d = X.shape
        bg = task.background
        full = task.predict(X)
        # (row, feature, background) grid of inputs, evaluated as one batch.
        grid = np.repeat(X[:, None, None, :], d, axis=1).repeat(len(bg), axis=2)
        for j in range(d):
            grid[:, j, :, j] = bg[:, j]
        occluded = task.predict(grid.reshape(-1, d)).reshape(n, d, len(bg)).mean(axis=2)
        return Attribution(values=full[:, None] - occluded,
                           base_values=np.full(n, float(task.predict(bg).mean())))


@hookimpl
def xai_register_explainers() -> list[type]:
    return [Occlusion]
