"""Writes an :class:`Explanations` to the artifact contract under ``xai/`` and logs metrics.

Layout (see README, "Artifacts"): ``summary.json``, ``importance.json``, ``stability.json``,
``attributions/<method>.parquet``, ``plots/<method>_bar.png``, ``plots/<method>_beeswarm.png``,
``plots/<primary method>_waterfall.png``,
``selection/<selector>.json``, ``plots/selection_<selector>.png``, ``report.html``,
``metric_names.json`` (feature -> metric-name segment, see :mod:`mlflow_xai.metric_names`),
and for interaction methods ``interactions/<method>.parquet`` (each row's strongest pairs),
``interactions/<method>_matrix.json`` (the global matrix) and
``plots/<method>_interactions.png``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

#: Reserved columns of ``attributions/<method>.parquet``: ``xai.base_value``, ``xai.output``
#: (``xai.`` is refused as a feature name prefix, so they never clash with a feature).
from mlflow_xai.data import BASE_VALUE_COLUMN, OUTPUT_COLUMN

if TYPE_CHECKING:
    from mlflow_xai.explanations import Explanations

ARTIFACT_DIR = "xai"
METRIC_PREFIX = "xai"
#: Per-feature importance metrics are logged for at most this many features per method.
MAX_IMPORTANCE_METRICS = 100
#: The mapping feature -> metric-name segment (see :mod:`mlflow_xai.metric_names`).
METRIC_NAMES_FILE = "metric_names.json"
#: Interaction methods' documents: ``interactions/<method>.parquet`` (per row, the strongest
#: pairs) and ``interactions/<method>_matrix.json`` (the global matrix, what the gate reads).
INTERACTIONS_DIR = "interactions"
#: Pairs per explained row in ``interactions/<method>.parquet``.
INTERACTION_PAIRS_PER_ROW = 10
#: Pairs of the primary interaction method that are headline metrics (if the cap allows).
HEADLINE_INTERACTIONS = 3
#: Pairs per interaction method logged with ``log_metrics="all"``.
ALL_INTERACTIONS = 20
_MATRIX_FILE = re.compile(r"^interactions/([\w.\-]+)_matrix\.json$")


def interaction_matrix_file(method: str) -> str:
    """The path of ``method``'s global interaction matrix inside ``xai/``."""
    return f"{INTERACTIONS_DIR}/{method}_matrix.json"


def interaction_matrix_method(name: str) -> str | None:
    """The method whose matrix ``name`` (a path inside ``xai/``) is, else None: the manifest
    is data, so only ``interactions/<plain name>_matrix.json`` qualifies (no path tricks)."""
    match = _MATRIX_FILE.match(str(name))
    return match.group(1) if match else None


def metric_safe(name: str) -> str:
    """One feature name, alone, as it may appear inside an MLflow metric name (safe form, cut
    and hashed when too long). Names of a whole feature list: use
    :func:`mlflow_xai.metric_names.feature_metric_names`, which also keeps them apart."""
    from mlflow_xai.metric_names import feature_metric_names

    return feature_metric_names([name])[str(name)]


def metrics_for(expl: Explanations) -> dict[str, float]:
    """The metrics a run gets, chosen by ``summary['log_metrics']`` (see :func:`logged_metrics`):
    the headline set by default, every figure with ``"all"``."""
    return logged_metrics(
        expl.summary, importance_json(expl), stability_json(expl),
        {name: selection.to_json() for name, selection in expl.selection.items()},
        expl.governance, interactions_json(expl))


def logged_metrics(summary: dict[str, Any], importance: dict[str, Any],
                   stability: dict[str, Any],
                   selection: dict[str, dict[str, Any]] | None = None,
                   governance: dict[str, Any] | None = None,
                   interactions: dict[str, dict[str, Any]] | None = None) -> dict[str, float]:
    """What is logged, from the JSON documents alone (so every entrance logs the same names):
    ``summary['log_metrics'] == "all"``: every figure (:func:`all_metrics`, ``xai/...``); else
    (``"headline"``, or absent): :func:`headline_metrics` (``xai.<...>``, at most
    :data:`MAX_HEADLINE_METRICS`). ``interactions``: method -> its
    ``interactions/<method>_matrix.json``."""
    if summary.get("log_metrics") == "all":
        return all_metrics(summary, importance, stability, selection, governance, interactions)
    return headline_metrics(summary, importance, stability, selection, governance,
                            interactions)


def all_metrics(summary: dict[str, Any], importance: dict[str, Any],
                stability: dict[str, Any],
                selection: dict[str, dict[str, Any]] | None = None,
                governance: dict[str, Any] | None = None,
                interactions: dict[str, dict[str, Any]] | None = None) -> dict[str, float]:
    """Every figure: ``xai/<method>/<figure>``, ``xai/<method>/importance/<f>``,
    ``xai/check/<check>/<figure>``, ``xai/selection/<selector>/<figure>``, the run figures,
    ``xai/governance/passed`` when a policy was judged and, per interaction method, the mean
    |interaction| of its :data:`ALL_INTERACTIONS` strongest pairs as
    ``xai/<method>/interaction/<a>__<b>`` (``log_metrics="all"``)."""
    from mlflow_xai.metric_names import valid_metrics

    metrics = metrics_from_documents(summary, importance, stability, selection)
    if governance is not None:
        metrics[f"{METRIC_PREFIX}/governance/passed"] = float(
            governance.get("verdict") == "passed")
    if interactions:
        segments = metric_names_json(summary, importance)
        pairs: dict[str, float] = {}
        for method in _interaction_methods(summary, interactions):
            for a, b, value in strongest_pairs(interactions[method], ALL_INTERACTIONS):
                pairs[f"{METRIC_PREFIX}/{method}/interaction/"
                      f"{_segment(a, segments)}__{_segment(b, segments)}"] = value
        metrics.update(valid_metrics(pairs))
    return metrics


#: The headline metrics' names start with this; they hold no ``/``, so the MLflow UI charts them
#: in its "Model metrics" section, after the model's own metrics (see :func:`headline_metrics`).
HEADLINE_PREFIX = "xai."
#: At most this many headline metrics per run.
MAX_HEADLINE_METRICS = 30
#: Features of the primary method whose global importance is a headline metric.
HEADLINE_FEATURES = 10
#: Figures (those with a threshold or a verdict) per check.
HEADLINE_FIGURES_PER_CHECK = 2
#: The figures that answer an end-task check run without thresholds (a figure matches when it
#: is the name or ends in "/<name>").
END_TASK_HEADLINES = {
    "importance_test": ("conditional/rejected_features", "marginal/rejected_features"),
    "flip_test": ("flip_rate",),
    "responsiveness": ("fixed_rate",),
    "rashomon": ("max_rank_spread", "models_kept"),
}
#: Per selector, the first two of these it has.
HEADLINE_SELECTION_FIGURES = ("kuncheva", "retrain_gain", "n_selected")


def headline_primary(summary: dict[str, Any], importance: dict[str, Any]) -> str | None:
    """The method whose figures head the metrics: ``summary['primary_method']`` when it ran
    ``ok`` and has importances, else the first method that did."""
    methods = summary.get("methods") or {}
    ok = [m for m, e in methods.items() if e.get("status") == "ok" and importance.get(m)]
    primary = summary.get("primary_method")
    return primary if primary in ok else (ok or [None])[0]


def headline_metrics(summary: dict[str, Any], importance: dict[str, Any],
                     stability: dict[str, Any],
                     selection: dict[str, dict[str, Any]] | None = None,
                     governance: dict[str, Any] | None = None,
                     interactions: dict[str, dict[str, Any]] | None = None
                     ) -> dict[str, float]:
    """At most :data:`MAX_HEADLINE_METRICS` figures a person reads (``log_metrics="headline"``,
    the default), from the JSON documents alone; every figure stays in the artifacts.

    In this order (the cap cuts from the end):

    * ``xai.rows_explained``, ``xai.methods_ok``, ``xai.methods_failed``;
    * ``xai.seconds`` (the whole explanation) and ``xai.<primary>.seconds``;
    * ``xai.governance.passed`` (1 or 0) when a policy was judged;
    * ``xai.<primary>.importance.<segment>``: the :data:`HEADLINE_FEATURES` most important
      features of the primary method (:func:`headline_primary`), segments as in
      ``xai/metric_names.json``;
    * ``xai.selection.<selector>.<figure>``: per selector (in name order) the first two of
      :data:`HEADLINE_SELECTION_FIGURES` it has;
    * ``xai.check.<check>.<figure>`` (a figure's ``/`` written ``.``): per check, in check name
      order, at most :data:`HEADLINE_FIGURES_PER_CHECK` of the figures that have a threshold or
      a verdict, the primary method's first, then in the order of ``stability.json``;
    * ``xai.<method>.interaction.<a>__<b>``: the mean |interaction| of the
      :data:`HEADLINE_INTERACTIONS` strongest pairs of the primary interaction method
      (:func:`primary_interaction_method`; ``interactions/<method>_matrix.json``), last, so
      they are logged only when the cap leaves room.

    The names hold no ``/``: the MLflow UI makes a chart section of every name prefix before
    the last ``/`` and puts all of those *above* its "Model metrics" section (names without a
    ``/``), so ``xai/...`` names pushed the model's own metrics to the bottom. Names without a
    ``/`` are charted in "Model metrics", sorted by name: ``xai.`` after the model's own
    ``accuracy_score``, ``f1_score``, ``loss``, ... Policies still name figures as before
    (``kernel_shap/importance/<segment>``): the gate reads the documents, not these metrics.
    """
    from mlflow_xai.metric_names import valid_metrics

    p = HEADLINE_PREFIX
    methods = summary.get("methods") or {}
    primary = headline_primary(summary, importance)
    metrics: dict[str, float] = {
        f"{p}rows_explained": float((summary.get("data") or {}).get("rows_explained") or 0),
        f"{p}methods_ok": float(sum(m.get("status") == "ok" for m in methods.values())),
        f"{p}methods_failed": float(sum(m.get("status") == "failed" for m in methods.values())),
    }
    if _finite(summary.get("seconds")):
        metrics[f"{p}seconds"] = float(summary["seconds"])
    if primary is not None and _finite(methods[primary].get("seconds")):
        metrics[f"{p}{primary}.seconds"] = float(methods[primary]["seconds"])
    if governance is not None:
        metrics[f"{p}governance.passed"] = float(governance.get("verdict") == "passed")
    if primary is not None:
        segments = metric_names_json(summary, importance)
        ranked = [(f, v["importance"]) for f, v in (importance.get(primary) or {}).items()
                  if isinstance(v, dict) and _finite(v.get("importance"))]
        ranked.sort(key=lambda fv: -fv[1])  # stable: ties keep the document's order
        for feature, value in ranked[:HEADLINE_FEATURES]:
            segment = segments.get(str(feature)) or metric_safe(feature)
            metrics[f"{p}{primary}.importance.{segment}"] = float(value)
    for name in sorted(selection or {}):
        figures = _selection_figures(selection[name])
        chosen = [f for f in HEADLINE_SELECTION_FIGURES if _finite(figures.get(f))][:2]
        for figure in chosen:
            metrics[f"{p}selection.{name}.{figure}"] = figures[figure]
    for check in sorted(stability):
        for figure, value in _headline_check_figures(check, stability[check], primary):
            metrics[f"{p}check.{check}.{figure.replace('/', '.')}"] = value
    method = primary_interaction_method(summary, interactions or {})
    if method is not None:
        segments = metric_names_json(summary, importance)
        for a, b, value in strongest_pairs(interactions[method], HEADLINE_INTERACTIONS):
            metrics[f"{p}{method}.interaction.{_segment(a, segments)}__"
                    f"{_segment(b, segments)}"] = value
    metrics = valid_metrics(metrics)
    return dict(list(metrics.items())[:MAX_HEADLINE_METRICS])


def _segment(feature: str, segments: dict[str, str]) -> str:
    return segments.get(str(feature)) or metric_safe(feature)


def _interaction_methods(summary: dict[str, Any], interactions: dict[str, Any]) -> list[str]:
    """The methods that ran ``ok`` and have an interaction matrix, in run order."""
    methods = summary.get("methods") or {}
    return [m for m, entry in methods.items()
            if isinstance(entry, dict) and entry.get("status") == "ok" and m in interactions]


def primary_interaction_method(summary: dict[str, Any], interactions: dict[str, Any]
                               ) -> str | None:
    """The interaction method whose pairs head the metrics: the primary method when it has an
    interaction matrix, else the first interaction method that ran ``ok``."""
    ran = _interaction_methods(summary, interactions)
    primary = summary.get("primary_method")
    return primary if primary in ran else (ran or [None])[0]


def read_interaction_matrix(doc: Any) -> tuple[list[str], np.ndarray]:
    """``(features, matrix)`` of an ``interactions/<method>_matrix.json`` document (non-finite
    entries, written ``null``, as NaN); ValueError when it is not one."""
    if not isinstance(doc, dict):
        raise ValueError("the interaction matrix document is not a JSON object")  # noqa: TRY004
    features, rows = doc.get("features"), doc.get("matrix")
    if not isinstance(features, list) or not isinstance(rows, list) or len(rows) != len(
            features) or any(not isinstance(r, list) or len(r) != len(features) for r in rows):
        raise ValueError("the interaction matrix document has no square 'matrix' over its "
                         "'features'")
    if len(set(map(str, features))) != len(features):
        raise ValueError("the interaction matrix document repeats a feature")
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
               for r in rows for v in r):
        raise ValueError("the interaction matrix holds a value that is not a number")
    matrix = np.array([[np.nan if v is None else float(v) for v in r] for r in rows],
                      dtype=float)
    return [str(f) for f in features], matrix.reshape(len(features), len(features))


def strongest_pairs(doc: Any, k: int) -> list[tuple[str, str, float]]:
    """The ``k`` strongest pairs (off the diagonal, ``a`` before ``b`` in the document's
    feature order) of an interaction matrix document by mean |interaction|, strongest first,
    ties in feature order; pairs whose value is not finite, or 0 up to float rounding
    (:data:`~mlflow_xai.explanations.NUMERICAL_ZERO` times the matrix's largest entry), are
    left out. [] when the document cannot be read."""
    from mlflow_xai.explanations import NUMERICAL_ZERO

    try:
        features, matrix = read_interaction_matrix(doc)
    except ValueError:
        return []
    a, b = np.triu_indices(len(features), k=1)
    values = matrix[a, b]
    scale = np.nanmax(np.abs(matrix), initial=0.0) if matrix.size else 0.0
    finite = np.flatnonzero(np.isfinite(values) & (values > NUMERICAL_ZERO * scale))
    order = finite[np.argsort(-values[finite], kind="stable")][:max(int(k), 0)]
    return [(features[a[i]], features[b[i]], float(values[i])) for i in order]


def _headline_check_figures(check: str, entry: Any, primary: str | None
                            ) -> list[tuple[str, float]]:
    """A check's headline figures: those with a threshold or a verdict, finite, the primary
    method's (``<primary>/...`` or a pair ``<a>__<b>/...`` naming it) first."""
    if not isinstance(entry, dict):
        return []
    figures = entry.get("figures") or {}
    judged = set(entry.get("thresholds") or {}) | set(entry.get("verdicts") or {})
    chosen = [(str(f), float(v)) for f, v in figures.items() if f in judged and _finite(v)]
    chosen.sort(key=lambda fv: primary not in fv[0].split("/")[0].split("__"))
    if not chosen:  # an end-task check run without thresholds: its answer, for the policy
        chosen = [(str(f), float(v)) for f, v in figures.items() if _finite(v) and any(
            str(f) == name or str(f).endswith("/" + name) for name in
            END_TASK_HEADLINES.get(check, ()))]
    return chosen[:HEADLINE_FIGURES_PER_CHECK]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and \
        math.isfinite(value)


def metric_names_json(summary: dict[str, Any], importance: dict[str, Any]) -> dict[str, str]:
    """``{feature: segment}``: how each feature appears in ``xai/<method>/importance/<segment>``
    (``xai/metric_names.json``; the rule is :func:`mlflow_xai.metric_names.feature_metric_names`
    over :func:`~mlflow_xai.metric_names.document_features`)."""
    from mlflow_xai.metric_names import document_features, feature_metric_names

    return feature_metric_names(document_features(summary, importance))


def metrics_from_documents(summary: dict[str, Any], importance: dict[str, Any],
                           stability: dict[str, Any],
                           selection: dict[str, dict[str, Any]] | None = None
                           ) -> dict[str, float]:
    """The same figures, read from the JSON documents of ``xai/`` (what the gate trusts).

    Feature names become metric-name segments by :func:`metric_names_json` (unique, at most
    :data:`~mlflow_xai.metric_names.FEATURE_SEGMENT_BUDGET` characters); any name MLflow would
    still refuse (a plugin's method, check, figure or selector name) is dropped, with a warning.
    """
    from mlflow_xai.metric_names import valid_metrics

    segments = metric_names_json(summary, importance)
    methods = summary.get("methods") or {}
    metrics: dict[str, float] = {
        f"{METRIC_PREFIX}/rows_explained": float((summary.get("data") or {})
                                                 .get("rows_explained") or 0),
        f"{METRIC_PREFIX}/methods_ok": float(sum(m.get("status") == "ok"
                                                 for m in methods.values())),
        f"{METRIC_PREFIX}/methods_failed": float(sum(m.get("status") == "failed"
                                                     for m in methods.values())),
    }
    for method, entry in methods.items():
        if entry.get("status") != "ok":
            continue
        prefix = f"{METRIC_PREFIX}/{method}"
        for key in ("seconds", "model_evals"):  # a distributed run does not count evals
            if isinstance(entry.get(key), (int, float)):
                metrics[f"{prefix}/{key}"] = float(entry[key])
        if "efficiency_max_abs_gap" in entry:
            metrics[f"{prefix}/efficiency_gap"] = float(entry["efficiency_max_abs_gap"])
        shown = 0
        for feature, figures in (importance.get(method) or {}).items():
            value = figures.get("importance")
            if shown >= MAX_IMPORTANCE_METRICS:
                break
            if isinstance(value, (int, float)) and math.isfinite(value):
                segment = segments.get(str(feature)) or metric_safe(feature)
                metrics[f"{prefix}/importance/{segment}"] = float(value)
                shown += 1
    for check, entry in stability.items():
        for figure, value in (entry.get("figures") or {}).items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                metrics[f"{METRIC_PREFIX}/check/{check}/{figure}"] = float(value)
    for name, doc in (selection or {}).items():
        for figure, value in _selection_figures(doc).items():
            if value is not None and math.isfinite(value):
                metrics[f"{METRIC_PREFIX}/selection/{name}/{figure}"] = float(value)
    return valid_metrics(metrics)


def _selection_figures(doc: dict[str, Any]) -> dict[str, float]:
    """``FeatureSelection.figures()`` from its JSON document."""
    figures = {"n_selected": float(doc.get("n_selected", len(doc.get("selected", [])))),
               "seconds": float(doc.get("seconds") or 0.0)}
    for key in ("kuncheva", "jaccard", "score_spearman"):
        if (doc.get("stability") or {}).get(key) is not None:
            figures[key] = float(doc["stability"][key])
    for key in ("selected_score", "random_score", "gain"):
        if (doc.get("retrain") or {}).get(key) is not None:
            figures[f"retrain_{key}" if key != "gain" else "retrain_gain"] = \
                float(doc["retrain"][key])
    return figures


def stability_json(expl: Explanations) -> dict[str, Any]:
    """Every check's figures, thresholds and verdicts (and details)."""
    return {name: entry for name, entry in expl.checks.items()}


def write_artifacts(expl: Explanations, directory: str | os.PathLike, *, plots: bool = True
                    ) -> Path:
    """Write the ``xai/`` folder contents into ``directory``; return it."""
    root = Path(directory)
    (root / "attributions").mkdir(parents=True, exist_ok=True)
    (root / "plots").mkdir(exist_ok=True)
    importance = importance_json(expl)
    _write_json(root / "importance.json", importance)
    # Before summary.json, so its SHA-256 manifest covers the mapping too.
    _write_json(root / METRIC_NAMES_FILE, metric_names_json(expl.summary, importance))
    _write_json(root / "stability.json", stability_json(expl))
    if expl.governance is not None:
        _write_json(root / "governance.json", expl.governance)
    failures = [(kind, m, e) for kind, key in (("explainer", "methods"),
                                               ("selector", "selectors"))
                for m, e in expl.summary.get(key, {}).items() if e["status"] == "failed"]
    if failures:
        (root / "error.txt").write_text("\n\n".join(
            f"{kind} '{m}' failed: {e['error']}\n{e.get('traceback', '')}"
            for kind, m, e in failures))
    if expl.selection:
        (root / "selection").mkdir(exist_ok=True)
    for name, selection in expl.selection.items():
        _write_json(root / "selection" / f"{name}.json", selection.to_json())
        if plots:
            from mlflow_xai.plots import selection_plot

            selection_plot(selection, str(root / "plots" / f"selection_{name}.png"))
    for method, frame in expl.attributions.items():
        table = frame.copy()
        table.columns = [str(c) for c in table.columns]
        clash = [c for c in (BASE_VALUE_COLUMN, OUTPUT_COLUMN) if c in table.columns]
        if clash:  # prepare_data refuses such features; this guards other producers
            from mlflow_xai.errors import InvalidInputError

            raise InvalidInputError(f"feature(s) {clash} clash with the reserved columns of "
                                    "the attribution table; rename them.")
        if method in expl.base_values:
            table[BASE_VALUE_COLUMN] = expl.base_values[method]
        if expl.outputs is not None:
            table[OUTPUT_COLUMN] = expl.outputs.astype(str)
        table.index = table.index.map(str) if table.index.dtype == object else table.index
        table.to_parquet(root / "attributions" / f"{method}.parquet")
    for method, maps in expl.heatmaps.items():
        np.save(root / "attributions" / f"{method}.npy", maps.astype(np.float32))
    _write_interactions(expl, root)
    if plots:
        _write_plots(expl, root / "plots")
        from mlflow_xai.report import write_report

        write_report(expl, root)  # it inlines the plots written above
    write_summary(root, expl.summary)
    return root


def _write_plots(expl: Explanations, plots: Path) -> None:
    """``plots/``: per method (labelled with its unit) a bar plot, a beeswarm (local methods),
    image overlays; a waterfall for the primary method; one plot per check that ran."""
    from mlflow_xai import plots as draw

    units, entries = expl.units, expl.summary.get("methods") or {}
    from mlflow_xai.standard_errors import importance_errors

    errors = importance_errors(expl)
    for method in expl.importance.columns:
        entry = entries.get(method) or {}
        local = bool(entry.get("local", method in expl.attributions))
        shapley = bool(entry.get("shapley"))
        draw.bar_plot(expl.importance[method], method, str(plots / f"{method}_bar.png"),
                      unit=units[method], local=local, shapley=shapley,
                      errors=errors.get(method))
        if method in expl.attributions:
            draw.beeswarm_plot(expl.attributions[method], expl.data, method,
                               str(plots / f"{method}_beeswarm.png"), unit=units[method],
                               shapley=shapley)
    _write_waterfall(expl, plots)
    if expl.heatmaps:
        images = expl.encoded.reshape((len(expl.encoded), *expl.summary["data"]["image_shape"]))
        labels = expl.outputs.tolist() if expl.outputs is not None else None
        for method, maps in expl.heatmaps.items():
            draw.overlay_plot(images, maps, method, str(plots / f"{method}_overlay.png"),
                              labels=labels, unit=units.get(method))
    for name, entry in expl.checks.items():
        if entry.get("status") == "ok":
            draw.check_plot(name, entry, str(plots / f"check_{name}.png"))
    for method in getattr(expl, "interactions", {}):
        matrix = expl.interaction_matrix(method)
        if len(matrix) < 2:  # one feature: no pair to draw
            continue
        draw.interaction_plot(
            matrix, method, str(plots / f"{method}_interactions.png"),
            unit=units.get(method, "model output"),
            importance=expl.importance[method] if method in expl.importance.columns else None,
            index=expl.interaction_index(method), rows=len(expl.interactions[method]))


def _write_interactions(expl: Explanations, root: Path) -> None:
    """``interactions/<method>.parquet`` (each explained row's
    :data:`INTERACTION_PAIRS_PER_ROW` strongest pairs) and ``interactions/<method>_matrix.json``
    (:func:`interactions_json`), before ``summary.json`` so that its manifest covers them."""
    documents = interactions_json(expl)
    if not documents:
        return
    folder = root / INTERACTIONS_DIR
    folder.mkdir(exist_ok=True)
    for method, doc in documents.items():
        expl.row_interactions(method, INTERACTION_PAIRS_PER_ROW).to_parquet(
            folder / f"{method}.parquet", index=False)
        _write_json(root / interaction_matrix_file(method), doc)


def interactions_json(expl: Explanations) -> dict[str, dict[str, Any]]:
    """Per interaction method its ``interactions/<method>_matrix.json``: ``method``, ``index``
    (the interaction index, e.g. 'FSII'), ``unit``, ``rows`` (explained rows averaged over),
    ``features`` (the model's feature order), ``off_diagonal`` (``"full"``: a cell holds the
    pair's whole interaction), ``matrix`` (features x features, mean |interaction| over rows;
    the diagonal the mean |main effect|) and ``mean`` (the signed mean). Entries that are not
    finite are ``null``."""
    out: dict[str, dict[str, Any]] = {}
    interactions = getattr(expl, "interactions", None) or {}
    units = expl.units if interactions else {}
    for method, values in interactions.items():
        magnitude = expl.interaction_matrix(method).to_numpy()
        signed = expl.interaction_matrix(method, signed=True).to_numpy()
        out[method] = {
            "method": method,
            "index": expl.interaction_index(method),
            "unit": units.get(method),
            "statistic": "mean |interaction| over the explained rows",
            # Each off-diagonal cell holds the pair's whole interaction (methods reporting half
            # of it in each triangle, shap's convention, are doubled), the diagonal main effects.
            "off_diagonal": "full",
            "rows": len(values),
            "features": [str(f) for f in expl.importance.index],
            "matrix": _finite_or_none(magnitude),
            "mean": _finite_or_none(signed),
        }
    return out


def _finite_or_none(matrix: np.ndarray) -> list[list[float | None]]:
    return [[float(v) if math.isfinite(v) else None for v in row] for row in matrix.tolist()]


def _write_waterfall(expl: Explanations, plots: Path) -> None:
    """The primary method's waterfalls (highest and lowest output), when it is local and
    gives base values: without a base value a waterfall has nowhere to start."""
    from mlflow_xai.plots import waterfall_plot

    method = expl.primary_method
    if method not in expl.attributions or method not in expl.base_values:
        return
    entry = (expl.summary.get("methods") or {}).get(method) or {}
    waterfall_plot(expl.attributions[method], expl.base_values[method], expl.data, method,
                   str(plots / f"{method}_waterfall.png"), unit=expl.units[method],
                   shapley=bool(entry.get("shapley")))


def write_summary(root: str | os.PathLike, summary: dict[str, Any]) -> Path:
    """Write ``summary.json`` last: it lists every other file's SHA-256, so its own digest
    (``mlflow_xai.digest``) covers the whole folder."""
    from mlflow_xai.provenance import manifest

    path = Path(root) / "summary.json"
    _write_json(path, {**summary, "artifacts": {"sha256": manifest(root)}})
    return path


def importance_json(expl: Explanations) -> dict[str, dict[str, dict[str, float | int]]]:
    """``{method: {feature: {importance, rank[, standard_error]}}}``, most important first.

    ``standard_error`` (sampled estimators): the standard error of the mean |value|
    (:func:`mlflow_xai.standard_errors.importance_standard_errors`, with the method's measured
    ``row_error_correlation``, else the safe bound rho = 1: the mean of the rows' errors)."""
    from mlflow_xai.standard_errors import importance_errors

    ranks = expl.ranks()
    errors = importance_errors(expl)

    def entry(feature: Any, method: str) -> dict[str, float | int]:
        out: dict[str, float | int] = {"importance": float(expl.importance.at[feature, method]),
                                       "rank": int(ranks.at[feature, method])}
        se = errors.get(method, {}).get(feature) if method in errors else None
        if se is not None and math.isfinite(float(se)):
            out["standard_error"] = float(se)
        return out

    return {
        method: {str(feature): entry(feature, method)
                 for feature in expl.importance[method].sort_values(ascending=False).index}
        for method in expl.importance.columns
    }


def json_text(payload: Any) -> str:
    """How every ``xai/*.json`` is serialised (the digest of ``summary.json`` depends on it)."""
    return json.dumps(payload, indent=2, default=_json_default, allow_nan=False)


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json_text(payload))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (pd.Timestamp,)):
        return value.isoformat()
    return str(value)
