"""Nothing lost on outages: asynchronous autolog spools what it cannot upload (mlflow_xai.spool).

The module runs its own `mlflow server` (not the session fixture) because it stops it mid-test
and starts it again on the same port with the same store (tests/test_watch.py MlflowServer).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import mlflow_xai
from tests.conftest import _free_port, xai_artifacts
from tests.test_watch import MlflowServer

pytestmark = pytest.mark.timeout(600)

#: Cheap options: the tests exercise the plumbing, not the explanation.
OPTIONS = {"explainers": ["permutation_shap"], "max_rows": 10, "checks": []}
#: The CLI sets MLflow's retry variables for its own process; CliRunner restores them after.
CLI_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": None, "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": None}


@pytest.fixture(scope="module")
def own_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("spool-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def spool_root(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "spool"
    monkeypatch.setenv("MLFLOW_XAI_SPOOL_DIR", str(root))
    monkeypatch.setenv("MLFLOW_XAI_PROBE_TIMEOUT", "2")
    return root


@pytest.fixture()
def on_server(own_server):
    """The tracking URI points at our own server (restored after); yields (server, experiment)."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    if not own_server.healthy():
        own_server.start()
    mlflow.set_tracking_uri(own_server.url)
    experiment = mlflow.create_experiment(f"spool-{uuid.uuid4().hex[:8]}")
    yield own_server, experiment
    while mlflow.active_run():
        mlflow.end_run()
    if not own_server.healthy():
        own_server.start()
    mlflow.set_tracking_uri(previous)


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.normal(size=(40, 4)), columns=["a", "b", "c", "d"])


def _gated_model(hold: Path, reached: Path):
    """A linear pyfunc whose predict touches ``reached`` and waits while ``hold`` exists.

    Defined in a function so cloudpickle saves it by value (a subprocess can load it too)."""
    import mlflow

    class Gated(mlflow.pyfunc.PythonModel):
        def __init__(self, hold: str, reached: str) -> None:
            self.hold, self.reached = hold, reached
            self.weights = np.array([1.0, -2.0, 0.5, 0.0])

        def predict(self, context, model_input, params=None):
            Path(self.reached).touch()
            deadline = time.time() + 300
            while Path(self.hold).exists() and time.time() < deadline:
                time.sleep(0.05)
            return np.asarray(model_input, dtype=float) @ self.weights

    return Gated(str(hold), str(reached))


def _log_model(model, experiment: str, X: pd.DataFrame):
    import mlflow
    from mlflow.models import infer_signature

    with mlflow.start_run(experiment_id=experiment) as run:
        info = mlflow.pyfunc.log_model(name="model", python_model=model,
                                       signature=infer_signature(X, np.zeros(len(X))),
                                       pip_requirements=["numpy"])
    return run.info.run_id, info


def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _wait_with_the_server_down(server, hold, what: str):
    """Stop the server, release the held model call, and time wait(): it must raise
    SpoolNotEmpty within 30 s instead of sitting out MLflow's retries."""
    from mlflow_xai import spool

    server.stop()
    hold.unlink()
    started = time.perf_counter()
    with pytest.raises(spool.SpoolNotEmpty) as caught:
        mlflow_xai.wait(timeout=300)
    took = time.perf_counter() - started
    print(f"\nwait() with the tracking server down{what}: {took:.1f} s")
    assert took < 30
    return caught


def _assert_recorded(run_id: str, model_id: str) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.data.tags.get("mlflow_xai.status") == "ok", run.data.tags
    assert run.data.tags.get("mlflow_xai.source") == "autolog"
    assert any(k.startswith("xai.") for k in run.data.metrics), run.data.metrics
    paths = xai_artifacts(run_id)
    assert "xai/summary.json" in paths and "xai/error.txt" not in paths
    summary = json.loads(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/xai/summary.json"))
    assert summary["model"]["model_id"] == model_id and summary["model"]["run_id"] == run_id
    assert client.get_logged_model(model_id).tags.get("mlflow_xai.status") == "ok"


def _spool_entries(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_server_down_wait_returns_fast_and_flush_uploads(on_server, spool_root, tmp_path,
                                                         caplog):
    from mlflow_xai.cli import cli
    from mlflow_xai.recording import RecordingError

    server, experiment = on_server
    X = _frame()
    hold, reached = tmp_path / "hold", tmp_path / "reached"
    hold.touch()
    mlflow_xai.autolog(data=X, asynchronous=True, **OPTIONS)
    run_id, info = _log_model(_gated_model(hold, reached), experiment, X)
    _until(reached.exists, 120, "the worker to call predict")  # the model is loaded
    caught = _wait_with_the_server_down(server, hold, "")
    assert isinstance(caught.value, RecordingError)
    [item] = caught.value.items
    assert item.kind == "upload" and item.manifest["run_id"] == run_id
    assert item.manifest["model_id"] == info.model_id
    assert "did not answer" in item.reason and str(item.path) in str(caught.value)
    assert (item.path / "xai" / "summary.json").is_file()
    assert any(k.startswith("xai.") for k in item.manifest["metrics"])
    assert _spool_entries(spool_root) == [item.path.name]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
                and r.name.startswith("mlflow_xai")]
    assert any("spooled to" in w and "mlflow-xai flush" in w for w in warnings), warnings
    assert not any("error.txt" in w for w in warnings), warnings

    # Still down: flush says why, exit 1, and keeps the item.
    result = CliRunner().invoke(cli, ["flush"], env=CLI_ENV)
    assert result.exit_code == 1, result.output
    assert "did not answer" in result.output and item.path.name in result.output

    server.start()
    started = time.perf_counter()
    result = CliRunner().invoke(cli, ["flush"], env=CLI_ENV)
    took = time.perf_counter() - started
    print(f"mlflow-xai flush after the server came back: {took:.1f} s")
    assert result.exit_code == 0, result.output
    assert "1 uploaded, 0 remain" in result.output
    _assert_recorded(run_id, info.model_id)
    assert _spool_entries(spool_root) == []


def test_job_spooled_before_computing_is_explained_later(on_server, spool_root, tmp_path):

    server, experiment = on_server
    X = _frame()
    hold, reached = tmp_path / "hold", tmp_path / "reached"
    hold.touch()
    mlflow_xai.autolog(data=X, asynchronous=True, **OPTIONS)
    run_a, info_a = _log_model(_gated_model(hold, reached), experiment, X)
    _until(reached.exists, 120, "the first job to call predict")
    # The second job waits behind the first; it starts once the server is gone.
    run_b, info_b = _log_model(_gated_model(tmp_path / "never", tmp_path / "b"), experiment, X)
    caught = _wait_with_the_server_down(server, hold, ", two jobs")
    kinds = {i.manifest["run_id"]: i.kind for i in caught.value.items}
    assert kinds == {run_a: "upload", run_b: "job"}
    job = next(i for i in caught.value.items if i.kind == "job")
    assert job.manifest["model_uri"] == info_b.model_uri
    assert job.manifest["data_format"] == "parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(job.path / "data.parquet"), X)

    server.start()
    started = time.perf_counter()
    mlflow_xai.autolog(data=X, asynchronous=True, **OPTIONS)  # uploads in the background
    assert time.perf_counter() - started < 5, "autolog() blocked on the spool"
    mlflow_xai.wait(timeout=300)  # nothing left: no SpoolNotEmpty
    print(f"spool replayed (upload + job) in {time.perf_counter() - started:.1f} s")
    _assert_recorded(run_a, info_a.model_id)
    _assert_recorded(run_b, info_b.model_id)
    assert _spool_entries(spool_root) == []


def test_a_half_written_item_is_ignored(spool_root, tmp_path):
    import types

    from mlflow_xai import spool
    from mlflow_xai.cli import cli

    info = types.SimpleNamespace(model_uri="models:/m-doesnotexist", model_id="m-doesnotexist",
                                 run_id="0" * 32, registered_model_version=None, signature=None)
    path = spool.spool_job(info=info, run_id="0" * 32, data=_frame(), targets=None,
                           options=dict(OPTIONS), tracking_uri="http://127.0.0.1:9",
                           reason="test")
    # A crash before the final rename leaves the folder under its temporary name.
    half = path.parent / f".tmp-{path.name}"
    path.rename(half)
    (spool_root / ".done-1-upload-x").mkdir()  # uploaded, removal interrupted
    assert spool.items(root=spool_root) == []
    result = CliRunner().invoke(cli, ["flush"], env=CLI_ENV)
    assert result.exit_code == 0, result.output
    assert "0 uploaded, 0 remain" in result.output
    assert half.is_dir() and (half / "manifest.json").is_file()  # never replayed
    result = CliRunner().invoke(cli, ["flush", "--list"], env=CLI_ENV)
    assert result.exit_code == 0 and "is empty" in result.output


def test_probe_is_fast_and_leaves_mlflow_retries_alone(monkeypatch):
    from mlflow_xai import spool

    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    started = time.perf_counter()
    reason = spool.probe(f"http://127.0.0.1:{_free_port()}", timeout=2)
    assert reason and "did not answer" in reason
    assert time.perf_counter() - started < 5
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert spool.probe("sqlite:///nowhere.db") is None


SIGTERM_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path

    import mlflow
    import numpy as np
    import pandas as pd

    import mlflow_xai
    from tests.test_spool import OPTIONS, _frame, _gated_model, _log_model

    hold, reached, experiment = sys.argv[1:4]
    X = _frame()
    mlflow_xai.autolog(data=X, asynchronous=True, **OPTIONS)
    run_id, info = _log_model(_gated_model(Path(hold), Path(reached)), experiment, X)
    print("RUN", run_id, info.model_id, flush=True)
    mlflow_xai.wait()
""")


def test_sigterm_mid_job_leaves_a_spool_item(on_server, spool_root, tmp_path):
    import mlflow

    from mlflow_xai import spool
    from mlflow_xai.cli import cli

    server, experiment = on_server
    hold, reached = tmp_path / "hold", tmp_path / "reached"
    hold.touch()
    script = tmp_path / "job.py"
    script.write_text(SIGTERM_SCRIPT)
    env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "MLFLOW_XAI_EXIT_WAIT": "2",
           "MLFLOW_XAI_SPOOL_DIR": str(spool_root), "PYTHONPATH": str(Path.cwd()),
           "MLFLOW_XAI_PROGRESS": "0"}
    log = tmp_path / "job.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(script), str(hold), str(reached),
                                 experiment], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        _until(lambda: reached.exists() or proc.poll() is not None, 240,
               "the subprocess's worker to call predict")
        assert proc.poll() is None, log.read_text()[-3000:]
        signalled = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        print(f"\nexited {code} {time.perf_counter() - signalled:.1f} s after SIGTERM")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text()
    assert code == 128 + signal.SIGTERM, output[-3000:]
    run_id, model_id = next(line.split()[1:] for line in output.splitlines()
                            if line.startswith("RUN "))
    [item] = spool.items(root=spool_root)
    assert item.kind == "job" and item.manifest["run_id"] == run_id, output[-3000:]
    assert "spooled to" in output
    assert "mlflow_xai.status" not in mlflow.MlflowClient().get_run(run_id).data.tags

    hold.unlink()
    result = CliRunner().invoke(cli, ["flush"], env=CLI_ENV)
    assert result.exit_code == 0, result.output
    _assert_recorded(run_id, model_id)
    assert _spool_entries(spool_root) == []
