"""Explain in a worker process that can be stopped: the ``timeout`` option (and ``cancel``).

A thread cannot be stopped, so a model whose ``predict`` never returns would stall the caller
for good. With ``timeout`` (or a ``cancel`` event) :func:`mlflow_xai.pipeline.run` hands the work
to :func:`run_in_worker`: a fresh Python interpreter runs the pipeline and sends the
:class:`~mlflow_xai.explanations.Explanations` back; when the time is up (or ``cancel`` is set)
the caller kills it.

How:

* The worker is a new interpreter (``sys.executable``), as ``multiprocessing``'s ``spawn``
  start method makes, never a fork: the caller's torch/OpenMP thread pools are not fork-safe.
  It is started with :mod:`subprocess` rather than ``multiprocessing`` so that it does not
  re-run the caller's ``__main__`` script (``spawn`` does, and a training script without an
  ``if __name__ == "__main__":`` guard would train and log its model again in the worker). It
  gets the caller's ``sys.path``, and ``MLFLOW_TRACKING_URI``/``MLFLOW_REGISTRY_URI`` set to
  the caller's current ones, so ``models:/`` URIs resolve against the same store.
* Model, data and options travel pickled with cloudpickle (functions, lambdas and classes
  defined in ``__main__`` or a notebook go by value), through a private temporary file.
* The worker reports on its own stdout (the model's prints go to stderr): ``ready``, then the
  pickled result or the error (type, message, traceback). An :class:`XaiError` comes back as
  the same class; anything else as an :class:`XaiError` naming the original type. The
  worker's traceback is attached as the ``__cause__``.
* Timing: ``timeout`` counts from ``ready``, which the worker sends once it has imported
  mlflow-xai and torch and unpickled model and data (measured on 2 CPU cores: 1 to 2.5 s,
  median 2 s), so a slow start does not eat a short timeout. Loading a model from a URI, the imports a method
  makes on first use, predicting and explaining all count. The start-up has its own cap,
  :data:`STARTUP_TIMEOUT_S` (``MLFLOW_XAI_WORKER_STARTUP_TIMEOUT`` overrides), so a broken
  worker cannot hang the caller either.
* Stopping: SIGTERM to the worker's process group (whatever it started goes too), SIGKILL
  after :data:`GRACE_S`, and the worker is always reaped, also when the caller is interrupted
  (``KeyboardInterrupt``). A worker whose caller dies kills itself (it watches its stdin).
  Measured: a worker sleeping in ``predict`` is gone 0.04 s after SIGTERM; one that ignores
  SIGTERM is killed after the grace period.
* The worker shows no progress bar; its log messages and warnings go to the shared stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import IO, TYPE_CHECKING, Any

from mlflow_xai.errors import ExplainCancelled, ExplainTimeout, XaiError

if TYPE_CHECKING:
    from mlflow_xai.config import XaiConfig
    from mlflow_xai.explanations import Explanations

_logger = logging.getLogger(__name__)

#: Seconds between checks of the deadline, the cancel event and the worker's health.
POLL_S = 0.2
#: Seconds a stopped worker gets between SIGTERM and SIGKILL.
GRACE_S = 2.0
#: Most seconds the worker may take to start (imports, unpickling) before ``timeout`` counts.
STARTUP_TIMEOUT_S = 120.0
STARTUP_ENV = "MLFLOW_XAI_WORKER_STARTUP_TIMEOUT"

_HEADER = struct.Struct("!Q")
_BOOTSTRAP = ("import sys, json; sys.path[:] = json.loads(sys.argv[1]); "
              "from mlflow_xai.worker import _child_main; _child_main(sys.argv[2])")
_EOF = object()


def run_in_worker(model: Any, data: Any, config: XaiConfig, *, timeout: float | None,
                  cancel: threading.Event | None = None) -> Explanations:
    """Run :func:`mlflow_xai.pipeline.run` in a worker process; stop it after ``timeout``
    seconds (:class:`ExplainTimeout`) or when ``cancel`` is set (:class:`ExplainCancelled`)."""
    if cancel is not None and cancel.is_set():
        raise ExplainCancelled("the explanation was cancelled before it started.")
    payload = _payload(model, data, dataclasses.replace(config, timeout=None, progress=False))
    worker = _Worker(payload)
    try:
        expl, startup = worker.result(timeout, cancel)
    finally:
        worker.close()
    expl.summary["worker"] = {"timeout_seconds": timeout, "startup_seconds": round(startup, 3)}
    return expl


def _payload(model: Any, data: Any, config: XaiConfig) -> tuple[bytes, bytes]:
    import cloudpickle

    try:
        model_bytes = cloudpickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise XaiError(
            f"timeout= runs the explanation in a worker process, and this model "
            f"({type(model).__name__}) cannot be sent there: it cannot be pickled "
            f"({type(exc).__name__}: {exc}). Pass its MLflow model URI ('models:/<id>', "
            "'runs:/<run>/<path>') instead, or leave timeout unset.") from exc
    try:
        rest = cloudpickle.dumps((data, config), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise XaiError(
            f"timeout= runs the explanation in a worker process, and the data or options "
            f"cannot be sent there: they cannot be pickled ({type(exc).__name__}: {exc}). "
            "Pass a DataFrame or array (and picklable options), or leave timeout unset.") from exc
    return model_bytes, rest


class _RemoteTraceback(Exception):
    """The worker's traceback, attached as ``__cause__`` of the error raised in the caller."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class _Worker:
    """One worker process, its report channel and its temporary payload file."""

    def __init__(self, payload: tuple[bytes, bytes]) -> None:
        fd, self.path = tempfile.mkstemp(prefix="mlflow-xai-", suffix=".pkl")
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            _unlink(self.path)
            raise
        env = dict(os.environ)
        env.update(_mlflow_uris())
        env["MLFLOW_XAI_PROGRESS"] = "0"
        command = [sys.executable, *_interpreter_flags(), "-c", _BOOTSTRAP,
                   json.dumps([str(p) for p in sys.path]), self.path]
        self.started = time.monotonic()
        try:
            # stdin: kept open while the caller lives (the worker exits on EOF);
            # stdout: the report channel; stderr: shared with the caller.
            self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         env=env, start_new_session=os.name == "posix")
        except BaseException as exc:
            _unlink(self.path)
            if isinstance(exc, OSError):
                raise XaiError(f"timeout= runs the explanation in a worker process, which could "
                               f"not be started ({sys.executable!r}): {exc}") from exc
            raise
        self.messages: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=_read_frames, args=(self.proc.stdout,
                                                                  self.messages),
                                       name="mlflow-xai-worker-reader", daemon=True)
        self.reader.start()

    def result(self, timeout: float | None, cancel: threading.Event | None
               ) -> tuple[Explanations, float]:
        startup_limit = float(os.environ.get(STARTUP_ENV, STARTUP_TIMEOUT_S))
        ready_at: float | None = None
        startup = 0.0
        while True:
            try:
                frame = self.messages.get(timeout=POLL_S)
            except queue.Empty:
                frame = None
            if frame is _EOF:
                if cancel is not None and cancel.is_set():  # e.g. one SIGTERM reached both
                    self.stop()
                    raise ExplainCancelled("the explanation was cancelled; its worker process "
                                           "has ended.")
                raise self._died()
            if frame is not None:
                message = pickle.loads(frame)
                if message[0] == "ready":
                    ready_at = time.monotonic()
                    startup = ready_at - self.started
                    _logger.debug("mlflow-xai: worker %s ready after %.2f s", self.proc.pid,
                                  startup)
                elif message[0] == "ok":
                    blob = self.messages.get()  # the next frame; the work is done
                    if blob is _EOF:
                        raise self._died()
                    return pickle.loads(blob), startup
                elif message[0] == "error":
                    raise _remote_error(message[1], message[2])
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                self.stop()
                raise ExplainCancelled("the explanation was cancelled; its worker process was "
                                       "stopped.")
            if ready_at is None and now - self.started > startup_limit:
                self.stop()
                raise ExplainTimeout(
                    f"the worker process that explains under timeout= did not start within "
                    f"{startup_limit:g} s (importing libraries, unpickling the model and data); "
                    f"it was stopped. Set {STARTUP_ENV} (seconds) to allow more.")
            if ready_at is not None and timeout is not None and now - ready_at > timeout:
                self.stop()
                raise ExplainTimeout(
                    f"the model did not finish explaining within {timeout:g} s "
                    f"(timeout={timeout:g}); it was stopped. Raise timeout= or check that the "
                    "model's predict returns.")

    def _died(self) -> XaiError:
        """The report channel closed without a result: the worker died (or is dying)."""
        try:
            code = self.proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:  # it closed its stdout but lives on
            self.stop()
            code = self.proc.returncode
        how = f"exit code {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                name = signal.Signals(-code).name
                how = f"signal {name}" + (" (the system's out-of-memory killer sends it)"
                                          if name == "SIGKILL" else "")
        return XaiError(f"the worker process explaining under timeout= ended with {how} "
                        "before returning a result; its output, if any, is on stderr.")

    def stop(self) -> None:
        """SIGTERM, SIGKILL after :data:`GRACE_S`, and reap. Safe to call more than once."""
        proc = self.proc
        if proc.returncode is not None:
            return
        self._signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_S
        while not self._exited() and time.monotonic() < deadline:
            time.sleep(0.02)
        # Also after a clean exit: whatever the worker started in its group goes too.
        self._signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
        proc.wait()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
            if os.name == "posix":
                # The group id is the worker's pid, reserved until the worker is reaped.
                os.killpg(self.proc.pid, sig)
            elif sig == signal.SIGTERM:
                self.proc.terminate()
            else:
                self.proc.kill()

    def _exited(self) -> bool:
        """Whether the worker has exited, without reaping it (so its group stays ours)."""
        if self.proc.returncode is not None:
            return True
        if hasattr(os, "waitid") and hasattr(os, "WNOWAIT"):
            try:
                return os.waitid(os.P_PID, self.proc.pid,
                                 os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
            except ChildProcessError:
                return True
        return self.proc.poll() is not None

    def close(self) -> None:
        """Stop the worker if it still runs, close its pipes, remove the payload file."""
        try:
            self.stop()
        finally:
            self.reader.join(timeout=GRACE_S)  # the worker is gone: its stdout is at EOF
            streams = [self.proc.stdin]
            if not self.reader.is_alive():  # closing under a blocked read would wait for it
                streams.append(self.proc.stdout)
            for stream in streams:
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()
            _unlink(self.path)


def _mlflow_uris() -> dict[str, str]:
    """The caller's tracking and registry URIs (``mlflow.set_tracking_uri`` included)."""
    if "mlflow" not in sys.modules:  # never imported: nothing set beyond the environment
        return {}
    import mlflow

    uris = {}
    with contextlib.suppress(Exception):
        uris["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    with contextlib.suppress(Exception):
        uris["MLFLOW_REGISTRY_URI"] = mlflow.get_registry_uri()
    return {k: v for k, v in uris.items() if v}


def _interpreter_flags() -> list[str]:
    """``-W``/``-X`` options of this interpreter, as multiprocessing passes them on."""
    flags = getattr(subprocess, "_args_from_interpreter_flags", None)
    return list(flags()) if flags is not None else []


def _read_frames(stream: IO[bytes], messages: queue.Queue) -> None:
    """Reader thread: length-prefixed frames from the worker's stdout, then :data:`_EOF`."""
    try:
        while True:
            header = stream.read(_HEADER.size)
            if len(header) < _HEADER.size:
                break
            (size,) = _HEADER.unpack(header)
            body = stream.read(size)
            if len(body) < size:
                break
            messages.put(body)
    except (OSError, ValueError):  # closed under us by close()
        pass
    messages.put(_EOF)


def _remote_error(info: dict[str, Any], phase: str) -> XaiError:
    exc = None
    if info.get("pickled") is not None:
        try:
            exc = pickle.loads(info["pickled"])
        except Exception:  # noqa: BLE001 - a class the caller cannot import: wrap it below
            exc = None
    if not isinstance(exc, XaiError):
        where = ("the worker process could not load the model or data" if phase == "startup"
                 else "explaining in the worker process failed")
        hint = (" (objects of a module the worker cannot import cannot be sent to it; pass a "
                "model URI instead)" if phase == "startup" else "")
        exc = XaiError(f"{where}: {info['type']}: {info['message']}{hint}")
    exc.__cause__ = _RemoteTraceback(info.get("traceback", ""))
    return exc


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


# --------------------------------------------------------------------------- the worker side


def _child_main(payload_path: str) -> None:
    """Entry point of the worker process (see :data:`_BOOTSTRAP`)."""
    # The report channel is the original stdout; fd 1 (and print) now go to stderr.
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    _watch_caller()
    phase = "startup"
    try:
        import cloudpickle
        import torch  # noqa: F401  (the pipeline always does; not on the clock)

        from mlflow_xai.pipeline import run
        from mlflow_xai.plugins import get_registry

        get_registry()
        with open(payload_path, "rb") as f:
            model_bytes, rest = pickle.load(f)
        _unlink(payload_path)
        model = pickle.loads(model_bytes)
        data, config = pickle.loads(rest)
        del model_bytes, rest
        if isinstance(model, str):
            import mlflow.pyfunc  # noqa: F401  (loading the model itself is on the clock)
        _send(channel, ("ready",))
        phase = "explain"
        expl = run(model, data, config)
        blob = cloudpickle.dumps(expl, protocol=pickle.HIGHEST_PROTOCOL)
        _send(channel, ("ok",))
        _send_bytes(channel, blob)
    except BaseException as exc:  # noqa: BLE001 - everything goes back to the caller
        _send(channel, ("error", _describe(exc), phase))
    channel.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown (torch's can take a while)


def _watch_caller() -> None:
    """Exit when the caller goes away (its end of our stdin closes): no orphan workers."""

    def watch() -> None:
        with contextlib.suppress(OSError):
            while os.read(0, 1 << 16):
                pass
        if os.name == "posix":
            with contextlib.suppress(OSError):
                os.killpg(0, signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, name="mlflow-xai-watch-caller", daemon=True).start()


def _describe(exc: BaseException) -> dict[str, Any]:
    pickled = None
    if isinstance(exc, XaiError):
        import cloudpickle

        with contextlib.suppress(Exception):
            blob = cloudpickle.dumps(exc)
            pickle.loads(blob)  # an exception whose __init__ does not take its args fails
            pickled = blob
    return {"type": type(exc).__name__, "module": type(exc).__module__, "message": str(exc),
            "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
            "pickled": pickled}


def _send(channel: IO[bytes], message: tuple) -> None:
    _send_bytes(channel, pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _send_bytes(channel: IO[bytes], body: bytes) -> None:
    channel.write(_HEADER.pack(len(body)))
    channel.write(body)
    channel.flush()
