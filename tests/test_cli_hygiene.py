"""CLI hygiene (issue 11, item 8): every input error of the command line is one line and exit 2,
and a tracking server that does not answer ends a command within seconds, not minutes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from click.testing import CliRunner

from mlflow_xai.cli import cli
from tests.conftest import one_error_line

#: What the data errors are checked against: the data is read before the model is loaded.
ANY_MODEL = "models:/m-0123456789abcdef"


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="mlflow-xai")






def test_corrupt_parquet_is_one_line(tmp_path):
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(os.urandom(512))
    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", str(path)))
    assert f"--data {path} could not be read as Parquet" in line
    assert "complete Parquet file" in line


def test_garbage_csv_is_one_line(tmp_path):
    path = tmp_path / "garbage.csv"
    path.write_bytes(b"\xbb\xff\x00" + os.urandom(512))
    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", str(path)))
    assert "could not be read as CSV" in line


def test_empty_csv_is_one_line(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", str(path)))
    assert f"--data {path} is empty" in line and "header line" in line


def test_header_only_csv_says_there_are_no_rows(tmp_path, cancer_small):
    path = tmp_path / "header.csv"
    cancer_small[0].head(0).to_csv(path, index=False)
    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", str(path)))
    assert f"--data {path} has no rows" in line


def test_unsupported_extension_is_refused(tmp_path, cancer_small):
    path = tmp_path / "eval.json"
    cancer_small[0].to_json(path)
    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", str(path)))
    assert "unsupported file type (.json)" in line and ".csv or .parquet" in line


def test_unknown_targets_column_names_the_columns(good_csv):
    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", str(good_csv),
                                   "--targets", "labl"))
    assert "--targets 'labl' is not a column" in line and "label" in line


def test_model_uri_that_cannot_be_loaded(experiment, good_csv):
    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", str(good_csv),
                                   "--no-log"))
    assert f"--model-uri {ANY_MODEL} could not be loaded" in line
    assert "not found" in line and "models:/<model_id>" in line


@pytest.mark.parametrize("args, message", [
    (["--max-rows", "0"], "Invalid value for '--max-rows'"),
    (["--background-rows", "x"], "Invalid value for '--background-rows'"),
    (["--timeout", "-1"], "Invalid value for '--timeout'"),
    (["--explainer", "kernal_shap"], "unknown explainer 'kernal_shap'. Did you mean"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--no-such-option"], "No such option '--no-such-option'"),
    (["--budget", "-5"], "Invalid value for '--budget'"),
    (["--log-metrics", "most"], "Invalid value for '--log-metrics'"),
    (["--checks", "agreemnt"], "unknown check 'agreemnt'. Did you mean 'agreement'?"),
    (["--param", "kernel_shap.n_samples=64"],
     "--param kernel_shap.n_samples=64: explainer kernel_shap does not run"),
    (["--explainer", "lime", "--param", "lime.n_sample=9"], "Did you mean 'n_samples'?"),
    (["--config", "missing.yaml"], "Invalid value for '--config'"),
])
def test_bad_option_values_are_one_line(experiment, good_csv, args, message):
    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", str(good_csv),
                                   "--no-log", *args))
    assert message in line


def test_usage_errors_of_every_command_are_one_line(tmp_path):
    line = one_error_line(_invoke("explain", "--data", str(tmp_path / "missing.csv")))
    assert "Missing option '--model-uri'" in line or "does not exist" in line
    line = one_error_line(_invoke("nope"))
    assert "No such command 'nope'" in line and "mlflow-xai --help" in line
    line = one_error_line(_invoke("methods", "--kind", "nope"))
    assert "Invalid value for '--kind'" in line


def test_debug_shows_the_traceback(tmp_path):
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(os.urandom(512))
    result = _invoke("--debug", "explain", "--model-uri", ANY_MODEL, "--data", str(path))
    assert result.exit_code != 0
    assert result.exception is not None and not isinstance(result.exception, SystemExit)
    assert "Parquet" in str(result.exception)


def test_help_documents_the_new_options():
    assert "--debug" in _invoke("--help").output
    for command in ("explain", "check", "watch"):
        out = _invoke(command, "--help").output
        assert "--timeout SECONDS" in out, command
    assert "Exit codes" in _invoke("explain", "--help").output
    explain_help = " ".join(_invoke("explain", "--help").output.split())
    for option in ("--config FILE", "--param METHOD.KEY=VALUE", "--policy FILE",
                   "--experiment NAME", "--budget SECONDS|none", "--log-metrics"):
        assert option in explain_help, option


# --------------------------------------------------------------------------------------------
# A tracking server that does not answer
# --------------------------------------------------------------------------------------------

def _closed_port() -> int:
    """A loopback port nobody listens on (bound, released, never listened on)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_cli(args: list[str], uri: str, cwd) -> tuple[subprocess.CompletedProcess, float]:
    """The CLI in a fresh process with MLflow's default retry settings (minutes of back-off)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
    env["MLFLOW_TRACKING_URI"] = uri
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "mlflow_xai.cli", *args], env=env, cwd=cwd,
                              capture_output=True, text=True, timeout=90, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"mlflow-xai {' '.join(args)} still waited after 90 s")
    return done, time.monotonic() - started


def _server_error(done: subprocess.CompletedProcess, uri: str, exit_code: int) -> str:
    assert done.returncode == exit_code, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    assert f"tracking server {uri} did not answer" in errors[0]
    return errors[0]


@pytest.fixture()
def policy_file(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  - name: shap-present\n    require_methods: [kernel_shap]\n")
    return path


def test_explain_fails_fast_when_the_server_does_not_answer(good_csv, tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    done, seconds = _run_cli(["explain", "--model-uri", ANY_MODEL, "--data", str(good_csv)],
                             uri, tmp_path)
    line = _server_error(done, uri, 2)
    assert "Connection refused" in line
    assert seconds < 15, f"took {seconds:.1f} s"


def test_check_fails_fast_when_the_server_does_not_answer(policy_file, tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    done, seconds = _run_cli(["check", "--run-id", "0" * 32, "--policy", str(policy_file)], uri,
                             tmp_path)
    _server_error(done, uri, 2)
    assert seconds < 15, f"took {seconds:.1f} s"


def test_watch_once_fails_fast_when_the_server_does_not_answer(tmp_path):
    uri = f"http://127.0.0.1:{_closed_port()}"
    done, seconds = _run_cli(["watch", "--once", "--tracking-uri", uri], uri, tmp_path)
    _server_error(done, uri, 1)  # exit 1, as before: an outage, not bad usage
    assert seconds < 15, f"took {seconds:.1f} s"


@pytest.fixture()
def silent_server():
    """A loopback server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    for conn in accepted:
        conn.close()
    listener.close()


@pytest.fixture()
def tracking_at(monkeypatch):
    """Point this process at a tracking URI for one test; MLflow's HTTP settings restored."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                 "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.delenv(name, raising=False)  # restored after the test

    def point(uri: str) -> None:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        # An experiment set there must not outlive the test (nor one set before leak in).
        monkeypatch.setattr(mlflow.tracking.fluent, "_active_experiment_id", None)

    yield point
    while mlflow.active_run():  # the CLI, run in this process, leaves its new run active
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


def test_timeout_option_bounds_the_wait_for_a_silent_server(policy_file, silent_server,
                                                          tracking_at):
    tracking_at(silent_server)
    started = time.monotonic()
    result = _invoke("check", "--run-id", "0" * 32, "--policy", str(policy_file),
                     "--timeout", "1")
    seconds = time.monotonic() - started
    line = one_error_line(result)
    assert f"tracking server {silent_server} did not answer (no answer within 1s" in line
    assert "--timeout" in line
    assert seconds < 8, f"took {seconds:.1f} s"
    # MLflow's own requests in this process now wait as long, with one retry.
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "1"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "1"


def test_no_probe_for_a_local_store_and_a_password_is_never_printed(tracking_at, policy_file):
    import mlflow_xai.cli as cli_module

    cli_module._require_server("sqlite:///nowhere/mlflow.db")  # returns: nothing to probe
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    uri = f"http://user:s3cret@127.0.0.1:{_closed_port()}"
    tracking_at(uri)
    line = one_error_line(_invoke("check", "--run-id", "0" * 32, "--policy", str(policy_file)))
    assert "s3cret" not in line and "user:***@127.0.0.1" in line


def test_a_proxy_answering_503_counts_as_no_answer(policy_file, tracking_at):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Unavailable(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{proxy.server_address[1]}"
        tracking_at(uri)
        line = one_error_line(_invoke("check", "--run-id", "0" * 32, "--policy",
                                       str(policy_file)))
        assert f"tracking server {uri} did not answer (a proxy answered 503" in line
    finally:
        proxy.shutdown()
        proxy.server_close()


@pytest.mark.server
def test_explain_logs_to_a_live_server(server, tracking_at, logreg, cancer_small, tmp_path):
    """The probe lets a server that answers through: the command logs as before."""
    import mlflow

    from tests.conftest import SKLEARN_REQS

    X, y = cancer_small
    tracking_at(server)
    mlflow.set_experiment("cli-hygiene")
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS)
    data = tmp_path / "eval.parquet"
    X.assign(label=y.to_numpy()).to_parquet(data)
    result = _invoke("explain", "--model-uri", info.model_uri, "--data", str(data), "--targets",
                     "label", "--explainer", "permutation_importance", "--max-rows", "20",
                     "--timeout", "30")
    assert result.exit_code == 0, result.output
    run_id = result.output.strip().splitlines()[-1].split()[3]
    assert mlflow.MlflowClient().get_run(run_id).data.tags["mlflow_xai.status"] == "ok"


def test_a_server_that_stops_answering_while_logging_is_one_line(experiment, logreg,
                                                                 cancer_small, good_csv,
                                                                 monkeypatch):
    import mlflow
    import requests

    import mlflow_xai.recording

    X, _ = cancer_small
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                        pip_requirements=["scikit-learn"])

    def gone(*args: Any, **kwargs: Any) -> str:
        raise requests.exceptions.ConnectionError("[Errno 111] Connection refused (simulated)")

    monkeypatch.setattr(mlflow_xai.recording, "record", gone)
    result = _invoke("explain", "--model-uri", info.model_uri, "--data", str(good_csv),
                     "--targets", "label", "--explainer", "permutation_importance",
                     "--max-rows", "10")
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert "did not answer while logging (" in errors[0] and "Connection refused" in errors[0]
