"""The recorder's outcome is atomic in what it claims: a failure at any step leaves
status=failed with the reason and xai/error.txt, and never a summary or tag saying ok."""

from __future__ import annotations

import pytest

from mlflow_xai.config import XaiConfig
from mlflow_xai.recording import Destination, RecordingError, explain_and_record
from tests.conftest import xai_artifacts

OPTIONS = {"explainers": ["exact_shap"], "checks": [], "max_rows": 20, "strict": False}


def test_a_failure_between_artifacts_and_status_leaves_failed(experiment, cancer_small, logreg,
                                                              monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    X, _ = cancer_small
    real = MlflowClient.log_batch

    def metrics_fail(self, run_id, metrics=(), params=(), tags=(), **kwargs):
        if metrics:
            raise RuntimeError("metric store full (simulated)")
        return real(self, run_id, metrics=metrics, params=params, tags=tags, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", metrics_fail)
    with mlflow.start_run() as run:
        outcome = explain_and_record(logreg, X, XaiConfig.from_mapping(OPTIONS),
                                     Destination(run.info.run_id, source="api"))
    monkeypatch.undo()
    assert outcome.status == "failed" and "metric store full" in str(outcome.error)
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["mlflow_xai.status"] == "failed"
    assert "recording the explanation failed part-way" in tags["mlflow_xai.error"]
    artifacts = xai_artifacts(run.info.run_id)
    assert "xai/error.txt" in artifacts
    assert "xai/summary.json" not in artifacts  # uploaded only after everything it lists
    assert "mlflow_xai.digest" not in tags


def test_names_the_server_would_refuse_are_caught_before_any_upload(experiment, cancer_small,
                                                                    logreg):
    import mlflow
    from mlflow import MlflowClient

    X, _ = cancer_small
    with mlflow.start_run() as run:
        dest = Destination(run.info.run_id, source="api", tags={"bad tag name?": "x"})
        with pytest.raises(RecordingError, match="would be refused by MLflow"):
            explain_and_record(logreg, X, XaiConfig.from_mapping({**OPTIONS, "strict": True}),
                               dest)
    assert xai_artifacts(run.info.run_id) == set()  # nothing half-written
    assert "mlflow_xai.status" not in MlflowClient().get_run(run.info.run_id).data.tags

    with mlflow.start_run() as run:
        dest = Destination(run.info.run_id, source="api", tags={"bad tag name?": "x"})
        outcome = explain_and_record(logreg, X, XaiConfig.from_mapping(OPTIONS), dest)
    assert outcome.status == "failed"
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["mlflow_xai.status"] == "failed" and "refused" in tags["mlflow_xai.error"]
    assert xai_artifacts(run.info.run_id) == {"xai/error.txt"}


def test_evaluate_never_fails_because_of_xai_unless_named(experiment, cancer_small, logreg):
    """A flat third-party config key that resembles ours ('seeds') made a plain evaluate()
    raise; unnamed, xai only warns and records. Named, the error stays an error."""
    import mlflow
    from mlflow import MlflowClient

    from mlflow_xai.errors import ConfigError

    X, y = cancer_small
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                        pip_requirements=["scikit-learn"])
    data = X.assign(label=y.to_numpy())
    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(info.model_uri, data, targets="label",
                                        model_type="classifier",
                                        evaluator_config={"seeds": 3})
    assert "accuracy_score" in result.metrics  # MLflow's own evaluator ran
    tags = MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["mlflow_xai.status"] == "failed" and "seeds" in tags["mlflow_xai.error"]
    with mlflow.start_run(), pytest.raises(ConfigError, match="seeds"):
        mlflow.models.evaluate(info.model_uri, data, targets="label", model_type="classifier",
                               evaluators=["xai"], evaluator_config={"xai": {"seeds": 3}})
