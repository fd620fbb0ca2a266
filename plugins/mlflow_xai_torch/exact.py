"""Exact Shapley values by enumerating all 2**M coalitions (interventional background).

A reference for the sampling methods and a cheap exact method for few features: the cost is
2**M model calls per explained row per background row. With ``feature_groups=`` the M players are
the groups (any number of columns, at most 14 groups).
"""

from __future__ import annotations

from math import factorial
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Attribution, Explainer, ExplainTask, coalition_values

from ._shapley import endpoint_rows, tensors

MAX_FEATURES = 14


class ExactShap(Explainer):
    name: ClassVar[str] = "exact_shap"
    description: ClassVar[str] = (
        f"Exact Shapley values by full enumeration of coalitions (up to {MAX_FEATURES} "
        "features), batched."
    )
    shapley: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    #: Groups of columns (feature_groups=) are its players: 2**groups coalitions.
    explains_groups: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {}

    def supports(self, task: ExplainTask) -> str | None:
        if task.n_features > MAX_FEATURES:
            players = "groups" if getattr(task, "feature_groups", None) is not None \
                else "features"
            return (f"exact_shap enumerates 2**M coalitions and is limited to {MAX_FEATURES} "
                    f"{players}; the data has {task.n_features}")
        return super().supports(task)

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_features: int,
                             n_background: int) -> float | None:
        # Every coalition, the empty and the full one included, per row and background row;
        # then the endpoints f(x) and E[f(background)].
        return n_rows * 2**n_features * n_background + endpoint_rows(n_rows, n_background)

    def explain(self, task: ExplainTask) -> Attribution:
        import torch

        self.validate_params()
        M = task.n_features
        ids = np.arange(2**M)
        masks = ((ids[:, None] >> np.arange(M)) & 1).astype(bool)
        predict, x, background, f_x, base = tensors(task, task.X)
        values = coalition_values(predict, x, background, torch.as_tensor(masks, device=x.device),
                                  max_rows=task.max_batch_rows,
                                  groups=getattr(task, "feature_groups", None))
        sizes = masks.sum(axis=1)
        weight = np.array([factorial(s) * factorial(M - s - 1) / factorial(M)
                           for s in range(M)])
        phi = torch.zeros((len(task.X), M), dtype=torch.float64, device=x.device)
        for j in range(M):
            without = ids[(ids >> j) & 1 == 0]
            w = torch.as_tensor(weight[sizes[without]], device=x.device)
            phi[:, j] = (values[:, without | (1 << j)] - values[:, without]) @ w
        task.on_rows_done(len(task.X))
        return Attribution(values=phi.cpu().numpy(), base_values=np.full(len(task.X), float(base)),
                           info={"coalitions": int(2**M)})
