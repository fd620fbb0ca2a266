"""Provenance of a recorded explanation: a digest of what mlflow-xai wrote, and its signature.

When the ``xai/`` folder is written, every file's SHA-256 goes into ``summary.json``
(``artifacts.sha256``), and ``summary.json`` is written last. The SHA-256 of ``summary.json``
itself is the explanation's *digest*; the recorder writes it as the tag ``mlflow_xai.digest`` on
the run and on the LoggedModel. The gate recomputes the digest from the downloaded
``summary.json`` and every file's hash from the downloaded file, so one edited or hand-made file
(``stability.json``, ``importance.json``, ...) no longer matches.

A digest alone proves consistency, not authorship: someone who can write artifacts and tags can
also write a whole new folder with a matching digest. Set ``MLFLOW_XAI_SIGNING_KEY`` where
explanations are recorded (autolog, the watcher, CI) and where they are judged: the recorder then
writes ``mlflow_xai.signature`` = HMAC-SHA256(key, digest), and a gate that has the key refuses
anything unsigned or signed with another key. ``mlflow-xai check --recompute`` trusts nothing on
the server at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

SIGNING_KEY_ENV = "MLFLOW_XAI_SIGNING_KEY"
#: Files in ``xai/`` that are written after the explanation and so are not in its manifest.
UNSIGNED_FILES = frozenset({"summary.json", "governance.json"})


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(directory: str | os.PathLike) -> dict[str, str]:
    """``relative/path -> sha256`` for every file under ``directory`` except the unsigned ones."""
    root = Path(directory)
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in UNSIGNED_FILES:
            out[rel] = sha256_bytes(path.read_bytes())
    return out


def signing_key() -> bytes | None:
    """The shared secret from ``MLFLOW_XAI_SIGNING_KEY`` (``None`` when unset or empty)."""
    key = os.environ.get(SIGNING_KEY_ENV, "")
    return key.encode() if key else None


def sign(message: str, key: bytes | None = None) -> str | None:
    """HMAC-SHA256 of ``message`` (hex) with ``key`` (default: the environment's), or None."""
    key = signing_key() if key is None else key
    if not key:
        return None
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def signature_ok(message: str, signature: str | None, key: bytes | None = None) -> bool:
    expected = sign(message, key)
    return bool(expected and signature) and hmac.compare_digest(expected, str(signature))


def check_manifest(summary: dict[str, Any], name: str, data: bytes) -> str | None:
    """``None`` when ``data`` is the file ``name`` the summary lists, else why not."""
    listed = ((summary.get("artifacts") or {}).get("sha256") or {})
    if name not in listed:
        return f"xai/{name} is not in the manifest of xai/summary.json"
    actual = sha256_bytes(data)
    if not hmac.compare_digest(listed[name], actual):
        return (f"xai/{name} was changed after mlflow-xai wrote it (sha256 {actual[:12]}..., "
                f"the summary lists {str(listed[name])[:12]}...)")
    return None


def load_json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ValueError(f"xai/{name} is not valid JSON: {exc}") from exc
