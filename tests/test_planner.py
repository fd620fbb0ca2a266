"""The default plan: which methods ``explainers="auto"`` picks, and ``budget_s`` sizing."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

import mlflow_xai


@pytest.fixture(scope="module")
def cancer():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    return X, y


def _plan(expl):
    return expl.summary["plan"]


def _chosen(expl):
    return [c["method"] for c in _plan(expl)["chosen"]]


def test_auto_picks_tree_shap_for_a_forest_and_says_why_others_are_left_out(cancer):
    from sklearn.ensemble import RandomForestClassifier

    X, y = cancer
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, y)
    expl = mlflow_xai.explain(model, X.head(120), targets=y.head(120), explainers="auto",
                              checks=[])
    assert _chosen(expl) == ["tree_shap", "permutation_importance"]
    assert list(expl.summary["methods"]) == ["tree_shap", "permutation_importance"]
    assert expl.summary["primary_method"] == "tree_shap"
    left = {x["method"]: x["why"] for x in _plan(expl)["left_out"]}
    assert "redundant" in left["kernel_shap"] and "redundant" in left["permutation_shap"]
    assert "only when asked" in left["lime"]
    assert left["integrated_gradients"].startswith("not applicable")
    # No budget: every row is explained, nothing sized.
    assert _plan(expl)["rows"] == 120 and _plan(expl)["budget_s"] is None


def test_auto_without_targets_runs_one_shapley_estimator(cancer):
    from sklearn.linear_model import LogisticRegression

    X, y = cancer
    model = LogisticRegression(max_iter=5000).fit(X, y)
    # A budget far from the wide-data boundary (4 coalitions per feature), whatever the load.
    expl = mlflow_xai.explain(model, X.head(60), explainers="auto", checks=[], budget_s=30)
    assert _chosen(expl) == ["kernel_shap"]
    assert set(expl.summary["methods"]) == {"kernel_shap"}
    # 30 features: 2**30 coalitions do not fit, so the sample count was sized.
    params = _plan(expl)["chosen"][0]["params"]
    assert params["n_samples"] == "auto"
    assert params["max_samples"] in (2048, 1024, 512, 256, 128, 64)
    entry = expl.summary["methods"]["kernel_shap"]
    assert entry["samples_used"] <= params["max_samples"] and entry["max_standard_error"] >= 0


def test_auto_enumerates_exactly_when_the_coalitions_fit(cancer):
    from sklearn.linear_model import LogisticRegression

    X, y = cancer
    X5 = X.iloc[:, :5]
    model = LogisticRegression(max_iter=5000).fit(X5, y)
    expl = mlflow_xai.explain(model, X5.head(80), explainers="auto", checks=[], budget_s=10)
    assert _chosen(expl) == ["exact_shap"]
    assert "exactly" in _plan(expl)["chosen"][0]["why"]
    # Closed form for a linear model in log-odds does not apply (probability space), but the
    # efficiency of exact values must hold to float precision.
    assert expl.summary["methods"]["exact_shap"]["efficiency_max_abs_gap"] < 1e-9


def test_auto_uses_gradients_for_a_torch_module():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    X = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    expl = mlflow_xai.explain(net, X, explainers="auto", checks=[])
    assert _chosen(expl) == ["integrated_gradients"]


class SlowModel:
    """A model whose predict costs ``per_row`` seconds per row plus 1 ms per call."""

    def __init__(self, per_row: float) -> None:
        self.per_row = per_row
        self.w = np.linspace(-1, 1, 8)

    def __call__(self, X):
        X = np.asarray(X, dtype=float)
        time.sleep(1e-3 + self.per_row * len(X))
        return np.tanh(X @ self.w) + 0.3 * X[:, 0] * X[:, 1]


def test_a_budget_bounds_the_work_on_a_slow_model():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(400, 8)), columns=[f"x{i}" for i in range(8)])
    budget = 4.0
    t0 = time.perf_counter()
    expl = mlflow_xai.explain(SlowModel(2e-6), X, explainers="auto", budget_s=budget)
    elapsed = time.perf_counter() - t0
    plan = _plan(expl)
    assert plan["budget_s"] == budget and plan["rows"] < 400
    assert expl.summary["data"]["rows_explained"] == plan["rows"]
    assert plan["spent_s"] <= budget, plan
    assert elapsed <= budget + 5, f"explain took {elapsed:.1f} s for a {budget} s budget"
    # Without a budget the same request explains every row.
    assert mlflow_xai.explain(SlowModel(0.0), X.head(30), explainers="auto",
                              checks=[]).summary["data"]["rows_explained"] == 30


def test_requested_methods_are_kept_and_only_sized(cancer):
    from sklearn.linear_model import LogisticRegression

    X, y = cancer
    model = LogisticRegression(max_iter=5000).fit(X, y)
    expl = mlflow_xai.explain(model, X, explainers={"kernel_shap": {"n_samples": 512},
                                                    "lime": {}},
                              checks=[], budget_s=2)
    plan = _plan(expl)
    assert plan["mode"] == "requested"
    assert set(expl.summary["methods"]) == {"kernel_shap", "lime"}
    assert expl.summary["methods"]["kernel_shap"]["params"]["n_samples"] == 512
    assert plan["rows"] < len(X)


def test_default_explain_is_unchanged_without_auto_or_budget(cancer):
    from sklearn.linear_model import LogisticRegression

    X, y = cancer
    model = LogisticRegression(max_iter=5000).fit(X.iloc[:, :4], y)
    expl = mlflow_xai.explain(model, X.iloc[:40, :4], checks=[],
                              explainers=["kernel_shap", "exact_shap"])
    assert "plan" not in expl.summary
    assert expl.summary["data"]["rows_explained"] == 40


def test_progress_bar_counts_planned_work_including_checks(cancer, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    from mlflow_xai import pipeline

    totals, updates = [], []

    class Bar:
        def __init__(self, total, desc, progress):
            totals.append(total)

        def update(self, n):
            updates.append(n)

        def set_description(self, text):
            pass

        def close(self):
            pass

    monkeypatch.setattr(pipeline, "progress_bar", Bar)
    X, y = cancer
    model = LogisticRegression(max_iter=5000).fit(X.iloc[:, :6], y)
    mlflow_xai.explain(model, X.iloc[:30, :6],
                       explainers={"tree_shap": {}, "kernel_shap": {"n_samples": 64}},
                       checks=["agreement", "completeness"])
    # tree_shap does not apply to a logistic regression: 1 method + 2 checks, 30 rows each.
    assert totals == [30 * 3]
    assert sum(updates) == 30 * 3


def test_sampled_estimators_report_standard_errors_in_importance_json(cancer):
    from sklearn.linear_model import LogisticRegression

    from mlflow_xai.artifacts import importance_json

    X, y = cancer
    model = LogisticRegression(max_iter=5000).fit(X.iloc[:, :6], y)
    expl = mlflow_xai.explain(model, X.iloc[:40, :6], checks=[],
                              explainers={"kernel_shap": {"n_samples": 32}, "exact_shap": {}})
    doc = importance_json(expl)
    kernel, exact = doc["kernel_shap"], doc["exact_shap"]
    assert all("standard_error" not in v for v in exact.values())
    assert all(v["standard_error"] > 0 for v in kernel.values())
    # The bound covers the actual error of the global importance on every feature.
    for feature, v in kernel.items():
        assert abs(v["importance"] - exact[feature]["importance"]) <= 3 * v["standard_error"]
    assert set(expl.standard_errors) == {"kernel_shap"}
