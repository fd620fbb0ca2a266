"""The `xai` evaluator through mlflow.models.evaluate on a sqlite store."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import FAST, SKLEARN_REQS


@pytest.fixture()
def logged_logreg(experiment, logreg, cancer_small):
    import mlflow

    X, _ = cancer_small
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(logreg, name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS)
    return info


def test_evaluate_with_xai_logs_artifacts_and_model_metrics(logged_logreg, cancer_small):
    import mlflow

    X, y = cancer_small
    data = X.assign(label=y.to_numpy())
    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(
            logged_logreg.model_uri, data, targets="label", model_type="classifier",
            evaluators=["xai"],
            evaluator_config={"xai": {"explainers": FAST, "max_rows": 25}},
        )
    assert result.metrics["xai.rows_explained"] == 25
    assert result.metrics["xai.kernel_shap.seconds"] > 0
    assert len(result.metrics) <= 30  # the headline metrics (log_metrics="headline")
    assert {"xai_summary", "xai_importance", "xai_kernel_shap_attributions",
            "xai_kernel_shap_bar", "xai_kernel_shap_beeswarm"} <= set(result.artifacts)

    client = mlflow.MlflowClient()
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "xai")}
    assert {"xai/summary.json", "xai/importance.json", "xai/attributions", "xai/plots"} <= paths
    summary = json.loads(mlflow.artifacts.load_text(
        f"{run.info.artifact_uri}/xai/summary.json"))
    assert summary["model"]["model_id"] == logged_logreg.model_id
    assert summary["data"]["targets"] is True
    assert summary["methods"]["kernel_shap"]["efficiency_max_abs_gap"] < 1e-8
    assert summary["methods"]["kernel_shap"]["model_evals"] > 0

    # MLflow links the returned metrics to the evaluated LoggedModel.
    model = client.get_logged_model(logged_logreg.model_id)
    linked = {m.key: m.value for m in model.metrics or []}
    assert linked["xai.rows_explained"] == 25
    run_metrics = client.get_run(run.info.run_id).data.metrics
    assert run_metrics["xai.kernel_shap.importance.worst concave points"] > 0


def test_unknown_config_key_and_method_are_clear_errors(logged_logreg, cancer_small):
    import mlflow

    X, y = cancer_small
    with pytest.raises(Exception, match="unknown evaluator_config\\['xai'\\] key.*'explainer'"):
        mlflow.models.evaluate(logged_logreg.model_uri, X.assign(label=y.to_numpy()),
                               targets="label", model_type="classifier", evaluators=["xai"],
                               evaluator_config={"xai": {"explainer": ["lime"]}})
    with pytest.raises(Exception, match="unknown explainer 'shapley'.*Valid explainers"):
        mlflow.models.evaluate(logged_logreg.model_uri, X.assign(label=y.to_numpy()),
                               targets="label", model_type="classifier", evaluators=["xai"],
                               evaluator_config={"xai": {"explainers": ["shapley"]}})


def test_plain_evaluate_runs_xai_too_and_a_failure_never_breaks_it(experiment, cancer_small):
    import mlflow

    X, y = cancer_small

    def flaky(frame):
        # Fine for MLflow's own metrics on the full data, fails on explainer perturbations.
        if len(frame) != len(X):
            raise RuntimeError("perturbed batch refused")
        return (frame["worst radius"] > 16).astype(int).to_numpy()

    with mlflow.start_run() as run:
        result = mlflow.models.evaluate(flaky, X.assign(label=y.to_numpy()), targets="label",
                                        model_type="classifier",
                                        evaluator_config={"log_model_explainability": False})
    assert "accuracy_score" in result.metrics  # MLflow's own evaluator still ran
    tags = mlflow.MlflowClient().get_run(run.info.run_id).data.tags
    assert tags["mlflow_xai.status"] == "failed"
    error = mlflow.artifacts.load_text(f"{run.info.artifact_uri}/xai/error.txt")
    assert "perturbed batch refused" in error


def test_strict_mode_makes_evaluate_raise(experiment, cancer_small):
    import mlflow

    X, y = cancer_small

    def broken(frame):
        raise RuntimeError("no predictions today")

    with pytest.raises(Exception, match="no predictions today"):
        mlflow.models.evaluate(broken, X.assign(label=y.to_numpy()), targets="label",
                               model_type="classifier", evaluators=["xai"],
                               evaluator_config={"xai": {"strict": True}})


def test_disable_and_unsupported_model_types(experiment):
    from mlflow_xai.evaluator import XaiEvaluator

    assert XaiEvaluator.can_evaluate(model_type="regressor", evaluator_config={})
    assert not XaiEvaluator.can_evaluate(model_type="regressor",
                                         evaluator_config={"disable": True})
    assert not XaiEvaluator.can_evaluate(model_type="text", evaluator_config={})


def test_regressor_through_evaluate(experiment, linreg, diabetes):
    import mlflow

    X, y = diabetes
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(linreg, name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS)
        result = mlflow.models.evaluate(
            info.model_uri, X.assign(target=y.to_numpy()), targets="target",
            model_type="regressor", evaluators=["xai"],
            evaluator_config={"xai": {"explainers": ["permutation_shap"], "max_rows": 20}})
    top = max((k for k in result.metrics if ".importance." in k), key=result.metrics.get)
    effect = (np.abs(linreg.coef_) * X.iloc[:150].std()).idxmax()
    assert top == f"xai.permutation_shap.importance.{effect}"


def test_unnamed_xai_stays_cheap_and_named_xai_plans_within_30_s(logged_logreg, cancer_small):
    import mlflow

    X, y = cancer_small
    frame = X.assign(label=y.to_numpy())
    summaries = {}
    for key, kwargs in (("unnamed", {}), ("named", {"evaluators": ["xai"]})):
        with mlflow.start_run() as run:
            mlflow.models.evaluate(logged_logreg.model_uri, frame, targets="label",
                                   model_type="classifier", **kwargs)
        summaries[key] = mlflow.artifacts.load_dict(
            f"{run.info.artifact_uri}/xai/summary.json")
    unnamed, named = summaries["unnamed"], summaries["named"]
    # Unnamed: the planner in a 1 s budget, at most 100 rows, only checks that call no model.
    assert unnamed["plan"]["mode"] == "auto" and unnamed["plan"]["budget_s"] == 1.0
    assert unnamed["data"]["max_rows"] == 100
    assert set(unnamed["checks"]) <= {"agreement", "bootstrap_importance", "completeness",
                                      "rank_uncertainty"}
    assert all(c["model_evals"] == 0 for c in unnamed["checks"].values())
    # Named: the planner's choice within the 30 s default budget, the default checks.
    assert named["plan"]["mode"] == "auto" and named["plan"]["budget_s"] == 30.0
    assert "deletion_insertion" in named["checks"]
    assert [c["method"] for c in named["plan"]["chosen"]][0] in ("exact_shap", "kernel_shap")
