"""The result of an explanation run: attributions, base values, importance and a summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

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
        for name, attribution in results.items():
            if attribution.values is not None:
                attributions[name] = pd.DataFrame(attribution.values, index=index, columns=names)
                if attribution.base_values is not None:
                    base_values[name] = pd.Series(attribution.base_values, index=index,
                                                  name="base_value")
            importance[name] = attribution.global_importance()
        importance_frame = pd.DataFrame(importance, index=pd.Index(names, name="feature"))
        outputs = pd.Series(output_labels, index=index, name="output") if output_labels else None
        return cls(attributions=attributions, base_values=base_values,
                   importance=importance_frame, summary=summary, data=prepared.frame,
                   outputs=outputs, model_uri=model.uri, model_id=model.model_id,
                   encoded=prepared.X)

    @property
    def methods(self) -> list[str]:
        return list(self.importance.columns) + [m for m in self.heatmaps
                                                if m not in self.importance.columns]

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
