"""Selectors through the one pipeline: explain(), the evaluator, autolog, artifacts, stability
of the selection (Kuncheva, Jaccard, score Spearman) and the ROAR-style retrain check.

The selectors' own ground-truth recovery is asserted per selector in test_selectors.py.
"""

from __future__ import annotations

import json
import types
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

import mlflow_xai
from mlflow_xai import hookimpl, plugins
from mlflow_xai.base import Selection, Selector, choose_subset
from mlflow_xai.errors import ConfigError, XaiError
from mlflow_xai.selecting import jaccard, kuncheva
from tests.conftest import SKLEARN_REQS

INFORMATIVE = ["f0", "f1", "f2", "f3"]


@pytest.fixture(scope="module")
def informative_data() -> tuple[pd.DataFrame, pd.Series]:
    from tests.synthetic import linear_classification

    X, y, informative = linear_classification(n=2000, d=12, seed=0)
    assert informative == INFORMATIVE
    return X, pd.Series(y, name="label")


@pytest.fixture(scope="module")
def clf(informative_data):
    from sklearn.linear_model import LogisticRegression

    X, y = informative_data
    return LogisticRegression(max_iter=1000).fit(X, y)


def test_explain_runs_selectors_with_stability_and_retrain(clf, informative_data, tmp_path):
    from sklearn.linear_model import LogisticRegression

    X, y = informative_data
    expl = mlflow_xai.explain(clf, X, targets=y, explainers=[], checks=[],
                              selectors={"mutual_info": {"k": 4}},
                              retrain=LogisticRegression(max_iter=1000), output_dir=tmp_path)
    sel = expl.selection["mutual_info"]
    assert isinstance(sel.scores, pd.Series) and list(sel.scores.index) == list(X.columns)
    assert sorted(sel.ranking) == sorted(X.columns)
    assert sel.selected == sel.ranking[:4]
    assert set(sel.selected) == set(INFORMATIVE)
    # Four clear signals: every bootstrap resample picks the same four.
    assert sel.stability["kuncheva"] == pytest.approx(1.0)
    assert sel.stability["jaccard"] == pytest.approx(1.0)
    assert sel.stability["score_spearman"] > 0.5
    # Retraining on the selection beats random subsets of the same size by a wide margin.
    assert sel.retrain["status"] == "ok" and sel.retrain["subset_size"] == 4
    assert sel.retrain["selected_score"] > 0.85
    assert sel.retrain["gain"] > 0.1
    assert expl.summary["selectors"]["mutual_info"]["status"] == "ok"
    assert expl.summary["data"]["selection_rows"] == len(X)

    saved = json.loads((tmp_path / "selection" / "mutual_info.json").read_text())
    assert saved["selected"] == sel.selected and saved["ranking"] == sel.ranking
    assert saved["params"]["k"] == 4 and saved["stability"]["resamples"] == 5
    assert (tmp_path / "plots" / "selection_mutual_info.png").stat().st_size > 5000
    report = (tmp_path / "report.html").read_text()
    assert "Feature selection" in report and "mutual_info" in report


def test_selection_metrics_and_a_policy_on_them(clf, informative_data):
    from mlflow_xai.artifacts import metrics_for

    X, y = informative_data
    policy = {"rules": [{"name": "stable-selection", "metric": "selection/mutual_info/kuncheva",
                         "min": 0.8}]}
    expl = mlflow_xai.explain(clf, X, targets=y, explainers=[], checks=[],
                              selectors={"mutual_info": {"k": 4}}, policy=policy)
    metrics = metrics_for(expl)
    assert metrics["xai.selection.mutual_info.n_selected"] == 4
    assert metrics["xai.selection.mutual_info.kuncheva"] == pytest.approx(1.0)
    assert "xai.selection.mutual_info.retrain_gain" not in metrics  # no estimator given
    assert expl.selection["mutual_info"].retrain["status"] == "skipped"
    assert expl.governance["verdict"] == "passed"


def test_selection_rows_are_sampled_separately_from_explained_rows(clf, informative_data):
    X, y = informative_data
    expl = mlflow_xai.explain(clf, X, targets=y, explainers={"kernel_shap": {"n_samples": 64}},
                              checks=[], max_rows=30, selection_rows=500, selection_bootstrap=0,
                              selectors=["mutual_info"])
    assert expl.summary["data"]["rows_explained"] == 30
    assert expl.summary["data"]["selection_rows"] == 500
    assert expl.selection["mutual_info"].stability["status"] == "skipped"
    # Default subset rule: scores at least the mean (SelectFromModel's rule).
    scores = expl.selection["mutual_info"].scores
    assert set(expl.selection["mutual_info"].selected) == set(scores[scores >= scores.mean()]
                                                              .index)
    assert "kernel_shap" in expl.attributions


def test_selector_errors_are_clear(clf, informative_data):
    X, y = informative_data
    with pytest.raises(ConfigError, match="needs targets"):
        mlflow_xai.explain(clf, X, explainers=[], checks=[], selectors=["mutual_info"])
    with pytest.raises(ConfigError, match="unknown selector 'mutual_inf'.*mutual_info"):
        mlflow_xai.explain(clf, X, targets=y, explainers=[], selectors=["mutual_inf"])
    with pytest.raises(ConfigError, match="selection_bootstrap"):
        mlflow_xai.explain(clf, X, targets=y, explainers=[], selectors=["mutual_info"],
                           selection_bootstrap=-1)
    with pytest.raises(ConfigError, match="retrain must be"):
        mlflow_xai.explain(clf, X, targets=y, explainers=[], selectors=["mutual_info"],
                           retrain="LogisticRegression")
    with pytest.raises(ConfigError, match="k must be a positive integer"):
        mlflow_xai.explain(clf, X, targets=y, explainers=[], checks=[],
                           selectors={"mutual_info": {"k": 0}})


def test_retrain_accepts_a_scoring_function(clf, informative_data):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    X, y = informative_data
    seen = []

    def score(X_subset: pd.DataFrame, target: np.ndarray) -> float:
        seen.append(list(X_subset.columns))
        return float(cross_val_score(LogisticRegression(max_iter=500), X_subset, target,
                                     cv=2).mean())

    expl = mlflow_xai.explain(clf, X, targets=y, explainers=[], checks=[],
                              selectors={"mutual_info": {"k": 4}}, retrain=score,
                              selection_bootstrap=0)
    retrain = expl.selection["mutual_info"].retrain
    assert sorted(seen[0]) == INFORMATIVE            # first call: the selected subset
    assert len(seen) == 6 and all(len(cols) == 4 for cols in seen)  # + 5 random subsets
    assert retrain["gain"] == pytest.approx(retrain["selected_score"]
                                            - np.mean(retrain["random_scores"]))


def test_kuncheva_and_jaccard_values():
    assert kuncheva({0, 1}, {0, 1}, 10) == pytest.approx(1.0)
    # No overlap: (0 * 10 - 4) / (2 * 8)
    assert kuncheva({0, 1}, {2, 3}, 10) == pytest.approx(-0.25)
    # Overlap of one: (1 * 10 - 4) / 16; the chance overlap k^2/d = 0.4 maps to 0.
    assert kuncheva({0, 1}, {0, 2}, 10) == pytest.approx(0.375)
    assert kuncheva(set(), set(), 10) is None and kuncheva(set(range(10)), set(range(10)), 10) \
        is None
    assert jaccard({0, 1}, {1, 2}) == pytest.approx(1 / 3)
    assert jaccard(set(), set()) == 1.0


def test_choose_subset_rules():
    scores = np.array([0.1, 0.9, 0.5, 0.2])
    assert choose_subset(scores, {"k": 2}).tolist() == [1, 2]
    assert choose_subset(scores, {"threshold": 0.2}).tolist() == [1, 2, 3]
    assert choose_subset(scores, {}, own=np.array([3, 0])).tolist() == [0, 3]
    assert choose_subset(scores, {}).tolist() == [1, 2]            # >= mean (0.425)
    assert choose_subset(scores, {"k": 2}, ranking=np.array([3, 0, 1, 2])).tolist() == [0, 3]


class _Broken(Selector):
    name: ClassVar[str] = "broken_selector"
    requires: ClassVar[tuple[str, ...]] = ()

    def select(self, task):
        raise RuntimeError("boom")


class _Echo(Selector):
    name: ClassVar[str] = "first_two"
    requires: ClassVar[tuple[str, ...]] = ()

    def select(self, task):
        params = self.validate_params()
        scores = np.arange(task.n_features, 0, -1, dtype=float)
        return Selection(scores=scores, selected=choose_subset(scores, {**params, "k": params["k"] or 2}))


@pytest.fixture()
def extra_selectors(monkeypatch):
    pack = types.SimpleNamespace(xai_register_selectors=hookimpl(lambda: [_Broken, _Echo]))
    real = plugins.md.entry_points

    class _EP:
        name, module = "test_selectors", "tests"

        class dist:  # noqa: N801 - mimics importlib.metadata's object
            metadata = {"Name": "tests"}
            version = "0"

        @staticmethod
        def load():
            return pack

    # importlib.metadata is shared (torch reads its own groups): add ours to our group only.
    monkeypatch.setattr(plugins.md, "entry_points",
                        lambda group: [*real(group=group),
                                       *([_EP()] if group == "mlflow_xai" else [])])
    plugins.get_registry(reload=True)
    yield
    monkeypatch.undo()
    plugins.get_registry(reload=True)


def test_a_failing_selector_is_recorded_unless_strict(clf, informative_data, extra_selectors,
                                                      tmp_path):
    X, y = informative_data
    with pytest.raises(XaiError, match="selector 'broken_selector' failed: RuntimeError: boom"):
        mlflow_xai.explain(clf, X, explainers=[], selectors=["broken_selector"])
    expl = mlflow_xai.explain(clf, X, explainers=[], checks=[], strict=False,
                              selectors=["broken_selector", "first_two"], output_dir=tmp_path)
    assert expl.summary["selectors"]["broken_selector"]["status"] == "failed"
    assert expl.selection["first_two"].selected == ["f0", "f1"]
    assert "selector 'broken_selector' failed" in (tmp_path / "error.txt").read_text()


def test_evaluator_and_autolog_run_selectors(experiment, clf, informative_data):
    import mlflow

    X, y = informative_data
    config = {"explainers": [], "checks": [], "selectors": {"mutual_info": {"k": 4}},
              "selection_bootstrap": 2}
    with mlflow.start_run() as run:
        info = mlflow.sklearn.log_model(clf, name="model", input_example=X.head(2),
                                        pip_requirements=SKLEARN_REQS)
        result = mlflow.models.evaluate(info.model_uri, X.assign(label=y), targets="label",
                                        model_type="classifier", evaluators=["xai"],
                                        evaluator_config={"xai": config})
    assert result.metrics["xai.selection.mutual_info.n_selected"] == 4
    assert "xai_selection_mutual_info" in result.artifacts
    saved = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/xai/selection/mutual_info.json")
    assert set(saved["selected"]) == set(INFORMATIVE)

    mlflow_xai.autolog(data=X, targets=y, **config)
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(clf, name="model", input_example=X.head(2),
                                 pip_requirements=SKLEARN_REQS)
    saved = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/xai/selection/mutual_info.json")
    assert set(saved["selected"]) == set(INFORMATIVE)
    metrics = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics
    assert metrics["xai.selection.mutual_info.kuncheva"] == pytest.approx(1.0)
