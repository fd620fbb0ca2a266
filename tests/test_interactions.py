"""Pairwise Shapley interactions: shapley_interactions (Faith-SHAP of order 2, any model) and
tree_interactions (k-SII of order 2 from the trees), against definitions enumerated here, against
shapiq's ExactComputer and shap, and their properties (efficiency, symmetry, rows adding up to
the Shapley values, additive models without pair terms). Synthetic data, models trained here."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest

from mlflow_xai.base import ExplainTask
from mlflow_xai.model import resolve_model
from mlflow_xai.plugins import get_registry
from mlflow_xai.testing import exact_shapley


def _cls(name: str) -> type:
    return get_registry().get(name).cls


# --- references, by enumeration of every coalition ----------------------------------------------


def _game(f, X: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every coalition (2**d, d) and v[r, S] = mean_b f(x_r on S, b elsewhere)."""
    n, d = X.shape
    masks = np.array(list(itertools.product([False, True], repeat=d)))
    values = np.zeros((n, len(masks)))
    for s, mask in enumerate(masks):
        mixed = np.where(mask[None, None, :], X[:, None, :], background[None, :, :])
        values[:, s] = f(mixed.reshape(-1, d)).reshape(n, len(background)).mean(axis=1)
    return masks, values


def _fsii_reference(masks: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Faith-SHAP of order 2 by its definition: the main effects and pair terms E minimising
    sum over proper coalitions of kernel(S) (v(S) - v(0) - sum_{T in S, |T| <= 2} E_T)^2 under
    v(N) - v(0) = sum E (and the fit equal to v(0) at the empty set), solved through the KKT
    system. Returns (rows, d + d(d-1)/2): E_i, then E_ij for i < j in lexicographic order."""
    d = masks.shape[1]
    sizes = masks.sum(axis=1)
    pairs = list(itertools.combinations(range(d), 2))
    Z = np.column_stack([masks[:, i] for i in range(d)]
                        + [masks[:, i] & masks[:, j] for i, j in pairs]).astype(float)
    proper = (sizes > 0) & (sizes < d)
    weight = np.array([(d - 1) / (math.comb(d, s) * s * (d - s)) if 0 < s < d else 0.0
                       for s in sizes])
    Zp, Wp = Z[proper], weight[proper]
    p = Z.shape[1]
    kkt = np.zeros((p + 1, p + 1))
    kkt[:p, :p] = 2 * Zp.T @ (Wp[:, None] * Zp)
    kkt[:p, p] = kkt[p, :p] = 1.0
    empty, full = np.flatnonzero(sizes == 0)[0], np.flatnonzero(sizes == d)[0]
    out = []
    for v in values:
        y = v[proper] - v[empty]
        rhs = np.concatenate([2 * Zp.T @ (Wp * y), [v[full] - v[empty]]])
        out.append(np.linalg.solve(kkt, rhs)[:p])
    return np.array(out)


def _fsii_matrix(E: np.ndarray, d: int) -> np.ndarray:
    """The documented layout: main effects on the diagonal, half of each pair term per cell."""
    M = np.zeros((len(E), d, d))
    M[:, np.arange(d), np.arange(d)] = E[:, :d]
    for k, (i, j) in enumerate(itertools.combinations(range(d), 2)):
        M[:, i, j] = M[:, j, i] = 0.5 * E[:, d + k]
    return M


def _ksii_reference(masks: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapley values and the k-SII (order 2) matrix in shap's layout by their definitions:
    SII_ij = sum_S |S|!(d-|S|-2)!/(d-1)! [v(S+ij) - v(S+i) - v(S+j) + v(S)], off-diagonal
    cells SII_ij / 2, diagonal phi_i - sum_{j != i} SII_ij / 2."""
    n = len(values)
    d = masks.shape[1]
    index = {tuple(m): s for s, m in enumerate(masks)}

    def col(mask: tuple) -> np.ndarray:
        return values[:, index[mask]]

    phi, sii = np.zeros((n, d)), np.zeros((n, d, d))
    for mask in index:
        s = sum(mask)
        for i in range(d):
            if mask[i]:
                continue
            with_i = mask[:i] + (True,) + mask[i + 1:]
            weight = math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d)
            phi[:, i] += weight * (col(with_i) - col(mask))
            for j in range(i + 1, d):
                if mask[j]:
                    continue
                with_j = mask[:j] + (True,) + mask[j + 1:]
                with_ij = with_i[:j] + (True,) + with_i[j + 1:]
                w2 = math.factorial(s) * math.factorial(d - s - 2) / math.factorial(d - 1)
                delta = col(with_ij) - col(with_i) - col(with_j) + col(mask)
                sii[:, i, j] += w2 * delta
                sii[:, j, i] += w2 * delta
    M = 0.5 * sii
    M[:, np.arange(d), np.arange(d)] = phi - M.sum(axis=2)
    return phi, M


def _shapiq_matrix(f, x: np.ndarray, background: np.ndarray, index: str) -> np.ndarray:
    """shapiq's ExactComputer on the same game, laid out like the explainers' matrices."""
    from shapiq import ExactComputer

    d = len(x)

    def game(coalitions: np.ndarray) -> np.ndarray:
        return np.array([f(np.where(c.astype(bool), x, background)).mean()
                         for c in coalitions])

    result = ExactComputer(game, n_players=d)(index, order=2)
    M = np.zeros((d, d))
    for i in range(d):
        M[i, i] = result[(i,)]
        for j in range(i + 1, d):
            M[i, j] = M[j, i] = 0.5 * result[(i, j)]
    return M


# --- shapley_interactions (FSII) ----------------------------------------------------------------


def known(X: np.ndarray) -> np.ndarray:
    """x0 * x1 interact; 2 x2 and sin(x3) are additive; other columns are dummies."""
    return X[:, 0] * X[:, 1] + 2 * X[:, 2] + np.sin(X[:, 3])


def third_order(X: np.ndarray) -> np.ndarray:
    """Adds a three-way term, which an order-2 fit must spread over pairs and main effects."""
    return known(X) + X[:, 1] * X[:, 3] * X[:, 4] + 0.5 * X[:, 0] * X[:, 4] ** 2


def _task(f, d: int, *, n: int = 5, n_bg: int = 7, seed: int = 0, rows_seed: int = 0,
          **extra) -> ExplainTask:
    rng = np.random.default_rng(rows_seed)
    return ExplainTask(predict=f, X=rng.normal(size=(n, d)), background=rng.normal(
        size=(n_bg, d)), feature_names=[f"x{i}" for i in range(d)], seed=seed, **extra)


def _fsii(task: ExplainTask, **params):
    return _cls("shapley_interactions")(**params).explain(task)


@pytest.mark.parametrize("d, f", [(4, known), (5, third_order), (6, third_order)])
def test_fsii_equals_the_weighted_least_squares_definition(d, f):
    task = _task(f, d)
    result = _fsii(task)
    assert result.info["exact"] and result.info["index"] == "FSII" and result.info["order"] == 2
    assert result.info["off_diagonal"] == "half"
    masks, values = _game(f, task.X, task.background)
    expected = _fsii_matrix(_fsii_reference(masks, values), d)
    np.testing.assert_allclose(result.interactions, expected, atol=1e-9)
    # The per-feature values are the Shapley values of the fit, and with every coalition
    # enumerated the exact Shapley values; exact designs have zero standard errors.
    phi, base = exact_shapley(f, task.X, task.background)
    np.testing.assert_allclose(result.values, phi, atol=1e-9)
    assert result.base_values == pytest.approx(np.full(len(task.X), base))
    assert np.all(result.standard_errors == 0)


@pytest.mark.parametrize("d", [5, 6])
def test_fsii_matches_shapiq_exact_computer(d):
    task = _task(third_order, d, n=3)
    result = _fsii(task)
    for r, x in enumerate(task.X):
        expected = _shapiq_matrix(third_order, x, task.background, "FSII")
        np.testing.assert_allclose(result.interactions[r], expected, atol=1e-8)


def test_fsii_efficiency_symmetry_and_rows_adding_up():
    task = _task(third_order, 9, n=6, n_bg=5)
    f_x, base = third_order(task.X), third_order(task.background).mean()
    for n_samples in (2048, 200):  # enumerated (2**9 - 2 = 510 coalitions), then sampled
        result = _fsii(task, n_samples=n_samples)
        assert result.info["exact"] is (n_samples >= 510)
        M = result.interactions
        assert M.shape == (6, 9, 9)
        np.testing.assert_allclose(M, M.transpose(0, 2, 1), atol=0)
        np.testing.assert_allclose(M.sum(axis=2), result.values, atol=1e-12)
        np.testing.assert_allclose(M.sum(axis=(1, 2)), f_x - base, atol=1e-10)
        np.testing.assert_allclose(result.values.sum(axis=1) + result.base_values, f_x,
                                   atol=1e-10)


def test_fsii_recovers_a_two_additive_game_exactly_even_when_sampled():
    """f = x0 x1 + 2 x2 + sin(x3) is 2-additive, so any identifying design fits it exactly:
    the pair term of (0, 1) is the Moebius coefficient x0 x1 - x0 m1 - m0 x1 + mean(b0 b1)
    (m the background means), every other pair term is 0."""
    d = 10
    task = _task(known, d, n=4, n_bg=6)
    result = _fsii(task, n_samples=300)
    assert not result.info["exact"] and result.info["coalitions"] <= 300
    x, b = task.X, task.background
    m0, m1 = b[:, 0].mean(), b[:, 1].mean()
    moebius = x[:, 0] * x[:, 1] - x[:, 0] * m1 - m0 * x[:, 1] + (b[:, 0] * b[:, 1]).mean()
    pairs = 2 * result.interactions  # whole pair terms off the diagonal
    np.testing.assert_allclose(pairs[:, 0, 1], moebius, atol=1e-9)
    pairs[:, 0, 1] = pairs[:, 1, 0] = 0.0
    off = ~np.eye(d, dtype=bool)
    assert np.abs(pairs[:, off]).max() < 1e-9
    np.testing.assert_allclose(result.values, exact_shapley(known, x, b)[0], atol=1e-9)


def test_fsii_additive_model_has_no_pair_terms():
    w = np.array([1.5, -2.0, 0.0, 0.7, 3.0])

    def additive(X):
        return X @ w + np.sin(X[:, 0]) + X[:, 3] ** 2

    task = _task(additive, 5)
    result = _fsii(task)
    off = ~np.eye(5, dtype=bool)
    assert np.abs(result.interactions[:, off]).max() < 1e-10
    np.testing.assert_allclose(result.values, exact_shapley(additive, task.X,
                                                            task.background)[0], atol=1e-10)


def test_fsii_sampled_standard_errors_cover_the_exact_values():
    d = 10
    rng = np.random.default_rng(3)
    W1, W2 = rng.normal(size=(d, 12)), rng.normal(size=12)

    def mlp(X):
        return np.tanh(X @ W1 / np.sqrt(d)) @ W2

    task = _task(mlp, d, n=20, n_bg=12, rows_seed=3)
    phi, _ = exact_shapley(mlp, task.X, task.background)
    covered = []
    for seed in (0, 1):
        task.seed = seed
        result = _fsii(task, n_samples=256)
        assert not result.info["exact"] and result.info["max_standard_error"] > 0
        covered.append(np.abs(result.values - phi) <= 1.96 * result.standard_errors)
        assert np.abs(result.values - phi).max() < 0.15
    assert np.mean(covered) >= 0.85  # nominal 0.95


def test_fsii_counts_and_bounds():
    cls = _cls("shapley_interactions")
    calls = []

    def counted(X):
        calls.append(len(X))
        return third_order(X)

    task = _task(counted, 7, n=4, n_bg=5)
    for n_samples in (2048, 100):
        calls.clear()
        explainer = cls(n_samples=n_samples)
        result = explainer.explain(task)
        estimate = explainer.estimated_model_rows(explainer.validate_params(), n_rows=4,
                                                  n_features=7, n_background=5)
        assert sum(calls) == estimate
        assert result.info["coalitions"] * 4 * 5 + 4 + 5 == estimate
    # Below twice the d(d+1)/2 unknowns a budget is raised, with a warning and a record.
    task = _task(third_order, 12, n=2, n_bg=3)
    with pytest.warns(UserWarning, match="raised to 156"):
        result = cls(n_samples=20).explain(task)
    assert result.info["n_samples_raised"] == {"from": 20, "to": 156}
    assert result.info["coalitions"] <= 156
    # Wide data is declined with the reason, and the limit is a parameter.
    wide = _task(third_order, 41, n=1, n_bg=2)
    reason = cls().supports(wide)
    assert reason and "861" in reason and "max_features" in reason
    assert cls(max_features=41).supports(wide) is None
    assert "at least 2 features" in cls().supports(_task(lambda X: X[:, 0], 1))


def test_fsii_explains_feature_groups_as_players():
    """With feature_groups= the players are groups: a pair inside a group is part of the
    group's main effect, and the values are the grouped game's exact Shapley values."""
    import pandas as pd

    import mlflow_xai

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(20, 8)), columns=[f"x{i}" for i in range(8)])

    def model(data):
        a = np.asarray(data, dtype=float)
        return a[:, 0] * a[:, 1] + a[:, 2] * a[:, 5] + a[:, 3] + a[:, 0] * a[:, 3]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expl = mlflow_xai.explain(model, frame.iloc[:5], background=frame.iloc[10:20],
                                  explainers=["shapley_interactions", "exact_shap"], checks=[],
                                  feature_groups={"g01": ["x0", "x1"], "g25": ["x2", "x5"]})
    entry = expl.summary["methods"]["shapley_interactions"]
    assert entry["status"] == "ok" and entry["grouping"] == "native"
    values = expl.attributions["shapley_interactions"]
    assert list(values.columns) == ["g01", "g25", "x3", "x4", "x6", "x7"]
    np.testing.assert_allclose(values.to_numpy(), expl.attributions["exact_shap"].to_numpy(),
                               atol=1e-10)
    M = expl.interactions["shapley_interactions"]  # whole pair terms off the diagonal
    assert M.shape == (5, 6, 6)
    pairs = M.copy()
    pairs[:, np.arange(6), np.arange(6)] = 0.0
    # Only g01 (holding x0) and x3 interact; the pairs inside the groups are main effects.
    assert np.abs(pairs[:, 0, 2]).min() > 1e-3
    pairs[:, 0, 2] = pairs[:, 2, 0] = 0.0
    assert np.abs(pairs).max() < 1e-9


# --- tree_interactions ---------------------------------------------------------------------------


D_TREE = 5


def tree_target(X: np.ndarray) -> np.ndarray:
    return X[:, 0] * X[:, 1] + np.sin(X[:, 2]) + 0.5 * X[:, 4] ** 2


@pytest.fixture(scope="module")
def tree_data():
    rng = np.random.default_rng(1)
    X_fit = rng.normal(size=(400, D_TREE))
    return X_fit, tree_target(X_fit), rng.normal(size=(6, D_TREE)), rng.normal(size=(9, D_TREE))


def _tree_task(est, X, background, output_index=None) -> tuple[ExplainTask, object]:
    adapter = resolve_model(est)
    if output_index is None:
        predict = adapter.predict
    else:
        def predict(Z):
            return adapter.predict(Z)[:, output_index]
    task = ExplainTask(predict=predict, X=X, background=background, model=adapter,
                       feature_names=[f"x{i}" for i in range(X.shape[1])],
                       output_index=output_index)
    return task, predict


def _sklearn_models(X_fit, y):
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )
    from sklearn.tree import DecisionTreeRegressor

    labels3 = np.digitize(y, [0.0, 1.0])
    return {
        "forest": (RandomForestRegressor(20, max_depth=5, random_state=0).fit(X_fit, y), None),
        "deep_tree": (DecisionTreeRegressor(max_depth=9, random_state=0).fit(X_fit, y), None),
        "boosting": (GradientBoostingRegressor(n_estimators=25, random_state=0).fit(X_fit, y),
                     None),
        "forest_proba": (RandomForestClassifier(15, max_depth=6, random_state=0).fit(
            X_fit, labels3), 2),
        "boosted_class0": (GradientBoostingClassifier(n_estimators=20, random_state=0).fit(
            X_fit, y > 0.5), 0),
    }


@pytest.mark.parametrize("case", ["forest", "deep_tree", "boosting", "forest_proba",
                                  "boosted_class0"])
def test_tree_interactions_interventional_equal_the_enumerated_definition(case, tree_data):
    X_fit, y, X, background = tree_data
    est, output_index = _sklearn_models(X_fit, y)[case]
    task, predict = _tree_task(est, X, background, output_index)
    explainer = _cls("tree_interactions")()
    assert explainer.supports(task) is None
    result = explainer.explain(task)
    assert result.info["index"] == "k-SII" and result.info["off_diagonal"] == "half"
    assert result.info["feature_perturbation"] == "interventional"
    margin = case == "boosted_class0"
    assert result.output_space == ("margin" if margin else "probability"
                                   if case == "forest_proba" else "raw")
    # The explained game: the output itself, or class 0's margin (minus class 1's).
    game = (lambda Z: -est.decision_function(Z)) if margin else predict
    masks, values = _game(game, X, background)
    phi, expected = _ksii_reference(masks, values)
    np.testing.assert_allclose(result.interactions, expected, atol=1e-10)
    np.testing.assert_allclose(result.values, phi, atol=1e-10)
    M = result.interactions
    np.testing.assert_allclose(M, M.transpose(0, 2, 1), atol=1e-15)
    np.testing.assert_allclose(M.sum(axis=(1, 2)) + result.base_values, result.outputs,
                               atol=1e-10)
    np.testing.assert_allclose(result.base_values, game(background).mean(), atol=1e-12)
    if not margin:  # tree_shap explains the same game: rows add up to its values
        shap_values = _cls("tree_shap")().explain(task).values
        np.testing.assert_allclose(M.sum(axis=2), shap_values, atol=1e-6)


def test_tree_interactions_match_shapiq_exact_k_sii(tree_data):
    X_fit, y, X, background = tree_data
    est, _ = _sklearn_models(X_fit, y)["forest"]
    task, predict = _tree_task(est, X[:2], background)
    result = _cls("tree_interactions")().explain(task)
    for r, x in enumerate(task.X):
        expected = _shapiq_matrix(predict, x, background, "k-SII")
        np.testing.assert_allclose(result.interactions[r], expected, atol=1e-10)


def test_tree_interactions_path_dependent_are_shaps(tree_data):
    import shap

    X_fit, y, X, background = tree_data
    est, _ = _sklearn_models(X_fit, y)["forest"]
    task, predict = _tree_task(est, X, background)
    result = _cls("tree_interactions")(feature_perturbation="tree_path_dependent").explain(task)
    assert result.info["feature_perturbation"] == "tree_path_dependent"
    explainer = shap.TreeExplainer(est)
    np.testing.assert_allclose(result.interactions, explainer.shap_interaction_values(X),
                               atol=1e-9)
    np.testing.assert_allclose(result.values, explainer.shap_values(X), atol=1e-9)
    np.testing.assert_allclose(result.base_values, float(np.ravel(explainer.expected_value)[0]))
    np.testing.assert_allclose(result.interactions.sum(axis=(1, 2)) + result.base_values,
                               predict(X), atol=1e-9)
    # A different game from the interventional one: the two disagree well beyond round-off.
    interventional = _cls("tree_interactions")().explain(task).values
    assert np.abs(interventional - result.values).max() > 0.01


def test_tree_interactions_additive_forest_has_no_pairs(tree_data):
    from sklearn.ensemble import RandomForestRegressor

    X_fit, _, X, background = tree_data
    stumps = RandomForestRegressor(30, max_depth=1, random_state=0).fit(
        X_fit, 2 * X_fit[:, 0] + np.sin(X_fit[:, 2]))
    result = _cls("tree_interactions")().explain(_tree_task(stumps, X, background)[0])
    off = ~np.eye(D_TREE, dtype=bool)
    assert np.abs(result.interactions[:, off]).max() == 0.0
    assert np.abs(result.values).max() > 0.1


def test_tree_interactions_through_a_one_hot_pipeline():
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    import mlflow_xai

    rng = np.random.default_rng(0)
    n = 300
    frame = pd.DataFrame({"a": rng.normal(size=n), "c": rng.choice(["x", "y", "z"], n),
                          "b": rng.normal(size=n)})
    y = frame["a"] * (frame["c"] == "x") + frame["b"]
    prep = ColumnTransformer([("cat", OneHotEncoder(sparse_output=False), ["c"])],
                             remainder="passthrough")
    pipe = Pipeline([("prep", prep), ("forest", RandomForestRegressor(
        15, max_depth=5, random_state=0))]).fit(frame, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expl = mlflow_xai.explain(pipe, frame, explainers=["tree_interactions", "tree_shap"],
                                  max_rows=20, background=frame.iloc[:25], checks=[])
    entry = expl.summary["methods"]["tree_interactions"]
    assert entry["status"] == "ok" and entry["pipeline"] is True
    assert entry["index"] == "k-SII" and entry["grouped"] == {
        "c": ["cat__c_x", "cat__c_y", "cat__c_z"]}
    assert entry["efficiency_max_abs_gap"] < 1e-9
    values = expl.attributions["tree_interactions"]
    np.testing.assert_allclose(values.to_numpy(), expl.attributions["tree_shap"].to_numpy(),
                               atol=1e-6)
    M = expl.interactions["tree_interactions"]  # raw columns a, c, b
    assert M.shape == (20, 3, 3)
    np.testing.assert_allclose(M, M.transpose(0, 2, 1), atol=1e-15)
    assert np.abs(M[:, 0, 1]).max() > 0.05  # a interacts with the category


def test_tree_interactions_boosters(tree_data):
    import lightgbm
    import xgboost

    X_fit, y, X, background = tree_data
    labels3 = np.digitize(y, [0.0, 1.0])
    cases = [
        (xgboost.XGBRegressor(n_estimators=20, max_depth=3).fit(X_fit, y), None),
        (xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(X_fit, y > 0.5), 0),
        (xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(X_fit, labels3), 2),
        (lightgbm.LGBMRegressor(n_estimators=20, verbose=-1).fit(X_fit, y), None),
        (lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(X_fit, y > 0.5), 1),
    ]
    for est, output_index in cases:
        task, _ = _tree_task(est, X, background, output_index)
        explainer = _cls("tree_interactions")()
        assert explainer.supports(task) is None, type(est).__name__
        result = explainer.explain(task)
        assert result.output_space == "margin"
        assert result.info["feature_perturbation"] == "tree_path_dependent"
        M = result.interactions
        np.testing.assert_allclose(M, M.transpose(0, 2, 1), atol=1e-6)
        # Rows add up to tree_shap's (native, path-dependent) values; float32 boosters.
        reference = _cls("tree_shap")().explain(task)
        np.testing.assert_allclose(M.sum(axis=2), reference.values, atol=1e-5)
        np.testing.assert_allclose(result.base_values, reference.base_values, atol=1e-6)
        np.testing.assert_allclose(M.sum(axis=(1, 2)) + result.base_values, result.outputs,
                                   atol=1e-5)
        assert "interventional" in _cls("tree_interactions")(
            feature_perturbation="interventional").supports(task)
    multiclass = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1).fit(X_fit, labels3)
    reason = _cls("tree_interactions")().supports(_tree_task(multiclass, X, background, 1)[0])
    assert reason and "multiclass LightGBM" in reason


def test_tree_interactions_declines_with_reasons(tree_data):
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor

    X_fit, y, X, background = tree_data
    explainer = _cls("tree_interactions")()
    hist = HistGradientBoostingRegressor(max_iter=5).fit(X_fit, y)
    assert "HistGradientBoosting" in explainer.supports(_tree_task(hist, X, background)[0])
    forest = RandomForestRegressor(5, max_depth=3, random_state=0).fit(X_fit, y)
    holes = X.copy()
    holes[0, 1] = np.nan
    assert "missing values" in explainer.supports(_tree_task(forest, holes, background)[0])
    black_box = ExplainTask(predict=tree_target, X=X, background=background,
                            feature_names=[f"x{i}" for i in range(D_TREE)])
    assert "tree model" in explainer.supports(black_box)


def test_both_run_through_explain_and_record_their_index(tree_data):
    from sklearn.ensemble import RandomForestRegressor

    import mlflow_xai

    X_fit, y, X, background = tree_data
    forest = RandomForestRegressor(10, max_depth=4, random_state=0).fit(X_fit, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expl = mlflow_xai.explain(forest, X, background=background, checks=[],
                                  explainers=["shapley_interactions", "tree_interactions"])
    for method, index in (("shapley_interactions", "FSII"), ("tree_interactions", "k-SII")):
        entry = expl.summary["methods"][method]
        assert entry["status"] == "ok" and entry["index"] == index
        assert entry["efficiency_max_abs_gap"] < 1e-9
        assert expl.interactions[method].shape == (len(X), D_TREE, D_TREE)
    # Same game (interventional, same background), both exact here: the same Shapley values.
    np.testing.assert_allclose(expl.attributions["shapley_interactions"].to_numpy(),
                               expl.attributions["tree_interactions"].to_numpy(), atol=1e-9)
