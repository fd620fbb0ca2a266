"""Against a real `mlflow server` subprocess on loopback: log over HTTP, read back over REST."""

from __future__ import annotations

import io
import json
import os
import urllib.request

import pandas as pd
import pytest

import mlflow_xai
from tests.conftest import FAST, SKLEARN_REQS

pytestmark = pytest.mark.server


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def test_autolog_against_a_tracking_server(server, logreg, cancer_small, monkeypatch):
    import mlflow

    X, y = cancer_small
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    mlflow.set_tracking_uri(server)
    try:
        mlflow.set_experiment("server-e2e")
        mlflow_xai.autolog(data=X, targets=y, explainers=FAST, max_rows=20)
        with mlflow.start_run() as run:
            info = mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                            pip_requirements=SKLEARN_REQS)
    finally:
        mlflow.set_tracking_uri(previous)
    run_id = run.info.run_id

    # Read everything back over plain HTTP, as the UI and governance jobs do.
    listing = json.loads(_get(f"{server}/api/2.0/mlflow/artifacts/list?run_id={run_id}"
                              "&path=xai"))
    paths = {f["path"] for f in listing["files"]}
    assert {"xai/summary.json", "xai/importance.json", "xai/attributions", "xai/plots"} <= paths
    summary = json.loads(_get(f"{server}/get-artifact?run_uuid={run_id}&path=xai/summary.json"))
    assert summary["status"] == "ok" and summary["model"]["model_id"] == info.model_id
    table = pd.read_parquet(io.BytesIO(_get(
        f"{server}/get-artifact?run_uuid={run_id}&path=xai/attributions/kernel_shap.parquet")))
    assert table.shape == (20, X.shape[1] + 2)
    png = _get(f"{server}/get-artifact?run_uuid={run_id}&path=xai/plots/kernel_shap_bar.png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"

    run_json = json.loads(_get(f"{server}/api/2.0/mlflow/runs/get?run_id={run_id}"))
    tags = {t["key"]: t["value"] for t in run_json["run"]["data"]["tags"]}
    assert tags["mlflow_xai.status"] == "ok"
    metrics = {m["key"] for m in run_json["run"]["data"]["metrics"]}
    assert "xai.kernel_shap.seconds" in metrics
    model_json = json.loads(_get(f"{server}/api/2.0/mlflow/logged-models/{info.model_id}"))
    model_metrics = {m["key"] for m in model_json["model"]["data"].get("metrics", [])}
    assert "xai.rows_explained" in model_metrics
