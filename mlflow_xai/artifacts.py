"""Writes an :class:`Explanations` to the artifact contract under ``xai/`` and logs metrics.

Layout (see README, "Artifacts"): ``summary.json``, ``importance.json``, ``stability.json``,
``attributions/<method>.parquet``, ``plots/<method>_bar.png``, ``plots/<method>_beeswarm.png``,
``selection/<selector>.json``, ``plots/selection_<selector>.png``, ``report.html``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from mlflow_xai.explanations import Explanations

ARTIFACT_DIR = "xai"
METRIC_PREFIX = "xai"
#: Per-feature importance metrics are logged for at most this many features per method.
MAX_IMPORTANCE_METRICS = 100
BASE_VALUE_COLUMN = "_base_value"
OUTPUT_COLUMN = "_output"


def metric_safe(name: str) -> str:
    """A feature name as it may appear inside an MLflow metric name."""
    safe = re.sub(r"[^\w.\- ]", "_", str(name)).strip() or "_"
    return re.sub(r"\.{2,}", "_", safe)


def metrics_for(expl: Explanations) -> dict[str, float]:
    """The documented metric set: ``xai/<method>/<figure>`` and ``xai/<method>/importance/<f>``."""
    metrics: dict[str, float] = {
        f"{METRIC_PREFIX}/rows_explained": float(expl.summary["data"]["rows_explained"]),
        f"{METRIC_PREFIX}/methods_ok": float(
            sum(m["status"] == "ok" for m in expl.summary["methods"].values())),
        f"{METRIC_PREFIX}/methods_failed": float(
            sum(m["status"] == "failed" for m in expl.summary["methods"].values())),
    }
    for method, entry in expl.summary["methods"].items():
        if entry["status"] != "ok":
            continue
        prefix = f"{METRIC_PREFIX}/{method}"
        metrics[f"{prefix}/seconds"] = float(entry["seconds"])
        metrics[f"{prefix}/model_evals"] = float(entry["model_evals"])
        if "efficiency_max_abs_gap" in entry:
            metrics[f"{prefix}/efficiency_gap"] = float(entry["efficiency_max_abs_gap"])
        if method not in expl.importance.columns:
            continue
        top = expl.importance[method].sort_values(ascending=False).head(MAX_IMPORTANCE_METRICS)
        for feature, value in top.items():
            if math.isfinite(value):
                metrics[f"{prefix}/importance/{metric_safe(feature)}"] = float(value)
    for check, entry in expl.checks.items():
        for figure, value in (entry.get("figures") or {}).items():
            if value is not None and math.isfinite(value):
                metrics[f"{METRIC_PREFIX}/check/{check}/{figure}"] = float(value)
    for name, selection in expl.selection.items():
        for figure, value in selection.figures().items():
            if value is not None and math.isfinite(value):
                metrics[f"{METRIC_PREFIX}/selection/{name}/{figure}"] = float(value)
    if expl.governance is not None:
        metrics[f"{METRIC_PREFIX}/governance/passed"] = float(
            expl.governance["verdict"] == "passed")
    return metrics


def stability_json(expl: Explanations) -> dict[str, Any]:
    """Every check's figures, thresholds and verdicts (and details)."""
    return {name: entry for name, entry in expl.checks.items()}


def write_artifacts(expl: Explanations, directory: str | os.PathLike, *, plots: bool = True
                    ) -> Path:
    """Write the ``xai/`` folder contents into ``directory``; return it."""
    root = Path(directory)
    (root / "attributions").mkdir(parents=True, exist_ok=True)
    (root / "plots").mkdir(exist_ok=True)
    _write_json(root / "summary.json", expl.summary)
    _write_json(root / "importance.json", importance_json(expl))
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

        write_report(expl, root)  # last: it inlines the plots written above
    return root


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


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, default=_json_default, allow_nan=False))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (pd.Timestamp,)):
        return value.isoformat()
    return str(value)


def log_explanations(expl: Explanations, *, run_id: str | None = None,
                     model_id: str | None = None, tags: dict[str, str] | None = None,
                     log_metrics: bool = True) -> str:
    """Upload the artifacts and metrics to ``run_id`` (or the active run); return the run id.

    ``log_metrics=False`` is for the evaluator: ``mlflow.models.evaluate`` logs the returned
    metrics itself (linked to the model), and logging them twice would duplicate history.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    if run_id is None:
        active = mlflow.active_run() or mlflow.start_run()
        run_id = active.info.run_id
    client = MlflowClient()
    with tempfile.TemporaryDirectory(prefix="mlflow-xai-") as tmp:
        write_artifacts(expl, tmp)
        client.log_artifacts(run_id, tmp, ARTIFACT_DIR)
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0, model_id=model_id) for k, v in metrics_for(expl).items()]
    run_tags = {"mlflow_xai.status": expl.summary["status"],
                "mlflow_xai.methods": ",".join(expl.methods), **(tags or {})}
    if expl.governance is not None:
        run_tags["mlflow_xai.governance"] = expl.governance["verdict"]
    for start in range(0, len(metrics) if log_metrics else 0, 500):  # MLflow caps a batch at 1000 entries
        client.log_batch(run_id, metrics=metrics[start:start + 500])
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in run_tags.items()])
    if model_id:
        try:
            model_tags = {"mlflow_xai.status": expl.summary["status"],
                          "mlflow_xai.run_id": run_id}
            if expl.governance is not None:
                model_tags["mlflow_xai.governance"] = expl.governance["verdict"]
            client.set_logged_model_tags(model_id, model_tags)
        except Exception:  # a model version id or a store without LoggedModels: tags are optional
            pass
    return run_id


def log_failure(run_id: str, error: BaseException | str, *, model_id: str | None = None,
                status: str = "failed") -> None:
    """Record that explaining failed (or was skipped): a run tag and ``xai/error.txt``."""
    import traceback

    from mlflow import MlflowClient

    client = MlflowClient()
    if isinstance(error, BaseException):
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        reason = f"{type(error).__name__}: {error}"
    else:
        text = reason = str(error)
    client.set_tag(run_id, "mlflow_xai.status", status)
    client.set_tag(run_id, f"mlflow_xai.{'error' if status == 'failed' else 'reason'}",
                   reason[:5000])
    if status == "failed":
        client.log_text(run_id, text, f"{ARTIFACT_DIR}/error.txt")
    if model_id:
        try:
            client.set_logged_model_tags(model_id, {"mlflow_xai.status": status})
        except Exception:
            pass
