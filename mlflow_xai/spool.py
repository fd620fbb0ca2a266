"""The spool: asynchronous work that could not reach the tracking server, kept on local disk.

Asynchronous autolog records from a background worker. When the tracking server does not
answer, waiting out MLflow's HTTP retries (minutes per request) and then dropping the work helps
nobody. The worker probes the server first (:func:`probe`: ``GET <uri>/health``, a few seconds)
and, when it does not answer, *spools* the work to a local folder (:func:`spool_dir`):

* ``upload`` items: an explanation that was computed but could not be uploaded: the ``xai/``
  folder as written plus ``manifest.json`` (tracking URI, run, model, registered version,
  entrance, metrics, tags, digest and signature, created time). Replayed through the recorder's
  upload path (:func:`mlflow_xai.recording._upload`: artifacts, metrics, ``summary.json``, tags
  last).
* ``job`` items: a job that could not start because the model (or the run's data set) could not
  be loaded from the server, or that was still running when the process exited: its inputs
  (``inputs.pkl`` with cloudpickle; the data as ``data.parquet`` when it is a DataFrame).
  Replayed through the same autolog job (:func:`mlflow_xai.recording.explain_and_record`).

Each item is a folder written under a temporary name (``.tmp-...``) and renamed when complete, so
a crash never leaves a half item that would replay; a replayed item is removed only after it
fully succeeded (renamed to ``.done-...`` first, then deleted). An item whose replay failed for
another reason than an unreachable server (the run was deleted, ...) is moved to ``failed/``
with ``error.txt`` and never retried; delete it once read.

The spool is uploaded by :func:`mlflow_xai.wait`, in the background by the next
:func:`mlflow_xai.autolog` (items for the current tracking URI), and by ``mlflow-xai flush``
(every item, each to the server it was meant for).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_xai.errors import ExplainCancelled, RecordingError
from mlflow_xai.reachability import health_problem, is_unreachable, safe_uri

_logger = logging.getLogger(__name__)

SPOOL_DIR_ENV = "MLFLOW_XAI_SPOOL_DIR"
PROBE_TIMEOUT_ENV = "MLFLOW_XAI_PROBE_TIMEOUT"
DEFAULT_PROBE_TIMEOUT = 3.0
UPLOAD, JOB = "upload", "job"
MANIFEST, ERROR_FILE = "manifest.json", "error.txt"
FAILED = "failed"
HINT = "it will be uploaded by mlflow_xai.wait() / the next autolog() / `mlflow-xai flush`"
_TMP, _DONE = ".tmp-", ".done-"
_STALE_TMP_S = 24 * 3600


class ServerUnreachable(ConnectionError):
    """The tracking server did not answer the probe."""


class Spooled(RecordingError):
    """Raised inside :func:`spooling` once the work was spooled (``path``) instead of recorded."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"spooled to {path} ({reason}); {HINT}")
        self.path, self.reason = Path(path), reason


@dataclass
class Item:
    """One spooled item: its folder, its manifest and (after a flush) why it is still here."""

    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def kind(self) -> str:
        return str(self.manifest.get("kind", "?"))

    @property
    def tracking_uri(self) -> str:
        return str(self.manifest.get("tracking_uri", ""))

    def line(self) -> str:
        m = self.manifest
        what = f"{self.kind} for run {m.get('run_id')}"
        if m.get("model_id"):
            what += f" (model {m['model_id']})"
        return f"{self.path}: {what} on {safe_uri(self.tracking_uri)}: {self.reason or 'pending'}"


class SpoolNotEmpty(RecordingError):
    """Spooled work could not be uploaded (``items``: each with its path and reason); it stays
    in the spool for the next :func:`mlflow_xai.wait`, ``autolog()`` or ``mlflow-xai flush``."""

    def __init__(self, items: list[Item]) -> None:
        self.items = list(items)
        lines = "\n".join(f"  {item.line()}" for item in self.items)
        super().__init__(f"{len(self.items)} spooled explanation(s) could not be uploaded yet:\n"
                         f"{lines}\nThey stay in the spool; run `mlflow-xai flush` (or "
                         "mlflow_xai.wait()) once the tracking server answers.")


@dataclass
class FlushResult:
    uploaded: list[Item] = field(default_factory=list)
    #: still pending (server down, ...) or given up (moved to ``failed/``), each with its reason
    remaining: list[Item] = field(default_factory=list)


# --------------------------------------------------------------------------- where, and probe


def spool_dir() -> Path:
    """``$MLFLOW_XAI_SPOOL_DIR``, else ``$XDG_CACHE_HOME/mlflow-xai/spool`` (default
    ``~/.cache/mlflow-xai/spool``)."""
    explicit = os.environ.get(SPOOL_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "mlflow-xai" / "spool"


def probe(uri: str | None = None, timeout: float | None = None) -> str | None:
    """Why the tracking server at ``uri`` (default: MLflow's current one) does not answer, or
    ``None`` when it does.

    http(s): one ``GET <uri>/health`` with ``timeout`` seconds (``$MLFLOW_XAI_PROBE_TIMEOUT``,
    default 3), made with ``requests`` directly: MLflow's retry settings are neither used nor
    changed. Any HTTP answer but 502/503/504 counts. Other stores (sqlite, file, databricks,
    ...) are not probed.
    """

    if uri is None:
        import mlflow

        uri = mlflow.get_tracking_uri()
    uri = str(uri)
    if timeout is None:
        try:
            timeout = float(os.environ.get(PROBE_TIMEOUT_ENV, DEFAULT_PROBE_TIMEOUT))
        except ValueError:
            timeout = DEFAULT_PROBE_TIMEOUT
    problem = health_problem(uri, timeout)
    if problem is None:
        return None
    return f"the tracking server {safe_uri(uri)} did not answer ({problem})"


# --------------------------------------------------------------------------- spooling context

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("mlflow_xai_spooling",
                                                               default=None)


@contextlib.contextmanager
def spooling(owner: Any) -> Iterator[None]:
    """Within this block (this thread only) the recorder probes the server before uploading and
    spools instead of waiting out MLflow's retries. ``owner`` (an autolog job) has
    ``abandoned``, a :class:`threading.Event` set when the process exits without it."""
    token = _current.set(owner)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Any:
    """The owner of the enclosing :func:`spooling` block, or ``None``."""
    return _current.get()


def check_before_upload(owner: Any) -> str | None:
    """Called by the recorder before it uploads: stop an abandoned job, and return why the
    server cannot be reached (then the caller spools), or ``None``."""
    abandoned = getattr(owner, "abandoned", None)
    if abandoned is not None and abandoned.is_set():
        raise ExplainCancelled("the process is exiting; this job was spooled instead")
    return probe()


def may_spool(owner: Any) -> bool:
    abandoned = getattr(owner, "abandoned", None)
    return owner is not None and not (abandoned is not None and abandoned.is_set())


# --------------------------------------------------------------------------- writing items


def spool_upload(folder: Path, summary: Path, *, metrics: dict[str, float],
                 tags: dict[str, str], dest: Any, run_id: str, digest: str,
                 signature: str | None, timestamp_ms: int | None, reason: str) -> Path:
    """Spool a computed ``xai/`` folder (``summary`` is its ``summary.json``, which the recorder
    holds apart while uploading) with what :func:`mlflow_xai.recording._upload` needs."""
    import mlflow

    def fill(tmp: Path) -> dict[str, Any]:
        xai = tmp / "xai"
        shutil.copytree(folder, xai)
        shutil.copyfile(summary, xai / "summary.json")
        return {}

    manifest = {
        "tracking_uri": mlflow.get_tracking_uri(), "run_id": run_id,
        "model_id": dest.model_id,
        "registered": list(dest.registered) if dest.registered else None,
        "source": dest.source, "log_metrics": dest.log_metrics, "dest_tags": dict(dest.tags),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "metrics_time": timestamp_ms or int(time.time() * 1000),
        "tags": {k: str(v) for k, v in tags.items()},
        "digest": digest, "signature": signature, "reason": reason,
    }
    return _new_item(UPLOAD, manifest, fill)


def spool_job(*, info: Any, run_id: str, data: Any, targets: Any, options: dict[str, Any],
              tracking_uri: str | None, reason: str, source: str = "autolog") -> Path:
    """Spool an autolog job's inputs (``info``: the ModelInfo of the logged model)."""
    import cloudpickle

    def fill(tmp: Path) -> dict[str, Any]:
        data_format = "none" if data is None else "pickle"
        if data is not None and type(data).__name__ == "DataFrame" and hasattr(data,
                                                                               "to_parquet"):
            try:
                data.to_parquet(tmp / "data.parquet")
                data_format = "parquet"
            except Exception:  # noqa: BLE001 - column names or types parquet cannot hold
                (tmp / "data.parquet").unlink(missing_ok=True)
        inputs = {"targets": targets, "options": options, "info": info,
                  "data": data if data_format == "pickle" else None}
        try:
            blob = cloudpickle.dumps(inputs)
        except Exception:  # noqa: BLE001 - an unpicklable ModelInfo: the manifest has the rest
            inputs["info"] = None
            blob = cloudpickle.dumps(inputs)
        (tmp / "inputs.pkl").write_bytes(blob)
        return {"data_format": data_format}

    version = getattr(info, "registered_model_version", None)
    manifest = {
        "tracking_uri": tracking_uri, "run_id": run_id,
        "model_id": getattr(info, "model_id", None), "model_uri": info.model_uri,
        "registered_version": None if version is None else str(version),
        "source": source, "reason": reason,
    }
    return _new_item(JOB, manifest, fill)


def _new_item(kind: str, manifest: dict[str, Any],
              fill: Callable[[Path], dict[str, Any]]) -> Path:
    """Write an item under a temporary name, then rename it: all or nothing."""
    root = spool_dir()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = f"{int(time.time() * 1000):013d}-{kind}-{uuid.uuid4().hex[:8]}"
    tmp = root / f"{_TMP}{name}"
    tmp.mkdir(mode=0o700)
    try:
        extra = fill(tmp)
        _write_json(tmp / MANIFEST, {"format": 1, "kind": kind, "created": time.time(),
                                     "host": socket.gethostname(), "pid": os.getpid(),
                                     **manifest, **extra})
        _fsync_tree(tmp)
        os.rename(tmp, root / name)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root / name


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(root)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- reading items


def items(tracking_uri: str | None = None, *, root: Path | None = None) -> list[Item]:
    """Complete items waiting in the spool (for ``tracking_uri`` when given), oldest first.
    Temporary (half-written) folders and ``failed/`` are not items."""
    root = spool_dir() if root is None else Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or path.name == FAILED or not path.is_dir():
            continue
        item = _read(path)
        if tracking_uri is None or _same_uri(item.tracking_uri, tracking_uri):
            found.append(item)
    return found


def failed_items(tracking_uri: str | None = None, *, root: Path | None = None) -> list[Item]:
    """Items given up on (in ``failed/``), each with the first line of its ``error.txt``."""
    root = (spool_dir() if root is None else Path(root)) / FAILED
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or not path.is_dir():
            continue
        item = _read(path)
        if tracking_uri is not None and not _same_uri(item.tracking_uri, tracking_uri):
            continue
        try:
            first = (path / ERROR_FILE).read_text().strip().splitlines()[0]
        except (OSError, IndexError):
            first = "replay failed"
        item.reason = f"gave up: {first} (read {path / ERROR_FILE}, then delete the folder)"
        found.append(item)
    return found


def _read(path: Path) -> Item:
    try:
        return Item(path, json.loads((path / MANIFEST).read_text()))
    except (OSError, ValueError) as exc:
        return Item(path, {}, f"unreadable manifest ({type(exc).__name__}: {exc})")


# --------------------------------------------------------------------------- flushing


def flush(tracking_uri: str | None = None, *, replay: Callable[[Item], None],
          root: Path | None = None, deadline: float | None = None) -> FlushResult:
    """Upload the items spooled for ``tracking_uri`` (default: MLflow's current one, which must
    be where they go: the recorder uploads to the current tracking URI), oldest first.

    ``replay`` uploads one item (``mlflow_xai.autologging.replay_item``: the spool only stores
    and hands out items, it knows neither the recorder nor autolog). The server is probed
    once; when it does not answer nothing is tried. ``deadline``
    (``time.monotonic()``) stops starting new items. Returns what was uploaded and what remains,
    with why.
    """
    import mlflow

    root = spool_dir() if root is None else Path(root)
    result = FlushResult()
    uri = mlflow.get_tracking_uri() if tracking_uri is None else str(tracking_uri)
    pending = items(uri, root=root)
    if not pending:
        return result
    _clean(root)
    unsafe = _unsafe_folder(root)
    down: str | None = None
    probed = False
    for item in pending:
        if not item.manifest:
            result.remaining.append(item)
            continue
        if deadline is not None and time.monotonic() > deadline:
            item.reason = "not tried: the time given ran out"
            result.remaining.append(item)
            continue
        if not _same_uri(mlflow.get_tracking_uri(), item.tracking_uri):
            item.reason = f"the current tracking URI is {safe_uri(mlflow.get_tracking_uri())}"
            result.remaining.append(item)
            continue
        if item.kind == JOB and unsafe:
            item.reason = f"not replayed: {unsafe}"
            result.remaining.append(item)
            continue
        if not probed:
            down, probed = probe(uri), True
        if down:
            item.reason = down
            result.remaining.append(item)
            continue
        outcome = _replay_claimed(item, replay)
        if outcome == "uploaded":
            result.uploaded.append(item)
        elif isinstance(outcome, Item):  # a job computed; its upload spooled again
            result.remaining.append(outcome)
        else:
            result.remaining.append(item)
            if item.reason.startswith("the tracking server"):
                down = item.reason
    return result


def _replay_claimed(item: Item, replay: Callable[[Item], None]) -> str | Item | None:
    """Replay ``item`` while holding its lock; remove it when done. Returns ``"uploaded"``,
    the new upload item (a replayed job whose upload was spooled), or ``None`` (``item.reason``
    says why)."""
    with _claim(item.path) as claimed:
        if not claimed:
            item.reason = "being uploaded by another process"
            return None
        if not item.path.exists():
            item.reason = "uploaded meanwhile by another process"
            return "uploaded"
        try:
            if item.kind not in (UPLOAD, JOB):
                raise RecordingError(f"unknown spool item kind {item.kind!r}")
            replay(item)
        except Spooled as exc:
            _remove(item.path)
            return Item(exc.path, _read(exc.path).manifest, exc.reason)
        except Exception as exc:  # noqa: BLE001 - reported per item
            if is_unreachable(exc):
                item.reason = (f"the tracking server did not answer ({type(exc).__name__}: "
                               f"{_one_line(exc)})")
                return None
            item.reason = f"gave up: {type(exc).__name__}: {_one_line(exc)}"
            _give_up(item, exc)
            return None
        _remove(item.path)
        return "uploaded"


@contextlib.contextmanager
def _claim(path: Path) -> Iterator[bool]:
    """An exclusive, non-blocking lock on the item (released when the process dies)."""
    try:
        import fcntl
    except ImportError:  # Windows: no cross-process lock
        yield True
        return
    try:
        fd = os.open(path / MANIFEST, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Done: rename away first (a crash mid-delete never leaves a replayable half item)."""
    gone = path.parent / f"{_DONE}{path.name}"
    os.rename(path, gone)
    shutil.rmtree(gone, ignore_errors=True)


def _give_up(item: Item, exc: BaseException) -> None:
    import traceback

    text = f"{type(exc).__name__}: {_one_line(exc)}\n\n" + "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        (item.path / ERROR_FILE).write_text(text)
        target = item.path.parent / FAILED
        target.mkdir(exist_ok=True, mode=0o700)
        os.rename(item.path, target / item.path.name)
        item.path = target / item.path.name
        item.reason = f"{item.reason} (kept in {item.path}; read {ERROR_FILE}, then delete it)"
    except OSError as move_exc:
        _logger.warning("mlflow-xai: could not move %s to %s/: %s", item.path, FAILED, move_exc)


def _clean(root: Path) -> None:
    """Remove leftovers: ``.done-`` folders (uploaded, removal interrupted) and ``.tmp-``
    folders older than a day (a writer that crashed)."""
    now = time.time()
    for path in root.iterdir():
        try:
            if path.name.startswith(_DONE) or (
                    path.name.startswith(_TMP) and now - path.stat().st_mtime > _STALE_TMP_S):
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            continue


def _unsafe_folder(root: Path) -> str | None:
    """Job items are unpickled: refuse a spool folder someone else could have written to."""
    if not hasattr(os, "getuid"):
        return None
    try:
        st = root.stat()
    except OSError as exc:
        return f"cannot read {root}: {exc}"
    if st.st_uid != os.getuid():
        return f"{root} belongs to another user (job items are unpickled)"
    if st.st_mode & 0o022:
        return (f"{root} is writable by others (job items are unpickled); chmod go-w it to "
                "replay them")
    return None


def _same_uri(a: str | None, b: str | None) -> bool:
    return str(a or "").rstrip("/") == str(b or "").rstrip("/")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return (text[:limit] + "...") if len(text) > limit else (text or type(exc).__name__)
