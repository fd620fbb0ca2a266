"""Pairwise Shapley interactions of a black-box model: Faith-SHAP of order 2 (FSII), batched.

The index. Faith-SHAP (Tsai, Yeh & Ravikumar, JMLR 2023), order 2: the main effects E_i and
pair terms E_ij of the 2-additive game u(S) = v(0) + sum_{i in S} E_i + sum_{i<j in S} E_ij
closest to the game v(S) = mean over background rows b of f(x_S, b_rest) in the Shapley-kernel
weighted least-squares sense, with u equal to v exactly at the empty and the full coalition.
Chosen over k-SII (the index of shap's TreeExplainer and shapiq's default) because:

* it is one weighted least-squares fit, the very computation kernel_shap batches: one coalition
  design shared by every explained row, every row's coalition values in one
  ``coalition_values`` call, one factorisation applied to all rows as a matrix product;
  k-SII has no such regression form (its estimators are sampling sums per interaction);
* efficiency is exact by construction (the full-coalition constraint), sampled or not;
* it is the faithful order-2 summary: the fitted game is the best 2-additive approximation of
  the model's game, and the per-feature values below are the Shapley values of that fit (the
  k-additive SHAP fit of Pelegrina et al. 2023, shapiq's ``kADDSHAP``). With every coalition
  enumerated they are the exact Shapley values (projecting onto 2-additive games and then onto
  additive games, in the same weighted norm with the same constraints, is projecting onto
  additive games, which is the Shapley value). On a sampled design they coincide with
  kernel_shap's values on the same paired design (measured: to 1e-13, standard errors too):
  complementary pairs already make the kernel regression exact for pair terms, so the gain of
  this method is the interactions, not more accurate per-feature values.

Output. ``interactions[r]`` is a symmetric ``(d, d)`` matrix in shap's convention: the diagonal
holds the main effects E_i, each off-diagonal cell (i, j) and (j, i) holds half the pair term
E_ij (``info['off_diagonal'] = 'half'``: the pair's index is M[i, j] + M[j, i]). So row i sums
to ``values[r, i] = E_i + 1/2 sum_j E_ij`` (the Shapley value of the fitted game, equal pair
shares), and the whole matrix sums to f(x) - E[f(background)] exactly.

Design. With ``n_samples >= 2**d - 2`` every proper coalition is enumerated and the values are
exact FSII. Otherwise whole coalition sizes are enumerated from the outside in while the budget
covers them in proportion to their kernel mass, and the other sizes are sampled in
complementary pairs (S and its complement), proportionally to the kernel, each sampled
coalition weighted by its importance ratio. d(d + 1)/2 unknowns need at least as many
coalitions: a budget below twice that is raised (with a warning, recorded in ``info``), and
more than ``max_features`` features (default 40: 820 unknowns) are declined by ``supports``.

Standard errors of the values (sampled designs): the closed-form delete-one-pair jackknife of
the constrained weighted least squares, the sampled complementary pairs being the i.i.d. units
(the construction of kernel_shap's, applied to the 2-additive regression and mapped to the
values); 0 for an enumerated design.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import (
    Attribution,
    ConfigError,
    Explainer,
    ExplainTask,
    as_tensor,
    coalition_values,
)

from ._shapley import kernel_weight, size_mass
from .kernel import enumerated_layers, pair_jackknife_standard_errors

INDEX = "FSII"


# --- the design ---------------------------------------------------------------------------------


def n_unknowns(d: int) -> int:
    """Main effects and pair terms of an order-2 fit: d + d(d - 1)/2."""
    return d * (d + 1) // 2


def minimum_budget(d: int) -> int:
    """The fewest coalitions a sampled design gets: twice the unknowns (capped at all of them)."""
    return min(2**d - 2, 2 * n_unknowns(d))


@dataclass
class Design:
    """Coalitions (S, d) bool, their regression weights (S,), and for each coalition its
    complementary pair (the i.i.d. sampling unit), -1 for enumerated coalitions."""

    masks: np.ndarray
    weights: np.ndarray
    pair: np.ndarray
    exact: bool
    budget: int

    @property
    def n_pairs(self) -> int:
        return int(self.pair.max()) + 1 if len(self.pair) and self.pair.max() >= 0 else 0


def all_coalitions(d: int) -> Design:
    """Every proper non-empty coalition (ids 1 .. 2**d - 2) with its kernel weight."""
    ids = np.arange(1, 2**d - 1, dtype=np.int64)
    masks = ((ids[:, None] >> np.arange(d)) & 1).astype(bool)
    sizes = masks.sum(axis=1)
    table = np.array([0.0] + [kernel_weight(d, s) for s in range(1, d)])
    return Design(masks, table[sizes], np.full(len(ids), -1), True, len(ids))


def effective_budget(d: int, n_samples: int) -> int:
    """The budget a run uses: ``n_samples``, raised to :func:`minimum_budget`."""
    return max(int(n_samples), minimum_budget(d))


def design_size(d: int, n_samples: int) -> int:
    """Coalitions a run evaluates per explained row (deterministic)."""
    budget = effective_budget(d, n_samples)
    if budget >= 2**d - 2:
        return 2**d - 2
    masks, _, remaining, left = enumerated_layers(d, budget)
    return len(masks) + (2 * (left // 2) if remaining and left >= 2 else 0)


def make_design(d: int, n_samples: int, rng: np.random.Generator) -> Design:
    """The coalition design of one run (see the module docstring)."""
    if d < 2:
        raise ConfigError(f"shapley_interactions needs at least 2 features, got {d}.")
    budget = effective_budget(d, n_samples)
    if budget >= 2**d - 2:
        return all_coalitions(d)
    layers, layer_weights, remaining, left = enumerated_layers(d, budget)
    enumerated = np.asarray(layers, dtype=bool).reshape(-1, d)
    parts_m, parts_w = [enumerated], [np.asarray(layer_weights, dtype=float)]
    parts_p = [np.full(len(enumerated), -1)]
    pairs = left // 2 if remaining else 0
    if pairs:
        mass = np.array([size_mass(d, k) for k in remaining])
        chosen = rng.choice(len(remaining), size=pairs, p=mass / mass.sum())
        sizes = np.asarray(remaining)[chosen]
        ranks = rng.random((pairs, d)).argsort(axis=1).argsort(axis=1)
        sampled = ranks < sizes[:, None]  # a uniform subset of each drawn size
        # Importance weight kernel(S) / (q(S) * 2 * pairs) with q proportional to the kernel
        # over the sizes left: the same for every sampled coalition (and its complement).
        w = np.full(2 * pairs, mass.sum() / (2 * pairs))
        ids = np.arange(pairs)
        parts_m.append(np.concatenate([sampled, ~sampled]))
        parts_w.append(w)
        parts_p.append(np.concatenate([ids, ids]))
    return Design(np.concatenate(parts_m), np.concatenate(parts_w), np.concatenate(parts_p),
                  False, budget)


# --- the regression -----------------------------------------------------------------------------


def pair_index(d: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs (i < j) in the order of the regression's pair columns."""
    i, j = np.triu_indices(d, k=1)
    return i, j


def regressors(masks, d: int):
    """The order-2 design matrix (S, d + d(d-1)/2): z_i = [i in S], then z_ij = [i, j in S]."""
    import torch

    Z = masks.to(torch.float64)
    i, j = pair_index(d)
    return torch.cat([Z, Z[:, i] * Z[:, j]], dim=1)


def to_values_matrix(d: int, device: str):
    """A (d, p): the Shapley values of a 2-additive game from its terms, E_i + 1/2 sum_j E_ij."""
    import torch

    i, j = pair_index(d)
    A = torch.zeros((d, n_unknowns(d)), dtype=torch.float64, device=device)
    A[torch.arange(d), torch.arange(d)] = 1.0
    cols = torch.arange(d, n_unknowns(d), device=device)
    A[torch.as_tensor(i, device=device), cols] = 0.5
    A[torch.as_tensor(j, device=device), cols] = 0.5
    return A


def constrained_inverse(Z, W):
    """(H^+, h1 = H^+ 1) of the weighted normal matrix H = Z' W Z."""
    import torch

    H = Z.T @ (Z * W[:, None])
    H_inv = torch.linalg.pinv(H, hermitian=True)
    return H_inv, H_inv @ torch.ones(Z.shape[1], dtype=Z.dtype, device=Z.device)


def solve(Z, W, Y, delta, inverse=None):
    """Per row r: argmin_E sum_s W_s (Y_rs - Z_s . E)^2 subject to sum(E) = delta_r, for all
    rows with one factorisation. ``Z`` (S, p), ``W`` (S,), ``Y`` (R, S), ``delta`` (R,);
    ``inverse``: :func:`constrained_inverse`'s result when already computed."""
    H_inv, h1 = inverse if inverse is not None else constrained_inverse(Z, W)
    unconstrained = (Y @ (Z * W[:, None])) @ H_inv
    excess = unconstrained.sum(dim=1) - delta
    return unconstrained - excess[:, None] * (h1 / h1.sum())[None, :]


def interaction_matrices(E, d: int):
    """(R, d, d) in shap's convention: main effects on the diagonal, half of each pair term in
    both off-diagonal cells."""
    import torch

    R = E.shape[0]
    M = torch.zeros((R, d, d), dtype=torch.float64, device=E.device)
    idx = torch.arange(d, device=E.device)
    M[:, idx, idx] = E[:, :d]
    i, j = (torch.as_tensor(a, device=E.device) for a in pair_index(d))
    M[:, i, j] = 0.5 * E[:, d:]
    M[:, j, i] = 0.5 * E[:, d:]
    return M


# --- the explainer ------------------------------------------------------------------------------


class ShapleyInteractions(Explainer):
    name: ClassVar[str] = "shapley_interactions"
    runs_by_default: ClassVar[bool] = False  # d x d values per row: only when named
    description: ClassVar[str] = (
        "Pairwise Shapley interactions of any model: Faith-SHAP of order 2 (FSII), one weighted "
        "least-squares fit of main effects and pair terms per row, batched (one coalition "
        "design and one factorisation for all rows); exact when n_samples >= 2**d - 2, else "
        "paired kernel sampling; values are the Shapley values of the fit (efficient, exact "
        "when enumerated)."
    )
    shapley: ClassVar[bool] = True
    #: Groups of columns (feature_groups=) can be its players: then the interactions are
    #: between groups (d = the number of groups).
    explains_groups: ClassVar[bool] = True
    #: n_samples: coalitions per explained row (each costs one model call per background row),
    #: raised to twice the d(d+1)/2 unknowns when lower. max_features: supports() declines
    #: wider data (the fit has d(d+1)/2 unknowns and the result d*d values per row).
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 2048, "max_features": 40}
    param_types: ClassVar[dict[str, str]] = {"n_samples": "int >= 2", "max_features": "int >= 2"}

    def supports(self, task: ExplainTask) -> str | None:
        reason = super().supports(task)
        if reason is not None:
            return reason
        d = task.n_features
        if d < 2:
            return f"{self.name} needs at least 2 features (or groups), the data has {d}"
        limit = self.get_params().get("max_features")
        if isinstance(limit, (int, np.integer)) and not isinstance(limit, bool) and d > limit:
            return (f"{self.name} fits d(d+1)/2 = {n_unknowns(d)} main effects and pair terms "
                    f"per row for {d} features, above its limit of {limit} features "
                    f"({n_unknowns(int(limit))} unknowns): the design needs at least twice as "
                    "many coalitions and the result holds d*d values per row; pass "
                    "max_features= to raise the limit, or explain fewer (grouped) features")
        return None

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_features: int,
                             n_background: int) -> float | None:
        params = {**self.defaults, **params}
        if n_features < 2:
            return None
        per_row = design_size(n_features, int(params["n_samples"]))
        # Coalitions, then the endpoints f(x) (one per row) and E[f(background)].
        return n_rows * per_row * n_background + n_rows + n_background

    def explain(self, task: ExplainTask) -> Attribution:
        import torch

        params = self.validate_params()
        d = task.n_features
        requested = int(params["n_samples"])
        design = make_design(d, requested, np.random.default_rng(task.seed))
        info: dict[str, Any] = {"index": INDEX, "order": 2, "off_diagonal": "half",
                                "values": "Shapley values of the fitted 2-additive game",
                                "coalitions": len(design.masks), "exact": design.exact,
                                "sampling": "enumeration" if design.exact else "kernel, paired"}
        if not design.exact and design.budget > requested:
            warnings.warn(
                f"shapley_interactions: n_samples={requested} cannot identify the "
                f"{n_unknowns(d)} main effects and pair terms of {d} features; raised to "
                f"{design.budget}.", UserWarning, stacklevel=2)
            info["n_samples_raised"] = {"from": requested, "to": int(design.budget)}

        predict = task.tensor_predict()
        x = as_tensor(task.X, task.device)
        background = as_tensor(task.background, task.device)
        f_x = predict(x).to(torch.float64)
        base = predict(background).to(torch.float64).mean()
        masks = torch.as_tensor(design.masks, device=x.device)
        groups = getattr(task, "feature_groups", None)  # a GroupedTask: players are groups
        extra = {} if groups is None else {"groups": groups}
        Y = coalition_values(predict, x, background, masks, max_rows=task.max_batch_rows,
                             **extra) - base
        Z = regressors(masks, d)
        W = torch.as_tensor(design.weights, dtype=torch.float64, device=x.device)
        inverse = constrained_inverse(Z, W)  # one factorisation for the solve and the errors
        E = solve(Z, W, Y, f_x - base, inverse)
        A = to_values_matrix(d, x.device)
        values = E @ A.T
        if design.exact:
            se = torch.zeros_like(values)
        else:
            pair = torch.as_tensor(design.pair, device=x.device)
            # The values are E @ A.T: their errors through the same closed-form jackknife.
            se = pair_jackknife_standard_errors(Z, W, Y, E, pair, onto=A.T, inverse=inverse)
        se_np = se.cpu().numpy()
        finite = se_np.size > 0 and bool(np.all(np.isfinite(se_np)))
        info.update(max_standard_error=float(se_np.max()) if finite else None,
                    samples_used=len(design.masks))
        task.on_rows_done(len(task.X))
        return Attribution(values=values.cpu().numpy(),
                           base_values=np.full(len(task.X), float(base)),
                           standard_errors=se_np,
                           interactions=interaction_matrices(E, d).cpu().numpy(),
                           info=info)
