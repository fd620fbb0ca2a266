"""Is an error the tracking server not answering (retry later), or a real failure (record it)?

Shared by the recorder, the spool and the watch service: a failure caused by an unreachable
server is never blamed on the model, and is retried or spooled instead of recorded.
"""

from __future__ import annotations

import os
import re
from typing import Any

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


def health_problem(uri: str, timeout: float) -> str | None:
    """Why the tracking server at ``uri`` does not answer ``GET <uri>/health`` within
    ``timeout`` seconds, or ``None`` when it does (or when ``uri`` is no http(s) server).

    Made with ``requests`` directly, honouring MLflow's TLS settings: MLflow's retry settings
    are neither used nor changed. Any HTTP answer but a proxy's 502/503/504 counts; a TLS
    error counts too (the server answered; MLflow reports the certificate trouble), and so
    does a malformed URI (MLflow says what is wrong with it).
    """
    import requests

    if not str(uri).lower().startswith(("http://", "https://")):
        return None
    verify: Any = True
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        verify = False
    elif os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"):
        verify = os.environ["MLFLOW_TRACKING_SERVER_CERT_PATH"]
    try:
        response = requests.get(f"{str(uri).rstrip('/')}/health", timeout=timeout,
                                verify=verify, allow_redirects=False,
                                cert=os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH") or None)
    except requests.exceptions.SSLError:
        return None
    except requests.exceptions.Timeout:
        return f"no answer within {timeout:g}s"
    except requests.exceptions.ConnectionError as exc:
        found = re.search(r"\[Errno -?\d+\] ([^'\"()\[\]]+)", str(exc))
        return found.group(1).strip() if found else type(exc).__name__
    except requests.exceptions.RequestException:
        return None
    if response.status_code in (502, 503, 504):
        return f"a proxy answered {response.status_code} for it"
    return None


def safe_uri(uri: str) -> str:
    """The URI without a password it may hold (``user:***@host``), for messages."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(str(uri))
        if parts.password:
            return parts._replace(netloc=f"{parts.username}:***@{parts.hostname}"
                                  + (f":{parts.port}" if parts.port else "")).geturl()
    except ValueError:
        pass
    return str(uri)
