"""Names that never collide or overflow, and NaN is never an ``ok`` result (issue 11, 3 and 4).

Each test reproduces one bug of the code before the fix, on small synthetic data.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import mlflow_xai
from mlflow_xai.errors import ConfigError, InvalidInputError, ModelPredictError
from tests.conftest import mlflow_refuses

EXACT = {"exact_shap": {}}
KERNEL = {"kernel_shap": {"n_samples": 64}}


def _frame(columns: list, rows: int = 30, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(rows, len(columns))), columns=columns)


def _linear(X) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    return X @ np.arange(1.0, X.shape[1] + 1)


def _nan_off_the_data(data: pd.DataFrame):
    """A model that is finite on the data's own rows and NaN on every other (perturbed) row."""
    seen = data.to_numpy()

    def model(Z) -> np.ndarray:
        Z = np.asarray(Z, dtype=float)
        out = _linear(Z)
        out[~(Z[:, None, :] == seen[None]).all(axis=2).any(axis=1)] = np.nan
        return out

    return model




# -- 1. a feature name of 240+ characters --------------------------------------------------

def test_a_very_long_feature_name_is_logged_under_a_short_hashed_metric(experiment, tmp_path):
    import mlflow

    long_name = "customer lifetime value " * 11  # 264 characters
    X = _frame([long_name, "b", "c"])
    expl = mlflow_xai.explain(_linear, X, explainers=EXACT, checks=[], output_dir=tmp_path)
    run_id = expl.log()  # before the fix: MLflow refused the 270-character metric name

    names = json.loads((tmp_path / "metric_names.json").read_text())
    segment = names[long_name]
    assert len(segment) < 250 - len("xai/exact_shap/importance/")
    assert segment.startswith("customer lifetime value") and "--" in segment
    logged = mlflow.tracking.MlflowClient().get_run(run_id).data.metrics
    assert f"xai.exact_shap.importance.{segment}" in logged
    assert logged["xai.exact_shap.importance.b"] == pytest.approx(
        float(expl.importance.at["b", "exact_shap"]))


# -- 2. features whose safe forms collide ----------------------------------------------------

def test_colliding_feature_names_get_distinct_metrics_and_a_recorded_mapping(tmp_path):
    from mlflow_xai.artifacts import metrics_for
    from mlflow_xai.provenance import sha256_bytes

    X = _frame(["a/b", "a_b", "c"])
    expl = mlflow_xai.explain(_linear, X, explainers=EXACT, checks=[], output_dir=tmp_path)
    names = json.loads((tmp_path / "metric_names.json").read_text())
    assert names["c"] == "c" and names["a/b"] != names["a_b"]
    assert names["a/b"].startswith("a_b--") and names["a_b"].startswith("a_b--")
    metrics = metrics_for(expl)
    for feature in ("a/b", "a_b", "c"):  # before the fix one value replaced the other
        assert metrics[f"xai.exact_shap.importance.{names[feature]}"] == pytest.approx(
            float(expl.importance.at[feature, "exact_shap"]))
    assert all(mlflow_refuses(name) is None for name in metrics)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["artifacts"]["sha256"]["metric_names.json"] == sha256_bytes(
        (tmp_path / "metric_names.json").read_bytes())


def test_policies_name_a_features_importance_by_its_metric_segment():
    from mlflow_xai.governance import evaluate_policy
    from mlflow_xai.metric_names import feature_metric_names

    X = _frame(["a/b", "a_b", "c"])
    expl = mlflow_xai.explain(_linear, X, explainers=EXACT, checks=[])
    segment = feature_metric_names(["a/b", "a_b", "c"])["a_b"]
    rule = {"name": "a_b matters", "metric": f"exact_shap/importance/{segment}", "min": 0.0}
    outcome = evaluate_policy({"rules": [rule]}, expl)
    assert outcome["verdict"] == "passed"
    assert outcome["rules"][0]["value"] == pytest.approx(
        float(expl.importance.at["a_b", "exact_shap"]))
    raw = {**rule, "metric": "exact_shap/importance/a_b"}  # the raw name is not the metric
    with pytest.raises(ConfigError, match=f"exact_shap/importance/{segment}"):
        evaluate_policy({"rules": [raw]}, expl)


def test_the_mapping_is_unique_valid_and_deterministic():
    from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH

    from mlflow_xai.metric_names import (
        FEATURE_SEGMENT_BUDGET,
        MAX_METRIC_NAME_LENGTH,
        feature_metric_names,
    )

    assert MAX_METRIC_NAME_LENGTH == MAX_ENTITY_KEY_LENGTH
    tricky = ["a/b", "a_b", "a:b", ".", "..", "", " ", "x" * 400, "x" * 401, "température",
              "a_b--0123abcd", "ok name", "y" * FEATURE_SEGMENT_BUDGET, 7]
    mapping = feature_metric_names(tricky)
    assert mapping == feature_metric_names(list(reversed(tricky)))  # order does not matter
    assert len(set(mapping.values())) == len(tricky)
    assert mapping["ok name"] == "ok name" and mapping["température"] == "température"
    assert mapping["y" * FEATURE_SEGMENT_BUDGET] == "y" * FEATURE_SEGMENT_BUDGET
    assert mapping["7"] == "7"
    method = "m" * 64  # the longest method name the budget leaves room for
    for segment in mapping.values():
        assert len(segment) <= FEATURE_SEGMENT_BUDGET
        assert mlflow_refuses(f"xai/{method}/importance/{segment}") is None, segment


def test_metric_names_mlflow_would_refuse_are_dropped_not_logged():
    from mlflow_xai.artifacts import metrics_from_documents

    summary = {"data": {"rows_explained": 3, "feature_names": ["a"]},
               "methods": {"good": {"status": "ok", "seconds": 1, "model_evals": 2},
                           "bad?name": {"status": "ok", "seconds": 1, "model_evals": 2}}}
    stability = {"agreement": {"figures": {"good__x/rank_correlation": 0.9,
                                           "odd:figure*": 0.5, "../escape": 0.1}}}
    metrics = metrics_from_documents(summary, {"good": {"a": {"importance": 1.0, "rank": 1}}},
                                     stability, {"sel": {"selected": ["a"], "seconds": 1.0}})
    assert metrics["xai/good/importance/a"] == 1.0
    assert "xai/check/agreement/good__x/rank_correlation" in metrics
    assert not any("bad?name" in k or "odd" in k or "escape" in k for k in metrics)
    assert all(mlflow_refuses(name) is None for name in metrics)


# -- 3. features named like the reserved parquet columns -------------------------------------

def _two_class(X) -> np.ndarray:
    p = 1 / (1 + np.exp(-_linear(X) / 4))
    return np.c_[1 - p, p]


def test_features_named_like_old_reserved_columns_keep_their_attributions(tmp_path):
    from mlflow_xai.artifacts import BASE_VALUE_COLUMN, OUTPUT_COLUMN

    X = _frame(["_base_value", "_output", "c"])
    expl = mlflow_xai.explain(_two_class, X, explainers=EXACT, checks=[], output_dir=tmp_path,
                              model_type="classifier")
    table = pd.read_parquet(tmp_path / "attributions" / "exact_shap.parquet")
    assert (BASE_VALUE_COLUMN, OUTPUT_COLUMN) == ("xai.base_value", "xai.output")
    assert list(table.columns) == ["_base_value", "_output", "c", "xai.base_value",
                                   "xai.output"]
    # before the fix the base value and the class label overwrote these two features
    np.testing.assert_allclose(table[["_base_value", "_output", "c"]].to_numpy(),
                               expl.attributions["exact_shap"].to_numpy())
    np.testing.assert_allclose(table[["_base_value", "_output", "c"]].sum(axis=1)
                               + table["xai.base_value"], _two_class(X)[:, 1], atol=1e-9)


def test_features_named_like_old_reserved_columns_survive_the_distributed_table():
    from mlflow_xai.distributed import BatchExplainer, reduce_frames

    X = _frame(["_base_value", "_output", "c"])
    worker = BatchExplainer(_two_class, explainers=EXACT, background=X.iloc[:10],
                            model_type="classifier")
    out = worker(X.assign(row_id=np.arange(len(X))))
    assert {"exact_shap/_base_value", "exact_shap/_output", "exact_shap/xai.base_value",
            "xai.output"} <= set(out.columns)
    importance, rows, _ = reduce_frames([out.iloc[:12], out.iloc[12:]])
    assert rows == len(X)
    # before the fix '_base_value' was taken for the base value column and left out
    assert sorted(importance.index) == ["_base_value", "_output", "c"]
    np.testing.assert_allclose(importance["exact_shap"].to_numpy(),
                               out[[f"exact_shap/{f}" for f in importance.index]]
                               .abs().mean().to_numpy())


@pytest.mark.parametrize("name", ["xai.base_value", "xai.output", "xai.anything"])
def test_a_feature_named_with_the_reserved_prefix_is_refused(name):
    with pytest.raises(InvalidInputError, match=rf"\['{name}'\].*'xai\.'.*Rename"):
        mlflow_xai.explain(_linear, _frame([name, "b"]), explainers=EXACT, checks=[])


# -- 4. duplicate column names ---------------------------------------------------------------

@pytest.mark.parametrize("columns, shown", [([0, "0", "c"], "'0' (2 columns: 0, '0')"),
                                            (["a", "a", "c"], "'a' (2 columns: 'a', 'a')")])
def test_duplicate_column_names_are_refused_by_name(columns, shown):
    with pytest.raises(InvalidInputError) as err:  # before: TypeError: int() argument ...
        mlflow_xai.explain(_linear, _frame(columns), explainers=EXACT, checks=[])
    assert shown in str(err.value) and "rename" in str(err.value)


# -- 5. a model that returns NaN only on perturbed rows --------------------------------------

def test_nan_outputs_on_perturbed_rows_fail_the_method_not_ok():
    X = _frame(list("abc"))
    expl = mlflow_xai.explain(_nan_off_the_data(X), X, explainers=KERNEL, checks=[],
                              strict=False)
    entry = expl.summary["methods"]["kernel_shap"]
    assert expl.summary["status"] == "failed" and entry["status"] == "failed"
    assert "NaN or infinite outputs for" in entry["error"] and " of 5400 rows" in entry["error"]
    assert "kernel_shap" not in expl.attributions


def test_nan_outputs_on_perturbed_rows_raise_with_strict():
    X = _frame(list("abc"))
    with pytest.raises(ModelPredictError, match=r"NaN or infinite outputs for \d+ of \d+ rows"):
        mlflow_xai.explain(_nan_off_the_data(X), X, explainers=KERNEL, checks=[])


def test_nan_outputs_under_strict_name_the_method():
    X = _frame(list("abc"))
    with pytest.raises(ModelPredictError, match="kernel_shap"):
        mlflow_xai.explain(_nan_off_the_data(X), X, explainers=KERNEL, checks=[])


def test_inf_outputs_on_the_data_itself_are_counted():
    X = _frame(list("abc"))

    def model(Z):
        out = _linear(Z)
        out[:2] = np.inf
        return out

    with pytest.raises(ModelPredictError, match="for 2 of 30 rows of the data itself"):
        mlflow_xai.explain(model, X, explainers=KERNEL, checks=[])


# -- 6. NaN targets --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["array", "column", "inf", "labels"])
def test_nan_targets_are_refused(kind):
    X = _frame(list("abc"))
    y = _linear(X)
    if kind == "inf":
        y[[1, 2]] = np.inf
    else:
        y[4] = np.nan
    targets = y
    if kind == "column":
        X, targets = X.assign(label=y), "label"
    elif kind == "labels":
        targets = np.array(["yes", None, "no"] * 10, dtype=object)
    with pytest.raises(InvalidInputError) as err:  # before: every importance NaN, status ok
        mlflow_xai.explain(_linear, X, targets=targets,
                           explainers={"permutation_importance": {"n_repeats": 2}}, checks=[])
    message = str(err.value)
    counted = "2 infinite" if kind == "inf" else \
        ("10 missing" if kind == "labels" else "1 missing")
    assert counted in message and "in 30 row(s)" in message and "impute" in message


# -- 7. lime with NaN outputs and output_dir -------------------------------------------------

def test_lime_with_nan_outputs_leaves_a_failed_summary_and_error_txt(tmp_path):
    X = _frame(list("abc"))
    expl = mlflow_xai.explain(_nan_off_the_data(X), X, explainers={"lime": {"n_samples": 200}},
                              checks=[], strict=False, output_dir=tmp_path, max_rows=5)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" == expl.summary["status"]
    assert summary["methods"]["lime"]["status"] == "failed"
    error = (tmp_path / "error.txt").read_text()
    assert "explainer 'lime' failed" in error and "NaN or infinite outputs" in error
