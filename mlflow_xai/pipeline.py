"""The one function every entrance calls: model + data + options -> :class:`Explanations`."""

from __future__ import annotations

import inspect
import logging
import platform
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from mlflow_xai import groups as grouping
from mlflow_xai.base import Attribution, CheckContext, build_task
from mlflow_xai.checking import build_context, checks_to_run, explain_again, run_checks
from mlflow_xai.config import XaiConfig, check_methods
from mlflow_xai.data import PreparedData, prepare_data
from mlflow_xai.device import PeakMemory, batch_rows, resolve_device
from mlflow_xai.errors import ModelPredictError, XaiError
from mlflow_xai.explanations import Explanations
from mlflow_xai.groups import FeatureGroups
from mlflow_xai.images import is_image_data, prepare_images
from mlflow_xai.model import ModelAdapter, resolve_model, set_training
from mlflow_xai.planner import Plan, applicability, make_plan, requested_methods, wants_plan
from mlflow_xai.plugins import get_registry
from mlflow_xai.progress import progress_bar
from mlflow_xai.units import model_output_unit, unit_of

_logger = logging.getLogger(__name__)

#: Rows per model call; bounds memory whatever the number of samples a method asks for.
PREDICT_CHUNK_ROWS = 65536


class NonFiniteOutputError(ModelPredictError):
    """The model returned NaN or infinite outputs (``rows`` of ``of`` rows it was given)."""

    def __init__(self, message: str, *, rows: int, of: int) -> None:
        super().__init__(message)
        self.rows, self.of = rows, of


def non_finite_rows(out: Any) -> int:
    """Rows of a model output ``(m,)`` / ``(m, k, ...)`` with any NaN or infinite value."""
    out = np.asarray(out)
    if out.dtype.kind in "biu":
        return 0  # integers and booleans are always finite
    # Every model call passes here: one sum is a fast screen (it is non-finite when any value
    # is, or on overflow); the exact per-row count runs only when the screen fails.
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(out.sum()):
            return 0
    if out.ndim == 0 or len(out) == 0:
        return 0 if out.ndim else int(not np.isfinite(out))
    return int((~np.isfinite(out)).reshape(len(out), -1).any(axis=1).sum())


class CountingPredict:
    """float matrix -> chosen model output, in bounded chunks, counting every row evaluated.

    Every model call of a run goes through here, so here non-finite outputs are refused: a NaN
    or infinite output (typically on perturbed rows the model never saw) raises
    :class:`NonFiniteOutputError` (a :class:`~mlflow_xai.errors.ModelPredictError`) instead of
    silently making every attribution NaN. ``stage`` (for example ``"explainer 'lime'"``), when
    set, is named in that message.
    """

    def __init__(self, model: ModelAdapter, prepared: PreparedData) -> None:
        self.model = model
        self.encoder = prepared.encoder
        self.rows = 0
        self.stage: str | None = None

    def full(self, X: np.ndarray) -> np.ndarray:
        """All outputs, ``(m,)`` or ``(m, k)``; raises when any of them is NaN or infinite."""
        parts = []
        for start in range(0, len(X), PREDICT_CHUNK_ROWS):
            chunk = X[start:start + PREDICT_CHUNK_ROWS]
            self.rows += len(chunk)
            parts.append(self.model.predict(self.encoder.decode(chunk)))
        out = np.concatenate(parts, axis=0)
        self.check_finite(out, len(X))
        return out

    def check_finite(self, out: Any, rows: int) -> None:
        """Raise :class:`NonFiniteOutputError` when a row of ``out`` is NaN or infinite."""
        bad = non_finite_rows(out)
        if bad:
            self.refuse_non_finite(bad, rows)

    def refuse_non_finite(self, bad: int, rows: int) -> None:
        """Raise :class:`NonFiniteOutputError` for ``bad`` of ``rows`` non-finite outputs."""
        if bad:
            where = f" during {self.stage}" if self.stage else ""
            raise NonFiniteOutputError(
                f"the model returned NaN or infinite outputs for {bad} of {rows} rows it was "
                f"given{where}. Explainers evaluate the model on perturbed rows (features "
                "replaced by background values), and attributions of non-finite outputs are "
                "meaningless. Make predict return finite values for every input in the data's "
                "range (for example clip or impute inside the model), or pass a background "
                "closer to the explained rows.", rows=bad, of=rows)

    def count(self, rows: int) -> None:
        """Rows a method pushed through the model by itself (e.g. Captum's DeepLift)."""
        self.rows += int(rows)

    def tensor(self, output_index: int | None, *, grad: bool = False) -> Callable | None:
        """Tensor in, tensor out on the device. Torch modules run natively (``grad=True`` keeps
        the graph); other models go through ``predict`` on the CPU. torch is imported only
        when a method calls the function (a tree model explained by Tree SHAP never needs it)."""
        module = self.model.torch_module
        if module is None:
            if grad:
                return None
            scalar = self.scalar(output_index)

            def via_numpy(x: Any) -> Any:
                import torch

                out = scalar(x.detach().cpu().numpy())
                return torch.as_tensor(out, dtype=torch.float64, device=x.device)

            return via_numpy
        import torch

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
            finite = torch.isfinite(out.detach())
            if not bool(finite.all()):
                self.refuse_non_finite(
                    int(finite.logical_not().reshape(len(finite), -1).any(1).sum()), len(x))
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
    """The computation, as named steps; each step is a function below, in this order."""
    config.validate()
    started = time.time()
    registry = get_registry()
    device, adapter = _resolve_model_and_device(model, config)
    prepared = _prepare_data(data, adapter, config)
    if config.selectors and prepared.facts.get("missing_values"):
        from mlflow_xai.selecting import check_missing_values

        # Before any explainer runs: a selector that needs complete data fails now.
        check_missing_values(list(_selector_names(config, registry)), registry, prepared)
    counter = CountingPredict(adapter, prepared)
    outputs = _probe_outputs(counter, prepared, adapter, config)
    requested_checks = checks_to_run(config, registry)
    feature_groups = _resolve_groups(config, prepared)
    plan = None
    if wants_plan(config):
        plan = make_plan(config=config, registry=registry, prepared=prepared, adapter=adapter,
                         counter=counter, device=device, output_index=outputs.groups[0][1],
                         check_rows_per_row=_check_cost_per_row(
                             requested_checks, registry, len(prepared.X), prepared.X.shape[1]),
                         groups=feature_groups)
        feature_groups = plan.groups
        prepared, outputs = _apply_plan(plan, prepared, outputs, adapter, config)
        methods = plan.methods
    else:
        methods = _requested_explainers(config, registry)
    work_started = time.perf_counter()
    bar = progress_bar(total=len(prepared.X) * (_applicable_count(methods, registry, prepared,
                                                                  adapter, counter, outputs,
                                                                  device, config,
                                                                  feature_groups)
                                                + len(requested_checks)),
                       desc="mlflow-xai", progress=config.progress)
    try:
        results, method_summary = _run_explainers(methods, registry, prepared, adapter,
                                                  counter, outputs.groups, config, device, bar,
                                                  feature_groups)
        f_x, row_outputs = _explained_outputs(outputs.values, outputs.groups)
        _add_efficiency(results, method_summary, registry, f_x)
        checks = _run_checks(results, methods, registry, prepared, adapter, counter, config,
                             device, row_outputs, f_x, bar, feature_groups)
    finally:
        bar.close()
    work_seconds = time.perf_counter() - work_started
    selections, selection_summary = _run_selectors(registry, prepared, adapter, counter,
                                                   outputs.groups, config, device)
    summary = _summary(adapter, prepared, config, device, outputs.description, method_summary,
                       started, outputs.probe_rows, selectors=selection_summary, checks=checks)
    if plan is not None:
        summary["plan"] = {**plan.record, "spent_s": round(work_seconds, 3)}
        _warn_over_budget(summary["plan"])
    if feature_groups is not None:
        summary["feature_groups"] = feature_groups.record()
    from mlflow_xai.report import headline

    summary["headline"] = headline(summary, checks)
    expl = Explanations.build(prepared=_named_by_groups(prepared, feature_groups),
                              results=results, output_labels=outputs.labels,
                              summary=summary, model=adapter)
    expl.checks = checks
    expl.selection = selections
    _apply_policy(expl, summary, config)
    return expl


def _resolve_groups(config: XaiConfig, prepared: PreparedData) -> FeatureGroups | None:
    """The groups of columns asked for with ``feature_groups=`` (None: single columns)."""
    return grouping.for_data(config.feature_groups, prepared, max_groups=config.max_groups)


def _named_by_groups(prepared: PreparedData, feature_groups: FeatureGroups | None
                     ) -> PreparedData:
    """``prepared`` whose feature names are the groups', for the result tables of a grouped
    explanation (the rows and their columns are unchanged)."""
    if feature_groups is None:
        return prepared
    import dataclasses

    encoder = dataclasses.replace(prepared.encoder, columns=list(feature_groups.names))
    return dataclasses.replace(prepared, encoder=encoder)


def _grouped_context(ctx: CheckContext, feature_groups: FeatureGroups, *, registry: Any,
                     methods: dict[str, dict[str, Any]], adapter: ModelAdapter,
                     prepared: PreparedData, counter: CountingPredict, config: XaiConfig,
                     device: str, row_outputs: np.ndarray) -> CheckContext:
    """The checks' view of a grouped explanation: one feature per group, whose value is the
    group's presence (1: its columns as in the row; 0: at their background mean, which is how
    the checks remove a feature; in between: interpolated). The removal checks (deletion and
    insertion, infidelity, faithfulness correlation) then remove whole groups, and the checks
    that explain again (seed stability, robustness, randomisation) explain over the groups."""
    import dataclasses

    X = prepared.X
    n, G = len(X), feature_groups.n_groups
    removal = grouping.removal_values(prepared.background)

    def to_columns(presence: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return grouping.expand_presence(presence, X[rows], removal, feature_groups)

    def predict_rows(Z: np.ndarray) -> np.ndarray:
        if Z.shape[0] != n:
            raise ValueError(f"predict_rows takes variants of all {n} explained rows, got "
                             f"{Z.shape[0]}.")
        return ctx.predict_rows(to_columns(Z, np.arange(n)))

    def explain(method: str, presence: np.ndarray, rows: np.ndarray, *,
                seed: int | None = None, model: Any = None) -> np.ndarray:
        return explain_again(
            method, to_columns(presence, rows), rows, seed=seed, model=model, registry=registry,
            methods=methods, adapter=adapter, prepared=prepared, counter=counter,
            counter_for=lambda other: CountingPredict(other, prepared), config=config,
            device=device, row_outputs=row_outputs,
            attribute=lambda e, task: grouping.explain(e, task, feature_groups).values)

    return dataclasses.replace(ctx, X=np.ones((n, G)),
                               background=np.zeros((len(prepared.background), G)),
                               feature_names=list(feature_groups.names),
                               predict_rows=predict_rows, explain=explain)


def _requested_explainers(config: XaiConfig, registry: Any) -> dict[str, dict[str, Any]]:
    """Explainer name -> parameters: the requested ones (``[]``: none), default all."""
    requested = requested_methods(config, registry)
    if requested is not None:
        return requested
    return {n: {} for n in registry.names("explainer")
            if getattr(registry.get(n).cls, "runs_by_default", True)}


def _selector_names(config: XaiConfig, registry: Any) -> list[str]:
    from mlflow_xai.config import normalize_methods

    return list(normalize_methods(config.selectors, valid=registry.names("selector"),
                                  kind="selector") or {})


def _resolve_model_and_device(model: Any, config: XaiConfig) -> tuple[str, ModelAdapter]:
    device = resolve_device(config.device)
    adapter = resolve_model(model, device=device)
    # The caller's word (model_type, e.g. from mlflow.models.evaluate) settles what the
    # model's own type cannot tell: a plain function or a generic pyfunc.
    if config.model_type == "regressor":
        adapter.is_classifier = False
    elif config.model_type == "classifier":
        adapter.is_classifier = True
    return device, adapter


def _prepare_data(data: Any, adapter: ModelAdapter, config: XaiConfig) -> PreparedData:
    if is_image_data(data):
        return prepare_images(data, targets=config.targets, background=config.background,
                              background_rows=config.background_rows,
                              max_rows=config.max_rows, seed=config.seed)
    return prepare_data(data, adapter, targets=config.targets, background=config.background,
                        background_rows=config.background_rows, max_rows=config.max_rows,
                        seed=config.seed,
                        selection_rows=config.selection_rows if config.selectors else 0)


class _Outputs(NamedTuple):
    """The model's outputs on the explained rows and which one each row is explained for."""

    values: np.ndarray                             # (n,) or (n, k): every output, every row
    groups: list[tuple[np.ndarray, int | None]]    # (rows, output index) per explained output
    labels: list[Any] | None                       # each row's explained class label
    description: str                               # for summary.json
    probe_rows: int                                # model rows the probe evaluated


def _probe_outputs(counter: CountingPredict, prepared: PreparedData, adapter: ModelAdapter,
                   config: XaiConfig) -> _Outputs:
    values = _probe(counter, prepared)
    groups, labels, description = _choose_outputs(values, adapter, config.output)
    return _Outputs(values, groups, labels, description, counter.rows)


def _run_explainers(methods: dict[str, dict[str, Any]], registry: Any, prepared: PreparedData,
                    adapter: ModelAdapter, counter: CountingPredict,
                    groups: list[tuple[np.ndarray, int | None]], config: XaiConfig, device: str,
                    bar: Any, feature_groups: FeatureGroups | None = None
                    ) -> tuple[dict[str, Attribution], dict[str, dict[str, Any]]]:
    """Every explainer in turn, under the run's progress bar: (results, summary entry per
    method). With ``feature_groups`` every result has one column per group."""
    results: dict[str, Attribution] = {}
    summary: dict[str, dict[str, Any]] = {}
    for name, params in methods.items():
        attribution, summary[name] = _run_explainer(name, params, registry, prepared,
                                                    adapter, counter, groups, config,
                                                    device, bar, feature_groups)
        if attribution is not None:
            results[name] = attribution
    return results, summary


def _applicable_count(methods: dict[str, dict[str, Any]], registry: Any,
                      prepared: PreparedData, adapter: ModelAdapter, counter: CountingPredict,
                      outputs: _Outputs, device: str, config: XaiConfig,
                      feature_groups: FeatureGroups | None = None) -> int:
    """How many of ``methods`` apply (the progress bar counts only work that will be done)."""
    if not methods:
        return 0
    rows, index = outputs.groups[0]
    task = build_task(counter=counter, prepared=prepared, model=adapter, device=device,
                      X=prepared.X[rows[:1]], output_index=index, seed=config.seed,
                      targets=None if prepared.targets is None else prepared.targets[rows[:1]])
    return sum(reason is None for reason in
               applicability(methods, registry, task, feature_groups).values())


def _check_cost_per_row(checks: dict[str, dict[str, Any]], registry: Any, n_rows: int,
                        n_features: int | None = None) -> float:
    """Model rows per explained row the checks will evaluate (one local method assumed)."""
    total = 0.0
    for name, params in checks.items():
        check = registry.get(name, "check").cls(**params)
        sizes: dict[str, Any] = {"n_rows": max(n_rows, 1), "n_methods": 1}
        # n_features came later: a third-party check written before it still gets its say.
        if "n_features" in inspect.signature(check.estimated_model_rows).parameters:
            sizes["n_features"] = n_features
        try:
            rows = check.estimated_model_rows(check.validate_params(), **sizes)
        except Exception:
            rows = None
        total += (rows or 0.0) / max(n_rows, 1)
    return total


def _apply_plan(plan: Plan, prepared: PreparedData, outputs: _Outputs, adapter: ModelAdapter,
                config: XaiConfig) -> tuple[PreparedData, _Outputs]:
    """Keep the rows and background rows the plan chose (a seeded sample of each)."""
    if plan.rows is None and plan.background is None:
        return prepared, outputs
    import dataclasses

    facts = dict(prepared.facts)
    changes: dict[str, Any] = {}
    if plan.background is not None:
        changes["background"] = prepared.background[plan.background]
        facts["background_rows"] = len(plan.background)
        facts["background_source"] = (f"{len(plan.background)} of "
                                      f"{facts.get('background_source')}, sampled by the "
                                      f"time budget's plan (seed {config.seed})")
    values = outputs.values
    if plan.rows is not None:
        rows = plan.rows
        changes.update(frame=prepared.frame.iloc[rows], X=prepared.X[rows],
                       targets=None if prepared.targets is None else prepared.targets[rows])
        facts["rows_explained"] = len(rows)
        facts["rows_sampled"] = True
        facts["rows_planned_from"] = len(prepared.X)
        values = values[rows]
    prepared = dataclasses.replace(prepared, facts=facts, **changes)
    groups, labels, description = _choose_outputs(values, adapter, config.output)
    return prepared, _Outputs(values, groups, labels, description, outputs.probe_rows)


def _warn_over_budget(plan: dict[str, Any]) -> None:
    budget, spent = plan.get("budget_s"), plan.get("spent_s")
    if budget and spent and spent > 1.5 * budget:
        _logger.warning("mlflow-xai: the explanation took %.1f s, over its budget of %.1f s "
                        "(the plan's estimate was off); lower max_rows or budget_s, or name "
                        "cheaper explainers.", spent, budget)


def _run_explainer(name: str, params: dict[str, Any], registry: Any, prepared: PreparedData,
                   adapter: ModelAdapter, counter: CountingPredict,
                   groups: list[tuple[np.ndarray, int | None]], config: XaiConfig, device: str,
                   bar: Any, feature_groups: FeatureGroups | None = None
                   ) -> tuple[Attribution | None, dict[str, Any]]:
    """One explainer, timed and costed: (its attribution or None, its summary entry)."""
    n_rows = len(prepared.X)
    info = registry.get(name, "explainer")
    explainer = info.cls(**params)
    bar.set_description(f"mlflow-xai {name}")
    entry: dict[str, Any] = {"plugin": info.plugin, "package": info.package,
                             "version": info.version, "params": explainer.get_params()}
    counter.rows = 0
    counter.stage = f"explainer '{name}'"  # named in a non-finite output error
    t0 = time.perf_counter()
    memory = PeakMemory(device)
    attribution = None
    try:
        with memory:
            attribution, reason = _run_method(explainer, prepared, adapter, counter, groups,
                                              config, device, bar, feature_groups)
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
        if attribution is None:  # not applicable: the bar never counted it
            entry.update(status="skipped", reason=reason)
        else:
            entry.update(status="ok", output_space=attribution.output_space,
                         unit=unit_of(attribution.output_space,
                                      model_output_unit(adapter.describe())),
                         shapley=info.cls.shapley, local=info.cls.local, **attribution.info)
            if feature_groups is not None:
                # native: the groups are the method's players; summed: its per-column
                # attributions are summed over each group's columns.
                entry.update(players=f"{feature_groups.n_groups} groups",
                             grouping=grouping.grouping_of(explainer))
    entry["seconds"] = round(time.perf_counter() - t0, 4)
    entry["model_evals"] = int(counter.rows)
    entry["device"] = device
    entry["batch_rows"] = batch_rows(prepared.X.shape[1], device)
    entry["peak_memory_mb"] = memory.peak_mb
    return attribution, entry


def _run_checks(results: dict[str, Attribution], methods: dict[str, dict[str, Any]],
                registry: Any, prepared: PreparedData, adapter: ModelAdapter,
                counter: CountingPredict, config: XaiConfig, device: str,
                row_outputs: np.ndarray, f_x: np.ndarray, bar: Any,
                feature_groups: FeatureGroups | None = None) -> dict[str, dict[str, Any]]:
    """The requested checks. With no explanation (no explainer ran or none produced a result)
    only the checks that query the model alone can say something (the end-task checks); the
    others skip themselves. With ``feature_groups`` they see the groups as the features (see
    :func:`_grouped_context`)."""
    if not results and (config.checks is None or not checks_to_run(config, registry)):
        return {}  # the default checks are about explanations: none to check
    ctx = build_context(registry=registry, methods=methods, results=results, adapter=adapter,
                        prepared=prepared, counter=counter,
                        counter_for=lambda other: CountingPredict(other, prepared),
                        config=config, device=device, row_outputs=row_outputs, f_x=f_x)
    if feature_groups is not None:
        ctx = _grouped_context(ctx, feature_groups, registry=registry, methods=methods,
                               adapter=adapter, prepared=prepared, counter=counter,
                               config=config, device=device, row_outputs=row_outputs)
    return run_checks(ctx, registry, config, counter,
                      on_check_done=lambda: bar.update(len(prepared.X)))


def _run_selectors(registry: Any, prepared: PreparedData, adapter: ModelAdapter,
                   counter: CountingPredict, groups: list[tuple[np.ndarray, int | None]],
                   config: XaiConfig, device: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The feature selectors, when asked for: (results, summary entries)."""
    if not config.selectors:
        return {}, {}
    from mlflow_xai.selecting import run_selectors

    if prepared.selection_X is None:
        raise XaiError("selectors choose among tabular features; this data is "
                       f"{prepared.facts.get('data_type', 'not tabular')}.")
    return run_selectors(registry=registry, config=config, prepared=prepared, adapter=adapter,
                         counter=counter, device=device,
                         output_index=groups[0][1] if len(groups) == 1 else None)


def _apply_policy(expl: Explanations, summary: dict[str, Any], config: XaiConfig) -> None:
    """The governance verdict of ``config.policy``, when one is given."""
    if config.policy is None:
        return
    from mlflow_xai.governance import evaluate_policy, load_policy

    expl.governance = evaluate_policy(load_policy(config.policy), expl)
    summary["governance"] = expl.governance["verdict"]


def _probe(counter: CountingPredict, prepared: PreparedData) -> np.ndarray:
    """Predict every explained row once; a failing model gets a message that says what it got."""
    try:
        out = counter.full(prepared.X)
    except NonFiniteOutputError as exc:
        raise ModelPredictError(
            f"the model returned NaN or infinite predictions for {exc.rows} of {exc.of} rows of "
            "the data itself; explanations of such outputs are meaningless. Drop those rows, "
            "or fix the model so that it returns finite outputs.") from exc
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
    return out  # finite: counter.full refused NaN and inf above


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
                config: XaiConfig, device: str, bar: Any,
                feature_groups: FeatureGroups | None = None
                ) -> tuple[Attribution | None, str | None]:
    """Run one explainer on each group of rows (one group per explained output) and merge.
    With ``feature_groups`` the result has one column per group of columns."""
    parts: list[tuple[np.ndarray, Attribution]] = []
    for rows, output_index in groups:
        task = build_task(
            counter=counter, prepared=prepared, model=adapter, device=device,
            X=prepared.X[rows], output_index=output_index, seed=config.seed,
            targets=prepared.targets[rows] if prepared.targets is not None else None,
            on_rows_done=bar.update)
        reason = explainer.supports(grouping.task_for(explainer, task, feature_groups))
        if reason:
            return None, reason
        parts.append((rows, grouping.explain(explainer, task, feature_groups)))
    width = prepared.X.shape[1] if feature_groups is None else feature_groups.n_groups
    return _merge(parts, len(prepared.X), width), None


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
                       info=_merged_info([a.info for _, a in parts]),
                       standard_errors=place("standard_errors", (n, d)),
                       interactions=place("interactions", (n, d, d)))


def _merged_info(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """One method's info over its output groups: the first group's, with the sampling figures
    taken over all groups (largest error, samples and rounds; converged only if all did)."""
    merged = dict(infos[0])
    if len(infos) == 1:
        return merged
    if "max_standard_error" in merged:
        errors = [i.get("max_standard_error") for i in infos]
        merged["max_standard_error"] = None if any(e is None for e in errors) else max(errors)
    for key in ("samples_used", "rounds"):
        values = [i[key] for i in infos if isinstance(i.get(key), (int, float))]
        if values:
            merged[key] = max(values)
    if "converged" in merged:
        merged["converged"] = all(bool(i.get("converged")) for i in infos)
    if "row_error_correlation" in merged:  # the safe side: the most correlated group
        rhos = [i.get("row_error_correlation") for i in infos]
        merged["row_error_correlation"] = None if any(r is None for r in rhos) else max(rhos)
    return merged


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


def primary_method(methods: dict[str, dict[str, Any]]) -> str | None:
    """The method whose numbers lead tables, plots, metrics and the report: the first that ran
    (``ok``) and gives Shapley values, else the first that ran (methods run in plan order)."""
    ran = [name for name, entry in methods.items() if entry.get("status") == "ok"]
    shapley = [name for name in ran if methods[name].get("shapley")]
    return (shapley or ran or [None])[0]


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
             probe_rows: int, *, selectors: dict[str, dict[str, Any]] | None = None,
             checks: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """``summary.json``: status, versions, model, data, and every method's entry."""
    statuses = [m["status"] for m in methods.values()] or ["ok"]
    status = "failed" if "failed" in statuses else "ok"
    if statuses and all(s != "ok" for s in statuses):
        status = "failed" if "failed" in statuses else "skipped"
    summary = {
        "status": status,
        "primary_method": primary_method(methods),
        "versions": _versions(),
        "model": adapter.describe(),
        "device": device,
        "output": output_desc,
        "data": prepared.facts,
        "seed": config.seed,
        "budget_s": config.budget_s,
        "log_metrics": config.log_metrics,
        "probe_model_evals": int(probe_rows),
        "methods": methods,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 4),
    }
    if selectors:
        summary["selectors"] = selectors
    summary["checks"] = {n: {k: c.get(k) for k in ("status", "seconds", "model_evals",
                                                    "reason", "error") if c.get(k) is not None}
                         for n, c in (checks or {}).items()}
    return summary
