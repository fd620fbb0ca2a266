"""Rank uncertainty: is a method's top-k ranking resolved by its own sampling error?

Sampled estimators (kernel_shap, permutation_shap, lime, smoothgrad, smoothgrad_sq, vargrad,
gradient_shap, rise, sobol) report a standard error per value (``Attribution.standard_errors``).
A ranking whose adjacent gaps are within those errors would change with another seed or a few
more samples; this check says so without calling the model.

Global importance is the mean |value| over rows. Its standard error depends on how the rows'
errors correlate, which only the estimator knows; it says so in ``info["row_error_correlation"]``
(rho, 0 to 1), and the check uses sqrt((1 - rho) sum_i se_i^2 / n^2 + rho (mean_i se_i)^2)
(:func:`importance_standard_errors`). Without it rho = 1: the mean over rows of the standard
errors, the bound ``importance.json`` reports (|.| is 1-Lipschitz and the standard deviation of
a sum is at most the sum of the standard deviations), always safe. Measured on breast cancer
(30 features, kernel_shap at 1024 coalitions, 10 seeds): the rows' errors correlate at 0.02,
the bound is 4.6x the real spread of the importances, and with rho = 1 the check flagged 11
adjacent pairs in 6 runs whose order never changed between seeds (none with rho = 0.05). For
lime (one shared perturbation set) the bound is close (1.05x); smoothgrad, smoothgrad_sq,
vargrad and gradient_shap draw per row and report rho = 0.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import (
    Check,
    CheckContext,
    CheckResult,
    importance_standard_errors,
)

from ._stats import default_k


class RankUncertainty(Check):
    name: ClassVar[str] = "rank_uncertainty"
    description: ClassVar[str] = (
        "Methods with standard errors: adjacent pairs in the top k of global importance whose "
        "gap is within z * sqrt(se_a^2 + se_b^2) (fails when more than max_unstable_pairs), the "
        "largest relative error in the top k, and the share of rows whose top feature is not "
        "separated from the second. No model calls.")
    default: ClassVar[bool] = True
    #: A ranking within its sampling error is imprecise, not wrong: the headline says
    #: "ok with warnings", never "failed", for it.
    severity: ClassVar[str] = "warning"
    cost: ClassVar[str] = "no model evaluations"
    #: k: top features checked (None: min(5, features)); z: the interval's normal quantile;
    #: max_unstable_pairs: the verdict's bound; negligible_share: features (and rows) whose
    #: importance is at most this share of the top one are not ranked against each other;
    #: max_unresolved_top1_share: an optional bound on the per-row figure (None: no verdict).
    defaults: ClassVar[dict[str, Any]] = {"k": None, "z": 1.96, "max_unstable_pairs": 0,
                                          "tie_tolerance": 0.05, "negligible_share": 0.01,
                                          "max_unresolved_top1_share": None}
    param_types: ClassVar[dict[str, str]] = {"k": "int > 0 | None", "z": "float > 0",
                                         "max_unstable_pairs": "int >= 0",
                                         "tie_tolerance": "float in [0, 1)",
                                         "negligible_share": "float in [0, 1)",
                                         "max_unresolved_top1_share": "float in [0, 1] | None"}

    def supports(self, ctx: CheckContext) -> str | None:
        if ctx.data_type == "image":
            return ("pixel rankings are not checked: neighbouring pixels share masks (rise, "
                    "sobol cells) and are tied by construction; the per-pixel standard errors "
                    "are in the attributions")
        return None

    def run(self, ctx: CheckContext) -> CheckResult:
        params = self.validate_params()
        errors = ctx.standard_errors
        methods = [m for m in errors if ctx.results[m].values is not None]
        if not methods:
            return CheckResult(status="skipped", reason=(
                "no explainer that ran reports standard errors (the sampled estimators do: "
                "kernel_shap, permutation_shap, lime, smoothgrad, gradient_shap, ...)"))
        k = params["k"] or default_k(len(ctx.feature_names))
        result = CheckResult()
        for method in methods:
            figures, details = rank_uncertainty(
                np.asarray(ctx.results[method].values, dtype=float),
                np.asarray(errors[method], dtype=float), ctx.feature_names,
                k=k, z=params["z"], tie_tolerance=params["tie_tolerance"],
                negligible_share=params["negligible_share"],
                row_error_correlation=_row_error_correlation(ctx.results[method].info))
            for figure, value in figures.items():
                result.figures[f"{method}/{figure}"] = value
            result.thresholds[f"{method}/unstable_top_k_pairs"] = {
                "max": params["max_unstable_pairs"]}
            if params["max_unresolved_top1_share"] is not None:
                result.thresholds[f"{method}/unresolved_top1_share"] = {
                    "max": params["max_unresolved_top1_share"]}
            result.details[method] = details
        return result


def _row_error_correlation(info: dict[str, Any]) -> float:
    """The method's reported correlation of its rows' errors; 1 (the safe bound) without one."""
    rho = info.get("row_error_correlation")
    if isinstance(rho, (int, float)) and not isinstance(rho, bool) and np.isfinite(rho):
        return float(np.clip(rho, 0.0, 1.0))
    return 1.0


def rank_uncertainty(values: np.ndarray, se: np.ndarray, names: list[str], *, k: int,
                     z: float = 1.96, tie_tolerance: float = 0.05,
                     negligible_share: float = 0.01, row_error_correlation: float = 1.0
                     ) -> tuple[dict[str, float], dict[str, Any]]:
    """The figures and details of one method: ``values`` and ``se`` are ``(rows, features)``.

    Figures: ``unstable_top_k_pairs`` (adjacent pairs among the top k by mean |value| whose gap
    is below z * sqrt(se_a^2 + se_b^2), se from :func:`importance_standard_errors`; a pair the
    run shows within ``tie_tolerance`` of each other is a tie, and two negligible features, at
    most ``negligible_share`` of the top one, are not ranked: neither counts),
    ``top_k_stable`` (1 when none, else 0), ``max_relative_error`` (largest se / importance
    among the top k's non-negligible features), ``unresolved_top1_share`` (share of the rows
    that are not negligible whose largest |value| is within the errors of the second largest).
    All NaN when some standard error is not finite (the verdict is then 'unknown').
    """
    n_rows, d = values.shape
    k = max(1, min(int(k), d))
    details: dict[str, Any] = {"k": k, "z": float(z), "tie_tolerance": float(tie_tolerance),
                               "row_error_correlation": float(row_error_correlation)}
    if not np.all(np.isfinite(se)):
        nan = float("nan")
        details["reason"] = "some standard errors are not finite (too few samples to estimate)"
        return ({"unstable_top_k_pairs": nan, "top_k_stable": nan, "max_relative_error": nan,
                 "unresolved_top1_share": nan}, details)
    importance = np.abs(values).mean(axis=0)
    importance_se = importance_standard_errors(se, row_error_correlation)
    order = np.argsort(-importance, kind="stable")
    top = order[:k]
    floor = negligible_share * float(importance[order[0]])
    negligible = importance <= floor

    def pair(a: int, b: int) -> dict[str, Any]:
        gap = float(importance[a] - importance[b])
        bound = float(z * np.hypot(importance_se[a], importance_se[b]))
        both_negligible = bool(negligible[a] and negligible[b])
        # A tie: the run itself shows the two within tie_tolerance of each other, so it
        # claims no order between them (and no budget could resolve a true tie).
        tie = bool(gap < tie_tolerance * importance[a])
        return {"features": [names[a], names[b]], "gap": gap, "threshold": bound,
                "unstable": bool(gap < bound and not tie and not both_negligible),
                "tie": tie, "negligible": both_negligible}

    pairs = [pair(int(a), int(b)) for a, b in pairwise(top)]
    unstable = sum(p["unstable"] for p in pairs)
    ranked = [j for j in top if not negligible[j]]
    relative = [importance_se[j] / importance[j] for j in ranked if importance[j] > 0]
    details["top_k"] = [{"feature": names[j], "importance": float(importance[j]),
                         "standard_error": float(importance_se[j])} for j in top]
    details["pairs"] = pairs
    if d > k:  # whether the top-k *set* is resolved: informational, no verdict
        details["boundary"] = pair(int(order[k - 1]), int(order[k]))

    unresolved_share = 0.0
    if d >= 2 and n_rows:
        magnitude = np.abs(values)
        row_order = np.argsort(-magnitude, axis=1, kind="stable")[:, :2]
        rows = np.arange(n_rows)
        first, second = row_order[:, 0], row_order[:, 1]
        gap = magnitude[rows, first] - magnitude[rows, second]
        bound = z * np.hypot(se[rows, first], se[rows, second])
        largest = magnitude[rows, first]
        counted = largest > negligible_share * float(largest.max(initial=0.0))
        unresolved = (gap < bound) & counted
        unresolved_share = float(unresolved.sum() / max(1, counted.sum()))
        details["rows_counted"] = int(counted.sum())
        details["rows_unresolved_top1"] = int(unresolved.sum())

    figures = {"unstable_top_k_pairs": float(unstable),
               "top_k_stable": 1.0 if unstable == 0 else 0.0,
               "max_relative_error": float(max(relative)) if relative else 0.0,
               "unresolved_top1_share": unresolved_share}
    return figures, details
