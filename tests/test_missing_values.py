"""Missing values are kept when the model accepts them (issue 12, item 3).

The rows with missing values are explained as they are (``dropna`` would change which
population is explained); models that refuse them get an error that names the columns and the
model's own refusal; infinite values and missing targets stay refused.
"""

from __future__ import annotations

import itertools
import warnings
from math import factorial

import numpy as np
import pandas as pd
import pytest
from mlflow_xai_checks._stats import background_mean, background_scale

import mlflow_xai
from mlflow_xai.data import prepare_data
from mlflow_xai.errors import InvalidInputError
from mlflow_xai.missing import accepts_missing
from mlflow_xai.model import ModelAdapter, resolve_model

KERNEL = {"kernel_shap": {"n_samples": 64}}
MISSING_COLUMNS = ["mean radius", "mean texture", "worst area"]


def _with_nan(X: pd.DataFrame, columns: list[str], share: float = 0.1, seed: int = 0
              ) -> pd.DataFrame:
    """``X`` with about ``share`` of the values of ``columns`` set to NaN."""
    rng = np.random.default_rng(seed)
    out = X.copy()
    for column in columns:
        out.loc[rng.random(len(out)) < share, column] = np.nan
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_openmp_thread():
    """HistGradientBoosting fits and predicts with OpenMP threads, which spin against each other
    on busy shared cores (measured: a 0.2 s fit took 29 s at load 15 on 2 cores)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        yield


@pytest.fixture(scope="module")
def cancer_nan(cancer) -> tuple[pd.DataFrame, pd.Series]:
    X, y = cancer
    return _with_nan(X, MISSING_COLUMNS), y


@pytest.fixture(scope="module")
def hgb(cancer_nan):
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = cancer_nan
    return HistGradientBoostingClassifier(max_iter=30, random_state=0).fit(X, y)


class Recorder:
    """A scikit-learn style classifier around ``inner`` that records every input it is given
    (what mlflow-xai decoded for it)."""

    def __init__(self, inner, columns: list[str]) -> None:
        self.inner = inner
        self.feature_names_in_ = np.array(columns, dtype=object)
        self.classes_ = inner.classes_
        self.seen: list[pd.DataFrame] = []

    def fit(self, X, y):  # resolve_model takes objects with fit and predict as estimators
        return self

    def predict(self, X):
        return self.predict_proba(X).argmax(axis=1)

    def predict_proba(self, X):
        self.seen.append(X.copy())
        return self.inner.predict_proba(X)


# (a) a model with native missing-value support, on breast_cancer with ~10% NaN in 3 columns


def test_hist_gradient_boosting_explains_rows_with_nan_as_they_are(hgb, cancer_nan):
    X, _ = cancer_nan
    data = X.iloc[:120]
    expected = {c: int(data[c].isna().sum()) for c in MISSING_COLUMNS}
    assert all(8 <= n <= 18 for n in expected.values())          # ~10% of 120 rows

    expl = mlflow_xai.explain(hgb, data, explainers=KERNEL, background_rows=20, checks=[])

    facts = expl.summary["data"]
    assert facts["rows_explained"] == len(data) == 120           # no row was dropped
    assert len(expl.attributions["kernel_shap"]) == 120
    assert facts["missing_values"]["columns"] == expected
    assert facts["missing_values"]["rows"] == int(data[MISSING_COLUMNS].isna().any(axis=1).sum())
    assert facts["missing_values"]["accepted"] is True
    assert "HistGradientBoostingClassifier" in facts["missing_values"]["how"]
    assert facts["missing_values"]["how"].startswith("known:")
    assert expl.summary["methods"]["kernel_shap"]["efficiency_max_abs_gap"] < 1e-6
    values = expl.attributions["kernel_shap"].to_numpy()
    assert np.isfinite(values).all()
    # The rows with NaN are explained with the model's output on those very rows.
    f_x = hgb.predict_proba(data)[:, 1]
    nan_rows = data[MISSING_COLUMNS].isna().any(axis=1).to_numpy()
    base = expl.base_values["kernel_shap"].to_numpy()
    np.testing.assert_allclose(values[nan_rows].sum(axis=1) + base[nan_rows], f_x[nan_rows],
                               atol=1e-9)


def test_default_checks_run_on_data_with_nan(cancer_nan):
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = cancer_nan
    columns = MISSING_COLUMNS + ["mean smoothness", "worst texture", "worst symmetry"]
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(X[columns], y)
    data = X[columns].iloc[:60]
    expl = mlflow_xai.explain(model, data, background_rows=15,
                              explainers={"kernel_shap": {"n_samples": 62}, "exact_shap": {}})
    checks = expl.summary["checks"]
    assert set(checks) == {"agreement", "bootstrap_importance", "completeness",
                           "deletion_insertion", "faithfulness_correlation", "infidelity",
                           "rank_uncertainty"}
    assert all(c["status"] == "ok" for c in checks.values()), checks
    for name in checks:
        figures = expl.checks[name]["figures"]
        assert figures and all(v is not None and np.isfinite(v) for v in figures.values()), name
    # Exhaustive kernel SHAP (62 >= 2**6 - 2) and exact SHAP agree on the rows with NaN too.
    assert expl.checks["agreement"]["figures"]["kernel_shap__exact_shap/rank_correlation"] == \
        pytest.approx(1.0)
    assert expl.checks["completeness"]["figures"]["exact_shap/max_gap"] < 1e-9


def test_removal_value_of_a_feature_ignores_missing_background_values():
    background = np.array([[1.0, np.nan, np.nan], [3.0, 4.0, np.nan], [5.0, 8.0, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                            # no "Mean of empty slice"
        mean = background_mean(background)
        scale = background_scale(background)
    np.testing.assert_array_equal(mean[:2], [3.0, 6.0])
    assert np.isnan(mean[2])                                      # all missing: stays missing
    np.testing.assert_allclose(scale, [np.sqrt(8 / 3), 2.0, 1.0])


# (b) and (c): accepted by probing, or refused with the model's own reason


def test_pipeline_that_imputes_is_accepted_by_one_small_probe(cancer_nan):
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = cancer_nan
    columns = MISSING_COLUMNS + ["mean smoothness", "worst symmetry"]
    pipe = make_pipeline(SimpleImputer(), StandardScaler(),
                         LogisticRegression(max_iter=2000)).fit(X[columns], y)
    recorder = Recorder(pipe, columns)
    adapter = resolve_model(recorder)
    accepted, how = accepts_missing(adapter, X[columns], MISSING_COLUMNS)
    assert accepted
    assert how.startswith("probed:") and "'mean radius', 'mean texture', 'worst area'" in how
    assert len(recorder.seen) == 1 and len(recorder.seen[0]) == 3   # one call, three rows
    assert recorder.seen[0][MISSING_COLUMNS].isna().all().all()

    expl = mlflow_xai.explain(pipe, X[columns].iloc[:80], explainers=KERNEL, background_rows=10,
                              checks=[])
    missing = expl.summary["data"]["missing_values"]
    assert missing["how"].startswith("probed:") and "SimpleImputer" in missing["how"]
    assert missing["columns"] == {c: int(X[c].iloc[:80].isna().sum()) for c in MISSING_COLUMNS}
    assert expl.summary["methods"]["kernel_shap"]["efficiency_max_abs_gap"] < 1e-6


def test_a_model_that_refuses_nan_gets_an_error_naming_columns_and_refusal(cancer_nan, cancer,
                                                                           recwarn, capsys):
    from sklearn.linear_model import LogisticRegression

    X, y = cancer_nan
    clean, _ = cancer
    columns = MISSING_COLUMNS + ["mean smoothness"]
    model = LogisticRegression(max_iter=5000).fit(clean[columns] / clean[columns].std(), y)
    with pytest.raises(InvalidInputError) as err:
        mlflow_xai.explain(model, X[columns].iloc[:100], explainers=KERNEL)
    message = str(err.value)
    counts = {c: int(X[c].iloc[:100].isna().sum()) for c in MISSING_COLUMNS}
    for column, n in counts.items():
        assert f"'{column}': {n} NaN" in message
    assert "the model's predict raised ValueError on rows with NaN in 'mean radius', " \
           "'mean texture', 'worst area' (Input X contains NaN)" in message
    assert "dropna" in message and "HistGradientBoosting" in message
    # The probe's failure is ours to report: no warning or traceback reached the user.
    assert not [w for w in recwarn.list if "NaN" in str(w.message)]
    assert capsys.readouterr().err == ""


def test_a_model_whose_outputs_turn_nan_is_refused(cancer_nan):
    X, _ = cancer_nan
    data = X[MISSING_COLUMNS].iloc[:50].to_numpy()
    with pytest.raises(InvalidInputError, match=r"returned NaN or infinite outputs for rows "
                                                r"with NaN in 'x0', 'x1', 'x2'"):
        mlflow_xai.explain(lambda a: a.sum(axis=1), data, explainers=KERNEL)


def test_nan_in_the_background_only_is_checked_too(cancer_nan, cancer, hgb):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clean, y = cancer
    X, _ = cancer_nan
    background = X.iloc[200:230]
    n_bg = {c: int(background[c].isna().sum()) for c in MISSING_COLUMNS}
    expl = mlflow_xai.explain(hgb, clean.iloc[:40], background=background, explainers=KERNEL,
                              checks=[])
    missing = expl.summary["data"]["missing_values"]
    assert missing["columns"] == {} and missing["rows"] == 0
    assert missing["background_columns"] == {c: n for c, n in n_bg.items() if n}
    assert expl.summary["methods"]["kernel_shap"]["efficiency_max_abs_gap"] < 1e-6

    columns = MISSING_COLUMNS + ["mean smoothness"]
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(clean[columns], y)
    with pytest.raises(InvalidInputError, match=r"background has missing values .*'mean "
                                                r"radius': \d+ NaN.*raised ValueError"):
        mlflow_xai.explain(model, clean[columns].iloc[:40], background=background[columns],
                           explainers=KERNEL)


def test_infinite_values_and_missing_targets_stay_refused(hgb, cancer_nan):
    X, y = cancer_nan
    bad = X.iloc[:50].copy()
    bad.iloc[[3, 4], 5] = np.inf
    with pytest.raises(InvalidInputError, match=r"infinite values in 1 column\(s\): "
                                                r"'mean compactness': 2 inf \(and missing"):
        mlflow_xai.explain(hgb, bad, explainers=KERNEL)
    targets = y.iloc[:50].astype(float).copy()
    targets.iloc[7] = np.nan
    with pytest.raises(InvalidInputError, match="targets has 1 missing"):
        mlflow_xai.explain(hgb, X.iloc[:50], targets=targets, explainers=KERNEL)


# (d) a categorical string column with None values


def test_missing_category_is_given_back_to_the_model_as_missing():
    from sklearn.compose import make_column_transformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(3)
    n = 160
    city = rng.choice(np.array(["amsterdam", "berlin", "cairo"], dtype=object), size=n)
    city[rng.random(n) < 0.2] = None
    X = pd.DataFrame({"city": pd.Series(city, dtype=object), "income": rng.normal(50, 10, n),
                      "debt": rng.normal(10, 3, n)})
    y = ((X["income"] - 2 * X["debt"] > 30) | (X["city"] == "cairo")).astype(int)
    pipe = make_pipeline(
        make_column_transformer(
            (make_pipeline(SimpleImputer(missing_values=None, strategy="constant",
                                         fill_value="unknown"),
                           OneHotEncoder(handle_unknown="ignore")), ["city"]),
            remainder="passthrough"),
        LogisticRegression(max_iter=2000)).fit(X, y)
    model = Recorder(pipe, list(X.columns))
    data = X.iloc[:40]
    expl = mlflow_xai.explain(model, data, explainers=KERNEL, background_rows=20, checks=[])

    missing = expl.summary["data"]["missing_values"]
    assert missing["columns"] == {"city": int(data["city"].isna().sum())}
    assert missing["how"].startswith("probed:")
    assert expl.summary["data"]["encoded_columns"] == ["city"]
    # The call on the explained rows themselves: None exactly where the data has None.
    given = next(f for f in model.seen if len(f) == len(data)
                 and f["income"].to_numpy().tolist() == data["income"].tolist())
    assert [v is None for v in given["city"]] == data["city"].isna().tolist()
    # Over every call (probe, kernel SHAP coalitions): only known cities or None, and None
    # really reached the model (the old encoder clipped it to 'amsterdam', code 0).
    seen = pd.concat(model.seen)["city"]
    assert set(seen.dropna()) <= {"amsterdam", "berlin", "cairo"}
    assert sum(v is None for v in seen) > 100
    assert not any(isinstance(v, float) for v in seen)            # None, never NaN, here
    assert expl.summary["methods"]["kernel_shap"]["efficiency_max_abs_gap"] < 1e-6
    np.testing.assert_allclose(
        expl.attributions["kernel_shap"].sum(axis=1) + expl.base_values["kernel_shap"],
        pipe.predict_proba(data)[:, 1], atol=1e-9)


def test_encoder_round_trip_keeps_missing_values_missing():
    frame = pd.DataFrame({
        "colour": pd.Series(["red", None, "blue", "red"], dtype=object),
        "size": pd.Series(["s", "m", pd.NA, "m"], dtype="string"),
        "count": pd.Series([1, None, 3, 4], dtype="Int64"),
        "flag": pd.Series([True, None, False, True], dtype="boolean"),
        "x": [0.5, np.nan, 1.5, 2.0],
    })
    adapter = ModelAdapter(predict=lambda rows: np.zeros(len(rows)), kind="pyfunc")
    prepared = prepare_data(frame, adapter, background_rows=4)
    X = prepared.X
    assert np.isnan(X[1]).sum() == 4 and np.isnan(X[2]).sum() == 1
    decoded = prepared.encoder.decode(X)
    assert decoded["colour"].tolist() == ["red", None, "blue", "red"]
    assert decoded["size"].isna().tolist() == [False, False, True, False]
    assert decoded["count"].tolist()[1] is pd.NA and decoded["count"].dtype == "Int64"
    assert decoded["flag"].isna().tolist() == [False, True, False, False]
    assert np.isnan(decoded["x"].iloc[1])
    assert prepared.facts["missing_values"]["columns"] == {"colour": 1, "size": 1, "count": 1,
                                                           "flag": 1, "x": 1}


# (e) exact values for a model that treats NaN explicitly


def _nan_aware(a: np.ndarray) -> np.ndarray:
    """A missing x0 counts as 2, a missing x2 as -1; x1 * x3 interacts."""
    x = np.asarray(a, dtype=float)
    x0 = np.where(np.isnan(x[:, 0]), 2.0, x[:, 0])
    x2 = np.where(np.isnan(x[:, 2]), -1.0, x[:, 2])
    return 1.5 * x0 - x2 + x[:, 1] * x[:, 3] + 0.5 * x0 * x2


def _brute_force_shapley(f, x: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Interventional Shapley values of one row by enumerating every coalition: v(S) is the
    mean of f over the background with the features of S taken from x (NaN and all)."""
    M = len(x)

    def value(S: tuple[int, ...]) -> float:
        rows = background.copy()
        rows[:, list(S)] = x[list(S)]
        return float(f(rows).mean())

    phi = np.zeros(M)
    for j in range(M):
        others = [k for k in range(M) if k != j]
        for size in range(M):
            weight = factorial(size) * factorial(M - size - 1) / factorial(M)
            for S in itertools.combinations(others, size):
                phi[j] += weight * (value(tuple(sorted((*S, j)))) - value(S))
    return phi


def test_kernel_and_exact_shap_equal_brute_force_shapley_with_nan():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(12, 4))
    for j in (0, 2):                              # the features the model reads NaN in
        X[rng.random(len(X)) < 0.3, j] = np.nan
    X[0] = [np.nan, 0.3, np.nan, -1.2]           # both NaN-treated features missing
    background = rng.normal(size=(6, 4))
    background[[1, 4], 0] = np.nan
    background[2, 2] = np.nan

    expl = mlflow_xai.explain(_nan_aware, X, background=background, checks=[],
                              explainers={"kernel_shap": {"n_samples": 14}, "exact_shap": {}})
    assert expl.summary["data"]["missing_values"]["how"].startswith("probed:")
    assert expl.summary["methods"]["kernel_shap"]["exact"] is True   # all 2**4 - 2 coalitions
    kernel = expl.attributions["kernel_shap"].to_numpy()
    exact = expl.attributions["exact_shap"].to_numpy()
    brute = np.stack([_brute_force_shapley(_nan_aware, x, background) for x in X])
    assert np.isfinite(brute).all()
    np.testing.assert_allclose(exact, brute, atol=1e-10)
    np.testing.assert_allclose(kernel, brute, atol=1e-10)
    # Row 0 in closed form: its missing x0 and x2 are read as 2 and -1 (so are the missing
    # background values); phi_0 = the linear term's share + half of each path of the x0*x2 term.
    b0 = np.where(np.isnan(background[:, 0]), 2.0, background[:, 0])
    b2 = np.where(np.isnan(background[:, 2]), -1.0, background[:, 2])
    product = 0.5 * np.array([(2.0 * b2).mean() - (b0 * b2).mean(),     # add x0 to {}
                              2.0 * -1.0 - (b0 * -1.0).mean()])        # add x0 to {x2}
    assert kernel[0, 0] == pytest.approx(1.5 * (2.0 - b0.mean()) + product.mean(), abs=1e-12)
    base = expl.base_values["exact_shap"].to_numpy()
    np.testing.assert_allclose(exact.sum(axis=1) + base, _nan_aware(X), atol=1e-12)


# Selectors


def test_selectors_that_need_complete_data_are_refused_by_name(cancer_nan):
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y = cancer_nan
    data = X[MISSING_COLUMNS + ["mean smoothness"]].iloc[:150]
    model = HistGradientBoostingClassifier(max_iter=20, random_state=0).fit(data, y.iloc[:150])
    with pytest.raises(InvalidInputError) as err:
        mlflow_xai.explain(model, data, targets=y.iloc[:150], explainers=[], checks=[],
                           selectors=["mutual_info", "permutation"])
    message = str(err.value)
    assert "['mutual_info']" in message
    for column in MISSING_COLUMNS:
        assert f"'{column}': {int(data[column].isna().sum())}" in message
    assert "'permutation'" in message                 # named among those that can

    expl = mlflow_xai.explain(model, data, targets=y.iloc[:150], explainers=[], checks=[],
                              selectors={"permutation": {"n_repeats": 2}},
                              selection_bootstrap=0)
    assert expl.summary["selectors"]["permutation"]["status"] == "ok"
    assert np.isfinite(expl.selection["permutation"].scores.to_numpy()).all()
