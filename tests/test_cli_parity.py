"""CLI parity (issue 12, item 7): `mlflow-xai explain` takes what the other entrances take
(--config, --param, --policy, --checks, --experiment, --budget, --log-metrics) and says, with
exit code 1 and one line, when no method ran.

Which methods ``explainers="auto"`` picks is the planner's business: the tests that leave
--explainer out assert only that some method ran, never which one.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from click.testing import CliRunner

from mlflow_xai.cli import cli
from tests.conftest import SKLEARN_REQS, one_error_line

#: The data is read and the options checked before this (missing) model is loaded.
ANY_MODEL = "models:/m-0123456789abcdef"


def _invoke(*args: Any):
    return CliRunner().invoke(cli, [str(a) for a in args], prog_name="mlflow-xai")






@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, logreg):
    """The logistic regression saved as a local MLflow model: no tracking server needed."""
    import mlflow

    path = tmp_path_factory.mktemp("models") / "logreg"
    mlflow.sklearn.save_model(logreg, str(path), pip_requirements=SKLEARN_REQS)
    return path


@pytest.fixture()
def captured(monkeypatch):
    """The XaiConfig explain would run with (the run itself is skipped: exit 0)."""
    import mlflow_xai.pipeline

    seen: list[Any] = []

    def fake_run(model: Any, data: Any, config: Any, **kwargs: Any) -> Any:
        seen.append(config)
        raise SystemExit(0)

    monkeypatch.setattr(mlflow_xai.pipeline, "run", fake_run)
    return seen


def _config_of(captured: list, *args: Any):
    result = _invoke("explain", *args)
    assert result.exit_code == 0, result.output
    assert len(captured) == 1, result.output
    return captured.pop()


def _options(config: Any) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(config, f.name) for f in fields(config) if f.name != "extra"}


# --------------------------------------------------------------------------------------------
# --help
# --------------------------------------------------------------------------------------------

def test_help_shows_each_new_option_with_an_example_and_the_exit_codes():
    out = " ".join(_invoke("explain", "--help").output.split())  # not wrapped
    for option in ("--config FILE", "--param METHOD.KEY=VALUE", "--policy FILE",
                   "--experiment NAME", "--budget SECONDS|none", "--log-metrics",
                   "--checks NAMES|none"):
        assert option in out, option
    for example in ("--param kernel_shap.n_samples=256", "--config explain.yaml",
                    "--policy policy.yaml --experiment", "--log-metrics all", "--budget none",
                    "--checks agreement,completeness"):
        assert example in out, example
    assert "Default: 30 without --explainer" in out
    assert "Exit codes: 0" in out and "1 no explainer ran" in out and "2 bad input" in out


# --------------------------------------------------------------------------------------------
# Defaults, --budget, --log-metrics, flags over --config
# --------------------------------------------------------------------------------------------

def test_defaults_are_autologs_the_planner_with_30_seconds(captured, model_dir, good_csv):
    config = _config_of(captured, "--model-uri", model_dir, "--data", good_csv, "--no-log")
    assert config.explainers == "auto" and config.budget_s == 30
    assert config.strict is False and config.log_metrics == "headline"
    assert config.checks is None and config.policy is None


def test_budget_and_log_metrics_reach_the_config(captured, model_dir, good_csv):
    base = ["--model-uri", model_dir, "--data", good_csv, "--no-log"]
    assert _config_of(captured, *base, "--explainer", "kernel_shap").budget_s is None
    assert _config_of(captured, *base, "--explainer", "kernel_shap",
                      "--budget", "12.5").budget_s == 12.5
    assert _config_of(captured, *base, "--budget", "none").budget_s is None
    assert _config_of(captured, *base, "--log-metrics", "all").log_metrics == "all"
    auto = _config_of(captured, *base, "--explainer", "auto")
    assert auto.explainers == "auto" and auto.budget_s == 30


@pytest.mark.parametrize("args, message", [
    (["--budget", "0"], "Invalid value for '--budget': '0' is not a positive number"),
    (["--budget", "soon"], "Invalid value for '--budget': 'soon' is neither a number"),
    (["--log-metrics", "some"], "Invalid value for '--log-metrics'"),
])
def test_bad_budget_and_log_metrics_are_one_line(good_csv, args, message):
    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", good_csv,
                                   "--no-log", *args))
    assert message in line


def test_config_file_equals_the_same_flags(captured, model_dir, good_csv, tmp_path):
    flags = _config_of(
        captured, "--model-uri", model_dir, "--data", good_csv, "--targets", "label",
        "--explainer", "kernel_shap", "--explainer", "permutation_importance",
        "--param", "kernel_shap.n_samples=64", "--checks", "agreement,completeness",
        "--param", "completeness.tolerance=0.05", "--max-rows", "40", "--background-rows", "20",
        "--seed", "3", "--budget", "15", "--log-metrics", "all", "--no-log")
    config = tmp_path / "explain.yaml"
    config.write_text(f"data: {good_csv.name}\ntargets: label\n"
                      "explainers: {kernel_shap: {n_samples: 64}, permutation_importance: null}\n"
                      "checks: {agreement: null, completeness: {tolerance: 0.05}}\n"
                      "max_rows: 40\nbackground_rows: 20\nseed: 3\nbudget_s: 15\n"
                      "log_metrics: all\n")
    from_file = _config_of(captured, "--model-uri", model_dir, "--config", config, "--no-log")

    def methods(spec: Any) -> dict:
        return {name: params or {} for name, params in dict(spec).items()}

    a, b = _options(flags), _options(from_file)
    for key in ("explainers", "checks"):
        assert methods(a.pop(key)) == methods(b.pop(key)), key
    assert a == b


def test_flags_override_the_config_file_and_keep_its_parameters(captured, model_dir, good_csv,
                                                                tmp_path):
    config = tmp_path / "explain.yaml"
    config.write_text("explainers: {kernel_shap: {n_samples: 128}, lime: {n_samples: 300}}\n"
                      "checks: {agreement: {k: 3}}\nmax_rows: 50\nbudget_s: 20\n")
    got = _config_of(captured, "--model-uri", model_dir, "--data", good_csv, "--config", config,
                     "--explainer", "kernel_shap", "--max-rows", "25", "--checks",
                     "agreement,completeness", "--no-log")
    assert got.explainers == {"kernel_shap": {"n_samples": 128}}  # lime dropped, params kept
    assert got.checks == {"agreement": {"k": 3}, "completeness": None}
    assert got.max_rows == 25 and got.budget_s == 20  # the file's budget, not the default
    assert got.background_rows == 100  # neither in the file nor given: the default
    config.write_text("explainers: [kernel_shap, lime]\n")  # --param sets a listed method's
    got = _config_of(captured, "--model-uri", model_dir, "--data", good_csv, "--config", config,
                     "--param", "lime.n_samples=32", "--no-log")
    assert got.explainers == {"kernel_shap": {}, "lime": {"n_samples": 32}}
    assert got.budget_s is None  # methods named: no default budget


def test_config_data_is_read_relative_to_the_file(captured, model_dir, good_csv, tmp_path,
                                                  monkeypatch):
    config = tmp_path / "explain.yaml"
    config.write_text(f"data: {good_csv.name}\ntargets: label\n")
    monkeypatch.chdir(tmp_path.parent)  # not the config's folder
    assert _config_of(captured, "--model-uri", model_dir, "--config", config,
                      "--no-log").targets == "label"
    line = one_error_line(_invoke("explain", "--model-uri", model_dir, "--no-log"))
    assert "Missing option '--data' (or 'data' in --config)" in line


def test_config_file_is_refused_like_the_watch_config(tmp_path, good_csv):
    """One loader: the same keys are refused with the same words by explain and watch."""
    config = tmp_path / "bad.yaml"
    cases = [("explainer: [kernel_shap]\n", "config key(s) ['explainer']"),
             ("explainers: {kernel_shap: {n_sample: 3}}\n", "unknown parameter(s) ['n_sample']"),
             ("explainers: [kernal_shap]\n", "unknown explainer 'kernal_shap'. Did you mean"),
             ("max_rows: 0\n", "max_rows must be a positive integer"),
             ("budget_s: -1\n", "budget_s must be a positive number"),
             ("log_metrics: some\n", "log_metrics must be 'headline'"),
             ("data: nowhere.parquet\n", "nowhere.parquet does not exist"),
             ("- a list\n", "must be a mapping")]
    for text, expected in cases:
        config.write_text(text)
        explain = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data",
                                          good_csv, "--config", config, "--no-log"))
        watch = _invoke("watch", "--tracking-uri", "http://127.0.0.1:9", "--config", config)
        assert watch.exit_code == 2, watch.output
        assert expected in explain and expected in watch.output, (text, explain, watch.output)
        assert "did you mean 'explainers'" in explain or "explainer:" not in text


# --------------------------------------------------------------------------------------------
# --param
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("256", 256), ("0.5", 0.5), ("1e-3", 1e-3), ("true", True), ("[a, b]", ["a", "b"]),
    ("uniform", "uniform"), ("'256'", "256"), ("null", None),
])
def test_param_values_are_yaml_scalars(text, value):
    from mlflow_xai.cli import parse_param

    method, key, parsed = parse_param(f"kernel_shap.n_samples={text}")
    assert (method, key) == ("kernel_shap", "n_samples")
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("args, message", [
    (["--explainer", "kernel_shap", "--param", "kernal_shap.n_samples=64"],
     ("--param kernal_shap.n_samples=64: unknown method 'kernal_shap'. Did you mean "
      "'kernel_shap'?")),
    (["--explainer", "kernel_shap", "--param", "kernel_shap.n_sample=64"],
     "explainer kernel_shap has no parameter 'n_sample'. Did you mean 'n_samples'?"),
    (["--param", "kernel_shap.n_samples=64"],
     "explainer kernel_shap does not run (no --explainer was given, so the planner chooses"),
    (["--explainer", "lime", "--param", "kernel_shap.n_samples=64"],
     "does not run (the explainers to run are lime); add --explainer kernel_shap"),
    (["--param", "agreement.k=3"], "check agreement does not run (the checks are not named"),
    (["--checks", "none", "--param", "agreement.k=3"],
     "the checks to run are none); add it to --checks (agreement)"),
    (["--explainer", "kernel_shap", "--param", "kernel_shap=64"],
     "--param 'kernel_shap=64' is not METHOD.KEY=VALUE"),
    (["--explainer", "kernel_shap", "--param", "kernel_shap.n_samples=[1,"],
     "is not valid YAML"),
    (["--explainer", "kernel_shap", "--param", "kernel_shap.n_samples=many"],
     "kernel_shap: parameter n_samples must be"),
])
def test_param_mistakes_are_one_line(good_csv, args, message):
    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", good_csv,
                                   "--no-log", *args))
    assert message in line


def test_param_reaches_the_method(model_dir, good_csv, tmp_path):
    out_dir = tmp_path / "xai"
    result = _invoke("explain", "--model-uri", model_dir, "--data", good_csv, "--targets",
                     "label", "--explainer", "kernel_shap", "--explainer",
                     "permutation_importance", "--param", "kernel_shap.n_samples=64",
                     "--param", "permutation_importance.n_repeats=2", "--checks", "completeness",
                     "--param", "completeness.tolerance=0.25", "--max-rows", "15",
                     "--log-metrics", "all", "--no-log", "--output-dir", out_dir)
    assert result.exit_code == 0, result.output
    assert "kernel_shap: top features" in result.output
    assert "permutation_importance: top features" in result.output
    assert "checks: completeness" in result.output
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["methods"]["kernel_shap"]["params"]["n_samples"] == 64
    assert summary["methods"]["permutation_importance"]["params"]["n_repeats"] == 2
    assert "plan" not in summary or summary["plan"].get("budget_s") is None  # no budget
    assert summary.get("log_metrics", "all") == "all"  # recorded once the pipeline says it


# --------------------------------------------------------------------------------------------
# No method ran: exit 1 with the reason
# --------------------------------------------------------------------------------------------

def test_no_explainer_ran_is_exit_1_with_the_reason(experiment, model_dir, good_csv):
    import mlflow

    result = _invoke("explain", "--model-uri", model_dir, "--data", good_csv, "--targets",
                     "label", "--explainer", "tree_shap", "--max-rows", "10")
    line = one_error_line(result, exit_code=1)
    assert line.startswith("error: no explainer ran: tree_shap: needs a tree model")
    assert "Try --explainer kernel_shap, or leave --explainer out to let the planner " \
           "choose." in line
    assert "Nothing was logged" in line
    assert mlflow.search_runs(experiment_ids=[experiment]).empty


def test_the_planner_choosing_runs_something(model_dir, good_csv, tmp_path):
    """Planner-agnostic: some method runs within a small budget; the plan, when recorded, is
    printed."""
    out_dir = tmp_path / "xai"
    result = _invoke("explain", "--model-uri", model_dir, "--data", good_csv, "--targets",
                     "label", "--budget", "8", "--max-rows", "20", "--checks", "none",
                     "--no-log", "--output-dir", out_dir)
    assert result.exit_code == 0, result.output
    assert ": top features " in result.output
    summary = json.loads((out_dir / "summary.json").read_text())
    assert any(m["status"] == "ok" for m in summary["methods"].values())
    if "plan" in summary:  # the planner records its plan, with --budget
        assert "plan: " in result.output and summary["plan"]["budget_s"] == 8


# --------------------------------------------------------------------------------------------
# --policy
# --------------------------------------------------------------------------------------------

def _policy(tmp_path, method: str):
    path = tmp_path / f"policy-{method}.yaml"
    path.write_text(f"rules:\n  - name: {method}-present\n    require_methods: [{method}]\n")
    return path


def test_policy_pass_is_exit_0_and_fail_is_exit_1(experiment, model_dir, good_csv, tmp_path):
    import mlflow

    base = ["explain", "--model-uri", model_dir, "--data", good_csv, "--targets", "label",
            "--explainer", "permutation_importance", "--param",
            "permutation_importance.n_repeats=2", "--checks", "none", "--max-rows", "15"]
    passed = _invoke(*base, "--policy", _policy(tmp_path, "permutation_importance"))
    assert passed.exit_code == 0, passed.output
    assert "permutation_importance-present" in passed.output
    assert "governance: PASSED" in passed.output
    run_id = passed.output.strip().splitlines()[-1].split()[3]
    assert mlflow.MlflowClient().get_run(run_id).data.tags["mlflow_xai.governance"] == "passed"

    failed = _invoke(*base, "--policy", _policy(tmp_path, "kernel_shap"), "--no-log")
    assert failed.exit_code == 1, failed.output
    assert "governance: FAILED" in failed.output and "Traceback" not in failed.output


def test_a_bad_policy_is_exit_2(good_csv, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules: []\n")
    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", good_csv,
                                   "--policy", policy, "--no-log"))
    assert "rules" in line


# --------------------------------------------------------------------------------------------
# --experiment
# --------------------------------------------------------------------------------------------

def test_experiment_is_created_then_used(experiment, model_dir, good_csv):
    import mlflow

    name = f"cli-parity-{uuid.uuid4().hex[:8]}"
    args = ["explain", "--model-uri", model_dir, "--data", good_csv, "--targets", "label",
            "--explainer", "permutation_importance", "--param",
            "permutation_importance.n_repeats=2", "--checks", "none", "--max-rows", "10",
            "--experiment", name]
    first, second = _invoke(*args), _invoke(*args)
    for result in (first, second):
        assert result.exit_code == 0, result.output
        assert f"in experiment '{name}'" in result.output.strip().splitlines()[-1]
    created = mlflow.get_experiment_by_name(name)
    assert created is not None
    runs = mlflow.search_runs(experiment_ids=[created.experiment_id])
    assert len(runs) == 2 and set(runs["tags.mlflow_xai.status"]) == {"ok"}
    assert set(runs["status"]) == {"FINISHED"}
    assert mlflow.active_run() is None
    # The current experiment is left as it was.
    assert mlflow.tracking.fluent._get_experiment_id() == experiment


def test_experiment_mistakes_are_one_line(experiment, good_csv):
    import mlflow

    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", good_csv,
                                   "--experiment", "x", "--no-log"))
    assert "leave it out with --no-log" in line
    with mlflow.start_run() as run:
        pass
    other = f"cli-parity-other-{uuid.uuid4().hex[:8]}"
    mlflow.MlflowClient().create_experiment(other)
    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", good_csv,
                                   "--experiment", other, "--run-id", run.info.run_id))
    assert f"--run-id {run.info.run_id} is in experiment" in line and other in line
    gone = f"cli-parity-gone-{uuid.uuid4().hex[:8]}"
    mlflow.MlflowClient().delete_experiment(mlflow.MlflowClient().create_experiment(gone))
    line = one_error_line(_invoke("explain", "--model-uri", ANY_MODEL, "--data", good_csv,
                                   "--experiment", gone))
    assert f"--experiment '{gone}' is deleted" in line
