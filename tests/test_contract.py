"""Every registered explainer passes the public contract (mlflow_xai.testing)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

from mlflow_xai.base import Attribution, Explainer, ExplainTask
from mlflow_xai.testing import (
    check_efficiency,
    check_exact_enumeration,
    check_linear_closed_form,
    exact_shapley,
    parametrize_with_checks,
)


@parametrize_with_checks()
def test_contract(method: str, check) -> None:
    check(method)


def test_every_builtin_explainer_is_covered() -> None:
    from mlflow_xai import list_methods

    names = {m["name"] for m in list_methods("explainer")}
    assert {"kernel_shap", "permutation_shap", "tree_shap", "lime",
            "permutation_importance"} <= names


def test_exact_shapley_reference_matches_closed_form() -> None:
    rng = np.random.default_rng(0)
    X, bg = rng.normal(size=(4, 3)), rng.normal(size=(6, 3))
    w = np.array([1.5, -2.0, 0.25])
    phi, base = exact_shapley(lambda Z: Z @ w, X, bg)
    np.testing.assert_allclose(phi, w * (X - bg.mean(0)), atol=1e-12)
    assert base == pytest.approx(float((bg @ w).mean()))


def test_exact_shapley_reference_on_a_product() -> None:
    # f = x0 * x1 with a zero background: each feature gets half of the product.
    X = np.array([[2.0, 3.0]])
    phi, base = exact_shapley(lambda Z: Z[:, 0] * Z[:, 1], X, np.zeros((1, 2)))
    np.testing.assert_allclose(phi, [[3.0, 3.0]])
    assert base == 0.0


class _HalfShap(Explainer):
    """A deliberately wrong 'Shapley' method: the checks must reject it."""

    name: ClassVar[str] = "half_shap"
    shapley: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}

    def explain_rows(self, task: ExplainTask, X: np.ndarray, params: dict) -> Attribution:
        base = float(task.predict(task.background).mean())
        delta = task.predict(X) - base
        spread = np.tile(delta[:, None] / task.n_features, (1, task.n_features))
        return Attribution(values=0.5 * spread, base_values=np.full(len(X), base))


@pytest.mark.parametrize("check", [check_efficiency, check_linear_closed_form,
                                   check_exact_enumeration])
def test_checks_reject_a_wrong_method(check) -> None:
    with pytest.raises(AssertionError):
        check(_HalfShap)
