"""`mlflow-xai watch` against a real `mlflow server` subprocess that the test stops and restarts.

The module runs its own server (not the session fixture) because it kills it mid-test and starts
it again on the same port with the same sqlite store and artifact directory.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import SKLEARN_REQS, _free_port

WATCH_TIMEOUT = 240  # seconds; CPU is shared, and the watcher imports torch on start


class MlflowServer:
    """`mlflow server` on loopback that can be stopped and started again with the same state."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 180) -> None:
        self.starts += 1
        with open(self.root / f"server-{self.starts}.log", "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server",
                 "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
                 "--artifacts-destination", str(self.root / "artifacts"),
                 "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while not self.healthy():
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                pytest.fail("mlflow server did not start:\n" + (
                    self.root / f"server-{self.starts}.log").read_text()[-3000:])
            time.sleep(0.3)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class WatcherProcess:
    """`python -m mlflow_xai.cli watch ...` with its log in a file."""

    def __init__(self, args: list[str], log_path: Path) -> None:
        self.log_path = log_path
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
        env.update(MLFLOW_XAI_PROGRESS="0", PYTHONUNBUFFERED="1")
        with open(log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mlflow_xai.cli", "watch", *args], stdout=log,
                stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, pattern: str, timeout: float = WATCH_TIMEOUT, start: int = 0) -> float:
        """Wait until ``pattern`` appears in the log after character ``start``; return when."""
        _wait(lambda: re.search(pattern, self.log()[start:]) is not None, timeout,
              f"watcher log line /{pattern}/", self)
        return time.time()

    def stop(self, timeout: float = 120) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            pytest.fail(f"watcher ignored SIGTERM for {timeout}s:\n{self.log()[-3000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _wait(predicate: Callable[[], bool], timeout: float, what: str,
          watcher: WatcherProcess | None = None) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if watcher is not None and watcher.proc.poll() is not None:
            pytest.fail(f"watcher exited ({watcher.proc.returncode}) while waiting for {what}:\n"
                        f"{watcher.log()[-4000:]}")
        if time.time() > deadline:
            tail = watcher.log()[-4000:] if watcher is not None else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tail}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def watch_server(tmp_path_factory: pytest.TempPathFactory):
    server = MlflowServer(tmp_path_factory.mktemp("watch-server"))
    server.start()
    yield server
    server.stop()


def _log_model(uri: str, model: Any, X: Any, data_path: Path, *, experiment: str,
               registered_model: str | None = None) -> tuple[str, str]:
    """Log ``model`` in a run with an eval data set backed by ``data_path``: (model_id, run_id)."""
    import mlflow
    import pandas as pd

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(experiment)
        with mlflow.start_run() as run:
            frame = pd.read_parquet(data_path)
            dataset = mlflow.data.from_pandas(frame, source=str(data_path), targets=(
                "target" if "target" in frame.columns else None), name=data_path.stem)
            mlflow.log_input(dataset, context="eval")
            info = mlflow.sklearn.log_model(model, name="model", input_example=X.head(2),
                                            pip_requirements=SKLEARN_REQS,
                                            registered_model_name=registered_model)
    finally:
        mlflow.set_tracking_uri(previous)
    return info.model_id, run.info.run_id


def _model_tags(client: Any, model_id: str) -> dict[str, str]:
    return dict(client.get_logged_model(model_id).tags or {})


def _artifacts(client: Any, run_id: str) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id, "xai")}


@pytest.mark.server
@pytest.mark.slow
def test_watch_explains_restarts_and_survives_an_outage(watch_server: MlflowServer, tmp_path,
                                                        logreg, cancer_small, monkeypatch):
    from mlflow import MlflowClient

    import mlflow_xai
    from mlflow_xai.watch import OWNER_TAG, TIME_TAG, WATCH_TAG

    X, y = cancer_small
    good = tmp_path / "eval.parquet"
    X.assign(target=y.values).to_parquet(good)
    bad = tmp_path / "eval_missing_column.parquet"  # the model needs 'mean texture'
    X.drop(columns=["mean texture"]).assign(target=y.values).to_parquet(bad)
    config = tmp_path / "watch.yaml"
    config.write_text("explainers: {kernel_shap: {n_samples: 64}}\nchecks: []\n"
                      "max_rows: 30\nbackground_rows: 20\ntargets: target\n"
                      f"allowed_sources: [{tmp_path}]\n")
    # Shared by the watcher and the autolog client below: the watcher trusts (and so does not
    # explain again) only explanations signed with it.
    monkeypatch.setenv("MLFLOW_XAI_SIGNING_KEY", "test-key-" + tmp_path.name)
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - name: shap-present\n    require_methods: [kernel_shap]\n")
    uri = watch_server.url
    client = MlflowClient(uri)
    args = ["--tracking-uri", uri, "--experiment", "watch-e2e", "--registered-model",
            "watched-model", "--policy", str(policy), "--config", str(config),
            "--interval", "1", "--max-backoff", "4", "--min-age", "0"]
    started = time.time()

    # 1. A watcher on an empty experiment; then two good models and one whose data set lacks
    #    a column the model needs.
    first = WatcherProcess(args, tmp_path / "watch-1.log")
    try:
        first.wait_for_log(r"watching ")
        a_model, a_run = _log_model(uri, logreg, X, good, experiment="watch-e2e")
        b_model, b_run = _log_model(uri, logreg, X, good, experiment="watch-e2e",
                                    registered_model="watched-model")
        c_model, c_run = _log_model(uri, logreg, X, bad, experiment="watch-e2e")
        _wait(lambda: all(_model_tags(client, m).get(WATCH_TAG) in ("done", "failed")
                          for m in (a_model, b_model, c_model)), WATCH_TIMEOUT,
              "three models handled", first)
        _wait(lambda: client.get_model_version("watched-model", "1").tags.get(WATCH_TAG)
              == "done", 60, "model version tagged", first)
        code = first.stop()
    finally:
        first.kill()
    log1 = first.log()
    assert code == 0, log1
    assert "SIGTERM: stopping" in log1 and log1.rstrip().endswith("stopped")

    for model_id, run_id in ((a_model, a_run), (b_model, b_run)):
        tags = _model_tags(client, model_id)
        assert tags["mlflow_xai.status"] == "ok" and tags[WATCH_TAG] == "done", tags
        assert tags["mlflow_xai.governance"] == "passed"
        assert tags["mlflow_xai.run_id"] == run_id
        assert {"xai/summary.json", "xai/importance.json"} <= _artifacts(client, run_id)
        run_tags = client.get_run(run_id).data.tags
        assert run_tags["mlflow_xai.status"] == "ok" and run_tags["mlflow_xai.source"] == "watch"
        assert len(client.get_metric_history(run_id, "xai.rows_explained")) == 1
        assert re.search(rf"explained logged model {model_id} .*kernel_shap, 30 rows", log1)
    version_tags = client.get_model_version("watched-model", "1").tags
    assert version_tags["mlflow_xai.governance"] == "passed"
    assert version_tags["mlflow_xai.status"] == "ok"
    assert version_tags["mlflow_xai.model_id"] == b_model
    c_tags = _model_tags(client, c_model)
    assert c_tags["mlflow_xai.status"] == "failed" and c_tags[WATCH_TAG] == "failed"
    assert "mean texture" in c_tags["mlflow_xai.error"]
    assert "xai/error.txt" in _artifacts(client, c_run)
    assert client.get_run(c_run).data.tags["mlflow_xai.status"] == "failed"
    assert re.search(rf"failed logged model {c_model} .*mean texture", log1)
    before = {m: _model_tags(client, m)[TIME_TAG] for m in (a_model, b_model, c_model)}

    # While no watcher runs, a client explains its own model with autolog.
    mlflow_xai.autolog(data=X, targets=y, explainers={"kernel_shap": {"n_samples": 64}},
                       checks=[], max_rows=20)
    try:
        e_model, e_run = _log_model(uri, logreg, X, good, experiment="watch-e2e")
    finally:
        mlflow_xai.autolog(disable=True)
    assert _model_tags(client, e_model)["mlflow_xai.status"] == "ok"

    # 2. Restart: the state is on the server, so nothing is done again; the autologged model
    #    is not explained again, only judged against the policy.
    second = WatcherProcess(args, tmp_path / "watch-2.log")
    try:
        second.wait_for_log(r"poll 1: 1 new \(0 done, 0 failed, 1 skipped\)")
        e_tags = _model_tags(client, e_model)
        assert e_tags[WATCH_TAG] == "skipped" and e_tags["mlflow_xai.governance"] == "passed"
        assert "xai/governance.json" in _artifacts(client, e_run)
        assert len(client.get_metric_history(e_run, "xai.rows_explained")) == 1
        after = {m: _model_tags(client, m)[TIME_TAG] for m in (a_model, b_model, c_model)}
        assert after == before
        for run_id in (a_run, b_run):
            assert len(client.get_metric_history(run_id, "xai.rows_explained")) == 1

        # 3. Outage: stop the server for a few seconds; the watcher backs off and recovers.
        watch_server.stop()
        went_down = time.time()
        second.wait_for_log(r"tracking server unreachable \(.*\); retrying in \d+s", timeout=60)
        time.sleep(max(0.0, 5 - (time.time() - went_down)))
        mark = len(second.log())
        watch_server.start()
        back_up = time.time()
        recovered = second.wait_for_log(r"tracking server reachable again", timeout=60,
                                        start=mark)
        recovery = recovered - back_up
        print(f"\nserver down {back_up - went_down:.1f}s (including its restart); watcher "
              f"recovered {recovery:.1f}s after the server answered again")
        assert recovery < 15
        d_model, d_run = _log_model(uri, logreg, X, good, experiment="watch-e2e")
        _wait(lambda: _model_tags(client, d_model).get(WATCH_TAG) == "done", WATCH_TIMEOUT,
              "the model logged after the outage to be explained", second)
        assert {"xai/summary.json"} <= _artifacts(client, d_run)
        code = second.stop()
    finally:
        second.kill()
    log2 = second.log()
    assert code == 0, log2
    # Restart did not repeat: the second watcher explained exactly one model (d).
    assert re.findall(r"explained logged model (\S+)", log2) == [d_model], log2
    assert _model_tags(client, d_model)[OWNER_TAG] != _model_tags(client, a_model)[OWNER_TAG]
    print(f"test took {time.time() - started:.0f}s")


def test_watch_refuses_a_bad_config_before_starting(tmp_path):
    from mlflow_xai.cli import cli

    config = tmp_path / "watch.yaml"
    config.write_text("explainer: [kernel_shap]\n")
    result = CliRunner().invoke(cli, ["watch", "--tracking-uri", "http://127.0.0.1:9",
                                      "--config", str(config)])
    assert result.exit_code == 2
    assert "unknown watch config key(s) ['explainer']" in result.output
    assert "did you mean 'explainers'" in result.output

    config.write_text("data: nowhere.parquet\n")
    result = CliRunner().invoke(cli, ["watch", "--tracking-uri", "http://127.0.0.1:9",
                                      "--config", str(config)])
    assert result.exit_code == 2 and "nowhere.parquet does not exist" in result.output


def test_unreachable_server_is_recognised(monkeypatch):
    from mlflow import MlflowClient

    from mlflow_xai.watch import is_unreachable, short_reason

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client = MlflowClient(f"http://127.0.0.1:{_free_port()}")
    for call in (lambda: client.search_experiments(),
                 lambda: client.set_logged_model_tags("m-0", {"a": "b"})):
        with pytest.raises(Exception) as info:
            call()
        assert is_unreachable(info.value)
        assert "Connection refused" in short_reason(info.value)
    assert not is_unreachable(ValueError("column 'x' is missing"))


def test_a_claim_is_taken_over_only_when_its_owner_is_gone():
    from mlflow_xai.watch import OWNER_TAG, TIME_TAG, claim_is_stale

    me = {"owner": "hostA:100:aaaaaa", "host": "hostA", "claim_timeout": 3600, "now": 10_000,
          "pid": 100}
    dead_pid = 2**22 + 12345  # above pid_max on Linux: never a live process

    def tags(owner: str, at: float = 9_999) -> dict[str, str]:
        return {OWNER_TAG: owner, TIME_TAG: str(at)}

    assert claim_is_stale(tags("hostA:100:aaaaaa"), **me)  # ours, interrupted by an outage
    assert claim_is_stale(tags("hostA:100:bbbbbb"), **me)  # our pid, earlier life (container)
    assert claim_is_stale(tags(f"hostA:{dead_pid}:cccccc"), **me)  # same host, process gone
    assert not claim_is_stale(tags(f"hostA:{os.getpid()}:dddddd"), **me)  # same host, alive
    assert not claim_is_stale(tags("hostB:7:eeeeee"), **me)  # another host, recent
    assert claim_is_stale(tags("hostB:7:eeeeee", at=10_000 - 3601), **me)  # timed out


@pytest.mark.server
def test_a_model_interrupted_by_an_outage_is_resumed_not_failed(watch_server: MlflowServer,
                                                               tmp_path, logreg, cancer_small,
                                                               monkeypatch):
    """The server drops while a model is explained: the model keeps the watcher's claim (no
    failure is recorded) and the next poll explains it."""
    import mlflow
    import requests
    from mlflow import MlflowClient

    import mlflow_xai.pipeline
    from mlflow_xai.watch import OWNER_TAG, WATCH_TAG, ServerUnreachable, WatchConfig, Watcher

    X, y = cancer_small
    data = tmp_path / "eval.parquet"
    X.assign(target=y.values).to_parquet(data)
    config = tmp_path / "watch.yaml"
    config.write_text("explainers: {kernel_shap: {n_samples: 64}}\nchecks: []\nmax_rows: 20\n"
                      f"targets: target\nallowed_sources: [{tmp_path}]\n")
    model_id, run_id = _log_model(watch_server.url, logreg, X, data, experiment="watch-resume")

    # The Watcher sets the process-wide tracking URI and HTTP retry settings: restore them.
    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", previous)
    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"),
                        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")):
        monkeypatch.setenv(name, os.environ.get(name, value))
    real_run = mlflow_xai.pipeline.run
    calls = []

    def flaky_run(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise requests.exceptions.ConnectionError("Connection refused (simulated)")
        return real_run(*args, **kwargs)

    monkeypatch.setattr(mlflow_xai.pipeline, "run", flaky_run)
    try:
        watcher = Watcher(watch_server.url, experiments=["watch-resume"], min_age=0,
                          config=WatchConfig.load(config))
        client = MlflowClient(watch_server.url)
        with pytest.raises(ServerUnreachable):
            watcher.poll_once()
        tags = _model_tags(client, model_id)
        assert tags[WATCH_TAG] == "running" and tags[OWNER_TAG] == watcher.owner
        assert "mlflow_xai.status" not in tags
        assert "mlflow_xai.status" not in client.get_run(run_id).data.tags

        handled = watcher.poll_once()
        assert [(h.key, h.outcome) for h in handled] == [(model_id, "done")]
        tags = _model_tags(client, model_id)
        assert tags[WATCH_TAG] == "done" and tags["mlflow_xai.status"] == "ok"
        assert watcher.poll_once() == []
    finally:
        mlflow.set_tracking_uri(previous)
