"""Tree SHAP: exact Shapley values from tree internals (the model-agnostic Shapley methods
live in the batched torch pack, mlflow_xai_torch)."""

from __future__ import annotations

from mlflow_xai import hookimpl


@hookimpl
def xai_register_explainers() -> list[type]:
    from mlflow_xai_shap.tree import TreeShap

    return [TreeShap]
