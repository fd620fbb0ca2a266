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
    metrics = metrics_from_documents(
        expl.summary, importance_json(expl), stability_json(expl),
        {name: selection.to_json() for name, selection in expl.selection.items()})
    if expl.governance is not None:
        metrics[f"{METRIC_PREFIX}/governance/passed"] = float(
            expl.governance["verdict"] == "passed")
    return metrics


def metrics_from_documents(summary: dict[str, Any], importance: dict[str, Any],
                           stability: dict[str, Any],
                           selection: dict[str, dict[str, Any]] | None = None
                           ) -> dict[str, float]:
    """The same figures, read from the JSON documents of ``xai/`` (what the gate trusts)."""
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
        metrics[f"{prefix}/seconds"] = float(entry["seconds"])
        metrics[f"{prefix}/model_evals"] = float(entry["model_evals"])
        if "efficiency_max_abs_gap" in entry:
            metrics[f"{prefix}/efficiency_gap"] = float(entry["efficiency_max_abs_gap"])
        shown = 0
        for feature, figures in (importance.get(method) or {}).items():
            value = figures.get("importance")
            if shown >= MAX_IMPORTANCE_METRICS:
                break
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics[f"{prefix}/importance/{metric_safe(feature)}"] = float(value)
                shown += 1
    for check, entry in stability.items():
        for figure, value in (entry.get("figures") or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics[f"{METRIC_PREFIX}/check/{check}/{figure}"] = float(value)
    for name, doc in (selection or {}).items():
        for figure, value in _selection_figures(doc).items():
            if value is not None and math.isfinite(value):
                metrics[f"{METRIC_PREFIX}/selection/{name}/{figure}"] = float(value)
    return metrics


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

        write_report(expl, root)  # it inlines the plots written above
    # Last: the summary lists every file's SHA-256, so its own digest covers the whole folder.
    from mlflow_xai.provenance import manifest

    _write_json(root / "summary.json", {**expl.summary, "artifacts": {"sha256": manifest(root)}})
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


def log_explanations(expl: Explanations, *, run_id: str | None = None,
                     model_id: str | None = None, tags: dict[str, str] | None = None,
                     log_metrics: bool = True,
                     registered: tuple[str, str] | None = None) -> str:
    """Upload the artifacts and metrics to ``run_id`` (or the active run); return the run id.

    The summary is bound to the model it describes (``summary.model.model_id``, and
    ``registered_model`` for a model version) before it is written, and the digest of the
    written folder (and its signature, with ``MLFLOW_XAI_SIGNING_KEY``) is tagged on the run and
    the LoggedModel, so the gate can tell these facts from edited or borrowed ones.
    ``log_metrics=False`` is for the evaluator: ``mlflow.models.evaluate`` logs the returned
    metrics itself (linked to the model), and logging them twice would duplicate history.
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    from mlflow_xai import tags as tag
    from mlflow_xai.provenance import sha256_bytes, sign

    if run_id is None:
        active = mlflow.active_run() or mlflow.start_run()
        run_id = active.info.run_id
    client = MlflowClient()
    model_facts = expl.summary.setdefault("model", {})
    if model_id:
        model_facts["model_id"] = model_id
    if registered:
        model_facts["registered_model"] = {"name": registered[0], "version": str(registered[1])}
    model_facts["run_id"] = run_id
    with tempfile.TemporaryDirectory(prefix="mlflow-xai-") as tmp:
        write_artifacts(expl, tmp)
        digest = sha256_bytes((Path(tmp) / "summary.json").read_bytes())
        client.log_artifacts(run_id, tmp, ARTIFACT_DIR)
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, 0, model_id=model_id) for k, v in metrics_for(expl).items()]
    for start in range(0, len(metrics) if log_metrics else 0, 500):  # MLflow caps a batch at 1000 entries
        client.log_batch(run_id, metrics=metrics[start:start + 500])
    provenance = {tag.DIGEST: digest}
    signature = sign(digest)
    if signature:
        provenance[tag.SIGNATURE] = signature
    # The status tags go last: a run whose upload broke off above never claims "ok".
    run_tags = {**provenance, tag.METHODS: ",".join(expl.methods), **(tags or {}),
                tag.STATUS: expl.summary["status"]}
    if model_id:
        run_tags[tag.MODEL_ID] = model_id
    if expl.governance is not None:
        run_tags[tag.GOVERNANCE] = expl.governance["verdict"]
    client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in run_tags.items()])
    if model_id:
        try:
            model_tags = {**provenance, tag.RUN_ID: run_id, tag.STATUS: expl.summary["status"]}
            if expl.governance is not None:
                model_tags[tag.GOVERNANCE] = expl.governance["verdict"]
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
