"""timeout= and cancel: a model whose predict hangs is stopped in its worker process."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import mlflow_xai
from mlflow_xai.errors import (
    ConfigError,
    ExplainCancelled,
    ExplainTimeout,
    ModelPredictError,
    XaiError,
)
from tests.conftest import SKLEARN_REQS

# A hang must never stall the suite, whatever goes wrong.
pytestmark = pytest.mark.timeout(180)

#: Worker start-up (fresh interpreter, imports, unpickling) plus slack for a loaded CI machine.
STARTUP_MARGIN_S = 30.0


def sleep_forever(X):
    time.sleep(10**6)


def _workers() -> list[int]:
    """This process's live (not zombie) worker processes, found through /proc."""
    if not os.path.isdir("/proc"):
        pytest.skip("needs /proc to list processes")
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{entry}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if b"mlflow_xai.worker" in cmdline and state != "Z" and int(ppid) == os.getpid():
            pids.append(int(entry))
    return pids


def test_a_hanging_model_is_stopped_at_the_timeout(cancer_small):
    X, _ = cancer_small
    before = set(_workers())
    started = time.perf_counter()
    with pytest.raises(ExplainTimeout, match=r"within 2 s \(timeout=2\); it was stopped"):
        mlflow_xai.explain(sleep_forever, X, timeout=2, explainers=["kernel_shap"])
    wall = time.perf_counter() - started
    print(f"\nhanging model stopped after {wall:.2f} s (timeout 2 s + worker start-up)")
    assert 2 <= wall < 2 + STARTUP_MARGIN_S
    assert set(_workers()) <= before, "the worker process was left running"


def test_the_worker_returns_the_full_result(cancer_small, logreg, tmp_path):
    X, y = cancer_small
    options = {"targets": y, "explainers": {"kernel_shap": {"n_samples": 64},
                                            "permutation_importance": {"n_repeats": 2}},
               "max_rows": 20, "seed": 3}
    started = time.perf_counter()
    local = mlflow_xai.explain(logreg, X, **options)
    in_process = time.perf_counter() - started
    started = time.perf_counter()
    remote = mlflow_xai.explain(logreg, X, timeout=60, output_dir=tmp_path, **options)
    in_worker = time.perf_counter() - started
    worker = remote.summary["worker"]
    print(f"\nin process {in_process:.2f} s; in the worker {in_worker:.2f} s, of which start-up "
          f"{worker['startup_seconds']:.2f} s")
    assert worker["timeout_seconds"] == 60
    for method in ("kernel_shap",):
        np.testing.assert_allclose(remote.attributions[method], local.attributions[method])
        np.testing.assert_allclose(remote.base_values[method], local.base_values[method])
    np.testing.assert_allclose(remote.importance, local.importance)
    assert list(remote.importance.index) == list(local.importance.index)
    assert remote.checks.keys() == local.checks.keys()
    assert remote.summary["methods"].keys() == local.summary["methods"].keys()
    assert (remote.data.index == local.data.index).all()
    # The recording code works on what came back (output_dir wrote the xai/ folder).
    assert (tmp_path / "summary.json").exists()
    assert (tmp_path / "attributions" / "kernel_shap.parquet").exists()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_autolog_records_a_timeout_as_a_failure(asynchronous, experiment, cancer_small):
    import mlflow

    from tests.hanging_model import log_hanging_model

    X, _ = cancer_small
    mlflow_xai.autolog(data=X, timeout=3, explainers=["permutation_shap"],
                       asynchronous=asynchronous)
    started = time.perf_counter()
    with mlflow.start_run() as run:
        info = log_hanging_model()
    mlflow_xai.wait(timeout=120)
    wall = time.perf_counter() - started
    print(f"\nlog_model + stopped explanation: {wall:.2f} s")
    assert wall < 3 + STARTUP_MARGIN_S + 15  # + logging the model and the failure
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["mlflow_xai.status"] == "failed"
    assert "ExplainTimeout" in tags["mlflow_xai.error"]
    assert "timeout=3" in tags["mlflow_xai.error"]
    model = mlflow.MlflowClient().get_logged_model(info.model_id)
    assert model.tags.get("mlflow_xai.status") == "failed"
    assert not _workers()


def test_evaluator_records_a_timeout_as_a_failure(experiment, cancer_small):
    import mlflow

    from tests.hanging_model import log_hanging_model

    X, y = cancer_small
    with mlflow.start_run():
        info = log_hanging_model()
    started = time.perf_counter()
    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(
            info.model_uri, X.assign(label=y.to_numpy()), targets="label",
            model_type="classifier", evaluators=["xai"],
            evaluator_config={"xai": {"timeout": 3, "strict": False}})
    wall = time.perf_counter() - started
    print(f"\nevaluate with a hanging model returned after {wall:.2f} s")
    assert not any(k.startswith("xai") for k in result.metrics)
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["mlflow_xai.status"] == "failed"
    assert "timeout=3" in tags["mlflow_xai.error"]
    error = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/xai/error.txt")
    assert "ExplainTimeout" in error


def test_cancel_stops_a_hanging_run(cancer_small):
    from mlflow_xai.config import XaiConfig
    from mlflow_xai.pipeline import run

    X, _ = cancer_small
    cancel = threading.Event()
    timer = threading.Timer(1.0, cancel.set)
    timer.start()
    started = time.perf_counter()
    try:
        with pytest.raises(ExplainCancelled, match="cancelled"):
            run(sleep_forever, X, XaiConfig(explainers=["kernel_shap"]), cancel=cancel)
    finally:
        timer.cancel()
    wall = time.perf_counter() - started
    print(f"\ncancelled after {wall:.2f} s (event set at 1 s)")
    assert 1 <= wall < 6
    assert not _workers()
    with pytest.raises(ExplainCancelled, match="before it started"):  # already set: no worker
        run(sleep_forever, X, XaiConfig(), cancel=cancel)


@pytest.mark.parametrize("value", [True, "5", -1, 0, float("nan"), float("inf")])
def test_timeout_must_be_a_positive_number(value, cancer_small):
    from mlflow_xai.evaluator import parse_evaluator_config

    X, _ = cancer_small
    with pytest.raises(ConfigError, match=r"timeout must be a positive number.*got " +
                       repr(value).replace("(", r"\(").replace(")", r"\)")):
        mlflow_xai.explain(sleep_forever, X, timeout=value)
    with pytest.raises(ConfigError, match="timeout"):
        mlflow_xai.autolog(data=X, timeout=value)
    with pytest.raises(ConfigError, match="timeout"):
        parse_evaluator_config({"timeout": value}, "classifier")
    assert parse_evaluator_config({"timeout": 2.5}, "classifier").timeout == 2.5


def test_option_mistakes_fail_before_the_worker_starts(cancer_small):
    X, _ = cancer_small
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="unknown explainer 'shapley'"):
        mlflow_xai.explain(sleep_forever, X, timeout=5, explainers=["shapley"])
    assert time.perf_counter() - started < 1.0


def test_an_unpicklable_model_gets_a_clear_error(cancer_small):
    X, _ = cancer_small

    class Unpicklable:
        def __call__(self, X):
            return X[:, 0]

        def __reduce__(self):
            raise TypeError("holds a socket")

    with pytest.raises(XaiError, match=r"cannot be pickled \(TypeError: holds a socket\)"
                                       r".*model URI"):
        mlflow_xai.explain(Unpicklable(), X, timeout=5)


def test_worker_errors_keep_their_class_and_traceback(cancer_small):
    X, _ = cancer_small

    def broken(X):
        raise RuntimeError("no predictions today")

    with pytest.raises(ModelPredictError, match="no predictions today") as caught:
        mlflow_xai.explain(broken, X, timeout=30, explainers=["kernel_shap"])
    assert "RuntimeError: no predictions today" in str(caught.value.__cause__)  # worker's
    assert not _workers()


def test_a_worker_that_dies_is_an_error_naming_how(cancer_small):
    import signal

    X, _ = cancer_small

    def killed(X):
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer would

    with pytest.raises(XaiError, match="ended with signal SIGKILL before|SIGKILL"):
        mlflow_xai.explain(killed, X, timeout=30, explainers=["kernel_shap"])
    assert not _workers()


def test_a_model_uri_resolves_against_the_callers_tracking_store(
        experiment, logreg, cancer_small, monkeypatch):
    import mlflow

    X, _ = cancer_small
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(logreg, name="model", pip_requirements=SKLEARN_REQS)
    # Only mlflow.set_tracking_uri (in conftest) knows the store: not the environment.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    expl = mlflow_xai.explain(info.model_uri, X, timeout=60, max_rows=10,
                              explainers={"kernel_shap": {"n_samples": 32}}, checks=[])
    assert expl.summary["model"]["model_id"] == info.model_id
    assert expl.model_id == info.model_id
