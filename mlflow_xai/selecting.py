"""Runs the feature selectors: each on the selection rows, then its stability over resamples
(``selection_bootstrap`` of them, each a subsample of 80% of the rows drawn without
replacement: a bootstrap's duplicated rows bias nearest-neighbour estimators such as
``mutual_info`` towards noise features) and, when the user gave an estimator or a scoring function, a ROAR-style retrain check.

Stability figures (Kuncheva, 2007; Nogueira et al., 2018 for the context):

* ``kuncheva``: mean pairwise Kuncheva consistency index of the top-``s`` subsets of the
  resamples, ``s`` = the size of the subset selected on all rows. 1 = identical subsets,
  about 0 = no better than chance (corrected for the overlap two random subsets would have).
* ``jaccard``: mean pairwise Jaccard index of the subsets each resample selects by the
  selector's own rule.
* ``score_spearman``: mean pairwise Spearman correlation of the per-feature scores.
"""

from __future__ import annotations

import itertools
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlflow_xai.base import Selection, build_task
from mlflow_xai.config import XaiConfig, normalize_methods
from mlflow_xai.data import PreparedData
from mlflow_xai.errors import ConfigError, InvalidInputError, XaiError

_logger = logging.getLogger(__name__)

#: Share of the selection rows in each stability resample (drawn without replacement).
SUBSAMPLE = 0.8
#: Random subsets drawn for the retrain baseline (their scores are averaged).
RANDOM_SUBSETS = 5
#: Folds of the cross-validated retrain score when an estimator is given.
RETRAIN_FOLDS = 3


@dataclass
class FeatureSelection:
    """One selector's outcome, with feature names.

    Attributes:
        scores: Series feature -> score (larger = more relevant).
        ranking: feature names, most relevant first.
        selected: the selected feature names, in ranking order.
        stability: Kuncheva index, Jaccard and score rank correlation over resamples.
        retrain: scores of a model retrained on the selected and on random subsets (or why not).
    """

    name: str
    scores: pd.Series
    ranking: list[str]
    selected: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    stability: dict[str, Any] = field(default_factory=dict)
    retrain: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    model_evals: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"selector": self.name,
                "scores": {str(k): float(v) for k, v in self.scores.items()},
                "ranking": [str(f) for f in self.ranking],
                "selected": [str(f) for f in self.selected],
                "n_selected": len(self.selected), "params": _jsonable(self.params),
                "stability": self.stability, "retrain": self.retrain, "info": self.info,
                "seconds": self.seconds, "model_evals": self.model_evals}

    def figures(self) -> dict[str, float]:
        """The figures logged as metrics ``xai/selection/<name>/<figure>``."""
        from mlflow_xai.artifacts import _selection_figures

        return _selection_figures(self.to_json())


def run_selectors(*, registry: Any, config: XaiConfig, prepared: PreparedData, adapter: Any,
                  counter: Any, device: str, output_index: int | None
                  ) -> tuple[dict[str, FeatureSelection], dict[str, dict[str, Any]]]:
    """Every requested selector; returns (results, summary entries)."""
    requested = normalize_methods(config.selectors, valid=registry.names("selector"),
                                  kind="selector")
    if not requested:
        return {}, {}
    X, y = prepared.selection_X, prepared.selection_targets
    names = prepared.feature_names
    check_missing_values(list(requested), registry, prepared)
    results: dict[str, FeatureSelection] = {}
    summary: dict[str, dict[str, Any]] = {}
    for name, params in requested.items():
        info = registry.get(name, "selector")
        selector = info.cls(**params)
        entry: dict[str, Any] = {"plugin": info.plugin, "package": info.package,
                                 "version": info.version, "params": selector.get_params(),
                                 "rows": int(len(X))}
        counter.rows = 0
        t0 = time.perf_counter()
        try:
            task = build_task(counter=counter, prepared=prepared, model=adapter, device=device,
                              X=X, targets=y, output_index=output_index, seed=config.seed)
            reason = selector.supports(task)
            if reason is None and "targets" in info.cls.requires and y is None:
                raise ConfigError(f"selector '{name}' needs targets: pass targets= (labels, one "
                                  "per row, or the name of a column of data).")
            if reason:
                entry.update(status="skipped", reason=reason)
            else:
                selection = _validated(selector.select(task), len(names), name)
                result = _named(name, selection, names, selector.get_params())
                result.seconds = round(time.perf_counter() - t0, 4)
                result.stability = _stability(selector, selection, X, y, prepared, adapter,
                                              counter, config, device, output_index)
                result.retrain = _retrain(config.retrain, selection, X, y, prepared,
                                          config.seed)
                result.model_evals = int(counter.rows)
                results[name] = result
                entry.update(status="ok", n_selected=len(result.selected))
        except Exception as exc:
            if config.strict or isinstance(exc, ConfigError):
                if isinstance(exc, XaiError):
                    raise
                raise XaiError(f"selector '{name}' failed: {type(exc).__name__}: {exc}. Pass "
                               "strict=False to record the failure and continue.") from exc
            _logger.warning("mlflow-xai: selector %s failed: %s", name, exc)
            entry.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                         traceback=traceback.format_exc(limit=8))
        entry["seconds"] = round(time.perf_counter() - t0, 4)
        entry["model_evals"] = int(counter.rows)
        summary[name] = entry
    return results, summary


def handles_missing(cls: type) -> bool:
    """Whether a selector works on rows with missing values (NaN in ``task.X``).

    A selector may say so itself (class attribute ``handles_missing``). Otherwise: those that
    score features through the model (``requires`` "predict", no gradients) do, because the
    data only got this far with missing values if the model accepts them; those that compute
    statistics of the data themselves (filters, lasso, distance correlation, a trained
    network) do not: NaN would make their scores NaN or make them raise.
    """
    declared = getattr(cls, "handles_missing", None)
    if declared is not None:
        return bool(declared)
    requires = getattr(cls, "requires", ())
    return "predict" in requires and "gradients" not in requires


def check_missing_values(names: list[str], registry: Any, prepared: PreparedData) -> None:
    """Refuse, before any selector runs, the selectors that cannot use rows with missing
    values, naming the columns that have them and the selectors that can."""
    X = prepared.selection_X
    if X is None or not names:
        return
    missing = np.isnan(X).sum(axis=0)
    if not missing.any():
        return
    refused = [n for n in names if not handles_missing(registry.get(n, "selector").cls)]
    if not refused:
        return
    columns = "; ".join(f"'{prepared.feature_names[j]}': {int(missing[j])}"
                        for j in np.flatnonzero(missing)[:10])
    usable = [n for n in registry.names("selector")
              if handles_missing(registry.get(n, "selector").cls)]
    raise InvalidInputError(
        f"selector(s) {refused} compute statistics of the data itself and cannot use rows "
        f"with missing values; the {len(X)} selection rows have missing values in "
        f"{int((missing > 0).sum())} column(s): {columns}. Impute those columns before "
        f"selecting (for example with sklearn.impute.SimpleImputer), or use selectors that "
        f"score features through the model, which accepts missing values: {usable}.")


def _validated(selection: Selection, d: int, name: str) -> Selection:
    if not isinstance(selection, Selection):
        raise XaiError(f"selector '{name}' returned {type(selection).__name__}, not a Selection.")
    if selection.scores.shape != (d,):
        raise XaiError(f"selector '{name}' returned {selection.scores.shape} scores for {d} "
                       "features.")
    if sorted(selection.ranking.tolist()) != list(range(d)):
        raise XaiError(f"selector '{name}' returned a ranking that is not a permutation of the "
                       f"{d} features.")
    if len(selection.selected) and (selection.selected.min() < 0 or selection.selected.max() >= d):
        raise XaiError(f"selector '{name}' selected feature indices outside 0..{d - 1}.")
    return selection


def _named(name: str, selection: Selection, names: list[str], params: dict[str, Any]
           ) -> FeatureSelection:
    position = {int(j): r for r, j in enumerate(selection.ranking)}
    chosen = sorted(set(int(j) for j in selection.selected), key=position.__getitem__)
    return FeatureSelection(
        name=name, scores=pd.Series(selection.scores, index=pd.Index(names, name="feature"),
                                    name=name),
        ranking=[names[j] for j in selection.ranking], selected=[names[j] for j in chosen],
        params=params, info=dict(selection.info))


def _stability(selector: Any, selection: Selection, X: np.ndarray, y: np.ndarray | None,
               prepared: PreparedData, adapter: Any, counter: Any, config: XaiConfig,
               device: str, output_index: int | None) -> dict[str, Any]:
    resamples = int(config.selection_bootstrap)
    if resamples < 2:
        return {"status": "skipped", "reason": "selection_bootstrap < 2"}
    d, size = X.shape[1], len(selection.selected)
    rng = np.random.default_rng(config.seed + 7919)
    subsets, tops, scores = [], [], []
    for b in range(resamples):
        rows = np.sort(rng.choice(len(X), size=max(2, int(SUBSAMPLE * len(X))), replace=False))
        task = build_task(counter=counter, prepared=prepared, model=adapter, device=device,
                          X=X[rows], targets=None if y is None else y[rows],
                          output_index=output_index, seed=config.seed + b + 1)
        got = selector.select(task)
        subsets.append(set(np.asarray(got.selected).tolist()))
        tops.append(set(np.asarray(got.ranking)[:size].tolist()))
        scores.append(np.asarray(got.scores, dtype=float))
    pairs = list(itertools.combinations(range(resamples), 2))
    return {
        "status": "ok", "resamples": resamples, "subsample": SUBSAMPLE, "subset_size": size,
        "kuncheva": _mean([kuncheva(tops[a], tops[b], d) for a, b in pairs]),
        "jaccard": _mean([jaccard(subsets[a], subsets[b]) for a, b in pairs]),
        "score_spearman": _mean([_spearman(scores[a], scores[b]) for a, b in pairs]),
    }


def kuncheva(a: set[int], b: set[int], d: int) -> float | None:
    """Kuncheva's consistency index of two subsets of equal size ``k`` out of ``d`` features:
    ``(r d - k^2) / (k (d - k))`` with ``r = |a & b|``; undefined for ``k`` in ``{0, d}``."""
    k = len(a)
    if k != len(b) or k == 0 or k == d:
        return None
    r = len(a & b)
    return (r * d - k * k) / (k * (d - k))


def jaccard(a: set[int], b: set[int]) -> float:
    union = a | b
    return 1.0 if not union else len(a & b) / len(union)


def _spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def _retrain(retrain: Any, selection: Selection, X: np.ndarray, y: np.ndarray | None,
             prepared: PreparedData, seed: int) -> dict[str, Any]:
    """ROAR-style: score a model retrained on the selected features and on random subsets of the
    same size; the gain over random says whether the selection carries the signal."""
    if retrain is None:
        return {"status": "skipped", "reason": "no retrain= estimator or scoring function given"}
    if y is None:
        return {"status": "skipped", "reason": "the retrain check needs targets"}
    d, size = X.shape[1], len(selection.selected)
    if size == 0 or size == d:
        return {"status": "skipped",
                "reason": f"{size} of {d} features selected: no random subset to compare with"}
    score = _scorer(retrain, seed)
    frame = prepared.encoder.decode(X)
    columns = list(frame.columns) if isinstance(frame, pd.DataFrame) else None

    def subset(indices: np.ndarray) -> Any:
        indices = np.sort(indices)
        if columns is not None:
            return frame[[columns[j] for j in indices]]
        return X[:, indices]

    rng = np.random.default_rng(seed + 104729)
    selected_score = score(subset(selection.selected), y)
    if not np.isfinite(selected_score) and np.isnan(X).any():
        # cross_val_score turns a fit that raised into a NaN score: name the likely cause.
        columns = [prepared.feature_names[j] for j in np.flatnonzero(np.isnan(X).any(axis=0))]
        return {"status": "failed", "method": _describe(retrain),
                "reason": f"the retrain estimator scored NaN on rows with missing values in "
                         f"{columns[:10]}; make it handle them (for example a Pipeline that "
                         "starts with SimpleImputer, or HistGradientBoosting*)."}
    randoms = [score(subset(rng.choice(d, size=size, replace=False)), y)
               for _ in range(RANDOM_SUBSETS)]
    random_score = float(np.mean(randoms))
    return {"status": "ok", "method": _describe(retrain), "subset_size": size,
            "selected_score": float(selected_score), "random_score": random_score,
            "random_scores": [float(s) for s in randoms],
            "gain": float(selected_score) - random_score}


def _scorer(retrain: Any, seed: int) -> Callable[[Any, np.ndarray], float]:
    if hasattr(retrain, "fit") and hasattr(retrain, "get_params"):
        from sklearn.base import clone
        from sklearn.model_selection import cross_val_score

        def cv_score(Xs: Any, y: np.ndarray) -> float:
            return float(np.mean(cross_val_score(clone(retrain), Xs, y, cv=RETRAIN_FOLDS)))

        return cv_score
    if callable(retrain):
        def user_score(Xs: Any, y: np.ndarray) -> float:
            value = retrain(Xs, y)
            if not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
                raise ConfigError(f"retrain function returned {value!r}; it must return a "
                                  "finite score (higher is better).")
            return float(value)

        return user_score
    raise ConfigError(f"retrain must be a scikit-learn estimator (cloned and cross-validated) or "
                      f"a function score(X_subset, y) -> float, got {type(retrain).__name__}.")


def _describe(retrain: Any) -> str:
    if hasattr(retrain, "get_params"):
        return f"{RETRAIN_FOLDS}-fold cross-validated {type(retrain).__name__}.score"
    return getattr(retrain, "__name__", type(retrain).__name__)


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        out[key] = value if isinstance(value, (int, float, str, bool, type(None), list, dict)) \
            else repr(value)
    return out
