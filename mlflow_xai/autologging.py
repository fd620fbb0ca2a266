"""Explain on log: after ``mlflow_xai.autolog()``, every ``log_model`` call is explained.

(The module is not called ``autolog`` so that it never shadows the public function.)
All MLflow flavors save through ``mlflow.models.Model.log``; wrapping that one classmethod covers
sklearn, pytorch, xgboost, lightgbm, pyfunc and the rest. The model is explained as logged (it is
loaded back from its URI), artifacts go to the model's run and metrics link to its ``model_id``.
A failure never breaks ``log_model`` unless ``strict=True``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

_logger = logging.getLogger(__name__)

#: Dataset contexts preferred as explanation data, best first; other contexts come after.
PREFERRED_CONTEXTS = ("eval", "evaluation", "validation", "test")
_DATASET_CACHE_SIZE = 32


@dataclass
class _State:
    enabled: bool = False
    data: Any = None
    targets: Any = None
    asynchronous: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    originals: dict[str, Any] = field(default_factory=dict)
    executor: ThreadPoolExecutor | None = None
    futures: list[Future] = field(default_factory=list)
    datasets: OrderedDict = field(default_factory=OrderedDict)  # digest -> mlflow Dataset
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _State()
_inside = threading.local()


def autolog(data: Any = None, *, targets: Any = None, asynchronous: bool = False,
            disable: bool = False, **options: Any) -> None:
    """Explain every model logged from now on.

    Args:
        data: rows to explain. Default: a data set logged to the model's run with
            ``mlflow.log_input`` (contexts "eval", "validation", "test" first); without one the
            model is skipped and the run tag ``mlflow_xai.reason`` says why.
        targets: labels for ``data``, or the name of its target column.
        asynchronous: explain in a background worker so ``log_model`` returns at once;
            :func:`mlflow_xai.wait` blocks until the work is done.
        disable: undo :func:`autolog` and restore MLflow's functions.
        **options: any keyword of :func:`mlflow_xai.explain` (``explainers``, ``max_rows``,
            ``device``, ``seed``, ...). ``strict`` defaults to ``False`` here: a failure sets
            ``mlflow_xai.status=failed`` and logs ``xai/error.txt`` instead of raising.
    """
    if disable:
        _restore()
        return
    from mlflow_xai.config import XaiConfig, check_methods

    options = {"strict": False, **options}
    # Fail fast on typos, before any model is logged.
    check_methods(XaiConfig.from_mapping({**options, "targets": targets}, where="autolog"))
    with _state.lock:
        _state.data, _state.targets = data, targets
        _state.asynchronous, _state.options = asynchronous, options
        if not _state.enabled:
            _patch()
            _state.enabled = True


def wait(timeout: float | None = None) -> None:
    """Block until every asynchronous explanation has finished (``timeout`` in seconds)."""
    with _state.lock:
        futures = list(_state.futures)
    done, not_done = wait_futures(futures, timeout=timeout)
    with _state.lock:
        _state.futures = [f for f in _state.futures if f not in done]
    if not_done:
        raise TimeoutError(f"{len(not_done)} explanation(s) still running after {timeout} s")


def _patch() -> None:
    import mlflow
    from mlflow.models import Model

    original_log = Model.__dict__["log"]
    _state.originals = {"Model.log": original_log, "log_input": mlflow.log_input,
                        "log_inputs": mlflow.log_inputs}

    def log(cls: type, *args: Any, **kwargs: Any) -> Any:
        info = original_log.__func__(cls, *args, **kwargs)
        if getattr(_inside, "active", False):
            return info
        _inside.active = True
        try:
            _on_model_logged(info)
        finally:
            _inside.active = False
        return info

    def log_input(dataset: Any = None, *args: Any, **kwargs: Any) -> Any:
        _remember(dataset)
        return _state.originals["log_input"](dataset, *args, **kwargs)

    def log_inputs(datasets: Any = None, *args: Any, **kwargs: Any) -> Any:
        for dataset in datasets or []:
            _remember(dataset)
        return _state.originals["log_inputs"](datasets, *args, **kwargs)

    log.__doc__ = original_log.__func__.__doc__
    Model.log = classmethod(log)
    mlflow.log_input = log_input
    mlflow.log_inputs = log_inputs


def _restore() -> None:
    with _state.lock:
        if not _state.enabled:
            return
        import mlflow
        from mlflow.models import Model

        Model.log = _state.originals["Model.log"]
        mlflow.log_input = _state.originals["log_input"]
        mlflow.log_inputs = _state.originals["log_inputs"]
        _state.enabled = False
        _state.datasets.clear()


def _remember(dataset: Any) -> None:
    digest = getattr(dataset, "digest", None)
    if digest is None:
        return
    with _state.lock:
        _state.datasets[digest] = dataset
        while len(_state.datasets) > _DATASET_CACHE_SIZE:
            _state.datasets.popitem(last=False)


def _on_model_logged(info: Any) -> None:
    import mlflow

    run_id = getattr(info, "run_id", None) or (
        mlflow.active_run().info.run_id if mlflow.active_run() else None)
    job = _Job(info=info, run_id=run_id, data=_state.data, targets=_state.targets,
               options=dict(_state.options))
    if _state.asynchronous:
        with _state.lock:
            if _state.executor is None:
                _state.executor = ThreadPoolExecutor(max_workers=1,
                                                     thread_name_prefix="mlflow-xai")
            _state.futures.append(_state.executor.submit(job.run_safely))
    else:
        job.run_safely()


@dataclass
class _Job:
    info: Any
    run_id: str | None
    data: Any
    targets: Any
    options: dict[str, Any]

    def run_safely(self) -> None:
        from mlflow_xai.artifacts import log_failure

        strict = bool(self.options.get("strict"))
        try:
            self.run()
        except Exception as exc:
            if strict:
                raise
            _logger.warning("mlflow-xai: explaining model %s failed (see xai/error.txt in run "
                            "%s): %s", self.info.model_uri, self.run_id, exc)
            if self.run_id:
                try:
                    log_failure(self.run_id, exc, model_id=self.info.model_id)
                except Exception as log_exc:  # the tracking server may be down too
                    _logger.warning("mlflow-xai: could not record the failure: %s", log_exc)

    def run(self) -> None:
        from mlflow_xai.artifacts import log_explanations, log_failure
        from mlflow_xai.config import XaiConfig
        from mlflow_xai.pipeline import run

        if self.run_id is None:
            _logger.warning("mlflow-xai: model %s has no run; nothing to attach explanations to",
                            self.info.model_uri)
            return
        data, targets, source = self.data, self.targets, "autolog(data=...)"
        if data is None:
            data, targets, source = _data_from_run(self.run_id)
            data = _signature_columns(data, self.info, targets)
        if data is None:
            log_failure(self.run_id, f"no data to explain: {source}. Pass autolog(data=...) or "
                        "log a data set with mlflow.log_input(..., context='eval').",
                        status="skipped", model_id=self.info.model_id)
            return
        config = XaiConfig.from_mapping({**self.options, "targets": targets}, where="autolog")
        expl = run(self.info.model_uri, data, config)
        expl.summary["data"]["source"] = source
        expl.model_id = expl.model_id or self.info.model_id
        version = getattr(self.info, "registered_model_version", None)
        name = _registered_name(self.info) if version is not None else None
        log_explanations(expl, run_id=self.run_id, model_id=self.info.model_id,
                         registered=(name, str(version)) if name else None,
                         tags={"mlflow_xai.model_id": self.info.model_id or "",
                               "mlflow_xai.source": "autolog"})
        if expl.governance is not None and name:
            from mlflow_xai.governance import set_governance_tags

            set_governance_tags(expl.governance["verdict"], registered_model=name,
                                model_version=str(version))


def _registered_name(info: Any) -> str | None:
    """The registered model a log_model call registered (MLflow keeps it on the version)."""
    from mlflow import MlflowClient

    try:
        versions = MlflowClient().search_model_versions(f"run_id = '{info.run_id}'")
    except Exception:
        return None
    for mv in versions:
        if str(mv.version) == str(info.registered_model_version) and (
                getattr(mv, "model_id", None) in (None, info.model_id)):
            return mv.name
    return None


def _signature_columns(data: Any, info: Any, targets: Any) -> Any:
    """A logged data set often carries the label too: keep the model's input columns."""
    signature = getattr(info, "signature", None)
    columns = getattr(data, "columns", None)
    if signature is None or columns is None or not signature.inputs.has_input_names():
        return data
    names = signature.inputs.input_names()
    keep = [c for c in names if c in columns]
    if len(keep) < len(names):
        return data  # let validation name the missing columns
    return data[keep + ([targets] if isinstance(targets, str) and targets in columns else [])]


def _data_from_run(run_id: str, *, sources: Any = None,
                   use_cache: bool = True) -> tuple[Any, Any, str]:
    """A data set logged to the run: (features, targets column, description) or reason.

    ``sources`` (a :class:`mlflow_xai.sources.SourcePolicy`) restricts which sources may be
    read: the watch service reads other people's runs and must not fetch any URL or read any
    file their authors name. Autolog runs in the author's own process and reads what they
    logged.
    """
    from mlflow import MlflowClient

    from mlflow_xai.sources import source_uri

    run = MlflowClient().get_run(run_id)
    inputs = run.inputs
    dataset_inputs = list(getattr(inputs, "dataset_inputs", None) or [])
    if not dataset_inputs:
        return None, None, "the run has no data set logged with mlflow.log_input"

    def rank(di: Any) -> int:
        context = next((t.value for t in di.tags if t.key == "mlflow.data.context"), "")
        return PREFERRED_CONTEXTS.index(context) if context in PREFERRED_CONTEXTS else len(
            PREFERRED_CONTEXTS)

    reasons = []
    for di in sorted(dataset_inputs, key=rank):
        if sources is not None:
            refusal = sources.refusal(source_uri(di.dataset),
                                      run_artifact_uri=run.info.artifact_uri)
            if refusal:
                reasons.append(f"'{di.dataset.name}': {refusal}")
                continue
        frame, targets, reason = _load_dataset(di, use_cache=use_cache)
        if frame is not None:
            return frame, targets, f"run data set '{di.dataset.name}' ({di.dataset.digest})"
        reasons.append(f"'{di.dataset.name}': {reason}")
    return None, None, "; ".join(reasons)


def _load_dataset(dataset_input: Any, *, use_cache: bool = True) -> tuple[Any, Any, str]:
    import pandas as pd

    entity = dataset_input.dataset
    with _state.lock:
        cached = _state.datasets.get(entity.digest) if use_cache else None
    if cached is not None:
        df = getattr(cached, "df", None)
        if isinstance(df, pd.DataFrame):
            predictions = getattr(cached, "predictions", None)
            frame = df.drop(columns=[predictions]) if predictions in df.columns else df
            return frame, getattr(cached, "targets", None), ""
        features = getattr(cached, "features", None)
        if features is not None:
            return features, getattr(cached, "targets", None), ""
    try:
        import mlflow.data

        local = mlflow.data.get_source(dataset_input).load()
    except Exception as exc:
        return None, None, f"its source cannot be loaded ({type(exc).__name__}: {exc})"
    path = str(local)
    if path.endswith(".parquet"):
        return pd.read_parquet(path), None, ""
    if path.endswith(".csv"):
        return pd.read_csv(path), None, ""
    return None, None, f"its source {path} is neither CSV nor parquet"
