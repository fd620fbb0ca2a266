"""Kernel SHAP (Lundberg & Lee, 2017), batched.

Two estimators share this explainer. The default, ``estimator='poly'``, fits the odd part of the
game with a linear plus ridge-penalised third-order polynomial on a stratified design of
distinct complementary pairs and reads the Shapley values off the fit (see :mod:`._poly`: at
equal budget it is several times more accurate than the classic estimator and than shapiq's
kADD-SHAP). ``estimator='kernel'`` is the classic estimator described below, unchanged.

Both refuse to guess: a paired design identifies M values only with at least M pairs, so a
budget under ``2 * M`` coalitions is raised to that bound (with a logged warning, recorded in
``info['budget_raised']``), and data with more than :data:`MAX_FEATURES` players is declined by
``supports()`` (group the columns with ``feature_groups=`` or use ``permutation_shap``): no
solve is ever larger than ``MAX_FEATURES`` square.

One coalition design is drawn per run and shared by every explained row, so the weighted
least-squares system is factorised once and applied to all rows as one matrix product; the
efficiency constraint is imposed exactly. The design enumerates whole coalition sizes from the
outside in while the budget allows (they carry most of the kernel weight) and samples the rest in
complementary (antithetic) pairs, either proportionally to the Shapley kernel or with leverage
scores (Musco & Witter, ICLR 2025: uniform over sizes, reweighted). With a budget of at least
2**M - 2 coalitions every coalition is enumerated and the values are exact.

Standard errors come from a closed-form delete-one-pair jackknife of the constrained weighted
least squares, the sampled complementary pairs being the i.i.d. units (see
:func:`pair_jackknife_standard_errors`); they are 0 for an exhaustive design. With
``n_samples='auto'`` the design grows in doubling rounds (the layers enumerated in the first
round stay enumerated, new pairs are appended and every sampled weight re-normalised) until the
standard errors are small relative to each row's attributions, or ``max_samples`` is spent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import combinations
from math import comb
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Attribution, ConfigError, Explainer, ExplainTask, coalition_values

from . import _poly
from ._shapley import (
    MIN_PAIRS,
    Adaptive,
    adaptive_info,
    adaptive_param_types,
    converged,
    doubling_targets,
    endpoint_rows,
    kernel_weight,
    size_mass,
    standard_error_info,
    tensors,
)

#: Rows x coalitions x features held at once while computing the standard errors.
_SE_CHUNK_ELEMENTS = 1 << 22
#: Most players kernel_shap explains: its least-squares solve is M x M (O(M^3) time, O(M^2)
#: memory; ~1 s at 2,000 and ~5 s at 4,096 players on two CPU cores) and a budget that
#: identifies the values needs 2 * M coalitions per row. Wider data: feature_groups= or
#: permutation_shap.
MAX_FEATURES = 4096
#: Coalitions per player below which the values are not identified: each complementary pair
#: gives one equation for the M values (the odd part of the game), one of them is fixed by
#: efficiency, and the jackknife needs one spare: M pairs, 2 * M coalitions.
MIN_COALITIONS_PER_PLAYER = 2

log = logging.getLogger(__name__)


def _check_design_args(n_features: int, sampling: str) -> None:
    if n_features < 2:
        raise ConfigError("kernel_shap needs at least 2 features.")
    if sampling not in ("kernel", "leverage"):
        raise ConfigError(f"sampling must be 'kernel' or 'leverage', got {sampling!r}.")
    if n_features > MAX_FEATURES:
        raise ConfigError(_too_wide(n_features))


def _too_wide(n_features: int) -> str:
    return (f"kernel_shap explains at most {MAX_FEATURES} players: its least-squares solve is "
            f"M x M (O(M^3)) and a budget that identifies M values needs "
            f"{MIN_COALITIONS_PER_PLAYER} x M coalitions per row; the data has {n_features}. "
            "Group the columns (feature_groups='auto' or {name: [columns]}) or use "
            "permutation_shap (no solve; unbiased with any number of permutations).")


def identifiable_samples(n_features: int) -> int:
    """The fewest coalitions per row that identify ``n_features`` values:
    ``2 * M`` (M pairs), or every coalition when there are fewer."""
    return min(MIN_COALITIONS_PER_PLAYER * n_features, 2 ** min(n_features, 62) - 2)


def identifiable_params(params: dict[str, Any], n_features: int
                        ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``params`` with a budget raised to :func:`identifiable_samples` when below it, and the
    record of that decision (None when nothing changed). Deterministic: the planner's cost
    estimate and the run agree."""
    bound = identifiable_samples(n_features)
    if params["n_samples"] == "auto":
        low, high = int(params["min_samples"]), int(params["max_samples"])
        if low >= bound:
            return params, None
        raised = {**params, "min_samples": bound, "max_samples": max(high, bound)}
        return raised, {"requested": {"min_samples": low, "max_samples": high},
                        "used": {"min_samples": bound, "max_samples": max(high, bound)},
                        "bound": bound, "reason": _raise_reason(n_features, bound)}
    requested = int(params["n_samples"])
    if requested >= bound:
        return params, None
    return ({**params, "n_samples": bound},
            {"requested": requested, "used": bound, "bound": bound,
             "reason": _raise_reason(n_features, bound)})


def _raise_reason(n_features: int, bound: int) -> str:
    return (f"{n_features} values cannot be identified from fewer than {bound} coalitions per "
            f"row ({MIN_COALITIONS_PER_PLAYER} x players: one equation per complementary pair); "
            "the budget was raised to that bound. For a cheaper run on wide data group the "
            "columns (feature_groups=) or use permutation_shap.")


def all_coalitions(n_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Every proper non-empty coalition (ids 1 .. 2**M - 2 in order) and its kernel weight."""
    M = n_features
    ids = np.arange(1, 2**M - 1)
    masks = ((ids[:, None] >> np.arange(M)) & 1).astype(bool)
    sizes = masks.sum(axis=1)
    weights = np.array([0.0] + [kernel_weight(M, s) for s in range(1, M)])[sizes]
    return masks, weights


def enumerated_layers(n_features: int, budget: int
                      ) -> tuple[np.ndarray, np.ndarray, list[int], int]:
    """The size layers a budget enumerates: (masks, weights, sizes left to sample, budget left).

    Layers (s and M - s together) are taken from the outside in while the budget covers each in
    proportion to its kernel mass; deterministic, so the planner can size a design without it.
    """
    M = n_features
    masks: list[np.ndarray] = []
    weights: list[float] = []
    remaining = list(range(1, M))
    for s in range(1, M // 2 + 1):
        layer = [s] if 2 * s == M else [s, M - s]
        count = sum(comb(M, k) for k in layer)
        mass_left = sum(size_mass(M, k) for k in remaining)
        share = sum(size_mass(M, k) for k in layer) / mass_left
        if count > budget * share or count > budget:
            break
        for k in layer:
            for idx in combinations(range(M), k):
                row = np.zeros(M, dtype=bool)
                row[list(idx)] = True
                masks.append(row)
                weights.append(kernel_weight(M, k))
            remaining.remove(k)
        budget -= count
    return (np.asarray(masks, dtype=bool).reshape(-1, M), np.asarray(weights, float),
            remaining, budget)


@dataclass
class CoalitionDesign:
    """Enumerated layers, fixed when the design is made, plus sampled complementary pairs that
    later rounds may append to.

    A sampled pair's regression weight is its importance ratio pi(size) / p(size) divided by
    2 x (all pairs drawn so far), so appending pairs re-normalises every sampled weight and the
    sampled part stays an unbiased estimate of the kernel mass of the sizes not enumerated.
    """

    n_features: int
    budget: int
    rng: np.random.Generator
    sampling: str = "kernel"
    enumerated: np.ndarray = field(init=False)
    enumerated_weights: np.ndarray = field(init=False)
    remaining: list[int] = field(init=False)
    left: int = field(init=False)
    _rounds: list[tuple[np.ndarray, np.ndarray]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        _check_design_args(self.n_features, self.sampling)
        self.enumerated, self.enumerated_weights, self.remaining, self.left = \
            enumerated_layers(self.n_features, self.budget)

    @property
    def n_pairs(self) -> int:
        return sum(len(sampled) for sampled, _ in self._rounds)

    def add_pairs(self, pairs: int) -> np.ndarray:
        """Draw ``pairs`` complementary pairs; returns their coalitions ``[S; ~S]``."""
        M = self.n_features
        mass = np.array([size_mass(M, k) for k in self.remaining])
        if self.sampling == "kernel":
            p_size = mass / mass.sum()
        else:  # leverage scores of the Shapley regression are uniform over sizes
            p_size = np.full(len(self.remaining), 1.0 / len(self.remaining))
        chosen = self.rng.choice(len(self.remaining), size=pairs, p=p_size)
        sizes = np.asarray(self.remaining)[chosen]
        # Uniform subset of each size: the `size` smallest of M random keys.
        keys = self.rng.random((pairs, M))
        ranks = keys.argsort(axis=1).argsort(axis=1)
        sampled = ranks < sizes[:, None]
        self._rounds.append((sampled, mass[chosen] / p_size[chosen]))
        return np.concatenate([sampled, ~sampled])

    def masks(self) -> np.ndarray:
        parts = [self.enumerated] + [np.concatenate([s, ~s]) for s, _ in self._rounds]
        return np.concatenate(parts).reshape(-1, self.n_features)

    def weights(self) -> np.ndarray:
        """Regression weights, in the order of :meth:`masks`."""
        total = 2 * self.n_pairs
        parts = [self.enumerated_weights]
        for _, ratio in self._rounds:
            w = ratio / total  # importance weight pi(z) / (p(z) * n) of each coalition
            parts.append(np.concatenate([w, w]))
        return np.concatenate(parts)

    def pair_index(self) -> np.ndarray:
        """For each coalition of :meth:`masks`: its pair (the i.i.d. unit), -1 if enumerated."""
        parts, start = [np.full(len(self.enumerated), -1)], 0
        for sampled, _ in self._rounds:
            ids = np.arange(start, start + len(sampled))
            parts.append(np.concatenate([ids, ids]))
            start += len(sampled)
        return np.concatenate(parts)


def coalition_design(n_features: int, n_samples: int, rng: np.random.Generator,
                     sampling: str = "kernel") -> tuple[np.ndarray, np.ndarray, bool]:
    """Coalitions (S, M) bool, their regression weights (S,), and whether they are exhaustive."""
    design, exact = _fixed_design(n_features, n_samples, rng, sampling)
    if exact:
        masks, weights = all_coalitions(n_features)
        return masks, weights, True
    return design.masks(), design.weights(), False


def _fixed_design(n_features: int, n_samples: int, rng: np.random.Generator, sampling: str
                  ) -> tuple[CoalitionDesign | None, bool]:
    """The design of a fixed budget: (None, True) when it covers every coalition."""
    _check_design_args(n_features, sampling)
    if n_samples >= 2**n_features - 2:
        return None, True
    design = CoalitionDesign(n_features, n_samples, rng, sampling)
    if design.remaining and design.left >= 2:
        design.add_pairs(design.left // 2)
    return design, False


def design_size(n_features: int, n_samples: int) -> int:
    """Coalitions a fixed ``n_samples`` design evaluates (no randomness involved)."""
    total = 2**n_features - 2
    if n_samples >= total:
        return total
    enumerated, _, remaining, left = enumerated_layers(n_features, n_samples)
    return len(enumerated) + (2 * (left // 2) if remaining and left >= 2 else 0)


def solve_constrained(Z, W, Y, delta):
    """Per row r: argmin_phi sum_s W_s (Y_rs - Z_s . phi)^2 subject to sum(phi) = delta_r.

    ``Z`` (S, M), ``W`` (S,), ``Y`` (R, S), ``delta`` (R,): one factorisation for all rows.
    """
    import torch

    ZW = Z * W[:, None]
    H = Z.T @ ZW
    H_inv = _poly.sym_inverse(H)
    unconstrained = (Y @ ZW) @ H_inv                      # (R, M)
    ones = torch.ones(Z.shape[1], dtype=Z.dtype, device=Z.device)
    h1 = H_inv @ ones                                     # (M,)
    excess = unconstrained.sum(dim=1) - delta             # (R,)
    return unconstrained - excess[:, None] * (h1 / (ones @ h1))[None, :]


def pair_jackknife_standard_errors(Z, W, Y, phi, pair, *, onto=None, inverse=None):
    """Standard errors of :func:`solve_constrained`'s phi (R, M), or of the values
    ``phi @ onto`` (R, d) of a constrained fit's coefficients (shapley_interactions reads its
    Shapley values off the coefficients so): a delete-one-pair jackknife over the sampled
    complementary pairs (the i.i.d. units), in closed form. ``inverse``: ``(H^-1, H^-1 1)`` of
    the weighted normal matrix when the caller has it.

    Why this and not a bootstrap or a plain sandwich: for weighted least squares, deleting
    pair p (weights held) moves the solution by exactly
    delta_p = K Z_p' W_p^1/2 (I - G_p)^-1 W_p^1/2 e_p, with e_p the pair's two residuals,
    K = H^-1 - H^-1 1 1' H^-1 / (1' H^-1 1) the inverse under the efficiency constraint
    (K 1 = 0: the errors respect efficiency) and G_p = W_p^1/2 Z_p K Z_p' W_p^1/2 the pair's
    2 x 2 leverage. So the P re-solves cost one pass, O(R S M + R P M^2), about one more
    solve; a bootstrap of B resamples would cost B solves and add randomness. Without the
    (I - G_p)^-1 factor this is the sandwich (infinitesimal jackknife), which with a dozen
    pairs underestimated the error by ~30% (leverages ~0.3); the leverage correction brings
    the intervals to nominal coverage there and vanishes as pairs grow. Enumerated coalitions
    are not random and contribute nothing. NaN when fewer than two pairs were sampled.
    """
    import torch

    R, M = phi.shape
    d = M if onto is None else onto.shape[1]
    sampled = pair >= 0
    P = int(pair.max().item()) + 1 if bool(sampled.any()) else 0
    if P < 2:
        return torch.full((R, d), float("nan"), dtype=torch.float64, device=phi.device)
    if inverse is None:
        H_inv = _poly.sym_inverse(Z.T @ (Z * W[:, None]))
        h1 = H_inv @ torch.ones(M, dtype=Z.dtype, device=Z.device)
    else:
        H_inv, h1 = inverse
    K = H_inv - torch.outer(h1, h1) / h1.sum()
    # Both coalitions of each pair side by side (a sort, not index_add_: deterministic on GPUs).
    order = torch.argsort(pair[sampled], stable=True)
    Zp = Z[sampled][order].reshape(P, 2, M)
    root_w = W[sampled][order].reshape(P, 2).sqrt()
    Yp = Y[:, sampled][:, order].reshape(R, P, 2)
    Xp = root_w[:, :, None] * Zp                                           # (P, 2, M)
    G = Xp @ K @ Xp.transpose(1, 2)                                        # (P, 2, 2) leverage
    eye = torch.eye(2, dtype=torch.float64, device=phi.device)
    inflate = torch.linalg.pinv(eye - G)                                   # shared by all rows
    onto_values = Xp @ (K if onto is None else K @ onto)                   # (P, 2, d)
    se = torch.empty((R, d), dtype=torch.float64, device=phi.device)
    step = max(1, _SE_CHUNK_ELEMENTS // max(1, 2 * P * M))
    for r0 in range(0, R, step):
        residual = Yp[r0:r0 + step] - torch.einsum("rm,pam->rpa", phi[r0:r0 + step], Zp)
        t = torch.einsum("pab,rpb->rpa", inflate, root_w * residual)       # (r, P, 2)
        delta = torch.einsum("rpa,pad->rpd", t, onto_values)               # (r, P, d)
        se[r0:r0 + step] = (delta.var(dim=1, unbiased=False) * (P - 1)).sqrt()
    return se


@dataclass
class _Fit:
    phi: Any
    se: Any
    info: dict[str, Any]


class KernelShap(Explainer):
    name: ClassVar[str] = "kernel_shap"
    description: ClassVar[str] = (
        "Kernel SHAP, batched on the device: one shared design of complementary pairs, one "
        "factorisation for all rows. Default estimator 'poly': stratified distinct pairs and "
        "a linear + ridge-penalised third-order odd-polynomial fit (penalty by GCV), several "
        "times more accurate than classic Kernel SHAP and kADD-SHAP at equal budget; "
        "'kernel': the classic paired estimator. Exact efficiency; exact values when "
        "n_samples >= 2**M - 2; jackknife standard errors; n_samples='auto' samples in "
        "doubling rounds until they are below tolerance; budgets under 2 x M are raised."
    )
    shapley: ClassVar[bool] = True
    #: Groups of columns (feature_groups=) are its players: coalitions of groups.
    explains_groups: ClassVar[bool] = True
    #: n_samples: coalitions per explained row, each costing one model call per background row,
    #: or 'auto': rounds from min_samples, doubling up to max_samples, until for every row
    #: max_j SE_j <= tolerance * max_j |phi_j| (rows with all-~0 attributions use a floor).
    #: sampling: 'kernel' (proportional to the Shapley kernel) or 'leverage' (Musco & Witter:
    #: uniform over coalition sizes); for 'poly' it allocates the pairs over the size strata.
    #: estimator: 'poly' (default; see :mod:`._poly`) or 'kernel' (classic paired Kernel SHAP).
    #: order: of the odd polynomial of 'poly': 3 (default) or 1 (linear: paired Kernel SHAP on
    #: the stratified design, the same values as a 2-additive fit; 2 means the same as 1).
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 1024, "estimator": "poly", "order": 3,
                                          "sampling": "kernel", "tolerance": 0.05,
                                          "min_samples": 128, "max_samples": 4096}
    param_types: ClassVar[dict[str, str]] = {"n_samples": "int >= 2 | 'auto'",
                                             "estimator": "'poly' | 'kernel'",
                                             "order": "int in [1, 3]",
                                             "sampling": "'kernel' | 'leverage'",
                                             **adaptive_param_types(2)}

    def supports(self, task: ExplainTask) -> str | None:
        if task.n_features > MAX_FEATURES:
            return _too_wide(task.n_features)
        return super().supports(task)

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_features: int,
                             n_background: int) -> float | None:
        params = {**self.defaults, **params}
        M = n_features
        if M < 2 or M > MAX_FEATURES:
            return None
        params, _ = identifiable_params(params, M)
        if params["n_samples"] == "auto":
            per_row = _auto_upper_bound(M, int(params["min_samples"]),
                                        int(params["max_samples"]))
        elif params["estimator"] == "poly":
            per_row = poly_design_size(M, int(params["n_samples"]))
        else:
            per_row = design_size(M, int(params["n_samples"]))
        return n_rows * per_row * n_background + endpoint_rows(n_rows, n_background)

    def explain(self, task: ExplainTask) -> Attribution:
        params = self.validate_params()
        rng = np.random.default_rng(task.seed)
        _check_design_args(task.n_features, params["sampling"])
        params, raised = identifiable_params(params, task.n_features)
        if raised is not None:
            log.warning("kernel_shap: %s", raised["reason"])
        endpoints = tensors(task, task.X)
        poly = params["estimator"] == "poly"
        if params["n_samples"] == "auto":
            fit = (_poly_adaptive if poly else _explain_adaptive)(task, params, rng, endpoints)
        else:
            fit = (_poly_fixed if poly else _explain_fixed)(task, params, rng, endpoints)
        fit.info = {"estimator": "enumeration" if fit.info["exact"] else params["estimator"],
                    **fit.info}
        if raised is not None:
            fit.info["budget_raised"] = raised
        task.on_rows_done(len(task.X))
        base = endpoints[4]
        return Attribution(values=fit.phi.cpu().numpy(),
                           base_values=np.full(len(task.X), float(base)),
                           standard_errors=fit.se.cpu().numpy(), info=fit.info)


def _auto_upper_bound(M: int, min_samples: int, max_samples: int) -> int:
    """Most coalitions an 'auto' run evaluates per row: every coalition when the first round
    covers them; else the cap, and below 2 x (2**M - 2) since the run then finishes on the
    exhaustive design as soon as a round's budget covers it."""
    total = 2**M - 2
    if min_samples >= total:
        return total
    return min(max_samples, 2 * total)


def _evaluate(task: ExplainTask, endpoints: tuple, masks: np.ndarray):
    """Mean model output over the background for every (row, coalition): (R, S)."""
    import torch

    predict, x, background, _, _ = endpoints
    Z = torch.as_tensor(masks, device=x.device)
    # The players: the columns, or groups of columns (feature_groups=) the engine expands.
    return coalition_values(predict, x, background, Z, max_rows=task.max_batch_rows,
                            groups=getattr(task, "feature_groups", None))


def _solve(masks: np.ndarray, weights: np.ndarray, pair: np.ndarray | None, values,
           endpoints: tuple) -> tuple[Any, Any]:
    """(phi, standard errors) of one design; ``pair`` None marks an exhaustive design."""
    import torch

    _, x, _, f_x, base = endpoints
    Z = torch.as_tensor(masks, device=x.device).to(torch.float64)
    W = torch.as_tensor(weights, device=x.device)
    Y = values - base
    phi = solve_constrained(Z, W, Y, f_x - base)
    if pair is None:
        return phi, torch.zeros_like(phi)
    return phi, pair_jackknife_standard_errors(Z, W, Y, phi,
                                              torch.as_tensor(pair, device=x.device))


def _explain_fixed(task: ExplainTask, params: dict[str, Any], rng: np.random.Generator,
                   endpoints: tuple) -> _Fit:
    design, exact = _fixed_design(task.n_features, int(params["n_samples"]), rng,
                                  params["sampling"])
    if exact:
        masks, weights = all_coalitions(task.n_features)
        pair = None
    else:
        masks, weights, pair = design.masks(), design.weights(), design.pair_index()
    phi, se = _solve(masks, weights, pair, _evaluate(task, endpoints, masks), endpoints)
    info = {"coalitions": len(masks), "exact": exact,
            "sampling": "enumeration" if exact else params["sampling"],
            **standard_error_info(se.cpu().numpy(), len(masks))}
    return _Fit(phi, se, info)


def _explain_adaptive(task: ExplainTask, params: dict[str, Any], rng: np.random.Generator,
                      endpoints: tuple) -> _Fit:
    """Doubling rounds on one growing design; each round evaluates only its new coalitions."""
    import torch

    M = task.n_features
    total = 2**M - 2
    settings = Adaptive.from_params("kernel_shap", params)
    if settings.min_samples >= total:  # the first round already covers every coalition
        return _exhaustive_fit(task, endpoints, np.zeros((0, M), bool), None, 0, 1)
    design = CoalitionDesign(M, settings.min_samples, rng, params["sampling"])
    evaluated = design.enumerated
    values = _evaluate(task, endpoints, evaluated)
    first = max(settings.min_samples, len(evaluated) + 2 * MIN_PAIRS)
    phi = se = None
    done, rounds = False, 0
    for target in doubling_targets(first, settings.max_samples):
        rounds += 1
        spent = len(evaluated)
        if target >= total:
            missing = total - len(np.unique(_coalition_ids(evaluated)))
            if spent + missing <= settings.max_samples:
                return _exhaustive_fit(task, endpoints, evaluated, values, spent, rounds)
        new_pairs = (target - spent) // 2
        if new_pairs >= 1:
            new = design.add_pairs(new_pairs)
            values = torch.cat([values, _evaluate(task, endpoints, new)], dim=1)
            evaluated = np.concatenate([evaluated, new])
        phi, se = _solve(design.masks(), design.weights(), design.pair_index(), values,
                         endpoints)
        done = converged(phi.cpu().numpy(), se.cpu().numpy(), settings.tolerance)
        if done:
            break
    info = {"coalitions": len(evaluated), "exact": False, "sampling": params["sampling"],
            **standard_error_info(se.cpu().numpy(), len(evaluated)),
            **adaptive_info(rounds, done)}
    return _Fit(phi, se, info)


def _coalition_ids(masks: np.ndarray) -> np.ndarray:
    """Each coalition as the integer whose bits are its features (M <= 62 here)."""
    return masks.astype(np.int64) @ (np.int64(1) << np.arange(masks.shape[1], dtype=np.int64))


def _exhaustive_fit(task: ExplainTask, endpoints: tuple, evaluated: np.ndarray, values,
                    spent: int, rounds: int, adaptive: bool = True) -> _Fit:
    """Finish on the full enumeration, reusing every coalition already evaluated: exact
    values, zero standard errors."""
    import torch

    masks, weights = all_coalitions(task.n_features)
    full = torch.empty((len(task.X), len(masks)), dtype=torch.float64,
                       device=endpoints[1].device)
    have = np.zeros(len(masks), dtype=bool)
    if len(evaluated):
        ids = _coalition_ids(evaluated) - 1          # column of each evaluated coalition
        full[:, torch.as_tensor(ids, device=full.device)] = values
        have[ids] = True
    missing = np.flatnonzero(~have)
    if len(missing):
        full[:, torch.as_tensor(missing, device=full.device)] = _evaluate(task, endpoints,
                                                                          masks[missing])
    phi, se = _solve(masks, weights, None, full, endpoints)
    used = spent + len(missing)
    info = {"coalitions": len(masks), "exact": True, "sampling": "enumeration",
            **standard_error_info(se.cpu().numpy(), used),
            **(adaptive_info(rounds, True) if adaptive else {})}
    return _Fit(phi, se, info)


# --------------------------------------------------------------------------------------------
# The default estimator: odd-polynomial regression on stratified pairs (see _poly)
# --------------------------------------------------------------------------------------------

def poly_design_size(n_features: int, n_samples: int) -> int:
    """Coalitions the 'poly' design evaluates for a fixed ``n_samples``: whole pairs, or every
    coalition when the budget covers them."""
    total = 2**n_features - 2
    return total if n_samples >= total else 2 * (int(n_samples) // 2)


def _poly_solve(task: ExplainTask, design: _poly.StratifiedPairs, values, endpoints,
                order: int) -> _poly.PolyFit:
    import torch

    _, x, _, f_x, base = endpoints
    s_col, c_col = design.pair_columns()
    dev = x.device
    odd = (values[:, torch.as_tensor(s_col, device=dev)]
           - values[:, torch.as_tensor(c_col, device=dev)]) / 2.0
    groups, fpc = design.variance_groups()
    return _poly.fit(torch.as_tensor(design.first_halves(), device=dev),
                     torch.as_tensor(design.pair_weights(), device=dev), odd,
                     (f_x.to(torch.float64) - base) / 2.0, groups, fpc, order=int(order))


def _poly_info(design: _poly.StratifiedPairs, fit: _poly.PolyFit, sampling: str,
               se: np.ndarray) -> dict[str, Any]:
    complete = sum(st.count == st.total for st in design.strata)
    return {"coalitions": 2 * design.n_pairs, "exact": False, "sampling": sampling,
            "order": fit.order, "penalty": fit.penalty, "strata": len(design.strata),
            "strata_enumerated": int(complete),
            **standard_error_info(se, 2 * design.n_pairs)}


def _poly_fixed(task: ExplainTask, params: dict[str, Any], rng: np.random.Generator,
                endpoints: tuple) -> _Fit:
    M = task.n_features
    n_samples = int(params["n_samples"])
    if n_samples >= 2**M - 2:
        return _exhaustive_fit(task, endpoints, np.zeros((0, M), bool), None, 0, 0,
                               adaptive=False)
    design = _poly.StratifiedPairs(M, rng, params["sampling"])
    masks = design.grow(n_samples // 2)
    fit = _poly_solve(task, design, _evaluate(task, endpoints, masks), endpoints,
                      params["order"])
    return _Fit(fit.phi, fit.se, _poly_info(design, fit, params["sampling"],
                                            fit.se.cpu().numpy()))


def _poly_adaptive(task: ExplainTask, params: dict[str, Any], rng: np.random.Generator,
                   endpoints: tuple) -> _Fit:
    """Doubling rounds of new distinct pairs; each round evaluates only its new coalitions."""
    import torch

    M = task.n_features
    total = 2**M - 2
    settings = Adaptive.from_params("kernel_shap", params)
    if settings.min_samples >= total:
        return _exhaustive_fit(task, endpoints, np.zeros((0, M), bool), None, 0, 1)
    design = _poly.StratifiedPairs(M, rng, params["sampling"])
    values = None
    first = max(settings.min_samples, 2 * MIN_PAIRS)
    fit = None
    done, rounds = False, 0
    for target in doubling_targets(first, settings.max_samples):
        rounds += 1
        spent = 2 * design.n_pairs
        if target >= total and total <= settings.max_samples:  # pairs are distinct: the
            # exhaustive design costs the coalitions not yet evaluated, total - spent
            return _exhaustive_fit(task, endpoints, design.masks(), values, spent, rounds)
        new = design.grow(target // 2)
        if len(new):
            fresh = _evaluate(task, endpoints, new)
            values = fresh if values is None else torch.cat([values, fresh], dim=1)
        fit = _poly_solve(task, design, values, endpoints, params["order"])
        done = converged(fit.phi.cpu().numpy(), fit.se.cpu().numpy(), settings.tolerance)
        if done:
            break
    info = {**_poly_info(design, fit, params["sampling"], fit.se.cpu().numpy()),
            **adaptive_info(rounds, done)}
    return _Fit(fit.phi, fit.se, info)
