"""Tree SHAP: exact Shapley values from tree internals (the model-agnostic Shapley methods
live in the batched torch pack, mlflow_xai_torch)."""

from __future__ import annotations

from mlflow_xai.plugin_api import hookimpl


@hookimpl
def xai_register_explainers() -> list[type]:
    from .tree import TreeShap

    return [TreeShap]
