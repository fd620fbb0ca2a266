"""Shapley-value explainers: kernel_shap, permutation_shap (shap library) and tree_shap."""

from __future__ import annotations

from mlflow_xai import hookimpl


@hookimpl
def xai_register_explainers() -> list[type]:
    from mlflow_xai_shap.kernel import KernelShap
    from mlflow_xai_shap.permutation import PermutationShap
    from mlflow_xai_shap.tree import TreeShap

    return [KernelShap, PermutationShap, TreeShap]
