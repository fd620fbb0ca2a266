"""The watch service, tried as an attacker and under faults: it trusts no author-written tag or
data source, explains each model exactly once with several watchers, and stops models that hang
(and itself, on SIGTERM) within bounded time."""

from __future__ import annotations

import http.server
import os
import re
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import SKLEARN_REQS
from tests.test_watch import WatcherProcess, _artifacts, _log_model, _model_tags, _wait

CONFIG = ("explainers: {kernel_shap: {n_samples: 64}}\nchecks: []\nmax_rows: 20\n"
          "background_rows: 20\ntargets: target\n")


@pytest.fixture()
def shared_key(monkeypatch, tmp_path):
    """Every watcher and client in the test shares one signing key (as in production)."""
    monkeypatch.setenv("MLFLOW_XAI_SIGNING_KEY", "watch-test-" + tmp_path.name)


@pytest.fixture()
def restore_tracking(monkeypatch):
    """An in-process Watcher sets the global tracking URI and HTTP retry settings."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", previous)
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        if name in os.environ:
            monkeypatch.setenv(name, os.environ[name])
        else:
            monkeypatch.delenv(name, raising=False)
    yield
    mlflow.set_tracking_uri(previous)


class _CountingHandler(http.server.BaseHTTPRequestHandler):
    requests: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        _CountingHandler.requests.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"a,b\n1,2\n")

    def log_message(self, *args) -> None:
        pass


def _log_with_source(uri: str, model, X, frame, source: str, experiment: str) -> tuple[str, str]:
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(experiment)
        with mlflow.start_run() as run:
            # A name of its own: MLflow keeps one source per (name, digest) in an experiment.
            dataset = mlflow.data.from_pandas(frame, source=source, targets="target",
                                              name=f"eval-{abs(hash(source))}")
            mlflow.log_input(dataset, context="eval")
            info = mlflow.sklearn.log_model(model, name="model", input_example=X.head(2),
                                            pip_requirements=SKLEARN_REQS)
    finally:
        mlflow.set_tracking_uri(previous)
    return info.model_id, run.info.run_id


@pytest.mark.server
def test_author_tags_and_data_sources_are_not_trusted(server, tmp_path, logreg, cancer_small,
                                                      restore_tracking, shared_key):
    from mlflow import MlflowClient

    from mlflow_xai.watch import WATCH_TAG, WatchConfig, Watcher

    X, y = cancer_small
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    good = allowed / "eval.parquet"
    frame = X.assign(target=y.values)
    frame.to_parquet(good)
    secret = tmp_path / "elsewhere" / "secret.parquet"  # a file on the watcher's host
    secret.parent.mkdir()
    frame.to_parquet(secret)
    config = tmp_path / "watch.yaml"
    config.write_text(CONFIG + f"allowed_sources: [{allowed}]\n")
    client = MlflowClient(server)
    experiment = f"attacks-{tmp_path.name}"

    # A: the author pre-writes every tag the old watcher believed, pointing at another run.
    other_model, other_run = _log_model(server, logreg, X, good, experiment=experiment)
    a_model, a_run = _log_model(server, logreg, X, good, experiment=experiment)
    client.set_logged_model_tags(a_model, {"mlflow_xai.status": "ok", WATCH_TAG: "done",
                                           "mlflow_xai.run_id": other_run,
                                           "mlflow_xai.watch.attempt": "0"})
    # B: a data set whose source is a URL (a request from the watcher's host, if fetched).
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CountingHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _CountingHandler.requests.clear()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/eval.csv"
    try:
        b_model, b_run = _log_with_source(server, logreg, X, frame, url, experiment)
        # C: a data set whose source is a local file outside allowed_sources.
        c_model, c_run = _log_with_source(server, logreg, X, frame, str(secret), experiment)
        # D: a symlink inside the allowed folder that leads out of it.
        (allowed / "link.parquet").symlink_to(secret)
        d_model, d_run = _log_with_source(server, logreg, X, frame,
                                          str(allowed / "link.parquet"), experiment)

        watcher = Watcher(server, experiments=[experiment], min_age=0,
                          config=WatchConfig.load(config))
        handled = {h.key: h for h in watcher.poll_once()}
    finally:
        httpd.shutdown()
    assert _CountingHandler.requests == [], "the watcher fetched an author-named URL"

    assert handled[a_model].outcome == "done", handled
    a_tags = _model_tags(client, a_model)
    assert a_tags["mlflow_xai.run_id"] == a_run and a_tags["mlflow_xai.status"] == "ok"
    assert len(client.get_metric_history(a_run, "xai.rows_explained")) == 1
    assert handled[other_model].outcome == "done"
    for model_id, run_id in ((b_model, b_run), (c_model, c_run), (d_model, d_run)):
        assert handled[model_id].outcome == "skipped", handled[model_id]
        reason = _model_tags(client, model_id)["mlflow_xai.watch.reason"]
        assert "outside the run's own artifacts and the operator's allowed_sources" in reason
        assert "xai/attributions" not in " ".join(_artifacts(client, run_id))
    # A hand-written state tag does not stop the watcher, and its own (sealed) state does.
    assert watcher.poll_once() == []

    # The author writes a passing verdict on the explained model and registers it: the version's
    # verdict is judged from the model's verified record, not copied from its tags.
    import mlflow

    client.set_logged_model_tags(a_model, {"mlflow_xai.governance": "passed"})
    mlflow.register_model(f"models:/{a_model}", "attack-watched")
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - name: exact\n    require_methods: [exact_shap]\n")
    judge = Watcher(server, experiments=[experiment], registered_models=["attack-watched"],
                    min_age=0, config=WatchConfig.load(config, policy=str(policy)))
    outcomes = {h.key: h.outcome for h in judge.poll_once()}
    assert outcomes == {"attack-watched/1": "done"}, outcomes
    assert client.get_model_version("attack-watched", "1").tags[
        "mlflow_xai.governance"] == "failed"


def _data_and_config(tmp_path: Path, X, y) -> tuple[Path, Path]:
    """An eval parquet (with its label) and a watch config that allows reading it."""
    data = tmp_path / "eval.parquet"
    X.assign(target=y.values).to_parquet(data)
    config = tmp_path / "watch.yaml"
    config.write_text(CONFIG + f"allowed_sources: [{tmp_path}]\n")
    return data, config


def _hanging_model():
    """A pyfunc model whose predict never returns (defined in a function: pickled by value)."""
    import mlflow

    class Hangs(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            time.sleep(3600)

    return Hangs()


def _log_hanging(uri: str, X, data_path: Path, experiment: str) -> tuple[str, str]:
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mlflow.set_experiment(experiment)
        with mlflow.start_run() as run:
            dataset = mlflow.data.from_pandas(pd.read_parquet(data_path), source=str(data_path),
                                              targets="target", name="eval")
            mlflow.log_input(dataset, context="eval")
            # No input_example: MLflow would call the hanging predict to validate it.
            info = mlflow.pyfunc.log_model(name="model", python_model=_hanging_model(),
                                           signature=infer_signature(X, X.iloc[:, 0]),
                                           pip_requirements=["mlflow"])
    finally:
        mlflow.set_tracking_uri(previous)
    return info.model_id, run.info.run_id


@pytest.mark.server
@pytest.mark.slow
def test_a_hanging_model_is_stopped_and_sigterm_stops_the_watcher(server, tmp_path, logreg,
                                                                  cancer_small, shared_key):
    from mlflow import MlflowClient

    X, y = cancer_small
    data, config = _data_and_config(tmp_path, X, y)
    client = MlflowClient(server)
    experiment = f"hang-{tmp_path.name}"
    hang_model, hang_run = _log_hanging(server, X, data, experiment)
    good_model, good_run = _log_model(server, logreg, X, data, experiment=experiment)

    watcher = WatcherProcess(["--tracking-uri", server, "--experiment", experiment,
                              "--config", str(config), "--interval", "1", "--min-age", "0",
                              "--model-timeout", "8"], tmp_path / "watch.log")
    try:
        started = time.time()
        _wait(lambda: _model_tags(client, good_model).get("mlflow_xai.watch") == "done" and
              _model_tags(client, hang_model).get("mlflow_xai.watch") == "failed", 300,
              "the hanging model failed and the good one explained", watcher)
        tags = _model_tags(client, hang_model)
        assert tags["mlflow_xai.status"] == "failed"
        assert "within 8" in tags["mlflow_xai.error"] and "timeout" in tags["mlflow_xai.error"]
        assert client.get_run(hang_run).data.tags["mlflow_xai.status"] == "failed"
        assert "xai/error.txt" in _artifacts(client, hang_run)
        print(f"\nhanging model failed and the next explained {time.time() - started:.1f}s "
              "after the watcher started")

        # A second hanging model: SIGTERM while it runs stops the watcher within seconds.
        mark = len(watcher.log())
        second, _ = _log_hanging(server, X, data, experiment)
        watcher.wait_for_log(rf"explaining logged model {second}", timeout=120, start=mark)
        time.sleep(3)  # the worker is up and inside predict
        sent = time.time()
        code = watcher.stop(timeout=30)
        stop_seconds = time.time() - sent
    finally:
        watcher.kill()
    print(f"SIGTERM to exit: {stop_seconds:.1f}s")
    assert code == 0, watcher.log()[-3000:]
    assert stop_seconds < 15
    tags = _model_tags(client, second)
    assert tags["mlflow_xai.watch"] == "interrupted" and "mlflow_xai.status" not in tags
    assert re.search(rf"interrupted logged model {second}", watcher.log())


@pytest.mark.server
@pytest.mark.slow
def test_three_watchers_explain_each_model_exactly_once(server, tmp_path, logreg, cancer_small,
                                                        shared_key):
    from mlflow import MlflowClient

    X, y = cancer_small
    data, config = _data_and_config(tmp_path, X, y)
    client = MlflowClient(server)
    experiment = f"three-{tmp_path.name}"
    models = [_log_model(server, logreg, X, data, experiment=experiment) for _ in range(4)]
    args = ["--tracking-uri", server, "--experiment", experiment, "--config", str(config),
            "--interval", "0.5", "--min-age", "0"]
    watchers = [WatcherProcess(args, tmp_path / f"watch-{i}.log") for i in range(3)]
    try:
        _wait(lambda: all(_model_tags(client, m).get("mlflow_xai.watch") == "done"
                          for m, _ in models), 400, "four models explained", watchers[0])
        time.sleep(3)  # any duplicate would be in flight by now
        codes = [w.stop() for w in watchers]
    finally:
        for w in watchers:
            w.kill()
    assert codes == [0, 0, 0]
    explained = [m for w in watchers for m in re.findall(r"explained logged model (\S+)",
                                                          w.log())]
    per_watcher = [len(re.findall(r"explained logged model", w.log())) for w in watchers]
    print(f"\nmodels explained per watcher: {per_watcher}")
    assert sorted(explained) == sorted(m for m, _ in models), explained
    for model_id, run_id in models:
        assert len(client.get_metric_history(run_id, "xai.rows_explained")) == 1
        assert _model_tags(client, model_id)["mlflow_xai.status"] == "ok"
