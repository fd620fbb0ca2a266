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


#: An interaction at most this fraction of the largest |value| around it is 0 up to float
#: rounding: it counts among no "strongest pairs" (top-3 shares, metrics, policy ranks).
NUMERICAL_ZERO = 1e-12


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
        interactions: interaction methods only: method -> ``(rows, features, features)``
            pairwise Shapley interaction values (symmetric; the off-diagonal cell (i, j) holds
            the pair's whole interaction, also for methods that report half of it in each
            triangle, which are doubled; the diagonal holds the main effects; the index, e.g.
            FSII or k-SII, is ``interaction_index(method)``). Read them through
            :meth:`interaction_matrix`, :meth:`top_interactions` and :meth:`row_interactions`.
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
    #: method -> ``(n_rows, n_features, n_features)`` pairwise interaction values, rows and
    #: features in the order of ``data`` and ``importance`` (interaction explainers only)
    interactions: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

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
        errors, interactions = {}, {}
        for name, attribution in results.items():
            if attribution.interactions is not None:
                pairs = _interaction_array(name, attribution.interactions, len(index),
                                           len(names), summary, attribution.info)
                if pairs is not None:
                    interactions[name] = pairs
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
                   encoded=prepared.X, standard_errors=errors, interactions=interactions)

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

    # ------------------------------------------------------------------ interactions

    @property
    def interaction_methods(self) -> list[str]:
        """The methods that recorded pairwise interaction values, in run order."""
        return list(self.interactions)

    def interaction_index(self, method: str) -> str | None:
        """The interaction index ``method`` computes (``info['index']``: 'k-SII', ...)."""
        entry = (self.summary.get("methods") or {}).get(method) or {}
        index = entry.get("index")
        return None if index is None else str(index)

    def _interaction_values(self, method: str) -> np.ndarray:
        if method not in self.interactions:
            raise KeyError(f"no interaction values for method '{method}'; methods with "
                           f"interactions: {self.interaction_methods or 'none'}")
        return self.interactions[method]

    def interaction_matrix(self, method: str, *, signed: bool = False) -> pd.DataFrame:
        """The global interaction matrix of ``method``: features x features, the mean over the
        explained rows of |interaction| (``signed=True``: of the interaction itself, where
        opposite signs cancel). Symmetric; the diagonal holds the mean |main effect|."""
        values = self._interaction_values(method)
        names = self._feature_names()
        matrix = values.mean(axis=0) if signed else np.abs(values).mean(axis=0)
        return pd.DataFrame(matrix, index=pd.Index(names, name="feature"), columns=names)

    def top_interactions(self, method: str, k: int | None = 10) -> pd.DataFrame:
        """The ``k`` strongest pairs of ``method`` (all pairs for ``k=None``), strongest first.

        Columns: ``feature_a``, ``feature_b`` (``a`` before ``b`` in the feature order),
        ``mean_abs`` (mean |interaction| over rows, the global matrix's entry), ``mean_value`` (the
        signed mean) and ``top3_share`` (the share of rows where the pair is among the row's 3
        strongest pairs by |interaction|, and not 0 up to float rounding: at most
        :data:`NUMERICAL_ZERO` times the row's largest |value|). The diagonal (main effects) is
        no pair."""
        values = self._interaction_values(method)
        names = self._feature_names()
        a, b = np.triu_indices(len(names), k=1)
        pairs = values[:, a, b]  # (rows, pairs)
        mean_abs = np.abs(pairs).mean(axis=0) if len(pairs) else np.full(len(a), np.nan)
        mean = pairs.mean(axis=0) if len(pairs) else np.full(len(a), np.nan)
        share = np.zeros(len(a))
        if len(pairs) and len(a):
            top = _row_top(pairs, min(3, len(a)))
            # A pair that is 0 up to float rounding in a row is in no row's top 3.
            scale = np.nanmax(np.abs(values).reshape(len(values), -1), axis=1, initial=0.0)
            real = np.abs(np.take_along_axis(pairs, top, axis=1)) > (
                NUMERICAL_ZERO * scale)[:, None]
            share = np.bincount(top[real], minlength=len(a)) / len(pairs)
        order = np.lexsort((np.arange(len(a)), -np.nan_to_num(mean_abs, nan=-np.inf)))
        if k is not None:
            order = order[:max(int(k), 0)]
        return pd.DataFrame({"feature_a": [names[i] for i in a[order]],
                             "feature_b": [names[j] for j in b[order]],
                             "mean_abs": mean_abs[order], "mean_value": mean[order],
                             "top3_share": share[order]})

    def row_interactions(self, method: str, k: int = 10) -> pd.DataFrame:
        """Per explained row its ``k`` strongest pairs by |interaction|: columns ``row`` (the
        input's index label), ``feature_a``, ``feature_b``, ``value`` and ``rank`` (1 =
        strongest in that row; ties keep the feature order). What
        ``xai/interactions/<method>.parquet`` holds."""
        values = self._interaction_values(method)
        names = self._feature_names()
        a, b = np.triu_indices(len(names), k=1)
        pairs = values[:, a, b]
        k = min(int(k), len(a))
        top = _row_top(pairs, k) if k > 0 else np.zeros((len(pairs), 0), dtype=int)
        rows = np.repeat(np.arange(len(pairs)), k)
        chosen = top.ravel()
        labels = self.data.index
        labels = labels.map(str) if labels.dtype == object else labels
        return pd.DataFrame({
            "row": np.asarray(labels)[rows] if len(labels) == len(pairs) else rows,
            "feature_a": pd.Series([names[i] for i in a[chosen]], dtype=object),
            "feature_b": pd.Series([names[j] for j in b[chosen]], dtype=object),
            "value": pairs[rows, chosen].astype(float),
            "rank": np.tile(np.arange(1, k + 1), len(pairs)).astype(np.int64),
        })

    def _feature_names(self) -> list[str]:
        return [str(f) for f in self.importance.index]

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


def _row_top(pairs: np.ndarray, k: int) -> np.ndarray:
    """``(rows, k)``: per row the column indices of the ``k`` largest |values|, largest first,
    ties in column order (non-finite values last)."""
    strength = np.nan_to_num(np.abs(pairs), nan=-1.0, posinf=-1.0)
    # A stable sort of -strength keeps ties in column order.
    return np.argsort(-strength, axis=1, kind="stable")[:, :k]


def _interaction_array(method: str, values: Any, n_rows: int, n_features: int,
                       summary: dict[str, Any], info: dict[str, Any] | None = None
                       ) -> np.ndarray | None:
    """The method's interaction values as a float ``(rows, d, d)`` array in one convention:
    the off-diagonal cell (i, j) holds the pair's whole interaction (a method that stores half
    of it in each of (i, j) and (j, i), shap's convention, says ``info['off_diagonal'] ==
    'half'``, and is doubled here); the diagonal the main effects. None (with a warning and a
    note in the method's summary entry) when the shape or the convention is not one of these."""
    import logging

    array = np.asarray(values, dtype=float)
    convention = (info or {}).get("off_diagonal", "full")
    if array.shape == (n_rows, n_features, n_features) and convention in ("full", "half"):
        if convention == "half":
            diagonal = np.diagonal(array, axis1=1, axis2=2).copy()
            array = 2.0 * array
            array[:, np.arange(n_features), np.arange(n_features)] = diagonal
        return array
    if convention not in ("full", "half"):
        why = (f"interaction values dropped: info['off_diagonal'] is {convention!r}, not "
               "'full' (each off-diagonal cell the pair's interaction) or 'half' (shap's "
               "convention: half of it in each of (i, j) and (j, i))")
    else:
        why = (f"interaction values of shape {array.shape} dropped: expected (rows, features, "
               f"features) = {(n_rows, n_features, n_features)}")
    logging.getLogger(__name__).warning("mlflow-xai: %s: %s", method, why)
    entry = (summary.get("methods") or {}).get(method)
    if isinstance(entry, dict):
        entry["interactions_dropped"] = why
    return None


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
