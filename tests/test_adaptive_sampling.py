"""Standard errors, n_samples='auto' and the cost hook of the sampling Shapley methods.

The interaction model is a fixed random tanh network plus products (d = 8, 20 background rows),
so exact_shap gives the reference values the sampled ones are judged against.
"""

from __future__ import annotations

import numpy as np
import pytest
from mlflow_xai_torch._shapley import converged, size_mass
from mlflow_xai_torch.exact import ExactShap
from mlflow_xai_torch.kernel import CoalitionDesign, KernelShap
from mlflow_xai_torch.permutation import PermutationShap

from mlflow_xai.base import ExplainTask
from mlflow_xai.errors import ConfigError
from mlflow_xai.plugin_api import method_class

D = 8
_RNG = np.random.default_rng(0)
_W1, _W2, _W = _RNG.normal(size=(D, 16)), _RNG.normal(size=16), _RNG.normal(size=D)
X = _RNG.normal(size=(30, D))
BACKGROUND = _RNG.normal(size=(20, D))


def interaction_model(Z: np.ndarray) -> np.ndarray:
    return np.tanh(Z @ _W1) @ _W2 + Z[:, 0] * Z[:, 1] - 0.5 * Z[:, 2] * Z[:, 3]


def linear_model(Z: np.ndarray) -> np.ndarray:
    return Z @ _W + 1.0


def _task(f, seed: int = 0) -> ExplainTask:
    return ExplainTask(predict=f, X=X, background=BACKGROUND,
                       feature_names=[f"x{i}" for i in range(D)], seed=seed)


@pytest.fixture(scope="module")
def exact() -> np.ndarray:
    return ExactShap().explain(_task(interaction_model)).values


def _efficiency_gap(result, f) -> float:
    return float(np.abs(result.values.sum(1) + result.base_values - f(X)).max())


# (a) ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, n_samples", [(KernelShap, 128), (PermutationShap, 400)])
def test_nominal_95_percent_intervals_cover_the_exact_values(cls, n_samples, exact):
    # Measured over these 5 seeds: kernel_shap 0.94, permutation_shap 0.93 (nominal 0.95).
    covered = []
    for seed in range(5):
        result = cls(n_samples=n_samples).explain(_task(interaction_model, seed))
        assert result.standard_errors.shape == X.shape
        assert np.all(result.standard_errors > 0)
        covered.append(np.abs(result.values - exact) <= 1.96 * result.standard_errors)
        assert result.info["max_standard_error"] == pytest.approx(result.standard_errors.max())
        assert result.info["samples_used"] > 0
    coverage = float(np.mean(covered))
    assert coverage >= 0.85, f"{cls.name}: the 95% intervals covered only {coverage:.3f}"


def test_exhaustive_kernel_design_has_zero_standard_errors(exact):
    result = KernelShap(n_samples=2**D - 2).explain(_task(interaction_model))
    assert result.info["exact"] is True
    np.testing.assert_allclose(result.values, exact, atol=1e-10)
    assert np.all(result.standard_errors == 0) and result.info["max_standard_error"] == 0.0


# (b) ------------------------------------------------------------------------------------------

def _mean_se(cls, n_samples: int, **params) -> tuple[float, dict]:
    runs = [cls(n_samples=n_samples, **params).explain(_task(interaction_model, seed))
            for seed in range(3)]
    return float(np.mean([r.standard_errors.mean() for r in runs])), runs[0].info


def test_permutation_standard_errors_shrink_as_one_over_sqrt_samples():
    small, info_small = _mean_se(PermutationShap, 100)
    large, info_large = _mean_se(PermutationShap, 900)
    expected = np.sqrt(info_large["permutations"] / info_small["permutations"])  # 64 / 7 pairs
    assert small / large == pytest.approx(expected, rel=0.25)


def test_kernel_standard_errors_shrink_as_one_over_sqrt_sampled_pairs():
    # Both budgets enumerate the size-1 and size-7 layers (16 coalitions) and sample the rest:
    # 12 pairs against 60, so the errors should shrink by about sqrt(5).
    # The classic paired estimator: its fit does not grow with the pairs, so 1/sqrt applies
    # (the default polynomial fit gets richer with more pairs: its errors fall faster).
    small, info_small = _mean_se(KernelShap, 40, estimator="kernel")
    large, info_large = _mean_se(KernelShap, 136, estimator="kernel")
    pairs_small, pairs_large = (info_small["coalitions"] - 16) / 2, (info_large["coalitions"] - 16) / 2
    assert (pairs_small, pairs_large) == (12, 60)
    assert small / large == pytest.approx(np.sqrt(pairs_large / pairs_small), rel=0.3)


# (c) ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [KernelShap, PermutationShap])
def test_auto_stops_at_once_on_a_linear_model(cls):
    result = cls(n_samples="auto").explain(_task(linear_model))
    info = result.info
    assert info["converged"] is True and info["rounds"] == 1
    assert info["samples_used"] <= 256
    expected = _W * (X - BACKGROUND.mean(axis=0))
    np.testing.assert_allclose(result.values, expected, atol=1e-10)
    assert _efficiency_gap(result, linear_model) < 1e-10


@pytest.mark.parametrize("cls", [KernelShap, PermutationShap])
def test_auto_samples_more_on_a_model_with_interactions(cls, exact):
    # A small first round, so that the number of rounds can show (the default polynomial fit
    # converges on this model within its default first round of 128).
    linear = cls(n_samples="auto", min_samples=32).explain(_task(linear_model)).info
    result = cls(n_samples="auto", tolerance=0.05, min_samples=32).explain(
        _task(interaction_model))
    info = result.info
    assert info["converged"] is True and info["rounds"] > 1
    assert info["samples_used"] > 2 * linear["samples_used"]
    assert _efficiency_gap(result, interaction_model) < 1e-10
    # Converged means max_j SE_j <= 5% of max_j |phi_j| on every row; the error follows.
    scale = np.abs(result.values).max(axis=1, keepdims=True)
    assert np.all(result.standard_errors <= 0.05 * scale + 1e-12)
    assert np.abs(result.values - exact).max() <= 0.15 * np.abs(exact).max()


@pytest.mark.parametrize("cls", [KernelShap, PermutationShap])
def test_auto_stops_at_max_samples_unconverged(cls):
    result = cls(n_samples="auto", tolerance=1e-6, min_samples=32, max_samples=160).explain(
        _task(interaction_model))
    assert result.info["converged"] is False
    assert result.info["samples_used"] <= 160
    assert _efficiency_gap(result, interaction_model) < 1e-10


def test_auto_kernel_rounds_keep_the_design_valid():
    """Appended pairs re-normalise every sampled weight: with kernel sampling the sampled part
    always carries exactly the kernel mass of the sizes left to sample, round after round,
    and the layers enumerated in the first round stay enumerated."""
    design = CoalitionDesign(D, 64, np.random.default_rng(0), "kernel")
    enumerated = design.enumerated.copy()
    total_mass = sum(size_mass(D, s) for s in range(1, D))
    for pairs in (10, 10, 20):
        design.add_pairs(pairs)
        assert design.weights().sum() == pytest.approx(total_mass, rel=1e-12)
        assert np.array_equal(design.masks()[:len(enumerated)], enumerated)
        pair = design.pair_index()
        assert np.bincount(pair[pair >= 0]).tolist() == [2] * design.n_pairs


def test_auto_kernel_finishes_on_the_exhaustive_design(exact):
    # 2**8 - 2 = 254 coalitions: a doubling round that covers them evaluates the missing ones
    # (reusing those already sampled) and the result is exact.
    result = KernelShap(n_samples="auto", tolerance=1e-6).explain(_task(interaction_model))
    assert result.info["exact"] is True and result.info["converged"] is True
    assert result.info["samples_used"] <= 2 * 254
    np.testing.assert_allclose(result.values, exact, atol=1e-10)


def test_rows_with_all_negligible_attributions_do_not_block_the_stop():
    phi = np.array([[1.0, -0.5], [1e-9, -1e-9]])
    se = np.array([[0.02, 0.01], [1e-4, 1e-4]])  # row 2: large next to its own ~0 values
    assert converged(phi, se, tolerance=0.05)    # judged against 1% of the largest row
    assert not converged(phi, se * 3, tolerance=0.05)
    assert not converged(phi, np.full_like(se, np.nan), tolerance=0.05)


def test_a_single_pair_has_no_standard_error_to_report():
    result = PermutationShap(n_samples=1).explain(_task(interaction_model))
    assert np.isnan(result.standard_errors).all()
    assert result.info["max_standard_error"] is None
    assert _efficiency_gap(result, interaction_model) < 1e-10


def test_auto_parameters_are_validated():
    assert KernelShap(n_samples="auto").validate_params()["n_samples"] == "auto"
    with pytest.raises(ConfigError, match="n_samples must be an integer >= 2 or 'auto'"):
        KernelShap(n_samples="many").validate_params()
    with pytest.raises(ConfigError, match="min_samples .* larger than max_samples"):
        PermutationShap(n_samples="auto", min_samples=500, max_samples=100).explain(
            _task(linear_model))


def test_fixed_n_samples_results_are_unchanged_by_the_new_parameters():
    plain = KernelShap(n_samples=100).explain(_task(interaction_model, 3))
    tuned = KernelShap(n_samples=100, tolerance=0.5, max_samples=200).explain(
        _task(interaction_model, 3))
    np.testing.assert_array_equal(plain.values, tuned.values)
    assert "rounds" not in plain.info and "converged" not in plain.info


# (d) ------------------------------------------------------------------------------------------

def test_estimated_model_rows_match_the_counted_model_rows():
    from sklearn.linear_model import LinearRegression

    import mlflow_xai

    rng = np.random.default_rng(1)
    data = rng.normal(size=(200, 6))
    model = LinearRegression().fit(data, data @ np.arange(1.0, 7.0))
    explainers = {"kernel_shap": {"n_samples": 50}, "permutation_shap": {"n_samples": 100},
                  "exact_shap": {}, "lime": {"n_samples": 300},
                  "permutation_importance": {"n_repeats": 3}}
    expl = mlflow_xai.explain(model, data, targets=data @ np.arange(1.0, 7.0),
                              explainers=explainers, max_rows=20, background_rows=15)
    for name, params in explainers.items():
        method = method_class(name, "explainer")(**params)
        estimate = method.estimated_model_rows(method.validate_params(), n_rows=20,
                                               n_features=6, n_background=15)
        counted = expl.summary["methods"][name]["model_evals"]
        assert estimate == pytest.approx(counted, rel=0.03), name  # measured: equal


class _Counting:
    """A model function that counts the rows it is called on."""

    def __init__(self, f) -> None:
        self.f, self.rows = f, 0

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        self.rows += len(Z)
        return self.f(Z)


@pytest.mark.parametrize("method", [KernelShap(n_samples="auto", max_samples=512),
                                    PermutationShap(n_samples="auto", max_samples=1024)],
                         ids=["kernel_shap", "permutation_shap"])
def test_auto_estimate_is_an_upper_bound(method):
    model = _Counting(interaction_model)
    method.explain(_task(model))
    bound = method.estimated_model_rows(method.validate_params(), n_rows=len(X), n_features=D,
                                        n_background=len(BACKGROUND))
    assert 0 < model.rows <= bound
