"""The one place that records explanations in MLflow: artifacts, metrics, tags and outcome.

Every entrance (autolog, the evaluator, the CLI, the watch service, the distributed driver and
``Explanations.log``) gathers its inputs and calls :func:`explain_and_record` (or :func:`record`
for explanations it already has). Recording is atomic in what it *claims*:

1. everything is computed and every metric name, tag and artifact path is validated first;
2. the artifacts (all but ``summary.json``) are uploaded, then the metrics;
3. ``summary.json`` (bound to the model, listing every file's SHA-256) is uploaded next to last,
   and the tags (digest, signature, status) last.

A failure at any step leaves ``mlflow_xai.status=failed`` with the reason and ``xai/error.txt``
(or, when the server cannot be reached, nothing that claims success), so a half-written ``xai/``
never looks ``ok``.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow_xai import tags as tag
from mlflow_xai.errors import ExplainCancelled, RecordingError, XaiError  # noqa: F401
from mlflow_xai.reachability import is_unreachable as server_unreachable

if TYPE_CHECKING:
    from mlflow_xai.config import XaiConfig
    from mlflow_xai.explanations import Explanations

_logger = logging.getLogger(__name__)

ARTIFACT_DIR = "xai"
#: MLflow caps a log_batch at 1000 entries; stay well below.
METRICS_PER_BATCH = 500
#: The server refuses longer tag values (run tags allow 8000, model version tags 5000).
MAX_TAG_VALUE = 5000


@dataclass
class Destination:
    """Where an explanation is recorded, and by which entrance.

    Attributes:
        run_id: the run; ``None``: the active run, else a new one.
        model_id: the LoggedModel the explanation describes (metrics link to it; its summary and
            tags name it).
        registered: ``(name, version)`` of a registered model version it describes.
        source: the entrance (``autolog``, ``evaluate``, ``cli``, ``watch``, ``distributed``,
            ``api``): the tag ``mlflow_xai.source``, the one difference between entrances.
        log_metrics: ``False`` for the evaluator when MLflow logs the returned metrics itself
            (the same set, :func:`mlflow_xai.artifacts.metrics_for`). *Which* metrics is not
            chosen here but by the explanation's ``summary["log_metrics"]``.
        tags: more run tags (entrance-specific labels).
    """

    run_id: str | None = None
    model_id: str | None = None
    registered: tuple[str, str] | None = None
    source: str = "api"
    log_metrics: bool = True
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """What :func:`explain_and_record` did: the explanations (``None`` when computing failed),
    the run recorded into, and the error when it failed (``status`` then says so)."""

    explanations: Explanations | None
    run_id: str | None
    status: str
    error: BaseException | None = None


def explain_and_record(model: Any, data: Any, config: XaiConfig, dest: Destination, *,
                       data_source: str | None = None, cancel: threading.Event | None = None,
                       raise_errors: bool | None = None) -> Outcome:
    """Compute (``pipeline.run``) and record. Errors are recorded as ``status=failed`` and
    returned in the :class:`Outcome`, unless ``raise_errors`` (default: ``config.strict``).

    A cancelled run (:class:`~mlflow_xai.errors.ExplainCancelled`) and an unreachable server
    are never recorded as the model's failure: they propagate to the caller.
    """
    from mlflow_xai.pipeline import run

    raise_errors = config.strict if raise_errors is None else raise_errors
    try:
        expl = run(model, data, config, cancel=cancel) if cancel is not None else \
            run(model, data, config)
        if data_source is not None:
            expl.summary.setdefault("data", {})["source"] = data_source
        run_id = record(expl, dest)
    except ExplainCancelled:
        raise
    except Exception as exc:
        if raise_errors or server_unreachable(exc):
            raise
        _probe_when_spooling()
        run_id = record_failure(dest, exc)
        return Outcome(None, run_id, "failed", exc)
    return Outcome(expl, run_id, expl.summary["status"])


def _probe_when_spooling() -> None:
    """Inside asynchronous work (:func:`mlflow_xai.spool.spooling`): fail fast, with
    :class:`~mlflow_xai.spool.ServerUnreachable`, when the tracking server does not answer,
    instead of waiting out MLflow's retries; the caller spools the work."""
    from mlflow_xai import spool

    owner = spool.current()
    if owner is None:
        return
    reason = spool.check_before_upload(owner)
    if reason:
        raise spool.ServerUnreachable(reason)


def record(expl: Explanations, dest: Destination) -> str:
    """Record computed explanations (see the module docstring for the order); return the run."""
    from mlflow_xai.artifacts import metrics_for, write_artifacts

    run_id = _resolve_run(dest.run_id)
    _bind(expl.summary, dest, run_id)
    # summary["log_metrics"] chooses the set: the headline (default) or every figure ("all").
    metrics = metrics_for(expl) if dest.log_metrics else {}
    with tempfile.TemporaryDirectory(prefix="mlflow-xai-") as tmp:
        write_artifacts(expl, tmp)
        tags = _outcome_tags(expl.summary["status"], methods=expl.methods, dest=dest,
                             governance=(expl.governance or {}).get("verdict"))
        _upload(Path(tmp), metrics, tags, dest, run_id)
    return run_id


def record_folder(folder: Path, summary: dict[str, Any], metrics: dict[str, float],
                  dest: Destination, *, methods: list[str]) -> str:
    """Record an ``xai/`` folder written by another backend (the distributed driver): the same
    binding, validation, order and tags as :func:`record`."""
    from mlflow_xai.artifacts import write_summary

    run_id = _resolve_run(dest.run_id)
    _bind(summary, dest, run_id)
    write_summary(folder, summary)
    tags = _outcome_tags(summary["status"], methods=methods, dest=dest, governance=None)
    _upload(folder, metrics if dest.log_metrics else {}, tags, dest, run_id)
    return run_id


def record_failure(dest: Destination, error: BaseException | str, *,
                   status: str = "failed") -> str | None:
    """Record that explaining failed (or was ``skipped``): status and reason tags on the run and
    model, and ``xai/error.txt`` for a failure. Returns the run, or ``None`` when there is none
    (nothing to attach to) or the server cannot be reached (nothing is claimed)."""
    from mlflow import MlflowClient

    if isinstance(error, BaseException):
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        reason = f"{type(error).__name__}: {error}"
    else:
        text = reason = str(error)
    run_id = dest.run_id
    if run_id is None:
        return None
    client = MlflowClient()
    why = tag.ERROR if status == "failed" else tag.REASON
    try:
        if status == "failed":
            client.log_text(run_id, text, f"{ARTIFACT_DIR}/error.txt")
        client.set_tag(run_id, tag.SOURCE, dest.source)
        client.set_tag(run_id, why, reason[:MAX_TAG_VALUE])
        client.set_tag(run_id, tag.STATUS, status)
        if dest.model_id:
            try:
                client.set_logged_model_tags(dest.model_id, {why: reason[:MAX_TAG_VALUE],
                                                             tag.STATUS: status})
            except Exception as exc:  # noqa: BLE001 - a store without LoggedModels
                if server_unreachable(exc):
                    raise
        if dest.registered:
            name, version = dest.registered
            client.set_model_version_tag(name, version, tag.STATUS, status)
    except Exception as exc:
        if server_unreachable(exc):
            _logger.warning("mlflow-xai: could not record the %s on run %s: the tracking server "
                            "did not answer (%s)", status, run_id, exc)
            return None
        raise
    return run_id


# --------------------------------------------------------------------------- steps


def _resolve_run(run_id: str | None) -> str:
    import mlflow

    if run_id is not None:
        return run_id
    active = mlflow.active_run() or mlflow.start_run()
    return active.info.run_id


def _bind(summary: dict[str, Any], dest: Destination, run_id: str) -> None:
    """The summary names the model it describes and the run it is recorded in (the gate checks
    both), and the entrance that recorded it."""
    model = summary.setdefault("model", {})
    if dest.model_id:
        model["model_id"] = dest.model_id
    if dest.registered:
        model["registered_model"] = {"name": dest.registered[0],
                                     "version": str(dest.registered[1])}
    model["run_id"] = run_id
    summary["recorded_by"] = dest.source


def _outcome_tags(status: str, *, methods: list[str], dest: Destination,
                  governance: str | None) -> dict[str, str]:
    out = {tag.METHODS: ",".join(methods), tag.SOURCE: dest.source, **dest.tags}
    if dest.model_id:
        out[tag.MODEL_ID] = dest.model_id
    if governance is not None:
        out[tag.GOVERNANCE] = governance
    out[tag.STATUS] = status  # last key: written last
    return out


def _validate(metrics: dict[str, float], tags: dict[str, str], folder: Path) -> None:
    """Every name the server could refuse, checked before anything is uploaded."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric_name, _validate_tag_name

    for name in metrics:
        try:
            _validate_metric_name(name)
        except MlflowException as exc:
            raise RecordingError(f"metric name {name[:80]!r} would be refused by MLflow: "
                                 f"{exc.message}") from exc
    for name, value in tags.items():
        try:
            _validate_tag_name(name)
        except MlflowException as exc:
            raise RecordingError(f"tag {name!r} would be refused by MLflow: {exc.message}") \
                from exc
        if len(str(value)) > MAX_TAG_VALUE:
            raise RecordingError(f"tag {name!r} is {len(str(value))} characters long; MLflow "
                                 f"keeps at most {MAX_TAG_VALUE}.")
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if ".." in rel.split("/") or rel.startswith("/"):
            raise RecordingError(f"artifact path {rel!r} leaves the xai/ folder.")


def _upload(folder: Path, metrics: dict[str, float], tags: dict[str, str], dest: Destination,
            run_id: str, *, timestamp_ms: int | None = None,
            carried: dict[str, Any] | None = None) -> None:
    """Artifacts, metrics, summary.json, then tags. Any failure: recorded as failed, raised.

    Inside asynchronous work (:func:`mlflow_xai.spool.spooling`) an unreachable server is not a
    failure: the folder is spooled, before anything is uploaded when the probe finds the server
    down, or when an upload step does, and :class:`~mlflow_xai.spool.Spooled` is raised. A
    spooled folder is replayed with its metrics' ``timestamp_ms`` and ``carried`` (the digest and
    signature written when it was spooled; the digest must still match).
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    from mlflow_xai import spool
    from mlflow_xai.provenance import sha256_bytes, sign

    summary_path = folder / "summary.json"
    digest = sha256_bytes(summary_path.read_bytes())
    if carried is not None and carried.get("digest") != digest:
        raise RecordingError("the spooled xai/summary.json changed after it was spooled (its "
                             "SHA-256 no longer matches); it is not uploaded.")
    provenance = {tag.DIGEST: digest}
    signature = carried.get("signature") if carried is not None else sign(digest)
    if signature:
        provenance[tag.SIGNATURE] = signature
    run_tags = {**provenance, **tags}
    _validate(metrics, run_tags, folder)
    owner = spool.current()
    if owner is not None:
        down = spool.check_before_upload(owner)
        if down:
            path = spool.spool_upload(folder, summary_path, metrics=metrics, tags=tags,
                                      dest=dest, run_id=run_id, digest=digest,
                                      signature=signature, timestamp_ms=timestamp_ms,
                                      reason=down)
            raise spool.Spooled(path, down) from spool.ServerUnreachable(down)
    client = MlflowClient()
    held = Path(tempfile.mkdtemp(prefix="mlflow-xai-summary-")) / "summary.json"
    summary_path.replace(held)  # uploaded after everything it lists
    now = timestamp_ms
    try:
        client.log_artifacts(run_id, str(folder), ARTIFACT_DIR)
        now = now or int(time.time() * 1000)
        entries = [Metric(k, v, now, 0, model_id=dest.model_id) for k, v in metrics.items()]
        for start in range(0, len(entries), METRICS_PER_BATCH):
            client.log_batch(run_id, metrics=entries[start:start + METRICS_PER_BATCH])
        client.log_artifact(run_id, str(held), ARTIFACT_DIR)
        client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in run_tags.items()])
        if dest.model_id:
            model_tags = {**provenance, tag.RUN_ID: run_id}
            if tag.GOVERNANCE in tags:
                model_tags[tag.GOVERNANCE] = tags[tag.GOVERNANCE]
            model_tags[tag.STATUS] = tags[tag.STATUS]
            try:
                client.set_logged_model_tags(dest.model_id, model_tags)
            except Exception as exc:  # noqa: BLE001 - a store without LoggedModels
                if server_unreachable(exc):
                    raise
        if dest.registered:
            name, version = dest.registered
            for key in (tag.STATUS, tag.GOVERNANCE):
                if key in tags:
                    client.set_model_version_tag(name, version, key, tags[key])
    except Exception as exc:
        if not server_unreachable(exc):
            error = RecordingError(f"recording the explanation failed part-way: "
                                   f"{type(exc).__name__}: {exc}")
            record_failure(Destination(run_id, dest.model_id, dest.registered, dest.source),
                           error)
            raise error from exc
        if spool.may_spool(owner):
            down = f"the tracking server did not answer during the upload ({type(exc).__name__})"
            path = spool.spool_upload(folder, held, metrics=metrics, tags=tags, dest=dest,
                                      run_id=run_id, digest=digest, signature=signature,
                                      timestamp_ms=now, reason=down)
            raise spool.Spooled(path, down) from exc
        raise
    finally:
        held.unlink(missing_ok=True)
        held.parent.rmdir()


def replay_upload(item: Any) -> None:
    """Upload a spooled ``upload`` item (a computed ``xai/`` folder) in the recorder's order."""
    import shutil

    m = item.manifest
    dest = Destination(m["run_id"], m.get("model_id"),
                       tuple(m["registered"]) if m.get("registered") else None,
                       source=m.get("source", "autolog"), log_metrics=m.get("log_metrics", True),
                       tags=dict(m.get("dest_tags") or {}))
    with tempfile.TemporaryDirectory(prefix="mlflow-xai-replay-") as tmp:
        folder = Path(tmp) / "xai"
        shutil.copytree(item.path / "xai", folder)  # the recorder moves summary.json away
        _upload(folder, m.get("metrics") or {}, m.get("tags") or {}, dest, m["run_id"],
                timestamp_ms=m.get("metrics_time"),
                carried={"digest": m.get("digest"), "signature": m.get("signature")})
