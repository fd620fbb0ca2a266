"""importance_test: error-controlled tests of whether the model's output depends on a feature.

Statistical repetitions call the array functions of ``_betting`` (fresh data each run); the
check itself runs on a hand-built context (model rows counted by the test) and end to end
through ``mlflow_xai.explain``. Measured figures are printed (``pytest -s``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from mlflow_xai_checks._betting import (
    BettingStream,
    ResidualStream,
    betting_test,
    conditional_warmup,
    fit_conditional_sampler,
    permutation_test,
    residualize,
)
from mlflow_xai_checks.importance_test import ImportanceTest

import mlflow_xai
from mlflow_xai.base import Attribution, CheckContext
from mlflow_xai.errors import ConfigError

ALPHA = 0.05


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def _bound(reps: int, alpha: float = ALPHA) -> float:
    """alpha + 2 standard errors of a rejection rate over ``reps`` runs."""
    return alpha + 2.0 * math.sqrt(alpha * (1 - alpha) / reps)


def _one_run(X: np.ndarray, y: np.ndarray, j: int, kind: str, method: str, seed: int,
             sampler: str = "regression"):
    """One test of column j, as the check runs it (sampler fitted on the same rows; the
    conditional test on partial residuals, see _betting.ResidualStream)."""
    rng = np.random.default_rng([seed, 7])
    rest = np.delete(X, j, axis=1)
    no_categories = np.zeros(rest.shape[1], dtype=bool)
    if kind == "marginal":
        if method == "betting":
            return betting_test(y, X[:, j], kind=kind, alpha=ALPHA, warmup=20)
        return permutation_test(y, X[:, j], kind=kind, alpha=ALPHA, n_permutations=199,
                                rng=rng)
    s = fit_conditional_sampler(X, j, kind=sampler)
    if method == "betting":
        stream = ResidualStream(alpha=ALPHA, warmup=conditional_warmup(20, rest.shape[1],
                                                                       len(X)),
                                categorical=False, center=s.mean,
                                rest_categorical=no_categories)
        stream.feed(y, X[:, j], s.sample(rest, rng), rest)
        return stream.outcome(len(X))
    yr, xr, draws = residualize(y, X[:, j], s.sample(rest, rng, size=199), rest, s.mean,
                                no_categories)
    return permutation_test(yr, xr, kind=kind, alpha=ALPHA, n_permutations=199, rng=rng,
                            x_draws=draws)


def _rates(make, j: int, kind: str, method: str, reps: int, n: int,
           sampler: str = "regression") -> tuple[float, float]:
    """(rejection rate, mean rows used) over ``reps`` fresh data sets."""
    outcomes = []
    for r in range(reps):
        X, y = make(np.random.default_rng(10_000 + r), n)
        outcomes.append(_one_run(X, y, j, kind, method, r, sampler))
    return (float(np.mean([o.rejected for o in outcomes])),
            float(np.mean([o.rows_used for o in outcomes])))


def _ignores_z(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """x1, x2, z ~ N(0, 1) independent; the model is sigmoid(x1 + x2): it ignores z."""
    X = rng.normal(size=(n, 3))
    return X, _sigmoid(X[:, 0] + X[:, 1])


def _strong_x1(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    X = rng.normal(size=(n, 3))
    return X, _sigmoid(3.0 * X[:, 0] + X[:, 1])


def _moderate_x2(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Six features, a strong x1 and a moderate x2 (0.6 on the logit): the kind of effect a
    kernel on (y, x, all other features) misses."""
    X = rng.normal(size=(n, 6))
    return X, _sigmoid(2.0 * X[:, 0] + 0.6 * X[:, 1])


def _proxy_x3(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """x3 = x1 + noise (corr 0.9); the model uses x1 and x2 only."""
    X = rng.normal(size=(n, 3))
    X[:, 2] = X[:, 0] + 0.48 * rng.normal(size=n)
    return X, _sigmoid(X[:, 0] + X[:, 1])


# ------------------------------------------------------------------------------------------
# The betting game against a direct computation
# ------------------------------------------------------------------------------------------

def _naive_skit(y, x, kind, warmup, alpha, x_null=None, rest=None):
    """SKIT written out step by step: witness from the past points, normalised payoff
    rescaled by the largest past one, online Newton step; returns (payoffs, wealth path)."""
    y = y.reshape(len(y), -1)
    if kind == "marginal":
        steps = [(np.array([np.r_[y[a], x[a]], np.r_[y[a + 1], x[a + 1]]]),
                  np.array([np.r_[y[a], x[a + 1]], np.r_[y[a + 1], x[a]]]))
                 for a in range(0, len(x) - 1, 2)]
        parts = [slice(0, y.shape[1]), slice(y.shape[1], y.shape[1] + 1)]
    else:
        steps = [(np.r_[y[i], x[i], rest[i]][None], np.r_[y[i], x_null[i], rest[i]][None])
                 for i in range(len(x))]
        k = y.shape[1]
        parts = [slice(0, k), slice(k, k + 1), slice(k + 1, k + 1 + rest.shape[1])]
    pooled = np.vstack([np.vstack([s[0] for s in steps[:warmup]]),
                        np.vstack([s[1] for s in steps[:warmup]])])
    fitted = []
    for p in parts:
        v = pooled[:, p]
        mu, sd = v.mean(0), np.where(v.std(0) > 1e-12, v.std(0), 1.0)
        w = (v - mu) / sd
        d = [np.linalg.norm(w[a] - w[b]) for a in range(len(w)) for b in range(a + 1, len(w))]
        d = [e for e in d if e > 1e-12]
        fitted.append((p, mu, sd, float(np.median(d))))

    def gram(A, B):
        out = np.ones((len(A), len(B)))
        for p, mu, sd, h in fitted:
            a, b = (A[:, p] - mu) / sd, (B[:, p] - mu) / sd
            out *= np.exp(-((a[:, None, :] - b[None, :, :]) ** 2).sum(-1) / (2 * h * h))
        return out

    wealth, bet, a_ons, best = 1.0, 0.0, 1.0, 0.0
    payoffs, path = [], []
    rate = 2 / (2 - math.log(3))
    for t in range(warmup, len(steps)):
        R = np.vstack([s[0] for s in steps[:t]])
        N = np.vstack([s[1] for s in steps[:t]])
        real, null = steps[t]
        g_real = gram(real, R).mean(1) - gram(real, N).mean(1)
        g_null = gram(null, R).mean(1) - gram(null, N).mean(1)
        norm = math.sqrt(gram(R, R).mean() - 2 * gram(R, N).mean() + gram(N, N).mean())
        u = (g_real.mean() - g_null.mean()) / (2 * norm)
        scale = 1.0 if best == 0 else max(best, 1e-3)
        best = max(best, abs(u))
        f = float(np.clip(u / scale, -1, 1))
        wealth *= 1 + bet * f
        payoffs.append(f)
        path.append(wealth)
        z = f / (1 + bet * f)
        a_ons += z * z
        bet = min(0.5, max(0.0, bet + rate * z / a_ons))
        if wealth >= 1 / alpha:
            break
    return np.array(payoffs), np.array(path)


@pytest.mark.parametrize("kind", ["marginal", "conditional"])
def test_betting_game_matches_a_step_by_step_computation(kind):
    rng = np.random.default_rng(3)
    n = 90
    X = rng.normal(size=(n, 3))
    y = np.column_stack([_sigmoid(0.8 * X[:, 0] + X[:, 1]), 1 - _sigmoid(0.8 * X[:, 0] + X[:, 1])])
    rest = X[:, 1:]
    x_null = rng.normal(size=n)
    stream = BettingStream(kind, alpha=ALPHA, warmup=8)
    # Fed in uneven pieces, as the check feeds it: the result cannot depend on the chunks.
    for a, b in [(0, 5), (5, 6), (6, 40), (40, n)]:
        stream.feed(y[a:b], X[a:b, 0], x_null[a:b] if kind == "conditional" else None,
                    rest[a:b] if kind == "conditional" else None)
    payoffs, path = _naive_skit(y, X[:, 0], kind, 8, ALPHA, x_null, rest)
    np.testing.assert_allclose(stream.payoffs, payoffs, rtol=1e-9, atol=1e-12)
    out = stream.outcome(n)
    assert out.e_value == pytest.approx(path[-1], rel=1e-9)
    assert out.p_value == pytest.approx(min(1.0, 1.0 / max(1.0, path.max())), rel=1e-9)
    assert out.steps == 8 + len(payoffs)
    assert out.rows_used == out.steps * (2 if kind == "marginal" else 1)
    assert out.rejected == (path[-1] >= 1 / ALPHA)
    assert np.all(np.abs(payoffs) <= 1.0)


def test_betting_stops_at_the_first_step_the_wealth_reaches_one_over_alpha():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(600, 2))
    y = _sigmoid(4 * X[:, 0])
    out = betting_test(y, X[:, 0], kind="marginal", alpha=ALPHA, warmup=20)
    assert out.rejected and out.stopped_early and out.rows_used < 600
    # Played again one step shorter, the wealth has not reached 1/alpha yet.
    short = betting_test(y[:out.rows_used - 2], X[:out.rows_used - 2, 0], kind="marginal",
                         alpha=ALPHA, warmup=20)
    assert not short.rejected and short.e_value < 1 / ALPHA <= out.e_value
    assert out.p_value == pytest.approx(1 / out.e_value)


def test_permutation_p_value_is_hsic_rank_among_the_permutations():
    rng = np.random.default_rng(5)
    n = 60
    x = rng.normal(size=n)
    y = _sigmoid(0.4 * x + rng.normal(size=n))
    out = permutation_test(y, x, kind="marginal", alpha=ALPHA, n_permutations=99,
                           rng=np.random.default_rng(11))
    g = np.random.default_rng(11)  # the same permutations, in the same order
    perms = [g.permutation(n) for _ in range(99)]

    wy = (y - y.mean()) / y.std()
    dy = np.abs(wy[:, None] - wy[None, :])
    hy = np.median(dy[np.triu_indices(n, 1)])
    K = np.exp(-dy ** 2 / (2 * hy ** 2))
    H = np.eye(n) - 1.0 / n
    # x's bandwidth: median distance among 400 evenly spaced order statistics of x pooled
    # with its permuted copies (standardised by the pooled mean and sd).
    pooled = np.sort(np.concatenate([x] + [x[p] for p in perms]))
    picks = pooled[np.round(np.linspace(0, len(pooled) - 1, 400)).astype(int)]
    wq = (picks - pooled.mean()) / pooled.std()
    dq = np.abs(wq[:, None] - wq[None, :])[np.triu_indices(400, 1)]
    hx = np.median(dq[dq > 1e-12])

    def hsic(values):
        w = (values - pooled.mean()) / pooled.std()
        L = np.exp(-(w[:, None] - w[None, :]) ** 2 / (2 * hx ** 2))
        return np.trace(K @ H @ L @ H) / n ** 2

    t = hsic(x)
    tb = np.array([hsic(x[p]) for p in perms])
    assert out.info["statistic"] == pytest.approx(t, rel=1e-9)
    assert out.p_value == pytest.approx((1 + np.sum(tb >= t - 1e-12 * t)) / 100)
    assert out.e_value is None and out.method == "permutation"


# ------------------------------------------------------------------------------------------
# Samplers
# ------------------------------------------------------------------------------------------

def test_regression_and_gaussian_samplers_draw_from_the_fitted_conditional():
    rng = np.random.default_rng(6)
    n = 400
    X = rng.normal(size=(n, 3))
    X[:, 2] = 1.0 + 2.0 * X[:, 0] - X[:, 1] + 0.5 * rng.normal(size=n)
    design = np.column_stack([np.ones(n), X[:, :2]])
    beta = np.linalg.lstsq(design, X[:, 2], rcond=None)[0]
    resid = X[:, 2] - design @ beta
    query = np.array([[0.5, -1.0], [-2.0, 0.3]])
    expected_mean = np.column_stack([np.ones(2), query]) @ beta
    for kind, sd in [("regression", resid.std()), ("gaussian", resid.std())]:
        sampler = fit_conditional_sampler(X, 2, kind=kind)
        assert sampler.kind == kind
        draws = sampler.sample(query, np.random.default_rng(0), size=20_000)
        np.testing.assert_allclose(draws.mean(0), expected_mean, atol=0.02)
        np.testing.assert_allclose(draws.std(0), sd, rtol=0.03)
    # Residual resampling draws the fitted residuals themselves.
    reg = fit_conditional_sampler(X, 2, kind="regression")
    d = reg.sample(query[:1], np.random.default_rng(1), size=50)[:, 0] - expected_mean[0]
    # (up to the small ridge penalty)
    assert np.all(np.min(np.abs(d[:, None] - resid[None, :]), axis=1) < 1e-4)


def test_categorical_and_binary_columns_get_the_logistic_sampler():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    n = 600
    x1 = rng.normal(size=n)
    logits = np.column_stack([np.zeros(n), 2 * x1, -2 * x1])
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    code = (rng.random(n)[:, None] > np.cumsum(p, 1)).sum(1).astype(float)
    binary = (x1 + rng.normal(size=n) > 0).astype(float)
    X = np.column_stack([x1, code, binary])
    for kind in ("regression", "gaussian"):
        s = fit_conditional_sampler(X, 1, categorical={1}, kind=kind)
        assert s.kind == "logistic"
        assert fit_conditional_sampler(X, 2, kind=kind).kind == "logistic"  # 2 values
    s = fit_conditional_sampler(X, 1, categorical={1})
    query = np.array([[1.5, 1.0]])
    draws = s.sample(query, np.random.default_rng(0), size=20_000)[:, 0]
    assert set(np.unique(draws)) <= {0.0, 1.0, 2.0}
    # The frequencies are scikit-learn's own probabilities for that row.
    z = np.column_stack([(x1 - x1.mean()) / x1.std(),
                         (binary - binary.mean()) / binary.std()])
    ref = LogisticRegression(max_iter=1000).fit(z, code.astype(int))
    qz = np.array([[(1.5 - x1.mean()) / x1.std(), (1.0 - binary.mean()) / binary.std()]])
    np.testing.assert_allclose(np.bincount(draws.astype(int), minlength=3) / len(draws),
                               ref.predict_proba(qz)[0], atol=0.015)


# ------------------------------------------------------------------------------------------
# Type-I error, power, conditional vs marginal
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, sampler", [("marginal", "regression"),
                                           ("conditional", "regression"),
                                           ("conditional", "gaussian")])
def test_type_one_error_of_betting_on_an_ignored_feature(kind, sampler):
    rate, rows = _rates(_ignores_z, 2, kind, "betting", reps=200, n=360, sampler=sampler)
    print(f"\ntype-I betting {kind} ({sampler} sampler): {rate:.3f} over 200 runs (n=360), "
          f"mean rows {rows:.0f}")
    assert rate <= _bound(200)


@pytest.mark.parametrize("kind", ["marginal", "conditional"])
def test_type_one_error_of_the_permutation_fallback(kind):
    rate, _ = _rates(_ignores_z, 2, kind, "permutation", reps=200, n=100)
    print(f"\ntype-I permutation {kind}: {rate:.3f} over 200 runs (n=100)")
    assert rate <= _bound(200)


@pytest.mark.parametrize("kind", ["marginal", "conditional"])
def test_power_on_a_strong_effect_and_the_early_stop(kind):
    n = 400
    rate, rows = _rates(_strong_x1, 0, kind, "betting", reps=60, n=n)
    print(f"\npower betting {kind}: {rate:.3f} over 60 runs, mean rows used {rows:.0f} of {n}")
    assert rate >= 0.9
    assert rows < 0.4 * n


def test_conditional_power_on_a_moderate_effect_among_six_features():
    """The residualised conditional test finds a moderate effect early; the same game on
    (y, x, other features) (the unresidualised c-SKIT point) misses most of them."""
    rate, rows = _rates(_moderate_x2, 1, "conditional", "betting", reps=60, n=400)
    plain = []
    for r in range(60):
        X, y = _moderate_x2(np.random.default_rng(10_000 + r), 400)
        s = fit_conditional_sampler(X, 1)
        rest = np.delete(X, 1, axis=1)
        plain.append(betting_test(y, X[:, 1], kind="conditional", alpha=ALPHA, warmup=20,
                                  x_null=s.sample(rest, np.random.default_rng([r, 7])),
                                  rest=rest).rejected)
    print(f"\nmoderate effect, conditional: residualised {rate:.2f} (mean rows {rows:.0f}), "
          f"on (y, x, rest) {np.mean(plain):.2f} over 60 runs")
    assert rate >= 0.9 and rows < 250
    assert np.mean(plain) < rate - 0.3


@pytest.mark.parametrize("kind", ["marginal", "conditional"])
def test_power_of_the_permutation_fallback(kind):
    rate, _ = _rates(_strong_x1, 0, kind, "permutation", reps=50, n=100)
    print(f"\npower permutation {kind}: {rate:.3f} over 50 runs (n=100)")
    assert rate >= 0.9


def test_conditional_test_spares_a_proxy_the_marginal_test_flags():
    corr = np.corrcoef(_proxy_x3(np.random.default_rng(0), 5000)[0][:, [0, 2]].T)[0, 1]
    assert 0.88 < corr < 0.92
    cond, _ = _rates(_proxy_x3, 2, "conditional", "betting", reps=100, n=400)
    marg, rows = _rates(_proxy_x3, 2, "marginal", "betting", reps=100, n=400)
    print(f"\nproxy x3 (corr {corr:.2f}): conditional rejects {cond:.3f}, marginal {marg:.3f} "
          f"(mean rows {rows:.0f}) over 100 runs")
    assert cond <= _bound(100)
    assert marg >= 0.9


# ------------------------------------------------------------------------------------------
# The check
# ------------------------------------------------------------------------------------------

def _ctx(X, predict, names, *, categories=None, seed=0, background=None):
    """A CheckContext with the data in its own columns and a counting predict_full."""
    calls: list[int] = []

    def predict_full(Z):
        calls.append(len(Z))
        return predict(Z)

    zeros = np.zeros((len(X), X.shape[1]))
    ctx = CheckContext(
        X=X, background=X[:10] if background is None else background, feature_names=names,
        results={"m": Attribution(values=zeros)}, shapley={"m": False}, stochastic={"m": False},
        predict_rows=lambda Z: None, explain=lambda *a, **k: None, outputs=np.zeros(len(X)),
        seed=seed, data_X=X, data_background=X[:10] if background is None else background,
        data_feature_names=names, categories=categories or {}, predict_full=predict_full)
    return ctx, calls


def test_check_predicts_only_the_rows_it_uses_and_reports_every_feature():
    rng = np.random.default_rng(8)
    n = 1000
    X = rng.normal(size=(n, 3))
    ctx, calls = _ctx(X, lambda Z: _sigmoid(3 * Z[:, 0] - 3 * Z[:, 1]), ["a", "b", "c"])
    check = ImportanceTest(features=["a", "b"])
    result = check.run(ctx)
    d = result.details
    assert d["method"] == "betting" and d["rows_available"] == n
    assert d["model_rows_predicted"] == sum(calls) < n   # every stream stopped early
    assert all(c <= 64 for c in calls)
    used = [d["features"][f][t]["rows_used"] for f in "ab" for t in ("marginal", "conditional")]
    assert sum(calls) >= max(used) and sum(calls) - max(used) < 64 * 2
    for f in "ab":
        for t in ("marginal", "conditional"):
            e = d["features"][f][t]
            assert e["rejected"] and e["stopped_early"] and e["e_value"] >= 20
            assert result.figures[f"{f}/{t}/rejected"] == 1.0
            assert result.figures[f"{f}/{t}/p_value"] == pytest.approx(e["p_value"])
    assert "c" not in d["features"]
    assert result.figures["marginal/rejected_features"] == 2.0
    # The planner's estimate is an upper bound.
    assert check.estimated_model_rows(check.validate_params(), n_rows=n, n_methods=1) == n
    assert ImportanceTest(max_rows=300).estimated_model_rows(
        ImportanceTest(max_rows=300).validate_params(), n_rows=n, n_methods=1) == 300
    # Same seed, same answer; an ignored feature costs every row.
    again, _ = _ctx(X, lambda Z: _sigmoid(3 * Z[:, 0] - 3 * Z[:, 1]), ["a", "b", "c"])
    assert ImportanceTest(features=["a", "b"]).run(again).details == d
    ctx3, calls3 = _ctx(X, lambda Z: _sigmoid(3 * Z[:, 0] - 3 * Z[:, 1]), ["a", "b", "c"])
    out = ImportanceTest(features=["c"], tests=["marginal"]).run(ctx3)
    assert sum(calls3) == n and not out.details["features"]["c"]["marginal"]["rejected"]


def test_check_uses_the_permutation_fallback_on_few_rows_and_max_rows():
    rng = np.random.default_rng(9)
    X = rng.normal(size=(500, 2))
    ctx, calls = _ctx(X, lambda Z: _sigmoid(2 * Z[:, 0]), ["a", "b"])
    result = ImportanceTest(max_rows=120).run(ctx)
    d = result.details
    assert d["method"] == "permutation" and d["rows_available"] == 120 and sum(calls) == 120
    for t in ("marginal", "conditional"):
        assert d["features"]["a"][t]["rejected"] and d["features"]["a"][t]["e_value"] is None
        assert d["features"]["a"][t]["method"] == "permutation"
        assert d["features"]["a"][t]["rows_used"] == 120
    forced = ImportanceTest(method="betting", min_betting_rows=10, max_rows=120).run(
        _ctx(X, lambda Z: _sigmoid(2 * Z[:, 0]), ["a", "b"])[0])
    assert forced.details["method"] == "betting"
    assert forced.details["features"]["a"]["marginal"]["method"] == "betting"


def test_end_to_end_classifier_with_a_categorical_and_missing_values(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(12)
    n = 900
    df = pd.DataFrame({"income": rng.normal(size=n), "debt": rng.normal(size=n),
                       "region": pd.Categorical(rng.choice(["north", "south", "east"], n))})
    df.loc[rng.random(n) < 0.08, "debt"] = np.nan
    logit = 3 * df["income"] - 3 * df["debt"].fillna(0) + 4 * (df["region"] == "north") - 1
    y = (logit + 0.3 * rng.normal(size=n) > 0).astype(int)
    with threadpool_limits(limits=1, user_api="openmp"):
        model = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=60,
                                               random_state=0).fit(df, y)
        expl = mlflow_xai.explain(model, df, targets=y, explainers=["exact_shap"],
                                  background_rows=10, output_dir=tmp_path,
                                  checks={"importance_test": {}})
    entry = expl.checks["importance_test"]
    assert entry["status"] == "ok", entry
    d = entry["details"]
    assert set(d) >= {"alpha", "method", "sampler", "rows_available", "tests", "features"}
    assert d["alpha"] == 0.05 and d["method"] == "betting" and d["sampler"] == "regression"
    assert d["rows_available"] == n and d["tests"] == ["marginal", "conditional"]
    keys = {"p_value", "e_value", "rejected", "rows_used", "steps", "method", "stopped_early"}
    for feature in ("income", "debt", "region"):
        for test in ("marginal", "conditional"):
            e = d["features"][feature][test]
            assert keys <= set(e)
            assert isinstance(e["p_value"], float) and isinstance(e["e_value"], float)
            assert isinstance(e["rejected"], bool) and isinstance(e["stopped_early"], bool)
            assert isinstance(e["rows_used"], int) and isinstance(e["steps"], int)
            assert e["rejected"] and e["stopped_early"], (feature, test, e)
            assert entry["figures"][f"{feature}/{test}/rejected"] == 1.0
            assert entry["figures"][f"{feature}/{test}/p_value"] == pytest.approx(e["p_value"])
    assert d["features"]["region"]["conditional"]["sampler"] == "logistic"
    assert d["features"]["income"]["conditional"]["sampler"] == "regression"
    # Missing debt: dropped for debt's tests and for every conditional test, and counted.
    n_missing = int(df["debt"].isna().sum())
    assert d["features"]["debt"]["rows_missing"] == n_missing > 0
    assert d["features"]["debt"]["marginal"]["rows_dropped_missing"] == n_missing
    assert d["features"]["income"]["marginal"]["rows_dropped_missing"] == 0
    assert d["features"]["income"]["conditional"]["rows_dropped_missing"] == n_missing
    assert entry["figures"]["marginal/rejected_features"] == 3.0
    # The check's model rows are the rows it predicted: fewer than the rows available.
    assert entry["model_evals"] == d["model_rows_predicted"] < n
    assert entry["model_evals"] % 64 == 0
    import json

    stored = json.loads((tmp_path / "stability.json").read_text())["importance_test"]
    assert stored["details"]["features"]["region"]["marginal"]["rejected"] is True


# ------------------------------------------------------------------------------------------
# Bad parameters
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("params, words", [
    ({"features": ["incme"]}, ["unknown feature", "incme", "did you mean 'income'",
                               "['income', 'debt']"]),
    ({"tests": ["foo"]}, ["tests", "marginal", "conditional", "foo"]),
    ({"tests": []}, ["tests", "non-empty"]),
    ({"alpha": 1.5}, ["alpha", "(0, 1)", "1.5"]),
    ({"method": "exact"}, ["method", "'betting'"]),
    ({"warmup": 1}, ["warmup", "in [2, 1000]"]),
    ({"n_permutations": 5}, ["n_permutations", "in [19, 9999]"]),
    ({"sampler": "knockoff"}, ["sampler", "'gaussian'"]),
])
def test_bad_parameters_are_refused_with_what_to_do(params, words):
    X = np.random.default_rng(0).normal(size=(50, 2))
    ctx, calls = _ctx(X, lambda Z: Z[:, 0], ["income", "debt"])
    with pytest.raises(ConfigError) as info:
        ImportanceTest(**params).run(ctx)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert calls == []  # refused before any model call


def test_bad_parameters_through_explain():
    X = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 2)), columns=["income", "debt"])
    with pytest.raises(ConfigError, match="income"):
        mlflow_xai.explain(lambda a: a[:, 0], X, explainers=["exact_shap"], background_rows=5,
                           checks={"importance_test": {"features": ["sex"]}})
    with pytest.raises(ConfigError, match="alpha"):
        mlflow_xai.explain(lambda a: a[:, 0], X, explainers=["exact_shap"], background_rows=5,
                           checks={"importance_test": {"alpha": 1.5}})


# ------------------------------------------------------------------------------------------
# What the governance rules read: evidence, and a sampler that does not fit
# ------------------------------------------------------------------------------------------

def test_a_misfit_sampler_is_flagged_and_the_test_marked_unreliable():
    """z = x1^2 + noise with the default (linear) sampler: the conditional test rejects the
    unused z, and the sampler check says the test cannot be trusted; with z linear in x1 the
    sampler passes its check."""
    def model(Z):
        Z = np.asarray(Z, dtype=float)
        return _sigmoid(Z[:, 0] ** 2 - 1 + 0.5 * Z[:, 1])

    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(2, 600))
    for z, misfit in ((x1 ** 2 + 0.5 * rng.normal(size=600), True),
                      (x1 + 0.5 * rng.normal(size=600), False)):
        X = pd.DataFrame({"x1": x1, "x2": x2, "z": z})
        expl = mlflow_xai.explain(model, X, explainers=["exact_shap"], progress=False,
                                  checks={"importance_test": {"features": ["z"],
                                                              "tests": ["conditional"]}})
        record = expl.checks["importance_test"]["details"]["features"]["z"]["conditional"]
        assert record["sampler_check"]["rejected"] is misfit
        assert record["reliable"] is (not misfit)


def test_repeated_rows_of_discrete_data_fit_the_sampler_as_they_are():
    """z equals x1 in 95 % of rows (discrete): fitted on every row, the sampler knows that and
    the unused z is not rejected (fitted on distinct rows only it was, in 20 of 20 runs)."""
    rejected = 0
    for r in range(10):
        rng = np.random.default_rng(r)
        X = rng.integers(0, 2, size=(400, 3)).astype(float)
        X[:, 2] = np.where(rng.random(400) < 0.95, X[:, 0], 1 - X[:, 0])
        ctx, _ = _ctx(X, lambda Z: _sigmoid(2 * Z[:, 0] + Z[:, 1] - 1.5), ["x1", "x2", "z"],
                      seed=r)
        result = ImportanceTest(features=["z"], tests=["conditional"]).run(ctx)
        rejected += result.details["features"]["z"]["conditional"]["rejected"]
    assert rejected <= 1


def test_details_record_the_evidence_the_rules_need():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(300, 3))
    X[:, 2] = 1.0  # one value: no test can show anything about it
    ctx, _ = _ctx(X, lambda Z: _sigmoid(Z[:, 0]), ["a", "b", "c"])
    details = ImportanceTest(tests=["marginal"]).run(ctx).details
    assert details["features"]["c"]["distinct_values"] == 1
    a = details["features"]["a"]["marginal"]
    # betting: the warm-up rows (20 steps of 2 rows) are not tested rows
    assert a["rows_tested"] == a["rows_used"] - 40 and a["min_p_value"] == 0.0
    ctx, _ = _ctx(X[:80], lambda Z: _sigmoid(Z[:, 0]), ["a", "b", "c"])
    small = ImportanceTest(tests=["marginal"], n_permutations=39).run(ctx).details
    assert small["method"] == "permutation"
    assert small["features"]["b"]["marginal"]["min_p_value"] == pytest.approx(1 / 40)
    assert small["features"]["b"]["marginal"]["rows_tested"] == 80


def test_the_sampler_check_sees_a_misfit_among_many_columns_and_a_determined_feature():
    """Checked pairwise, a linear sampler of z = x1^2 + noise is flagged with eight more
    columns beside it; a feature the others determine (sex = title) leaves nothing free, and
    the governance rules count its effective rows as ~0."""
    from mlflow_xai_checks.importance_test import independent_share, sampler_check

    rng = np.random.default_rng(0)
    x1 = rng.normal(size=600)
    A = np.column_stack([x1, rng.normal(size=(600, 9)), x1 ** 2 + 0.5 * rng.normal(size=600)])
    check = sampler_check(A, 10, fit_conditional_sampler(A, 10), False, rng)
    assert check["rejected"] and check["worst_column"] == 0 and check["columns_checked"] == 10
    B = rng.normal(size=(600, 10))
    B[:, 9] = B[:, 0] + 0.48 * rng.normal(size=600)
    assert not sampler_check(B, 9, fit_conditional_sampler(B, 9), False, rng)["rejected"]
    sex = rng.integers(0, 2, 1000).astype(float)
    C = np.column_stack([rng.normal(size=1000), sex, sex])  # a title column equal to sex
    assert independent_share(C, 2, fit_conditional_sampler(C, 2), False, rng) < 0.05
    free = np.column_stack([rng.normal(size=1000), rng.integers(0, 2, 1000), sex])
    assert independent_share(free, 2, fit_conditional_sampler(free, 2), False, rng) > 0.9
