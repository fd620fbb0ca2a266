"""The result of an explanation run: attributions, base values, importance and a summary."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlflow_xai.units import group_by_unit, model_output_unit, unit_of

if TYPE_CHECKING:
    from mlflow_xai.base import Attribution
    from mlflow_xai.data import PreparedData
    from mlflow_xai.model import ModelAdapter


@dataclass
class Explanations:
    """Explanations of one model on one data set.

    Attributes:
        attributions: method -> DataFrame (rows = explained rows with the input's index labels,
            columns = feature names). Only local methods appear here.
        base_values: method -> Series, one value per explained row.
        importance: DataFrame, features x methods, mean absolute attribution (or the method's
            own global importance for global-only methods).
        outputs: the class label each row was explained for (``None`` for single-output models).
        summary: the dict written as ``xai/summary.json``.
        data: the explained rows, as given (for images: an empty frame carrying the index).
        heatmaps: image data only: method -> array (rows, H, W), channels summed.
    """

    attributions: dict[str, pd.DataFrame]
    base_values: dict[str, pd.Series]
    importance: pd.DataFrame
    summary: dict[str, Any]
    data: pd.DataFrame
    outputs: pd.Series | None = None
    model_uri: str | None = None
    model_id: str | None = None
    encoded: np.ndarray | None = field(default=None, repr=False)
    heatmaps: dict[str, np.ndarray] = field(default_factory=dict)
    #: check name -> {status, figures, thresholds, verdicts, details, seconds, model_evals}
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the policy outcome when a policy was given (``xai/governance.json``)
    governance: dict[str, Any] | None = None
    #: selector name -> :class:`~mlflow_xai.selecting.FeatureSelection` (``.scores``,
    #: ``.ranking``, ``.selected``, ``.stability``, ``.retrain``)
    selection: dict[str, Any] = field(default_factory=dict)
    #: method -> DataFrame like ``attributions``: the standard error of each value, for the
    #: sampled estimators that report one (kernel_shap, permutation_shap)
    standard_errors: dict[str, pd.DataFrame] = field(default_factory=dict)

    @classmethod
    def build(cls, *, prepared: PreparedData, results: dict[str, Attribution],
              output_labels: list[Any] | None, summary: dict[str, Any],
              model: ModelAdapter) -> Explanations:
        index = prepared.frame.index
        names = prepared.feature_names
        attributions, base_values, importance = {}, {}, {}
        if prepared.facts.get("data_type") == "image":
            from mlflow_xai.images import heatmaps

            shape = prepared.encoder.shape
            maps = {name: heatmaps(a.values, shape) for name, a in results.items()
                    if a.values is not None}
            outputs = pd.Series(output_labels, index=index, name="output") if output_labels \
                else None
            return cls(attributions={}, base_values={}, importance=pd.DataFrame(),
                       summary=summary, data=prepared.frame, outputs=outputs,
                       model_uri=model.uri, model_id=model.model_id, encoded=prepared.X,
                       heatmaps=maps)
        errors = {}
        for name, attribution in results.items():
            if attribution.values is not None:
                attributions[name] = pd.DataFrame(attribution.values, index=index, columns=names)
                if attribution.standard_errors is not None:
                    errors[name] = pd.DataFrame(attribution.standard_errors, index=index,
                                                columns=names)
                if attribution.base_values is not None:
                    base_values[name] = pd.Series(attribution.base_values, index=index,
                                                  name="base_value")
            importance[name] = attribution.global_importance()
        importance_frame = pd.DataFrame(importance, index=pd.Index(names, name="feature"))
        outputs = pd.Series(output_labels, index=index, name="output") if output_labels else None
        return cls(attributions=attributions, base_values=base_values,
                   importance=importance_frame, summary=summary, data=prepared.frame,
                   outputs=outputs, model_uri=model.uri, model_id=model.model_id,
                   encoded=prepared.X, standard_errors=errors)

    @property
    def methods(self) -> list[str]:
        return list(self.importance.columns) + [m for m in self.heatmaps
                                                if m not in self.importance.columns]

    @property
    def units(self) -> dict[str, str]:
        """method -> the unit of its numbers (see :mod:`mlflow_xai.units`)."""
        return method_units(self.summary, self.methods)

    @property
    def primary_method(self) -> str | None:
        """The method that leads tables, plots and the report (``summary['primary_method']``)."""
        return primary_of(self.summary, self.methods)

    def unit_groups(self) -> list[tuple[str, list[str]]]:
        """``[(unit, [methods])]``, the primary method's unit (and the primary method) first:
        the only way several methods may share a table or a plot."""
        return group_by_unit(self.methods, self.units, self.primary_method)

    def top_features(self, method: str, k: int = 5) -> list[str]:
        """The ``k`` features with the largest global importance for ``method``."""
        if method not in self.importance.columns:
            raise KeyError(f"no importance for method '{method}'; available: {self.methods}")
        return list(self.importance[method].sort_values(ascending=False).index[:k])

    def ranks(self) -> pd.DataFrame:
        """Rank of each feature per method (1 = most important)."""
        return self.importance.rank(ascending=False, method="min").astype(int)

    def log(self, run_id: str | None = None, model_id: str | None = None) -> str:
        """Write the artifacts under ``xai/`` and the metrics to an MLflow run.

        Uses the active run when ``run_id`` is None (starting one if there is none). Metrics are
        linked to ``model_id`` (default: the explained model's id, when it has one).
        Returns the run id.
        """
        from mlflow_xai.recording import Destination, record

        return record(self, Destination(run_id, model_id or self.model_id, source="api"))

    def __repr__(self) -> str:
        rows = self.summary.get("data", {}).get("rows_explained")
        return f"Explanations(methods={self.methods}, rows={rows})"


def method_units(summary: Mapping[str, Any], methods: Iterable[str] | None = None
                 ) -> dict[str, str]:
    """method -> unit: ``methods.<name>.unit`` when recorded, else derived from the method's
    ``output_space`` (summaries written before units were recorded, or by other producers)."""
    entries = summary.get("methods") or {}
    model_unit = model_output_unit(summary.get("model") or {})
    names = list(entries) if methods is None else list(methods)
    units = {}
    for name in names:
        entry = entries.get(name) or {}
        units[name] = entry.get("unit") or unit_of(entry.get("output_space"), model_unit)
    return units


def primary_of(summary: Mapping[str, Any], methods: Iterable[str]) -> str | None:
    """``summary['primary_method']`` when it is among ``methods``; else the pipeline's rule
    (the first Shapley method, else the first method), so older summaries still get one."""
    methods = list(methods)
    primary = summary.get("primary_method")
    if primary in methods:
        return primary
    entries = summary.get("methods") or {}
    shapley = [m for m in methods if (entries.get(m) or {}).get("shapley")]
    return (shapley or methods or [None])[0]
