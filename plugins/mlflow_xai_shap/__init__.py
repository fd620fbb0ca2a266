"""Tree SHAP and tree interaction values: exact Shapley values and pairwise Shapley interaction
values from tree internals (the model-agnostic Shapley methods live in the batched torch pack,
mlflow_xai_torch)."""

from __future__ import annotations

from mlflow_xai.plugin_api import hookimpl


@hookimpl
def xai_register_explainers() -> list[type]:
    from .tree import TreeShap
    from .tree_interactions import TreeInteractions

    return [TreeShap, TreeInteractions]
