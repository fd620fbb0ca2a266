"""Runs the checks after the explainers: builds the :class:`CheckContext` (the explain and
predict functions checks call) and collects figures, verdicts and costs."""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import numpy as np

from mlflow_xai.base import Attribution, CheckContext, ExplainTask
from mlflow_xai.config import XaiConfig, normalize_methods
from mlflow_xai.data import PreparedData
from mlflow_xai.device import batch_rows
from mlflow_xai.errors import XaiError

_logger = logging.getLogger(__name__)


def build_context(*, registry: Any, methods: dict[str, dict], results: dict[str, Attribution],
                  adapter: Any, prepared: PreparedData, counter: Any, config: XaiConfig,
                  device: str, row_outputs: np.ndarray, f_x: np.ndarray) -> CheckContext:
    from mlflow_xai.pipeline import CountingPredict

    labels = list(adapter.classes) if adapter.classes is not None else None

    def predict_rows(Z: np.ndarray) -> np.ndarray:
        n, k, d = Z.shape
        out = counter.full(Z.reshape(n * k, d))
        if out.ndim == 1:
            return out.reshape(n, k)
        out = out.reshape(n, k, -1)
        return out[np.arange(n), :, row_outputs]

    def explain(method: str, X: np.ndarray, rows: np.ndarray, *, seed: int | None = None,
                model: Any = None) -> np.ndarray:
        cls = registry.get(method).cls
        explainer = cls(**methods.get(method, {}))
        runner = counter if model is None else CountingPredict(model, prepared)
        values = None
        outputs = row_outputs[rows]
        for index in np.unique(outputs):
            part = np.flatnonzero(outputs == index)
            output_index = None if index < 0 else int(index)
            task = ExplainTask(
                predict=runner.scalar(output_index), X=X[part], background=prepared.background,
                feature_names=prepared.feature_names, model=model or adapter,
                output_index=output_index,
                output_label=labels[output_index] if labels and output_index is not None
                else None,
                to_model_input=prepared.encoder.decode,
                targets=prepared.targets[rows][part] if prepared.targets is not None else None,
                seed=config.seed if seed is None else seed, device=device,
                data_type=prepared.facts.get("data_type", "tabular"),
                image_shape=getattr(prepared.encoder, "shape", None),
                predict_tensor=runner.tensor(output_index),
                forward_grad=runner.tensor(output_index, grad=True),
                max_batch_rows=batch_rows(X.shape[1], device), count_model_rows=runner.count)
            got = explainer.explain(task).values
            if values is None:
                values = np.zeros((len(X), got.shape[1]))
            values[part] = got
        if model is not None:
            counter.rows += runner.rows
        return values

    return CheckContext(
        X=prepared.X, background=prepared.background, feature_names=prepared.feature_names,
        results=results, shapley={m: registry.get(m).cls.shapley for m in results},
        stochastic={m: registry.get(m).cls.stochastic for m in results},
        predict_rows=predict_rows, explain=explain, outputs=f_x, model=adapter,
        seed=config.seed, data_type=prepared.facts.get("data_type", "tabular"))


def run_checks(ctx: CheckContext, registry: Any, config: XaiConfig, counter: Any
               ) -> dict[str, dict[str, Any]]:
    """Every requested check (default: the cheap ones), each timed and costed."""
    if isinstance(config.checks, (list, tuple)) and not config.checks:
        return {}
    requested = normalize_methods(config.checks, valid=registry.names("check"), kind="check")
    if requested is None:
        requested = {n: {} for n in registry.names("check") if registry.get(n).cls.default}
    out: dict[str, dict[str, Any]] = {}
    for name, params in requested.items():
        check = registry.get(name, "check").cls(**params)
        entry: dict[str, Any] = {"params": check.get_params()}
        counter.rows = 0
        t0 = time.perf_counter()
        try:
            reason = check.supports(ctx)
            result = None if reason else check.run(ctx)
        except Exception as exc:
            if config.strict:
                if isinstance(exc, XaiError):
                    raise
                raise XaiError(f"check '{name}' failed: {type(exc).__name__}: {exc}. Pass "
                               "strict=False to record the failure and continue.") from exc
            _logger.warning("mlflow-xai: check %s failed: %s", name, exc)
            entry.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                         traceback=traceback.format_exc(limit=8))
        else:
            if result is None or result.status == "skipped":
                entry.update(status="skipped",
                             reason=reason or (result.reason if result else None))
            else:
                entry.update(status="ok", figures=_finite(result.figures),
                             thresholds=result.thresholds, verdicts=result.verdicts(),
                             details=result.details)
        entry["seconds"] = round(time.perf_counter() - t0, 4)
        entry["model_evals"] = int(counter.rows)
        out[name] = entry
    return out


def _finite(figures: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if v is not None and np.isfinite(v) else None)
            for k, v in figures.items()}
