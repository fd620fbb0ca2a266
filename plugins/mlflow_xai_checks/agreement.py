"""Cross-method agreement (Krishna et al., 2022, "The Disagreement Problem")."""

from __future__ import annotations

from itertools import combinations
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Check, CheckContext, CheckResult

from ._stats import default_k, spearman


def _row_agreement(a: np.ndarray, b: np.ndarray, k: int) -> dict[str, float]:
    """Mean over rows of feature, rank and sign agreement in the top k by |attribution|."""
    top_a = np.argsort(-np.abs(a), axis=1, kind="stable")[:, :k]
    top_b = np.argsort(-np.abs(b), axis=1, kind="stable")[:, :k]
    feature, rank, sign = [], [], []
    for i in range(len(a)):
        common = set(top_a[i]) & set(top_b[i])
        feature.append(len(common) / k)
        rank.append(float(np.mean(top_a[i] == top_b[i])))
        sign.append(sum(np.sign(a[i, j]) == np.sign(b[i, j]) for j in common) / k)
    return {"feature_agreement": float(np.mean(feature)), "rank_agreement": float(np.mean(rank)),
            "sign_agreement": float(np.mean(sign))}


class Agreement(Check):
    name: ClassVar[str] = "agreement"
    description: ClassVar[str] = (
        "Method x method agreement over all explainers that ran: top-k feature, rank and sign "
        "agreement per row, and Spearman correlation of global importance. No model calls.")
    default: ClassVar[bool] = True
    cost: ClassVar[str] = "no model evaluations"
    defaults: ClassVar[dict[str, Any]] = {"k": None, "min_rank_correlation": 0.5}
    param_types: ClassVar[dict[str, str]] = {"k": "int > 0 | None",
                                         "min_rank_correlation": "float in [-1, 1]"}

    def run(self, ctx: CheckContext) -> CheckResult:
        params = self.validate_params()
        methods = list(ctx.results)
        if len(methods) < 2:
            return CheckResult(status="skipped", reason="fewer than two explainers ran")
        k = params["k"] or default_k(len(ctx.feature_names))
        importance = {m: a.global_importance() for m, a in ctx.results.items()}
        matrix = {m: {n: 1.0 for n in methods} for m in methods}
        result = CheckResult()
        for a, b in combinations(methods, 2):
            rho = spearman(importance[a], importance[b])
            matrix[a][b] = matrix[b][a] = rho
            pair = f"{a}__{b}"
            result.figures[f"{pair}/rank_correlation"] = rho
            va, vb = ctx.results[a].values, ctx.results[b].values
            if va is not None and vb is not None:
                # A verdict only for two attributions of the same output: a global measure in
                # other units (permutation importance: loss increase) may rank differently
                # for good reasons, so that pair gets its figure but no pass/fail.
                result.thresholds[f"{pair}/rank_correlation"] = {
                    "min": params["min_rank_correlation"]}
            if va is not None and vb is not None and ctx.data_type == "tabular":
                for name, value in _row_agreement(va, vb, k).items():
                    result.figures[f"{pair}/{name}"] = value
        result.details = {"k": k, "methods": methods, "rank_correlation_matrix": matrix}
        return result
