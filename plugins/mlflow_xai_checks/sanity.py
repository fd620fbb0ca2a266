"""Model randomization sanity check (Adebayo et al., 2018): explanations must change when the
model's weights are randomized, layer by layer from the output down."""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Check, CheckContext, CheckResult

from ._stats import spearman


class ModelRandomization(Check):
    name: ClassVar[str] = "model_randomization"
    description: ClassVar[str] = (
        "Cascading weight randomization of a torch model (top layer first): rank correlation "
        "of |attributions| with the original's after each step; explanations must change.")
    cost: ClassVar[str] = "layers x the gradient explainers' cost on max_rows rows"
    defaults: ClassVar[dict[str, Any]] = {"max_rows": 50, "max_correlation": 0.5}
    param_types: ClassVar[dict[str, str]] = {"max_rows": "int >= 1", "max_correlation": "float in [-1, 1]"}

    def supports(self, ctx: CheckContext) -> str | None:
        if ctx.torch_module is None:
            return "model randomization needs a torch nn.Module"
        return None

    def run(self, ctx: CheckContext) -> CheckResult:
        import torch

        params = self.validate_params()
        module = ctx.torch_module
        layers = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
        if not layers:
            return CheckResult(status="skipped", reason="the module has no parameters")
        methods = ctx.local_methods
        rows = np.arange(min(len(ctx.X), params["max_rows"]))
        generator = torch.Generator().manual_seed(ctx.seed)
        result = CheckResult()
        cascade: dict[str, list[float]] = {m: [] for m in methods}
        randomized = copy.deepcopy(module)
        random_layers = [m for m in randomized.modules()
                         if any(True for _ in m.parameters(recurse=False))]
        for layer in reversed(random_layers):
            with torch.no_grad():
                for p in layer.parameters(recurse=False):
                    p.copy_(torch.randn(p.shape, generator=generator) * p.std(unbiased=False).clamp(min=1e-3))
            for method in methods:
                original = np.abs(ctx.results[method].values[rows])
                new = np.abs(ctx.explain(method, ctx.X[rows], rows, model=randomized))
                cascade[method].append(float(np.mean(
                    [spearman(original[i], new[i]) for i in range(len(rows))])))
        for method, corr in cascade.items():
            result.figures[f"{method}/final_rank_correlation"] = corr[-1]
            result.figures[f"{method}/mean_rank_correlation"] = float(np.mean(corr))
            result.thresholds[f"{method}/final_rank_correlation"] = {
                "max": params["max_correlation"]}
        result.details = {"layers": len(layers), "cascade": cascade, "rows": int(len(rows))}
        return result
