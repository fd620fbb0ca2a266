"""Metrics people can read (issue 12, item 4): by default a run gets at most 30 ``xai.*``
metrics, none with a ``/`` (the MLflow UI charts those after the model's own metrics, see
tests/test_ui.py); ``log_metrics="all"`` logs every figure, as before. Both are pure functions
of the JSON documents, and the gate keeps reading its facts from those documents."""

from __future__ import annotations

import json

import pytest

import mlflow_xai
from mlflow_xai.artifacts import (
    MAX_HEADLINE_METRICS,
    all_metrics,
    headline_metrics,
    importance_json,
    logged_metrics,
    metrics_for,
    metrics_from_documents,
    stability_json,
)
from tests.conftest import FAST, mlflow_refuses

#: Judged on the documents whatever is logged: a feature's importance, a check figure, agreement.
POLICY = {"rules": [
    {"name": "radius counts", "metric": "kernel_shap/importance/worst radius", "min": 0.0},
    {"name": "shap agrees", "metric": "agreement/kernel_shap__permutation_shap/rank_correlation",
     "min": 0.0},
    {"name": "deletion", "metric": "deletion_insertion/kernel_shap/deletion_gain", "min": -1.0},
    {"name": "close", "max_disagreement": {"methods": ["kernel_shap", "lime"], "max": 1.0}},
]}




@pytest.fixture(scope="module")
def explained(logreg, cancer_small):
    """A tabular classifier, four methods, the default checks and a policy."""
    X, y = cancer_small
    return mlflow_xai.explain(logreg, X, targets=y, explainers=FAST, max_rows=40,
                              background_rows=20, policy=POLICY)


def _documents(expl) -> tuple:
    return (expl.summary, importance_json(expl), stability_json(expl),
            {n: s.to_json() for n, s in expl.selection.items()})


def test_default_run_logs_a_short_headline(explained):
    expl = explained
    assert expl.summary["log_metrics"] == "headline"
    assert len(expl.checks) >= 4 and len(expl.methods) == 4
    metrics = metrics_for(expl)
    assert len(metrics) <= MAX_HEADLINE_METRICS
    assert all(k.startswith("xai.") and "/" not in k for k in metrics), sorted(metrics)
    assert all(mlflow_refuses(k) is None for k in metrics)

    primary = expl.summary["primary_method"]
    assert primary == "kernel_shap"
    importance = {k[len(f"xai.{primary}.importance."):]: v
                  for k, v in metrics.items() if k.startswith(f"xai.{primary}.importance.")}
    top = expl.top_features(primary, 10)
    assert set(importance) == set(top)  # 8 features: all of them
    for feature in top:
        assert importance[feature] == pytest.approx(float(expl.importance.at[feature, primary]))
    assert not any(".importance." in k and not k.startswith(f"xai.{primary}.") for k in metrics)

    assert metrics["xai.rows_explained"] == 40
    assert metrics["xai.methods_ok"] == 4 and metrics["xai.methods_failed"] == 0
    assert metrics["xai.seconds"] == pytest.approx(expl.summary["seconds"])
    assert metrics[f"xai.{primary}.seconds"] == pytest.approx(
        expl.summary["methods"][primary]["seconds"])
    assert metrics["xai.governance.passed"] == 1.0

    # Check figures: only those with a threshold or verdict, at most two per check, the
    # primary method's first.
    checks = {k for k in metrics if k.startswith("xai.check.")}
    assert "xai.check.agreement.kernel_shap__permutation_shap.rank_correlation" in checks
    assert "xai.check.deletion_insertion.kernel_shap.deletion_gain" in checks
    assert "xai.check.deletion_insertion.kernel_shap.insertion_gain" in checks
    assert not any(k.startswith("xai.check.deletion_insertion.lime.") for k in checks)
    for name, entry in expl.checks.items():
        mine = [k for k in checks if k.startswith(f"xai.check.{name}.")]
        assert len(mine) <= 2
        judged = {f.replace("/", ".") for f in entry.get("thresholds") or {}}
        assert {k[len(f"xai.check.{name}."):] for k in mine} <= judged
        if not judged:
            assert not mine, f"{name} has no thresholds, so no headline figure"


def test_headline_is_a_pure_function_of_the_written_documents(explained, tmp_path):
    from mlflow_xai.artifacts import write_artifacts

    expl = explained
    write_artifacts(expl, tmp_path, plots=False)
    read = {name: json.loads((tmp_path / f"{name}.json").read_text())
            for name in ("summary", "importance", "stability", "governance")}
    assert logged_metrics(read["summary"], read["importance"], read["stability"], {},
                          read["governance"]) == metrics_for(expl)
    # The same documents in another key order give the same names and values.
    shuffled = {m: dict(reversed(list(f.items()))) for m, f in read["importance"].items()}
    assert headline_metrics(read["summary"], shuffled, dict(reversed(list(
        read["stability"].items()))), governance=read["governance"]) == metrics_for(expl)


def test_log_metrics_all_is_every_figure_as_before(explained):
    expl = explained
    summary, importance, stability, selection = _documents(expl)
    full = metrics_from_documents(summary, importance, stability, selection)
    everything = all_metrics(summary, importance, stability, selection, expl.governance)
    assert everything == {**full, "xai/governance/passed": 1.0}
    assert logged_metrics({**summary, "log_metrics": "all"}, importance, stability, selection,
                          expl.governance) == everything
    # Every method's importance of every feature, every check figure, the run figures.
    for method in expl.methods:
        for feature in expl.importance.index:
            assert f"xai/{method}/importance/{feature}" in everything
        assert f"xai/{method}/seconds" in everything
    for name, entry in expl.checks.items():
        for figure in entry.get("figures") or {}:
            assert f"xai/check/{name}/{figure}" in everything
    assert len(everything) > 3 * MAX_HEADLINE_METRICS
    # A summary without the key (an older or distributed one) gets the headline.
    assert logged_metrics({k: v for k, v in summary.items() if k != "log_metrics"},
                          importance, stability) == headline_metrics(summary, importance,
                                                                     stability)


def test_the_option_flows_to_what_a_run_logs(experiment, logreg, cancer_small):
    import mlflow

    X, y = cancer_small
    logged = {}
    for mode in ("headline", "all"):
        expl = mlflow_xai.explain(logreg, X, targets=y, explainers=["kernel_shap"],
                                  max_rows=30, background_rows=20, checks=["agreement"],
                                  log_metrics=mode)
        assert expl.summary["log_metrics"] == mode
        with mlflow.start_run() as run:
            expl.log()
        logged[mode] = mlflow.MlflowClient().get_run(run.info.run_id).data.metrics
        assert logged[mode] == pytest.approx(metrics_for(expl))
    assert all("/" not in k for k in logged["headline"])
    assert "xai/kernel_shap/importance/worst radius" in logged["all"]
    assert "xai/kernel_shap/model_evals" in logged["all"]
    assert "xai.kernel_shap.importance.worst radius" in logged["headline"]
    with pytest.raises(mlflow_xai.errors.ConfigError, match="log_metrics"):
        mlflow_xai.explain(logreg, X, explainers=["kernel_shap"], log_metrics="some")


def test_policies_still_judge_figures_the_headline_does_not_log(explained):
    from mlflow_xai.governance import evaluate_policy, facts_from_explanations

    expl = explained
    assert expl.governance["verdict"] == "passed"
    assert [r["verdict"] for r in expl.governance["rules"]] == ["pass"] * 4
    facts = facts_from_explanations(expl)
    assert facts.figure("lime/importance/worst radius") is not None  # not a headline metric
    assert "xai.lime.importance.worst radius" not in metrics_for(expl)
    outcome = evaluate_policy({"rules": [{"name": "lime", "metric": "lime/model_evals",
                                          "min": 1}]}, expl)
    assert outcome["verdict"] == "passed"


# -- the rule, on hand-made documents --------------------------------------------------------

def _docs(features: int = 40, checks: int = 12, primary: str | None = "b"):
    names = [f"f{i:02d}" for i in range(features)]
    summary = {"primary_method": primary, "seconds": 9.5,
               "data": {"rows_explained": 7, "feature_names": names},
               "methods": {"a": {"status": "ok", "seconds": 1.0},
                           "b": {"status": "ok", "seconds": 2.0},
                           "c": {"status": "failed"}}}
    importance = {m: {f: {"importance": float(len(names) - i) * w, "rank": i + 1}
                      for i, f in enumerate(names)} for m, w in (("a", 1.0), ("b", 2.0))}
    stability = {}
    for i in range(checks):
        figures = {"a/x": 0.1, "b/x": 0.2, "b/y": float("nan"), "a__b/z": 0.3, "b/w": 0.4}
        stability[f"check{i:02d}"] = {
            "status": "ok", "figures": figures,
            "thresholds": {k: {"min": 0} for k in ("a/x", "b/x", "b/y", "a__b/z")},
            "verdicts": {}}
    stability["unjudged"] = {"status": "ok", "figures": {"b/x": 1.0}, "thresholds": {},
                             "verdicts": {}}
    return summary, importance, stability


def test_cap_order_and_per_check_choice():
    summary, importance, stability = _docs()
    metrics = headline_metrics(summary, importance, stability, governance={"verdict": "failed"})
    assert len(metrics) == MAX_HEADLINE_METRICS
    keys = list(metrics)
    assert keys[:7] == ["xai.rows_explained", "xai.methods_ok", "xai.methods_failed",
                        "xai.seconds", "xai.b.seconds", "xai.governance.passed",
                        "xai.b.importance.f00"]
    assert metrics["xai.governance.passed"] == 0.0 and metrics["xai.methods_failed"] == 1
    assert [k for k in keys if ".importance." in k] == [f"xai.b.importance.f{i:02d}"
                                                        for i in range(10)]
    # Two figures per check, the primary's (b/x, then the pair a__b/z; b/y is NaN) first;
    # checks in name order until the cap; a check without thresholds gives none.
    checks = [k for k in keys if k.startswith("xai.check.")]
    assert checks[:4] == ["xai.check.check00.b.x", "xai.check.check00.a__b.z",
                          "xai.check.check01.b.x", "xai.check.check01.a__b.z"]
    assert len(checks) == MAX_HEADLINE_METRICS - 16
    assert not any("unjudged" in k for k in keys)


def test_primary_falls_back_to_the_first_method_that_ran():
    summary, importance, stability = _docs(features=3, checks=1, primary="c")  # c failed
    metrics = headline_metrics(summary, importance, stability)
    assert {k for k in metrics if ".importance." in k} == {"xai.a.importance.f00",
                                                          "xai.a.importance.f01",
                                                          "xai.a.importance.f02"}
    assert "xai.a.seconds" in metrics and "xai.governance.passed" not in metrics
    assert [k for k in metrics if k.startswith("xai.check.")] == [
        "xai.check.check00.a.x", "xai.check.check00.a__b.z"]
    del summary["primary_method"]
    assert headline_metrics(summary, importance, stability) == metrics


def test_feature_segments_follow_the_metric_name_rule():
    from mlflow_xai.metric_names import feature_metric_names

    names = ["a/b", "a_b", "x" * 300, "ok name"]
    summary = {"primary_method": "m", "data": {"rows_explained": 1, "feature_names": names},
               "methods": {"m": {"status": "ok", "seconds": 1.0}}}
    importance = {"m": {f: {"importance": 1.0 + i, "rank": 4 - i}
                        for i, f in enumerate(names)}}
    metrics = headline_metrics(summary, importance, {})
    segments = feature_metric_names(names)
    assert {k for k in metrics if ".importance." in k} == {
        f"xai.m.importance.{segments[f]}" for f in names}
    assert all(mlflow_refuses(k) is None for k in metrics)


def test_each_selector_gets_its_two_telling_figures():
    summary, importance, stability = _docs(features=3, checks=0)
    selection = {
        "lasso": {"selected": ["f00"], "n_selected": 1, "seconds": 0.5,
                  "stability": {"kuncheva": 0.75, "jaccard": 0.5},
                  "retrain": {"selected_score": 0.9, "random_score": 0.7, "gain": 0.2}},
        "mutual_info": {"selected": ["f00", "f01"], "seconds": 0.1},  # no bootstrap, no retrain
    }
    metrics = headline_metrics(summary, importance, stability, selection)
    assert [(k, v) for k, v in metrics.items() if k.startswith("xai.selection.")] == [
        ("xai.selection.lasso.kuncheva", 0.75), ("xai.selection.lasso.retrain_gain", 0.2),
        ("xai.selection.mutual_info.n_selected", 2.0)]
