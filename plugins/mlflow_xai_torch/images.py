"""Black-box image explainers, batched on the device: RISE and Sobol attribution maps.

Both perturb images with masks on a coarse grid, upsampled to the image size, and mix each image
with a baseline (zeros, or the mean background image) where the mask is 0. The masks are drawn
once and shared by every explained image; model calls are as large as the memory budget allows.

Both also return the standard error of each value (``Attribution.standard_errors``, the same
shape as the values: one per pixel, as the heat maps use them). RISE's saliency is a mean over
the masks, so its SE is the masks' spread / sqrt(masks). Sobol's total index is a ratio of two
means over the designs (Jansen's numerator over the variance of the outputs); its SE is the
delta-method (influence function) error of that ratio, treating the designs as independent
draws: conservative for scrambled-Sobol points, whose error is smaller than Monte Carlo's. A
cell's error is spread to its pixels as the index is (nearest).
"""

from __future__ import annotations

from math import ceil, log2
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


def _baseline_image(task: ExplainTask, kind: str):
    C, H, W = task.image_shape
    if kind == "zeros":
        return as_tensor(np.zeros((C, H, W)), task.device)
    if kind == "mean":
        return as_tensor(task.background.mean(axis=0).reshape(C, H, W), task.device)
    raise ConfigError(f"baseline must be 'zeros' or 'mean', got {kind!r}.")


def masked_scores(task: ExplainTask, masks, baseline):
    """f(x * m + baseline * (1 - m)) for every image x and mask m: (images, masks)."""
    import torch

    predict = task.tensor_predict()
    C, H, W = task.image_shape
    x = as_tensor(task.X, task.device).reshape(-1, C, H, W)
    n_masks = len(masks)
    per_call = max(1, task.max_batch_rows)
    m_chunk = max(1, min(n_masks, per_call))
    r_chunk = max(1, per_call // m_chunk)
    scores = torch.empty((len(x), n_masks), dtype=torch.float64, device=x.device)
    for r0 in range(0, len(x), r_chunk):
        xs = x[r0:r0 + r_chunk]
        for m0 in range(0, n_masks, m_chunk):
            m = masks[m0:m0 + m_chunk][None, :, None]                  # (1, k, 1, H, W)
            mixed = xs[:, None] * m + baseline * (1 - m)              # (r, k, C, H, W)
            out = call_batched(predict, mixed.reshape(-1, C * H * W), per_call)
            scores[r0:r0 + len(xs), m0:m0 + m.shape[1]] = out.reshape(len(xs), -1)
        task.on_rows_done(len(xs))
    return scores


class Rise(Explainer):
    name: ClassVar[str] = "rise"
    description: ClassVar[str] = (
        "RISE (Petsiuk et al., 2018): the expected model output given that a pixel is kept, "
        "over random low-resolution binary masks, upsampled bilinearly with random shifts.")
    data_types: ClassVar[tuple[str, ...]] = ("image",)
    #: n_samples: masks (model calls per image); grid_size: mask cells per side (clamped to
    #: the image size); p_keep: probability that a cell is kept; baseline: 'zeros' or 'mean'.
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 2000, "grid_size": 7, "p_keep": 0.5,
                                          "baseline": "zeros"}
    param_types: ClassVar[dict[str, str]] = {"n_samples": "int >= 1", "grid_size": "int >= 1",
                                         "p_keep": "float in (0, 1)",
                                         "baseline": "'zeros' | 'mean'"}

    def explain(self, task: ExplainTask) -> Attribution:
        import torch
        import torch.nn.functional as F

        params = self.validate_params()
        _, H, W = task.image_shape
        n = int(params["n_samples"])
        p = float(params["p_keep"])
        if n < 1 or not 0 < p < 1:
            raise ConfigError("rise needs n_samples >= 1 and 0 < p_keep < 1.")
        s = max(1, min(int(params["grid_size"]), H, W))
        cell_h, cell_w = ceil(H / s), ceil(W / s)
        # Drawn on the CPU, then moved: CUDA's random stream differs from the CPU's, and the
        # same seed must give the same masks on every device.
        gen = torch.Generator(device="cpu").manual_seed(task.seed)
        grid = (torch.rand((n, 1, s, s), generator=gen) < p).double().to(task.device)
        up = F.interpolate(grid, size=((s + 1) * cell_h, (s + 1) * cell_w), mode="bilinear",
                           align_corners=False)[:, 0]
        dy = torch.randint(cell_h, (n,), generator=gen).to(task.device)
        dx = torch.randint(cell_w, (n,), generator=gen).to(task.device)
        rows = (dy[:, None] + torch.arange(H, device=task.device))[:, :, None]
        cols = (dx[:, None] + torch.arange(W, device=task.device))[:, None, :]
        masks = up[torch.arange(n, device=task.device)[:, None, None], rows, cols]  # (n, H, W)
        scores = masked_scores(task, masks, _baseline_image(task, params["baseline"]))
        saliency = torch.einsum("rn,nhw->rhw", scores, masks) / (n * p)
        se = _rise_standard_errors(scores, masks, saliency, p)
        return Attribution(values=saliency.reshape(len(task.X), -1).cpu().numpy(),
                           output_space="expected output when kept",
                           standard_errors=None if se is None
                           else se.reshape(len(task.X), -1).cpu().numpy(),
                           info={"grid_size": s, "masks": n, **_error_info(se)})


class Sobol(Explainer):
    name: ClassVar[str] = "sobol"
    description: ClassVar[str] = (
        "Sobol attribution (Fel et al., 2021): total Sobol indices of grid cells from "
        "quasi-Monte Carlo (scrambled Sobol) masks, Jansen estimator.")
    data_types: ClassVar[tuple[str, ...]] = ("image",)
    #: n_samples: QMC designs N (rounded up to a power of two); the cost is N * (cells + 2)
    #: model calls per image. grid_size: cells per side (clamped to the image size).
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 32, "grid_size": 8, "baseline": "zeros"}
    param_types: ClassVar[dict[str, str]] = {"n_samples": "int >= 1", "grid_size": "int >= 1",
                                         "baseline": "'zeros' | 'mean'"}

    def explain(self, task: ExplainTask) -> Attribution:
        import torch
        import torch.nn.functional as F
        from scipy.stats import qmc

        params = self.validate_params()
        _, H, W = task.image_shape
        s = max(1, min(int(params["grid_size"]), H, W))
        d = s * s
        n = 2 ** max(1, ceil(log2(max(2, int(params["n_samples"])))))
        design = qmc.Sobol(d=2 * d, scramble=True, seed=task.seed).random(n)
        A, B = design[:, :d], design[:, d:]
        C_i = np.repeat(A[None], d, axis=0)                            # (d, n, d)
        C_i[np.arange(d), :, np.arange(d)] = B.T
        grids = np.concatenate([A, B, C_i.reshape(-1, d)]).reshape(-1, 1, s, s)
        masks = F.interpolate(as_tensor(grids, task.device), size=(H, W), mode="nearest")[:, 0]
        scores = masked_scores(task, masks, _baseline_image(task, params["baseline"]))
        f_a, f_b = scores[:, :n], scores[:, n:2 * n]
        f_c = scores[:, 2 * n:].reshape(len(task.X), d, n)
        variance = torch.cat([f_a, f_b], dim=1).var(dim=1, unbiased=True)
        total = ((f_a[:, None, :] - f_c) ** 2).mean(dim=2) / 2          # Jansen, (r, d)
        total = total / torch.clamp(variance, min=1e-12)[:, None]
        heat = F.interpolate(total.reshape(-1, 1, s, s), size=(H, W), mode="nearest")[:, 0]
        se = _jansen_standard_errors(f_a, f_b, f_c, variance)
        se_heat = F.interpolate(se.reshape(-1, 1, s, s), size=(H, W), mode="nearest")[:, 0]
        return Attribution(values=heat.reshape(len(task.X), -1).cpu().numpy(),
                           output_space="total Sobol index",
                           standard_errors=se_heat.reshape(len(task.X), -1).cpu().numpy(),
                           info={"grid_size": s, "designs": n,
                                 "model_calls_per_image": n * (d + 2),
                                 **_error_info(se_heat)})


def _error_info(se) -> dict[str, Any]:
    """``max_standard_error`` over all images and pixels (None without finite errors)."""
    import torch

    finite = se is not None and se.numel() > 0 and bool(torch.isfinite(se).all())
    return {"max_standard_error": float(se.max()) if finite else None}


def _rise_standard_errors(scores, masks, saliency, p: float):
    """SE of RISE's mean over masks of score * mask / p, per image and pixel: the masks'
    sample std (ddof 1) / sqrt(n), from E[(score * mask)^2] (one more einsum); None for one
    mask."""
    import torch

    n = len(masks)
    if n < 2:
        return None
    second = torch.einsum("rn,nhw->rhw", scores.pow(2), masks.pow(2)) / (n * p * p)
    variance = (second - saliency.pow(2)).clamp(min=0) * n / (n - 1)
    return (variance / n).sqrt()


def _jansen_standard_errors(f_a, f_b, f_c, variance):
    """Delta-method SE of the Jansen total index T_i = mean_n D_ni / V, D_ni = (f_a - f_ci)^2 / 2
    and V the variance of the 2N outputs f_a, f_b. Design n's influence on T is
    psi_n = (D_n - mean D) / V - T (q_n - V) / V with q_n = ((f_a - m)^2 + (f_b - m)^2) / 2 its
    share of V; SE = std(psi) / sqrt(N). (r, cells)."""
    import torch

    n = f_a.shape[1]
    v = torch.clamp(variance, min=1e-12)[:, None]                     # (r, 1)
    D = (f_a[:, None, :] - f_c) ** 2 / 2                              # (r, d, n)
    total = D.mean(dim=2) / v                                         # (r, d)
    m = torch.cat([f_a, f_b], dim=1).mean(dim=1, keepdim=True)
    q = ((f_a - m) ** 2 + (f_b - m) ** 2) / 2                         # (r, n)
    psi = (D - D.mean(dim=2, keepdim=True)) / v[:, :, None] \
        - total[:, :, None] * (q - q.mean(dim=1, keepdim=True))[:, None, :] / v[:, :, None]
    return psi.std(dim=2, unbiased=True) / np.sqrt(n)
