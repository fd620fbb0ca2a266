"""The Rashomon spread: feature importance and pairwise interaction over near-equally-good models.

Paper: METHODS.md entry 30, "Exploring the cloud of feature interaction scores in a Rashomon set"
(Li et al.). One model's importance ranking is one draw from the models the data supports
equally well; a ranking (or an interaction) that changes across them is not a property of the
problem. This check approximates the Rashomon set by refitting, as the paper does with its
re-trained seed/bootstrap ensembles, and reports ranges across it.

What it computes
----------------
Data: the explained rows ``ctx.data_X`` (encoded, in their own columns) and ``ctx.targets``,
capped at ``max_rows`` rows (a seeded sample). A fixed split, reproducible from the run seed
``s``: ``order = np.random.default_rng(s + 1).permutation(n)``; the validation rows are
``sort(order[:n_val])`` with ``n_val = max(1, round(validation_share * n))``, the training rows
``sort(order[n_val:])``. (With ``max_rows`` < n the rows are first
``sort(default_rng(s).choice(n, max_rows, replace=False))``.)

1. **Refits.** Fit ``i = 0 .. n_models - 1`` is trained on a bootstrap resample of the
   training rows (``default_rng([s, i]).integers(0, n_train, n_train)``) with seed ``s + i``:
   ``refit(X, y, seed)`` when given (``X`` is the model's own input, ``ctx.to_model_input``),
   else ``sklearn.base.clone(ctx.raw_model)`` with every ``*random_state`` parameter (of the
   estimator or any Pipeline step) set to the seed, then ``.fit(X, y)``. Both the resample and
   the seed vary, so the set covers data and optimisation randomness. A fit that raises is
   counted in ``fits_failed`` and left out.
2. **Loss** on the validation rows: classifiers with probability outputs: log loss
   (probabilities clipped to [1e-12, 1], columns in the order of ``ctx.classes``, a refit's own
   ``classes_`` realigned to it); classifiers with label outputs: 0-1 error; regressors: mean
   squared error.
3. **Rashomon set**: the fits with ``loss_i <= best + margin``. By default (``epsilon="auto"``)
   the margin is one standard error of the best fit's validation loss (the standard deviation
   of its per-row losses over sqrt(validation rows)): the fits the validation rows cannot tell
   apart from the best, the one-standard-error rule of model selection. (A fixed relative 5 %
   kept 2 of 20 bootstrap refits of a logistic regression validated on 90 rows: the losses'
   own noise was larger than 5 %.) A number ``epsilon`` makes the margin relative,
   ``best * epsilon``; ``epsilon_absolute`` makes it absolute. Fewer than 2 kept fits: skipped,
   with the reason.
4. **Importance** of feature ``j`` in a fit: model reliance (Fisher, Rudin & Dominici), the
   validation loss with column ``j`` permuted minus the unpermuted loss, averaged over
   ``n_repeats`` row permutations ``pi_r = default_rng(s + 2).permutation(n_val)`` (drawn in
   order r = 0, 1, ...), the same permutations for every fit and feature so that fits differ by
   the model only.
5. **Interaction** (FIS, as in the paper) of a pair ``(i, j)``: ``MR({i, j}) - MR(i) -
   MR(j)``, where ``MR({i, j})`` permutes both columns *jointly*, with the same permutation
   ``pi_r`` for both (the paper's group model reliance: the pair keeps its joint distribution
   and loses its link to the other features and the target). Pairs: every pair among the
   ``top_k`` features ranked by mean importance over the kept fits. FIS is in loss units and can
   be negative (for squared error, f = x1 + x2 + x1*x2 on independent standard normals has
   FIS = 6 - 4 - 4 = -2).
6. **Summaries** over the kept fits: per feature min / max / mean importance, rank (1 = most
   important; ties share the lowest rank) min and max, ``rank_spread = rank_max - rank_min``,
   ``p_top_k`` (share of kept fits ranking it within the top k); per pair min / max / mean
   FIS; ``swaps``: for each pair of features with at least one in the top k whose rank ranges
   overlap, the share of kept fits ordering them against the majority order (pairs with a share
   > 0, listed in majority order, more important first). Two features outside the top k are not
   compared (noise features trade places among themselves in every set).
7. For reference, the explained model's own validation loss and importances
   (``details["logged_model"]``); it is *not* part of the set (it may have been trained on the
   validation rows, so its loss is not comparable to the refits').

Cost: model rows = n_val x [(fitted + 1) x (1 + n_repeats x d) + (kept + 1) x n_repeats x
pairs] (the + 1: the explained model, for reference; classifiers add one probe row), plus the
training time of ``n_models`` fits (usually the larger part). Permuted copies are stacked into
a few large predict calls per fit (at most :data:`MAX_CELLS_PER_CALL` cells each).

Limits: the refits train on the rows the run explains (``explain``'s ``max_rows``, 1000 by
default), not on the model's own training set, so they are usually fitted on less data than the
explained model; pass more rows for a closer set. The set is an approximation (refits of one
model class on bootstrap resamples, not the paper's search over weight perturbations): it can
only show the spread that class's training randomness produces, and with a deterministic
model class on little data the bootstrap is the only source. Model reliance on permuted
columns evaluates the model off the data manifold when features are correlated (it credits a
feature for what its correlate carries); the spread across
fits is what is reported, not which attribution is right. Relative ``epsilon`` with a best loss
of 0 keeps only perfect fits (use ``epsilon_absolute``). Training time is not in the
planner's budget (it counts model evaluations): ``max_seconds`` (300) stops refitting after at
least two fits and records ``stopped_by_max_seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import (
    Check,
    CheckContext,
    CheckResult,
    ConfigError,
    InvalidInputError,
    feature_metric_names,
)

#: Log-loss clipping of probabilities (a probability of 0 for the true class is not infinite).
PROBABILITY_FLOOR = 1e-12
#: Cells (rows x columns) per stacked predict call: bounds the memory of the permuted copies.
MAX_CELLS_PER_CALL = 1 << 22
#: Features assumed by :meth:`Rashomon.estimated_model_rows` when the caller does not say.
ASSUMED_FEATURES = 10
#: Failed fits whose error message is kept in the details.
MAX_FAILURES_SHOWN = 5

LOSS_NAMES = ("log_loss", "zero_one", "squared_error")


# --------------------------------------------------------------------------------------------
# Core functions (arrays in, arrays out; the check below wires them to the run).
# --------------------------------------------------------------------------------------------

def split_rows(n_rows: int, validation_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(training, validation)`` row indices (sorted): the rule of the module docstring."""
    order = np.random.default_rng(seed + 1).permutation(n_rows)
    n_val = max(1, round(validation_share * n_rows))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def draw_permutations(n_rows: int, n_repeats: int, seed: int) -> np.ndarray:
    """``(n_repeats, n_rows)`` row permutations shared by every fit, feature and pair."""
    rng = np.random.default_rng(seed + 2)
    return np.stack([rng.permutation(n_rows) for _ in range(n_repeats)])


def make_loss(kind: str, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``outputs (c, n[, k]) -> (c,)`` losses of ``c`` stacked copies against ``y``.

    ``log_loss``: ``y`` holds class indices into the probability columns; ``zero_one``: ``y``
    holds labels comparable to the outputs; ``squared_error``: numbers (``(n,)`` or ``(n, k)``).
    """
    if kind == "log_loss":
        index = np.asarray(y, dtype=int)

        def log_loss(out: np.ndarray) -> np.ndarray:
            picked = np.take_along_axis(out, index[None, :, None], axis=2)[..., 0]
            return -np.log(np.clip(picked, PROBABILITY_FLOOR, 1.0)).mean(axis=1)

        return log_loss
    if kind == "zero_one":
        labels = np.asarray(y, dtype=float)
        return lambda out: (out != labels[None]).mean(axis=1)
    if kind == "squared_error":
        values = np.asarray(y, dtype=float)

        def squared(out: np.ndarray) -> np.ndarray:
            if out.ndim == values.ndim + 2 and out.shape[-1] != 1:
                raise InvalidInputError(
                    f"the model returns {out.shape[-1]} outputs per row and the targets one "
                    "number: a classifier's probabilities need model_type='classifier' and a "
                    "model whose classes are known (a scikit-learn classifier)")
            err = (out.reshape(out.shape[:2] + values.shape[1:]) - values[None]) ** 2
            return err.reshape(len(err), -1).mean(axis=1)

        return squared
    raise ValueError(f"unknown loss {kind!r}; one of {LOSS_NAMES}")


def model_reliance(predict: Callable[[np.ndarray], np.ndarray], X: np.ndarray,
                   loss: Callable[[np.ndarray], np.ndarray], permutations: np.ndarray,
                   groups: Sequence[Sequence[int]], *, with_base: bool = True
                   ) -> tuple[float, np.ndarray]:
    """The loss of ``predict`` on ``X`` and the model reliance of each group of columns.

    A group's columns are permuted jointly (one row permutation for all of them) by each row of
    ``permutations``; its reliance is the mean over permutations of the loss increase. The
    copies are stacked into as few ``predict`` calls as :data:`MAX_CELLS_PER_CALL` allows.
    ``with_base=False`` skips the unpermuted call when the caller knows that loss already: the
    returned base is then NaN and the "reliances" are the mean permuted losses (the caller
    subtracts its base).
    """
    n, d = X.shape
    groups = [list(g) for g in groups]
    # One stacked copy of X per (repeat r, group g).
    jobs: list[tuple[int, int]] = [(r, g) for r in range(len(permutations))
                                   for g in range(len(groups))]
    per_call = max(1, MAX_CELLS_PER_CALL // max(1, n * d))
    losses: list[np.ndarray] = []
    base = float("nan")
    if with_base:
        base = float(loss(np.asarray(predict(X))[None])[0])
    for start in range(0, len(jobs), per_call):
        batch = jobs[start:start + per_call]
        stacked = np.repeat(X[None], len(batch), axis=0)
        for c, (r, g) in enumerate(batch):
            cols = groups[g]
            stacked[c][:, cols] = X[np.ix_(permutations[r], cols)]
        out = np.asarray(predict(stacked.reshape(len(batch) * n, d)))
        losses.append(loss(out.reshape(len(batch), n, *out.shape[1:])))
    permuted = (np.concatenate(losses) if losses else np.zeros(0)).reshape(
        len(permutations), len(groups))
    return base, permuted.mean(axis=0) - (base if with_base else 0.0)


def make_row_loss(kind: str, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``outputs (n[, k]) -> (n,)``: each validation row's term of the loss :func:`make_loss`
    averages (for the standard error of a fit's loss)."""
    if kind == "log_loss":
        index = np.asarray(y, dtype=int)
        rows = np.arange(len(index))
        return lambda out: -np.log(np.clip(np.asarray(out)[rows, index], PROBABILITY_FLOOR,
                                           1.0))
    if kind == "zero_one":
        labels = np.asarray(y, dtype=float)
        return lambda out: (np.asarray(out) != labels).astype(float)
    if kind == "squared_error":
        values = np.asarray(y, dtype=float)

        def squared(out: np.ndarray) -> np.ndarray:
            err = (np.asarray(out, dtype=float) - values) ** 2
            return err.reshape(len(err), -1).mean(axis=1)

        return squared
    raise ValueError(f"unknown loss {kind!r}; one of {LOSS_NAMES}")


def loss_standard_error(row_losses: np.ndarray) -> float:
    """The standard error of a mean loss from its per-row terms."""
    row_losses = np.asarray(row_losses, dtype=float)
    if len(row_losses) < 2:
        return 0.0
    return float(np.std(row_losses, ddof=1) / np.sqrt(len(row_losses)))


def kept_mask(losses: np.ndarray, epsilon: float | None, epsilon_absolute: float | None
              ) -> tuple[np.ndarray, float]:
    """``(kept, best)``: the fits within the margin of the best (finite) loss: ``best *
    epsilon`` (relative) or ``epsilon_absolute`` (absolute; it wins when both are given)."""
    losses = np.asarray(losses, dtype=float)
    best = float(np.nanmin(losses))
    bound = best + epsilon_absolute if epsilon_absolute is not None else best * (1 + epsilon)
    # A float rounding of the same loss must not drop the best fit's twins.
    return np.isfinite(losses) & (losses <= bound + 1e-12 * max(1.0, abs(bound))), best


def ranks(importance: np.ndarray) -> np.ndarray:
    """``(m, d)`` importances -> ranks per row, 1 = most important, ties share the lowest."""
    from scipy.stats import rankdata

    return rankdata(-np.asarray(importance, dtype=float), method="min", axis=1).astype(int)


def summarize(importance: np.ndarray, names: list[str], top_k: int,
              interactions: np.ndarray | None = None,
              pairs: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    """Ranges over kept fits: ``importance`` is ``(m, d)``, ``interactions`` ``(m, P)`` for the
    column ``pairs``. Returns ``features``, ``pairs``, ``swaps``, ``top``, ``max_rank_spread``."""
    m, d = importance.shape
    k = max(1, min(int(top_k), d))
    rank = ranks(importance)
    mean = importance.mean(axis=0)
    top = [int(j) for j in np.argsort(-mean, kind="stable")[:k]]
    rank_min, rank_max = rank.min(axis=0), rank.max(axis=0)
    features = {names[j]: {"min": float(importance[:, j].min()),
                           "max": float(importance[:, j].max()),
                           "mean": float(mean[j]), "rank_min": int(rank_min[j]),
                           "rank_max": int(rank_max[j]),
                           "rank_spread": int(rank_max[j] - rank_min[j]),
                           "p_top_k": float((rank[:, j] <= k).mean())} for j in range(d)}
    swaps = []
    in_top = np.zeros(d, bool)
    in_top[top] = True
    for a, b in combinations(range(d), 2):
        if not (in_top[a] or in_top[b]):
            continue
        if rank_max[a] < rank_min[b] or rank_max[b] < rank_min[a]:
            continue  # rank ranges apart: the order never changes
        above = int((importance[:, a] > importance[:, b]).sum())
        below = int((importance[:, a] < importance[:, b]).sum())
        if min(above, below) == 0:
            continue
        first, second = (a, b) if (above, mean[a]) >= (below, mean[b]) else (b, a)
        swaps.append({"features": [names[first], names[second]],
                      "share": min(above, below) / m})
    swaps.sort(key=lambda s: -s["share"])
    pair_rows = []
    for p, (a, b) in enumerate(pairs or []):
        values = interactions[:, p]
        pair_rows.append({"features": [names[a], names[b]], "min": float(values.min()),
                          "max": float(values.max()), "mean": float(values.mean()),
                          "values": [float(v) for v in values]})
    return {"features": features, "pairs": pair_rows, "swaps": swaps, "top": top,
            "max_rank_spread": int(max(rank_max[j] - rank_min[j] for j in top))}


# --------------------------------------------------------------------------------------------
# Refitting
# --------------------------------------------------------------------------------------------

def sklearn_refit(estimator: Any) -> Callable[[Any, Any, int], Any] | None:
    """``refit(X, y, seed)`` by ``sklearn.base.clone`` with every ``*random_state`` set to the
    seed; None when ``estimator`` is not a scikit-learn-style estimator (no ``get_params`` and
    ``fit``, or ``clone`` refuses it)."""
    if estimator is None or not (hasattr(estimator, "get_params") and hasattr(estimator, "fit")):
        return None
    try:
        from sklearn.base import clone

        clone(estimator)
    except Exception:  # noqa: BLE001 - whatever clone refuses is "not an estimator" here
        return None

    def refit(X: Any, y: Any, seed: int) -> Any:
        from sklearn.base import clone

        model = clone(estimator)
        seeded = {k: int(seed) for k in model.get_params(deep=True)
                  if k == "random_state" or k.endswith("__random_state")}
        if seeded:
            model.set_params(**seeded)
        return model.fit(X, y)

    return refit


def _align_columns(out: np.ndarray, model: Any, classes: list[Any] | None) -> np.ndarray:
    """A refit classifier's probability columns in the order of the explained model's classes
    (a bootstrap resample can miss a class; its column is then 0)."""
    own = getattr(model, "classes_", None)
    if out.ndim != 2 or classes is None or own is None:
        return out
    own = list(own)
    if own == list(classes):
        return out
    aligned = np.zeros((len(out), len(classes)))
    where = {_key(c): i for i, c in enumerate(classes)}
    for j, c in enumerate(own):
        if _key(c) in where and j < out.shape[1]:
            aligned[:, where[_key(c)]] = out[:, j]
    return aligned


def _key(label: Any) -> Any:
    """A label as a dictionary key that matches across NumPy and Python scalar types."""
    return label.item() if isinstance(label, np.generic) else label


def class_indices(targets: np.ndarray, classes: list[Any] | None) -> np.ndarray:
    """Targets -> column indices into ``classes`` (labels compared as given, then as str)."""
    if classes is None:
        classes = sorted(np.unique(targets).tolist())
    exact = {_key(c): i for i, c in enumerate(classes)}
    text = {str(c): i for i, c in enumerate(classes)}
    out = np.empty(len(targets), dtype=int)
    for r, t in enumerate(np.asarray(targets).tolist()):
        i = exact.get(t, text.get(str(t)))
        if i is None:
            raise InvalidInputError(
                f"rashomon: target {t!r} is not one of the model's classes {list(classes)}; "
                "pass the labels the model was trained on as targets=.")
        out[r] = i
    return out


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------

class Rashomon(Check):
    name: ClassVar[str] = "rashomon"
    description: ClassVar[str] = (
        "Refits the model n_models times (bootstrap resamples x seeds), keeps the fits within "
        "epsilon of the best validation loss, and reports each feature's model-reliance range, "
        "rank range and probability of being in the top k, and the interaction (FIS) range of "
        "each top pair across them (Li et al., Rashomon feature-interaction cloud).")
    default: ClassVar[bool] = False
    severity: ClassVar[str] = "error"
    cost: ClassVar[str] = ("n_models refits (training time) + about n_models x (1 + n_repeats x "
                           "(features + top pairs)) x validation rows model rows")
    defaults: ClassVar[dict[str, Any]] = {
        "n_models": 20, "epsilon": "auto", "epsilon_absolute": None, "validation_share": 0.3,
        "top_k": None, "n_repeats": 2, "refit": None, "max_rank_spread": None,
        "max_rows": None, "max_seconds": 300.0}
    param_types: ClassVar[dict[str, str]] = {
        "n_models": "int in [2, 1000]", "epsilon": "'auto' | float >= 0",
        "epsilon_absolute": "float >= 0 | None", "validation_share": "float in (0, 1)",
        "top_k": "int > 0 | None", "n_repeats": "int in [1, 100]", "refit": "any",
        "max_rank_spread": "int >= 0 | None", "max_rows": "int > 0 | None",
        "max_seconds": "float > 0 | None"}

    def _params(self) -> dict[str, Any]:
        params = self.validate_params()
        if params["refit"] is not None and not callable(params["refit"]):
            raise ConfigError(
                f"rashomon: parameter refit must be a callable refit(X, y, seed) -> fitted "
                f"model, got {params['refit']!r}.")
        return params

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_methods: int,
                             n_features: int | None = None) -> float | None:
        # The planner does not pass the feature count to checks: assume ASSUMED_FEATURES.
        d = n_features or ASSUMED_FEATURES
        rows = min(n_rows, params["max_rows"] or n_rows)
        n_val = max(1, round(params["validation_share"] * rows))
        k = min(params["top_k"] or 5, d)
        pairs = k * (k - 1) // 2
        repeats, models = params["n_repeats"], params["n_models"]
        return float(n_val * ((models + 1) * (1 + repeats * d) + (models + 1) * repeats * pairs))

    def supports(self, ctx: CheckContext) -> str | None:
        params = self._params()
        if ctx.data_X is None or ctx.predict_full_with is None:
            return "rashomon needs the encoded data and a model to refit (none in this run)"
        if ctx.targets is None:
            return ("rashomon refits the model and needs the targets: pass targets= (the labels "
                    "or values the model was trained on) to explain()")
        if params["refit"] is None and sklearn_refit(ctx.raw_model) is None:
            return (f"rashomon cannot refit a {type(ctx.raw_model).__name__} (not a scikit-learn "
                    "estimator): pass refit= in the check's params, a callable refit(X, y, seed) "
                    "-> fitted model, e.g. checks={'rashomon': {'refit': my_refit}}")
        return None

    def run(self, ctx: CheckContext) -> CheckResult:
        params = self._params()
        seed = int(ctx.seed)
        X_all = np.asarray(ctx.data_X, dtype=float)
        y_all = np.asarray(ctx.targets)
        names = [str(n) for n in ctx.data_feature_names]
        n, d = X_all.shape
        if params["max_rows"] is not None and params["max_rows"] < n:
            rows = np.sort(np.random.default_rng(seed).choice(n, params["max_rows"],
                                                              replace=False))
            X_all, y_all, n = X_all[rows], y_all[rows], len(rows)
        train, val = split_rows(n, params["validation_share"], seed)
        if len(train) < 2 or len(val) < 2:
            return CheckResult(status="skipped", reason=(
                f"rashomon: {n} rows give {len(train)} training and {len(val)} validation rows; "
                "pass more rows (or change validation_share) to refit and validate"))
        X_val = X_all[val]

        loss_kind, y_loss = self._loss_kind(ctx, y_all[val])
        loss = make_loss(loss_kind, y_loss)
        permutations = draw_permutations(len(val), params["n_repeats"], seed)
        refit = params["refit"] or sklearn_refit(ctx.raw_model)
        classes = ctx.classes

        def predictor(model: Any) -> Callable[[np.ndarray], np.ndarray]:
            full = ctx.predict_full_with(model)
            return lambda Z: _align_columns(np.asarray(full(Z)), model, classes)

        # Pass 1: every fit's loss and single-feature reliance.
        singles = [[j] for j in range(d)]
        models: list[Any] = []
        losses, importances, seeds, failures = [], [], [], []
        started = time.perf_counter()
        stopped_at = None
        for i in range(params["n_models"]):
            # Refitting is training, which the planner's budget (model evaluations) does not
            # see: max_seconds bounds it; the fits done so far are the set.
            if params["max_seconds"] is not None and i >= 2 and \
                    time.perf_counter() - started > params["max_seconds"]:
                stopped_at = i
                break
            boot = train[np.random.default_rng([seed, i]).integers(0, len(train), len(train))]
            try:
                model = refit(ctx.to_model_input(X_all[boot]), y_all[boot], seed + i)
                predict = predictor(model)
                base, mr = model_reliance(predict, X_val, loss, permutations, singles)
                if not (np.isfinite(base) and np.all(np.isfinite(mr))):
                    raise ValueError("the refit's loss or reliance is not finite")
            # A user refit may raise anything: a failed fit is data about the set, not a crash.
            except Exception as exc:  # noqa: BLE001
                failures.append({"fit": i, "seed": seed + i,
                                 "error": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            models.append(predict)
            losses.append(base)
            importances.append(mr)
            seeds.append(seed + i)
        if len(models) < 2:
            first = f"; first error: {failures[0]['error']}" if failures else ""
            return CheckResult(status="skipped", reason=(
                f"rashomon: only {len(models)} of {params['n_models']} refits succeeded"
                f"{first}. Fix that, or pass refit= with a callable that fits this model"))
        losses_arr = np.asarray(losses)
        margin_rule, margin = self._margin(params, losses_arr, models, X_val, loss_kind, y_loss)
        kept, best = kept_mask(losses_arr, None, margin)
        if kept.sum() < 2:
            return CheckResult(status="skipped", reason=(
                f"rashomon: only {int(kept.sum())} of {len(models)} refits are within epsilon "
                f"({margin_rule}: {margin:.3g}) of the best validation loss {best:.6g}; pass a "
                "larger epsilon (relative) or epsilon_absolute, or more n_models"))
        kept_index = np.flatnonzero(kept)
        importance = np.asarray(importances)[kept_index]

        # Pass 2: joint reliance of the pairs among the top k (by mean over the kept fits).
        k = min(params["top_k"] or min(5, d), d)
        top = [int(j) for j in np.argsort(-importance.mean(axis=0), kind="stable")[:k]]
        pairs = [tuple(sorted(p)) for p in combinations(top, 2)]
        interactions = np.zeros((len(kept_index), len(pairs)))
        if pairs:
            for row, i in enumerate(kept_index):
                _, joint = model_reliance(models[i], X_val, loss, permutations,
                                          [list(p) for p in pairs], with_base=False)
                joint = joint - losses_arr[i]
                interactions[row] = [joint[p] - importances[i][a] - importances[i][b]
                                     for p, (a, b) in enumerate(pairs)]
        summary = summarize(importance, names, k, interactions, pairs)

        # The explained model, for reference only (not part of the set).
        logged_base, logged_mr = model_reliance(ctx.predict_full, X_val, loss, permutations,
                                                singles)
        logged_pairs = []
        if pairs:
            _, joint = model_reliance(ctx.predict_full, X_val, loss, permutations,
                                      [list(p) for p in pairs], with_base=False)
            logged_pairs = [{"features": [names[a], names[b]],
                             "value": float(joint[p] - logged_base - logged_mr[a]
                                            - logged_mr[b])} for p, (a, b) in enumerate(pairs)]

        details = {
            "models_fitted": len(models), "models_kept": int(kept.sum()),
            # who built the set: a user refit decides what the set is (a policy may refuse it)
            "refit": "user" if params["refit"] is not None else "clone",
            "fits_failed": len(failures),
            # The margin as a share of the best loss, whichever rule set it.
            "epsilon": float(margin / best) if best > 0 else float("inf") if margin else 0.0,
            "epsilon_absolute": (None if params["epsilon_absolute"] is None
                                 else float(params["epsilon_absolute"])),
            "epsilon_rule": margin_rule, "loss_margin": float(margin),
            "stopped_by_max_seconds": stopped_at,
            "best_loss": best, "loss": loss_kind,
            "importance": "model reliance (loss increase, permutation)", "top_k": k,
            "validation_rows": len(val), "training_rows": len(train),
            "features": summary["features"], "pairs": summary["pairs"],
            "swaps": summary["swaps"],
            "kept_losses": [float(x) for x in losses_arr[kept_index]],
            "logged_model": {"loss": logged_base,
                             "importance": {names[j]: float(logged_mr[j]) for j in range(d)},
                             "interaction": logged_pairs},
            # Beyond the gate's schema: every fit, for auditing the epsilon filter.
            "losses": [float(x) for x in losses_arr], "fit_seeds": seeds,
            "kept_seeds": [seeds[i] for i in kept_index],
            "importance_per_fit": {names[j]: [float(v) for v in importance[:, j]]
                                   for j in range(d)},
            "interaction_definition": "MR({i, j} jointly permuted) - MR(i) - MR(j)",
            "n_repeats": int(params["n_repeats"]), "failures": failures[:MAX_FAILURES_SHOWN],
        }
        seg = feature_metric_names(names)
        figures: dict[str, float] = {
            "models_fitted": float(len(models)), "models_kept": float(kept.sum()),
            "best_loss": best, "max_rank_spread": float(summary["max_rank_spread"])}
        for name, f in summary["features"].items():
            figures[f"{seg[name]}/rank_spread"] = float(f["rank_spread"])
            figures[f"{seg[name]}/p_top_k"] = f["p_top_k"]
            figures[f"{seg[name]}/importance_min"] = f["min"]
            figures[f"{seg[name]}/importance_max"] = f["max"]
        result = CheckResult(figures=figures, details=details)
        if params["max_rank_spread"] is not None:
            result.thresholds["max_rank_spread"] = {"max": float(params["max_rank_spread"])}
        return result

    @staticmethod
    def _margin(params: dict[str, Any], losses: np.ndarray,
                predictors: list[Callable[[np.ndarray], np.ndarray]], X_val: np.ndarray,
                loss_kind: str, y_loss: np.ndarray) -> tuple[str, float]:
        """``(rule in words, absolute loss margin)`` of the Rashomon set."""
        if params["epsilon_absolute"] is not None:
            return "epsilon_absolute", float(
                params["epsilon_absolute"])
        best = float(np.nanmin(losses))
        if params["epsilon"] != "auto":
            return f"{params['epsilon']:g} x the best loss", best * float(
                params["epsilon"])
        # One standard error of the best fit's loss: one more predict of the validation rows.
        rows = make_row_loss(loss_kind, y_loss)(predictors[int(np.nanargmin(losses))](X_val))
        se = loss_standard_error(rows)
        return "auto: one standard error of the best fit's loss", se

    @staticmethod
    def _loss_kind(ctx: CheckContext, y_val: np.ndarray) -> tuple[str, np.ndarray]:
        """The loss and the targets in its terms, from the explained model's outputs."""
        if not ctx.is_classifier:
            return "squared_error", np.asarray(y_val, dtype=float)
        # One probe row tells whether the classifier gives probabilities (2-D) or labels.
        probe = np.asarray(ctx.predict_full(np.asarray(ctx.data_X[:1], dtype=float)))
        if probe.ndim == 2:
            return "log_loss", class_indices(y_val, ctx.classes)
        try:
            return "zero_one", np.asarray(y_val, dtype=float)
        except (TypeError, ValueError):
            raise InvalidInputError(
                "rashomon: the classifier returns labels, not probabilities, and the targets "
                "are not numbers comparable to them; log a classifier with predict_proba or "
                "pass numeric labels as targets=.") from None
