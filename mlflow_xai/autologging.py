"""Explain on log: after ``mlflow_xai.autolog()``, every ``log_model`` call is explained.

(The module is not called ``autolog`` so that it never shadows the public function.)
All MLflow flavors save through ``mlflow.models.Model.log``; wrapping that one classmethod covers
sklearn, pytorch, xgboost, lightgbm, pyfunc and the rest. The model is explained as logged (it is
loaded back from its URI), artifacts go to the model's run and metrics link to its ``model_id``.
A failure never breaks ``log_model`` unless ``strict=True``.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import signal
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

_logger = logging.getLogger(__name__)

#: Dataset contexts preferred as explanation data, best first; other contexts come after.
PREFERRED_CONTEXTS = ("eval", "evaluation", "validation", "test")
_DATASET_CACHE_SIZE = 32
#: Seconds the process waits at exit for asynchronous explanations before spooling them.
EXIT_WAIT_ENV = "MLFLOW_XAI_EXIT_WAIT"
DEFAULT_EXIT_WAIT = 10.0
_FLUSH = "uploading the spool"


@dataclass
class _State:
    enabled: bool = False
    data: Any = None
    targets: Any = None
    asynchronous: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    originals: dict[str, Any] = field(default_factory=dict)
    # The background worker: one daemon thread (an interpreter exit never waits on it without
    # bound; the atexit handler gives it MLFLOW_XAI_EXIT_WAIT seconds, then spools).
    jobs: queue.SimpleQueue | None = None
    worker: threading.Thread | None = None
    futures: list[Future] = field(default_factory=list)
    what: dict[Future, Any] = field(default_factory=dict)  # future -> its _Job, or _FLUSH
    at_exit: bool = False
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
            :func:`mlflow_xai.wait` blocks until the work is done. What the worker cannot
            upload (the tracking server does not answer) is spooled to a local folder and
            uploaded later (:mod:`mlflow_xai.spool`). At exit the process waits at most
            ``$MLFLOW_XAI_EXIT_WAIT`` seconds (default 10) for the worker, then spools what is
            left; SIGTERM does the same when the process had no SIGTERM handler of its own.
        disable: undo :func:`autolog` and restore MLflow's functions.
        **options: any keyword of :func:`mlflow_xai.explain` (``explainers``, ``max_rows``,
            ``device``, ``seed``, ...). ``strict`` defaults to ``False`` here: a failure sets
            ``mlflow_xai.status=failed`` and logs ``xai/error.txt`` instead of raising.

    Each call also uploads, in the background, what was spooled for the current tracking URI.
    """
    if disable:
        _restore()
        try:
            if signal.getsignal(signal.SIGTERM) is _on_sigterm:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except (ValueError, OSError):
            pass
        return
    from mlflow_xai.config import ENTRANCE_DEFAULTS, XaiConfig, check_methods

    options = {"strict": False, **ENTRANCE_DEFAULTS, **options}
    # Fail fast on typos, before any model is logged.
    check_methods(XaiConfig.from_mapping({**options, "targets": targets}, where="autolog"))
    with _state.lock:
        _state.data, _state.targets = data, targets
        _state.asynchronous, _state.options = asynchronous, options
        if not _state.enabled:
            _patch()
            _state.enabled = True
    if asynchronous:
        _install_sigterm()
    _flush_in_background()


def wait(timeout: float | None = None) -> None:
    """Block until every asynchronous explanation has finished, then upload the spool.

    Waits for the background worker (``timeout`` in seconds for everything: a
    :class:`TimeoutError` lists what is still running), then uploads what was spooled for the
    current tracking URI. Raises :class:`mlflow_xai.spool.SpoolNotEmpty` (a
    :class:`~mlflow_xai.recording.RecordingError`), listing each item and why, when anything
    could not be uploaded: it stays in the spool for the next ``wait()``, ``autolog()`` or
    ``mlflow-xai flush``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    with _state.lock:
        futures = list(_state.futures)
    done, not_done = wait_futures(futures, timeout=timeout)
    with _state.lock:
        _state.futures = [f for f in _state.futures if f not in done]
        for future in done:
            _state.what.pop(future, None)
        running = [_describe(_state.what.get(f)) for f in not_done]
    if not_done:
        raise TimeoutError(f"{len(not_done)} explanation(s) still running after {timeout} s: "
                           + "; ".join(running))
    from mlflow_xai import spool

    result = spool.flush(deadline=deadline, replay=replay_item)
    if result.remaining:
        raise spool.SpoolNotEmpty(result.remaining)


def _describe(what: Any) -> str:
    if isinstance(what, _Job):
        return f"model {what.info.model_uri} (run {what.run_id})"
    return str(what or "a job")


def _submit(fn: Any, what: Any) -> Future:
    """Queue ``fn`` for the background worker (started on first use, with the exit handler)."""
    future: Future = Future()
    with _state.lock:
        if _state.worker is None or not _state.worker.is_alive():
            _state.jobs = queue.SimpleQueue()
            _state.worker = threading.Thread(target=_work, args=(_state.jobs,),
                                             name="mlflow-xai", daemon=True)
            _state.worker.start()
        if not _state.at_exit:
            atexit.register(_at_exit)
            _state.at_exit = True
        _state.futures.append(future)
        _state.what[future] = what
        _state.jobs.put((future, fn))
    return future


def _work(jobs: queue.SimpleQueue) -> None:
    while True:
        future, fn = jobs.get()
        if not future.set_running_or_notify_cancel():
            continue  # cancelled at exit (and spooled)
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001 - kept on the future, as an executor does
            future.set_exception(exc)
        else:
            future.set_result(result)


def _flush_in_background() -> None:
    """Upload what was spooled for the current tracking URI, without blocking the caller."""
    import mlflow

    from mlflow_xai import spool

    uri = mlflow.get_tracking_uri()
    try:
        if not spool.items(uri):
            return
    except OSError:
        return
    with _state.lock:
        if any(w == _FLUSH and not f.done() for f, w in _state.what.items()):
            return

    def flush() -> None:
        result = spool.flush(uri, replay=replay_item)
        if result.uploaded:
            _logger.info("mlflow-xai: uploaded %d spooled explanation(s)", len(result.uploaded))
        if result.remaining:
            _logger.warning("mlflow-xai: %d spooled explanation(s) not uploaded yet (%s); run "
                            "`mlflow-xai flush` or mlflow_xai.wait() later",
                            len(result.remaining), result.remaining[0].reason)

    _submit(flush, _FLUSH)


def _at_exit() -> None:
    """At interpreter exit (and on SIGTERM, see :func:`_install_sigterm`): give the worker
    ``$MLFLOW_XAI_EXIT_WAIT`` seconds, then spool every job still in hand, so nothing is lost."""
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM stops at once
    except (ValueError, OSError):
        pass
    with _state.lock:
        pending = [f for f in _state.futures if not f.done()]
    if not pending:
        return
    try:
        limit = max(0.0, float(os.environ.get(EXIT_WAIT_ENV, DEFAULT_EXIT_WAIT)))
    except ValueError:
        limit = DEFAULT_EXIT_WAIT
    _logger.warning("mlflow-xai: waiting up to %g s for %d asynchronous explanation(s) before "
                    "exiting (%s)", limit, len(pending), EXIT_WAIT_ENV)
    wait_futures(pending, timeout=limit)
    for future in pending:
        if future.done():
            continue
        future.cancel()  # not started yet: it never will be
        what = _state.what.get(future)
        if isinstance(what, _Job):
            what.abandon(f"the process exited before it was done (waited {limit:g} s)")


def _install_sigterm() -> None:
    """Turn SIGTERM into ``SystemExit`` so that the exit handler runs, but only in the main
    thread and only when the process has no SIGTERM handler of its own."""
    if threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError, AttributeError):
        pass


def _on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


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
               options=dict(_state.options), tracking_uri=mlflow.get_tracking_uri(),
               asynchronous=_state.asynchronous)
    if _state.asynchronous:
        _submit(job.run_safely, job)
    else:
        job.run_safely()


@dataclass
class _Job:
    info: Any
    run_id: str | None
    data: Any
    targets: Any
    options: dict[str, Any]
    tracking_uri: str | None = None
    #: In the background worker: probe the server first, spool what cannot be uploaded.
    asynchronous: bool = False
    #: Set at exit when the job was spooled unfinished: it must not upload any more.
    abandoned: threading.Event = field(default_factory=threading.Event, repr=False)
    spooled: Any = None  # the spool item holding this job's inputs, once spooled

    def run_safely(self) -> None:
        from mlflow_xai.recording import server_unreachable
        from mlflow_xai.spool import Spooled, spooling

        try:
            if self.asynchronous:
                with spooling(self):
                    self.run()
            else:
                self.run()
        except Spooled as exc:  # the explanation is computed; its upload waits in the spool
            self._warn_spooled(exc.path, exc.reason)
        except Exception as exc:
            if self.abandoned.is_set():
                return  # spooled by the exit handler
            if self.asynchronous and server_unreachable(exc):
                self.spool(f"the tracking server did not answer ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())[:200]})")
                return
            if self.options.get("strict"):
                raise
            # Only reached when recording the failure itself failed (server down).
            _logger.warning("mlflow-xai: explaining model %s failed and could not be recorded: "
                            "%s", self.info.model_uri, exc)

    def run(self) -> None:
        """Gather the inputs (data, run, model, registered version) and hand them over."""
        from mlflow_xai.config import XaiConfig
        from mlflow_xai.recording import Destination, explain_and_record, record_failure

        if self.run_id is None:
            _logger.warning("mlflow-xai: model %s has no run; nothing to attach explanations to",
                            self.info.model_uri)
            return
        if self.asynchronous:
            # Fail fast (seconds, not MLflow's minutes of retries) when the server is down.
            from mlflow_xai.spool import ServerUnreachable, probe

            down = probe()
            if down:
                raise ServerUnreachable(down)
        version = getattr(self.info, "registered_model_version", None)
        name = _registered_name(self.info) if version is not None else None
        dest = Destination(self.run_id, self.info.model_id,
                           (name, str(version)) if name else None, source="autolog")
        data, targets, source = self.data, self.targets, "autolog(data=...)"
        if data is None:
            data, targets, source = _data_from_run(self.run_id)
            data = _signature_columns(data, self.info, targets)
        if data is None:
            recorded = record_failure(dest, f"no data to explain: {source}. Pass "
                                      "autolog(data=...) or log a data set with "
                                      "mlflow.log_input(..., context='eval').", status="skipped")
            if recorded is None and self.asynchronous:
                from mlflow_xai.spool import ServerUnreachable

                raise ServerUnreachable("the tracking server did not answer")
            return
        config = XaiConfig.from_mapping({**self.options, "targets": targets}, where="autolog")
        outcome = explain_and_record(self.info.model_uri, data, config, dest, data_source=source)
        if outcome.error is None:
            return
        if outcome.run_id is not None:
            _logger.warning("mlflow-xai: explaining model %s failed (see xai/error.txt in run "
                            "%s): %s", self.info.model_uri, self.run_id, outcome.error)
        elif self.asynchronous:  # the failure could not be recorded: spool the job, retry later
            from mlflow_xai.spool import ServerUnreachable

            raise ServerUnreachable("the tracking server did not answer while recording the "
                                    "failure") from outcome.error
        else:
            _logger.warning("mlflow-xai: explaining model %s failed and the failure could not be "
                            "recorded (the tracking server did not answer): %s",
                            self.info.model_uri, outcome.error)

    def spool(self, reason: str) -> None:
        """Keep the job's inputs in the spool; it is replayed when the server answers."""
        from mlflow_xai import spool

        if self.spooled is not None or self.run_id is None:
            return
        try:
            self.spooled = spool.spool_job(info=self.info, run_id=self.run_id, data=self.data,
                                           targets=self.targets, options=self.options,
                                           tracking_uri=self.tracking_uri, reason=reason)
        except Exception as exc:  # noqa: BLE001 - a full disk, unpicklable data, ...
            _logger.error("mlflow-xai: the explanation of model %s (run %s) could not be "
                          "recorded (%s) nor spooled (%s: %s): it is lost", self.info.model_uri,
                          self.run_id, reason, type(exc).__name__, exc)
            return
        self._warn_spooled(self.spooled, reason)

    def abandon(self, reason: str) -> None:
        """At exit: stop uploading (the worker dies with the process) and spool the inputs."""
        self.abandoned.set()
        self.spool(reason)

    def _warn_spooled(self, path: Any, reason: str) -> None:
        from mlflow_xai.spool import HINT

        _logger.warning("mlflow-xai: the explanation of model %s (run %s) could not be recorded "
                        "now: %s; spooled to %s; %s", self.info.model_uri, self.run_id, reason,
                        path, HINT)

def replay_item(item: Any) -> None:
    """Replay one spool item (:func:`mlflow_xai.spool.flush` is handed this function)."""
    from mlflow_xai import spool
    from mlflow_xai.recording import replay_upload

    if item.kind == spool.UPLOAD:
        replay_upload(item)
    else:
        _replay_job(item)


def _replay_job(item: Any) -> None:
    """Explain and record a job spooled before it could load its model."""
    import types

    import cloudpickle

    from mlflow_xai import spool

    m = item.manifest
    inputs = cloudpickle.loads((item.path / "inputs.pkl").read_bytes())
    data = inputs.get("data")
    if m.get("data_format") == "parquet":
        import pandas as pd

        data = pd.read_parquet(item.path / "data.parquet")
    info = inputs.get("info") or types.SimpleNamespace(
        model_uri=m["model_uri"], model_id=m.get("model_id"), run_id=m["run_id"],
        registered_model_version=m.get("registered_version"), signature=None)
    job = _Job(info=info, run_id=m["run_id"], data=data, targets=inputs.get("targets"),
               options=dict(inputs.get("options") or {}), tracking_uri=m.get("tracking_uri"),
               asynchronous=True)
    with spool.spooling(job):
        job.run()


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
