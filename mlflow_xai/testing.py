"""Public contract checks that every explainer, ours or a third party's, must pass.

Use in a plugin's own test suite::

    from mlflow_xai.testing import parametrize_with_checks

    @parametrize_with_checks(["my_method"])
    def test_contract(method, check):
        check(method)

Each check builds a small, fully known problem (a linear model, a model with an interaction, a
tree ensemble) and asserts shapes, finiteness, reproducibility, the dummy property, and for
Shapley methods efficiency and agreement with exact values computed by enumeration.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from mlflow_xai.base import Attribution, Explainer, ExplainTask
from mlflow_xai.model import resolve_model
from mlflow_xai.plugins import get_registry

N_FEATURES = 5
#: Parameters that make sampling methods accurate on the tiny problems used here.
ACCURATE_PARAMS = {"n_samples": 2048}


def exact_shapley(f: Callable[[np.ndarray], np.ndarray], X: np.ndarray, background: np.ndarray
                  ) -> tuple[np.ndarray, float]:
    """Interventional Shapley values by enumerating all 2**d coalitions (a reference).

    v(S) = mean over background rows b of f(x_S, b_{not S}). Returns ``(phi, E f(background))``
    with ``phi`` of shape ``(n, d)``. Cost: n * 2**d * len(background) model rows.
    """
    n, d = X.shape
    coalitions = list(itertools.product([0, 1], repeat=d))
    index = {c: i for i, c in enumerate(coalitions)}
    values = np.zeros((n, len(coalitions)))
    for i, coalition in enumerate(coalitions):
        mask = np.array(coalition, dtype=bool)
        # Every (row, background) pair with the coalition's features taken from the row.
        rows = np.repeat(X, len(background), axis=0)
        mixed = np.tile(background, (n, 1))
        mixed[:, mask] = rows[:, mask]
        values[:, i] = f(mixed).reshape(n, len(background)).mean(axis=1)
    phi = np.zeros((n, d))
    for j in range(d):
        for coalition in coalitions:
            if coalition[j]:
                continue
            size = sum(coalition)
            weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
            with_j = coalition[:j] + (1,) + coalition[j + 1:]
            phi[:, j] += weight * (values[:, index[with_j]] - values[:, index[coalition]])
    return phi, float(f(background).mean())


# --------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------

def _data(seed: int = 0, n: int = 12, n_bg: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, N_FEATURES)), rng.normal(size=(n_bg, N_FEATURES))


LINEAR_WEIGHTS = np.array([2.0, -1.0, 0.5, 0.0, 3.0])  # feature 3 is a dummy


def linear_model(X: np.ndarray) -> np.ndarray:
    return X @ LINEAR_WEIGHTS + 1.0


def interaction_model(X: np.ndarray) -> np.ndarray:
    """Non-additive: x0 * x1 interacts, feature 3 is a dummy."""
    return X[:, 0] * X[:, 1] + np.sin(X[:, 2]) + 0.5 * X[:, 4] ** 2


def make_task(explainer: Explainer, *, problem: str = "linear", seed: int = 0,
              chunk_rows: int | None = None) -> tuple[ExplainTask, Callable[[np.ndarray], np.ndarray]]:
    """A task the explainer can run on, and the scalar function it explains.

    ``problem`` is 'linear' or 'interaction' for black-box methods; methods that need tree
    internals get a random forest fitted to the same function instead.
    """
    if "tabular" not in explainer.data_types and "image" in explainer.data_types:
        return _image_task(seed=seed, chunk_rows=chunk_rows)
    X, background = _data()
    names = [f"x{i}" for i in range(N_FEATURES)]
    f = linear_model if problem == "linear" else interaction_model
    adapter = None
    if "tree" in explainer.requires:
        from sklearn.ensemble import RandomForestRegressor

        rng = np.random.default_rng(1)
        X_fit = rng.normal(size=(400, N_FEATURES))
        forest = RandomForestRegressor(n_estimators=20, max_depth=5, random_state=0)
        forest.fit(X_fit, f(X_fit))
        adapter = resolve_model(forest)
        f = adapter.predict
    forward_grad = None
    if "gradients" in explainer.requires:
        adapter, forward_grad = _torch_problem(problem)
        f = adapter.predict
    targets = f(X) + np.random.default_rng(2).normal(scale=0.1, size=len(X))
    task = ExplainTask(predict=f, X=X, background=background, feature_names=names,
                       model=adapter, targets=targets, seed=seed, chunk_rows=chunk_rows,
                       forward_grad=forward_grad)
    return task, f


IMAGE_SHAPE = (1, 8, 8)


def quadrant_model(X: np.ndarray) -> np.ndarray:
    """Reads only the top-left 4x4 quadrant of flattened (1, 8, 8) images."""
    images = np.asarray(X).reshape((-1, *IMAGE_SHAPE))
    return images[:, 0, :4, :4].mean(axis=(1, 2)) ** 2


def _image_task(seed: int = 0, chunk_rows: int | None = None
                ) -> tuple[ExplainTask, Callable[[np.ndarray], np.ndarray]]:
    rng = np.random.default_rng(5)
    size = int(np.prod(IMAGE_SHAPE))
    X = rng.uniform(0.2, 1.0, size=(4, size))
    background = rng.uniform(0.2, 1.0, size=(6, size))
    task = ExplainTask(predict=quadrant_model, X=X, background=background,
                       feature_names=[f"p{i}" for i in range(size)], seed=seed,
                       chunk_rows=chunk_rows, data_type="image", image_shape=IMAGE_SHAPE)
    return task, quadrant_model


def _torch_problem(problem: str) -> tuple[Any, Callable]:
    """The problem as a torch module built from layers, and its differentiable forward."""
    import torch

    if problem == "linear":
        module = torch.nn.Linear(N_FEATURES, 1)
        with torch.no_grad():
            module.weight.copy_(torch.as_tensor(LINEAR_WEIGHTS, dtype=torch.float32)[None])
            module.bias.fill_(1.0)
    else:
        raise ValueError(f"no torch module for the {problem} problem")
    adapter = resolve_model(module)

    def forward(x: Any) -> Any:
        return module(x.to(torch.float32))[:, 0]

    return adapter, forward


def _run(method: str | type[Explainer], *, problem: str = "linear", seed: int = 0,
         chunk_rows: int | None = None, **params: Any) -> tuple[Attribution, ExplainTask, Callable]:
    cls = get_registry().get(method).cls if isinstance(method, str) else method
    valid = {k: v for k, v in {**ACCURATE_PARAMS, **params}.items() if k in cls.defaults}
    explainer = cls(**valid)
    task, f = make_task(explainer, problem=problem, seed=seed, chunk_rows=chunk_rows)
    reason = explainer.supports(task)
    assert reason is None, f"{cls.name} refused the contract task: {reason}"
    return explainer.explain(task), task, f


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

def check_shapes_and_finite(method: str | type[Explainer]) -> None:
    result, task, _ = _run(method)
    n, d = task.X.shape
    if task.image_shape is not None and result.values is not None \
            and result.values.shape[1] == np.prod(task.image_shape[1:]):
        d = result.values.shape[1]  # one value per pixel, channels merged
    importance = result.global_importance()
    assert importance.shape == (d,), f"importance shape {importance.shape} != {(d,)}"
    assert np.all(np.isfinite(importance)), "importance has non-finite values"
    if result.values is not None:
        assert result.values.shape == (n, d), f"values shape {result.values.shape} != {(n, d)}"
        assert np.all(np.isfinite(result.values)), "attributions have non-finite values"
        if result.base_values is not None:
            assert np.shape(result.base_values) == (n,), "base_values must have one per row"


def check_reproducible(method: str | type[Explainer]) -> None:
    first, _, _ = _run(method, seed=7)
    second, _, _ = _run(method, seed=7)
    np.testing.assert_array_equal(first.global_importance(), second.global_importance(),
                                  err_msg="same seed gave different importance")
    if first.values is not None:
        np.testing.assert_array_equal(first.values, second.values,
                                      err_msg="same seed gave different attributions")


def check_dummy_feature(method: str | type[Explainer]) -> None:
    """A feature the model never reads gets (almost) no importance."""
    result, _, _ = _run(method)
    importance = result.global_importance()
    assert importance[3] <= 0.05 * importance.max() + 1e-9, (
        f"the dummy feature got importance {importance[3]:.4g} (max {importance.max():.4g})")


def check_efficiency(method: str | type[Explainer]) -> None:
    """Shapley methods: attributions sum to f(x) - E[f(background)] (local accuracy)."""
    for problem in ("linear", "interaction"):
        result, task, f = _run(method, problem=problem)
        target = result.outputs if result.outputs is not None else f(task.X)
        gap = np.abs(result.values.sum(axis=1) + result.base_values - target).max()
        assert gap < 1e-6, f"efficiency gap {gap:.3g} on the {problem} problem"
        if result.outputs is None:
            np.testing.assert_allclose(result.base_values, f(task.background).mean(), atol=1e-6,
                                       err_msg="base value must be E[f(background)]")


def check_linear_closed_form(method: str | type[Explainer]) -> None:
    """Shapley methods on f(x) = w.x + b: phi_i = w_i (x_i - mean_background(x_i))."""
    result, task, f = _run(method)
    if result.outputs is not None:  # tree methods explain a fitted forest, not the formula
        return
    expected = LINEAR_WEIGHTS * (task.X - task.background.mean(axis=0))
    np.testing.assert_allclose(result.values, expected, atol=1e-6,
                               err_msg="differs from closed-form linear SHAP")


def check_exact_enumeration(method: str | type[Explainer]) -> None:
    """Shapley methods on a model with interactions: close to exact enumerated values."""
    result, task, f = _run(method, problem="interaction")
    phi, _ = exact_shapley(f, task.X, task.background)
    scale = np.abs(phi).max()
    err = np.abs(result.values - phi).max()
    assert err <= 0.05 * scale, f"max error {err:.4g} against exact Shapley (scale {scale:.4g})"


def check_chunking_invariant(method: str | type[Explainer]) -> None:
    """Deterministic methods give the same answer whatever the chunk size."""
    cls = get_registry().get(method).cls if isinstance(method, str) else method
    if cls.stochastic:
        return
    a, _, _ = _run(method, chunk_rows=1)
    b, _, _ = _run(method, chunk_rows=1000)
    np.testing.assert_allclose(a.global_importance(), b.global_importance(), atol=1e-10)


def check_quadrant_focus(method: str | type[Explainer]) -> None:
    """Image methods: for a model that reads only the top-left quadrant, every image's map is
    higher inside that quadrant than outside (RISE's 'checkable' property, METHODS.md)."""
    result, task, _ = _run(method)
    C, H, W = task.image_shape
    maps = result.values.reshape(len(task.X), -1, H, W).sum(axis=1)
    inside = maps[:, :H // 2, :W // 2].mean(axis=(1, 2))
    outside = (maps.sum(axis=(1, 2)) - inside * (H // 2) * (W // 2)) / (H * W - (H // 2) * (W // 2))
    spread = maps.std(axis=(1, 2)) + 1e-12
    assert np.all((inside - outside) / spread > 0.5), (
        f"attribution is not concentrated in the quadrant the model reads: inside {inside}, "
        f"outside {outside}")


COMMON_CHECKS = [check_shapes_and_finite, check_reproducible, check_dummy_feature,
                 check_chunking_invariant]
SHAPLEY_CHECKS = [check_efficiency, check_linear_closed_form, check_exact_enumeration]


def checks_for(method: str | type[Explainer]) -> list[Callable[[Any], None]]:
    cls = get_registry().get(method).cls if isinstance(method, str) else method
    if "tabular" not in cls.data_types:
        return [check_shapes_and_finite, check_reproducible, check_quadrant_focus]
    checks = list(COMMON_CHECKS)
    if cls.shapley and cls.local:
        checks += SHAPLEY_CHECKS
    return checks


def parametrize_with_checks(methods: list[str] | None = None) -> Any:
    """``pytest.mark.parametrize("method, check", ...)`` over every (explainer, check) pair."""
    import pytest

    names = methods if methods is not None else get_registry().names("explainer")
    cases = [pytest.param(name, check, id=f"{name}-{check.__name__}")
             for name in names for check in checks_for(name)]
    return pytest.mark.parametrize("method, check", cases)
