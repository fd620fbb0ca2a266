"""Is an error the tracking server not answering (retry later), or a real failure (record it)?

Shared by the recorder, the spool and the watch service: a failure caused by an unreachable
server is never blamed on the model, and is retried or spooled instead of recorded.
"""

from __future__ import annotations

import re

from mlflow_xai.errors import RecordingError, XaiError


class ServerUnreachable(ConnectionError):
    """The tracking server did not answer."""


_UNREACHABLE_MESSAGE = re.compile(
    r"Max retries exceeded|Connection refused|Failed to establish a new connection|"
    r"Connection reset|Connection aborted|Read timed out|RemoteDisconnected|"
    r"too many (502|503|504) error responses|status code (502|503|504)", re.IGNORECASE)


def is_unreachable(exc: BaseException) -> bool:
    """Does ``exc`` (or anything in its cause/context chain) say the server is not answering?

    MLflow wraps connection failures in MlflowException (sometimes twice, with a misleading
    "may have been deleted" message around it), so the whole chain is inspected.
    """
    import requests
    import urllib3.exceptions

    transient = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                 requests.exceptions.RetryError, urllib3.exceptions.MaxRetryError,
                 urllib3.exceptions.NewConnectionError, ConnectionError, TimeoutError)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, XaiError) and not isinstance(current, RecordingError):
            return False  # ours: about the model or the data (a timeout is a TimeoutError too)
        if isinstance(current, transient):
            return True
        if getattr(current, "error_code", None) == "TEMPORARILY_UNAVAILABLE":
            return True
        if _UNREACHABLE_MESSAGE.search(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def short_reason(exc: BaseException) -> str:
    """The innermost cause, one line: ``ConnectionRefusedError: [Errno 111] Connection refused``."""
    seen: set[int] = set()
    current, innermost = exc, exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        innermost = current
        current = current.__cause__ or current.__context__
    text = " ".join(str(innermost).split()) or "no message"
    return f"{type(innermost).__name__}: {text[:200]}"
