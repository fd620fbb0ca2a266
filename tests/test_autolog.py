"""Explain on log: mlflow_xai.autolog() and mlflow.<flavor>.log_model."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest

import mlflow_xai
from tests.conftest import FAST, SKLEARN_REQS, train_torch_mlp, xai_artifacts


def _summary(run_id: str) -> dict:
    import mlflow

    uri = mlflow.MlflowClient().get_run(run_id).info.artifact_uri
    return json.loads(mlflow.artifacts.load_text(f"{uri}/xai/summary.json"))


def test_sklearn_log_model_is_explained(experiment, logreg, cancer_small):
    import mlflow

    X, y = cancer_small
    mlflow_xai.autolog(data=X, targets=y, explainers=FAST, max_rows=20)
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS)
    paths = xai_artifacts(run.info.run_id)
    assert {"xai/summary.json", "xai/importance.json", "xai/attributions/kernel_shap.parquet",
            "xai/plots/kernel_shap_bar.png", "xai/plots/kernel_shap_beeswarm.png",
            "xai/plots/permutation_importance_bar.png"} <= paths
    client = mlflow.MlflowClient()
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["mlflow_xai.status"] == "ok"
    model = client.get_logged_model(info.model_id)
    linked = {m.key for m in model.metrics or []}
    assert "xai.kernel_shap.seconds" in linked
    assert model.tags["mlflow_xai.status"] == "ok"
    assert _summary(run.info.run_id)["model"]["model_id"] == info.model_id


def test_pytorch_log_model_is_explained(experiment, cancer_small):
    import mlflow
    import torch

    X, y = cancer_small
    Xs = ((X - X.mean()) / X.std()).to_numpy(np.float32)
    net = train_torch_mlp(Xs, y.to_numpy())
    mlflow_xai.autolog(data=Xs, explainers={"kernel_shap": {"n_samples": 64}}, max_rows=15)
    with mlflow.start_run() as run:
        mlflow.pytorch.log_model(net, name="model", input_example=Xs[:3],
                                 pip_requirements=["torch"])
    summary = _summary(run.info.run_id)
    assert summary["model"]["kind"] == "torch" and summary["device"] == "cpu"
    table = pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="xai/attributions/kernel_shap.parquet"))
    with torch.no_grad():
        logits = net(torch.tensor(Xs[table.index.to_numpy()]))[:, 1].numpy()
    total = table[[c for c in table.columns if not c.startswith("xai.")]].sum(axis=1)
    np.testing.assert_allclose(total + table["xai.base_value"], logits, atol=1e-4)


@pytest.mark.parametrize("flavor", ["xgboost", "lightgbm"])
def test_boosted_tree_flavors_get_tree_shap(flavor, experiment, cancer_small):
    import mlflow

    X, y = cancer_small
    if flavor == "xgboost":
        import xgboost

        model = xgboost.XGBClassifier(n_estimators=15, max_depth=3).fit(X, y)
        log = mlflow.xgboost.log_model
        kwargs = {"xgb_model": model}
    else:
        import lightgbm

        model = lightgbm.LGBMClassifier(n_estimators=15, verbose=-1).fit(X, y)
        log = mlflow.lightgbm.log_model
        kwargs = {"lgb_model": model}
    mlflow_xai.autolog(data=X, explainers=["tree_shap"])
    with mlflow.start_run() as run:
        log(**kwargs, name="model", input_example=X.head(2), pip_requirements=[flavor])
    entry = _summary(run.info.run_id)["methods"]["tree_shap"]
    assert entry["status"] == "ok" and entry["output_space"] == "margin"
    assert entry["efficiency_max_abs_gap"] < 1e-4


def test_pyfunc_model_is_explained(experiment, diabetes):
    import mlflow

    X, _ = diabetes
    weights = np.linspace(-1, 1, X.shape[1])

    class Linear(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input.to_numpy() @ weights

    mlflow_xai.autolog(data=X, explainers=["permutation_shap"], max_rows=10)
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=Linear(), input_example=X.head(2),
                                pip_requirements=["numpy"])
    table = pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="xai/attributions/permutation_shap.parquet"))
    background_mean = _summary(run.info.run_id)  # the closed form needs the sampled background
    assert background_mean["model"]["kind"] == "pyfunc"
    features = table[list(X.columns)]
    np.testing.assert_allclose(features.sum(axis=1) + table["xai.base_value"],
                               X.loc[table.index].to_numpy() @ weights, atol=1e-8)


def test_data_set_logged_to_the_run_is_used(experiment, logreg, cancer_small):
    import mlflow

    X, y = cancer_small
    mlflow_xai.autolog(explainers=["permutation_importance"])
    train = mlflow.data.from_pandas(X.iloc[:60].assign(label=y.iloc[:60].to_numpy()),
                                    targets="label", name="train")
    holdout = mlflow.data.from_pandas(X.iloc[60:].assign(label=y.iloc[60:].to_numpy()),
                                      targets="label", name="holdout")
    with mlflow.start_run() as run:
        mlflow.log_input(train, context="training")
        mlflow.log_input(holdout, context="eval")
        mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                 pip_requirements=SKLEARN_REQS)
    summary = _summary(run.info.run_id)
    assert summary["data"]["source"].startswith("run data set 'holdout'")
    assert summary["data"]["rows_total"] == 60 and summary["data"]["targets"] is True
    assert summary["methods"]["permutation_importance"]["scoring"] == "targets"


def test_without_data_the_model_is_skipped_with_a_reason(experiment, logreg, cancer_small):
    import mlflow

    X, _ = cancer_small
    mlflow_xai.autolog()
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS)
    assert info.model_uri
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["mlflow_xai.status"] == "skipped"
    assert "no data set logged with mlflow.log_input" in tags["mlflow_xai.reason"]


def test_a_failure_never_breaks_log_model(experiment, logreg, cancer_small):
    import mlflow

    X, _ = cancer_small
    mlflow_xai.autolog(data=X.drop(columns=["mean texture"]), explainers=FAST)
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS)
    assert mlflow.pyfunc.load_model(info.model_uri) is not None  # the model is intact
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["mlflow_xai.status"] == "failed"
    assert "missing column(s) ['mean texture']" in tags["mlflow_xai.error"]
    error = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/xai/error.txt")
    assert "InvalidInputError" in error


def test_strict_mode_raises_from_log_model(experiment, logreg, cancer_small):
    import mlflow

    X, _ = cancer_small
    mlflow_xai.autolog(data=X.drop(columns=["mean texture"]), explainers=FAST, strict=True)
    with mlflow.start_run(), pytest.raises(mlflow_xai.errors.InvalidInputError):
        mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                 pip_requirements=SKLEARN_REQS)


def test_asynchronous_returns_first_and_wait_blocks(experiment, logreg, cancer_small):
    import mlflow

    X, y = cancer_small
    mlflow_xai.autolog(data=X, targets=y, asynchronous=True,
                       explainers={"kernel_shap": {"n_samples": 256}}, max_rows=60)
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                 pip_requirements=SKLEARN_REQS)
        started = time.perf_counter()
        pending = not any(p.endswith("summary.json") for p in xai_artifacts(run.info.run_id))
    mlflow_xai.wait(timeout=300)
    assert pending, "log_model waited for the explanation although asynchronous=True"
    assert "xai/summary.json" in xai_artifacts(run.info.run_id)
    assert time.perf_counter() - started >= 0


def test_autolog_checks_options_at_once_and_disable_restores(experiment):
    from mlflow.models import Model

    original = Model.__dict__["log"]
    with pytest.raises(mlflow_xai.errors.ConfigError, match="unknown explainer 'shap'"):
        mlflow_xai.autolog(explainers=["shap"])
    with pytest.raises(mlflow_xai.errors.ConfigError, match="did you mean 'max_rows'"):
        mlflow_xai.autolog(max_row=5)
    mlflow_xai.autolog()
    assert Model.__dict__["log"] is not original
    mlflow_xai.autolog(disable=True)
    assert Model.__dict__["log"] is original


def test_pyfunc_with_a_float32_tensor_signature_gets_arrays(experiment):
    import mlflow

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4)).astype(np.float32)
    seen = []

    class Strict(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            arr = np.asarray(model_input)
            seen.append(arr.dtype)
            return arr.astype(np.float64) @ np.array([1.0, -1.0, 2.0, 0.0])

    mlflow_xai.autolog(data=X, explainers=["kernel_shap"], max_rows=10)
    with mlflow.start_run() as run:
        mlflow.pyfunc.log_model(name="model", python_model=Strict(), input_example=X[:2],
                                pip_requirements=["numpy"])
    assert mlflow.MlflowClient().get_run(run.info.run_id).data.tags["mlflow_xai.status"] == "ok"
    assert _summary(run.info.run_id)["methods"]["kernel_shap"]["efficiency_max_abs_gap"] < 1e-5
