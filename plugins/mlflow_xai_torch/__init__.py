"""Batched torch explainers: Kernel/Permutation/Exact SHAP, LIME, gradient methods, RISE, Sobol.

Every method here evaluates the model in large batches on the chosen device (CUDA when there
is one) through :mod:`mlflow_xai.engine`; none loops over explained rows in Python.
"""

from __future__ import annotations

from mlflow_xai import hookimpl


@hookimpl
def xai_register_explainers() -> list[type]:
    from mlflow_xai_torch.exact import ExactShap
    from mlflow_xai_torch.gradients import GRADIENT_METHODS
    from mlflow_xai_torch.images import Rise, Sobol
    from mlflow_xai_torch.kernel import KernelShap
    from mlflow_xai_torch.lime import Lime
    from mlflow_xai_torch.permutation import PermutationShap

    return [KernelShap, PermutationShap, ExactShap, Lime, *GRADIENT_METHODS, Rise, Sobol]
