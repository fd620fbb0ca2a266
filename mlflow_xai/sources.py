"""Which data-set sources a service that reads other people's runs may open.

A run's author chooses its data set's source: an ``http://`` URL makes the reader send a request
wherever the author points, a local path makes it read a file on the reader's host (whose values
can be recovered from the attributions). The watch service therefore reads a source only when it
lies inside the run's own artifact location or under a prefix the operator allowed
(``allowed_sources:`` in the watch config); every other source is refused with the reason.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit


def source_uri(dataset: Any) -> str | None:
    """The URI/URL/path a logged data set says it was read from (``None`` when it names none)."""
    raw = getattr(dataset, "source", None)
    try:
        info = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
    except (TypeError, ValueError):
        return None
    for key in ("uri", "url", "path"):
        if isinstance(info.get(key), str) and info[key]:
            return info[key]
    return None


@dataclass
class SourcePolicy:
    """``allowed`` prefixes (local folders or URLs) plus each run's own artifact location."""

    allowed: list[str] = field(default_factory=list)

    def refusal(self, uri: str | None, *, run_artifact_uri: str | None = None) -> str | None:
        """``None`` when ``uri`` may be read, else why not (one line)."""
        if not uri:
            return "the data set names no source"
        prefixes = list(self.allowed) + ([run_artifact_uri] if run_artifact_uri else [])
        if any(_inside(uri, prefix) for prefix in prefixes):
            return None
        return (f"data set source '{uri[:200]}' is outside the run's own artifacts and the "
                "operator's allowed_sources (watch config); it was not read")


def _split(uri: str) -> tuple[str, str, str]:
    """(scheme, host, normalised path) with local paths resolved through symlinks."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:3] in (":\\", ":/")):
        path = unquote(parts.path) if scheme == "file" else uri
        return "file", "", os.path.realpath(os.path.expanduser(path))
    path = unquote(parts.path)
    if ".." in path.split("/"):
        return scheme, parts.netloc.lower(), "\0"  # never inside anything
    return scheme, parts.netloc.lower(), posixpath.normpath(path or "/")


def _inside(uri: str, prefix: str) -> bool:
    scheme, host, path = _split(uri)
    p_scheme, p_host, p_path = _split(prefix)
    if (scheme, host) != (p_scheme, p_host) or path == "\0":
        return False
    p_path = p_path.rstrip("/") or "/"
    return path == p_path or path.startswith(p_path if p_path.endswith("/") else p_path + "/")
