"""The rashomon check: importance and interaction ranges over refits within epsilon of the best.

Every number is checked against a computation written out here with numpy (the split, the
bootstrap and the permutations re-derived from the rule in the module docstring), not against
the check's own functions.
"""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures

import mlflow_xai
from mlflow_xai.errors import ConfigError

NAMES = ["x1", "x2", "x3", "x4"]


# ---- independent re-derivations of the documented rules --------------------------------------

def split(n: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed + 1).permutation(n)
    n_val = max(1, round(share * n))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def perms(n_val: int, repeats: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 2)
    return [rng.permutation(n_val) for _ in range(repeats)]


def bootstrap(train: np.ndarray, seed: int, i: int) -> np.ndarray:
    return train[np.random.default_rng([seed, i]).integers(0, len(train), len(train))]


def reliance(f, X: np.ndarray, y: np.ndarray, permutations, cols: list[int]) -> float:
    """Model reliance on squared error, one permutation at a time (no stacking)."""
    base = np.mean((y - f(X)) ** 2)
    increases = []
    for p in permutations:
        Z = X.copy()
        for c in cols:  # the same permutation for every column of the group
            Z[:, c] = X[p, c]
        increases.append(np.mean((y - f(Z)) ** 2) - base)
    return float(np.mean(increases))


def fis(f, X, y, permutations, a: int, b: int) -> float:
    return (reliance(f, X, y, permutations, [a, b]) - reliance(f, X, y, permutations, [a])
            - reliance(f, X, y, permutations, [b]))


def _run(model, X, y, checks, **kw):
    return mlflow_xai.explain(model, X, targets=y, explainers=["permutation_importance"],
                              checks=checks, **kw)


# ---- 1. ground truth: y = x1 + x2 + x1*x2, x3 ~ x1, x4 noise ------------------------------------

def truth_data(seed: int, n: int = 300):
    rng = np.random.default_rng(seed)
    x1, x2, x4 = rng.normal(size=(3, n))
    # x3 is x1 up to N(0, 0.1^2): a least-squares fit on x1 and x3 splits their weight by
    # chance (the training rows decide), so near-equally good fits lean on one or the other.
    x3 = x1 + rng.normal(0.0, 0.1, n)
    y = x1 + x2 + x1 * x2 + rng.normal(0.0, 1.0, n)
    return np.column_stack([x1, x2, x3, x4]), y


def poly_ols():
    # Products without squares: x1^2, x1*x3 and x3^2 are nearly the same column, their
    # least-squares coefficients explode and permuting x1 alone then moves the prediction by
    # tens (measured FIS ranges of -245 to 165: covering the truth said nothing).
    # Unpenalized: a ridge penalty pulls the x1/x3 split to 50/50 and biases every fit's x1-x2
    # interaction towards half the true one (the range then missed the truth in 6 of 20 sets).
    return make_pipeline(PolynomialFeatures(2, interaction_only=True), LinearRegression())


@pytest.fixture(scope="module")
def truth_run():
    seed = 0
    A, y = truth_data(seed)
    X = pd.DataFrame(A, columns=NAMES)
    model = poly_ols().fit(X, y)
    # epsilon 0.2: the noise variance is 1 and a bootstrap fit on 210 rows adds 5-20% to the
    # validation loss; 0.05 keeps too few fits to show a range. Over 60 data sets (seeds 0-59)
    # this covered the true FIS in 58 and showed the x1/x3 swap (x4 never top 2) in 49.
    params = {"n_models": 60, "epsilon": 0.2, "max_rank_spread": 0}
    expl = _run(model, X, y, {"rashomon": params}, seed=seed)
    return A, y, model, expl.checks["rashomon"], seed


def test_interaction_range_covers_the_true_interaction(truth_run):
    A, y, _, entry, seed = truth_run
    assert entry["status"] == "ok"
    d = entry["details"]
    train, val = split(len(A), 0.3, seed)
    P = perms(len(val), 2, seed)
    assert (d["training_rows"], d["validation_rows"]) == (len(train), len(val))
    # The true function's FIS, written out on the same rows and permutations.
    true_f = lambda Z: Z[:, 0] + Z[:, 1] + Z[:, 0] * Z[:, 1]
    true_fis = fis(true_f, A[val], y[val], P, 0, 1)
    pair = next(p for p in d["pairs"] if set(p["features"]) == {"x1", "x2"})
    print(f"\nFIS(x1, x2): range [{pair['min']:.3f}, {pair['max']:.3f}] over "
          f"{d['models_kept']} kept fits, mean {pair['mean']:.3f}; true {true_fis:.3f}")
    assert pair["min"] <= true_fis <= pair["max"]
    # A real cloud, but not so wide that covering the truth says nothing (|truth| ~ 2).
    assert 0.3 < pair["max"] - pair["min"] < 15

    # Each kept fit re-done by hand: bootstrap rows, fit, loss and FIS with loops.
    kept_seeds = d["kept_seeds"]
    assert len(kept_seeds) == d["models_kept"] == len(d["kept_losses"]) == len(pair["values"])
    for pos, fit_seed in enumerate(kept_seeds):
        rows = bootstrap(train, seed, fit_seed - seed)
        fitted = poly_ols().fit(pd.DataFrame(A[rows], columns=NAMES), y[rows])
        f = lambda Z, m=fitted: m.predict(pd.DataFrame(Z, columns=NAMES))
        loss = np.mean((y[val] - f(A[val])) ** 2)
        assert d["kept_losses"][pos] == pytest.approx(loss, rel=1e-9)
        assert pair["values"][pos] == pytest.approx(fis(f, A[val], y[val], P, 0, 1), abs=1e-8)
        assert d["importance_per_fit"]["x3"][pos] == pytest.approx(
            reliance(f, A[val], y[val], P, [2]), abs=1e-8)
    # The epsilon rule over every fit.
    losses = np.array(d["losses"])
    assert d["best_loss"] == pytest.approx(losses.min())
    assert d["models_kept"] == int((losses <= losses.min() * 1.2).sum())


def test_x1_x3_swap_across_fits(truth_run):
    _, _, _, entry, _ = truth_run
    d = entry["details"]
    x1 = np.array(d["importance_per_fit"]["x1"])
    x3 = np.array(d["importance_per_fit"]["x3"])
    m = len(x1)
    x3_first, x1_first = int((x3 > x1).sum()), int((x1 > x3).sum())
    assert x3_first >= 1 and x1_first >= 1  # some kept fits lean on x3, others on x1
    swap = next(s for s in d["swaps"] if set(s["features"]) == {"x1", "x3"})
    assert swap["share"] == pytest.approx(min(x3_first, x1_first) / m)
    majority = "x1" if x1_first >= x3_first else "x3"
    assert swap["features"][0] == majority
    f = d["features"]
    print(f"\nx3 above x1 in {x3_first} of {m} kept fits (swap share {swap['share']:.3f}); "
          + ", ".join(f"{k} ranks {v['rank_min']}-{v['rank_max']}" for k, v in f.items()))
    # Rank ranges overlap, and both move.
    assert f["x1"]["rank_min"] <= f["x3"]["rank_max"] and f["x3"]["rank_min"] <= f["x1"]["rank_max"]
    assert f["x1"]["rank_spread"] >= 1 and f["x3"]["rank_spread"] >= 1
    # Per-fit ranks by hand: rank 1 = largest importance.
    imp = np.column_stack([d["importance_per_fit"][n] for n in NAMES])
    rank = (imp[:, None, :] > imp[:, :, None]).sum(axis=2) + 1
    for j, name in enumerate(NAMES):
        assert f[name]["rank_min"] == rank[:, j].min() and f[name]["rank_max"] == rank[:, j].max()
        assert f[name]["min"] == pytest.approx(imp[:, j].min())
        assert f[name]["max"] == pytest.approx(imp[:, j].max())
        assert f[name]["p_top_k"] == pytest.approx(np.mean(rank[:, j] <= d["top_k"]))
    # x4 is noise: never in the top 2.
    assert f["x4"]["rank_min"] > 2
    # The figures and the threshold: this set is unstable, so max_rank_spread 0 fails.
    top = np.argsort(-imp.mean(axis=0), kind="stable")[:d["top_k"]]
    spread = rank.max(axis=0) - rank.min(axis=0)
    assert entry["figures"]["max_rank_spread"] == spread[top].max() >= 1
    assert entry["verdicts"]["max_rank_spread"] == "fail"
    assert entry["figures"]["x3/rank_spread"] == f["x3"]["rank_spread"]
    assert entry["figures"]["models_kept"] == d["models_kept"]


def test_logged_model_reference_and_cost(truth_run):
    A, y, model, entry, seed = truth_run
    d = entry["details"]
    _, val = split(len(A), 0.3, seed)
    P = perms(len(val), 2, seed)
    f = lambda Z: model.predict(pd.DataFrame(Z, columns=NAMES))
    assert d["logged_model"]["loss"] == pytest.approx(np.mean((y[val] - f(A[val])) ** 2))
    for j, name in enumerate(NAMES):
        assert d["logged_model"]["importance"][name] == pytest.approx(
            reliance(f, A[val], y[val], P, [j]), abs=1e-9)
    # Model rows: per fit the base + 2 repeats x 4 features; per kept fit 2 x pairs; the same
    # for the logged model.
    k = d["top_k"]
    pairs = k * (k - 1) // 2
    n_val = len(val)
    expected = n_val * ((d["models_fitted"] + 1) * (1 + 2 * 4) + (d["models_kept"] + 1) * 2 * pairs)
    assert entry["model_evals"] == expected
    schema = {"models_fitted": int, "models_kept": int, "fits_failed": int, "epsilon": float,
              "best_loss": float, "loss": str, "importance": str, "top_k": int,
              "validation_rows": int, "training_rows": int, "features": dict, "pairs": list,
              "swaps": list, "kept_losses": list, "logged_model": dict}
    for key, kind in schema.items():
        assert isinstance(d[key], kind), key
    assert d["epsilon_absolute"] is None and d["loss"] == "squared_error"
    assert d["importance"] == "model reliance (loss increase, permutation)"
    means = {name: v["mean"] for name, v in d["features"].items()}
    top = sorted(means, key=lambda name: -means[name])[:k]
    assert {frozenset(p["features"]) for p in d["pairs"]} == {
        frozenset(c) for c in combinations(top, 2)}
    from mlflow_xai.plugins import get_registry

    cls = get_registry().get("rashomon", "check").cls
    check = cls(n_models=60, epsilon=0.2)
    estimate = check.estimated_model_rows(check.validate_params(), n_rows=len(A), n_methods=1,
                                          n_features=4)
    assert estimate >= entry["model_evals"]  # the planner's bound (all fits kept)


# ---- 2. the epsilon filter ---------------------------------------------------------------------

def test_epsilon_filter_drops_bad_fits_and_counts_failures(tmp_path):
    seed = 3
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(300, 3))
    y = A @ np.array([2.0, -1.0, 0.5]) + rng.normal(0, 0.3, 300)
    X = pd.DataFrame(A, columns=["a", "b", "c"])
    model = LinearRegression().fit(X, y)
    calls = []

    def refit(Xf, yf, fit_seed):
        calls.append((type(Xf).__name__, fit_seed))
        if fit_seed == seed + 4:
            raise RuntimeError("diverged")
        if (fit_seed - seed) % 3 == 0:  # a deliberately bad model: always 0
            return lambda Z: np.zeros(len(Z))
        return LinearRegression().fit(Xf, yf)

    expl = _run(model, X, y, {"rashomon": {"n_models": 9, "refit": refit, "epsilon": 0.05}},
                seed=seed, output_dir=tmp_path)
    entry = expl.checks["rashomon"]
    assert entry["status"] == "ok"
    d = entry["details"]
    assert [s for _, s in calls] == [seed + i for i in range(9)]
    assert {t for t, _ in calls} == {"DataFrame"}  # the model's own input
    assert d["fits_failed"] == 1 and d["failures"][0]["error"] == "RuntimeError: diverged"
    assert d["models_fitted"] == 8 and seed + 4 not in d["fit_seeds"]
    _, val = split(300, 0.3, seed)
    bad = [s for s in d["fit_seeds"] if (s - seed) % 3 == 0]
    losses = dict(zip(d["fit_seeds"], d["losses"]))
    for s in bad:  # the bad model's loss, by hand: mean(y^2)
        assert losses[s] == pytest.approx(np.mean(y[val] ** 2))
        assert s not in d["kept_seeds"]
    best = min(d["losses"])
    by_hand = sum(loss <= best * 1.05 for loss in d["losses"])
    assert d["models_kept"] == by_hand == len(d["kept_losses"]) == 5
    assert entry["figures"]["models_kept"] == 5 and entry["figures"]["models_fitted"] == 8
    stability = json.loads((tmp_path / "stability.json").read_text())
    assert stability["rashomon"]["details"]["models_kept"] == 5

    # epsilon_absolute replaces the relative rule: a bound above mean(y^2) keeps everything.
    expl = _run(model, X, y, {"rashomon": {"n_models": 9, "refit": refit,
                                           "epsilon_absolute": float(np.mean(y[val] ** 2))}},
                seed=seed)
    d = expl.checks["rashomon"]["details"]
    assert d["models_kept"] == 8 and d["epsilon_absolute"] == pytest.approx(np.mean(y[val] ** 2))

    # All but one fit bad: fewer than 2 kept -> skipped with a reason.
    expl = _run(model, X, y, {"rashomon": {"n_models": 3, "refit": lambda Xf, yf, s: (
        LinearRegression().fit(Xf, yf) if s == seed else (lambda Z: np.zeros(len(Z))))}},
        seed=seed)
    entry = expl.checks["rashomon"]
    assert entry["status"] == "skipped" and "within epsilon" in entry["reason"]


def test_default_margin_is_one_standard_error_of_the_best_loss():
    """epsilon="auto": fits within one standard error of the best fit's validation loss are
    kept; the margin, the best fit and the kept set are re-derived here by refitting."""
    seed = 5
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(200, 3))
    y = A @ np.array([1.0, -1.0, 0.5]) + rng.normal(0, 1.0, 200)
    X = pd.DataFrame(A, columns=["a", "b", "c"])
    model = LinearRegression().fit(X, y)
    expl = _run(model, X, y, {"rashomon": {"n_models": 12}}, seed=seed)
    entry = expl.checks["rashomon"]
    assert entry["status"] == "ok", entry.get("reason")
    d = entry["details"]
    train, val = split(200, 0.3, seed)
    losses, rows = [], []
    for i in range(12):
        fit = LinearRegression().fit(X.iloc[bootstrap(train, seed, i)],
                                     y[bootstrap(train, seed, i)])
        err = (y[val] - fit.predict(X.iloc[val])) ** 2
        losses.append(err.mean())
        rows.append(err)
    best = int(np.argmin(losses))
    se = np.std(rows[best], ddof=1) / np.sqrt(len(val))
    assert d["losses"] == pytest.approx(losses, rel=1e-9)
    assert d["loss_margin"] == pytest.approx(se, rel=1e-9)
    assert d["epsilon"] == pytest.approx(se / losses[best], rel=1e-9)
    assert d["epsilon_rule"].startswith("auto: one standard error")
    kept = [i for i, loss in enumerate(losses) if loss <= losses[best] + se]
    assert d["models_kept"] == len(kept) and 2 <= len(kept) < 12
    # A relative 1 % keeps fewer: the bootstrap noise of the loss is larger than that.
    strict = _run(model, X, y, {"rashomon": {"n_models": 12, "epsilon": 0.01}}, seed=seed)
    strict_kept = sum(loss <= losses[best] * 1.01 for loss in losses)
    assert strict_kept < len(kept)
    assert strict.checks["rashomon"].get("details", {}).get("models_kept", 1) == strict_kept \
        or strict_kept < 2


# ---- 3. a stable case --------------------------------------------------------------------------

def test_stable_linear_model_has_no_rank_spread():
    seed = 1
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(400, 6))
    coef = np.array([3.0, 2.0, 1.0, 0.5, 0.0, 0.0])
    y = A @ coef + rng.normal(0, 0.1, 400)
    names = [f"f{j}" for j in range(6)]
    X = pd.DataFrame(A, columns=names)
    model = LinearRegression().fit(X, y)
    expl = _run(model, X, y, {"rashomon": {"n_models": 10, "top_k": 4, "max_rank_spread": 0}},
                seed=seed)
    entry = expl.checks["rashomon"]
    d = entry["details"]
    assert entry["figures"]["max_rank_spread"] == 0
    assert entry["verdicts"]["max_rank_spread"] == "pass"
    for j in range(4):
        f = d["features"][names[j]]
        assert f["rank_min"] == f["rank_max"] == j + 1 and f["p_top_k"] == 1.0
        # Reliance of a linear term: coef^2 * mean over permutations of mean((x_pi - x)^2).
        _, val = split(400, 0.3, seed)
        P = perms(len(val), 2, seed)
        xj = A[val, j]
        approx = coef[j] ** 2 * np.mean([np.mean((xj[p] - xj) ** 2) for p in P])
        assert f["min"] <= approx * 1.05 and f["max"] >= approx * 0.95
    assert d["features"]["f4"]["p_top_k"] == 0.0 and d["features"]["f5"]["p_top_k"] == 0.0
    assert not any(set(s["features"]) & set(names[:4]) for s in d["swaps"])
    # A linear model's FIS is exactly 2 c_a c_b mean((x_a[pi] - x_a)(x_b[pi] - x_b)) (the
    # residual terms cancel): a sampling term of the shared permutations, not an interaction.
    _, val = split(400, 0.3, seed)
    P = perms(len(val), 2, seed)
    Xv = A[val]

    def linear_fis(c, a, b):
        return 2 * c[a] * c[b] * np.mean([np.mean((Xv[p, a] - Xv[:, a]) * (Xv[p, b] - Xv[:, b]))
                                          for p in P])

    index = {n: j for j, n in enumerate(names)}
    logged = {frozenset(p["features"]): p["value"] for p in d["logged_model"]["interaction"]}
    assert len(d["pairs"]) == 6
    for p in d["pairs"]:
        a, b = (index[n] for n in p["features"])
        assert logged[frozenset(p["features"])] == pytest.approx(linear_fis(model.coef_, a, b),
                                                                 abs=1e-9)
        # The refits' coefficients are within a few hundredths of the true ones.
        near = linear_fis(coef, a, b)
        assert p["min"] - 0.05 * abs(near) - 0.02 <= near <= p["max"] + 0.05 * abs(near) + 0.02


# ---- 4. skipped, classifiers, parameters -------------------------------------------------------

def test_skipped_without_targets_or_refit():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(60, 3))
    X = pd.DataFrame(A, columns=["a", "b", "c"])
    y = A[:, 0]
    model = LinearRegression().fit(X, y)
    expl = mlflow_xai.explain(model, X, explainers=["exact_shap"], checks=["rashomon"])
    assert expl.checks["rashomon"]["status"] == "skipped"
    assert "targets=" in expl.checks["rashomon"]["reason"]

    def plain(Z):
        return np.asarray(Z, dtype=float)[:, 0] * 2.0

    expl = _run(plain, A, y, ["rashomon"])
    entry = expl.checks["rashomon"]
    assert entry["status"] == "skipped" and "refit=" in entry["reason"]
    assert entry["model_evals"] == 0

    # With refit= the plain function model runs.
    expl = _run(plain, A, y, {"rashomon": {"n_models": 4, "refit": lambda Xf, yf, s: (
        LinearRegression().fit(Xf, yf))}})
    assert expl.checks["rashomon"]["status"] == "ok"


@pytest.mark.parametrize("params, words", [
    ({"n_models": 1}, "n_models"), ({"epsilon": -0.1}, "epsilon"),
    ({"validation_share": 1.0}, "validation_share"), ({"refit": "sklearn"}, "refit"),
    ({"n_model": 5}, "n_models"), ({"max_rank_spread": -1}, "max_rank_spread")])
def test_bad_parameters_are_refused(params, words):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(40, 2))
    model = LinearRegression().fit(A, A[:, 0])
    with pytest.raises(ConfigError, match=words):
        _run(model, A, A[:, 0], {"rashomon": params})


def test_classifier_log_loss_on_a_pipeline():
    from sklearn.metrics import log_loss

    from mlflow_xai.datasets import adult_like, adult_like_pipeline

    X, y = adult_like(300, seed=2)
    model = adult_like_pipeline(X, y, n_estimators=10, seed=2)
    seed = 5
    expl = _run(model, X, y, {"rashomon": {"n_models": 4, "epsilon": 1.0, "top_k": 3}},
                seed=seed)
    entry = expl.checks["rashomon"]
    assert entry["status"] == "ok", entry.get("reason") or entry.get("error")
    d = entry["details"]
    assert d["loss"] == "log_loss" and d["models_fitted"] == 4
    _, val = split(300, 0.3, seed)
    proba = model.predict_proba(X.iloc[val])
    expected = log_loss(y.to_numpy()[val], np.clip(proba, 1e-12, 1), labels=model.classes_)
    assert d["logged_model"]["loss"] == pytest.approx(expected, rel=1e-9)
    # Each refit differs (bootstrap + seed): the losses are not all equal.
    assert len(set(np.round(d["losses"], 12))) > 1
    assert set(d["features"]) == set(X.columns) and len(d["pairs"]) == 3
    assert "marital_status/p_top_k" in entry["figures"]


def test_max_rows_caps_the_rows_used():
    rng = np.random.default_rng(4)
    A = rng.normal(size=(250, 3))
    y = A @ np.array([1.0, 0.5, 0.0]) + rng.normal(0, 0.1, 250)
    model = LinearRegression().fit(A, y)
    expl = _run(model, A, y, {"rashomon": {"n_models": 3, "max_rows": 100, "top_k": 9,
                                           "epsilon": 1.0}}, seed=4)
    entry = expl.checks["rashomon"]
    d = entry["details"]
    assert (d["training_rows"], d["validation_rows"]) == (70, 30)
    assert d["top_k"] == 3 and len(d["pairs"]) == 3  # top_k capped at the feature count
    # Rows: (3 fits + logged) x (1 + 2 x 3) x 30, and (kept + logged) x 2 x 3 pairs x 30.
    assert entry["model_evals"] == 30 * (4 * 7 + (d["models_kept"] + 1) * 6)


def test_default_refit_seeds_every_random_state():
    from mlflow_xai_checks.rashomon import sklearn_refit
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    A = rng.normal(size=(80, 3))
    y = (A[:, 0] > 0).astype(int)
    model = Pipeline([("scale", StandardScaler()),
                      ("gbc", GradientBoostingClassifier(n_estimators=5, random_state=0))])
    fitted = sklearn_refit(model.fit(A, y))(A, y, 17)
    assert fitted is not model and fitted.named_steps["gbc"].random_state == 17
    assert model.named_steps["gbc"].random_state == 0  # the explained model is untouched
    forest = sklearn_refit(RandomForestClassifier(n_estimators=3))(A, y, 5)
    assert forest.random_state == 5 and hasattr(forest, "estimators_")
    assert sklearn_refit(lambda Z: Z) is None and sklearn_refit(None) is None


def test_max_seconds_bounds_the_refitting_time():
    """Refitting is training, which the planner cannot see: max_seconds stops it (after at
    least two fits) and says so."""
    import time

    rng = np.random.default_rng(2)
    A = rng.normal(size=(120, 3))
    y = A @ np.array([1.0, 2.0, 0.0]) + rng.normal(0, 0.1, 120)
    X = pd.DataFrame(A, columns=["a", "b", "c"])

    def slow(Xf, yf, fit_seed):
        time.sleep(0.15)
        return LinearRegression().fit(Xf, yf)

    expl = _run(LinearRegression().fit(X, y), X, y,
                {"rashomon": {"n_models": 50, "refit": slow, "max_seconds": 0.4,
                              "epsilon_absolute": 1.0}})
    d = expl.checks["rashomon"]["details"]
    assert 2 <= d["models_fitted"] < 10
    assert d["stopped_by_max_seconds"] == d["models_fitted"]
