"""LIME for tabular data (Ribeiro et al., 2016), batched.

Same estimator as ``lime.lime_tabular`` without discretization: numeric perturbations are drawn
around the background mean with the background's scale; categorical columns
(``task.categorical``, integer codes) are drawn from their frequencies in the background, and
their interpretable feature is binary, 1 when the drawn code is the explained row's, so that its
weight reads "having this row's category" (lime_tabular does the same; a code is a label, its
value and the slope along it mean nothing). Each row's surrogate is a ridge regression
(alpha = 1, unpenalised intercept) on those features with weights sqrt(exp(-d^2 / width^2)) for
the distance d to that row. Because the perturbations do not depend on the row, one set is drawn
and evaluated for all rows, and every row's weighted ridge system is solved in one batched call:
the model sees ``n_samples`` rows in total, not per row.

Standard errors (``Attribution.standard_errors``): the perturbations are i.i.d. draws, so each
weight's error is the surrogate regression's own sampling variance, the heteroscedasticity-
consistent (sandwich) covariance of the weighted ridge estimator,
G^-1 (sum_s w_s^2 e_s^2 a_s a_s') G^-1 with G the penalised weighted Gram matrix and e_s the
residuals, scaled by n_eff / (n_eff - p) (HC1, with Kish's effective sample size of the row's
kernel weights). The model is deterministic: the "noise" the residuals measure is the part of
f the local linear surrogate does not fit, which is exactly what makes the weights depend on
the draw. Batched like the solve (one more Gram-sized product per chunk of rows); it agrees
with a bootstrap over the perturbation set (tests/test_uncertainty.py).
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

#: Rows x perturbations x features held at once when categorical columns make the surrogate's
#: design differ from row to row.
_DESIGN_CHUNK_ELEMENTS = 1 << 23


class Lime(Explainer):
    name: ClassVar[str] = "lime"
    description: ClassVar[str] = (
        "LIME, batched: shared perturbations, per-row kernel weights and one batched weighted "
        "ridge solve; attributions are the surrogate's weights on standardised numeric features "
        "and on 'has this row's category' for categorical ones."
    )
    #: n_samples: perturbations (the first is the explained row itself, as in lime);
    #: kernel_width None means 0.75 * sqrt(M) (lime's default); alpha: ridge penalty.
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 1000, "kernel_width": None, "alpha": 1.0}
    param_types: ClassVar[dict[str, str]] = {"n_samples": "int >= 2", "kernel_width": "float > 0 | None",
                                         "alpha": "float >= 0"}

    def supports(self, task: ExplainTask) -> str | None:
        reason = super().supports(task)
        if reason is not None:
            return reason
        missing = _columns_with_nan(task)
        if missing:
            return (f"lime cannot perturb or standardise missing values, and column(s) "
                    f"{missing} have NaN in the explained rows or the background; impute them "
                    "first, or use kernel_shap / permutation_shap, which only swap whole "
                    "values between the row and the background")
        return None

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_features: int,
                             n_background: int) -> float | None:
        # One shared set of perturbations for all rows, plus each explained row once.
        n = int({**self.defaults, **params}["n_samples"])
        return (n - 1) + n_rows

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
        categorical = _categorical_columns(task)
        mean, scale = _standardisation(task.background, categorical)
        rng = np.random.default_rng(task.seed)
        Z = rng.normal(size=(n - 1, M))                               # standardised samples
        inputs = Z * scale + mean
        if categorical:
            # Codes drawn from the background's frequencies, after the numeric draw so that
            # data without categories keeps the perturbations it always had.
            codes = _sample_codes(task.background[:, categorical], n - 1, rng)
            inputs[:, categorical] = codes
        Z_t, inputs_t = as_tensor(Z, device), as_tensor(inputs, device)
        y_shared = call_batched(predict, inputs_t, task.max_batch_rows)
        x = as_tensor(task.X, device)
        y_row = call_batched(predict, x, task.max_batch_rows)
        x_std = (x - as_tensor(mean, device)) / as_tensor(scale, device)  # (R, M)

        penalty = torch.full((M + 1,), float(params["alpha"]), dtype=torch.float64,
                             device=device)
        penalty[0] = 0.0                                              # no penalty on intercept
        if categorical:
            coef, se = _solve_with_categories(task, x, x_std, Z_t, inputs_t, y_shared, y_row,
                                              categorical, penalty, width)
        else:
            coef, se = _solve_shared(task, x_std, Z_t, y_shared, y_row, penalty, width)
        coef, se = coef.cpu().numpy(), se[:, 1:].cpu().numpy()
        finite = se.size > 0 and bool(np.all(np.isfinite(se)))
        info = {"kernel_width": float(width), "shared_samples": n - 1,
                "max_standard_error": float(se.max()) if finite else None}
        if categorical:
            info["categorical_features"] = [task.feature_names[j] for j in categorical]
        return Attribution(values=coef[:, 1:], base_values=coef[:, 0],
                           output_space="surrogate weights", info=info, standard_errors=se)


def _columns_with_nan(task: ExplainTask) -> list[str]:
    bad = np.isnan(task.X).any(axis=0) | np.isnan(task.background).any(axis=0)
    return [task.feature_names[j] for j in np.flatnonzero(bad)]


def _categorical_columns(task: ExplainTask) -> list[int]:
    return sorted({int(j) for j in task.categorical if 0 <= int(j) < task.n_features})


def _standardisation(background: np.ndarray, categorical: list[int]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale of the surrogate's features: the background's for numeric columns;
    0 and 1 for categorical ones, whose feature is already a 0/1 indicator (as lime_tabular)."""
    mean = background.mean(axis=0)
    scale = background.std(axis=0)
    scale[scale == 0] = 1.0  # lime's StandardScaler does the same for constant columns
    mean[categorical], scale[categorical] = 0.0, 1.0
    return mean, scale


def _sample_codes(columns: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` codes per column, each drawn from that column's observed frequencies."""
    out = np.empty((n, columns.shape[1]))
    for k in range(columns.shape[1]):
        values, counts = np.unique(columns[:, k], return_counts=True)
        out[:, k] = rng.choice(values, size=n, p=counts / counts.sum())
    return out


def _solve_shared(task: ExplainTask, x_std, Z, y_shared, y_row, penalty, width: float):
    """Numeric features only: one design for all rows, only the kernel weights differ."""
    import torch

    n_pert, M = Z.shape
    device = Z.device
    coef = torch.empty((len(x_std), M + 1), dtype=torch.float64, device=device)
    se = torch.empty_like(coef)
    A = torch.cat([torch.ones((n_pert, 1), dtype=torch.float64, device=device), Z], dim=1)
    # Rows in chunks so that the (rows, samples) weight matrix stays bounded.
    chunk = max(1, task.max_batch_rows // max(1, n_pert + 1))
    for r0 in range(0, len(x_std), chunk):
        xs = x_std[r0:r0 + chunk]
        d2 = torch.cdist(xs, Z).pow(2)                                # (r, n - 1)
        w = torch.sqrt(torch.exp(-d2 / width**2))
        gram = torch.einsum("rs,si,sj->rij", w, A, A)                 # (r, M + 1, M + 1)
        rhs = torch.einsum("rs,si,s->ri", w, A, y_shared)
        beta, full_gram = _ridge(gram, rhs, xs, y_row[r0:r0 + chunk], penalty)
        coef[r0:r0 + len(xs)] = beta
        u = w * (y_shared[None, :] - beta @ A.T)                      # weighted residuals
        meat = torch.einsum("rs,si,sj->rij", u * u, A, A)
        se[r0:r0 + len(xs)] = _sandwich_se(full_gram, meat, w)
        task.on_rows_done(len(xs))
    return coef, se


def _solve_with_categories(task: ExplainTask, x, x_std, Z, inputs, y_shared, y_row,
                           categorical: list[int], penalty, width: float):
    """With categorical columns the indicator features depend on the row: build each row's
    design (still one batched solve per chunk of rows)."""
    import torch

    n_pert, M = Z.shape
    device = Z.device
    cat = torch.as_tensor(categorical, device=device)
    numeric = torch.ones(M, dtype=torch.bool, device=device)
    numeric[cat] = False
    coef = torch.empty((len(x), M + 1), dtype=torch.float64, device=device)
    se = torch.empty_like(coef)
    base = torch.cat([torch.ones((n_pert, 1), dtype=torch.float64, device=device), Z], dim=1)
    chunk = max(1, min(task.max_batch_rows // max(1, n_pert + 1),
                       _DESIGN_CHUNK_ELEMENTS // max(1, n_pert * (M + 1))))
    for r0 in range(0, len(x), chunk):
        xs = x_std[r0:r0 + chunk].clone()
        xs[:, cat] = 1.0                  # the explained row has its own category: indicator 1
        same = (inputs[None, :, cat] == x[r0:r0 + chunk, None, cat]).to(torch.float64)
        A = base.expand(len(xs), n_pert, M + 1).clone()               # (r, n - 1, M + 1)
        A[:, :, 1 + cat] = same
        # Distance: numeric columns standardised, categorical ones 1 where the code differs.
        d2 = torch.cdist(xs[:, numeric], Z[:, numeric]).pow(2) + (1.0 - same).sum(dim=2)
        w = torch.sqrt(torch.exp(-d2 / width**2))
        weighted = (A * w[:, :, None]).transpose(1, 2)                # (r, M + 1, n - 1)
        gram = weighted @ A                                           # batched, one call
        rhs = weighted @ y_shared
        beta, full_gram = _ridge(gram, rhs, xs, y_row[r0:r0 + chunk], penalty)
        coef[r0:r0 + len(xs)] = beta
        u = w * (y_shared[None, :] - (A @ beta[:, :, None])[:, :, 0])  # weighted residuals
        scaled = A * u[:, :, None]
        meat = scaled.transpose(1, 2) @ scaled
        se[r0:r0 + len(xs)] = _sandwich_se(full_gram, meat, w)
        task.on_rows_done(len(xs))
    return coef, se


def _ridge(gram, rhs, xs, y_row, penalty):
    """Add each explained row itself (kernel weight 1) and the ridge penalty, then solve.
    Returns the coefficients and that full (penalised) Gram matrix."""
    import torch

    a_row = torch.cat([torch.ones((len(xs), 1), dtype=torch.float64, device=xs.device), xs],
                      dim=1)
    gram = gram + (a_row[:, :, None] * a_row[:, None, :] + torch.diag(penalty))
    rhs = rhs + a_row * y_row[:, None]
    return torch.linalg.solve(gram, rhs), gram


def _sandwich_se(gram, meat, w):
    """Per-row standard errors of the ridge coefficients, HC1-scaled: sqrt of the diagonal of
    n_eff / (n_eff - p) * G^-1 meat G^-1, with n_eff = (sum w)^2 / sum w^2 (Kish) over the
    sampled perturbations (the explained row itself is fixed, not a draw)."""
    import torch

    p = gram.shape[-1]
    eye = torch.eye(p, dtype=gram.dtype, device=gram.device).expand_as(gram)
    inverse = torch.linalg.solve(gram, eye)         # batched solve: much faster than inv on CPU
    cov_diag = ((inverse @ meat) * inverse).sum(dim=2)               # G symmetric
    n_eff = w.sum(dim=1).pow(2) / torch.clamp(w.pow(2).sum(dim=1), min=1e-300)
    hc1 = n_eff / torch.clamp(n_eff - p, min=1.0)
    return (cov_diag.clamp(min=0) * hc1[:, None]).sqrt()

