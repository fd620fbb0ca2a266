"""Runs the checks after the explainers: builds the :class:`CheckContext` (the explain and
predict functions checks call) and collects figures, verdicts and costs."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from mlflow_xai.base import Attribution, CheckContext, build_task
from mlflow_xai.config import XaiConfig, normalize_methods
from mlflow_xai.data import PreparedData
from mlflow_xai.errors import XaiError
from mlflow_xai.model import ModelAdapter, resolve_model

_logger = logging.getLogger(__name__)


def build_context(*, registry: Any, methods: dict[str, dict], results: dict[str, Attribution],
                  adapter: ModelAdapter, prepared: PreparedData, counter: Any,
                  counter_for: Callable[[ModelAdapter], Any], config: XaiConfig, device: str,
                  row_outputs: np.ndarray, f_x: np.ndarray) -> CheckContext:
    """The :class:`CheckContext` of a run. ``counter`` counts the explained model's rows;
    ``counter_for(adapter)`` makes a counter for another model (``ctx.explain(model=...)``),
    whose rows are added to ``counter``'s."""

    def predict_rows(Z: np.ndarray) -> np.ndarray:
        n, k, d = Z.shape
        out = counter.full(Z.reshape(n * k, d))
        if out.ndim == 1:
            return out.reshape(n, k)
        out = out.reshape(n, k, -1)
        return out[np.arange(n), :, row_outputs]

    def explain(method: str, X: np.ndarray, rows: np.ndarray, *, seed: int | None = None,
                model: Any = None) -> np.ndarray:
        return explain_again(method, X, rows, seed=seed, model=model, registry=registry,
                             methods=methods, adapter=adapter, prepared=prepared,
                             counter=counter, counter_for=counter_for, config=config,
                             device=device, row_outputs=row_outputs)

    def predict_full_with(model: Any) -> Callable[[np.ndarray], np.ndarray]:
        runner = counter_for(resolve_model(model, device=adapter.device))

        def predict(X: np.ndarray) -> np.ndarray:
            before = runner.rows
            out = runner.full(X)
            counter.rows += runner.rows - before
            return out

        return predict

    categories = getattr(prepared.encoder, "categories", {}) or {}
    return CheckContext(
        X=prepared.X, background=prepared.background, feature_names=prepared.feature_names,
        results=results, shapley={m: registry.get(m).cls.shapley for m in results},
        stochastic={m: registry.get(m).cls.stochastic for m in results},
        predict_rows=predict_rows, explain=explain, outputs=f_x, model=adapter,
        seed=config.seed, data_type=prepared.facts.get("data_type", "tabular"),
        data_X=prepared.X, data_background=prepared.background,
        data_feature_names=list(prepared.feature_names),
        categories={j: list(categories[c]) for j, c in enumerate(prepared.feature_names)
                    if c in categories},
        targets=prepared.targets, predict_full=counter.full,
        predict_full_with=predict_full_with, to_model_input=prepared.encoder.decode,
        is_classifier=bool(adapter.is_classifier),
        classes=list(adapter.classes) if adapter.classes is not None else None)


def explain_again(method: str, X: np.ndarray, rows: np.ndarray, *, seed: int | None,
                  model: Any, registry: Any, methods: dict[str, dict], adapter: ModelAdapter,
                  prepared: PreparedData, counter: Any,
                  counter_for: Callable[[ModelAdapter], Any], config: XaiConfig, device: str,
                  row_outputs: np.ndarray,
                  attribute: Callable[[Any, Any], np.ndarray] | None = None) -> np.ndarray:
    """``ctx.explain``: re-run explainer ``method`` with its parameters on ``X`` (variants
    of the explained rows ``rows``), each row for its own explained output, with another seed
    or another model (run where the explained one runs; its rows are added to ``counter``).
    ``attribute(explainer, task)`` turns a task into values (default: ``explain(task)``; a
    grouped run explains over its groups)."""
    cls = registry.get(method).cls
    explainer = cls(**methods.get(method, {}))
    other = None if model is None else resolve_model(model, device=adapter.device)
    runner = counter if other is None else counter_for(other)
    attribute = attribute or (lambda e, task: e.explain(task).values)
    values = None
    outputs = row_outputs[rows]
    for index in np.unique(outputs):
        part = np.flatnonzero(outputs == index)
        task = build_task(
            counter=runner, prepared=prepared, model=adapter if other is None else other,
            device=device, X=X[part], output_index=None if index < 0 else int(index),
            targets=prepared.targets[rows][part] if prepared.targets is not None else None,
            seed=config.seed if seed is None else seed)
        got = attribute(explainer, task)
        if values is None:
            values = np.zeros((len(X), got.shape[1]))
        values[part] = got
    if other is not None:
        counter.rows += runner.rows
    return values


def checks_to_run(config: XaiConfig, registry: Any) -> dict[str, dict[str, Any]]:
    """The requested checks (name -> params); by default the cheap (``default``) ones."""
    if isinstance(config.checks, (list, tuple)) and not config.checks:
        return {}
    requested = normalize_methods(config.checks, valid=registry.names("check"), kind="check")
    if requested is None:
        requested = {n: {} for n in registry.names("check") if registry.get(n).cls.default}
    return requested


def run_checks(ctx: CheckContext, registry: Any, config: XaiConfig, counter: Any, *,
               on_check_done: Callable[[], None] = lambda: None) -> dict[str, dict[str, Any]]:
    """Every requested check (default: the cheap ones), each timed and costed."""
    requested = checks_to_run(config, registry)
    out: dict[str, dict[str, Any]] = {}
    for name, params in requested.items():
        check = registry.get(name, "check").cls(**params)
        entry: dict[str, Any] = {"params": check.get_params(),
                                 "severity": getattr(check, "severity", "error")}
        counter.rows = 0
        counter.stage = f"check '{name}'"  # named in a non-finite output error
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
        on_check_done()
    return out


def _finite(figures: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if v is not None and np.isfinite(v) else None)
            for k, v in figures.items()}
