"""Writes an :class:`Explanations` to the artifact contract under ``xai/`` and logs metrics.

Layout (see README, "Artifacts"): ``summary.json``, ``importance.json``, ``stability.json``,
``attributions/<method>.parquet``, ``plots/<method>_bar.png``, ``plots/<method>_beeswarm.png``,
``selection/<selector>.json``, ``plots/selection_<selector>.png``, ``report.html``,
``metric_names.json`` (feature -> metric-name segment, see :mod:`mlflow_xai.metric_names`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

#: Reserved columns of ``attributions/<method>.parquet``: ``xai.base_value``, ``xai.output``
#: (``xai.`` is refused as a feature name prefix, so they never clash with a feature).
from mlflow_xai.data import BASE_VALUE_COLUMN, OUTPUT_COLUMN

if TYPE_CHECKING:
    from mlflow_xai.explanations import Explanations

ARTIFACT_DIR = "xai"
METRIC_PREFIX = "xai"
#: Per-feature importance metrics are logged for at most this many features per method.
MAX_IMPORTANCE_METRICS = 100
#: The mapping feature -> metric-name segment (see :mod:`mlflow_xai.metric_names`).
METRIC_NAMES_FILE = "metric_names.json"


def metric_safe(name: str) -> str:
    """One feature name, alone, as it may appear inside an MLflow metric name (safe form, cut
    and hashed when too long). Names of a whole feature list: use
    :func:`mlflow_xai.metric_names.feature_metric_names`, which also keeps them apart."""
    from mlflow_xai.metric_names import feature_metric_names

    return feature_metric_names([name])[str(name)]


def metrics_for(expl: Explanations) -> dict[str, float]:
    """The documented metric set: ``xai/<method>/<figure>`` and ``xai/<method>/importance/<f>``."""
    metrics = metrics_from_documents(
        expl.summary, importance_json(expl), stability_json(expl),
        {name: selection.to_json() for name, selection in expl.selection.items()})
    if expl.governance is not None:
        metrics[f"{METRIC_PREFIX}/governance/passed"] = float(
            expl.governance["verdict"] == "passed")
    return metrics


def metric_names_json(summary: dict[str, Any], importance: dict[str, Any]) -> dict[str, str]:
    """``{feature: segment}``: how each feature appears in ``xai/<method>/importance/<segment>``
    (``xai/metric_names.json``; the rule is :func:`mlflow_xai.metric_names.feature_metric_names`
    over :func:`~mlflow_xai.metric_names.document_features`)."""
    from mlflow_xai.metric_names import document_features, feature_metric_names

    return feature_metric_names(document_features(summary, importance))


def metrics_from_documents(summary: dict[str, Any], importance: dict[str, Any],
                           stability: dict[str, Any],
                           selection: dict[str, dict[str, Any]] | None = None
                           ) -> dict[str, float]:
    """The same figures, read from the JSON documents of ``xai/`` (what the gate trusts).

    Feature names become metric-name segments by :func:`metric_names_json` (unique, at most
    :data:`~mlflow_xai.metric_names.FEATURE_SEGMENT_BUDGET` characters); any name MLflow would
    still refuse (a plugin's method, check, figure or selector name) is dropped, with a warning.
    """
    from mlflow_xai.metric_names import valid_metrics

    segments = metric_names_json(summary, importance)
    methods = summary.get("methods") or {}
    metrics: dict[str, float] = {
        f"{METRIC_PREFIX}/rows_explained": float((summary.get("data") or {})
                                                 .get("rows_explained") or 0),
        f"{METRIC_PREFIX}/methods_ok": float(sum(m.get("status") == "ok"
                                                 for m in methods.values())),
        f"{METRIC_PREFIX}/methods_failed": float(sum(m.get("status") == "failed"
                                                     for m in methods.values())),
    }
    for method, entry in methods.items():
        if entry.get("status") != "ok":
            continue
        prefix = f"{METRIC_PREFIX}/{method}"
        for key in ("seconds", "model_evals"):  # a distributed run does not count evals
            if isinstance(entry.get(key), (int, float)):
                metrics[f"{prefix}/{key}"] = float(entry[key])
        if "efficiency_max_abs_gap" in entry:
            metrics[f"{prefix}/efficiency_gap"] = float(entry["efficiency_max_abs_gap"])
        shown = 0
        for feature, figures in (importance.get(method) or {}).items():
            value = figures.get("importance")
            if shown >= MAX_IMPORTANCE_METRICS:
                break
            if isinstance(value, (int, float)) and math.isfinite(value):
                segment = segments.get(str(feature)) or metric_safe(feature)
                metrics[f"{prefix}/importance/{segment}"] = float(value)
                shown += 1
    for check, entry in stability.items():
        for figure, value in (entry.get("figures") or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics[f"{METRIC_PREFIX}/check/{check}/{figure}"] = float(value)
    for name, doc in (selection or {}).items():
        for figure, value in _selection_figures(doc).items():
            if value is not None and math.isfinite(value):
                metrics[f"{METRIC_PREFIX}/selection/{name}/{figure}"] = float(value)
    return valid_metrics(metrics)


def _selection_figures(doc: dict[str, Any]) -> dict[str, float]:
    """``FeatureSelection.figures()`` from its JSON document."""
    figures = {"n_selected": float(doc.get("n_selected", len(doc.get("selected", [])))),
               "seconds": float(doc.get("seconds") or 0.0)}
    for key in ("kuncheva", "jaccard", "score_spearman"):
        if (doc.get("stability") or {}).get(key) is not None:
            figures[key] = float(doc["stability"][key])
    for key in ("selected_score", "random_score", "gain"):
        if (doc.get("retrain") or {}).get(key) is not None:
            figures[f"retrain_{key}" if key != "gain" else "retrain_gain"] = \
                float(doc["retrain"][key])
    return figures


def stability_json(expl: Explanations) -> dict[str, Any]:
    """Every check's figures, thresholds and verdicts (and details)."""
    return {name: entry for name, entry in expl.checks.items()}


def write_artifacts(expl: Explanations, directory: str | os.PathLike, *, plots: bool = True
                    ) -> Path:
    """Write the ``xai/`` folder contents into ``directory``; return it."""
    root = Path(directory)
    (root / "attributions").mkdir(parents=True, exist_ok=True)
    (root / "plots").mkdir(exist_ok=True)
    importance = importance_json(expl)
    _write_json(root / "importance.json", importance)
    # Before summary.json, so its SHA-256 manifest covers the mapping too.
    _write_json(root / METRIC_NAMES_FILE, metric_names_json(expl.summary, importance))
    _write_json(root / "stability.json", stability_json(expl))
    if expl.governance is not None:
        _write_json(root / "governance.json", expl.governance)
    failures = [(kind, m, e) for kind, key in (("explainer", "methods"),
                                               ("selector", "selectors"))
                for m, e in expl.summary.get(key, {}).items() if e["status"] == "failed"]
    if failures:
        (root / "error.txt").write_text("\n\n".join(
            f"{kind} '{m}' failed: {e['error']}\n{e.get('traceback', '')}"
            for kind, m, e in failures))
    if expl.selection:
        (root / "selection").mkdir(exist_ok=True)
    for name, selection in expl.selection.items():
        _write_json(root / "selection" / f"{name}.json", selection.to_json())
        if plots:
            from mlflow_xai.plots import selection_plot

            selection_plot(selection, str(root / "plots" / f"selection_{name}.png"))
    for method, frame in expl.attributions.items():
        table = frame.copy()
        table.columns = [str(c) for c in table.columns]
        clash = [c for c in (BASE_VALUE_COLUMN, OUTPUT_COLUMN) if c in table.columns]
        if clash:  # prepare_data refuses such features; this guards other producers
            from mlflow_xai.errors import InvalidInputError

            raise InvalidInputError(f"feature(s) {clash} clash with the reserved columns of "
                                    "the attribution table; rename them.")
        if method in expl.base_values:
            table[BASE_VALUE_COLUMN] = expl.base_values[method]
        if expl.outputs is not None:
            table[OUTPUT_COLUMN] = expl.outputs.astype(str)
        table.index = table.index.map(str) if table.index.dtype == object else table.index
        table.to_parquet(root / "attributions" / f"{method}.parquet")
    for method, maps in expl.heatmaps.items():
        np.save(root / "attributions" / f"{method}.npy", maps.astype(np.float32))
    if plots and expl.heatmaps:
        from mlflow_xai.plots import overlay_plot

        images = expl.encoded.reshape((len(expl.encoded), *expl.summary["data"]["image_shape"]))
        labels = expl.outputs.tolist() if expl.outputs is not None else None
        for method, maps in expl.heatmaps.items():
            overlay_plot(images, maps, method, str(root / "plots" / f"{method}_overlay.png"),
                         labels=labels)
    if plots:
        from mlflow_xai.plots import check_plot

        for name, entry in expl.checks.items():
            if entry.get("status") == "ok":
                check_plot(name, entry, str(root / "plots" / f"check_{name}.png"))
    if plots:
        from mlflow_xai.plots import bar_plot, beeswarm_plot

        for method in expl.importance.columns:
            bar_plot(expl.importance[method], method, str(root / "plots" / f"{method}_bar.png"))
            if method in expl.attributions:
                beeswarm_plot(expl.attributions[method], expl.data, method,
                              str(root / "plots" / f"{method}_beeswarm.png"))
    if plots:
        from mlflow_xai.report import write_report

        write_report(expl, root)  # it inlines the plots written above
    write_summary(root, expl.summary)
    return root


def write_summary(root: str | os.PathLike, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` last: it lists every other file's SHA-256, so its own digest
    (``mlflow_xai.digest``) covers the whole folder."""
    from mlflow_xai.provenance import manifest

    path = Path(root) / "summary.json"
    _write_json(path, {**summary, "artifacts": {"sha256": manifest(root)}})
    return path


def importance_json(expl: Explanations) -> dict[str, dict[str, dict[str, float | int]]]:
    ranks = expl.ranks()
    return {
        method: {
            str(feature): {"importance": float(expl.importance.at[feature, method]),
                           "rank": int(ranks.at[feature, method])}
            for feature in expl.importance[method].sort_values(ascending=False).index
        }
        for method in expl.importance.columns
    }


def json_text(payload: Any) -> str:
    """How every ``xai/*.json`` is serialised (the digest of ``summary.json`` depends on it)."""
    return json.dumps(payload, indent=2, default=_json_default, allow_nan=False)


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json_text(payload))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (pd.Timestamp,)):
        return value.isoformat()
    return str(value)
