"""The batched torch engine: accuracy against exact values and peers, batch-size invariance,
gradient methods against Captum, LIME against the lime library, memory and OOM back-off."""

from __future__ import annotations

import numpy as np
import pytest

import mlflow_xai
from mlflow_xai.base import ExplainTask
from mlflow_xai.plugins import get_registry
from mlflow_xai.testing import exact_shapley


@pytest.fixture(scope="module")
def mlp():
    """A fixed random MLP with one output and 10 features."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32),
                              torch.nn.Tanh(), torch.nn.Linear(32, 1)).eval()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 10))
    background = rng.normal(size=(20, 10))

    def f(a: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.as_tensor(a, dtype=torch.float32))[:, 0].double().numpy()

    return net, f, X, background


def _task(f, X, background, *, max_batch_rows=65536, seed=0, module=None):
    import torch

    forward = None
    if module is not None:
        def forward(x):
            return module(x.to(torch.float32))[:, 0]
    return ExplainTask(predict=f, X=X, background=background,
                       feature_names=[f"x{i}" for i in range(X.shape[1])], seed=seed,
                       max_batch_rows=max_batch_rows, forward_grad=forward)


def _method(name, **params):
    return get_registry().get(name).cls(**params)


@pytest.fixture(scope="module")
def exact_phi(mlp):
    _, f, X, background = mlp
    return exact_shapley(f, X, background)[0]


def _rel_error(phi, exact):
    return np.abs(phi - exact).mean() / np.abs(exact).mean()


def test_exact_shap_equals_the_reference_enumeration(mlp, exact_phi):
    _, f, X, background = mlp
    result = _method("exact_shap").explain(_task(f, X, background))
    np.testing.assert_allclose(result.values, exact_phi, atol=1e-10)
    np.testing.assert_allclose(result.values.sum(1) + result.base_values, f(X), atol=1e-10)


@pytest.mark.parametrize("sampling", ["kernel", "leverage"])
def test_kernel_shap_converges_to_exact_values(mlp, exact_phi, sampling):
    _, f, X, background = mlp
    errors = []
    for n in (64, 256, 1022):
        result = _method("kernel_shap", n_samples=n, sampling=sampling).explain(
            _task(f, X, background))
        np.testing.assert_allclose(result.values.sum(1) + result.base_values, f(X), atol=1e-9)
        errors.append(_rel_error(result.values, exact_phi))
    assert errors[0] > errors[1] > errors[2]
    assert errors[1] < 0.1, errors
    assert errors[2] < 1e-9, "2**M - 2 coalitions must give exact values"


def test_kernel_shap_is_at_least_as_accurate_as_shap_kernel_explainer(mlp, exact_phi):
    import shap

    _, f, X, background = mlp
    ours = _method("kernel_shap", n_samples=256).explain(_task(f, X, background))
    np.random.seed(0)
    theirs = shap.KernelExplainer(f, background).shap_values(X, nsamples=256, l1_reg=False,
                                                               silent=True)
    ours_err, shap_err = _rel_error(ours.values, exact_phi), _rel_error(theirs, exact_phi)
    assert ours_err <= shap_err * 1.1, (ours_err, shap_err)


def test_permutation_shap_converges_and_is_efficient(mlp, exact_phi):
    _, f, X, background = mlp
    small = _method("permutation_shap", n_samples=40).explain(_task(f, X, background))
    large = _method("permutation_shap", n_samples=2000).explain(_task(f, X, background))
    for result in (small, large):
        np.testing.assert_allclose(result.values.sum(1) + result.base_values, f(X), atol=1e-9)
    assert _rel_error(large.values, exact_phi) < _rel_error(small.values, exact_phi)
    assert _rel_error(large.values, exact_phi) < 0.05


@pytest.mark.parametrize("name, params", [
    ("kernel_shap", {"n_samples": 128}), ("permutation_shap", {"n_samples": 100}),
    ("exact_shap", {}), ("lime", {"n_samples": 300}), ("integrated_gradients", {"n_steps": 8}),
    ("smoothgrad", {"n_samples": 5}), ("gradient_shap", {"n_samples": 5}),
])
def test_identical_results_for_batch_sizes_1_7_1024(mlp, name, params):
    net, f, X, background = mlp
    X = X[:6]
    results = [_method(name, **params).explain(
        _task(f, X, background, max_batch_rows=size, module=net)).values
        for size in (1, 7, 1024)]
    # Equal up to the float32 model's own rounding, which BLAS blocking varies with batch size.
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(results[0], results[2], rtol=1e-5, atol=1e-7)


def test_same_seed_same_values_other_seed_other_values(mlp):
    _, f, X, background = mlp
    a = _method("kernel_shap", n_samples=64).explain(_task(f, X, background, seed=1)).values
    b = _method("kernel_shap", n_samples=64).explain(_task(f, X, background, seed=1)).values
    c = _method("kernel_shap", n_samples=64).explain(_task(f, X, background, seed=2)).values
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_integrated_gradients_equals_captum(mlp):
    import torch
    from captum.attr import IntegratedGradients

    net, f, X, background = mlp
    ours = _method("integrated_gradients", n_steps=50).explain(
        _task(f, X, background, module=net))
    x = torch.as_tensor(X, dtype=torch.float32)
    baseline = torch.as_tensor(background.mean(0), dtype=torch.float32)[None].expand_as(x)
    theirs = IntegratedGradients(net).attribute(x, baselines=baseline, target=0, n_steps=50,
                                                method="gausslegendre").double().numpy()
    np.testing.assert_allclose(ours.values, theirs, atol=2e-5, rtol=1e-4)
    # Completeness: sum = f(x) - f(baseline) up to a quadrature error that shrinks with steps
    # (slowly: a ReLU network's path integrand has kinks).
    fine = _method("integrated_gradients", n_steps=1000).explain(
        _task(f, X, background, module=net))
    gap = np.abs(ours.values.sum(1) + ours.base_values - f(X)).mean()
    fine_gap = np.abs(fine.values.sum(1) + fine.base_values - f(X)).mean()
    assert fine_gap < gap / 3
    assert fine_gap < 0.01 * np.abs(f(X) - ours.base_values).mean()


@pytest.mark.parametrize("ours_name, captum_name", [("saliency", "Saliency"),
                                                    ("input_x_gradient", "InputXGradient"),
                                                    ("deeplift", "DeepLift")])
def test_simple_gradient_methods_equal_captum(mlp, ours_name, captum_name):
    import captum.attr
    import torch

    net, f, X, background = mlp
    task = _task(f, X, background, module=net)
    task.model = mlflow_xai.model.resolve_model(net)
    ours = _method(ours_name).explain(task).values
    x = torch.as_tensor(X, dtype=torch.float32)
    method = getattr(captum.attr, captum_name)(net)
    if captum_name == "DeepLift":
        baseline = torch.as_tensor(background.mean(0), dtype=torch.float32)[None].expand_as(x)
        theirs = method.attribute(x, baselines=baseline, target=0)
    else:
        theirs = method.attribute(x, target=0)
    np.testing.assert_allclose(ours, theirs.detach().double().numpy(), atol=1e-6, rtol=1e-5)


def test_noise_free_smoothgrad_is_the_gradient_and_vargrad_is_zero(mlp):
    net, f, X, background = mlp
    task = _task(f, X, background, module=net)
    task.model = mlflow_xai.model.resolve_model(net)
    grad = _method("input_x_gradient").explain(task).values / X
    smooth = _method("smoothgrad", n_samples=3, noise_level=0.0).explain(task).values
    var = _method("vargrad", n_samples=3, noise_level=0.0).explain(task).values
    sq = _method("smoothgrad_sq", n_samples=3, noise_level=0.0).explain(task).values
    np.testing.assert_allclose(smooth, grad, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(sq, grad**2, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(var, 0.0, atol=1e-10)


def test_gradient_shap_matches_expected_gradients_in_expectation(mlp):
    net, f, X, background = mlp
    result = _method("gradient_shap", n_samples=400).explain(_task(f, X[:5], background,
                                                                    module=net))
    # Completeness holds in expectation: sum(phi) ~ f(x) - E[f(background)].
    gap = result.values.sum(1) - (f(X[:5]) - f(background).mean())
    assert np.abs(gap).mean() < 0.1 * np.abs(f(X[:5]) - f(background).mean()).mean() + 0.02


def test_lime_agrees_with_the_lime_library():
    from lime.lime_tabular import LimeTabularExplainer

    rng = np.random.default_rng(3)
    background = rng.normal(loc=2.0, scale=[1, 2, 0.5, 3], size=(200, 4))
    X = background[:8]

    def f(a):
        return np.tanh(a[:, 0]) + 0.5 * a[:, 1] - a[:, 2] ** 2 + 0.1 * a[:, 3]

    ours = _method("lime", n_samples=4000).explain(_task(f, X, background)).values
    library = LimeTabularExplainer(background, mode="regression", discretize_continuous=False,
                                   random_state=0)
    theirs = np.zeros_like(ours)
    for i, row in enumerate(X):
        exp = library.explain_instance(row, f, num_features=4, num_samples=4000)
        for j, w in exp.local_exp[1]:  # regression: key 1 (key 0 holds the negation)
            theirs[i, j] = w
    scale = np.abs(theirs).mean()
    assert np.abs(ours - theirs).mean() < 0.1 * scale
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.98


def test_lime_recovers_a_linear_model():
    rng = np.random.default_rng(4)
    background = rng.normal(size=(300, 5)) * [1, 2, 3, 1, 1]
    w = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    result = _method("lime", n_samples=3000).explain(_task(lambda a: a @ w, background[:5],
                                                           background))
    # Weights on standardised features: w_j * std_j (ridge shrinkage is negligible here).
    expected = w * background.std(0)
    np.testing.assert_allclose(result.values, np.tile(expected, (5, 1)), rtol=0.01, atol=0.01)


def test_engine_halves_the_batch_on_out_of_memory():
    import torch

    from mlflow_xai.engine import call_batched

    seen = []

    def picky(x):
        seen.append(len(x))
        if len(x) > 100:
            raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return x.sum(dim=1)

    x = torch.arange(3000, dtype=torch.float64).reshape(1000, 3)
    out = call_batched(picky, x, 1000)
    np.testing.assert_allclose(out.numpy(), x.sum(1).numpy())
    assert seen[:4] == [1000, 500, 250, 125] and max(seen[4:]) <= 100
    with pytest.raises(ValueError):
        call_batched(lambda t: (_ for _ in ()).throw(ValueError("real bug")), x, 10)


def test_summary_records_device_batch_and_memory(mlp):
    net, _, X, background = mlp
    expl = mlflow_xai.explain(net, X, background=background, device="auto",
                              explainers={"kernel_shap": {"n_samples": 64},
                                          "integrated_gradients": {}})
    for name in ("kernel_shap", "integrated_gradients"):
        entry = expl.summary["methods"][name]
        assert entry["device"] == "cpu" and entry["batch_rows"] >= 64
        assert entry["peak_memory_mb"] > 0
    # 40 rows x (64 coalitions x 20 background + 1) + 20 background rows for E[f(b)].
    assert expl.summary["methods"]["kernel_shap"]["model_evals"] == 40 * (64 * 20 + 1) + 20


def test_memory_is_bounded_by_the_batch_not_rows_times_samples():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 20))
    w = rng.normal(size=20)
    # rows x coalitions x background x features = 20000*64*10*20 doubles = 2 GB if materialised.
    expl = mlflow_xai.explain(lambda a: np.tanh(a @ w), X, background=X[:10], max_rows=20000,
                              explainers={"kernel_shap": {"n_samples": 64}})
    entry = expl.summary["methods"]["kernel_shap"]
    assert entry["model_evals"] == 20000 * (64 * 10 + 1) + 10
    from mlflow_xai.device import _rss_bytes

    assert entry["peak_memory_mb"] - _rss_bytes() / 2**20 < 1024
