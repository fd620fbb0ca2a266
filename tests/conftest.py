"""Shared fixtures. mlflow is imported inside fixtures so collection stays fast."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("MLFLOW_XAI_PROGRESS", "0")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# Environment inference spawns a subprocess per log_model; tests pass requirements instead.
SKLEARN_REQS = ["scikit-learn"]


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store for the whole session (creating its tables takes seconds)."""
    import mlflow

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


@pytest.fixture()
def experiment(tracking_uri: str, tmp_path: pytest.TempPathFactory) -> str:
    """A fresh experiment (artifacts under this test's tmp dir), set as current."""
    import mlflow

    name = f"test-{uuid.uuid4().hex[:8]}"
    exp_id = mlflow.create_experiment(name, artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment(experiment_id=exp_id)
    yield exp_id
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(autouse=True)
def _no_autolog_leak():
    """A test that turns autolog on must not leave MLflow patched for the next one."""
    yield
    import sys

    if "mlflow_xai.autologging" in sys.modules:
        from mlflow_xai import autologging as autolog_module

        autolog_module.wait(timeout=120)
        autolog_module.autolog(disable=True)


@pytest.fixture(scope="session")
def cancer() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X, y


@pytest.fixture(scope="session")
def cancer_small(cancer) -> tuple[pd.DataFrame, pd.Series]:
    """Eight features and 120 rows: enough signal, cheap to explain."""
    X, y = cancer
    cols = ["mean radius", "mean texture", "mean smoothness", "mean concave points",
            "worst radius", "worst texture", "worst concave points", "worst symmetry"]
    return X[cols].iloc[:120].copy(), y.iloc[:120].copy()


@pytest.fixture(scope="session")
def logreg(cancer_small):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = cancer_small
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)


@pytest.fixture(scope="session")
def forest(cancer_small):
    from sklearn.ensemble import RandomForestClassifier

    X, y = cancer_small
    return RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0).fit(X, y)


@pytest.fixture(scope="session")
def people() -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Synthetic applicants; the 'biased' labels lean on the protected attribute 'sex'."""
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"income": rng.normal(50, 10, 300), "debt": rng.normal(10, 3, 300),
                      "age": rng.integers(20, 70, 300).astype(float),
                      "sex": rng.integers(0, 2, 300).astype(float),
                      "tenure": rng.normal(5, 2, 300)})
    fair = (X["income"] - 2 * X["debt"] + 0.5 * X["tenure"] > 32).astype(int)
    biased = ((X["income"] - 2 * X["debt"]) / 10 + 4 * X["sex"] > 4).astype(int)
    return X, fair, biased


def fit_logreg(X: pd.DataFrame, y: pd.Series):
    """A scaled logistic regression (the governance tests' fair/biased models)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)


@pytest.fixture(scope="session")
def diabetes() -> tuple[pd.DataFrame, pd.Series]:
    from sklearn.datasets import load_diabetes

    X, y = load_diabetes(return_X_y=True, as_frame=True)
    return X.iloc[:150].copy(), y.iloc[:150].copy()


@pytest.fixture(scope="session")
def linreg(diabetes):
    from sklearn.linear_model import LinearRegression

    X, y = diabetes
    return LinearRegression().fit(X, y)


#: Cheap parameters for tests that exercise plumbing rather than accuracy.
FAST = {"kernel_shap": {"n_samples": 64}, "permutation_shap": {"n_samples": 40},
        "lime": {"n_samples": 200}, "permutation_importance": {"n_repeats": 2}}


@pytest.fixture()
def fast_explainers() -> dict:
    return {k: dict(v) for k, v in FAST.items()}


def train_torch_mlp(X: np.ndarray, y: np.ndarray, *, outputs: int = 2, epochs: int = 60,
                    seed: int = 0):
    """A small MLP trained in the test (no downloads)."""
    import torch

    torch.manual_seed(seed)
    x = torch.tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32)
    target = torch.tensor(np.asarray(y), dtype=torch.long)
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, outputs))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(epochs):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), target)
        loss.backward()
        opt.step()
    return net


def one_error_line(result, exit_code: int = 2) -> str:
    """A CLI result (click's CliRunner) is exactly one line, 'error: ...', with the exit
    code, and no traceback; return that line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        f"unexpected exception: {result.exception!r}\n{result.output}"
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture()
def good_csv(tmp_path, cancer_small):
    """The small breast-cancer frame with its labels in a 'label' column, as CSV."""
    X, y = cancer_small
    path = tmp_path / "eval.csv"
    X.assign(label=y.to_numpy()).to_csv(path, index=False)
    return path


def mlflow_refuses(name: str) -> str | None:
    """MLflow's own reason to refuse ``name`` as a metric name, or None."""
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_metric

    try:
        _validate_metric(name, 1.0, 0, 0)
    except MlflowException as exc:
        return exc.message
    return None


def xai_artifacts(run_id: str, path: str = "xai") -> set[str]:
    """Every artifact path under ``path`` of a run (recursively), on the current store."""
    import mlflow

    client = mlflow.MlflowClient()

    def walk(folder: str):
        for item in client.list_artifacts(run_id, folder):
            yield from walk(item.path) if item.is_dir else [item.path]

    return set(walk(path))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A real `mlflow server` on loopback (sqlite store), shared by the tests that need one."""
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
