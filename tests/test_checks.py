"""Checks: each figure on problems where the right answer is known, and each can fail."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
import pytest

import mlflow_xai
from mlflow_xai import hookimpl
from mlflow_xai.base import Attribution, Explainer, ExplainTask

W = np.array([3.0, -2.0, 1.0, 0.5, 0.0, 0.0])


@pytest.fixture(scope="module")
def linear_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6))
    return X, (lambda a: a @ W + 0.5)


def _run(model, X, explainers, checks, **kw):
    return mlflow_xai.explain(model, X, explainers=explainers, checks=checks, **kw)


def test_default_checks_are_the_cheap_ones(linear_data, tmp_path):
    X, f = linear_data
    expl = _run(f, X, {"exact_shap": {}, "lime": {"n_samples": 500}}, None, output_dir=tmp_path)
    assert set(expl.checks) == {"agreement", "bootstrap_importance", "completeness",
                                "deletion_insertion", "infidelity", "faithfulness_correlation",
                                "rank_uncertainty"}
    assert all(c["status"] == "ok" for c in expl.checks.values())
    stability = json.loads((tmp_path / "stability.json").read_text())
    assert stability["completeness"]["verdicts"]["exact_shap/mean_relative_gap"] == "pass"
    for name in expl.checks:
        assert (tmp_path / "plots" / f"check_{name}.png").exists()
    # Cost is recorded per check, in model evaluations.
    assert expl.checks["agreement"]["model_evals"] == 0
    assert expl.checks["infidelity"]["model_evals"] == 80 * 20
    assert _run(f, X, ["exact_shap"], []).checks == {}


def test_faithfulness_figures_are_perfect_for_exact_shap_on_a_linear_model(linear_data):
    X, f = linear_data
    expl = _run(f, X, ["exact_shap"], ["infidelity", "faithfulness_correlation",
                                       "deletion_insertion", "completeness"])
    figures = {k: v for c in expl.checks.values() for k, v in c["figures"].items()}
    assert figures["exact_shap/infidelity"] < 1e-12
    assert figures["exact_shap/random_infidelity"] > 0.3
    assert figures["exact_shap/faithfulness_correlation"] > 0.999
    assert abs(figures["exact_shap/random_faithfulness_correlation"]) < 0.3
    assert figures["exact_shap/deletion_gain"] > 0.1 and figures["exact_shap/insertion_gain"] > 0.1
    assert figures["exact_shap/max_gap"] < 1e-10


class _Backwards(Explainer):
    """Exact SHAP with the sign flipped: a deliberately unfaithful explainer."""

    name: ClassVar[str] = "backwards"
    stochastic: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}

    def explain_rows(self, task: ExplainTask, X: np.ndarray, params: dict) -> Attribution:
        base = task.predict(task.background).mean()
        values = -(X - task.background.mean(0)) * W
        return Attribution(values=values, base_values=np.full(len(X), base))


class _Pack:
    @hookimpl
    def xai_register_explainers(self):
        return [_Backwards]


@pytest.fixture()
def with_backwards():
    from mlflow_xai.plugins import get_registry

    registry = get_registry(reload=True)
    pack = _Pack()
    registry.pm.register(pack, name="backwards-pack")
    from mlflow_xai.plugins import MethodInfo

    registry.methods["backwards"] = MethodInfo("backwards", "explainer", _Backwards,
                                               "backwards-pack", "tests", "0")
    yield
    get_registry(reload=True)


def test_an_unfaithful_explainer_fails_faithfulness_and_disagrees(linear_data, with_backwards):
    X, f = linear_data
    expl = _run(f, X, ["exact_shap", "backwards"], ["deletion_insertion", "agreement",
                                                    "faithfulness_correlation"])
    di = expl.checks["deletion_insertion"]
    assert di["verdicts"]["backwards/deletion_gain"] == "fail"
    assert di["verdicts"]["exact_shap/deletion_gain"] == "pass"
    assert expl.checks["faithfulness_correlation"]["figures"][
        "backwards/faithfulness_correlation"] < -0.99
    agreement = expl.checks["agreement"]["figures"]
    # Top 5 of 6 includes one zero-weight feature (0 == 0); the four real ones all disagree.
    assert agreement["exact_shap__backwards/sign_agreement"] == pytest.approx(0.2)
    assert agreement["exact_shap__backwards/feature_agreement"] == 1.0
    assert agreement["exact_shap__backwards/rank_correlation"] == pytest.approx(1.0)


def test_seed_stability_covers_stochastic_explainers_only(linear_data):
    X, f = linear_data
    expl = _run(f, X, {"exact_shap": {}, "kernel_shap": {"n_samples": 16},
                       "permutation_shap": {"n_samples": 600}},
                ["seed_stability"], max_rows=40)
    figures = expl.checks["seed_stability"]["figures"]
    assert "exact_shap/spearman" not in figures
    # A generous budget is stable, a tiny one (16 coalitions for 6 features) less so.
    assert figures["permutation_shap/spearman"] > 0.95
    assert figures["permutation_shap/row_cv"] < figures["kernel_shap/row_cv"] + 1.0
    assert 0 <= figures["kernel_shap/top_k_jaccard"] <= 1
    # 2 extra seeds x 40 rows x 16 coalitions x 40 background rows (+ endpoints).
    assert expl.checks["seed_stability"]["model_evals"] >= 2 * 40 * 16 * 40


def test_input_robustness_is_small_for_a_smooth_model(linear_data):
    X, f = linear_data
    expl = _run(f, X, ["exact_shap"], {"input_robustness": {"radius": 0.01}}, max_rows=30)
    figures = expl.checks["input_robustness"]["figures"]
    assert figures["exact_shap/avg_sensitivity"] < 0.05
    assert figures["exact_shap/max_sensitivity"] >= figures["exact_shap/avg_sensitivity"]
    assert expl.checks["input_robustness"]["verdicts"]["exact_shap/avg_sensitivity"] == "pass"


def test_bootstrap_intervals_contain_the_estimate(linear_data):
    X, f = linear_data
    expl = _run(f, X, ["exact_shap"], ["bootstrap_importance"])
    details = expl.checks["bootstrap_importance"]["details"]["exact_shap"]
    for feature, ci in details.items():
        assert ci["low"] <= ci["importance"] <= ci["high"], feature
    assert expl.checks["bootstrap_importance"]["figures"]["exact_shap/top1_stability"] == 1.0


def test_model_randomization_changes_gradient_explanations():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    X = np.random.default_rng(1).normal(size=(40, 6)).astype(np.float32)
    expl = _run(net, X, ["saliency", "integrated_gradients"], ["model_randomization"])
    entry = expl.checks["model_randomization"]
    assert entry["status"] == "ok"
    assert len(entry["details"]["cascade"]["saliency"]) == 2  # two layers with weights
    assert entry["verdicts"]["saliency/final_rank_correlation"] == "pass"
    skipped = _run(lambda a: a.sum(1), X, ["exact_shap"], ["model_randomization"])
    assert skipped.checks["model_randomization"]["status"] == "skipped"


def test_check_metrics_are_logged_with_documented_names(experiment, linear_data):
    import mlflow

    X, f = linear_data
    expl = _run(f, X, ["exact_shap", "permutation_shap"], None)
    with mlflow.start_run() as run:
        expl.log()
    metrics = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics
    assert metrics["xai.check.agreement.exact_shap__permutation_shap.rank_correlation"] > 0.95
    assert "xai.check.deletion_insertion.exact_shap.deletion_gain" in metrics


def test_unknown_check_and_parameter_are_clear_errors(linear_data):
    X, f = linear_data
    with pytest.raises(mlflow_xai.errors.ConfigError, match="unknown check 'stability'"):
        _run(f, X, ["exact_shap"], ["stability"])
    with pytest.raises(mlflow_xai.errors.ConfigError, match="n_seed"):
        _run(f, X, ["exact_shap"], {"seed_stability": {"n_seed": 2}})
