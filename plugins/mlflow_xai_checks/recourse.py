"""Governance end tasks answered by querying the model directly: ``flip_test`` and
``responsiveness`` (recourse).

Complete and linear attributions (SHAP, IG) can provably fail to beat random guessing at end
tasks such as "does attribute A change the decision?" or "can the applicant change the outcome?"
(METHODS.md #31, *Impossibility Theorems for Feature Attribution*); once the task is fixed, a
few direct model queries answer it. Both checks read the data in its own columns
(``ctx.data_X``: encoded floats, categorical columns hold category codes, NaN = missing) and
query the model through ``ctx.predict_full`` (counted in ``model_evals``).

**Decisions** (shared). Classifiers without ``threshold``: the predicted label
``classes[argmax]`` of the probability output (a classifier's 1-D output is taken as labels as
it is). With ``threshold``: ``P(positive_class) >= threshold`` (``positive_class`` defaults to
the last class; a 1-D classifier output is read as that probability; a classifier's threshold
must lie inside (0, 1), else every row gets one decision). Regressors need ``threshold``:
``output >= threshold`` (a multi-output regressor also needs ``positive_class``: the output
column compared). ``details`` records ``threshold`` and ``positive_class``: a policy states the
decision it means and its rule fails unless the check used it.

**flip_test**. For each named feature and every explained row, the feature is set to each of
its other values: every other category (categorical columns); every other observed value
(numeric columns with at most ``max_levels`` distinct values in the data and background, e.g.
a 0/1 column); or ``x + s`` for each ``s`` in ``shift[feature]`` (other numeric columns, or any
numeric column with a ``shift``). A row *flips* when its decision changes for at least one
alternative. A missing value is set to every observed value (for shifted columns: the
``max_levels`` quantiles of the observed values), and flips when any of those decisions
differs from the original one. ``flip_rate = flips / rows`` with a Clopper-Pearson (exact)
interval at ``confidence``: for k flips of n rows, ``[Beta(a/2; k, n-k+1),
Beta(1-a/2; k+1, n-k)]`` (0 / 1 at k = 0 / k = n; for k = 0 the upper end is
``1 - (a/2)^(1/n)``). The rows are the explained rows, so the interval is about the
population they were drawn from only when they are a random sample of it. Cost: ``rows``
(original decisions) + ``rows x alternatives`` per feature, one ``predict_full`` call per
feature.

**responsiveness** (METHODS.md #7, *Feature Responsiveness Scores*, reachml). Actionability
metadata: ``immutable`` features, ``monotone`` directions (+1: may only increase, -1: only
decrease) and ``bounds`` ([low, high], None = the observed min / max). The reachable set of
feature j for row x (single-feature actions): empty for an immutable feature; every other
category for a categorical one; for a numeric one the ``n_grid`` empirical quantiles
(``inverted_cdf``: observed values, deduplicated) of the observed values (data and background)
plus the given bounds' ends, kept within [low, high] and in the monotone direction (> x_j for
+1, < x_j for -1), x_j itself excluded (a missing x_j has no direction: every point within the
bounds). ``R_j(x)`` = share of the reachable points where the decision equals ``target``
(the favourable decision: a label, or True for "score >= threshold"; without it, label 1 or
True, and other labels such as approve/decline are refused: the last class in sort order may
be the adverse one; 0 for an empty set), computed for the *adverse* rows (decision !=
target) only. A row is a
*fixed prediction* when every R_j = 0 and none of ``n_joint`` random joint actions (each
mutable feature independently kept, with probability 1/2, or moved to a uniform point of its
reachable set) reaches the target. Reasons: for each local explanation, the top-k features by
|attribution| of each adverse row; ``actionable_top_<k>_share`` is the share of adverse rows
whose top k features (by |attribution|, ignoring negligible ones) all have R > 0, and
``non_actionable_reasons`` counts, per feature, the adverse rows whose top ``top_k`` hold it
while its R = 0. Cost: ``rows`` + ``adverse rows x sum_j |reachable set|`` + ``n_joint``
per row whose every R_j is 0 (at most ``rows x (1 + sum_j |reachable set| + n_joint)``), one
``predict_full`` call per feature plus one for the joint actions.

Limits: single-feature reachable sets on a quantile grid (not reachml's exact enumeration of
joint discrete actions), so a row that only a coordinated change of several features rescues
is found by the ``n_joint`` random joint actions or not at all (a fixed prediction is "no
rescue found", not a proof); no causal effects between features (moving one feature leaves
the others as they are); the reasons part needs attributions over the data's own columns (not
grouped runs); a feature whose |attribution| is at most 1e-8 of the row's largest is no
reason (so a row may have fewer than k reasons, all of which must be actionable).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import (
    Check,
    CheckContext,
    CheckResult,
    ConfigError,
    feature_metric_names,
)

#: The most shift amounts per feature (each one is a model call per row).
MAX_SHIFTS = 100
#: The parameters both checks share: how a row's output becomes a decision.
DECISION_DEFAULTS: dict[str, Any] = {"threshold": None, "positive_class": None}
DECISION_TYPES: dict[str, str] = {"threshold": "float | None", "positive_class": "any"}


# ------------------------------------------------------------------------------------------
# Decisions
# ------------------------------------------------------------------------------------------

@dataclass
class Decider:
    """Model outputs -> decisions (labels, or booleans "score >= threshold")."""

    threshold: float | None
    labels: list[Any] | None  # label mode: the labels of the output columns (None: 1-D labels)
    column: int | None  # threshold mode, 2-D output: the column compared to the threshold
    text: str
    positive: Any = None  # threshold mode, classifiers: the positive class

    def __call__(self, out: np.ndarray) -> np.ndarray:
        out = np.asarray(out)
        if self.threshold is None:
            if self.labels is None:
                return out.reshape(-1)
            return np.asarray(self.labels, dtype=object)[np.argmax(out, axis=1)]
        score = out.reshape(-1) if self.column is None else out[:, self.column]
        return score >= self.threshold

    @property
    def is_label(self) -> bool:
        return self.threshold is None


def _find(labels: list[Any], value: Any) -> int | None:
    for i, label in enumerate(labels):
        if label == value or str(label) == str(value):
            return i
    return None


def jsonable(value: Any) -> Any:
    """A label or number as JSON can hold it (NumPy scalars unwrapped, others as text)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def make_decider(out: np.ndarray, *, is_classifier: bool, classes: list[Any] | None,
                 threshold: float | None, positive_class: Any = None) -> Decider:
    """The decision rule for outputs shaped like ``out`` (see the module docstring).

    Raises ConfigError for a regressor without ``threshold``, an unknown ``positive_class``
    or a multi-output regressor without ``positive_class``.
    """
    out = np.asarray(out)
    two_d = out.ndim == 2
    labels = (list(classes) if classes is not None and two_d and len(classes) == out.shape[1]
              else list(range(out.shape[1])) if two_d else None)
    if threshold is None:
        if not is_classifier:
            raise ConfigError("a regressor's decision needs threshold=...: the decision is "
                              "'output >= threshold' (e.g. threshold=0.5).")
        return Decider(None, labels, None, "predicted class")
    threshold = float(threshold)
    if is_classifier and not 0.0 < threshold < 1.0:
        # Outside (0, 1) every probability falls on one side: one decision for every row,
        # so nothing could ever flip or be rescued.
        raise ConfigError(f"threshold {threshold:g} is not inside (0, 1): a classifier's "
                          "decision compares a probability with it; pass e.g. threshold=0.5.")
    if not two_d:
        if is_classifier:
            name = positive_class if positive_class is not None else (
                classes[-1] if classes else "positive")
            return Decider(threshold, None, None, f"P({name}) >= {threshold:g}",
                           positive=name)
        return Decider(threshold, None, None, f"output >= {threshold:g}")
    if positive_class is None:
        if not is_classifier:
            raise ConfigError(
                f"the model returns {out.shape[1]} outputs: pass positive_class=<column index "
                f"0..{out.shape[1] - 1}> to choose the one compared to threshold.")
        column = len(labels) - 1
    else:
        column = _find(labels, positive_class)
        if column is None:
            raise ConfigError(f"positive_class {positive_class!r} is not one of the model's "
                              f"classes {[jsonable(c) for c in labels]}; pass one of them.")
    if is_classifier:
        return Decider(threshold, None, column,
                       f"P({jsonable(labels[column])}) >= {threshold:g}", positive=labels[column])
    return Decider(threshold, None, column, f"output[{column}] >= {threshold:g}")


def _decision_reason(ctx: CheckContext, params: dict[str, Any], example: str) -> str | None:
    """Why a check that decides rows cannot run on ``ctx``, or None."""
    if ctx.data_type != "tabular":
        return f"decisions are checked on tabular data, not {ctx.data_type}"
    if ctx.data_X is None or ctx.predict_full is None or ctx.data_feature_names is None:
        return "this run gives checks no data in its own columns or no model to query"
    if not ctx.is_classifier and params["threshold"] is None:
        return (f"a regressor's decision needs threshold=... (decision: output >= threshold), "
                f"e.g. {example}")
    return None


def _observed(ctx: CheckContext, j: int) -> np.ndarray:
    """Column j's non-missing values in the explained rows and the background."""
    parts = [ctx.data_X[:, j]]
    if ctx.data_background is not None and len(ctx.data_background):
        parts.append(np.asarray(ctx.data_background, dtype=float)[:, j])
    values = np.concatenate(parts).astype(float)
    return values[~np.isnan(values)]


def _unknown(names: Any, valid: list[str], what: str) -> None:
    bad = [n for n in names if n not in valid]
    if bad:
        raise ConfigError(f"{what}: unknown feature(s) {bad}; the features are {valid}.")


def _numbers(value: Any, what: str) -> list[float]:
    """A number or a non-empty list of finite numbers (not booleans)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    ok = items and all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
                       and math.isfinite(float(v)) for v in items)
    if not ok:
        raise ConfigError(f"{what} must be a finite number or a non-empty list of them, "
                          f"got {value!r}.")
    return [float(v) for v in items]


# ------------------------------------------------------------------------------------------
# Statistics
# ------------------------------------------------------------------------------------------

def clopper_pearson(k: int | np.ndarray, n: int | np.ndarray, confidence: float = 0.95
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Exact two-sided binomial interval for k successes in n trials (NaN for n = 0)."""
    from scipy.stats import beta

    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        low = np.where(k > 0, beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    bad = n <= 0
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


# ------------------------------------------------------------------------------------------
# flip_test
# ------------------------------------------------------------------------------------------

@dataclass
class FlipPlan:
    """How one feature is varied: ``kind`` 'categories' | 'values' (``levels``: the values
    every row is set to, its own excluded) or 'shift' (``shifts``; missing rows are set to
    ``levels``). ``labels`` are what ``details`` shows for each level."""

    kind: str
    levels: np.ndarray
    labels: list[Any]
    shifts: list[float]


def flip_variants(X: np.ndarray, j: int, plan: FlipPlan
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every variant row of ``X`` for feature ``j``: ``(Z, row, alternative)``: the variant
    rows, the row each comes from and the alternative's index (into ``plan.shifts`` for
    shifts, else into ``plan.levels``; missing rows of a shifted feature get
    ``len(shifts) + level index``)."""
    x = X[:, j]
    missing = np.isnan(x)
    if plan.kind == "shift":
        shifts = np.asarray(plan.shifts, dtype=float)
        present = np.flatnonzero(~missing)
        row_a = np.repeat(present, len(shifts))
        alt_a = np.tile(np.arange(len(shifts)), len(present))
        values_a = x[row_a] + shifts[alt_a]
        absent = np.flatnonzero(missing)
        row_b = np.repeat(absent, len(plan.levels))
        lev_b = np.tile(np.arange(len(plan.levels)), len(absent))
        row = np.concatenate([row_a, row_b])
        alt = np.concatenate([alt_a, len(shifts) + lev_b])
        values = np.concatenate([values_a, plan.levels[lev_b]])
    else:
        # Every level but the row's own (all of them for a missing value).
        keep = ~(x[:, None] == plan.levels[None, :])
        row, alt = np.nonzero(keep)
        values = plan.levels[alt]
    Z = X[row].copy()
    Z[:, j] = values
    return Z, row, alt


def flip_summary(changed: np.ndarray, row: np.ndarray, alt: np.ndarray, n_rows: int,
                 n_alternatives: int, confidence: float) -> dict[str, Any]:
    """Flips and rates from ``changed`` (decision of each variant != its row's original)."""
    changed = np.asarray(changed, dtype=bool)
    flipped = np.bincount(row, weights=changed, minlength=n_rows) > 0
    flips = int(flipped.sum())
    low, high = clopper_pearson(flips, n_rows, confidence)
    tried = np.bincount(alt, minlength=n_alternatives)[:n_alternatives]
    hits = np.bincount(alt, weights=changed, minlength=n_alternatives)[:n_alternatives]
    with np.errstate(invalid="ignore", divide="ignore"):
        per_alt = np.where(tried > 0, hits / np.maximum(tried, 1), np.nan)
    return {"flip_rate": flips / n_rows if n_rows else float("nan"),
            "ci_low": float(low), "ci_high": float(high), "rows": int(n_rows),
            "flips": flips, "flipped": flipped, "per_alternative": per_alt,
            "alternative_rows": tried}


class FlipTest(Check):
    name: ClassVar[str] = "flip_test"
    description: ClassVar[str] = (
        "Direct end-task query: set each named feature to each of its other values (or shift "
        "it) for every explained row and report the share of decisions that change, with a "
        "Clopper-Pearson interval; for classifiers and thresholded regressors.")
    default: ClassVar[bool] = False
    severity: ClassVar[str] = "error"
    cost: ClassVar[str] = "rows x (1 + the alternatives of each named feature) model rows"
    defaults: ClassVar[dict[str, Any]] = {"features": None, "shift": None, "max_levels": 10,
                                          "confidence": 0.95, "max_flip_rate": None,
                                          **DECISION_DEFAULTS}
    param_types: ClassVar[dict[str, str]] = {
        "features": "list[str] | None", "shift": "dict | None", "max_levels": "int >= 1",
        "confidence": "float in (0, 1)", "max_flip_rate": "float in [0, 1] | None",
        **DECISION_TYPES}

    def supports(self, ctx: CheckContext) -> str | None:
        params = self.validate_params()
        if not params["features"]:
            return ('flip_test needs the features to flip: checks={"flip_test": '
                    '{"features": ["sex"]}}')
        return _decision_reason(ctx, params, 'checks={"flip_test": {"features": ["sex"], '
                                             '"threshold": 0.5}}')

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_methods: int
                             ) -> float | None:
        features = params.get("features") or []
        shift = params.get("shift") or {}
        per_row = 1.0  # the original decisions
        for feature in features:
            if feature in shift:
                amounts = shift[feature]
                per_row += len(amounts) if isinstance(amounts, (list, tuple)) else 1
            else:  # at most max_levels - 1 other values (a categorical column may have more)
                per_row += max(1, params.get("max_levels", 10) - 1)
        return float(n_rows * per_row)

    def plan(self, ctx: CheckContext, params: dict[str, Any]) -> dict[str, FlipPlan]:
        """feature -> how it is varied; ConfigError for unknown names and missing shifts."""
        names = list(ctx.data_feature_names)
        features = list(dict.fromkeys(params["features"]))
        _unknown(features, names, "flip_test features")
        shift = params["shift"] or {}
        _unknown(shift, names, "flip_test shift")
        plans: dict[str, FlipPlan] = {}
        for feature in features:
            j = names.index(feature)
            if j in ctx.categories:
                if feature in shift:
                    raise ConfigError(f"flip_test: '{feature}' is categorical and is set to "
                                      "each of its other categories; remove it from shift.")
                cats = ctx.categories[j]
                plans[feature] = FlipPlan("categories", np.arange(len(cats), dtype=float),
                                          [jsonable(c) for c in cats], [])
                continue
            observed = _observed(ctx, j)
            distinct = np.unique(observed)
            if feature in shift and len(distinct) <= params["max_levels"]:
                raise ConfigError(
                    f"flip_test: '{feature}' has {len(distinct)} values (at most "
                    f"max_levels={params['max_levels']}) and is set to each of them; remove it "
                    "from shift (or lower max_levels to shift it).")
            if feature not in shift and len(distinct) <= params["max_levels"]:
                plans[feature] = FlipPlan("values", distinct,
                                          [jsonable(float(v)) for v in distinct], [])
                continue
            if feature not in shift:
                raise ConfigError(
                    f"flip_test: '{feature}' is numeric with {len(distinct)} distinct values "
                    f"(more than max_levels={params['max_levels']}): pass shift={{'{feature}': "
                    "amount} (a number or a list of numbers), or raise max_levels.")
            amounts = _numbers(shift[feature], f"flip_test: shift['{feature}']")
            if any(a == 0 for a in amounts) or len(amounts) > MAX_SHIFTS:
                raise ConfigError(f"flip_test: shift['{feature}'] must be 1 to {MAX_SHIFTS} "
                                  f"non-zero amounts (a shift of 0 changes nothing), got "
                                  f"{shift[feature]!r}.")
            # A missing value has nothing to shift: it is set to the quantiles instead.
            levels = (np.unique(np.quantile(observed, np.linspace(0, 1, params["max_levels"]),
                                            method="inverted_cdf"))
                      if len(observed) else np.zeros(0))
            plans[feature] = FlipPlan("shift", levels, [jsonable(float(v)) for v in levels],
                                      amounts)
        return plans

    def run(self, ctx: CheckContext) -> CheckResult:
        params = self.validate_params()
        plans = self.plan(ctx, params)
        X = np.asarray(ctx.data_X, dtype=float)
        n = len(X)
        out = ctx.predict_full(X)
        decide = make_decider(out, is_classifier=ctx.is_classifier, classes=ctx.classes,
                              threshold=params["threshold"],
                              positive_class=params["positive_class"])
        original = decide(out)
        seg = feature_metric_names(ctx.data_feature_names)
        result = CheckResult()
        features: dict[str, Any] = {}
        for feature, plan in plans.items():
            j = ctx.data_feature_names.index(feature)
            Z, row, alt = flip_variants(X, j, plan)
            changed = (np.asarray(decide(ctx.predict_full(Z)) != original[row], dtype=bool)
                       if len(Z) else np.zeros(0, dtype=bool))
            n_alt = len(plan.shifts) + len(plan.levels) if plan.kind == "shift" else len(
                plan.levels)
            summary = flip_summary(changed, row, alt, n, n_alt, params["confidence"])
            if plan.kind == "shift":
                values = [jsonable(s) for s in plan.shifts]
            else:
                values = plan.labels
            alternatives = [{"value": v, "flip_rate": _float(summary["per_alternative"][a]),
                             "rows": int(summary["alternative_rows"][a])}
                            for a, v in enumerate(values)]
            entry = {"flip_rate": _float(summary["flip_rate"]),
                     "ci_low": _float(summary["ci_low"]), "ci_high": _float(summary["ci_high"]),
                     "rows": n, "flips": summary["flips"], "kind": plan.kind,
                     "alternatives": alternatives,
                     # Rows that had another value to take: 0 when the feature has one value
                     # in the data (nothing was flipped, so a rate of 0 shows nothing).
                     "rows_with_alternative": len(np.unique(row)),
                     "missing_rows": int(np.isnan(X[:, j]).sum())}
            if plan.kind == "shift":
                entry["shift"] = [jsonable(a) for a in plan.shifts]
            if plan.kind == "shift" and entry["missing_rows"]:
                entry["missing_set_to"] = plan.labels
            features[feature] = entry
            s = seg[feature]
            result.figures[f"{s}/flip_rate"] = summary["flip_rate"]
            result.figures[f"{s}/flip_rate_ci_low"] = summary["ci_low"]
            result.figures[f"{s}/flip_rate_ci_high"] = summary["ci_high"]
            if params["max_flip_rate"] is not None:
                result.thresholds[f"{s}/flip_rate"] = {"max": params["max_flip_rate"]}
        result.details = {"confidence": params["confidence"], "decision": decide.text,
                          **_decision_params(params), "features": features}
        return result


def _decision_params(params: dict[str, Any]) -> dict[str, Any]:
    """The decision rule's parameters as ``details`` records them (a policy compares them
    with the decision it means)."""
    threshold = params["threshold"]
    return {"threshold": None if threshold is None else float(threshold),
            "positive_class": jsonable(params["positive_class"])}


def _float(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


# ------------------------------------------------------------------------------------------
# responsiveness
# ------------------------------------------------------------------------------------------

@dataclass
class Actionability:
    """The validated actionability metadata, by column index."""

    immutable: set[int]
    monotone: dict[int, int]
    bounds: dict[int, tuple[float | None, float | None]]


def read_actionability(params: dict[str, Any], names: list[str],
                       categorical: set[int]) -> Actionability:
    """Validate ``immutable``, ``monotone`` and ``bounds`` (ConfigError naming the problem)."""
    immutable = list(params["immutable"] or [])
    monotone = params["monotone"] or {}
    bounds = params["bounds"] or {}
    _unknown(immutable, names, "responsiveness immutable")
    _unknown(monotone, names, "responsiveness monotone")
    _unknown(bounds, names, "responsiveness bounds")
    directions: dict[int, int] = {}
    for feature, sign in monotone.items():
        j = names.index(feature)
        if isinstance(sign, (bool, np.bool_)) or not isinstance(sign, numbers.Real) or \
                float(sign) not in (1.0, -1.0):
            raise ConfigError(f"responsiveness monotone['{feature}'] must be +1 (may only "
                              f"increase) or -1 (may only decrease), got {sign!r}.")
        if j in categorical:
            raise ConfigError(f"responsiveness monotone['{feature}']: '{feature}' is "
                              "categorical and has no direction; remove it from monotone "
                              "(or list it in immutable).")
        directions[j] = int(sign)
    ranges: dict[int, tuple[float | None, float | None]] = {}
    for feature, pair in bounds.items():
        j = names.index(feature)
        if j in categorical:
            raise ConfigError(f"responsiveness bounds['{feature}']: '{feature}' is "
                              "categorical; bounds apply to numeric features only.")
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(
                v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool)
                              and math.isfinite(float(v))) for v in pair):
            raise ConfigError(f"responsiveness bounds['{feature}'] must be [low, high] "
                              f"(numbers or None), got {pair!r}.")
        low, high = (None if v is None else float(v) for v in pair)
        if low is not None and high is not None and low > high:
            raise ConfigError(f"responsiveness bounds['{feature}']: low {low:g} is above "
                              f"high {high:g}.")
        ranges[j] = (low, high)
    return Actionability({names.index(f) for f in immutable}, directions, ranges)


def numeric_grid(observed: np.ndarray, n_grid: int, low: float | None = None,
                 high: float | None = None) -> np.ndarray:
    """The candidate points of a numeric feature: the ``n_grid`` empirical quantiles
    (observed values) of ``observed``, plus the given bounds' ends, within [low, high]
    (None = the observed min / max); sorted, distinct."""
    observed = np.asarray(observed, dtype=float)
    observed = observed[~np.isnan(observed)]
    if not len(observed):
        return np.zeros(0)
    grid = np.quantile(observed, np.linspace(0, 1, n_grid), method="inverted_cdf")
    ends = [v for v in (low, high) if v is not None]
    grid = np.unique(np.concatenate([grid, np.asarray(ends, dtype=float)]))
    lo = observed.min() if low is None else low
    hi = observed.max() if high is None else high
    return grid[(grid >= lo) & (grid <= hi)]


def reachable_mask(x: np.ndarray, grid: np.ndarray, direction: int = 0) -> np.ndarray:
    """``(rows, len(grid))``: which grid points each row's value can move to (its own value
    excluded; +1 / -1: only above / below it; a missing value: every point)."""
    x = np.asarray(x, dtype=float)[:, None]
    g = np.asarray(grid, dtype=float)[None, :]
    missing = np.isnan(x)
    if direction > 0:
        allowed = g > x
    elif direction < 0:
        allowed = g < x
    else:
        allowed = g != x
    return np.where(missing, True, allowed)


def top_k_actionable(values: np.ndarray, responsive: np.ndarray, top_k: int,
                     negligible: float = 1e-8) -> tuple[np.ndarray, np.ndarray]:
    """``(share[k-1] for k = 1..top_k, non-actionable counts per feature)``: the share of rows
    whose top k features by |value| all have ``responsive`` True, and per feature the rows
    whose top ``top_k`` hold it while it is not responsive. A feature whose |value| is at most
    ``negligible`` times the row's largest is no reason (e.g. a feature the model ignores),
    so it never makes a row's reasons non-actionable."""
    n, d = values.shape
    top_k = max(1, min(int(top_k), d))
    magnitude = np.abs(values)
    order = np.argsort(-magnitude, axis=1, kind="stable")[:, :top_k]
    largest = magnitude.max(axis=1, initial=0.0)[:, None]
    reason = np.take_along_axis(magnitude, order, axis=1) > negligible * largest
    blocked = reason & ~np.take_along_axis(responsive, order, axis=1)  # (n, top_k)
    shares = (np.cumprod(~blocked, axis=1).mean(axis=0) if n else np.ones(top_k))
    counts = np.zeros(d, dtype=int)
    np.add.at(counts, order[blocked], 1)
    return shares.astype(float), counts


class Responsiveness(Check):
    name: ClassVar[str] = "responsiveness"
    description: ClassVar[str] = (
        "Recourse (Feature Responsiveness Scores): for each adverse row and feature, the share "
        "of actionable single-feature changes (immutable, monotone, bounds) that reach the "
        "target decision; fixed predictions no change rescues; and whether each explanation's "
        "top-k reasons are actionable.")
    default: ClassVar[bool] = False
    severity: ClassVar[str] = "error"
    cost: ClassVar[str] = ("rows x (1 + sum of the features' reachable sets (<= n_grid + 2 "
                           "each, or the categories) + n_joint) model rows at most")
    defaults: ClassVar[dict[str, Any]] = {
        "immutable": [], "monotone": {}, "bounds": {}, "target": None, "n_grid": 20,
        "n_joint": 100, "top_k": 3, "max_fixed_rate": None, "min_actionable_top_k_share": None,
        **DECISION_DEFAULTS}
    param_types: ClassVar[dict[str, str]] = {
        "immutable": "list[str] | None", "monotone": "dict | None", "bounds": "dict | None",
        "target": "any", "n_grid": "int in [2, 1000]", "n_joint": "int in [0, 10000]",
        "top_k": "int in [1, 100]",
        "max_fixed_rate": "float in [0, 1] | None",
        "min_actionable_top_k_share": "float in [0, 1] | None", **DECISION_TYPES}

    def supports(self, ctx: CheckContext) -> str | None:
        params = self.validate_params()
        return _decision_reason(ctx, params, 'checks={"responsiveness": {"threshold": 0.5, '
                                             '"immutable": ["age"]}}')

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_methods: int,
                             n_features: int | None = None) -> float | None:
        if n_features is None:  # a caller that does not say: no estimate
            return None
        mutable = max(0, n_features - len(params.get("immutable") or []))
        return float(n_rows * (1 + mutable * (params.get("n_grid", 20) + 2)
                               + params.get("n_joint", 100)))

    def run(self, ctx: CheckContext) -> CheckResult:
        params = self.validate_params()
        names = list(ctx.data_feature_names)
        action = read_actionability(params, names, set(ctx.categories))
        X = np.asarray(ctx.data_X, dtype=float)
        n, d = X.shape
        out = ctx.predict_full(X)
        decide = make_decider(out, is_classifier=ctx.is_classifier, classes=ctx.classes,
                              threshold=params["threshold"],
                              positive_class=params["positive_class"])
        target = self._target(params["target"], decide, ctx)
        decisions = decide(out)
        adverse = np.flatnonzero(np.asarray(decisions != target, dtype=bool))
        XA = X[adverse]
        na = len(adverse)

        # Each feature's candidate points and which ones each row can reach.
        grids: list[np.ndarray] = []
        actionable: list[bool] = []
        R = np.zeros((na, d))
        reachable_any = np.zeros((na, d), dtype=bool)
        for j in range(d):
            grid = self._grid(ctx, j, action, params["n_grid"])
            grids.append(grid)
            direction = action.monotone.get(j, 0)
            all_mask = reachable_mask(X[:, j], grid, direction)
            actionable.append(bool(j not in action.immutable and all_mask.any()))
            if j in action.immutable or not len(grid) or not na:
                continue
            mask = all_mask[adverse]
            reachable_any[:, j] = mask.any(axis=1)
            row, point = np.nonzero(mask)
            if not len(row):
                continue
            Z = XA[row].copy()
            Z[:, j] = grid[point]
            hit = np.asarray(decide(ctx.predict_full(Z)) == target, dtype=float)
            hits = np.bincount(row, weights=hit, minlength=na)
            sizes = np.bincount(row, minlength=na)
            R[:, j] = np.where(sizes > 0, hits / np.maximum(sizes, 1), 0.0)

        fixed = self._fixed(ctx, params["n_joint"], XA, R, reachable_any, grids, action,
                            decide, target)
        seg = feature_metric_names(names)
        result = CheckResult()
        fixed_rows = int(fixed.sum())
        fixed_rate = fixed_rows / na if na else 0.0
        result.figures["fixed_rate"] = fixed_rate
        result.figures["adverse_rows"] = float(na)
        if params["max_fixed_rate"] is not None:
            result.thresholds["fixed_rate"] = {"max": params["max_fixed_rate"]}
        features: dict[str, Any] = {}
        for j, feature in enumerate(names):
            mean_r = float(R[:, j].mean()) if na else float("nan")
            share = float((R[:, j] > 0).mean()) if na else float("nan")
            result.figures[f"{seg[feature]}/mean_responsiveness"] = mean_r
            result.figures[f"{seg[feature]}/responsive_share"] = share
            features[feature] = {"mean_responsiveness": _float(mean_r),
                                 "responsive_share": _float(share),
                                 "actionable": actionable[j],
                                 "reachable_points": len(grids[j])
                                 if j not in action.immutable else 0}
        top_k = min(params["top_k"], d)
        details: dict[str, Any] = {
            "target": jsonable(target), "decision": decide.text, **_decision_params(params),
            "rows": int(n),
            "adverse_rows": int(na), "fixed_rows": fixed_rows, "fixed_rate": float(fixed_rate),
            "top_k": int(top_k), "immutable": [names[j] for j in sorted(action.immutable)],
            "monotone": {names[j]: s for j, s in action.monotone.items()},
            "bounds": {names[j]: list(b) for j, b in action.bounds.items()},
            "features": features, "methods": {},
            "fixed_row_indices": [int(i) for i in adverse[fixed]][:100],
        }
        if not na:
            details["note"] = ("no adverse rows: every explained row already has the target "
                               "decision, so fixed_rate is 0 and nothing is scored")
        self._reasons(ctx, params, R, adverse, top_k, result, details)
        result.details = details
        return result

    @staticmethod
    def _target(value: Any, decide: Decider, ctx: CheckContext) -> Any:
        if not decide.is_label:
            if value is None:
                return True
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise ConfigError(f"responsiveness target: with a threshold the decision is "
                              f"'{decide.text}' (True or False); pass target=True or "
                              f"target=False, got {value!r}.")
        labels = decide.labels if decide.labels is not None else ctx.classes
        if value is None:
            if not labels:
                raise ConfigError("responsiveness: the model's classes are unknown; pass "
                                  "target=<the desired label>.")
            # Only 0/1 (or False/True) labels say which decision is favourable: with others
            # (approve/decline) the last in sort order may well be the adverse one.
            if {str(c) for c in labels} not in ({"0", "1"}, {"False", "True"}, {"0.0", "1.0"}):
                raise ConfigError(
                    f"responsiveness: which decision is favourable? The classes are "
                    f"{[jsonable(c) for c in labels]}; pass target=<the favourable label>.")
            return labels[-1]
        if labels:
            index = _find(labels, value)
            if index is None:
                raise ConfigError(f"responsiveness target {value!r} is not one of the model's "
                                  f"classes {[jsonable(c) for c in labels]}.")
            return labels[index]
        return value

    @staticmethod
    def _grid(ctx: CheckContext, j: int, action: Actionability, n_grid: int) -> np.ndarray:
        if j in ctx.categories:
            return np.arange(len(ctx.categories[j]), dtype=float)
        low, high = action.bounds.get(j, (None, None))
        return numeric_grid(_observed(ctx, j), n_grid, low, high)

    @staticmethod
    def _fixed(ctx: CheckContext, n_joint: int, XA: np.ndarray, R: np.ndarray,
               reachable_any: np.ndarray, grids: list[np.ndarray], action: Actionability,
               decide: Decider, target: Any) -> np.ndarray:
        """Adverse rows no single-feature action and none of ``n_joint`` random joint actions
        rescues."""
        stuck = ~(R > 0).any(axis=1)
        # Rows with something to move get the joint actions; the others are fixed outright.
        candidates = np.flatnonzero(stuck & reachable_any.any(axis=1))
        fixed = stuck.copy()
        if not len(candidates) or n_joint == 0:
            return fixed
        rng = np.random.default_rng(ctx.seed)
        nc = len(candidates)
        Z = np.repeat(XA[candidates], n_joint, axis=0).reshape(nc, n_joint, -1)
        for j, grid in enumerate(grids):
            if j in action.immutable or not len(grid):
                continue
            mask = reachable_mask(XA[candidates, j], grid, action.monotone.get(j, 0))
            count = mask.sum(axis=1)
            # Allowed points first, then a uniform index among each row's allowed ones.
            order = np.argsort(~mask, axis=1, kind="stable")
            pick = np.floor(rng.random((nc, n_joint)) * np.maximum(count, 1)[:, None])
            chosen = grid[np.take_along_axis(order, pick.astype(int), axis=1)]
            move = (rng.random((nc, n_joint)) < 0.5) & (count > 0)[:, None]
            Z[:, :, j] = np.where(move, chosen, Z[:, :, j])
        got = decide(ctx.predict_full(Z.reshape(nc * n_joint, -1)))
        rescued = np.asarray(got == target, dtype=bool).reshape(nc, n_joint).any(axis=1)
        fixed[candidates[rescued]] = False
        return fixed

    @staticmethod
    def _reasons(ctx: CheckContext, params: dict[str, Any], R: np.ndarray, adverse: np.ndarray,
                 top_k: int, result: CheckResult, details: dict[str, Any]) -> None:
        names = list(ctx.data_feature_names)
        methods = ctx.local_methods
        if not methods:
            details["reasons_note"] = ("no local explanation ran: pass explainers=[...] (e.g. "
                                       "kernel_shap) to check whether the top reasons are "
                                       "actionable")
            return
        if list(ctx.feature_names) != names:
            details["reasons_note"] = ("the explanations are over groups, not the data's "
                                       "columns: the reasons' actionability is not checked")
            return
        minimum = params["min_actionable_top_k_share"]
        for method in methods:
            values = np.asarray(ctx.results[method].values, dtype=float)
            if values.shape != (len(ctx.data_X), len(names)):
                details["methods"][method] = {"note": f"values of shape {values.shape} do not "
                                                      "match the data; not checked"}
                continue
            shares, counts = top_k_actionable(values[adverse], R > 0, top_k)
            for k, share in enumerate(shares, start=1):
                result.figures[f"{method}/actionable_top_{k}_share"] = float(share)
            if minimum is not None:
                result.thresholds[f"{method}/actionable_top_{top_k}_share"] = {"min": minimum}
            details["methods"][method] = {
                "actionable_top_k_share": {str(k): float(s) for k, s in enumerate(shares, 1)},
                "non_actionable_reasons": {names[j]: int(c) for j, c in enumerate(counts)}}
