"""The mlflow-xai command line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from mlflow_xai.cli import cli
from tests.conftest import SKLEARN_REQS


def test_help_answers_the_basic_questions():
    out = CliRunner().invoke(cli, ["--help"])
    assert out.exit_code == 0
    assert "methods" in out.output and "explain" in out.output
    out = CliRunner().invoke(cli, ["explain", "--help"])
    assert "--model-uri" in out.output and "MLFLOW_TRACKING_URI" in out.output
    for option in ("--config", "--param", "--policy", "--experiment", "--budget",
                   "--log-metrics", "Exit codes"):
        assert option in out.output, option


def test_methods_table_and_json():
    out = CliRunner().invoke(cli, ["methods"])
    assert out.exit_code == 0
    header, *rows = out.output.strip().splitlines()
    assert header.split()[:4] == ["NAME", "KIND", "PACKAGE", "VERSION"]
    assert any(r.startswith("tree_shap ") and "tree internals" in r for r in rows)
    data = json.loads(CliRunner().invoke(cli, ["methods", "--json", "--kind", "explainer"]).output)
    assert {m["name"] for m in data} >= {"kernel_shap", "lime"}
    bad = CliRunner().invoke(cli, ["methods", "--kind", "nope"])
    assert bad.exit_code == 2 and "Invalid value for '--kind'" in bad.output


def test_explain_a_logged_model_from_a_file(experiment, logreg, cancer_small, tmp_path):
    import mlflow

    X, y = cancer_small
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS)
    data = tmp_path / "eval.parquet"
    X.assign(label=y.to_numpy()).to_parquet(data)
    out = CliRunner().invoke(cli, [
        "explain", "--model-uri", info.model_uri, "--data", str(data), "--targets", "label",
        "--explainer", "permutation_importance", "--explainer", "tree_shap",
        "--max-rows", "30", "--output-dir", str(tmp_path / "xai")])
    assert out.exit_code == 0, out.output
    assert "permutation_importance: top features" in out.output
    assert "tree_shap: skipped (needs a tree model" in out.output  # said, not silent
    assert f"wrote the xai/ folder to {tmp_path / 'xai'}" in out.output
    last = out.output.strip().splitlines()[-1]
    assert last.startswith("logged to run ") and " in experiment '" in last
    run_id = last.split()[3]
    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    assert tags["mlflow_xai.methods"] == "permutation_importance"  # tree_shap: skipped
    assert (tmp_path / "xai" / "summary.json").exists()


def test_explain_reports_bad_input_without_a_traceback(experiment, logreg, cancer_small,
                                                        tmp_path):
    import mlflow

    X, _ = cancer_small
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS)
    data = tmp_path / "eval.csv"
    X.drop(columns=["worst symmetry"]).to_csv(data, index=False)
    out = CliRunner().invoke(cli, ["explain", "--model-uri", info.model_uri, "--data",
                                   str(data), "--no-log"])
    assert out.exit_code == 2
    assert "error: data does not match the model signature" in out.output
    assert "Traceback" not in out.output
