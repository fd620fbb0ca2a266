"""Metric names MLflow accepts and that never collide: feature name -> metric-name segment.

A feature's global importance is logged as ``xai/<method>/importance/<segment>``. The segment
is chosen by :func:`feature_metric_names`, a deterministic rule over the *whole* feature list
(the same list always gives the same mapping, whatever the order of the importances):

1. **Safe form** (:func:`safe_form`): every character MLflow refuses in a metric name (anything
   but letters, digits, ``_ - .`` and space) becomes ``_``; surrounding spaces are dropped; a
   run of two or more dots, and a lone ``.``, become ``_`` (MLflow refuses names that resolve
   to another path); an empty result is ``_``.
2. A feature keeps its safe form when that is at most ``budget`` characters long, no other
   feature of the list has the same safe form, and it does not end like a hashed segment
   (``--`` and 8 or more lowercase hex digits).
3. Otherwise its segment is its safe form cut to leave room for the suffix, then ``--`` and the
   first 8 hex digits of the SHA-256 of the original name (UTF-8), e.g. ``a_b--4c1b2a5d``.
   (``~`` would read better, but MLflow refuses it in metric names.) Should two hashed
   segments still coincide, those features take 16, then all 64 hex digits.

So ``a/b`` and ``a_b`` become ``a_b--<hash of 'a/b'>`` and ``a_b--<hash of 'a_b'>``, and a
300-character name becomes its first characters plus its hash. The mapping is saved with the
artifacts as ``xai/metric_names.json`` (``{feature: segment}``), and governance rules name a
feature's importance by its segment (``kernel_shap/importance/<segment>``).

:func:`metric_name_problem` applies MLflow's own validation (characters, path normalisation,
length) to a whole metric name; :func:`valid_metrics` drops the metrics it refuses.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from typing import Any

_logger = logging.getLogger(__name__)

#: MLflow's limit on a metric name (``mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH``).
MAX_METRIC_NAME_LENGTH = 250

#: The longest method (explainer) name the segment budget leaves room for.
MAX_METHOD_NAME_LENGTH = 64
#: Longest segment: ``xai/<method>/importance/<segment>`` fits MLflow's limit for any method
#: name of up to :data:`MAX_METHOD_NAME_LENGTH` characters (longer method names are dropped by
#: :func:`valid_metrics`, with a warning).
FEATURE_SEGMENT_BUDGET = (MAX_METRIC_NAME_LENGTH - len("xai/") - len("/importance/")
                          - MAX_METHOD_NAME_LENGTH)
#: Between the cut safe form and the hash.
HASH_SEPARATOR = "--"
_HASHED = re.compile(re.escape(HASH_SEPARATOR) + r"[0-9a-f]{8,}$")


def safe_form(name: Any) -> str:
    """A name with the characters MLflow refuses in metric names replaced by ``_``."""
    safe = re.sub(r"[^\w.\- ]", "_", str(name)).strip() or "_"
    safe = re.sub(r"\.{2,}", "_", safe)
    return "_" if safe == "." else safe


def _hashed(name: str, safe: str, budget: int, digits: int) -> str:
    suffix = HASH_SEPARATOR + hashlib.sha256(name.encode("utf-8")).hexdigest()[:digits]
    return safe[:max(budget - len(suffix), 1)] + suffix


def feature_metric_names(features: Iterable[Any], *, budget: int = FEATURE_SEGMENT_BUDGET
                         ) -> dict[str, str]:
    """``{feature: segment}`` for every feature (as ``str``), by the rule of this module."""
    if budget < 20:
        raise ValueError(f"a segment budget of {budget} leaves no room for the hash suffix")
    names = list(dict.fromkeys(str(f) for f in features))
    safe = {n: safe_form(n) for n in names}
    counts: dict[str, int] = {}
    for s in safe.values():
        counts[s] = counts.get(s, 0) + 1
    mapping: dict[str, str] = {}
    hashed: list[str] = []
    for n in names:
        s = safe[n]
        if len(s) <= budget and counts[s] == 1 and not _HASHED.search(s):
            mapping[n] = s
        else:
            hashed.append(n)
    for digits in (8, 16, 64):
        segments = {n: _hashed(n, safe[n], budget, digits) for n in hashed}
        seen: dict[str, int] = {}
        for seg in segments.values():
            seen[seg] = seen.get(seg, 0) + 1
        for n, seg in segments.items():
            if seen[seg] == 1 or digits == 64:
                mapping[n] = seg
        hashed = [n for n in hashed if n not in mapping]
        if not hashed:
            break
    return {n: mapping[n] for n in names}


def document_features(summary: dict[str, Any], importance: dict[str, Any]) -> list[str]:
    """The feature list a mapping is built from: ``summary.data.feature_names``, then any other
    feature ``importance.json`` names (sorted), so writer and gate build the same mapping."""
    listed = [str(f) for f in (summary.get("data") or {}).get("feature_names") or []]
    known = set(listed)
    extra = sorted({str(f) for feats in importance.values() for f in (feats or {})} - known)
    return listed + extra


def metric_name_problem(name: str) -> str | None:
    """Why MLflow would refuse ``name`` as a metric name, or None when it accepts it."""
    if len(name) > MAX_METRIC_NAME_LENGTH:
        return f"it is {len(name)} characters long; MLflow allows {MAX_METRIC_NAME_LENGTH}"
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.utils.validation import _validate_metric_name
    except ImportError:  # pragma: no cover - MLflow moved its private validator
        import posixpath

        if not re.match(r"^[/\w.\- ]*$", name):
            return "MLflow allows only letters, digits, '_', '-', '.', ' ' and '/'"
        norm = posixpath.normpath(name)
        if norm != name or norm == "." or norm.startswith(("..", "/")):
            return f"it would resolve to the path {norm!r}"
        return None
    try:
        _validate_metric_name(name)
    except MlflowException as exc:
        return exc.message
    return None


def valid_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` without the names MLflow would refuse (each dropped one is logged)."""
    kept: dict[str, float] = {}
    for name, value in metrics.items():
        problem = metric_name_problem(name)
        if problem:
            _logger.warning("mlflow-xai: metric %r is not logged: %s", name[:120], problem)
        else:
            kept[name] = value
    return kept
