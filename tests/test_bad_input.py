"""Bad input gets a clear, actionable error that names the problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mlflow_xai
from mlflow_xai.errors import ConfigError, InvalidInputError, ModelPredictError

FAST = {"kernel_shap": {"n_samples": 32}}


def test_nan_and_inf_are_named_by_column(logreg, cancer_small):
    X, _ = cancer_small
    bad = X.copy()
    bad.iloc[3, 0] = np.nan
    bad.iloc[[4, 5], 2] = np.inf
    with pytest.raises(InvalidInputError) as err:
        mlflow_xai.explain(logreg, bad, explainers=FAST)
    message = str(err.value)
    assert "'mean radius': 1 NaN" in message and "'mean smoothness': 2 inf" in message
    assert "dropna" in message


def test_nan_in_background_is_named(logreg, cancer_small):
    X, _ = cancer_small
    bg = X.iloc[:10].copy()
    bg.iloc[0, 1] = np.nan
    with pytest.raises(InvalidInputError, match="background .*'mean texture': 1 NaN"):
        mlflow_xai.explain(logreg, X, background=bg, explainers=FAST)


def test_non_numeric_columns_the_model_cannot_take_are_listed(logreg, cancer_small):
    X, _ = cancer_small
    bad = X.copy()
    bad["mean radius"] = bad["mean radius"].map(lambda v: f"{v:.1f} mm")
    with pytest.raises(InvalidInputError, match=r"\['mean radius'\] are not numeric"):
        mlflow_xai.explain(logreg, bad, explainers=FAST)


def test_datetime_columns_are_refused_with_advice():
    frame = pd.DataFrame({"when": pd.date_range("2024-01-01", periods=5), "x": range(5)})
    with pytest.raises(InvalidInputError, match="dates/times.*days since"):
        mlflow_xai.explain(lambda a: a[:, 1], frame, explainers=FAST)


def test_empty_data(logreg, cancer_small):
    X, _ = cancer_small
    with pytest.raises(InvalidInputError, match="no rows"):
        mlflow_xai.explain(logreg, X.iloc[:0], explainers=FAST)
    with pytest.raises(InvalidInputError, match="no rows"):
        mlflow_xai.explain(lambda a: a.sum(1), np.empty((0, 3)), explainers=FAST)


def test_one_row_needs_a_background(logreg, cancer_small):
    X, _ = cancer_small
    with pytest.raises(InvalidInputError, match="1 row.*background="):
        mlflow_xai.explain(logreg, X.iloc[:1], explainers=FAST)
    expl = mlflow_xai.explain(logreg, X.iloc[:1], background=X.iloc[10:40], explainers=FAST)
    assert expl.attributions["kernel_shap"].shape == (1, X.shape[1])


def test_columns_that_do_not_match_the_model(logreg, cancer_small):
    X, _ = cancer_small
    with pytest.raises(InvalidInputError, match=r"missing column\(s\) \['mean texture'\]"):
        mlflow_xai.explain(logreg, X.drop(columns=["mean texture"]), explainers=FAST)
    with pytest.raises(InvalidInputError, match=r"unexpected column\(s\) \['id'\]"):
        mlflow_xai.explain(logreg, X.assign(id=1), explainers=FAST)


def test_targets_of_the_wrong_length(logreg, cancer_small):
    X, y = cancer_small
    with pytest.raises(InvalidInputError, match="targets has 119 value.*data has 120 row"):
        mlflow_xai.explain(logreg, X, targets=y.iloc[:-1], explainers=FAST)
    with pytest.raises(InvalidInputError, match="targets='label' is not a column"):
        mlflow_xai.explain(logreg, X, targets="label", explainers=FAST)


def test_a_target_column_is_split_off(logreg, cancer_small):
    X, y = cancer_small
    expl = mlflow_xai.explain(logreg, X.assign(label=y), targets="label",
                              explainers=["permutation_importance"])
    assert expl.summary["methods"]["permutation_importance"]["scoring"] == "targets"
    assert "label" not in expl.importance.index


def test_a_model_whose_predict_raises(cancer_small):
    X, _ = cancer_small

    def broken(a):
        raise ValueError("weights not loaded")

    with pytest.raises(ModelPredictError, match="ValueError: weights not loaded.*8 columns"):
        mlflow_xai.explain(broken, X.to_numpy(), explainers=FAST)


def test_a_model_returning_the_wrong_number_of_rows(cancer_small):
    X, _ = cancer_small
    with pytest.raises(ModelPredictError, match="returned 1 predictions for 120 rows"):
        mlflow_xai.explain(lambda a: np.array([1.0]), X.to_numpy(), explainers=FAST)


def test_unknown_method_lists_the_valid_ones(logreg, cancer_small):
    X, _ = cancer_small
    with pytest.raises(ConfigError) as err:
        mlflow_xai.explain(logreg, X, explainers=["kernel_shapp"])
    assert "Did you mean 'kernel_shap'?" in str(err.value)
    assert "permutation_shap" in str(err.value) and "tree_shap" in str(err.value)


def test_unknown_method_parameter_lists_the_valid_ones(logreg, cancer_small):
    X, _ = cancer_small
    with pytest.raises(ConfigError, match=r"'nsamples' \(did you mean 'n_samples'\?\)"):
        mlflow_xai.explain(logreg, X, explainers={"kernel_shap": {"nsamples": 10}})


def test_bad_option_values(logreg, cancer_small):
    X, _ = cancer_small
    with pytest.raises(ConfigError, match="max_rows must be a positive integer"):
        mlflow_xai.explain(logreg, X, max_rows=0)
    with pytest.raises(mlflow_xai.errors.XaiError, match="neither a class label"):
        mlflow_xai.explain(logreg, X, explainers=FAST, output="malignant")


def test_more_rows_than_max_rows_are_sampled_and_recorded(logreg, cancer_small):
    X, _ = cancer_small
    expl = mlflow_xai.explain(logreg, X, explainers=FAST, max_rows=17, seed=5)
    facts = expl.summary["data"]
    assert facts["rows_total"] == 120 and facts["rows_explained"] == 17
    assert facts["rows_sampled"] is True
    rng = np.random.default_rng(5)
    expected = X.index[np.sort(rng.choice(120, size=17, replace=False))]
    assert list(expl.attributions["kernel_shap"].index) == list(expected)


def test_unusable_model_type(cancer_small):
    X, _ = cancer_small
    with pytest.raises(ConfigError, match="cannot explain a model of type int"):
        mlflow_xai.explain(42, X)
    with pytest.raises(InvalidInputError, match="1-D"):
        mlflow_xai.explain(lambda a: a.sum(1), np.arange(5.0))
