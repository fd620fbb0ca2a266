"""Watch service: explain every new LoggedModel and registered model version on a tracking server.

``mlflow-xai watch`` polls the server, explains each model once, applies the governance policy
and writes the usual ``xai/`` artifacts, metrics and tags (the same as autolog does).

The watcher handles other people's models and runs, so it trusts none of their tags:

* **Its own state only.** It decides what to do from ``mlflow_xai.watch`` (``running``,
  ``interrupted``, ``done``, ``failed``, ``skipped``), ``mlflow_xai.watch.owner``,
  ``.time`` and ``.attempt``, and only when ``mlflow_xai.watch.seal`` is the HMAC of those
  values under the watcher's key (``MLFLOW_XAI_SIGNING_KEY``, else a key file created in the
  user's cache, ``MLFLOW_XAI_WATCH_KEY_FILE`` to move it). State an author wrote by hand is
  ignored, and so are their ``mlflow_xai.status`` / ``mlflow_xai.run_id`` tags: a model is
  skipped as "already explained" only when its recorded explanation verifies like the gate
  verifies it, signature included (so only with ``MLFLOW_XAI_SIGNING_KEY`` shared with the
  clients that run autolog).
* **Exactly once across watchers.** Before explaining, a watcher claims the model by creating
  the experiment ``mlflow-xai-claim/<model>/<attempt>``: experiment names are unique in every
  MLflow store (a database constraint), so exactly one watcher's create succeeds; it is deleted
  at once (hidden from the UI; the name stays taken). A claim whose holder died (same host: its
  pid is gone; any host: no sealed progress after ``claim_timeout`` s) or was interrupted is
  taken over by claiming ``attempt + 1``, again atomically.
* **Data it may read.** A run's data set is read only from the run's own artifact location or
  from ``allowed_sources`` prefixes in the watch config; any other URL or path is refused with
  the reason (and the config's reference ``data`` is used instead, when given).
* **Models that hang** run in a worker process that is stopped after ``--model-timeout`` s (the
  model is recorded as failed) or at the first SIGTERM (the claim is released for the next
  watcher).

To redo a model, delete its ``mlflow_xai.watch*`` tags.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow_xai import tags as tag
from mlflow_xai.config_file import OWN_CONFIG_KEYS  # noqa: F401 - the --config YAML's own keys
from mlflow_xai.errors import ConfigError, XaiError
from mlflow_xai.reachability import ServerUnreachable as _Unreachable
from mlflow_xai.reachability import is_unreachable, short_reason  # noqa: F401 - re-exported

_logger = logging.getLogger("mlflow_xai.watch")

WATCH_TAG = tag.WATCH
OWNER_TAG = tag.WATCH_OWNER
TIME_TAG = tag.WATCH_TIME
REASON_TAG = tag.WATCH_REASON
ATTEMPT_TAG = tag.WATCH_ATTEMPT
SEAL_TAG = tag.WATCH_SEAL
STATUS_TAG = tag.STATUS
TERMINAL = ("done", "failed", "skipped")
#: A claim experiment's name: one per model and attempt (experiment names are unique).
CLAIM_PREFIX = "mlflow-xai-claim"
#: Give up claiming a model after this many attempts (each one died or was interrupted).
MAX_ATTEMPTS = 20
KEY_FILE_ENV = "MLFLOW_XAI_WATCH_KEY_FILE"
#: Copied from an explained LoggedModel onto the registered version that points at it.
#: (Labels only: the version's governance verdict is judged from the model's verified record.)
MIRRORED_TAGS = (STATUS_TAG, tag.RUN_ID, tag.ERROR)
#: Model version tag values are capped by the server (5000 chars); stay well below.
MAX_TAG_VALUE = 1000
#: Between full listings, only models created after the oldest unfinished one are listed.
FULL_SCAN_EVERY = 60
#: Slack on that cursor for server replicas whose clocks disagree (milliseconds).
CURSOR_SLACK_MS = 120_000


class ServerUnreachable(_Unreachable):
    """The tracking server did not answer; the watcher backs off and tries again."""


@dataclass
class WatchConfig:
    """What to explain with: ``explain()`` options plus optional reference data."""

    options: dict[str, Any] = field(default_factory=dict)
    reference: Any = None  # DataFrame used when a model's run has no loadable data set
    reference_path: str | None = None
    #: Data-set sources the operator allows besides each run's own artifacts.
    allowed_sources: list[str] = field(default_factory=list)

    @property
    def targets(self) -> str | None:
        targets = self.options.get("targets")
        return targets if isinstance(targets, str) else None

    @classmethod
    def load(cls, path: str | os.PathLike | None, *, policy: Any = None) -> WatchConfig:
        """Read the ``--config`` YAML (``data``, ``targets`` and any explain() option).

        Unknown keys, methods and parameters are refused here, before the watcher starts.
        """
        from mlflow_xai.config_file import load_config_file, read_reference

        loaded = load_config_file(path, label="watch config",
                                  # as in autolog: a failing method is recorded
                                  defaults={"strict": False},
                                  overrides=None if policy is None else {"policy": policy})
        reference = None
        if loaded.data_path is not None:
            reference = read_reference(loaded.data_path, loaded.config.targets)
        return cls(options=loaded.options, reference=reference,
                   reference_path=loaded.data_path, allowed_sources=loaded.allowed_sources)


def state_key() -> bytes:
    """The key that seals the watcher's own state tags.

    ``MLFLOW_XAI_SIGNING_KEY`` when set (give every watcher host the same one); otherwise a
    random key kept in a file (``MLFLOW_XAI_WATCH_KEY_FILE``, default
    ``~/.cache/mlflow-xai/watch.key``), created on first use with mode 0600.
    """
    from mlflow_xai.provenance import signing_key

    key = signing_key()
    if key:
        return key
    path = Path(os.environ.get(KEY_FILE_ENV) or
                Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "mlflow-xai" / "watch.key")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another watcher on this host created it first
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


@dataclass
class Handled:
    """One model the watcher dealt with during a poll."""

    kind: str  # "logged model" | "model version"
    key: str  # model id, or name/version
    outcome: str  # done | failed | skipped
    seconds: float
    detail: str = ""


@dataclass
class _Target:
    """A model to explain and where its tags go."""

    kind: str
    key: str
    uri: str
    run_id: str | None
    model_id: str | None
    registered: tuple[str, str] | None
    tags: dict[str, str]
    set_tags: Callable[[dict[str, str]], None]
    get_tags: Callable[[], dict[str, str]]


class Watcher:
    """Polls one tracking server and explains what is new.

    The process-wide MLflow tracking URI is set to ``tracking_uri``: the explanation code logs
    through ``MlflowClient()``, as autolog does, so a watcher owns its process.
    """

    def __init__(self, tracking_uri: str, *, experiments: tuple[str, ...] | list[str] = (),
                 registered_models: tuple[str, ...] | list[str] = (),
                 config: WatchConfig | None = None, interval: float = 10.0,
                 max_backoff: float = 30.0, claim_timeout: float = 3600.0,
                 since_ms: int | None = None, min_age: float = 30.0) -> None:
        # Our own back-off replaces MLflow's (7 retries, minutes of silence): fail fast, log why.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow
        from mlflow import MlflowClient

        mlflow.set_tracking_uri(tracking_uri)
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.experiments = list(experiments)
        self.registered_models = list(registered_models)
        self.config = config or WatchConfig.load(None)
        self.interval = float(interval)
        self.max_backoff = float(max_backoff)
        self.claim_timeout = float(claim_timeout)
        self.since_ms = since_ms
        self.min_age = float(min_age)
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{secrets.token_hex(3)}"
        self._policy = None
        if self.config.options.get("policy") is not None:
            from mlflow_xai.governance import load_policy

            self._policy = load_policy(self.config.options["policy"])
        self._missing_experiments: set[str] = set()
        self._errored: set[str] = set()
        self._cursor_ms: int | None = None  # in memory only: a restart lists everything once
        self._scans = 0
        self._key = state_key()
        self._attempts: dict[str, int] = {}
        self._stop_event: threading.Event | None = None
        from mlflow_xai.sources import SourcePolicy

        self.sources = SourcePolicy(list(self.config.allowed_sources))

    # ------------------------------------------------------------------ loop

    def run_forever(self, stop_event: threading.Event) -> None:
        """Poll every ``interval`` seconds until ``stop_event`` is set.

        An unreachable server (or any unexpected error while listing) never ends the loop: one
        log line, then exponential back-off (1, 2, 4, ... ``max_backoff`` s).
        """
        delay = 0.0
        outage_since: float | None = None
        polls = 0
        while not stop_event.is_set():
            try:
                handled = self.poll_once(stop_event)
            except Exception as exc:
                delay = min(self.max_backoff, delay * 2 if delay else 1.0)
                if outage_since is None:
                    outage_since = time.monotonic()
                down = time.monotonic() - outage_since
                if is_unreachable(exc) and down < 0.5:
                    _logger.warning("tracking server unreachable (%s); retrying in %gs",
                                    short_reason(exc), delay)
                elif is_unreachable(exc):
                    _logger.warning("tracking server still unreachable after %.0fs (%s); "
                                    "retrying in %gs", down, short_reason(exc), delay)
                else:
                    _logger.exception("poll failed; retrying in %gs", delay)
                stop_event.wait(delay)
                continue
            polls += 1
            if outage_since is not None:
                _logger.info("tracking server reachable again after %.1fs",
                             time.monotonic() - outage_since)
                outage_since, delay = None, 0.0
            level = logging.INFO if handled or polls == 1 else logging.DEBUG
            _logger.log(level, "poll %d: %s", polls, describe(handled))
            stop_event.wait(self.interval)
        _logger.info("stopped")

    def poll_once(self, stop_event: threading.Event | None = None) -> list[Handled]:
        """List what is new and handle it, oldest first; return what was done.

        Raises when the server cannot be reached (nothing half-recorded is left behind: a model
        being explained keeps its ``running`` claim and is taken up again on the next poll).
        """
        handled: list[Handled] = []
        self._stop_event = stop_event
        stopping = stop_event.is_set if stop_event is not None else (lambda: False)
        floor = None if self._scans % FULL_SCAN_EVERY == 0 else self._cursor_ms
        models = list(self._logged_models(self._experiment_ids(), floor))
        newest, oldest_open = floor or 0, None
        for model in models:
            if stopping():
                return handled
            created = model.creation_timestamp or 0
            newest = max(newest, created)
            results = self._guarded(f"logged model {model.model_id}",
                                    lambda m=model: [self._consider_logged_model(m)])
            handled.extend(r for r in results if r is not None)
            if not any(results) and not self._finished(model) and (
                    oldest_open is None or created < oldest_open):
                oldest_open = created  # still to do (too young, pending, claimed elsewhere)
        self._scans += 1
        self._cursor_ms = max(0, (oldest_open if oldest_open is not None else newest)
                              - CURSOR_SLACK_MS)
        for name in self.registered_models:
            for version in list(self._versions(name)):
                if stopping():
                    return handled
                results = self._guarded(f"model version {name}/{version.version}",
                                        lambda v=version: self._consider_version(v))
                handled.extend(r for r in results if r is not None)
        return handled

    def _guarded(self, label: str, handle: Callable[[], list[Handled | None]]
                 ) -> list[Handled | None]:
        """One model's trouble (say, a tag the server refuses) must not stall the others; an
        unreachable server still ends the poll, to back off."""
        try:
            return handle()
        except Exception as exc:
            if is_unreachable(exc):
                raise
            # The traceback once per model, a line on later polls.
            _logger.error("error while handling %s; trying again next poll: %s", label,
                          short_line(f"{type(exc).__name__}: {exc}", 300),
                          exc_info=label not in self._errored)
            self._errored.add(label)
            return []

    # ------------------------------------------------------------------ listing

    def _experiment_ids(self) -> list[str]:
        from mlflow.entities import ViewType

        if not self.experiments:
            ids, token = [], None
            while True:
                page = self.client.search_experiments(view_type=ViewType.ACTIVE_ONLY,
                                                      max_results=1000, page_token=token)
                ids.extend(e.experiment_id for e in page)
                token = page.token
                if not token:
                    return ids
        ids = []
        for ref in self.experiments:
            experiment = self.client.get_experiment_by_name(ref)
            if experiment is None and ref.isdigit():
                experiment = self._experiment_by_id(ref)
            if experiment is None:
                if ref not in self._missing_experiments:  # say it once, not every poll
                    _logger.warning("experiment '%s' not found (yet); still watching for it", ref)
                    self._missing_experiments.add(ref)
                continue
            self._missing_experiments.discard(ref)
            ids.append(experiment.experiment_id)
        return ids

    def _experiment_by_id(self, experiment_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_experiment(experiment_id)
        except MlflowException as exc:
            if is_unreachable(exc):
                raise
            return None

    def _logged_models(self, experiment_ids: list[str], floor_ms: int | None = None
                       ) -> Iterator[Any]:
        where = f"creation_timestamp >= {int(floor_ms)}" if floor_ms else None
        for start in range(0, len(experiment_ids), 100):
            chunk, token = experiment_ids[start:start + 100], None
            while True:
                page = self.client.search_logged_models(
                    experiment_ids=chunk, filter_string=where, max_results=100, page_token=token,
                    order_by=[{"field_name": "creation_timestamp", "ascending": True}])
                yield from page
                token = page.token
                if not token:
                    break

    def _versions(self, name: str) -> Iterator[Any]:
        token = None
        escaped = name.replace("'", "\\'")
        while True:
            page = self.client.search_model_versions(f"name = '{escaped}'", max_results=200,
                                                     page_token=token)
            yield from sorted(page, key=lambda mv: int(mv.version))
            token = page.token
            if not token:
                return

    # ------------------------------------------------------------------ per model

    def _logged_model_target(self, model: Any, registered: tuple[str, str] | None = None
                             ) -> _Target:
        model_id = model.model_id

        def get_tags() -> dict[str, str]:
            return dict(self.client.get_logged_model(model_id).tags or {})

        return _Target(kind="logged model", key=model_id, uri=f"models:/{model_id}",
                       run_id=model.source_run_id, model_id=model_id, registered=registered,
                       tags=dict(model.tags or {}),
                       set_tags=lambda tags: self.client.set_logged_model_tags(model_id, tags),
                       get_tags=get_tags)

    def _version_target(self, mv: Any) -> _Target:
        name, version = mv.name, str(mv.version)

        def set_tags(tags: dict[str, str]) -> None:
            for key, value in tags.items():
                self.client.set_model_version_tag(name, version, key, value)

        def get_tags() -> dict[str, str]:
            return dict(self.client.get_model_version(name, version).tags or {})

        return _Target(kind="model version", key=f"{name}/{version}",
                       uri=f"models:/{name}/{version}", run_id=mv.run_id, model_id=None,
                       registered=(name, version), tags=dict(mv.tags or {}), set_tags=set_tags,
                       get_tags=get_tags)

    def _consider_logged_model(self, model: Any, registered: tuple[str, str] | None = None
                               ) -> Handled | None:
        from mlflow.entities import LoggedModelStatus

        status = getattr(model, "status", None)
        if status not in (LoggedModelStatus.READY, "READY"):
            return None  # still uploading (PENDING) or abandoned (FAILED): nothing to load
        if not self._old_enough(model.creation_timestamp):
            return None
        return self._process(self._logged_model_target(model, registered))

    def _consider_version(self, mv: Any) -> list[Handled | None]:
        if str(getattr(mv, "status", "READY")) != "READY":
            return []
        if not self._old_enough(mv.creation_timestamp):
            return []
        target = self._version_target(mv)
        if not self._wants(target):
            return []
        model = self._logged_model_of(mv)
        if model is None:
            return [self._process(target)]  # a pre-MLflow-3 version: explain it directly
        # The version points at a LoggedModel: explain that one (once) and mirror its tags.
        started = time.monotonic()
        model_id = model.model_id
        first = self._consider_logged_model(model, registered=target.registered)
        model_tags = dict(self.client.get_logged_model(model_id).tags or {})
        state, _ = self._own_state(model_id, model_tags)
        if state not in TERMINAL:
            return [first]  # claimed by another watcher, or not ready: next poll
        mirrored = {k: model_tags[k][:MAX_TAG_VALUE] for k in MIRRORED_TAGS if k in model_tags}
        mirrored[tag.MODEL_ID] = model_id
        detail = f"model {model_id}: {model_tags.get(STATUS_TAG, state)}"
        if self._policy is not None and model.source_run_id:
            # Not copied from the model's tags (its author can write those): judged again from
            # the model's verified record, as the gate would.
            verdict, why = self._verdict_from_record(model.source_run_id, model_id)
            mirrored[tag.GOVERNANCE] = verdict
            detail += f", governance {verdict}" + (f" ({why})" if why else "")
        target.set_tags(self._state_tags(target, state, extra=mirrored))
        _logger.info("%s model version %s (%s)", state, target.key, detail)
        return [first, Handled(target.kind, target.key, state, time.monotonic() - started,
                               detail)]

    def _verdict_from_record(self, run_id: str, model_id: str) -> tuple[str, str]:
        """The policy's verdict on a model's recorded explanation, verified like the gate does
        (``failed`` with the reason when it cannot be verified)."""
        from mlflow_xai.gate import GateError, Target, recorded_facts
        from mlflow_xai.governance import evaluate_policy

        try:
            facts, _ = recorded_facts(Target(run_id, model_id))
            return evaluate_policy(self._policy, facts)["verdict"], ""
        except (GateError, ConfigError) as exc:
            return "failed", short_line(str(exc), 200)

    # ------------------------------------------------------------------ own state

    def _seal(self, key: str, state: str, owner: str, when: str, attempt: str) -> str:
        message = "|".join((key, state, owner, when, attempt))
        return hmac.new(self._key, message.encode(), hashlib.sha256).hexdigest()

    def _own_state(self, key: str, tags: dict[str, str]) -> tuple[str | None, int]:
        """(state, attempt) when the state tags were sealed with our key; else (None, -1).

        Anything an author wrote by hand (``mlflow_xai.watch=done`` to make the watcher skip a
        model) fails the seal and is ignored.
        """
        state = tags.get(WATCH_TAG)
        attempt = tags.get(ATTEMPT_TAG, "")
        if not state or not attempt.isdigit():
            return None, -1
        expected = self._seal(key, state, tags.get(OWNER_TAG, ""), tags.get(TIME_TAG, ""),
                              attempt)
        if not hmac.compare_digest(expected, tags.get(SEAL_TAG, "")):
            return None, -1
        return state, int(attempt)

    def _state_tags(self, target: _Target, state: str, *, attempt: int | None = None,
                    extra: dict[str, str] | None = None) -> dict[str, str]:
        attempt_text = str(self._attempts.get(target.key, 0) if attempt is None else attempt)
        when = _now()
        own = {WATCH_TAG: state, OWNER_TAG: self.owner, TIME_TAG: when,
               ATTEMPT_TAG: attempt_text,
               SEAL_TAG: self._seal(target.key, state, self.owner, when, attempt_text)}
        return {**(extra or {}), **own}

    def _finished(self, model: Any) -> bool:
        """Nothing left to do for this model (handled, or before --since)."""
        if self._own_state(model.model_id, dict(model.tags or {}))[0] in TERMINAL:
            return True
        return self.since_ms is not None and (model.creation_timestamp or 0) < self.since_ms

    def _old_enough(self, created_ms: int | None) -> bool:
        """After --since, and at least ``min_age`` s old: a client running autolog records its
        explanation within that time, and the watcher then only judges it."""
        created = (created_ms or 0) / 1000
        if self.since_ms is not None and created * 1000 < self.since_ms:
            return False
        return time.time() - created >= self.min_age

    def _logged_model_of(self, mv: Any) -> Any:
        """The LoggedModel a version was registered from, if any."""
        from mlflow.exceptions import MlflowException

        from mlflow_xai.gate import model_id_of_version

        model_id = model_id_of_version(mv)
        if not model_id:
            return None
        try:
            return self.client.get_logged_model(model_id)
        except MlflowException as exc:
            if is_unreachable(exc):
                raise
            return None

    def _wants(self, target: _Target) -> bool:
        """Not handled yet (by our sealed state) and not claimed by a live watcher."""
        state, _ = self._own_state(target.key, target.tags)
        if state in TERMINAL:
            return False
        return state != "running" or self._claim_is_stale(target.tags)

    def _claim_is_stale(self, tags: dict[str, str]) -> bool:
        return claim_is_stale(tags, owner=self.owner, host=self.host,
                              claim_timeout=self.claim_timeout)

    def _process(self, target: _Target) -> Handled | None:
        if not self._wants(target):
            return None
        target.tags = target.get_tags()  # the listing may be stale: decide on fresh state
        if not self._wants(target):
            return None
        started = time.monotonic()
        trusted = self._trusted_explanation(target)
        if trusted is not None:
            return self._already_explained(target, started, trusted)
        if not self._claim(target):
            return None
        _logger.info("explaining %s %s (attempt %d)", target.kind, target.key,
                     self._attempts.get(target.key, 0))
        from mlflow_xai.errors import ExplainCancelled

        try:
            outcome, detail = self._explain(target)
        except ExplainCancelled:
            # Stopping: hand the model back at once (the next watcher claims attempt + 1).
            target.set_tags(self._state_tags(target, "interrupted"))
            _logger.info("interrupted %s %s after %.1fs; released for the next watcher",
                         target.kind, target.key, time.monotonic() - started)
            return None
        except Exception as exc:
            if is_unreachable(exc) or not self._server_answers():
                # Not the model's fault: keep the claim (ours) and redo it after the outage.
                raise ServerUnreachable(short_reason(exc)) from exc
            reason = f"{type(exc).__name__}: {exc}"
            self._record_failure(target, exc, reason)
            seconds = time.monotonic() - started
            _logger.warning("failed %s %s in %.1fs: %s (recorded as %s=failed)", target.kind,
                            target.key, seconds, short_line(reason), STATUS_TAG)
            return Handled(target.kind, target.key, "failed", seconds, short_line(reason))
        seconds = time.monotonic() - started
        if outcome == "skipped":
            _logger.info("skipped %s %s: %s", target.kind, target.key, detail)
        else:
            _logger.info("explained %s %s (run %s) in %.1fs: %s", target.kind, target.key,
                         target.run_id, seconds, detail)
        return Handled(target.kind, target.key, outcome, seconds, detail)

    def _claim(self, target: _Target) -> bool:
        """Claim the model atomically: create the experiment ``mlflow-xai-claim/<key>/<n>``.

        Experiment names are unique in every MLflow store (a database constraint), so of
        several watchers creating the same name exactly one succeeds. Attempt ``n + 1`` is
        claimed only when attempt ``n``'s holder is gone (see :meth:`_attempt_abandoned`).
        """
        from mlflow.exceptions import MlflowException

        state, attempt = self._own_state(target.key, target.tags)
        n = attempt + 1 if state in ("running", "interrupted") else 0
        for _ in range(MAX_ATTEMPTS):
            name = claim_name(target.key, n)
            try:
                experiment_id = self.client.create_experiment(name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                following = self._attempt_abandoned(target, name, n)
                if following is None:
                    return False
                n = following
                continue
            try:  # hidden from the UI; the name stays reserved while the experiment is deleted
                self.client.delete_experiment(experiment_id)
            except MlflowException as exc:
                _logger.debug("could not hide claim experiment %s: %s", name, exc)
            self._attempts[target.key] = n
            target.set_tags(self._state_tags(target, "running", attempt=n))
            return True
        _logger.warning("gave up claiming %s %s after %d abandoned attempts", target.kind,
                        target.key, MAX_ATTEMPTS)
        return False

    def _attempt_abandoned(self, target: _Target, name: str, n: int) -> int | None:
        """Attempt ``n`` is held by someone: the next attempt to try if its holder is gone,
        else ``None`` (leave the model to them)."""
        tags = target.get_tags()
        state, attempt = self._own_state(target.key, tags)
        if state in TERMINAL:
            return None
        if state is not None and attempt >= n:
            if state == "interrupted" or (state == "running" and self._claim_is_stale(tags)):
                return attempt + 1
            return None
        # Claimed, but no sealed progress for it: the holder died before writing any, or
        # somebody squats on the name. Either way, after claim_timeout the next attempt is fair.
        claim = self.client.get_experiment_by_name(name)
        created = (getattr(claim, "creation_time", None) or 0) / 1000
        if claim is not None and time.time() - created > self.claim_timeout:
            return n + 1
        return None

    def _trusted_explanation(self, target: _Target) -> Any:
        """Facts of an explanation recorded elsewhere (autolog, the evaluator) that verify as
        the gate verifies them, signature included; ``None`` when there is none to trust.

        Without ``MLFLOW_XAI_SIGNING_KEY`` nothing an author recorded can be told from a
        forgery, so the watcher explains the model itself.
        """
        from mlflow_xai.provenance import signing_key

        if signing_key() is None or not target.run_id:
            return None
        from mlflow_xai.gate import GateError, Target, recorded_facts

        name, version = target.registered or (None, None)
        try:
            facts, _ = recorded_facts(Target(target.run_id, target.model_id, name, version))
        except GateError:
            return None
        except Exception as exc:
            if is_unreachable(exc):
                raise
            return None
        return None if facts.blockers else facts

    def _already_explained(self, target: _Target, started: float, facts: Any) -> Handled:
        """Explained and signed elsewhere: judge it against the policy and mark it handled."""
        detail = "already explained (signed explanation verified)"
        if self._policy is not None:
            from mlflow_xai.governance import evaluate_policy, set_governance_tags

            outcome = evaluate_policy(self._policy, facts)
            name, version = target.registered or (None, None)
            set_governance_tags(outcome["verdict"], run_id=target.run_id,
                                model_id=target.model_id, registered_model=name,
                                model_version=version)
            self.client.log_dict(target.run_id, {"mode": "recorded", "run_id": target.run_id,
                                                 "model_id": target.model_id, **outcome},
                                 "xai/governance.json")
            detail += f"; governance {outcome['verdict']}"
        target.set_tags(self._state_tags(target, "skipped", extra={REASON_TAG: detail}))
        _logger.info("skipped %s %s: %s", target.kind, target.key, detail)
        return Handled(target.kind, target.key, "skipped", time.monotonic() - started, detail)

    def _destination(self, target: _Target) -> Any:
        from mlflow_xai.recording import Destination

        return Destination(target.run_id, target.model_id, target.registered, source="watch")

    def _explain(self, target: _Target) -> tuple[str, str]:
        """Gather one model's inputs and hand them to the recorder; ``(outcome, detail)``."""
        import mlflow

        from mlflow_xai.config import ENTRANCE_DEFAULTS, XaiConfig
        from mlflow_xai.recording import explain_and_record, record_failure

        if not target.run_id:
            raise XaiError("the model has no source run to attach explanations to (log it "
                           "inside a run, or explain it with `mlflow-xai explain --run-id`).")
        dest = self._destination(target)
        info = mlflow.models.get_model_info(target.uri)
        data, targets, source = self._data_for(target.run_id, info)
        if data is None:
            if not self._server_answers():  # the data set's download may have failed for that
                raise ServerUnreachable(f"while loading the data set of run {target.run_id}")
            reason = (f"no data to explain: {source}. Log a CSV/parquet-backed data set with "
                      "mlflow.log_input(..., context='eval') from the run's artifacts or an "
                      "allowed_sources location, or name reference data in --config "
                      "(data: path).")
            record_failure(dest, reason, status="skipped")
            target.set_tags(self._state_tags(target, "skipped", extra={
                STATUS_TAG: "skipped", REASON_TAG: reason[:MAX_TAG_VALUE]}))
            return "skipped", reason
        config = XaiConfig.from_mapping({**ENTRANCE_DEFAULTS, **self.config.options,
                                         "targets": targets}, where="watch config")
        expl = explain_and_record(target.uri, data, config, dest, data_source=source,
                                  cancel=self._stop_event, raise_errors=True).explanations
        verdict = (expl.governance or {}).get("verdict")
        target.set_tags(self._state_tags(target, "done",
                                         extra={tag.RUN_ID: target.run_id}))
        detail = (f"{', '.join(expl.methods) or 'no methods'}, "
                  f"{expl.summary['data'].get('rows_explained')} rows, "
                  f"status {expl.summary['status']}, data: {source}")
        if verdict is not None:
            detail += f", governance {verdict}"
        return "done", detail

    def _data_for(self, run_id: str, info: Any) -> tuple[Any, Any, str]:
        """The run's logged data set (eval contexts first) when its source is allowed, else the
        config's reference data."""
        from mlflow_xai.autologging import _data_from_run, _signature_columns

        wanted = self.config.targets
        data, targets, source = _data_from_run(run_id, sources=self.sources, use_cache=False)
        if data is not None:
            # A data set loaded from its file does not remember its label column: the config's
            # `targets` names it.
            if targets is None and wanted is not None and wanted in data.columns:
                targets = wanted
            return _signature_columns(data, info, targets), targets, source
        if self.config.reference is not None:
            return (_signature_columns(self.config.reference, info, wanted), wanted,
                    f"reference data {self.config.reference_path} ({source})")
        return None, None, source

    def _record_failure(self, target: _Target, exc: BaseException, reason: str) -> None:
        from mlflow_xai.recording import record_failure

        if target.run_id:
            record_failure(self._destination(target), exc)
        target.set_tags(self._state_tags(target, "failed", extra={
            STATUS_TAG: "failed", tag.ERROR: reason[:MAX_TAG_VALUE]}))

    def _server_answers(self) -> bool:
        """A failure seen while the server was going down must not be blamed on the model."""
        try:
            self.client.search_experiments(max_results=1)
            return True
        except Exception as exc:  # noqa: BLE001 - any answer, even an error, means it is up
            return not is_unreachable(exc)


def claim_name(key: str, attempt: int) -> str:
    """The claim experiment's name for one model (id, or name/version) and attempt."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    readable = re.sub(r"[^\w.-]", "_", key)[:64]
    return f"{CLAIM_PREFIX}/{readable}-{digest}/{attempt}"


def claim_is_stale(tags: dict[str, str], *, owner: str, host: str, claim_timeout: float,
                   now: float | None = None, pid: int | None = None) -> bool:
    """May a watcher (``owner`` on ``host``) take over a model tagged ``running``?"""
    claimant = tags.get(OWNER_TAG, "")
    if claimant == owner:
        return True  # our own claim, left by an attempt that a server outage interrupted
    claim_host, _, rest = claimant.partition(":")
    claim_pid = rest.partition(":")[0]
    if claim_host == host and claim_pid.isdigit():
        # Same host: the claimant is gone if its pid is, or if that pid is ours (a restarted
        # container runs as the same pid).
        me = os.getpid() if pid is None else pid
        return int(claim_pid) == me or not _pid_alive(int(claim_pid))
    try:
        claimed = float(tags.get(TIME_TAG, "0"))
    except ValueError:
        return True
    return (time.time() if now is None else now) - claimed > claim_timeout


def describe(handled: list[Handled]) -> str:
    counts = {o: sum(h.outcome == o for h in handled) for o in TERMINAL}
    return (f"{len(handled)} new ({counts['done']} done, {counts['failed']} failed, "
            f"{counts['skipped']} skipped)")


def short_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _now() -> str:
    return f"{time.time():.3f}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True
