"""One model through every entrance: autolog, the evaluator, the CLI, the watch service and the
distributed (Ray) driver all record through mlflow_xai.recording, so what lands on the run
(artifact paths, metric names, tags) is the same up to the entrance's own `mlflow_xai.source`
tag."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from tests.conftest import SKLEARN_REQS, xai_artifacts

# What every entrance can be told, the CLI and the distributed driver included.
OPTIONS = {"explainers": ["kernel_shap"], "checks": [], "max_rows": 40, "background_rows": 20}
#: Tags whose values differ by entrance or by run (ids, digests); their names must not.
VARIABLE_TAGS = {"mlflow_xai.source", "mlflow_xai.digest", "mlflow_xai.model_id",
                 "mlflow_xai.signature"}


def _recorded(run_id: str) -> dict:
    from mlflow import MlflowClient

    run = MlflowClient().get_run(run_id)
    tags = {k: v for k, v in run.data.tags.items() if k.startswith("mlflow_xai.")}
    return {"artifacts": sorted(xai_artifacts(run_id)),
            "metrics": sorted(k for k in run.data.metrics if k.startswith("xai")),
            "tags": {k: (v if k not in VARIABLE_TAGS else "*") for k, v in tags.items()},
            "source": tags.get("mlflow_xai.source")}


def _log_plain(X, model, data_path=None):
    import mlflow

    with mlflow.start_run() as run:
        if data_path is not None:
            frame = X.assign(target=0)
            mlflow.log_input(mlflow.data.from_pandas(frame.drop(columns="target"),
                                                     source=str(data_path), name="eval"),
                             context="eval")
        info = mlflow.sklearn.log_model(model, name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS)
    return run.info.run_id, info


def _record_everywhere(explainer: str, X, y, model, tmp_path, monkeypatch, experiment,
                       checks: dict | None = None) -> tuple[dict[str, dict], str]:
    """``explainer`` on ``model`` through autolog, the evaluator, the CLI and the watcher:
    (entrance -> what it recorded, the URI of a logged copy of the model). With ``checks``
    (name -> parameters) those checks run too, each entrance given the targets."""
    import mlflow
    import yaml

    import mlflow_xai
    from mlflow_xai.cli import cli
    from mlflow_xai.watch import WatchConfig, Watcher

    options = {**OPTIONS, "explainers": [explainer], "checks": checks or []}
    recorded = {}

    # autolog
    mlflow_xai.autolog(data=X, targets=y.to_numpy() if checks else None, **options)
    try:
        run_id, _ = _log_plain(X, model)
    finally:
        mlflow_xai.autolog(disable=True)
    recorded["autolog"] = _recorded(run_id)

    # the evaluator
    _, info = _log_plain(X, model)
    with mlflow.start_run() as run:
        mlflow.models.evaluate(info.model_uri, X.assign(label=y.to_numpy()), targets="label",
                               model_type="classifier", evaluators=["xai"],
                               evaluator_config={"xai": options})
    recorded["evaluate"] = _recorded(run.info.run_id)

    # the CLI (checks with parameters come from a --config file, as in production)
    data = tmp_path / "eval.parquet"
    (X.assign(label=y.to_numpy()) if checks else X).to_parquet(data)
    with mlflow.start_run() as run:
        pass
    extra = ["--checks", "none"]
    if checks:
        cli_config = tmp_path / "explain.yaml"
        cli_config.write_text(yaml.safe_dump({"checks": checks, "targets": "label"}))
        extra = ["--config", str(cli_config)]
    result = CliRunner().invoke(cli, ["explain", "--model-uri", info.model_uri, "--data",
                                      str(data), "--explainer", explainer, *extra,
                                      "--max-rows", "40", "--background-rows", "20",
                                      "--run-id", run.info.run_id])
    assert result.exit_code == 0, result.output
    recorded["cli"] = _recorded(run.info.run_id)

    # the watch service (in process, on the same store)
    config = tmp_path / "watch.yaml"
    config.write_text(yaml.safe_dump({
        "explainers": [explainer], "checks": checks or [], "max_rows": 40,
        "background_rows": 20, "allowed_sources": [str(tmp_path)],
        **({"targets": "label"} if checks else {})}))
    watched_run, watched = _log_plain(X, model, data_path=data)
    previous = mlflow.get_tracking_uri()
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.setenv(name, os.environ.get(name, "7"))
    try:
        experiment_name = mlflow.get_experiment(experiment).name
        watcher = Watcher(previous, experiments=[experiment_name], min_age=0,
                          config=WatchConfig.load(config))
        handled = {h.key: h.outcome for h in watcher.poll_once()}
    finally:
        mlflow.set_tracking_uri(previous)
    assert handled.get(watched.model_id) == "done", handled
    recorded["watch"] = _recorded(watched_run)
    return recorded, info.model_uri


def _assert_same(recorded: dict[str, dict], expected_sources: set[str]) -> dict:
    sources = {name: entry.pop("source") for name, entry in recorded.items()}
    assert sources == {name: name for name in expected_sources}
    reference = recorded["autolog"]
    for name, entry in recorded.items():
        assert entry == reference, f"{name} records differently from autolog"
    return reference


@pytest.mark.slow
def test_every_entrance_records_the_same_way(experiment, cancer_small, logreg, tmp_path,
                                             monkeypatch):
    X, y = cancer_small
    recorded, model_uri = _record_everywhere("kernel_shap", X, y, logreg, tmp_path,
                                             monkeypatch, experiment)
    # the distributed driver (a local Ray cluster) on the same rows
    recorded["distributed"] = _distributed(model_uri, X.head(40))
    reference = _assert_same(recorded, {"autolog", "evaluate", "cli", "watch", "distributed"})
    assert "xai/summary.json" in reference["artifacts"]
    assert "xai/attributions/kernel_shap.parquet" in reference["artifacts"]
    assert any(m.startswith("xai.kernel_shap.importance.") for m in reference["metrics"])
    assert len(reference["metrics"]) <= 30 and not any("/" in m for m in reference["metrics"])


@pytest.mark.slow
def test_interactions_through_every_entrance(experiment, cancer_small, logreg, tmp_path,
                                             monkeypatch):
    """shapley_interactions records its per-row pairs, matrix and heat map the same way
    through autolog, the evaluator, the CLI and the watcher (the Ray driver records no
    interactions: documented)."""
    X, y = cancer_small
    recorded, _ = _record_everywhere("shapley_interactions", X, y, logreg, tmp_path,
                                     monkeypatch, experiment)
    reference = _assert_same(recorded, {"autolog", "evaluate", "cli", "watch"})
    for path in ("xai/interactions/shapley_interactions.parquet",
                 "xai/interactions/shapley_interactions_matrix.json",
                 "xai/plots/shapley_interactions_interactions.png"):
        assert path in reference["artifacts"], reference["artifacts"]


#: The four end-task checks, sized for 40 rows (their figures are tested in their own files).
END_TASK_CHECKS = {
    "importance_test": {"features": ["mean radius", "worst symmetry"], "n_permutations": 49},
    "flip_test": {"features": ["mean texture"], "shift": {"mean texture": 5.0}},
    "responsiveness": {"immutable": ["mean radius"], "n_grid": 5, "n_joint": 10, "top_k": 2},
    "rashomon": {"n_models": 4, "n_repeats": 1},
}


@pytest.mark.slow
def test_end_task_checks_through_every_entrance(experiment, cancer_small, logreg, tmp_path,
                                                monkeypatch):
    """importance_test, flip_test, responsiveness and rashomon, with their parameters, run
    through autolog, the evaluator, the CLI (--config) and the watcher and record the same
    documents, plots and metrics."""
    import json

    import mlflow

    X, y = cancer_small
    recorded, _ = _record_everywhere("kernel_shap", X, y, logreg, tmp_path, monkeypatch,
                                     experiment, checks=END_TASK_CHECKS)
    reference = _assert_same(recorded, {"autolog", "evaluate", "cli", "watch"})
    for name in END_TASK_CHECKS:
        assert f"xai/plots/check_{name}.png" in reference["artifacts"]
    runs = mlflow.search_runs(experiment_ids=[experiment], output_format="list")
    checked = 0
    for run in runs:
        if run.data.tags.get("mlflow_xai.source") not in ("autolog", "evaluate", "cli", "watch"):
            continue
        if "mlflow_xai.digest" not in run.data.tags:
            continue  # a run that only holds a logged model (the explanation is elsewhere)
        stability = json.loads(mlflow.artifacts.load_text(
            f"{run.info.artifact_uri}/xai/stability.json"))
        for name in END_TASK_CHECKS:
            assert stability[name]["status"] == "ok", (name, stability[name])
        assert set(stability["importance_test"]["details"]["features"]) == {
            "mean radius", "worst symmetry"}
        assert stability["rashomon"]["details"]["models_fitted"] == 4
        checked += 1
    assert checked == 4
    assert "xai.check.responsiveness.fixed_rate" in reference["metrics"]


def _distributed(model_uri: str, X) -> dict:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    import mlflow

    from mlflow_xai import distributed

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning",
                 log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        with mlflow.start_run() as run:
            distributed.explain(model_uri, X, explainers=["kernel_shap"], background_rows=20,
                                concurrency=1, batch_size=20)
    finally:
        if started_here:
            ray.shutdown()
    return _recorded(run.info.run_id)
