"""The one function every entrance calls: model + data + options -> :class:`Explanations`."""

from __future__ import annotations

import logging
import platform
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from mlflow_xai.base import Attribution, ExplainTask
from mlflow_xai.checking import build_context, run_checks
from mlflow_xai.config import XaiConfig, check_methods, normalize_methods
from mlflow_xai.data import PreparedData, prepare_data
from mlflow_xai.device import PeakMemory, batch_rows, resolve_device
from mlflow_xai.errors import ModelPredictError, XaiError
from mlflow_xai.explanations import Explanations
from mlflow_xai.images import is_image_data, prepare_images
from mlflow_xai.model import ModelAdapter, resolve_model, set_training
from mlflow_xai.plugins import get_registry
from mlflow_xai.progress import progress_bar

_logger = logging.getLogger(__name__)

#: Rows per model call; bounds memory whatever the number of samples a method asks for.
PREDICT_CHUNK_ROWS = 65536


class CountingPredict:
    """float matrix -> chosen model output, in bounded chunks, counting every row evaluated."""

    def __init__(self, model: ModelAdapter, prepared: PreparedData) -> None:
        self.model = model
        self.encoder = prepared.encoder
        self.rows = 0

    def full(self, X: np.ndarray) -> np.ndarray:
        """All outputs, ``(m,)`` or ``(m, k)``."""
        parts = []
        for start in range(0, len(X), PREDICT_CHUNK_ROWS):
            chunk = X[start:start + PREDICT_CHUNK_ROWS]
            self.rows += len(chunk)
            parts.append(self.model.predict(self.encoder.decode(chunk)))
        return np.concatenate(parts, axis=0)

    def count(self, rows: int) -> None:
        """Rows a method pushed through the model by itself (e.g. Captum's DeepLift)."""
        self.rows += int(rows)

    def tensor(self, output_index: int | None, *, grad: bool = False) -> Callable | None:
        """Tensor in, tensor out on the device. Torch modules run natively (``grad=True`` keeps
        the graph); other models go through ``predict`` on the CPU."""
        import torch

        module = self.model.torch_module
        if module is None:
            if grad:
                return None
            scalar = self.scalar(output_index)

            def via_numpy(x: torch.Tensor) -> torch.Tensor:
                out = scalar(x.detach().cpu().numpy())
                return torch.as_tensor(out, dtype=torch.float64, device=x.device)

            return via_numpy

        def native(x: torch.Tensor) -> torch.Tensor:
            self.rows += len(x)
            set_training(module, False)
            shape = getattr(self.encoder, "shape", None)
            if shape is not None:  # images travel flattened between explainers
                x = x.reshape((-1, *shape))
            with torch.enable_grad() if grad else torch.inference_mode():
                out = module(x.to(torch.float32))
            if out.ndim == 2 and out.shape[1] == 1:
                out = out[:, 0]
            elif out.ndim == 2:
                out = out[:, 0 if output_index is None else output_index]
            return out if grad else out.to(torch.float64)

        return native

    def scalar(self, output_index: int | None) -> Callable[[np.ndarray], np.ndarray]:
        def predict(X: np.ndarray) -> np.ndarray:
            out = self.full(np.atleast_2d(np.asarray(X, dtype=np.float64)))
            return out if output_index is None else out[:, output_index]

        return predict


def run(model: Any, data: Any, config: XaiConfig, *,
        cancel: threading.Event | None = None) -> Explanations:
    """Explain ``data`` with every requested (or applicable) explainer.

    With ``config.timeout`` or a ``cancel`` event the work runs in a worker process that is
    stopped when the time is up (:class:`~mlflow_xai.errors.ExplainTimeout`) or the event is
    set (:class:`~mlflow_xai.errors.ExplainCancelled`); see :mod:`mlflow_xai.worker`.
    Otherwise it runs here, in this thread.
    """
    if config.timeout is not None or cancel is not None:
        from mlflow_xai.worker import run_in_worker

        config.validate()
        check_methods(config)  # option mistakes fail here, not after the worker's start-up
        return run_in_worker(model, data, config, timeout=config.timeout, cancel=cancel)
    with _blas_threads():
        return _run(model, data, config)


def _blas_threads() -> Any:
    """Cap BLAS threads (OpenBLAS/MKL inside scikit-learn's predict) while explaining: next to
    torch's own thread pool they oversubscribe the cores. Measured on 2 cores: 1,024 rows of a
    logistic regression through kernel_shap took 6.1 s with default BLAS threads, 1.0 s capped.
    ``MLFLOW_XAI_BLAS_THREADS`` sets the cap (``0`` leaves BLAS alone)."""
    import contextlib
    import os

    limit = int(os.environ.get("MLFLOW_XAI_BLAS_THREADS", "1"))
    if limit <= 0:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn depends on threadpoolctl
        return contextlib.nullcontext()
    return threadpool_limits(limits=limit, user_api="blas")


def _run(model: Any, data: Any, config: XaiConfig) -> Explanations:
    config.validate()
    started = time.time()
    registry = get_registry()
    no_explainers = isinstance(config.explainers, (list, tuple)) and not config.explainers
    requested = {} if no_explainers else normalize_methods(
        config.explainers, valid=registry.names("explainer"), kind="explainer")
    device = resolve_device(config.device)
    adapter = resolve_model(model, device=device)
    if config.model_type == "regressor":
        adapter.is_classifier = False
    if is_image_data(data):
        prepared = prepare_images(data, targets=config.targets, background=config.background,
                                  background_rows=config.background_rows,
                                  max_rows=config.max_rows, seed=config.seed)
    else:
        prepared = prepare_data(data, adapter, targets=config.targets,
                                background=config.background,
                                background_rows=config.background_rows,
                                max_rows=config.max_rows, seed=config.seed,
                                selection_rows=config.selection_rows if config.selectors else 0)
    counter = CountingPredict(adapter, prepared)
    outputs_all = _probe(counter, prepared)
    groups, output_labels, output_desc = _choose_outputs(outputs_all, adapter, config.output)
    probe_rows = counter.rows

    methods = requested if requested is not None else {n: {} for n in registry.names("explainer")}
    n_rows = len(prepared.X)
    results: dict[str, Attribution] = {}
    method_summary: dict[str, dict[str, Any]] = {}
    bar = progress_bar(total=n_rows * len(methods), desc="mlflow-xai", progress=config.progress)
    try:
        for name, params in methods.items():
            info = registry.get(name, "explainer")
            explainer = info.cls(**params)
            bar.set_description(f"mlflow-xai {name}")
            entry: dict[str, Any] = {"plugin": info.plugin, "package": info.package,
                                     "version": info.version, "params": explainer.get_params()}
            counter.rows = 0
            t0 = time.perf_counter()
            memory = PeakMemory(device)
            try:
                with memory:
                    attribution, reason = _run_method(explainer, prepared, adapter, counter,
                                                      groups, config, device, bar)
            except Exception as exc:
                if config.strict:
                    if isinstance(exc, XaiError):
                        raise
                    raise XaiError(f"explainer '{name}' failed: {type(exc).__name__}: {exc}. "
                                   "Pass strict=False to record the failure and continue "
                                   "with the other methods.") from exc
                _logger.warning("mlflow-xai: explainer %s failed: %s", name, exc)
                entry.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                             traceback=traceback.format_exc(limit=8))
                bar.update(n_rows)
            else:
                if attribution is None:
                    entry.update(status="skipped", reason=reason)
                    bar.update(n_rows)
                else:
                    results[name] = attribution
                    entry.update(status="ok", output_space=attribution.output_space,
                                 shapley=info.cls.shapley, local=info.cls.local,
                                 **attribution.info)
            entry["seconds"] = round(time.perf_counter() - t0, 4)
            entry["model_evals"] = int(counter.rows)
            entry["device"] = device
            entry["batch_rows"] = batch_rows(prepared.X.shape[1], device)
            entry["peak_memory_mb"] = memory.peak_mb
            method_summary[name] = entry
    finally:
        bar.close()

    f_x, row_outputs = _explained_outputs(outputs_all, groups)
    _add_efficiency(results, method_summary, registry, f_x)
    checks = {}
    if results:
        ctx = build_context(registry=registry, methods=methods, results=results, adapter=adapter,
                            prepared=prepared, counter=counter, config=config, device=device,
                            row_outputs=row_outputs, f_x=f_x)
        checks = run_checks(ctx, registry, config, counter)
    selections, selection_summary = {}, {}
    if config.selectors:
        from mlflow_xai.selecting import run_selectors

        if prepared.selection_X is None:
            raise XaiError("selectors choose among tabular features; this data is "
                           f"{prepared.facts.get('data_type', 'not tabular')}.")
        selections, selection_summary = run_selectors(
            registry=registry, config=config, prepared=prepared, adapter=adapter,
            counter=counter, device=device,
            output_index=groups[0][1] if len(groups) == 1 else None)
    summary = _summary(adapter, prepared, config, device, output_desc, method_summary,
                       started, probe_rows)
    if selection_summary:
        summary["selectors"] = selection_summary
    summary["checks"] = {n: {k: c.get(k) for k in ("status", "seconds", "model_evals",
                                                   "reason", "error") if c.get(k) is not None}
                         for n, c in checks.items()}
    expl = Explanations.build(prepared=prepared, results=results, output_labels=output_labels,
                              summary=summary, model=adapter)
    expl.checks = checks
    expl.selection = selections
    if config.policy is not None:
        from mlflow_xai.governance import evaluate_policy, load_policy

        expl.governance = evaluate_policy(load_policy(config.policy), expl)
        summary["governance"] = expl.governance["verdict"]
    return expl


def _probe(counter: CountingPredict, prepared: PreparedData) -> np.ndarray:
    """Predict every explained row once; a failing model gets a message that says what it got."""
    try:
        out = counter.full(prepared.X)
    except Exception as exc:
        columns = prepared.feature_names
        shown = columns if len(columns) <= 12 else columns[:12] + ["..."]
        raise ModelPredictError(
            f"the model's predict raised {type(exc).__name__}: {exc} (called with "
            f"{min(len(prepared.X), 65536)} rows and {len(columns)} columns {shown}). Check that "
            "the data has the columns and dtypes the model was trained on."
        ) from exc
    if len(out) != len(prepared.X):
        raise ModelPredictError(f"the model returned {len(out)} predictions for "
                                f"{len(prepared.X)} rows; it must return one per row.")
    if not np.all(np.isfinite(out)):
        raise ModelPredictError("the model returned NaN or infinite predictions for some rows; "
                                "explanations of such outputs are meaningless.")
    return out


def _choose_outputs(outputs: np.ndarray, adapter: ModelAdapter, output: Any
                    ) -> tuple[list[tuple[np.ndarray, int | None]], list[Any] | None, str]:
    """Decide which model output each row is explained for.

    Single output: that output. Two outputs (binary classifier): the positive class (index 1).
    More outputs: each row is explained for its predicted class (``output="predicted"``), unless
    ``output`` names a class label or an output index.
    """
    n = len(outputs)
    if outputs.ndim == 1:
        if output not in (None, 0, "predicted"):
            raise XaiError(f"output={output!r} was given, but the model has a single output.")
        return [(np.arange(n), None)], None, "single output"
    k = outputs.shape[1]
    labels = list(adapter.classes) if adapter.classes is not None and len(adapter.classes) == k \
        else list(range(k))
    if output is None:
        output = 1 if k == 2 else "predicted"
    if isinstance(output, str) and output == "predicted":
        winners = outputs.argmax(axis=1)
        groups = [(np.flatnonzero(winners == j), j) for j in range(k) if np.any(winners == j)]
        return groups, [labels[j] for j in winners], f"predicted class per row (of {k} outputs)"
    index = _output_index(output, labels, k)
    label = labels[index].item() if isinstance(labels[index], np.generic) else labels[index]
    return [(np.arange(n), index)], [labels[index]] * n, f"output {index} (class {label!r})"


def _output_index(output: Any, labels: list[Any], k: int) -> int:
    if output in labels and not isinstance(output, bool):
        return labels.index(output)
    if isinstance(output, (int, np.integer)) and not isinstance(output, bool) and 0 <= output < k:
        return int(output)
    raise XaiError(f"output={output!r} is neither a class label {labels} nor an output index "
                   f"0..{k - 1}. Pass one of those, or 'predicted'.")


def _run_method(explainer: Any, prepared: PreparedData, adapter: ModelAdapter,
                counter: CountingPredict, groups: list[tuple[np.ndarray, int | None]],
                config: XaiConfig, device: str, bar: Any) -> tuple[Attribution | None, str | None]:
    parts: list[tuple[np.ndarray, Attribution]] = []
    labels = list(adapter.classes) if adapter.classes is not None else None
    for rows, output_index in groups:
        task = ExplainTask(
            predict=counter.scalar(output_index),
            X=prepared.X[rows],
            background=prepared.background,
            feature_names=prepared.feature_names,
            model=adapter,
            output_index=output_index,
            output_label=labels[output_index] if labels and output_index is not None else None,
            to_model_input=prepared.encoder.decode,
            predict_tensor=counter.tensor(output_index),
            forward_grad=counter.tensor(output_index, grad=True),
            max_batch_rows=batch_rows(prepared.X.shape[1], device),
            targets=prepared.targets[rows] if prepared.targets is not None else None,
            seed=config.seed,
            device=device,
            data_type=prepared.facts.get("data_type", "tabular"),
            image_shape=getattr(prepared.encoder, "shape", None),
            on_rows_done=bar.update,
            count_model_rows=counter.count,
        )
        reason = explainer.supports(task)
        if reason:
            return None, reason
        parts.append((rows, explainer.explain(task)))
    return _merge(parts, len(prepared.X), prepared.X.shape[1]), None


def _merge(parts: list[tuple[np.ndarray, Attribution]], n: int, d: int) -> Attribution:
    if len(parts) == 1 and len(parts[0][0]) == n:
        return parts[0][1]
    first = parts[0][1]
    if first.values is None:  # global-only: weight each group's importance by its rows
        weights = np.array([len(r) for r, _ in parts], dtype=float)
        stacked = np.stack([a.global_importance() for _, a in parts])
        return Attribution(values=None, importance=weights @ stacked / weights.sum(),
                           output_space=first.output_space, info=first.info)

    def place(attr: str, shape: tuple[int, ...]) -> np.ndarray | None:
        if getattr(first, attr) is None:
            return None
        out = np.zeros(shape)
        for rows, a in parts:
            out[rows] = getattr(a, attr)
        return out

    return Attribution(values=place("values", (n, d)), base_values=place("base_values", (n,)),
                       outputs=place("outputs", (n,)), output_space=first.output_space,
                       info=first.info)


def _explained_outputs(outputs_all: np.ndarray, groups: list[tuple[np.ndarray, int | None]]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's explained output value f(x), and its output index (-1: single output)."""
    f_x = np.zeros(len(outputs_all))
    index_of_row = np.full(len(outputs_all), -1)
    for rows, index in groups:
        f_x[rows] = outputs_all[rows] if index is None else outputs_all[rows, index]
        index_of_row[rows] = -1 if index is None else index
    return f_x, index_of_row


def _add_efficiency(results: dict[str, Attribution], summary: dict[str, dict[str, Any]],
                    registry: Any, f_x: np.ndarray) -> None:
    """Record max |sum(phi) + base - f(x)| for every Shapley method (local accuracy)."""
    shapley = [n for n, a in results.items()
               if registry.get(n).cls.shapley and a.values is not None]
    for name in shapley:
        a = results[name]
        target = a.outputs if a.outputs is not None else f_x
        gap = np.abs(a.values.sum(axis=1) + a.base_values - target)
        summary[name]["efficiency_max_abs_gap"] = float(gap.max())


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for dist in ("mlflow-xai", "mlflow", "numpy", "pandas", "scikit-learn", "shap", "lime",
                 "torch"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def _summary(adapter: ModelAdapter, prepared: PreparedData, config: XaiConfig, device: str,
             output_desc: str, methods: dict[str, dict[str, Any]], started: float,
             probe_rows: int) -> dict[str, Any]:
    statuses = [m["status"] for m in methods.values()] or ["ok"]
    status = "failed" if "failed" in statuses else "ok"
    if statuses and all(s != "ok" for s in statuses):
        status = "failed" if "failed" in statuses else "skipped"
    return {
        "status": status,
        "versions": _versions(),
        "model": adapter.describe(),
        "device": device,
        "output": output_desc,
        "data": prepared.facts,
        "seed": config.seed,
        "probe_model_evals": int(probe_rows),
        "methods": methods,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 4),
    }
