"""The Ray Data backend (mlflow_xai.distributed) on a local two-CPU Ray cluster.

The cluster declares one GPU that does not exist (``num_gpus=1``), so GPU placement with
fractional GPUs per actor is exercised while torch, seeing no CUDA, runs on the CPU.
"""

from __future__ import annotations

import os
import pickle
import sys
import uuid

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import mlflow_xai
from mlflow_xai import distributed
from mlflow_xai.errors import ConfigError, InvalidInputError
from tests.conftest import SKLEARN_REQS

pytestmark = pytest.mark.slow

#: Small budget: these tests check plumbing and exactness, not estimator accuracy.
KERNEL = {"kernel_shap": {"n_samples": 32}}


@pytest.fixture(scope="module")
def ray_cluster(tracking_uri):
    """Two CPUs and one declared (absent) GPU; workers inherit MLFLOW_TRACKING_URI."""
    # The crashing actor class below lives in this test module, which workers cannot import.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="warning",
             configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def model_uri(tracking_uri, tmp_path_factory, cancer_small, logreg) -> str:
    """The conftest logistic regression, logged once for the module (cloudpickle format: the
    default skops format costs every fresh worker several seconds of imports)."""
    import mlflow

    X, _ = cancer_small
    root = tmp_path_factory.mktemp("distributed-model")
    exp_id = mlflow.create_experiment(f"distributed-{uuid.uuid4().hex[:8]}",
                                      artifact_location=(root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=exp_id):
        info = mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS,
                                        serialization_format="cloudpickle")
    return info.model_uri


def single_process(model_uri: str, X: pd.DataFrame, background: pd.DataFrame | None):
    return mlflow_xai.explain(model_uri, X, explainers=KERNEL, background=background,
                              max_rows=len(X), checks=[], seed=0, progress=False)


def assert_same_as(expl, frame: pd.DataFrame, ids: np.ndarray) -> None:
    """``frame`` (distributed output) holds exactly ``ids`` once each, with expl's values."""
    assert frame["row_id"].is_unique
    frame = frame.set_index("row_id").loc[ids]
    features = list(expl.attributions["kernel_shap"].columns)
    got = frame[[f"kernel_shap/{f}" for f in features]].to_numpy()
    np.testing.assert_allclose(got, expl.attributions["kernel_shap"].to_numpy(),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(frame["kernel_shap/xai.base_value"].to_numpy(),
                               expl.base_values["kernel_shap"].to_numpy(), rtol=1e-12)


def test_matches_single_process_on_fractional_gpus(ray_cluster, model_uri, cancer_small,
                                                   experiment, tmp_path):
    import mlflow

    X, _ = cancer_small
    with mlflow.start_run() as run:
        result = distributed.explain(model_uri, X, explainers=KERNEL, concurrency=2,
                                     num_gpus_per_worker=0.5, batch_size=25, seed=0,
                                     output_path=tmp_path / "out")
    out = result.to_pandas()
    assert result.rows == len(X) == len(out)
    assert sorted(out["row_id"]) == list(range(len(X)))  # complete, no duplicates
    assert result.summary["data"]["row_id"]["source"].startswith("positional")

    # Same rows, background and seed in one process: the same numbers.
    expl = single_process(model_uri, X, result.background)
    assert_same_as(expl, out, np.arange(len(X)))
    # The default background is the one explain() itself draws from these rows.
    pd.testing.assert_frame_equal(single_process(model_uri, X, None).attributions["kernel_shap"],
                                  expl.attributions["kernel_shap"])

    # Exact reduction: the mean |attribution| over all rows, not a mean of batch means.
    columns = [f"kernel_shap/{f}" for f in X.columns]
    by_rows = out[columns].abs().mean().to_numpy()
    np.testing.assert_allclose(result.importance["kernel_shap"].loc[list(X.columns)], by_rows,
                               rtol=1e-12)
    np.testing.assert_allclose(result.importance["kernel_shap"].loc[list(X.columns)],
                               expl.importance["kernel_shap"].loc[list(X.columns)], rtol=1e-9)

    # Logged like any run, through the one recorder: the same documents, metric names and
    # provenance as a one-process run (the summary bound to the model, digest-tagged).
    client = mlflow.MlflowClient()
    assert result.run_id == run.info.run_id
    logged = {f.path for f in client.list_artifacts(run.info.run_id, "xai")}
    assert {"xai/summary.json", "xai/importance.json", "xai/stability.json",
            "xai/report.html"} <= logged
    tags = client.get_run(run.info.run_id).data.tags
    assert tags["mlflow_xai.status"] == "ok" and tags["mlflow_xai.source"] == "distributed"
    summary = mlflow.artifacts.load_dict(f"{client.get_run(run.info.run_id).info.artifact_uri}"
                                         "/xai/summary.json")
    assert summary["model"]["run_id"] == run.info.run_id
    assert set(summary["artifacts"]["sha256"]) >= {"importance.json", "stability.json"}
    assert summary["methods"]["kernel_shap"]["model_evals"] > 0  # summed over the batches
    logged_table = pd.read_parquet(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="xai/attributions/kernel_shap.parquet"))
    np.testing.assert_allclose(logged_table[list(X.columns)].to_numpy(),
                               out[columns].to_numpy(), rtol=1e-12)
    metrics = client.get_run(run.info.run_id).data.metrics
    assert metrics["xai.rows_explained"] == len(X)
    top = result.top_features("kernel_shap", 1)[0]
    assert metrics[f"xai.kernel_shap.importance.{top}"] == pytest.approx(
        result.importance.at[top, "kernel_shap"])
    assert result.summary["ray"]["num_gpus_per_worker"] == 0.5


def test_actor_device_auto_with_a_declared_gpu(ray_cluster):
    """Ray sets CUDA_VISIBLE_DEVICES for an actor given (a share of) the declared GPU; torch
    sees no CUDA, so 'auto' is the CPU. An actor given no GPU is on the CPU too."""

    @ray.remote
    class Probe:
        def device(self):
            from mlflow_xai.distributed import worker_device

            return worker_device("auto"), ray.get_gpu_ids(), os.environ.get(
                "CUDA_VISIBLE_DEVICES")

    with_gpu = Probe.options(num_gpus=0.5, num_cpus=0).remote()
    without = Probe.options(num_cpus=0).remote()
    device, gpus, visible = ray.get(with_gpu.device.remote())
    assert (device, len(gpus)) == ("cpu", 1) and visible == "0"
    assert ray.get(without.device.remote())[0] == "cpu"


class CrashOnce(distributed.BatchExplainer):
    """Kills its worker process at its second batch, once per test (a marker file): the
    first batch of that process has already been emitted when it dies."""

    marker_path: str = ""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self._calls = getattr(self, "_calls", 0) + 1
        if self._calls == 2:
            try:
                os.close(os.open(self.marker_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return super().__call__(batch)


def test_killed_worker_is_retried_without_losing_or_duplicating_rows(
        ray_cluster, model_uri, cancer_small, tmp_path):
    X, _ = cancer_small
    # User row ids (not 0..n-1, not in order) on a Ray Dataset of several blocks.
    ids = 1000 + 7 * np.random.default_rng(1).permutation(len(X))
    frame = X.assign(row_id=ids)
    ds = ray.data.from_pandas([frame.iloc[i:i + 20] for i in range(0, len(frame), 20)])
    marker = tmp_path / "crashed"

    class Worker(CrashOnce):
        marker_path = str(marker)

    # Ray Data's defaults restart the dead actor and resubmit its batch (max_restarts=-1,
    # max_task_retries=-1); passing them (ray_remote_args=) is deprecated from Ray 2.51.
    result = distributed.explain(model_uri, ds, explainers=KERNEL, concurrency=2,
                                 batch_size=20, seed=0, log=False, worker_class=Worker)
    assert marker.exists(), "no worker was killed: the test did not test a retry"
    out = result.to_pandas()
    assert result.rows == len(X) == len(out)
    assert sorted(out["row_id"]) == sorted(ids)
    assert "hash" in result.summary["data"]["background_source"]
    expl = single_process(model_uri, X.set_index(pd.Index(ids)), result.background)
    assert_same_as(expl, out, ids)


def test_parquet_path_without_row_ids(ray_cluster, model_uri, cancer_small, tmp_path):
    """Rows are numbered in file order (sorted names), then row order, on every run."""
    X, _ = cancer_small
    folder = tmp_path / "data"
    folder.mkdir()
    for k, start in enumerate(range(0, len(X), 50)):
        X.iloc[start:start + 50].to_parquet(folder / f"part-{k}.parquet", index=False)
    result = distributed.explain(model_uri, str(folder), explainers=KERNEL, concurrency=1,
                                 batch_size=64, background_rows=30, seed=3, log=False)
    out = result.to_pandas()
    assert list(out["row_id"]) == list(range(len(X)))
    assert len(result.background) == 30
    expl = mlflow_xai.explain(model_uri, X.reset_index(drop=True), explainers=KERNEL,
                              background=result.background, max_rows=len(X), checks=[], seed=3,
                              progress=False)
    features = list(X.columns)
    np.testing.assert_allclose(out[[f"kernel_shap/{f}" for f in features]].to_numpy(),
                               expl.attributions["kernel_shap"].to_numpy(), rtol=1e-9,
                               atol=1e-12)
    # explain()'s own default background on the same rows and seed is the same one.
    default = mlflow_xai.explain(model_uri, X.reset_index(drop=True), explainers=KERNEL,
                                 background_rows=30, max_rows=len(X), checks=[], seed=3,
                                 progress=False)
    pd.testing.assert_frame_equal(default.attributions["kernel_shap"],
                                  expl.attributions["kernel_shap"])


def test_batch_explainer_as_spark_map_in_pandas_would_use_it(model_uri, cancer_small):
    """No Ray: an iterator of pandas batches in, an iterator out (Spark's mapInPandas)."""
    X, _ = cancer_small
    background = X.sample(25, random_state=0)
    explainer = distributed.BatchExplainer(model_uri, explainers=KERNEL, background=background,
                                           seed=0, feature_columns=list(X.columns))
    explainer = pickle.loads(pickle.dumps(explainer))  # shipped to an executor

    def map_in_pandas(batches):
        return (explainer(b) for b in batches)

    frame = X.reset_index(drop=True).assign(row_id=lambda d: np.arange(len(d)))
    batches = (frame.iloc[i:i + 33] for i in range(0, len(frame), 33))
    outputs = list(map_in_pandas(batches))
    assert explainer.loaded
    out = pd.concat(outputs, ignore_index=True)
    expl = single_process(model_uri, X.reset_index(drop=True), background)
    assert_same_as(expl, out, np.arange(len(X)))
    importance, rows, _ = distributed.reduce_frames(outputs)
    assert rows == len(X)
    np.testing.assert_allclose(importance["kernel_shap"].loc[list(X.columns)],
                               expl.importance["kernel_shap"].loc[list(X.columns)], rtol=1e-9)
    # A worker can get an empty batch: same columns, no rows.
    empty = explainer(frame.iloc[:0])
    assert list(empty.columns) == list(out.columns) and len(empty) == 0
    assert pickle.loads(pickle.dumps(explainer)).loaded is False  # never ships a loaded model


def test_clear_errors(model_uri, cancer_small, monkeypatch, tmp_path):
    X, _ = cancer_small
    with pytest.raises(InvalidInputError, match="got builtins.dict"):
        distributed.explain(model_uri, {"a": [1, 2]}, explainers=KERNEL, log=False)
    with pytest.raises(ConfigError, match="global-only"):
        distributed.explain(model_uri, X, explainers=["permutation_importance"], log=False)
    (tmp_path / "old.parquet").write_text("x")
    with pytest.raises(InvalidInputError, match="not empty"):
        distributed.explain(model_uri, X, explainers=KERNEL, output_path=tmp_path, log=False)
    with pytest.raises(InvalidInputError, match="background="):
        distributed.BatchExplainer(model_uri)(X.assign(row_id=0))
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"pip install 'mlflow-xai\[ray\]'"):
        distributed.explain(model_uri, X, log=False)
