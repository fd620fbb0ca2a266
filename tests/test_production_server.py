"""End to end against a production-shaped tracking server: PostgreSQL store, S3 artifacts.

The server (tests/production_server.py) is PostgreSQL + moto's S3 server + ``mlflow server``
proxying artifacts to s3://<bucket>/mlflow, all on 127.0.0.1. Through it: autolog, the
governance gate CLI and one pass of the watcher; every ``xai/`` file the tests rely on is
checked in the bucket itself, byte for byte against the SHA-256 manifest in summary.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SKLEARN_REQS
from tests.production_server import ProductionServer, production_server_fixture, tail

pytestmark = [pytest.mark.server, pytest.mark.slow]

CLI_TIMEOUT = 240  # seconds per CLI subprocess (it imports torch and mlflow on 2 shared cores)

production = production_server_fixture(scope="module")


@contextlib.contextmanager
def tracking(url: str) -> Iterator[None]:
    """Point mlflow (and MLFLOW_TRACKING_URI, which set_tracking_uri also sets) at ``url``."""
    import mlflow

    previous_uri = mlflow.get_tracking_uri()
    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(url)
    try:
        yield
    finally:
        while mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(previous_uri)
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def _cli(server: ProductionServer, *args: str, s3: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlflow_xai.cli", *args], check=False,
                          capture_output=True, text=True, env=server.client_env(s3=s3),
                          timeout=CLI_TIMEOUT, stdin=subprocess.DEVNULL)


def _explain(proc: subprocess.CompletedProcess, server: ProductionServer) -> str:
    return (f"exit {proc.returncode}\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n"
            f"{proc.stderr[-4000:]}\nmlflow server log tail:\n{tail(server.mlflow_log, 2000)}")


def _new_experiment(server: ProductionServer, stem: str) -> str:
    from mlflow import MlflowClient

    return MlflowClient(server.url).create_experiment(f"{stem}-{uuid.uuid4().hex[:8]}")


def _bucket_xai(server: ProductionServer, experiment_id: str, run_id: str) -> dict[str, bytes]:
    """``relative path -> bytes`` of every object under the run's xai/ folder in the bucket."""
    under = f"{experiment_id}/{run_id}/artifacts/xai/"
    s3 = server.s3.client()
    objects = {}
    for key in server.s3_keys(under):
        body = s3.get_object(Bucket=server.bucket, Key=key)["Body"].read()
        objects[key.split(under, 1)[1]] = body
    return objects


def _assert_xai_in_bucket(server: ProductionServer, experiment_id: str, run_id: str,
                          method: str = "kernel_shap") -> dict[str, Any]:
    """summary.json and the method's parquet are objects in the bucket, matching the manifest
    and the run's digest tag; return the summary."""
    from mlflow import MlflowClient

    objects = _bucket_xai(server, experiment_id, run_id)
    parquet = f"attributions/{method}.parquet"
    assert {"summary.json", parquet} <= set(objects), sorted(objects)
    summary = json.loads(objects["summary.json"])
    manifest = summary["artifacts"]["sha256"]
    assert hashlib.sha256(objects[parquet]).hexdigest() == manifest[parquet]
    run_tags = MlflowClient(server.url).get_run(run_id).data.tags
    assert hashlib.sha256(objects["summary.json"]).hexdigest() == run_tags["mlflow_xai.digest"]
    return summary


def _write_policy(path: Path, rule: str) -> Path:
    path.write_text(f"rules:\n  - {rule}\n")
    return path


def test_autolog_and_gate_through_postgres_and_s3(production: ProductionServer, tmp_path,
                                                  logreg, cancer_small):
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    import mlflow_xai

    X, _ = cancer_small
    client = MlflowClient(production.url)
    experiment_id = _new_experiment(production, "prod-autolog")
    with tracking(production.url):
        mlflow_xai.autolog(data=X, explainers={"kernel_shap": {"n_samples": 64}}, checks=[])
        try:
            with mlflow.start_run(experiment_id=experiment_id) as run:
                info = mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                                pip_requirements=SKLEARN_REQS)
        finally:
            mlflow_xai.autolog(disable=True)
        run_id, model_id = run.info.run_id, info.model_id

        # Tags on the run and the LoggedModel (both rows live in PostgreSQL).
        run_tags = client.get_run(run_id).data.tags
        assert run_tags.get("mlflow_xai.status") == "ok", run_tags
        assert run_tags.get("mlflow_xai.model_id") == model_id
        assert client.get_logged_model(model_id).tags.get("mlflow_xai.status") == "ok"

        # Downloadable through the server's artifact proxy...
        local = Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="xai", dst_path=str(tmp_path / "download"),
            tracking_uri=production.url))
        summary = json.loads((local / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["methods"]["kernel_shap"]["status"] == "ok"
        attributions = pd.read_parquet(local / "attributions" / "kernel_shap.parquet")
        assert len(attributions) == len(X) and set(X.columns) <= set(attributions.columns)

    # ... and really stored in the bucket: the files, and the model itself.
    in_bucket = _assert_xai_in_bucket(production, experiment_id, run_id)
    assert in_bucket == summary
    assert any(k.endswith(f"/{model_id}/artifacts/MLmodel")
               for k in production.s3_keys(f"{experiment_id}/")), \
        production.s3_keys(f"{experiment_id}/")
    importance = json.loads((local / "importance.json").read_text())["kernel_shap"]
    top = min(importance, key=lambda f: importance[f]["rank"])

    # The governance gate, as CI would run it: a subprocess talking to the server only.
    passing = _write_policy(tmp_path / "pass.yaml",
                            "name: shap-present\n    require_methods: [kernel_shap]")
    gate = _cli(production, "check", "--model-uri", f"models:/{model_id}",
                "--policy", str(passing))
    assert gate.returncode == 0, _explain(gate, production)
    assert "governance: PASSED" in gate.stdout
    assert client.get_logged_model(model_id).tags.get("mlflow_xai.governance") == "passed"
    assert "governance.json" in _bucket_xai(production, experiment_id, run_id)

    failing = _write_policy(tmp_path / "fail.yaml",
                            "name: top-feature-forbidden\n    forbid_top_k: "
                            f"{{features: [{json.dumps(top)}], k: 1, method: kernel_shap}}")
    gate = _cli(production, "check", "--model-uri", f"models:/{model_id}",
                "--policy", str(failing))
    assert gate.returncode == 1, _explain(gate, production)
    assert "governance: FAILED" in gate.stdout and top in gate.stdout
    assert client.get_logged_model(model_id).tags.get("mlflow_xai.governance") == "failed"
    governance = json.loads(_bucket_xai(production, experiment_id, run_id)["governance.json"])
    assert governance["verdict"] == "failed"


def test_watcher_once_through_postgres_and_s3(production: ProductionServer, tmp_path,
                                              logreg, cancer_small):
    import mlflow
    from mlflow import MlflowClient

    X, y = cancer_small
    data = tmp_path / "eval.parquet"
    X.assign(target=y.values).to_parquet(data)
    # The evaluation data lives in the bucket, under a prefix the operator allows the watcher
    # to read (it refuses data set sources outside the run's artifacts and allowed_sources).
    datasets = f"s3://{production.bucket}/datasets/"
    source = production.upload(data, f"datasets/{uuid.uuid4().hex[:8]}/eval.parquet")
    reference = tmp_path / "reference.parquet"
    X.iloc[:25].assign(target=y.values[:25]).to_parquet(reference)  # fewer than max_rows
    config = tmp_path / "watch.yaml"
    config.write_text(f"data: reference.parquet\nallowed_sources: ['{datasets}']\n"
                      "targets: target\nexplainers: {kernel_shap: {n_samples: 64}}\n"
                      "checks: []\nmax_rows: 30\nbackground_rows: 20\n")
    client = MlflowClient(production.url)
    experiment_id = _new_experiment(production, "prod-watch")
    name = client.get_experiment(experiment_id).name

    # A model logged WITHOUT autolog, its evaluation data set (in S3) logged to the run.
    with tracking(production.url), mlflow.start_run(experiment_id=experiment_id) as run:
        frame = mlflow.data.from_pandas(X.assign(target=y.values), source=source,
                                        targets="target", name="eval")
        mlflow.log_input(frame, context="eval")
        info = mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS)
    run_id, model_id = run.info.run_id, info.model_id
    assert "mlflow_xai.status" not in client.get_logged_model(model_id).tags

    # The watcher reads that data set from S3 itself, so it gets the S3 endpoint and keys.
    watch = _cli(production, "watch", "--tracking-uri", production.url, "--experiment", name,
                 "--once", "--min-age", "0", "--config", str(config), s3=True)
    assert watch.returncode == 0, _explain(watch, production)
    model_tags = client.get_logged_model(model_id).tags
    assert model_tags.get("mlflow_xai.status") == "ok", (model_tags, _explain(watch, production))
    assert model_tags.get("mlflow_xai.watch") == "done"
    run_tags = client.get_run(run_id).data.tags
    assert run_tags.get("mlflow_xai.status") == "ok" and run_tags.get("mlflow_xai.source") == \
        "watch"
    summary = _assert_xai_in_bucket(production, experiment_id, run_id)
    # 30 rows: the run's data set (120 rows, read from S3) was explained, not the config's
    # reference data (25 rows), which is only the fallback.
    assert summary["data"]["rows_explained"] == 30, (summary["data"], _explain(watch, production))
