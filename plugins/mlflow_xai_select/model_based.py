"""Selectors that query the model.

* ``permutation``: how much the model's loss against the targets grows when one feature is
  shuffled (Breiman, 2001; Fisher et al., 2019). Own subset: the upper of two clusters of
  loss increases, each more than two standard errors above zero.
* ``attribution_rfe``: recursive feature elimination driven by any registered black-box
  explainer (ChaosMining's "RFE with attributions"): refit the estimator on the remaining
  features, explain it, drop the least important ``step`` fraction, repeat. Own subset: the
  smallest one whose held-out score is within ``tolerance`` of the best round's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import (
    SUBSET_DEFAULTS,
    ConfigError,
    ExplainTask,
    Selection,
    Selector,
    choose_subset,
    method_class,
)

from ._common import (
    check_fraction,
    check_positive_int,
    require_targets,
    targets_of,
    two_cluster_cut,
)

_logger = logging.getLogger(__name__)

#: Samples per explained row and background row of the explainer in each elimination round:
#: rankings need less precision than reported attributions.
RFE_SAMPLES = 256


def loss_function(task: ExplainTask, name: str) -> tuple[Callable[[np.ndarray, int], float], str]:
    """``loss(X, repeats)``: mean model loss on ``X``, which holds ``repeats`` stacked copies of
    the task's rows (targets are tiled to match). Log loss of the class probabilities for
    classifiers, squared error of the explained output otherwise."""
    require_targets(task, name)
    raw = np.asarray(task.targets)
    classes = task.classes
    if task.is_classifier and classes is not None and task.predict_full is not None:
        lookup = {c: i for i, c in enumerate(classes)}
        missing = sorted({str(v) for v in raw.tolist() if v not in lookup})
        if missing:
            raise ConfigError(f"selector '{name}': target label(s) {missing[:5]} are not classes "
                              f"of the model ({list(classes)}).")
        column = np.array([lookup[v] for v in raw.tolist()])

        def log_loss(X: np.ndarray, repeats: int) -> float:
            P = np.asarray(task.predict_full(X), dtype=float)
            if P.ndim == 1 or P.shape[1] == 1:  # one probability: of the positive class
                p1 = P.reshape(-1)
                P = np.column_stack([1 - p1, p1])
            p = P[np.arange(len(X)), np.tile(column, repeats)]
            return float(-np.mean(np.log(np.clip(p, 1e-12, 1.0))))

        return log_loss, "log loss"
    if task.output_label is not None:
        target = (raw == task.output_label).astype(float)
    else:
        try:
            target = raw.astype(float)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"selector '{name}': targets must be numeric for a model with one "
                              "output.") from exc

    def squared_error(X: np.ndarray, repeats: int) -> float:
        return float(np.mean((task.predict(X) - np.tile(target, repeats)) ** 2))

    return squared_error, "squared error"


class Permutation(Selector):
    name: ClassVar[str] = "permutation"
    description: ClassVar[str] = (
        "Model reliance: the growth of the model's loss against the targets when a feature is "
        "shuffled; own subset = the upper cluster of increases, each > 2 standard errors."
    )
    requires: ClassVar[tuple[str, ...]] = ("predict", "targets")
    stochastic: ClassVar[bool] = True
    #: n_repeats: shuffles per feature (each costs one model call per row).
    defaults: ClassVar[dict[str, Any]] = {**SUBSET_DEFAULTS, "n_repeats": 5}
    param_types: ClassVar[dict[str, str]] = {"n_repeats": "int >= 1"}

    def select(self, task: ExplainTask) -> Selection:
        params = self.validate_params()
        repeats = check_positive_int(params["n_repeats"], self.name, "n_repeats")
        loss, loss_name = loss_function(task, self.name)
        n, d = task.X.shape
        rng = np.random.default_rng(task.seed)
        base = loss(task.X, 1)
        increase = np.zeros((d, repeats))
        work = task.X.copy()  # one working copy: shuffle a column, score, restore
        for j in range(d):
            for r in range(repeats):
                work[:, j] = task.X[rng.permutation(n), j]
                increase[j, r] = loss(work, 1) - base
            work[:, j] = task.X[:, j]
        scores = increase.mean(axis=1)
        sem = increase.std(axis=1, ddof=1) / np.sqrt(repeats) if repeats > 1 else np.zeros(d)
        # Own rule: the upper of two clusters of scores (a few features the model relies on,
        # many it barely uses), and clearly above zero.
        own = np.intersect1d(two_cluster_cut(scores), np.flatnonzero((scores > 0)
                                                                     & (scores > 2 * sem)))
        return Selection(scores=scores, selected=choose_subset(scores, params, own=own),
                         info={"loss": loss_name, "base_loss": base,
                               "standard_error": sem.round(8).tolist()})


class AttributionRFE(Selector):
    name: ClassVar[str] = "attribution_rfe"
    description: ClassVar[str] = (
        "Recursive feature elimination driven by a registered explainer (ChaosMining): refit, "
        "explain, drop the least important features, repeat; ranking = reverse elimination."
    )
    requires: ClassVar[tuple[str, ...]] = ("predict", "targets")
    stochastic: ClassVar[bool] = True
    #: explainer/explainer_params: the black-box explainer that ranks features each round and
    #: its parameters (None: its defaults, with n_samples=256 where it samples);
    #: estimator: scikit-learn estimator refitted on the remaining features (None: a clone of
    #: the model when it is a scikit-learn estimator, else the model itself with eliminated
    #: features held at their background mean); step: fraction (or count, if >= 1) removed
    #: per round; rows/background_rows: explained and reference rows per round; holdout:
    #: share of rows kept out of refitting and used to score each round; tolerance: own
    #: subset = smallest within this share of the best round's score.
    defaults: ClassVar[dict[str, Any]] = {
        **SUBSET_DEFAULTS, "explainer": "kernel_shap", "explainer_params": None,
        "estimator": None, "step": 0.2, "rows": 100, "background_rows": 20, "holdout": 0.25,
        "tolerance": 0.01,
    }
    param_types: ClassVar[dict[str, str]] = {
        "explainer": "str", "explainer_params": "dict | None", "estimator": "any",
        "step": "float in (0, 1) | int >= 1", "rows": "int >= 1", "background_rows": "int >= 1",
        "holdout": "float in (0, 1)", "tolerance": "float in [0, 1]",
    }

    def validate_params(self) -> dict[str, Any]:
        params = super().validate_params()
        # The driving explainer and its parameters are checked here too (so at autolog()
        # time), not after the first refit.
        _explainer(params["explainer"], params["explainer_params"])
        return params

    def select(self, task: ExplainTask) -> Selection:
        params = self.validate_params()
        explainer = _explainer(params["explainer"], params["explainer_params"])
        step = params["step"]
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise ConfigError(f"{self.name}: step must be a fraction in (0, 1) or a count >= 1, "
                              f"got {step!r}.")
        rows = check_positive_int(params["rows"], self.name, "rows")
        n_background = check_positive_int(params["background_rows"], self.name,
                                          "background_rows")
        holdout = check_fraction(params["holdout"], self.name, "holdout")
        tolerance = check_fraction(params["tolerance"], self.name, "tolerance")
        y, discrete = targets_of(task, self.name)
        rng = np.random.default_rng(task.seed)
        n, d = task.X.shape
        order = rng.permutation(n)
        n_test = max(1, int(round(holdout * n)))
        test, train = order[:n_test], order[n_test:]
        fitter = _Refit(task, params["estimator"], discrete, self.name)

        remaining = list(range(d))
        eliminated: list[int] = []     # worst first
        rounds: list[dict[str, Any]] = []
        while remaining:
            model = fitter.fit(task.X[train][:, remaining], y[train], remaining)
            score = fitter.score(model, task.X[test][:, remaining], y[test], test, remaining)
            rounds.append({"features": [task.feature_names[j] for j in remaining],
                           "holdout_score": score})
            if len(remaining) == 1:
                eliminated.append(remaining[0])
                break
            importance = self._importance(explainer, task, model, fitter, remaining, train,
                                          test, rows, n_background, rng)
            drop = max(1, int(step) if step >= 1 else int(np.floor(step * len(remaining))))
            drop = min(drop, len(remaining) - 1)
            worst = np.argsort(importance, kind="stable")[:drop]
            rounds[-1]["importance"] = {task.feature_names[remaining[i]]: float(importance[i])
                                        for i in range(len(remaining))}
            dropped = {remaining[i] for i in worst}
            eliminated.extend(remaining[i] for i in worst)
            remaining = [j for j in remaining if j not in dropped]
        ranking = np.array(eliminated[::-1])
        scores = np.empty(d)
        scores[ranking] = (d - np.arange(d)) / d
        best = max(r["holdout_score"] for r in rounds)
        good = [r for r in rounds if r["holdout_score"] >= best - tolerance * max(abs(best), 1e-12)]
        own_names = min(good, key=lambda r: len(r["features"]))["features"]
        own = np.array([task.feature_names.index(f) for f in own_names])
        return Selection(scores=scores, ranking=ranking,
                         selected=choose_subset(scores, params, own=own, ranking=ranking),
                         info={"mode": fitter.mode, "explainer": explainer.name,
                               "score": fitter.score_name, "rounds": rounds})

    def _importance(self, explainer: Any, task: ExplainTask, model: Any, fitter: _Refit,
                    remaining: list[int], train: np.ndarray, test: np.ndarray, rows: int,
                    n_background: int, rng: np.random.Generator) -> np.ndarray:
        explained = task.X[rng.choice(test, size=min(rows, len(test)), replace=False)]
        reference = task.X[rng.choice(train, size=min(n_background, len(train)), replace=False)]
        sub = ExplainTask(
            predict=fitter.predictor(model, remaining), X=explained[:, remaining],
            background=reference[:, remaining],
            feature_names=[task.feature_names[j] for j in remaining], seed=task.seed,
            device=task.device, max_batch_rows=task.max_batch_rows)
        reason = explainer.supports(sub)
        if reason:
            raise ConfigError(f"{self.name}: explainer '{explainer.name}' cannot drive the "
                              f"elimination: {reason}. Use a black-box explainer such as "
                              "kernel_shap or permutation_shap.")
        return explainer.explain(sub).global_importance()


def _explainer(name: Any, explainer_params: Any) -> Any:
    cls = method_class(str(name), "explainer")
    if explainer_params is None:
        explainer_params = {"n_samples": RFE_SAMPLES} if "n_samples" in cls.defaults else {}
    if not isinstance(explainer_params, dict):
        raise ConfigError(f"attribution_rfe: explainer_params must be a dict, got "
                          f"{type(explainer_params).__name__}.")
    explainer = cls(**explainer_params)
    explainer.validate_params()
    return explainer


class _Refit:
    """Refits a scikit-learn estimator on feature subsets, or, when there is none, keeps the
    task's model and holds eliminated features at their background mean."""

    def __init__(self, task: ExplainTask, estimator: Any, discrete: bool, name: str) -> None:
        self.task, self.discrete = task, discrete
        self.fill = task.background.mean(axis=0)
        self.template = estimator
        self.mode = "refit"
        if estimator is None:
            raw = task.raw_model
            if hasattr(raw, "fit") and hasattr(raw, "get_params"):
                self.template = raw
            else:
                self.mode = "fixed model"
        elif not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
            raise ConfigError(f"{name}: estimator must be a scikit-learn estimator, got "
                              f"{type(estimator).__name__}.")
        self.user_estimator = estimator is not None
        self.score_name = "estimator.score on the holdout" if self.mode == "refit" else \
            "negative model loss on the holdout"

    def fit(self, X: np.ndarray, y: np.ndarray, remaining: list[int]) -> Any:
        if self.mode != "refit":
            return None
        from sklearn.base import clone

        try:
            return clone(self.template).fit(X, y)
        except Exception as exc:
            if self.user_estimator:
                raise
            # e.g. a pipeline that selects columns by name: explain the model as it is.
            _logger.info("attribution_rfe: cannot refit %s on a feature subset (%s); "
                         "eliminating with the fixed model", type(self.template).__name__, exc)
            self.mode = "fixed model"
            self.score_name = "negative model loss on the holdout"
            return None

    def _embed(self, Xs: np.ndarray, remaining: list[int]) -> np.ndarray:
        full = np.tile(self.fill, (len(Xs), 1))
        full[:, remaining] = Xs
        return full

    def predictor(self, model: Any, remaining: list[int]) -> Callable[[np.ndarray], np.ndarray]:
        if model is None:
            return lambda Xs: self.task.predict(self._embed(Xs, remaining))
        if self.discrete and hasattr(model, "predict_proba"):
            classes = list(model.classes_)
            label = self.task.output_label
            column = classes.index(label) if label in classes else (1 if len(classes) == 2
                                                                   else 0)
            return lambda Xs: model.predict_proba(Xs)[:, column]
        return lambda Xs: np.asarray(model.predict(Xs), dtype=float).reshape(len(Xs), -1)[:, 0]

    def score(self, model: Any, Xs: np.ndarray, y: np.ndarray, rows: np.ndarray,
              remaining: list[int]) -> float:
        if model is not None:
            return float(model.score(Xs, y))
        sub = ExplainTask(predict=self.task.predict, X=self.task.X[rows],
                          background=self.task.background, feature_names=[],
                          targets=np.asarray(self.task.targets)[rows], model=self.task.model,
                          output_label=self.task.output_label,
                          predict_full=self.task.predict_full,
                          is_classifier=self.task.is_classifier)
        loss, _ = loss_function(sub, "attribution_rfe")
        return -loss(self._embed(Xs, remaining), 1)
