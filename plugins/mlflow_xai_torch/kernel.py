"""Kernel SHAP (Lundberg & Lee, 2017), batched.

One coalition design is drawn per run and shared by every explained row, so the weighted
least-squares system is factorised once and applied to all rows as one matrix product; the
efficiency constraint is imposed exactly. The design enumerates whole coalition sizes from the
outside in while the budget allows (they carry most of the kernel weight) and samples the rest in
complementary (antithetic) pairs, either proportionally to the Shapley kernel or with leverage
scores (Musco & Witter, ICLR 2025: uniform over sizes, reweighted). With a budget of at least
2**M - 2 coalitions every coalition is enumerated and the values are exact.
"""

from __future__ import annotations

from math import comb
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Attribution, ConfigError, Explainer, ExplainTask, coalition_values

from ._shapley import kernel_weight, size_mass, tensors


def coalition_design(n_features: int, n_samples: int, rng: np.random.Generator,
                     sampling: str = "kernel") -> tuple[np.ndarray, np.ndarray, bool]:
    """Coalitions (S, M) bool, their regression weights (S,), and whether they are exhaustive."""
    M = n_features
    if M < 2:
        raise ConfigError("kernel_shap needs at least 2 features.")
    if sampling not in ("kernel", "leverage"):
        raise ConfigError(f"sampling must be 'kernel' or 'leverage', got {sampling!r}.")
    total = 2**M - 2
    if n_samples >= total:
        ids = np.arange(1, 2**M - 1)
        masks = ((ids[:, None] >> np.arange(M)) & 1).astype(bool)
        sizes = masks.sum(axis=1)
        weights = np.array([0.0] + [kernel_weight(M, s) for s in range(1, M)])[sizes]
        return masks, weights, True

    masks, weights = [], []
    remaining_sizes = list(range(1, M))
    budget = n_samples
    # Enumerate size layers (s and M - s together) while the budget covers them in proportion.
    for s in range(1, M // 2 + 1):
        layer = [s] if 2 * s == M else [s, M - s]
        count = sum(comb(M, k) for k in layer)
        mass_left = sum(size_mass(M, k) for k in remaining_sizes)
        share = sum(size_mass(M, k) for k in layer) / mass_left
        if count > budget * share or count > budget:
            break
        for k in layer:
            for combo in _combinations(M, k):
                masks.append(combo)
                weights.append(kernel_weight(M, k))
            remaining_sizes.remove(k)
        budget -= count
    if remaining_sizes and budget >= 2:
        pairs = budget // 2
        mass = np.array([size_mass(M, k) for k in remaining_sizes])
        if sampling == "kernel":
            p_size = mass / mass.sum()
        else:  # leverage scores of the Shapley regression are uniform over sizes
            p_size = np.full(len(remaining_sizes), 1.0 / len(remaining_sizes))
        chosen = rng.choice(len(remaining_sizes), size=pairs, p=p_size)
        sizes = np.asarray(remaining_sizes)[chosen]
        # Uniform subset of each size: the `size` smallest of M random keys.
        keys = rng.random((pairs, M))
        ranks = keys.argsort(axis=1).argsort(axis=1)
        sampled = ranks < sizes[:, None]
        # Importance weight pi(z) / (p(z) * n) for each of the 2 * pairs coalitions.
        w = mass[chosen] / p_size[chosen] / (2 * pairs)
        masks.extend(np.concatenate([sampled, ~sampled]))
        weights.extend(np.concatenate([w, w]))
    return np.asarray(masks, dtype=bool).reshape(-1, M), np.asarray(weights, float), False


def _combinations(M: int, k: int):
    from itertools import combinations

    for idx in combinations(range(M), k):
        row = np.zeros(M, dtype=bool)
        row[list(idx)] = True
        yield row


def solve_constrained(Z, W, Y, delta):
    """Per row r: argmin_phi sum_s W_s (Y_rs - Z_s . phi)^2 subject to sum(phi) = delta_r.

    ``Z`` (S, M), ``W`` (S,), ``Y`` (R, S), ``delta`` (R,): one factorisation for all rows.
    """
    import torch

    ZW = Z * W[:, None]
    H = Z.T @ ZW
    H_inv = torch.linalg.pinv(H, hermitian=True)
    unconstrained = (Y @ ZW) @ H_inv                      # (R, M)
    ones = torch.ones(Z.shape[1], dtype=Z.dtype, device=Z.device)
    h1 = H_inv @ ones                                     # (M,)
    excess = unconstrained.sum(dim=1) - delta             # (R,)
    return unconstrained - excess[:, None] * (h1 / (ones @ h1))[None, :]


class KernelShap(Explainer):
    name: ClassVar[str] = "kernel_shap"
    description: ClassVar[str] = (
        "Kernel SHAP, batched on the device: one shared coalition design (paired sampling, "
        "kernel or leverage-score), one least-squares factorisation for all rows; exact "
        "efficiency; exact values when n_samples >= 2**M - 2."
    )
    shapley: ClassVar[bool] = True
    #: n_samples: coalitions per explained row, each costing one model call per background row.
    #: sampling: 'kernel' (proportional to the Shapley kernel) or 'leverage' (Musco & Witter).
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 1024, "sampling": "kernel"}
    param_types: ClassVar[dict[str, str]] = {"n_samples": "int >= 2", "sampling": "'kernel' | 'leverage'"}

    def explain(self, task: ExplainTask) -> Attribution:
        import torch

        params = self.validate_params()
        n_samples = int(params["n_samples"])
        if n_samples < 2:
            raise ConfigError(f"n_samples must be at least 2, got {n_samples}.")
        rng = np.random.default_rng(task.seed)
        masks, weights, exact = coalition_design(task.n_features, n_samples, rng,
                                                 params["sampling"])
        predict, x, background, f_x, base = tensors(task, task.X)
        Z = torch.as_tensor(masks, device=x.device)
        values = coalition_values(predict, x, background, Z, max_rows=task.max_batch_rows)
        phi = solve_constrained(Z.to(torch.float64), torch.as_tensor(weights, device=x.device),
                                values - base, f_x - base)
        task.on_rows_done(len(task.X))
        return Attribution(
            values=phi.cpu().numpy(), base_values=np.full(len(task.X), float(base)),
            info={"coalitions": int(len(masks)), "exact": exact,
                  "sampling": "enumeration" if exact else params["sampling"]},
        )
