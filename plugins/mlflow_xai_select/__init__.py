"""Feature-selection methods: filters on data and targets, and model-driven selectors."""

from __future__ import annotations

from mlflow_xai import hookimpl


@hookimpl
def xai_register_selectors() -> list[type]:
    return []
