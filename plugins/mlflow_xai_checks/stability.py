"""Stability checks: seeds, input perturbations, bootstrap of rows, completeness."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Check, CheckContext, CheckResult

from ._stats import background_scale, default_k, jaccard, kendall, pairwise_mean, spearman, top_k


def _rows(ctx: CheckContext, max_rows: int) -> np.ndarray:
    rng = np.random.default_rng(ctx.seed)
    n = len(ctx.X)
    return np.sort(rng.choice(n, size=min(n, max_rows), replace=False))


class SeedStability(Check):
    name: ClassVar[str] = "seed_stability"
    description: ClassVar[str] = (
        "Re-runs each stochastic explainer with other seeds: Spearman and Kendall correlation "
        "of global importance, top-k Jaccard, and the per-row coefficient of variation.")
    cost: ClassVar[str] = "(n_seeds - 1) x the explainer's cost on max_rows rows"
    defaults: ClassVar[dict[str, Any]] = {"n_seeds": 3, "max_rows": 50, "k": None,
                                          "min_spearman": 0.8}
    param_types: ClassVar[dict[str, str]] = {"n_seeds": "int >= 2", "max_rows": "int >= 1",
                                         "k": "int > 0 | None",
                                         "min_spearman": "float in [-1, 1]"}

    def run(self, ctx: CheckContext) -> CheckResult:
        params = self.validate_params()
        rows = _rows(ctx, params["max_rows"])
        methods = [m for m in ctx.local_methods if ctx.stochastic.get(m)]
        if not methods:
            return CheckResult(status="skipped", reason="no stochastic explainer ran")
        k = params["k"] or default_k(len(ctx.feature_names))
        result = CheckResult()
        for method in methods:
            runs = [ctx.results[method].values[rows]]
            runs += [ctx.explain(method, ctx.X[rows], rows, seed=ctx.seed + 1000 * (i + 1))
                     for i in range(params["n_seeds"] - 1)]
            importances = [np.abs(r).mean(axis=0) for r in runs]
            stacked = np.stack(runs)                                  # (seeds, rows, features)
            scale = np.abs(stacked).mean(axis=0)
            cv = np.where(scale > 1e-12, stacked.std(axis=0) / np.maximum(scale, 1e-12), 0.0)
            figures = {
                "spearman": pairwise_mean(importances, spearman),
                "kendall": pairwise_mean(importances, kendall),
                "top_k_jaccard": pairwise_mean([top_k(i, k) for i in importances], jaccard),
                "row_cv": float(cv.mean()),
            }
            for name, value in figures.items():
                result.figures[f"{method}/{name}"] = value
            result.thresholds[f"{method}/spearman"] = {"min": params["min_spearman"]}
            result.details[method] = {"seeds": params["n_seeds"], "rows": int(len(rows)),
                                      "importance_per_seed": [i.tolist() for i in importances]}
        return result


class InputRobustness(Check):
    name: ClassVar[str] = "input_robustness"
    description: ClassVar[str] = (
        "Explanations of slightly perturbed inputs (radius relative to each feature's scale): "
        "max- and avg-sensitivity, a local Lipschitz estimate, and relative input stability.")
    cost: ClassVar[str] = "n_perturbations x the explainer's cost on max_rows rows"
    defaults: ClassVar[dict[str, Any]] = {"radius": 0.05, "n_perturbations": 5,
                                          "max_rows": 20, "methods": None,
                                          "max_avg_sensitivity": 0.5}
    param_types: ClassVar[dict[str, str]] = {"radius": "float > 0", "n_perturbations": "int >= 1",
                                         "max_rows": "int >= 1", "methods": "list[str] | None",
                                         "max_avg_sensitivity": "float >= 0"}

    def run(self, ctx: CheckContext) -> CheckResult:
        params = self.validate_params()
        rows = _rows(ctx, params["max_rows"])
        methods = params["methods"] or ctx.local_methods
        rng = np.random.default_rng(ctx.seed + 7)
        scale = background_scale(ctx.background)
        X = ctx.X[rows]
        # A missing value stays missing under perturbation (NaN + noise is NaN anyway); zero
        # noise there keeps the input distances finite. |x| of a missing value counts as 1.
        present = ~np.isnan(X)
        magnitude = np.where(present, np.abs(X), 1.0)
        result = CheckResult()
        for method in methods:
            phi = ctx.results[method].values[rows]
            sens, lips, ris = [], [], []
            for _ in range(params["n_perturbations"]):
                noise = rng.uniform(-1, 1, size=X.shape) * params["radius"] * scale * present
                phi_p = ctx.explain(method, X + noise, rows, seed=ctx.seed)
                diff = np.linalg.norm(phi_p - phi, axis=1)
                sens.append(diff / np.maximum(np.linalg.norm(phi, axis=1), 1e-12))
                lips.append(diff / np.maximum(np.linalg.norm(noise / scale, axis=1), 1e-12))
                rel_phi = np.linalg.norm((phi_p - phi) / np.maximum(np.abs(phi), 1e-6), axis=1)
                rel_x = np.linalg.norm(noise / np.maximum(magnitude, 1e-6), axis=1)
                ris.append(rel_phi / np.maximum(rel_x, 1e-6))
            sens_arr = np.stack(sens)
            result.figures.update({
                f"{method}/max_sensitivity": float(sens_arr.max(axis=0).mean()),
                f"{method}/avg_sensitivity": float(sens_arr.mean()),
                f"{method}/lipschitz": float(np.stack(lips).max()),
                f"{method}/relative_input_stability": float(np.stack(ris).max()),
            })
            result.thresholds[f"{method}/avg_sensitivity"] = {
                "max": params["max_avg_sensitivity"]}
        result.details = {"radius": params["radius"], "rows": int(len(rows)),
                          "perturbations": params["n_perturbations"]}
        return result


class BootstrapImportance(Check):
    name: ClassVar[str] = "bootstrap_importance"
    description: ClassVar[str] = (
        "Bootstrap confidence intervals of global importance over resampled explained rows, "
        "and how often the top feature stays on top. No model calls.")
    default: ClassVar[bool] = True
    cost: ClassVar[str] = "no model evaluations"
    defaults: ClassVar[dict[str, Any]] = {"n_resamples": 200, "level": 0.95}
    param_types: ClassVar[dict[str, str]] = {"n_resamples": "int >= 1", "level": "float in (0, 1)"}

    def run(self, ctx: CheckContext) -> CheckResult:
        params = self.validate_params()
        rng = np.random.default_rng(ctx.seed + 11)
        result = CheckResult()
        alpha = (1 - params["level"]) / 2
        for method in ctx.local_methods:
            values = np.abs(ctx.results[method].values)
            n = len(values)
            idx = rng.integers(0, n, size=(params["n_resamples"], n))
            boots = values[idx].mean(axis=1)                       # (resamples, features)
            low, high = np.quantile(boots, [alpha, 1 - alpha], axis=0)
            point = values.mean(axis=0)
            top = int(np.argmax(point))
            result.figures[f"{method}/top1_stability"] = float(
                np.mean(boots.argmax(axis=1) == top))
            result.figures[f"{method}/max_relative_ci_width"] = float(
                np.max((high - low) / np.maximum(point, 1e-12)))
            result.details[method] = {
                name: {"importance": float(point[j]), "low": float(low[j]),
                       "high": float(high[j])}
                for j, name in enumerate(ctx.feature_names)}
        if not result.details:
            return CheckResult(status="skipped", reason="no local explainer ran")
        return result


class Completeness(Check):
    name: ClassVar[str] = "completeness"
    description: ClassVar[str] = (
        "Shapley methods: |sum of attributions - (f(x) - E[f(background)])| per row "
        "(local accuracy). No model calls.")
    default: ClassVar[bool] = True
    cost: ClassVar[str] = "no model evaluations"
    defaults: ClassVar[dict[str, Any]] = {"tolerance": 1e-6}
    param_types: ClassVar[dict[str, str]] = {"tolerance": "float >= 0"}

    def run(self, ctx: CheckContext) -> CheckResult:
        params = self.validate_params()
        result = CheckResult()
        for method, attribution in ctx.results.items():
            if not ctx.shapley.get(method) or attribution.values is None:
                continue
            target = attribution.outputs if attribution.outputs is not None else ctx.outputs
            gap = np.abs(attribution.values.sum(axis=1) + attribution.base_values - target)
            scale = np.abs(target - attribution.base_values).mean() + 1e-12
            result.figures[f"{method}/max_gap"] = float(gap.max())
            result.figures[f"{method}/mean_relative_gap"] = float(gap.mean() / scale)
            result.thresholds[f"{method}/mean_relative_gap"] = {"max": params["tolerance"]}
        if not result.figures:
            return CheckResult(status="skipped", reason="no Shapley explainer ran")
        return result
