"""Permutation SHAP (Strumbelj & Kononenko, 2014) with antithetic permutations, batched.

A set of permutations, each followed by its reverse, is drawn once and shared by all rows; every
prefix coalition of every permutation is evaluated in large batches. Each permutation telescopes
from E[f(background)] to f(x), so efficiency holds exactly. The players are the columns, or the
groups of columns of a grouped task (``feature_groups=``): permutations of the groups, each
prefix expanded to its columns by the engine.

The antithetic pairs are the i.i.d. sampling units: the standard error of each value is the
standard deviation of the pair means over sqrt(pairs). With ``n_samples='auto'`` pairs are
drawn in doubling rounds (only the new ones evaluated) until the standard errors are small
relative to each row's attributions, or ``max_samples`` is spent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Attribution, Explainer, ExplainTask, coalition_values

from ._shapley import (
    MIN_PAIRS,
    Adaptive,
    adaptive_info,
    adaptive_param_types,
    converged,
    doubling_targets,
    endpoint_rows,
    standard_error_info,
    tensors,
)


def pairs_for(n_samples: int, n_features: int) -> int:
    """Antithetic pairs a budget of ``n_samples`` model calls per row buys (at least one):
    each permutation costs M - 1 calls besides the two shared endpoints."""
    return max(1, (int(n_samples) - 2) // (2 * max(1, n_features - 1)))


def samples_for(pairs: int, n_features: int) -> int:
    """Model calls per row (per background row) of ``pairs`` pairs, endpoints included."""
    return 2 * pairs * (n_features - 1) + 2


def draw_permutations(rng: np.random.Generator, n_features: int, pairs: int) -> np.ndarray:
    """``pairs`` random permutations, each followed by its reverse: (2 * pairs, M)."""
    forward = np.stack([rng.permutation(n_features) for _ in range(pairs)])
    perms = np.empty((2 * pairs, n_features), dtype=np.int64)
    perms[0::2], perms[1::2] = forward, forward[:, ::-1]
    return perms


def permutation_gains(task: ExplainTask, endpoints: tuple, perms: np.ndarray):
    """(R, P, M): the gain of feature j when permutation p adds it, for every row."""
    import torch

    predict, x, background, f_x, base = endpoints
    P, M = perms.shape
    # prefix[p, k, j] = feature j is among the first k + 1 of permutation p (k < M - 1).
    position = np.argsort(perms, axis=1)                  # position of feature j in p
    prefix = position[:, None, :] <= np.arange(M - 1)[None, :, None]
    masks = torch.as_tensor(prefix.reshape(-1, M), device=x.device)
    # M players: the columns, or groups of columns (feature_groups=) expanded by the engine.
    inner = coalition_values(predict, x, background, masks, max_rows=task.max_batch_rows,
                             groups=getattr(task, "feature_groups", None))
    R = len(x)
    chain = torch.cat([base.reshape(1, 1, 1).expand(R, P, 1), inner.reshape(R, P, M - 1),
                       f_x[:, None, None].expand(R, P, 1)], dim=2)   # (R, P, M + 1)
    gains = chain[:, :, 1:] - chain[:, :, :-1]            # gain of the k-th feature added
    # Back to feature order: feature j was added at step position[p, j].
    idx = torch.as_tensor(position, device=x.device)[None].expand(R, P, M)
    return torch.gather(gains, 2, idx)


def pair_means(gains):
    """(R, pairs, M): the mean of each permutation and its reverse, the i.i.d. unit."""
    return (gains[:, 0::2] + gains[:, 1::2]) / 2


@dataclass
class PairStatistics:
    """Running mean and sum of squared deviations of the pair means, merged round by round
    (Chan et al.'s pairwise update: stable where sum-of-squares would cancel, e.g. for a
    linear model whose pairs all agree)."""

    count: int = 0
    mean: Any = None
    m2: Any = None
    #: The same statistics of each pair's mean over the rows, (M,): how much of the rows'
    #: errors is shared (one design serves all rows), see :meth:`row_error_correlation`.
    row_mean: Any = None
    row_m2: Any = None

    def add(self, means) -> None:
        n_b = means.shape[1]
        if self.count == 0:
            self.mean, self.m2 = _moments(means, dim=1)
        else:
            self.mean, self.m2 = _merged(self.count, self.mean, self.m2, n_b,
                                         *_moments(means, dim=1))
        # The error of mean_r |phi_r| is that of mean_r sign(phi_r) * phi_r: each pair's
        # signed row mean, with the signs of the estimate so far.
        across_rows = (means * self.mean.sign()[:, None, :]).mean(dim=0)  # (pairs, M)
        if self.count == 0:
            self.row_mean, self.row_m2 = _moments(across_rows, dim=0)
        else:
            self.row_mean, self.row_m2 = _merged(self.count, self.row_mean, self.row_m2, n_b,
                                                 *_moments(across_rows, dim=0))
        self.count += n_b

    def row_error_correlation(self, se) -> float | None:
        """The correlation rho of the rows' errors that makes
        ``importance_standard_errors(se, rho)`` match the measured variance of the rows'
        mean (max over features, the conservative choice); None with fewer than 2 pairs."""
        if self.count < 2:
            return None
        measured = (self.row_m2 / ((self.count - 1) * self.count)).cpu().numpy()
        se = se.cpu().numpy()
        n = max(1, se.shape[0])
        independent = (se ** 2).sum(axis=0) / n ** 2
        shared = se.mean(axis=0) ** 2
        span = shared - independent
        with np.errstate(divide="ignore", invalid="ignore"):
            rho = np.where(span > 1e-300, (measured - independent) / span, 0.0)
        rho = np.clip(np.nan_to_num(rho, nan=1.0), 0.0, 1.0)
        return float(rho.max()) if rho.size else None

    def standard_errors(self):
        """std of the pair means / sqrt(pairs); NaN with a single pair."""
        import torch

        if self.count < 2:
            return torch.full_like(self.mean, float("nan"))
        return (self.m2 / ((self.count - 1) * self.count)).sqrt()


def _moments(values, dim: int):
    """(mean, sum of squared deviations) along ``dim``."""
    mean = values.mean(dim=dim)
    return mean, ((values - mean.unsqueeze(dim)) ** 2).sum(dim=dim)


def _merged(n_a: int, mean_a, m2_a, n_b: int, mean_b, m2_b):
    """Chan et al.'s merge of two (count, mean, sum of squared deviations)."""
    n = n_a + n_b
    delta = mean_b - mean_a
    return mean_a + delta * (n_b / n), m2_a + m2_b + delta**2 * (n_a * n_b / n)


class PermutationShap(Explainer):
    name: ClassVar[str] = "permutation_shap"
    description: ClassVar[str] = (
        "Permutation SHAP, batched: antithetic permutation pairs shared by all rows; exact "
        "efficiency by telescoping; standard errors over the pairs; n_samples='auto' draws "
        "pairs in doubling rounds until they are below tolerance."
    )
    shapley: ClassVar[bool] = True
    #: Groups of columns (feature_groups=) are its players: permutations of the groups.
    explains_groups: ClassVar[bool] = True
    #: n_samples: model calls per explained row per background row; each permutation costs
    #: M - 1, and at least one antithetic pair is always run. 'auto': rounds from min_samples
    #: (and at least 8 pairs), doubling up to max_samples, until for every row
    #: max_j SE_j <= tolerance * max_j |phi_j| (rows with all-~0 attributions use a floor).
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 1024, "tolerance": 0.05,
                                          "min_samples": 256, "max_samples": 8192}
    param_types: ClassVar[dict[str, str]] = {"n_samples": "int >= 1 | 'auto'",
                                             **adaptive_param_types(1)}

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_features: int,
                             n_background: int) -> float | None:
        params = {**self.defaults, **params}
        budget = params["max_samples"] if params["n_samples"] == "auto" else params["n_samples"]
        # The pairs of an 'auto' run never exceed those of max_samples: an upper bound.
        per_row = samples_for(pairs_for(budget, n_features), n_features) - 2
        return n_rows * per_row * n_background + endpoint_rows(n_rows, n_background)

    def explain(self, task: ExplainTask) -> Attribution:
        params = self.validate_params()
        rng = np.random.default_rng(task.seed)
        endpoints = tensors(task, task.X)
        if params["n_samples"] == "auto":
            phi, se, info = _explain_adaptive(task, params, rng, endpoints)
        else:
            phi, se, info = _explain_fixed(task, params, rng, endpoints)
        R = len(task.X)
        task.on_rows_done(R)
        base = endpoints[4]
        return Attribution(values=phi.cpu().numpy(), base_values=np.full(R, float(base)),
                           standard_errors=se.cpu().numpy(), info=info)


def _info(pairs: int, M: int, se, stats: PairStatistics) -> dict[str, Any]:
    used = samples_for(pairs, M)
    return {"permutations": int(2 * pairs), "n_samples_effective": used,
            **standard_error_info(se.cpu().numpy(), used),
            "row_error_correlation": stats.row_error_correlation(se)}


def _explain_fixed(task: ExplainTask, params: dict[str, Any], rng: np.random.Generator,
                   endpoints: tuple) -> tuple[Any, Any, dict[str, Any]]:
    M = task.n_features
    pairs = pairs_for(params["n_samples"], M)
    gains = permutation_gains(task, endpoints, draw_permutations(rng, M, pairs))
    phi = gains.mean(dim=1)  # over permutations, as before standard errors existed
    stats = PairStatistics()
    stats.add(pair_means(gains))
    se = stats.standard_errors()
    return phi, se, _info(pairs, M, se, stats)


def _explain_adaptive(task: ExplainTask, params: dict[str, Any], rng: np.random.Generator,
                      endpoints: tuple) -> tuple[Any, Any, dict[str, Any]]:
    """Doubling rounds of new pairs; each round evaluates only its own permutations."""
    M = task.n_features
    settings = Adaptive.from_params("permutation_shap", params)
    cap = pairs_for(settings.max_samples, M)
    first = max(pairs_for(settings.min_samples, M), MIN_PAIRS)
    stats = PairStatistics()
    done, rounds = False, 0
    for target in doubling_targets(first, cap):
        rounds += 1
        gains = permutation_gains(task, endpoints,
                                  draw_permutations(rng, M, target - stats.count))
        stats.add(pair_means(gains))
        se = stats.standard_errors()
        done = converged(stats.mean.cpu().numpy(), se.cpu().numpy(), settings.tolerance)
        if done:
            break
    info = {**_info(stats.count, M, se, stats), **adaptive_info(rounds, done)}
    return stats.mean, se, info
