"""kernel_shap's default estimator (odd-polynomial regression on stratified pairs, see
``mlflow_xai_torch._poly``): exactness, efficiency, accuracy against shapiq's kADD-SHAP at equal
budget, its standard errors, its design, and the wide-data guard.

The interaction model is a fixed random tanh network plus two- and three-way products (d = 10,
16 background rows), so exact_shap gives reference values by enumeration.
"""

from __future__ import annotations

import logging
import time
import warnings
from math import comb

import numpy as np
import pytest
from mlflow_xai_torch import _poly
from mlflow_xai_torch._shapley import kernel_weight, size_mass
from mlflow_xai_torch.exact import ExactShap
from mlflow_xai_torch.kernel import MAX_FEATURES, KernelShap, identifiable_samples

from mlflow_xai.base import ExplainTask

D = 10
_RNG = np.random.default_rng(0)
_W1, _W2 = _RNG.normal(size=(D, 16)), _RNG.normal(size=16)
X = _RNG.normal(size=(8, D))
BACKGROUND = _RNG.normal(size=(16, D))


def interaction_model(Z: np.ndarray) -> np.ndarray:
    return (np.tanh(Z @ _W1 / 2) @ _W2 + Z[:, 0] * Z[:, 1] - 0.5 * Z[:, 2] * Z[:, 3]
            + 0.3 * Z[:, 4] * Z[:, 5] * Z[:, 6])


def _task(f=interaction_model, seed: int = 0, X=X, background=BACKGROUND) -> ExplainTask:
    return ExplainTask(predict=f, X=X, background=background,
                       feature_names=[f"x{i}" for i in range(X.shape[1])], seed=seed)


@pytest.fixture(scope="module")
def exact() -> np.ndarray:
    return ExactShap().explain(_task()).values


def _efficiency_gap(result, f=interaction_model, X=X) -> float:
    return float(np.abs(result.values.sum(1) + result.base_values - f(X)).max())


# Exactness and efficiency ------------------------------------------------------------------

def test_the_default_is_the_polynomial_estimator_and_exact_with_an_exhaustive_budget(exact):
    assert KernelShap.defaults["estimator"] == "poly" and KernelShap.defaults["order"] == 3
    result = KernelShap(n_samples=2**D - 2).explain(_task())
    assert result.info["exact"] is True and result.info["estimator"] == "enumeration"
    np.testing.assert_allclose(result.values, exact, atol=1e-10)
    assert np.all(result.standard_errors == 0)


def test_every_stratum_enumerated_is_exact_too(exact):
    """With every pair in the design (whatever the penalty GCV picks) the order-3 fit leaves
    a residual orthogonal to every additive game, so its Shapley values are exact: the
    regression itself is exact, not only the enumeration path."""
    design = _poly.StratifiedPairs(D, np.random.default_rng(0))
    design.grow(design.total_pairs)
    assert all(st.count == st.total for st in design.strata)
    import torch

    from mlflow_xai.plugin_api import coalition_values
    masks = design.masks()
    x, bg = torch.as_tensor(X), torch.as_tensor(BACKGROUND)

    def predict(t):
        return torch.as_tensor(interaction_model(t.numpy()))

    values = coalition_values(predict, x, bg, torch.as_tensor(masks), max_rows=1 << 20)
    s_col, c_col = design.pair_columns()
    odd = (values[:, s_col] - values[:, c_col]) / 2
    f_x, base = predict(x), predict(bg).mean()
    groups, fpc = design.variance_groups()
    for primal_max in (_poly.PRIMAL_MAX_COLUMNS, 0):       # primal and dual forms
        old = _poly.PRIMAL_MAX_COLUMNS
        _poly.PRIMAL_MAX_COLUMNS = primal_max
        try:
            fit = _poly.fit(torch.as_tensor(design.first_halves()),
                            torch.as_tensor(design.pair_weights()), odd, (f_x - base) / 2,
                            groups, fpc)
        finally:
            _poly.PRIMAL_MAX_COLUMNS = old
        assert fit.order == 3
        np.testing.assert_allclose(fit.phi.numpy(), exact, atol=1e-8)
        assert np.all(fit.se.numpy() == 0) or np.isnan(fit.se.numpy()).all()


@pytest.mark.parametrize("params", [{"n_samples": 40}, {"n_samples": 100},
                                    {"n_samples": 300}, {"n_samples": 300, "order": 1},
                                    {"n_samples": 300, "sampling": "leverage"},
                                    {"n_samples": "auto", "max_samples": 512}])
def test_efficiency_holds_to_1e_9(params):
    for seed in range(2):
        result = KernelShap(**params).explain(_task(seed=seed))
        assert _efficiency_gap(result) < 1e-9, params
        assert result.info["estimator"] == "poly"


def test_a_linear_model_is_exact_at_any_budget():
    w = np.arange(1.0, D + 1)
    result = KernelShap(n_samples=64).explain(_task(lambda Z: Z @ w + 2.0))
    np.testing.assert_allclose(result.values, w * (X - BACKGROUND.mean(0)), atol=1e-10)
    np.testing.assert_allclose(result.standard_errors, 0.0, atol=1e-10)


# Accuracy at equal budget -------------------------------------------------------------------

def _kadd(seed: int, budget: int) -> np.ndarray:
    """shapiq's kADD-SHAP (order 2) on the same game: the mean over the same background rows
    of the same model; shapiq's budget counts the empty and grand coalitions too."""
    shapiq = pytest.importorskip("shapiq")
    out = np.zeros_like(X)
    for r, x in enumerate(X):
        def game(C, x=x):
            C = np.atleast_2d(np.asarray(C, dtype=bool))
            mixed = np.where(C[:, None, :], x[None, None, :], BACKGROUND[None])
            return interaction_model(mixed.reshape(-1, D)).reshape(len(C), -1).mean(1)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # shapiq's border-trick notices
            values = shapiq.kADDSHAP(n=D, max_order=2, random_state=100 * seed + r
                                     ).approximate(budget + 2, game)
        out[r] = [values[(j,)] for j in range(D)]
    return out


def test_error_at_256_is_below_kaddshap_and_the_classic_estimator(exact):
    # Measured over seeds 0-4: new 0.0046-0.0065, kADD-SHAP 0.0086-0.0166 (ratio 0.38-0.57),
    # classic paired Kernel SHAP 0.0128-0.0201.
    for seed in range(3):
        ours = np.abs(KernelShap(n_samples=256).explain(_task(seed=seed)).values - exact).mean()
        old = np.abs(KernelShap(n_samples=256, estimator="kernel").explain(
            _task(seed=seed)).values - exact).mean()
        kadd = np.abs(_kadd(seed, 256) - exact).mean()
        assert ours <= 0.75 * kadd, (seed, ours, kadd)
        assert ours <= 0.6 * old, (seed, ours, old)


def test_standard_errors_cover_the_exact_values(exact):
    covered = []
    for seed in range(4):
        result = KernelShap(n_samples=256).explain(_task(seed=seed))
        assert np.all(result.standard_errors > 0)
        covered.append(np.abs(result.values - exact) <= 1.96 * result.standard_errors)
    coverage = float(np.mean(covered))
    assert coverage >= 0.85, coverage   # measured 0.94 (0.96 at d = 8, 128 samples)


# The design ---------------------------------------------------------------------------------

def test_the_stratified_design_spends_the_budget_on_distinct_pairs_with_the_kernel_mass():
    design = _poly.StratifiedPairs(D, np.random.default_rng(1))
    total_mass = sum(size_mass(D, s) for s in range(1, D))
    for pairs in (20, 50, 130, 300):                        # rounds append pairs
        design.grow(pairs)
        assert design.n_pairs == pairs
        first = design.first_halves()
        keys = {tuple(r) for r in first}
        assert len(keys) == pairs                           # distinct pairs
        assert not keys & {tuple(~r) for r in first}       # and no pair twice reversed
        assert 2 * design.pair_weights().sum() == pytest.approx(total_mass, rel=0.02)
        for st in design.strata:
            mine = first[design.stratum_of_pairs() == design.strata.index(st)]
            assert np.all(mine.sum(1) == st.size)
            if st.count == st.total:                        # enumerated: the kernel weight
                w = design.pair_weights()[design.stratum_of_pairs() == design.strata.index(st)]
                np.testing.assert_allclose(w, kernel_weight(D, st.size))
    assert design.strata[0].count == design.strata[0].total == D   # the border first
    masks = design.masks()
    assert masks.shape == (600, D) and len({tuple(m) for m in masks}) == 600


def test_systematic_rounding_keeps_the_total_and_the_floors():
    rng = np.random.default_rng(0)
    expected = np.array([0.3, 2.5, 7.2, 0.0, 1.0])
    for _ in range(50):
        counts = _poly._systematic(expected, 11, rng)
        assert counts.sum() == 11
        assert np.all(counts >= np.floor(expected)) and np.all(counts <= np.ceil(expected))


def test_primal_and_kernel_forms_agree():
    import torch

    design = _poly.StratifiedPairs(D, np.random.default_rng(2))
    design.grow(200)
    rng = np.random.default_rng(3)
    first = torch.as_tensor(design.first_halves())
    odd = torch.as_tensor(rng.normal(size=(4, 200)) + design.first_halves() @ rng.normal(size=D))
    full = torch.as_tensor(rng.normal(size=4))
    groups, fpc = design.variance_groups()
    w = torch.as_tensor(design.pair_weights())
    primal = _poly.fit(first, w, odd, full, groups, fpc)
    old = _poly.PRIMAL_MAX_COLUMNS
    _poly.PRIMAL_MAX_COLUMNS = 0
    try:
        dual = _poly.fit(first, w, odd, full, groups, fpc)
    finally:
        _poly.PRIMAL_MAX_COLUMNS = old
    assert primal.penalty == dual.penalty
    np.testing.assert_allclose(primal.phi.numpy(), dual.phi.numpy(), atol=1e-9)
    np.testing.assert_allclose(primal.se.numpy(), dual.se.numpy(), atol=1e-9)


def test_the_classic_estimator_is_still_there():
    result = KernelShap(n_samples=100, estimator="kernel").explain(_task())
    assert result.info["estimator"] == "kernel" and "order" not in result.info
    assert _efficiency_gap(result) < 1e-9


# Wide data ------------------------------------------------------------------------------------

def test_wide_data_raises_the_budget_to_the_identifiable_bound_quickly(caplog):
    d = 2000
    rng = np.random.default_rng(0)
    w = rng.normal(size=d)
    Xw, bg = rng.normal(size=(6, d)), rng.normal(size=(10, d))

    def f(Z):
        return np.tanh(Z @ w / np.sqrt(d)) + 0.1 * Z[:, 0] * Z[:, 1]

    method = KernelShap(n_samples=16)
    estimate = method.estimated_model_rows(method.validate_params(), n_rows=6, n_features=d,
                                           n_background=10)
    assert estimate == 6 * 4000 * 10 + 6 + 10
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="mlflow_xai_torch.kernel"):
        result = method.explain(_task(f, X=Xw, background=bg))
    seconds = time.perf_counter() - start
    assert seconds < 60, seconds   # measured 1.6 s on 2 quiet cores, 17 s at load average 7
    raised = result.info["budget_raised"]
    assert raised["requested"] == 16 and raised["used"] == 4000 == identifiable_samples(d)
    assert "feature_groups=" in raised["reason"] and "permutation_shap" in raised["reason"]
    assert any("cannot be identified" in r.message for r in caplog.records)
    assert result.info["coalitions"] == 4000 and result.info["order"] == 1
    assert _efficiency_gap(result, f, Xw) < 1e-9
    assert np.all(np.isfinite(result.standard_errors))


def test_too_wide_data_is_declined_with_the_ways_out():
    d = MAX_FEATURES + 1
    task = _task(lambda Z: Z[:, 0], X=np.zeros((2, d)), background=np.zeros((3, d)))
    reason = KernelShap().supports(task)
    assert reason and "feature_groups" in reason and "permutation_shap" in reason
    assert KernelShap().estimated_model_rows({}, n_rows=2, n_features=d, n_background=3) is None


def test_auto_budgets_are_raised_too():
    d = 40
    rng = np.random.default_rng(0)
    Xw, bg = rng.normal(size=(3, d)), rng.normal(size=(5, d))
    result = KernelShap(n_samples="auto", min_samples=16, max_samples=32, tolerance=1e-9
                        ).explain(_task(lambda Z: Z.sum(1) + Z[:, 0] * Z[:, 1], X=Xw,
                                        background=bg))
    assert result.info["budget_raised"]["used"] == {"min_samples": 80, "max_samples": 80}
    assert result.info["samples_used"] == 80


def test_groups_are_the_players():
    GroupedTask = pytest.importorskip("mlflow_xai.groups").GroupedTask

    index = np.repeat(np.arange(5), 2)                     # 10 columns, 5 groups of two
    task = GroupedTask(predict=interaction_model, X=X, background=BACKGROUND,
                       feature_names=[f"g{i}" for i in range(5)], seed=0,
                       feature_groups=index, column_names=[f"x{i}" for i in range(D)])
    assert KernelShap.explains_groups
    result = KernelShap(n_samples=2**5 - 2).explain(task)    # exhaustive over 5 players
    assert result.values.shape == (len(X), 5) and result.info["exact"] is True
    assert _efficiency_gap(result) < 1e-9
    # The grouped game equals the game on merged columns: compare with exact_shap over it.
    grouped_exact = ExactShap().explain(task).values
    np.testing.assert_allclose(result.values, grouped_exact, atol=1e-10)


def test_comb_helpers_used_by_the_kernel_form():
    # e_3 of a +-1 vector through its sum (Newton's identities) against brute force.
    rng = np.random.default_rng(0)
    for M in (3, 5, 9):
        z = rng.choice([-1.0, 1.0], size=M)
        brute = sum(z[i] * z[j] * z[k] for i in range(M) for j in range(i + 1, M)
                    for k in range(j + 1, M))
        assert _poly._e3(z.sum(), M) == pytest.approx(brute)
        assert comb(M, 3) == _poly._e3(float(M), M)

