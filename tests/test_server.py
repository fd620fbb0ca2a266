"""Against a real `mlflow server` subprocess on loopback: log over HTTP, read back over REST."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

import mlflow_xai
from tests.conftest import FAST, SKLEARN_REQS

pytestmark = pytest.mark.server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()}")
        time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


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
    assert "xai/kernel_shap/efficiency_gap" in metrics
    model_json = json.loads(_get(f"{server}/api/2.0/mlflow/logged-models/{info.model_id}"))
    model_metrics = {m["key"] for m in model_json["model"]["data"].get("metrics", [])}
    assert "xai/rows_explained" in model_metrics
