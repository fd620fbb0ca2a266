"""flip_test and responsiveness: every figure against a by-hand numpy computation on models
whose answer is known (explicit terms, thresholds, immutable features), and each can fail."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlflow_xai_checks.recourse import (
    FlipPlan,
    clopper_pearson,
    flip_summary,
    flip_variants,
    make_decider,
    numeric_grid,
    reachable_mask,
    read_actionability,
    top_k_actionable,
)
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression

import mlflow_xai
from mlflow_xai.errors import ConfigError


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture(scope="module")
def lending():
    """sex (0/1), income and age columns; 300 rows."""
    rng = np.random.default_rng(3)
    n = 300
    return pd.DataFrame({"sex": rng.integers(0, 2, n).astype(float),
                         "income": rng.normal(50, 12, n).round(1),
                         "age": rng.integers(18, 80, n).astype(float)})


def _explain(model, X, checks, explainers=("exact_shap",), **kw):
    kw.setdefault("background_rows", 30)
    return mlflow_xai.explain(model, X, explainers=list(explainers), checks=checks, **kw)


# ------------------------------------------------------------------------------------------
# Core functions on arrays
# ------------------------------------------------------------------------------------------

def test_clopper_pearson_matches_scipy_and_the_closed_form_at_zero():
    alpha = 0.05
    for n in (1, 7, 300):
        low, high = clopper_pearson(0, n, 0.95)
        assert low == 0.0
        assert high == pytest.approx(1 - (alpha / 2) ** (1 / n), rel=1e-10)
        low, high = clopper_pearson(n, n, 0.95)
        assert high == 1.0 and low == pytest.approx((alpha / 2) ** (1 / n), rel=1e-10)
    for k, n in ((1, 10), (37, 300), (150, 300)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        low, high = clopper_pearson(k, n, 0.95)
        assert (low, high) == (pytest.approx(ci.low, abs=1e-10), pytest.approx(ci.high, abs=1e-10))
    assert np.isnan(clopper_pearson(0, 0)[0])


def test_flip_variants_set_every_other_value_and_missing_rows_to_every_value():
    X = np.array([[0.0, 1.0], [1.0, 2.0], [np.nan, 3.0], [2.0, 4.0]])
    plan = FlipPlan("values", np.array([0.0, 1.0, 2.0]), [0.0, 1.0, 2.0], [])
    Z, row, alt = flip_variants(X, 0, plan)
    # 3 rows with a value get the 2 other levels; the missing row gets all 3.
    assert row.tolist() == [0, 0, 1, 1, 2, 2, 2, 3, 3]
    assert Z[:, 0].tolist() == [1, 2, 0, 2, 0, 1, 2, 0, 1]
    assert np.array_equal(Z[:, 1], X[row, 1])
    # Decision: column 0 >= 1.5 (labels as bools). Original: F, F, (NaN -> False), T.
    decide = lambda Z: Z[:, 0] >= 1.5
    original = decide(X)
    changed = decide(Z) != original[row]
    s = flip_summary(changed, row, alt, len(X), 3, 0.95)
    # Every row flips: rows 0, 1 and the missing row at 2.0; row 3 at 0 or 1.
    assert s["flips"] == 4 and s["flip_rate"] == 1.0
    # Per level: set to 0 -> only row 3 of rows {1, 2, 3} changes; to 2 -> rows 0, 1, 2 of 3.
    assert s["per_alternative"].tolist() == [pytest.approx(1 / 3), pytest.approx(1 / 3), 1.0]
    shift = FlipPlan("shift", np.array([0.0, 2.0]), [0.0, 2.0], [0.5, -3.0])
    Z, row, alt = flip_variants(X, 0, shift)
    assert row.tolist() == [0, 0, 1, 1, 3, 3, 2, 2]
    assert Z[:, 0].tolist() == [0.5, -3.0, 1.5, -2.0, 2.5, -1.0, 0.0, 2.0]
    assert alt.tolist() == [0, 1, 0, 1, 0, 1, 2, 3]


def test_decisions_labels_thresholds_and_errors():
    proba = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5]])
    by_label = make_decider(proba, is_classifier=True, classes=["deny", "approve"],
                            threshold=None)
    assert by_label(proba).tolist() == ["deny", "approve", "deny"]
    assert by_label.text == "predicted class"
    by_p = make_decider(proba, is_classifier=True, classes=["deny", "approve"], threshold=0.5)
    assert by_p(proba).tolist() == [False, True, True] and by_p.text == "P(approve) >= 0.5"
    by_first = make_decider(proba, is_classifier=True, classes=["deny", "approve"],
                            threshold=0.6, positive_class="deny")
    assert by_first(proba).tolist() == [True, False, False]
    reg = make_decider(np.array([99.0, 100.0]), is_classifier=False, classes=None,
                       threshold=100)
    assert reg(np.array([99.0, 100.0, 101.0])).tolist() == [False, True, True]
    assert reg.text == "output >= 100"
    with pytest.raises(ConfigError, match="threshold="):
        make_decider(np.zeros(3), is_classifier=False, classes=None, threshold=None)
    with pytest.raises(ConfigError, match=r"positive_class 'maybe'.*\['deny', 'approve'\]"):
        make_decider(proba, is_classifier=True, classes=["deny", "approve"], threshold=0.5,
                     positive_class="maybe")
    with pytest.raises(ConfigError, match="positive_class=<column index 0..1>"):
        make_decider(proba, is_classifier=False, classes=None, threshold=0.5)


def test_reachable_sets_follow_bounds_monotone_and_own_value():
    observed = np.arange(0.0, 100.0)  # 0..99
    grid = numeric_grid(observed, 5, low=None, high=80.0)
    # Quantiles (observed values, inverted_cdf) at 0, .25, .5, .75, 1 -> 0, 24, 49, 74, 99;
    # plus the bound 80; 99 is above it.
    assert grid.tolist() == [0.0, 24.0, 49.0, 74.0, 80.0]
    assert numeric_grid(observed, 5, low=30.0).tolist() == [30.0, 49.0, 74.0, 99.0]
    x = np.array([24.0, 50.0, np.nan])
    up = reachable_mask(x, grid, +1)
    assert up.tolist() == [[False, False, True, True, True], [False, False, False, True, True],
                           [True] * 5]
    down = reachable_mask(x, grid, -1)
    assert down[1].tolist() == [True, True, True, False, False]
    free = reachable_mask(x, grid, 0)
    assert free[0].tolist() == [True, False, True, True, True]


def test_actionability_errors_name_the_feature():
    names = ["age", "income", "city"]
    ok = read_actionability({"immutable": ["age"], "monotone": {"income": -1},
                             "bounds": {"income": [None, 9]}}, names, {2})
    assert ok.immutable == {0} and ok.monotone == {1: -1} and ok.bounds == {1: (None, 9.0)}
    bad = [({"immutable": ["agee"]}, r"unknown feature\(s\) \['agee'\].*\['age', 'income'"),
           ({"monotone": {"income": 2}}, r"monotone\['income'\] must be \+1.*got 2"),
           ({"monotone": {"city": 1}}, r"monotone\['city'\].*categorical"),
           ({"bounds": {"income": [5, 1]}}, r"bounds\['income'\]: low 5 is above high 1"),
           ({"bounds": {"income": [5]}}, r"bounds\['income'\] must be \[low, high\]"),
           ({"bounds": {"city": [0, 1]}}, r"bounds\['city'\].*categorical")]
    for params, message in bad:
        full = {"immutable": [], "monotone": {}, "bounds": {}, **params}
        with pytest.raises(ConfigError, match=message):
            read_actionability(full, names, {2})


def test_top_k_actionable_against_a_loop():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(200, 5))
    values[:, 4] = 0.0  # a feature the model ignores is never a reason
    responsive = rng.random((200, 5)) < 0.6
    shares, counts = top_k_actionable(values, responsive, 3)
    expect_shares = np.zeros(3)
    expect_counts = np.zeros(5, dtype=int)
    for i in range(200):
        order = sorted(range(5), key=lambda j: -abs(values[i, j]))
        for k in range(1, 4):
            expect_shares[k - 1] += all(responsive[i, j] or values[i, j] == 0
                                        for j in order[:k]) / 200
        for j in order[:3]:
            expect_counts[j] += (not responsive[i, j]) and values[i, j] != 0
    assert np.allclose(shares, expect_shares)
    assert counts.tolist() == expect_counts.tolist()
    assert counts[4] == 0


# ------------------------------------------------------------------------------------------
# flip_test end to end
# ------------------------------------------------------------------------------------------

def _score(X: np.ndarray, sex_weight: float) -> np.ndarray:
    return sigmoid(0.15 * (X[:, 1] - 50) + sex_weight * X[:, 0] - 0.6)


@pytest.mark.parametrize("sex_weight", [1.2, 0.0])
def test_flip_rate_is_the_share_of_decisions_that_depend_on_sex(lending, sex_weight):
    model = lambda X: _score(X, sex_weight)
    expl = _explain(model, lending, {"flip_test": {"features": ["sex"], "threshold": 0.5}})
    entry = expl.checks["flip_test"]
    assert entry["status"] == "ok", entry
    X = lending.to_numpy()
    as_0, as_1 = X.copy(), X.copy()
    as_0[:, 0], as_1[:, 0] = 0.0, 1.0
    depends = (_score(as_0, sex_weight) >= 0.5) != (_score(as_1, sex_weight) >= 0.5)
    n = len(X)
    got = entry["details"]["features"]["sex"]
    assert got["flip_rate"] == depends.mean() == entry["figures"]["sex/flip_rate"]
    assert got["flips"] == depends.sum() and got["rows"] == n and got["kind"] == "values"
    assert entry["details"]["decision"] == "output >= 0.5"
    # One alternative per row (the other of 0/1) plus the original decisions.
    assert entry["model_evals"] == 2 * n
    ci = binomtest(int(depends.sum()), n).proportion_ci(0.95, method="exact")
    assert got["ci_low"] == pytest.approx(ci.low, abs=1e-9)
    assert got["ci_high"] == pytest.approx(ci.high, abs=1e-9)
    # Per alternative: rows that are 0 and set to 1 (and back).
    by_value = {a["value"]: a["flip_rate"] for a in got["alternatives"]}
    assert by_value[1.0] == pytest.approx(depends[X[:, 0] == 0].mean())
    assert by_value[0.0] == pytest.approx(depends[X[:, 0] == 1].mean())
    if sex_weight:
        assert 0.1 < got["flip_rate"] < 0.6
    else:
        assert got["flip_rate"] == 0.0 and got["ci_low"] == 0.0
        assert got["ci_high"] == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)


def test_flip_test_of_a_classifier_by_predicted_class(lending):
    from sklearn.linear_model import LogisticRegression

    X = lending.to_numpy()
    clf = LogisticRegression().fit(X, (X[:, 1] > 50).astype(int))
    clf.coef_ = np.array([[-1.5, 0.2, 0.01]])  # an explicit term on sex
    clf.intercept_ = np.array([-9.503])  # no row exactly at p = 0.5
    expl = _explain(clf, X, {"flip_test": {"features": ["x0"]}}, explainers=["exact_shap"])
    entry = expl.checks["flip_test"]
    flipped = X.copy()
    flipped[:, 0] = 1 - flipped[:, 0]
    by_hand = (sigmoid(X @ clf.coef_[0] - 9.503) >= 0.5) != (
        sigmoid(flipped @ clf.coef_[0] - 9.503) >= 0.5)
    assert entry["details"]["decision"] == "predicted class"
    assert entry["figures"]["x0/flip_rate"] == by_hand.mean() > 0.05


def test_categorical_sex_through_a_pipeline_matches_flipping_the_dataframe():
    from mlflow_xai.datasets import adult_like, adult_like_pipeline

    X, y = adult_like(400, seed=1)
    # A label with a sex term, so that the model learns one.
    y = ((y == 1) | ((X["sex"] == "Male") & (X["hours_per_week"] > 38))).astype(int)
    model = adult_like_pipeline(X, y, n_estimators=30)
    expl = mlflow_xai.explain(model, X, explainers=["tree_shap"], background_rows=50,
                              checks={"flip_test": {"features": ["sex"]}})
    entry = expl.checks["flip_test"]
    assert entry["status"] == "ok", entry
    other = X.copy()
    other["sex"] = np.where(X["sex"] == "Male", "Female", "Male")
    changed = model.predict(X) != model.predict(other)
    got = entry["details"]["features"]["sex"]
    assert got["kind"] == "categories"
    assert got["flip_rate"] == changed.mean() > 0.05
    by_value = {a["value"]: a["flip_rate"] for a in got["alternatives"]}
    assert set(by_value) == {"Female", "Male"}
    assert by_value["Male"] == pytest.approx(changed[X["sex"] == "Female"].mean())
    assert by_value["Female"] == pytest.approx(changed[X["sex"] == "Male"].mean())


def test_thresholded_regressor_with_a_numeric_shift_and_the_verdict(lending, tmp_path):
    frame = lending.rename(columns={"sex": "sex/flag"})

    def premium(X: np.ndarray) -> np.ndarray:  # a regressor: a premium in dollars
        return 80 + 0.6 * X[:, 1] + 0.25 * X[:, 2] + 2 * X[:, 0]

    params = {"features": ["income", "sex/flag"], "shift": {"income": [-5, 5]},
              "threshold": 120, "max_flip_rate": 0.15}
    expl = _explain(premium, frame, {"flip_test": params}, output_dir=tmp_path)
    entry = expl.checks["flip_test"]
    X = frame.to_numpy()
    decision = premium(X) >= 120
    changes = []
    for s in (-5, 5):
        Z = X.copy()
        Z[:, 1] += s
        changes.append((premium(Z) >= 120) != decision)
    flips = changes[0] | changes[1]
    got = entry["details"]["features"]["income"]
    assert got["kind"] == "shift" and entry["details"]["decision"] == "output >= 120"
    assert got["flip_rate"] == flips.mean()
    assert [a["flip_rate"] for a in got["alternatives"]] == [changes[0].mean(),
                                                            changes[1].mean()]
    sex_flip = (premium(np.column_stack([1 - X[:, 0], X[:, 1:]])) >= 120) != decision
    # The segment of 'sex/flag' in metric names; details keep the raw name.
    assert entry["figures"]["sex_flag/flip_rate"] == sex_flip.mean()
    assert entry["details"]["features"]["sex/flag"]["flip_rate"] == sex_flip.mean()
    assert entry["verdicts"]["income/flip_rate"] == ("fail" if flips.mean() > 0.15 else "pass")
    assert entry["verdicts"]["sex_flag/flip_rate"] == ("fail" if sex_flip.mean() > 0.15
                                                       else "pass")
    assert {"fail", "pass"} == set(entry["verdicts"].values())  # the data gives one of each
    stored = json.loads((tmp_path / "stability.json").read_text())["flip_test"]
    assert stored["details"]["features"]["income"]["flips"] == int(flips.sum())


def test_flip_test_reasons_and_errors(lending):
    model = lambda X: _score(X, 1.0)
    skipped = _explain(model, lending, {"flip_test": {}}).checks["flip_test"]
    assert skipped["status"] == "skipped"
    assert 'checks={"flip_test": {"features": ["sex"]}}' in skipped["reason"]
    no_threshold = _explain(model, lending, {"flip_test": {"features": ["sex"]}})
    assert no_threshold.checks["flip_test"]["status"] == "skipped"
    assert "threshold=" in no_threshold.checks["flip_test"]["reason"]
    with pytest.raises(ConfigError, match=r"unknown feature\(s\) \['gender'\].*'sex'"):
        _explain(model, lending, {"flip_test": {"features": ["gender"], "threshold": 0.5}})
    with pytest.raises(ConfigError, match=r"'income' is numeric.*shift=\{'income': amount\}"):
        _explain(model, lending, {"flip_test": {"features": ["income"], "threshold": 0.5}})
    with pytest.raises(ConfigError, match="max_flip_rate must be a number in"):
        _explain(model, lending, {"flip_test": {"features": ["sex"], "threshold": 0.5,
                                                "max_flip_rate": 2}})


# ------------------------------------------------------------------------------------------
# responsiveness end to end
# ------------------------------------------------------------------------------------------

W = {"age": 0.12, "income": 0.05, "hours": 0.02}


def _linear(X: np.ndarray) -> np.ndarray:
    return W["age"] * (X[:, 0] - 45) + W["income"] * (X[:, 1] - 50) + W["hours"] * (X[:, 2] - 40)


def test_immutable_feature_ranked_first_by_shap_gets_no_responsiveness():
    """The seed's test (METHODS.md #7): age drives the model, exact SHAP ranks it first for
    most rows, and it is immutable: R = 0, and its reasons are not actionable."""
    rng = np.random.default_rng(7)
    n = 250
    frame = pd.DataFrame({"age": rng.integers(18, 80, n).astype(float),
                          "income": rng.normal(50, 15, n).round(1),
                          "hours": rng.normal(40, 8, n).round()})
    background = frame.iloc[:40]
    expl = mlflow_xai.explain(
        _linear, frame, background=background, explainers=["exact_shap"],
        checks={"responsiveness": {"threshold": 0.0, "immutable": ["age"], "n_joint": 50,
                                   "top_k": 2, "min_actionable_top_k_share": 0.9}})
    entry = expl.checks["responsiveness"]
    assert entry["status"] == "ok", entry
    X = frame.to_numpy()
    # Exact SHAP of a linear model: w_j (x_j - mean over the background).
    phi = (X - background.to_numpy().mean(axis=0)) * np.array(list(W.values()))
    assert np.allclose(expl.attributions["exact_shap"], phi, atol=1e-9)
    adverse = _linear(X) < 0
    details = entry["details"]
    assert details["adverse_rows"] == adverse.sum() > 50 and details["target"] is True
    assert details["features"]["age"] == {"mean_responsiveness": 0.0, "responsive_share": 0.0,
                                          "actionable": False, "reachable_points": 0}
    # By hand: R of income / hours on the grid of their observed values.
    observed = np.concatenate([X, background.to_numpy()])
    R = np.zeros((n, 3))
    for j in (1, 2):
        grid = np.unique(np.quantile(observed[:, j], np.linspace(0, 1, 20),
                                     method="inverted_cdf"))
        for i in np.flatnonzero(adverse):
            points = grid[grid != X[i, j]]
            Z = np.repeat(X[i:i + 1], len(points), axis=0)
            Z[:, j] = points
            R[i, j] = (_linear(Z) >= 0).mean()
    for j, name in ((1, "income"), (2, "hours")):
        assert details["features"][name]["mean_responsiveness"] == pytest.approx(
            R[adverse, j].mean(), abs=1e-12)
        assert details["features"][name]["responsive_share"] == pytest.approx(
            (R[adverse, j] > 0).mean(), abs=1e-12)
    top1 = np.abs(phi[adverse]).argmax(axis=1)
    top1_ok = (top1 != 0) & (R[adverse][np.arange(adverse.sum()), top1] > 0)
    age_first = (top1 == 0).mean()
    assert age_first > 0.6  # SHAP ranks the immutable feature first for most adverse rows
    shares = details["methods"]["exact_shap"]["actionable_top_k_share"]
    assert shares["1"] == pytest.approx(top1_ok.mean(), abs=1e-12)
    assert entry["figures"]["exact_shap/actionable_top_1_share"] == shares["1"]
    top2 = np.argsort(-np.abs(phi[adverse]), axis=1, kind="stable")[:, :2]
    age_in_top2 = (top2 == 0).any(axis=1)
    assert details["methods"]["exact_shap"]["non_actionable_reasons"]["age"] == \
        age_in_top2.sum()
    assert entry["verdicts"]["exact_shap/actionable_top_2_share"] == "fail"


def test_mutable_feature_responsiveness_by_hand_and_the_monotone_direction():
    rng = np.random.default_rng(11)
    n = 200
    frame = pd.DataFrame({"income": rng.uniform(10, 100, n).round(1),
                          "age": rng.integers(18, 80, n).astype(float)})
    model = lambda X: X[:, 0]
    common = {"threshold": 50.0, "immutable": ["age"], "n_joint": 20,
              "bounds": {"income": [None, 80]}, "max_fixed_rate": 0.05}
    background = frame.iloc[:20]
    up = mlflow_xai.explain(model, frame, explainers=["exact_shap"], background=background,
                            checks={"responsiveness": {**common, "monotone": {"income": 1}}})
    entry = up.checks["responsiveness"]
    x = frame["income"].to_numpy()
    adverse = x < 50
    # The grid: quantiles of the observed values (explained rows and background), plus 80.
    observed = np.concatenate([x, x[:20]])
    grid = np.unique(np.append(np.quantile(observed, np.linspace(0, 1, 20),
                                           method="inverted_cdf"), 80.0))
    grid = grid[grid <= 80]
    R = np.array([(grid[grid > v] >= 50).mean() for v in x[adverse]])
    got = entry["details"]["features"]["income"]
    assert got["mean_responsiveness"] == pytest.approx(R.mean(), abs=1e-12)
    assert got["responsive_share"] == 1.0 and got["reachable_points"] == len(grid)
    assert entry["details"]["fixed_rows"] == 0 and entry["verdicts"]["fixed_rate"] == "pass"
    # Rows + the adverse rows' reachable grid points; no joint actions (every row has R > 0).
    assert entry["model_evals"] == n + sum((grid > v).sum() for v in x[adverse])
    # May only decrease: never reaches income >= 50, and nothing else can move.
    down = mlflow_xai.explain(model, frame, explainers=["exact_shap"], background=background,
                              checks={"responsiveness": {**common, "monotone": {"income": -1}}})
    entry = down.checks["responsiveness"]
    assert entry["details"]["features"]["income"]["mean_responsiveness"] == 0.0
    assert entry["details"]["features"]["income"]["actionable"] is True
    assert entry["figures"]["fixed_rate"] == 1.0 == entry["details"]["fixed_rate"]
    assert entry["details"]["fixed_rows"] == adverse.sum()
    assert entry["verdicts"]["fixed_rate"] == "fail"


def test_fixed_predictions_of_a_classifier_and_joint_rescues():
    from sklearn.base import BaseEstimator, ClassifierMixin

    class Lender(ClassifierMixin, BaseEstimator):
        """approve iff income >= 50 and age >= 30 (or a >= 1 and b >= 1 jointly)."""

        classes_ = np.array(["deny", "approve"])

        def fit(self, X, y=None):
            return self

        def predict_proba(self, X):
            X = np.asarray(X, dtype=float)
            ok = ((X[:, 0] >= 50) & (X[:, 1] >= 30)) | ((X[:, 2] >= 1) & (X[:, 3] >= 1))
            p = np.where(ok, 0.9, 0.1)
            return np.column_stack([1 - p, p])

        def predict(self, X):
            return self.classes_[self.predict_proba(X).argmax(axis=1)]

    rng = np.random.default_rng(5)
    n = 200
    frame = pd.DataFrame({"income": rng.uniform(0, 100, n), "age": rng.uniform(18, 60, n),
                          "a": rng.uniform(0, 2, n), "b": rng.uniform(0, 2, n)})
    # Rows that only a joint change of a and b rescues: a, b < 1, income < 50.
    joint_only = np.array([[10.0, 25.0, 0.2, 0.3], [20.0, 20.0, 0.5, 0.1]])
    frame.iloc[:2] = joint_only
    model = Lender().fit(frame)
    expl = mlflow_xai.explain(
        model, frame, explainers=["exact_shap"], background_rows=20,
        checks={"responsiveness": {"immutable": ["age"], "n_joint": 400,
                                   "max_fixed_rate": 0.05, "target": "approve"}})
    entry = expl.checks["responsiveness"]
    X = frame.to_numpy()
    decision = model.predict(X)
    adverse = decision != "approve"
    details = entry["details"]
    assert details["target"] == "approve" and details["decision"] == "predicted class"
    # Every adverse row can be rescued: income alone when age >= 30; else b (or a) alone when
    # the other is >= 1; the two joint-only rows (every single-feature R is 0) only by a joint
    # action moving both a and b, which the 400 random joint actions find.
    assert adverse[:2].all()
    assert details["fixed_rows"] == 0, details["fixed_row_indices"]
    assert details["adverse_rows"] == adverse.sum()
    bounded = mlflow_xai.explain(
        model, frame, explainers=["exact_shap"], background_rows=20,
        checks={"responsiveness": {"immutable": ["age"], "n_joint": 400,
                                   "bounds": {"a": [None, 0.9]}, "max_fixed_rate": 0.05,
                                   "target": "approve"}})
    entry = bounded.checks["responsiveness"]
    # With a capped below 1, a row is fixed iff it is adverse, age < 30 and a < 1.
    fixed = adverse & (X[:, 1] < 30) & (X[:, 2] < 1)
    assert fixed[:2].all() and fixed.sum() > 5
    assert entry["details"]["fixed_rows"] == fixed.sum()
    assert entry["figures"]["fixed_rate"] == pytest.approx(fixed.sum() / adverse.sum())
    assert entry["verdicts"]["fixed_rate"] == "fail"
    assert set(entry["details"]["fixed_row_indices"]) == set(np.flatnonzero(fixed).tolist())
    with pytest.raises(ConfigError, match=r"target 'yes' is not one of.*\['deny', 'approve'\]"):
        mlflow_xai.explain(model, frame, explainers=["exact_shap"], background_rows=20,
                           checks={"responsiveness": {"target": "yes"}})


def test_responsiveness_parameter_errors_and_a_regressor_without_threshold(lending):
    model = lambda X: X[:, 1]
    got = _explain(model, lending, {"responsiveness": {}}).checks["responsiveness"]
    assert got["status"] == "skipped" and "threshold=" in got["reason"]
    for params, message in (
            ({"immutable": ["salary"]}, r"unknown feature\(s\) \['salary'\].*'income'"),
            ({"monotone": {"income": 0}}, r"monotone\['income'\] must be \+1"),
            ({"bounds": {"income": [90, 10]}}, r"low 90 is above high 10"),
            ({"n_grid": 1}, r"n_grid must be an integer in \[2, 1000\]"),
            ({"target": "yes"}, r"pass target=True or target=False")):
        with pytest.raises(ConfigError, match=message):
            _explain(model, lending, {"responsiveness": {"threshold": 50.0, **params}})


def test_what_a_submitter_could_choose_to_make_nothing_flip_is_refused():
    """A threshold no probability crosses, a shift of 0, a shift of a 0/1 column, and an
    unnamed favourable decision among labels that do not say which is favourable."""
    proba = np.array([[0.3, 0.7], [0.6, 0.4]])
    for threshold in (0.0, 1.0, 1.5, -1.0):
        with pytest.raises(ConfigError, match=r"not inside \(0, 1\)"):
            make_decider(proba, is_classifier=True, classes=[0, 1], threshold=threshold)
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"income": rng.normal(50, 10, 200), "sex": rng.integers(0, 2, 200) * 1.0})
    model = LogisticRegression().fit(X, (X["income"] + 5 * X["sex"] > 52).astype(int))
    for shift, words in (({"income": 0.0}, "non-zero"), ({"income": [1.0] * 101}, "1 to 100"),
                         ({"sex": 1.0}, "remove it from shift")):
        expl = mlflow_xai.explain(model, X, explainers=["exact_shap"], progress=False,
                                  strict=False, checks={"flip_test": {"features": list(shift),
                                                                      "shift": shift}})
        assert expl.checks["flip_test"]["status"] == "failed"
        assert words in expl.checks["flip_test"]["error"]
    labels = np.where(X["income"] > 50, "approve", "decline")
    named = LogisticRegression().fit(X, labels)
    expl = mlflow_xai.explain(named, X, explainers=["exact_shap"], progress=False,
                              strict=False, checks={"responsiveness": {"immutable": ["sex"]}})
    assert "which decision is favourable" in expl.checks["responsiveness"]["error"]


def test_a_one_valued_attribute_flips_no_row_and_says_so():
    rng = np.random.default_rng(2)
    X = pd.DataFrame({"income": rng.normal(50, 10, 100), "sex": np.zeros(100)})
    model = LogisticRegression().fit(X.assign(sex=rng.integers(0, 2, 100)),
                                     (X["income"] > 50).astype(int))
    expl = mlflow_xai.explain(model, X, explainers=["exact_shap"], progress=False,
                              checks={"flip_test": {"features": ["sex"]}})
    entry = expl.checks["flip_test"]["details"]
    assert entry["threshold"] is None and entry["positive_class"] is None
    assert entry["features"]["sex"]["rows_with_alternative"] == 0
    assert entry["features"]["sex"]["flip_rate"] == 0.0


def test_model_type_classifier_makes_a_plain_function_a_classifier():
    """A plain function returning probabilities is a classifier when the caller says so
    (mlflow.models.evaluate(model_type="classifier") does): its decision is the predicted
    class, so flip_test runs without a threshold."""
    rng = np.random.default_rng(4)
    X = pd.DataFrame({"income": rng.normal(0, 1, 200), "sex": rng.integers(0, 2, 200) * 1.0})

    def proba(Z):
        Z = np.asarray(Z, dtype=float)
        p = 1 / (1 + np.exp(-(Z[:, 0] + 2 * Z[:, 1] - 1)))
        return np.column_stack([1 - p, p])

    expl = mlflow_xai.explain(proba, X, explainers=["exact_shap"], progress=False,
                              model_type="classifier", checks={"flip_test": {"features": ["sex"]}})
    entry = expl.checks["flip_test"]
    assert entry["status"] == "ok" and entry["details"]["decision"] == "predicted class"
    A = X.to_numpy()
    flips = np.mean(proba(A).argmax(1) != proba(np.column_stack([A[:, 0], 1 - A[:, 1]])).argmax(1))
    assert entry["details"]["features"]["sex"]["flip_rate"] == pytest.approx(flips)
    plain = mlflow_xai.explain(proba, X, explainers=["exact_shap"], progress=False,
                               checks={"flip_test": {"features": ["sex"]}})
    assert "needs threshold" in plain.checks["flip_test"]["reason"]


def test_a_model_that_returns_nan_on_flipped_rows_fails_the_check_naming_it():
    """NaN only on the variants: the check fails (strict=False keeps the run), and the error
    names the check, not the last explainer that ran."""
    rng = np.random.default_rng(6)
    X = pd.DataFrame({"income": rng.normal(size=100), "x": rng.uniform(-1, 1, 100)})

    def model(Z):
        Z = np.asarray(Z, dtype=float)
        p = 1 / (1 + np.exp(-Z[:, 0] - Z[:, 1]))
        p = np.where(Z[:, 1] > 1.5, np.nan, p)
        return np.column_stack([1 - p, p])

    expl = mlflow_xai.explain(model, X, explainers=["exact_shap"], model_type="classifier",
                              strict=False, progress=False,
                              checks={"flip_test": {"features": ["x"], "shift": {"x": 1.0}}})
    entry = expl.checks["flip_test"]
    assert entry["status"] == "failed" and "during check 'flip_test'" in entry["error"]
    assert expl.summary["status"] == "ok"
