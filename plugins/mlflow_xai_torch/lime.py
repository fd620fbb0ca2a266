"""LIME for tabular data (Ribeiro et al., 2016), batched.

Same estimator as ``lime.lime_tabular`` without discretization: perturbations are drawn around
the background mean with the background's scale, each row's surrogate is a ridge regression
(alpha = 1, unpenalised intercept) on standardised features with weights
sqrt(exp(-d^2 / width^2)) for the distance d to that row. Because the perturbations do not
depend on the row, one set is drawn and evaluated for all rows, and every row's weighted ridge
system is solved in one batched call: the model sees ``n_samples`` rows in total, not per row.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import (
    Attribution,
    ConfigError,
    Explainer,
    ExplainTask,
    as_tensor,
    call_batched,
)


class Lime(Explainer):
    name: ClassVar[str] = "lime"
    description: ClassVar[str] = (
        "LIME, batched: shared perturbations, per-row kernel weights and one batched weighted "
        "ridge solve; attributions are the surrogate's weights on standardised features."
    )
    #: n_samples: perturbations (the first is the explained row itself, as in lime);
    #: kernel_width None means 0.75 * sqrt(M) (lime's default); alpha: ridge penalty.
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 1000, "kernel_width": None, "alpha": 1.0}
    param_types: ClassVar[dict[str, str]] = {"n_samples": "int >= 2", "kernel_width": "float > 0 | None",
                                         "alpha": "float >= 0"}

    def explain(self, task: ExplainTask) -> Attribution:
        import torch

        params = self.validate_params()
        n = int(params["n_samples"])
        if n < 2:
            raise ConfigError(f"n_samples must be at least 2, got {n}.")
        M = task.n_features
        width = params["kernel_width"] or 0.75 * np.sqrt(M)
        device = task.device
        predict = task.tensor_predict()
        mean = task.background.mean(axis=0)
        scale = task.background.std(axis=0)
        scale[scale == 0] = 1.0  # lime's StandardScaler does the same for constant columns
        rng = np.random.default_rng(task.seed)
        Z = as_tensor(rng.normal(size=(n - 1, M)), device)           # standardised samples
        mean_t, scale_t = as_tensor(mean, device), as_tensor(scale, device)
        y_shared = call_batched(predict, Z * scale_t + mean_t, task.max_batch_rows)
        x = as_tensor(task.X, device)
        y_row = call_batched(predict, x, task.max_batch_rows)
        x_std = (x - mean_t) / scale_t                                # (R, M)

        coef = torch.empty((len(x), M + 1), dtype=torch.float64, device=device)
        A = torch.cat([torch.ones((n - 1, 1), dtype=torch.float64, device=device), Z], dim=1)
        penalty = torch.full((M + 1,), float(params["alpha"]), dtype=torch.float64,
                             device=device)
        penalty[0] = 0.0                                              # no penalty on intercept
        # Rows in chunks so that the (rows, samples) weight matrix stays bounded.
        chunk = max(1, task.max_batch_rows // max(1, n))
        for r0 in range(0, len(x), chunk):
            xs = x_std[r0:r0 + chunk]
            d2 = torch.cdist(xs, Z).pow(2)                            # (r, n - 1)
            w = torch.sqrt(torch.exp(-d2 / width**2))
            gram = torch.einsum("rs,si,sj->rij", w, A, A)             # (r, M + 1, M + 1)
            rhs = torch.einsum("rs,si,s->ri", w, A, y_shared)
            a_row = torch.cat([torch.ones((len(xs), 1), dtype=torch.float64, device=device),
                               xs], dim=1)                            # the row itself, weight 1
            gram += a_row[:, :, None] * a_row[:, None, :] + torch.diag(penalty)
            rhs += a_row * y_row[r0:r0 + chunk, None]
            coef[r0:r0 + len(xs)] = torch.linalg.solve(gram, rhs)
            task.on_rows_done(len(xs))
        coef = coef.cpu().numpy()
        return Attribution(values=coef[:, 1:], base_values=coef[:, 0],
                           output_space="surrogate weights",
                           info={"kernel_width": float(width), "shared_samples": n - 1})
