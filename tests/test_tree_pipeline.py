"""tree_shap through scikit-learn Pipelines (attributions summed back to the raw columns), on
histogram gradient boosting, and on XGBoost with pandas categories. Synthetic data, models
trained here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mlflow_xai
from tests.conftest import SKLEARN_REQS

CATEGORICAL = ["workclass", "marital_status", "occupation"]
NUMERIC = ["age", "education_num", "hours_per_week", "capital_gain", "capital_loss", "fnlwgt"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One OpenMP thread: on a busy shared machine, thread pools (histogram boosting, XGBoost)
    spend seconds waiting for each other on these small data sets."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def adult_like() -> tuple[pd.DataFrame, np.ndarray]:
    """600 rows and 9 raw columns shaped like the adult census data: 3 string columns, 6
    numeric ones, and a label that depends on both kinds."""
    rng = np.random.default_rng(7)
    n = 600
    frame = pd.DataFrame({
        "age": rng.integers(18, 80, n),
        "workclass": rng.choice(["private", "self-emp", "gov", "never-worked"], n,
                                p=[0.6, 0.2, 0.15, 0.05]),
        "education_num": rng.integers(1, 17, n),
        "marital_status": rng.choice(["married", "single", "divorced"], n),
        "occupation": rng.choice(["tech", "sales", "craft", "admin", "service"], n),
        "hours_per_week": rng.normal(40, 10, n).round(1),
        "capital_gain": np.where(rng.random(n) < 0.1, rng.exponential(5000, n), 0.0),
        "capital_loss": np.where(rng.random(n) < 0.05, rng.exponential(1500, n), 0.0),
        "fnlwgt": rng.normal(190000, 50000, n).round(),
    })
    logit = (0.04 * (frame["age"] - 40) + 0.3 * (frame["education_num"] - 9)
             + 1.2 * (frame["marital_status"] == "married") + 0.6 * frame["occupation"].isin(
                 ["tech", "sales"]) + 0.0003 * frame["capital_gain"] - 1.0)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(int)
    return frame, y


def _one_hot_pipeline(estimator):
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    prep = ColumnTransformer([("cat", OneHotEncoder(sparse_output=False), CATEGORICAL)],
                             remainder="passthrough")
    return Pipeline([("prep", prep), ("model", estimator)])


@pytest.fixture(scope="module")
def gb_pipeline(adult_like):
    from sklearn.ensemble import GradientBoostingClassifier

    X, y = adult_like
    model = GradientBoostingClassifier(n_estimators=40, max_depth=3, random_state=0)
    return _one_hot_pipeline(model).fit(X, y)


def _raw_column(encoded: str) -> str:
    """'cat__workclass_gov' -> 'workclass', 'remainder__age' -> 'age' (names made here)."""
    name = encoded.split("__", 1)[1]
    return next((c for c in CATEGORICAL if name.startswith(c + "_")), name)


def test_one_hot_pipeline_sums_encoded_tree_shap_to_raw_columns(gb_pipeline, adult_like):
    import shap

    X, _ = adult_like
    background = X.iloc[:80]
    expl = mlflow_xai.explain(gb_pipeline, X, explainers=["tree_shap"], background=background,
                              checks=[])
    entry = expl.summary["methods"]["tree_shap"]
    assert entry["status"] == "ok" and entry["output_space"] == "probability"
    assert entry["efficiency_max_abs_gap"] < 1e-6
    attributions = expl.attributions["tree_shap"]
    assert list(attributions.columns) == list(X.columns) and len(attributions) == 600

    # The documented quantity, computed independently: shap on the encoded columns, summed
    # over each raw column's encoded columns.
    prep, model = gb_pipeline[:-1], gb_pipeline[-1]
    encoded_names = list(prep.get_feature_names_out())
    explainer = shap.TreeExplainer(model, data=prep.transform(background),
                                   feature_perturbation="interventional",
                                   model_output="probability")
    rows = X.loc[attributions.index]
    encoded = explainer.shap_values(prep.transform(rows), check_additivity=False)
    expected = pd.DataFrame(encoded, columns=encoded_names, index=rows.index).T.groupby(
        _raw_column).sum().T[list(X.columns)]
    np.testing.assert_allclose(attributions.to_numpy(), expected.to_numpy(), atol=1e-6)
    np.testing.assert_allclose(expl.base_values["tree_shap"],
                               np.ravel(explainer.expected_value)[0], atol=1e-9)

    # Efficiency against the pipeline itself, and what was done is on record.
    total = attributions.sum(axis=1) + expl.base_values["tree_shap"]
    np.testing.assert_allclose(total, gb_pipeline.predict_proba(rows)[:, 1], atol=1e-6)
    assert entry["pipeline"] is True and entry["encoded_features"] == len(encoded_names) == 18
    assert entry["grouped"] == {c: [n for n in encoded_names if _raw_column(n) == c]
                                for c in CATEGORICAL}


def test_one_to_one_transform_gives_the_raw_game(adult_like):
    """StandardScaler maps each raw column to one encoded column, so Tree SHAP on the scaled
    columns is the interventional Shapley value of the raw columns: exact_shap's."""
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = adult_like[0][NUMERIC].astype(float)
    y = 0.02 * X["age"] + 0.1 * X["education_num"] - 0.01 * X["hours_per_week"]
    pipe = make_pipeline(StandardScaler(), RandomForestRegressor(n_estimators=15, max_depth=6,
                                                                 random_state=0)).fit(X, y)
    expl = mlflow_xai.explain(pipe, X, explainers=["tree_shap", "exact_shap"], max_rows=25,
                              background=X.iloc[:30], checks=[])
    tree, exact = expl.attributions["tree_shap"], expl.attributions["exact_shap"]
    np.testing.assert_allclose(tree.to_numpy(), exact.to_numpy(), atol=1e-6)
    np.testing.assert_allclose(expl.base_values["tree_shap"], expl.base_values["exact_shap"],
                               atol=1e-6)
    entry = expl.summary["methods"]["tree_shap"]
    assert entry["efficiency_max_abs_gap"] < 1e-6 and entry["output_space"] == "raw"
    assert entry["encoded_features"] == len(NUMERIC) and entry["grouped"] == {}


@pytest.mark.parametrize("mixer", ["PCA", "PolynomialFeatures"])
def test_mixing_step_makes_tree_shap_decline_naming_the_step(mixer, adult_like):
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures

    X, y = adult_like[0][NUMERIC].astype(float), adult_like[1]
    step = PCA(n_components=3) if mixer == "PCA" else PolynomialFeatures(degree=2)
    pipe = make_pipeline(step, RandomForestClassifier(n_estimators=5, random_state=0)).fit(X, y)
    expl = mlflow_xai.explain(pipe, X, explainers=["tree_shap"], max_rows=10, checks=[])
    entry = expl.summary["methods"]["tree_shap"]
    assert entry["status"] == "skipped"
    assert f"'{mixer.lower()}' ({mixer})" in entry["reason"]
    assert "several input columns" in entry["reason"] and "kernel_shap" in entry["reason"]


def test_nested_branches_drop_and_selection_map_to_raw_columns(adult_like):
    """A ColumnTransformer with a nested Pipeline branch (imputer + one-hot with a dropped
    category), a scaled branch, an ordinal branch and remainder='drop', ending in a random
    forest: the dropped raw columns get 0 and efficiency holds."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    X, y = adult_like
    prep = ColumnTransformer([
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OneHotEncoder(drop="first", sparse_output=False)),
         ["workclass", "marital_status"]),
        ("ord", OrdinalEncoder(), ["occupation"]),
        ("num", StandardScaler(), ["age", "education_num", "capital_gain"]),
    ], remainder="drop")
    pipe = Pipeline([("prep", prep), ("forest", RandomForestClassifier(
        n_estimators=10, max_depth=5, random_state=0))]).fit(X, y)
    expl = mlflow_xai.explain(pipe, X, explainers=["tree_shap"], max_rows=60, checks=[])
    entry = expl.summary["methods"]["tree_shap"]
    assert entry["status"] == "ok" and entry["efficiency_max_abs_gap"] < 1e-6
    assert entry["encoded_features"] == 3 + 2 + 1 + 3
    assert set(entry["grouped"]) == {"workclass", "marital_status"}
    assert entry["dropped"] == ["hours_per_week", "capital_loss", "fnlwgt"]
    attributions = expl.attributions["tree_shap"]
    assert (attributions[entry["dropped"]] == 0).all().all()
    assert attributions[["age", "education_num", "marital_status"]].abs().sum().min() > 0


def test_logged_pipeline_explained_by_uri_uses_tree_shap(experiment, gb_pipeline, adult_like):
    import mlflow

    X, _ = adult_like
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(gb_pipeline, name="model", input_example=X.head(3),
                                        serialization_format="cloudpickle",
                                        pip_requirements=SKLEARN_REQS)
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    from mlflow_xai.model import resolve_model

    adapter = resolve_model(loaded)
    assert adapter.tree_kind == "sklearn" and type(adapter.raw).__name__ == "Pipeline"
    expl = mlflow_xai.explain(info.model_uri, X, explainers=["tree_shap"], max_rows=50,
                              background=X.iloc[:40], checks=[])
    entry = expl.summary["methods"]["tree_shap"]
    assert entry["status"] == "ok" and entry["pipeline"] is True
    assert entry["efficiency_max_abs_gap"] < 1e-6
    assert list(expl.attributions["tree_shap"].columns) == list(X.columns)


@pytest.fixture(scope="module")
def xgb_categorical(adult_like):
    import xgboost

    X, y = adult_like
    frame = X.assign(**{c: X[c].astype("category") for c in CATEGORICAL})
    model = xgboost.XGBClassifier(n_estimators=30, max_depth=3, tree_method="hist",
                                  enable_categorical=True, n_jobs=1).fit(frame, y)
    return model, frame


def test_xgboost_with_pandas_categories(xgb_categorical):
    model, frame = xgb_categorical
    expl = mlflow_xai.explain(model, frame, explainers=["tree_shap"], max_rows=200, checks=[])
    entry = expl.summary["methods"]["tree_shap"]
    assert entry["status"] == "ok" and entry["output_space"] == "margin"
    assert entry["efficiency_max_abs_gap"] < 1e-5
    attributions = expl.attributions["tree_shap"]
    assert list(attributions.columns) == list(frame.columns)
    assert attributions["marital_status"].abs().mean() > 0.05  # a categorical split was read

    # A native Booster predicts on the category columns too (model._booster_predict).
    from mlflow_xai.model import resolve_model

    adapter = resolve_model(model.get_booster())
    np.testing.assert_allclose(adapter.predict(frame.head(20)),
                               model.predict_proba(frame.head(20))[:, 1], atol=1e-6)


def test_xgboost_categories_explain_the_rows_given(xgb_categorical):
    model, frame = xgb_categorical
    expl = mlflow_xai.explain(model, frame, explainers=["tree_shap"], max_rows=100, checks=[])
    attributions = expl.attributions["tree_shap"]
    margin = model.predict(frame.loc[attributions.index], output_margin=True)
    total = attributions.sum(axis=1) + expl.base_values["tree_shap"]
    np.testing.assert_allclose(total, margin, atol=1e-5)


def test_hist_gradient_boosting_is_left_to_the_exact_black_box_methods(adult_like):
    """shap's values for HistGradientBoosting add up but are not the Shapley values (measured
    against exact enumeration), so tree_shap declines and the planner enumerates instead."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = adult_like[0][NUMERIC].astype(float), adult_like[1]
    model = HistGradientBoostingClassifier(max_iter=40, random_state=0).fit(X, y)
    expl = mlflow_xai.explain(model, X, explainers=["tree_shap"], max_rows=20, checks=[])
    entry = expl.summary["methods"]["tree_shap"]
    assert entry["status"] == "skipped" and "disagree with exact" in entry["reason"]
    auto = mlflow_xai.explain(model, X, explainers="auto", max_rows=20, checks=[], budget_s=20)
    assert [c["method"] for c in auto.summary["plan"]["chosen"]] == ["exact_shap"]


def test_forest_on_missing_values_declines_tree_shap(adult_like):
    from sklearn.ensemble import RandomForestClassifier

    X, y = adult_like[0][NUMERIC].astype(float), adult_like[1]
    X = X.copy()
    X.loc[X.index[::7], "age"] = np.nan
    model = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, y)
    expl = mlflow_xai.explain(model, X, explainers=["tree_shap", "kernel_shap"], max_rows=30,
                              checks=[])
    assert expl.summary["methods"]["tree_shap"]["status"] == "skipped"
    assert "missing values" in expl.summary["methods"]["tree_shap"]["reason"]
    assert expl.summary["methods"]["kernel_shap"]["status"] == "ok"


def test_multiclass_boosting_declines_with_a_reason(adult_like):
    from sklearn.ensemble import GradientBoostingClassifier

    X = adult_like[0][NUMERIC].astype(float)
    y = np.digitize(X["age"], [35, 55])  # three classes
    model = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(X, y)
    expl = mlflow_xai.explain(model, X, explainers=["tree_shap"], max_rows=10, checks=[])
    entry = expl.summary["methods"]["tree_shap"]
    assert entry["status"] == "skipped" and "3 classes" in entry["reason"]


def test_lightgbm_final_step_uses_native_contributions(adult_like):
    import lightgbm

    X, y = adult_like
    model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1, n_jobs=1)
    pipe = _one_hot_pipeline(model).fit(X, y)
    expl = mlflow_xai.explain(pipe, X, explainers=["tree_shap"], max_rows=80, checks=[])
    entry = expl.summary["methods"]["tree_shap"]
    assert entry["status"] == "ok" and entry["output_space"] == "margin"
    assert entry["efficiency_max_abs_gap"] < 1e-5 and entry["pipeline"] is True
    attributions = expl.attributions["tree_shap"]
    margin = pipe.predict(X.loc[attributions.index], raw_score=True)
    np.testing.assert_allclose(attributions.sum(axis=1) + expl.base_values["tree_shap"], margin,
                               atol=1e-5)
