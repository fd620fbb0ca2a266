"""Importance tests with error control: does the model's output depend on feature j?

For each tested feature j, with Y = the model's full output vector (``predict_full``: class
probabilities for a classifier) of a data row, two null hypotheses (METHODS.md #32, Teneggi et
al., "I Bet You Did Not Mean That: Testing Semantic Importance via Betting"; SKIT, Podkopaev et
al. 2023, and its conditional version c-SKIT):

* ``marginal``, H0: Y independent of X_j. The output carries no information about X_j, not
  even through a correlated proxy. Rejected when the outputs' distribution differs with X_j,
  directly or through a proxy; a model can use X_j and still pass (an effect that reverses
  sign with another feature leaves the outputs' distribution unchanged): the flip test asks
  "does the decision change with X_j" directly.
* ``conditional``, H0: Y independent of X_j given X_-j. The model does not use X_j beyond
  what the other features carry ("does the model use sex?"). It can say nothing about a
  feature the others determine (``independent_share`` near 0: sex and a title column): the
  governance rules count ``effective_rows`` = rows tested x that share. A feature that only
  correlates with an influential one is not rejected.

Method (``_betting.py`` has the statistics): by default a sequential kernelized test by
betting. Each step consumes fresh rows (marginal: two rows a, b, real points (y_a, x_a),
(y_b, x_b) against the swapped (y_a, x_b), (y_b, x_a); conditional: one row, real point
(y, x_j, x_-j) against (y, x~_j, x_-j) with x~_j drawn from a conditional sampler, both mapped
to partial residuals (y - g(x_-j), x_j - m(x_-j)): g a ridge regression of the outputs on the
other features fitted on the warm-up rows, m the sampler's conditional mean (a categorical x_j
is compared as it is). Equal in distribution under H0, so are their images; on six features
with a moderate effect the residual pairs found it in 60 of 60 runs, the raw triples in 12).
The payoff
is the MMD witness of the past steps (Gaussian RBF product kernel on standardised coordinates,
delta kernel for a categorical X_j, median-heuristic bandwidths from the first ``warmup``
steps, which are not bet on; the conditional test warms up on at least 2 rows per other
feature, for g), normalised into [-1, 1] by its RKHS norm and rescaled by the
largest such value of the past steps (clipped); the bet, in [0, 1/2], is chosen by online
Newton step. The wealth K_t is a non-negative supermartingale under H0, so by Ville's inequality
P(sup_t K_t >= 1/alpha) <= alpha: a feature is rejected (and its stream stops) when
K_t >= 1/alpha. ``p_value`` = min(1, 1/max_t K_t) (anytime valid), ``e_value`` = K at the
stopping time. With fewer than ``min_betting_rows`` rows (``method="auto"``) it is a
permutation test of HSIC(Y, X_j) instead (marginal: X_j permuted; conditional: a conditional
randomisation test with sampler draws, on the same partial residuals, g fitted on all the rows:
it depends on (y, x_-j) only, the same for the real and every drawn x_j), p = (1 + #{T_b >= T})
/ (B + 1). Never both on one
feature, so each test keeps level alpha. Each feature and test is controlled at alpha on its
own: there is no correction for testing many features (a policy that requires several
features at once can divide alpha).

Conditional sampler (``sampler``), fitted on every complete explained row (repeated rows
included: they are how discrete data shows its law; fitted on distinct rows only, an unused
z = x1 in 95 % of rows was rejected in 20 of 20 runs) and the background rows that are not
among them: ``regression`` (default): ridge least squares of X_j on the others (categorical ones
one-hot) plus a residual resampled from the fit's residuals; ``gaussian``: the conditional
normal of a joint normal fit. Categorical columns and columns with at most 10 distinct values
(e.g. 0/1) get a multinomial logistic regression under either, drawing among the observed
values. The conditional test's error control is only as good as the sampler (the model-X
assumption): when the true law of X_j given X_-j is not the fitted one (nonlinear,
heteroscedastic), null draws differ from real rows and a feature the model does not use can be
rejected. So each conditional test also checks its sampler (:func:`sampler_check`, recorded
as ``sampler_check`` and ``reliable``): real (x_j - m, x_k) against sampled (x~_j - m, x_k)
points for each other column k, by the same betting game at 0.01 in all (Bonferroni); a linear
sampler of z = x1^2 + noise flagged in 20 of 20 data sets of 600 rows, with or without eight
more columns, a correct one in 0 of 300; when it rejects, the governance rules do not trust
the conditional test. The sampler is fitted on the same rows it is tested on, which errs on the
conservative side (in-sample, the real residuals are orthogonal to the regressors, the drawn
ones are not). Measured at alpha = 0.05, 200 runs of sigmoid(x1 + x2) with an ignored z
(tests/test_importance_test.py): betting rejects z in 0/200 runs (marginal and conditional,
n = 360; 2/200 with the Gaussian sampler), the permutation test in 8/200 (marginal) and the
conditional randomisation test in 7/200 (n = 100); power on sigmoid(3 x1 + x2): 60/60 (mean
rows used 86 marginal, 52 conditional, of 400); a proxy x3 = x1 + noise (corr 0.9) of a used
x1: conditional 0/100, marginal 100/100.

Cost: model rows = the explained rows the streams consume, predicted lazily in batches of 64
rows (in a seeded random order) and shared by every feature and both tests: at most
``min(rows, max_rows)``, much fewer when every feature is rejected early; the permutation
test predicts all of them. Kernel work is O(steps^2) per feature and test.

Limits: rows with a missing value in X_j are dropped for that feature (the conditional test
also drops rows missing any other feature, which its sampler needs); the tests are of the rows
given (a population statement about them, not about single predictions); a model whose
output depends on X_j only on a tiny share of rows needs many rows to be detected; the
sequential test is conservative (Ville's bound): its rejection rate under H0 is far below
alpha, and a fixed-n test would find weak effects on fewer rows.
"""

from __future__ import annotations

import difflib
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import (
    Check,
    CheckContext,
    CheckResult,
    ConfigError,
    XaiError,
    feature_metric_names,
)

from ._betting import (
    KINDS,
    BettingStream,
    ConditionalSampler,
    IndependenceOutcome,
    ResidualStream,
    conditional_warmup,
    fit_conditional_sampler,
    permutation_test,
    residualize,
)

#: Rows predicted per model call (and per feeding of a stream).
PREDICT_BATCH = 64
#: The level of the sampler check: a false alarm makes the conditional test unusable for a
#: policy (it fails closed), so it is stricter than the tests' usual 0.05.
SAMPLER_CHECK_ALPHA = 0.01
#: Fewer complete rows than this and the conditional sampler is not fitted.
MIN_SAMPLER_ROWS = 10


class ImportanceTest(Check):
    name: ClassVar[str] = "importance_test"
    description: ClassVar[str] = (
        "Per feature, an error-controlled test of whether the model's output depends on it: "
        "marginal (Y independent of X_j) and conditional (Y independent of X_j given the other "
        "features) tests by betting (SKIT, anytime valid, stops early; reject when the wealth "
        "reaches 1/alpha), with a permutation / conditional randomisation test on few rows.")
    default: ClassVar[bool] = False
    severity: ClassVar[str] = "error"
    cost: ClassVar[str] = ("at most min(rows, max_rows) model rows, shared by every feature; "
                           "fewer when every feature is rejected early")
    defaults: ClassVar[dict[str, Any]] = {
        "features": None, "tests": ["marginal", "conditional"], "alpha": 0.05,
        "method": "auto", "min_betting_rows": 200, "n_permutations": 199,
        "sampler": "auto", "warmup": 20, "max_rows": None}
    param_types: ClassVar[dict[str, str]] = {
        "features": "list[str] | None", "tests": "list[str]", "alpha": "float in (0, 1)",
        "method": "'auto' | 'betting' | 'permutation'", "min_betting_rows": "int >= 10",
        "n_permutations": "int in [19, 9999]", "sampler": "'auto' | 'gaussian' | 'regression'",
        "warmup": "int in [2, 1000]", "max_rows": "int > 0 | None"}

    def supports(self, ctx: CheckContext) -> str | None:
        if ctx.data_type != "tabular":
            return f"importance_test tests tabular features, not {ctx.data_type} data"
        if ctx.predict_full is None or ctx.data_X is None or ctx.data_feature_names is None:
            return ("importance_test queries the model on the data's own columns: run it "
                    "through explain() with a model")
        return None

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_methods: int,
                             n_features: int | None = None) -> float | None:
        # An upper bound: every stream stops at the rows available; early stops only save.
        cap = params.get("max_rows")
        return float(n_rows if cap is None else min(n_rows, int(cap)))

    def run(self, ctx: CheckContext) -> CheckResult:
        params = self.validate_params()
        names = [str(c) for c in ctx.data_feature_names]
        features = _features(params["features"], names)
        tests = _tests(params["tests"])
        X = np.asarray(ctx.data_X, dtype=float)
        order = np.random.default_rng(ctx.seed).permutation(len(X))
        if params["max_rows"] is not None:
            order = order[:params["max_rows"]]
        rows_available = len(order)
        if rows_available < 4:
            return CheckResult(status="skipped", reason=(
                f"importance_test needs at least 4 rows, got {rows_available}: pass more rows"))
        method = params["method"]
        if method == "auto":
            method = "betting" if rows_available >= params["min_betting_rows"] else "permutation"
        sampler_kind = "regression" if params["sampler"] == "auto" else params["sampler"]
        categorical = set(ctx.categories)
        predictions = _LazyPredictions(ctx.predict_full, X, order)
        samplers: dict[int, ConditionalSampler] = {}
        if "conditional" in tests:
            fit_rows = _complete_rows(X, ctx.data_background)
            if len(fit_rows) < MIN_SAMPLER_ROWS:
                return CheckResult(status="skipped", reason=(
                    f"the conditional test's sampler needs at least {MIN_SAMPLER_ROWS} rows "
                    f"without missing values, got {len(fit_rows)}: pass more complete rows or "
                    "tests=['marginal']"))
            for j in (names.index(f) for f in features):
                samplers[j] = fit_conditional_sampler(fit_rows, j, categorical=categorical,
                                                      kind=sampler_kind)
        segments = feature_metric_names(names)
        ordered = X[order]
        complete = ~np.isnan(ordered).any(axis=1)
        result = CheckResult()
        details: dict[str, Any] = {
            "alpha": params["alpha"], "method": method, "sampler": sampler_kind,
            "rows_available": rows_available, "tests": tests, "features": {}}
        rejected_count = {t: 0 for t in tests}
        for feature in features:
            j = names.index(feature)
            missing = np.isnan(ordered[:, j])
            # A feature with one value in the rows shows nothing about dependence on it.
            entry: dict[str, Any] = {"rows_missing": int(missing.sum()),
                                     "distinct_values": len(np.unique(ordered[~missing, j]))}
            for t_index, test in enumerate(tests):
                usable = np.flatnonzero(~missing if test == "marginal" else complete)
                rng = np.random.default_rng([abs(int(ctx.seed)), j, t_index])
                outcome = _run_test(test, method, usable, predictions, ordered, j,
                                    samplers.get(j), categorical, params, rng)
                record = outcome.as_details()
                record["rows_dropped_missing"] = int(rows_available - len(usable))
                record.update(_evidence(outcome))
                if test == "conditional":
                    record["sampler"] = samplers[j].kind
                    check = sampler_check(ordered[usable], j, samplers[j],
                                          j in categorical, np.random.default_rng(
                                              [abs(int(ctx.seed)), j, 99]))
                    record["sampler_check"] = check
                    # A sampler that does not match the data voids the test's error control.
                    record["reliable"] = not check["rejected"]
                    share = independent_share(ordered[usable], j, samplers[j], j in categorical,
                                              np.random.default_rng([abs(int(ctx.seed)), j, 98]))
                    record["independent_share"] = share
                    record["effective_rows"] = int(round(record["rows_tested"] * share))
                entry[test] = record
                segment = segments[feature]
                result.figures[f"{segment}/{test}/p_value"] = float(outcome.p_value)
                result.figures[f"{segment}/{test}/rejected"] = 1.0 if outcome.rejected else 0.0
                rejected_count[test] += int(outcome.rejected)
            details["features"][feature] = entry
        for test in tests:
            result.figures[f"{test}/rejected_features"] = float(rejected_count[test])
        details["model_rows_predicted"] = predictions.rows_predicted
        result.details = details
        return result


def _evidence(outcome: IndependenceOutcome) -> dict[str, Any]:
    """How much the outcome can show: ``rows_tested`` (rows that entered the decision: those
    bet on, not the warm-up; every row of a permutation test) and ``min_p_value`` (the
    smallest p-value the test could give: 1 / (B + 1) for B permutations, 0 for betting)."""
    if outcome.method == "permutation":
        return {"rows_tested": int(outcome.rows_used),
                "min_p_value": 1.0 / (int(outcome.steps) + 1)}
    per_step = 2 if outcome.info.get("kind") == "marginal" else 1
    return {"rows_tested": int(outcome.info.get("bet_steps", 0)) * per_step,
            "min_p_value": 0.0}


def sampler_check(rows: np.ndarray, j: int, sampler: ConditionalSampler, categorical: bool,
                  rng: np.random.Generator) -> dict[str, Any]:
    """Does the sampler's law of X_j given the others match the data? The same betting game
    on real (x_j - m, x_k) against sampled (x~_j - m, x_k) points (m the sampler's conditional
    mean; a categorical x_j as it is), one game per other column k at
    :data:`SAMPLER_CHECK_ALPHA` / (columns) (Bonferroni), no model calls. One kernel over
    every column washed a misfit along one column out once there were ten of them (a review
    measured it: 0 of 4 flagged); pairs keep it visible. Rejected: the sampler is misspecified
    (e.g. linear where the dependence is not) and the conditional test may reject a feature
    the model does not use. ``p_value`` is the Bonferroni-adjusted smallest p."""
    rest = np.delete(rows, j, axis=1)
    draws = sampler.sample(rest, rng)
    x = rows[:, j]
    if not categorical:
        m = sampler.mean(rest)
        x, draws = x - m, draws - m
    columns = max(1, rest.shape[1])
    worst = (1.0, None)
    rows_used = 0
    for k in range(rest.shape[1]) or [None]:
        stream = BettingStream("conditional", alpha=SAMPLER_CHECK_ALPHA / columns, warmup=20,
                               categorical=categorical)
        pair = rest[:, [k]] if k is not None else np.zeros((len(rows), 0))
        stream.feed(np.zeros((len(rows), 1)), x, draws, pair)
        out = stream.outcome(len(rows))
        rows_used = max(rows_used, out.rows_used)
        if out.p_value < worst[0]:
            worst = (out.p_value, k)
    p = min(1.0, worst[0] * columns)
    return {"p_value": float(p), "rejected": bool(p <= SAMPLER_CHECK_ALPHA),
            "rows_used": int(rows_used), "columns_checked": int(rest.shape[1]),
            "worst_column": None if worst[1] is None else int(worst[1] + (worst[1] >= j))}


def independent_share(rows: np.ndarray, j: int, sampler: ConditionalSampler, categorical: bool,
                      rng: np.random.Generator) -> float:
    """How much of X_j the other features leave free, 0 to 1: E[(x~ - x)^2] / (2 Var x) for a
    number (1 - R^2 of x_j on the others), the rate at which a draw differs from the row's value
    over the rate for two independent draws for a category. Near 0 (sex nearly determined by
    a title column) the conditional test can show nothing about X_j, however many rows."""
    rest = np.delete(rows, j, axis=1)
    x = rows[:, j]
    draws = sampler.sample(rest, rng, size=8)
    if categorical:
        _, counts = np.unique(x, return_counts=True)
        baseline = 1.0 - float(np.sum((counts / counts.sum()) ** 2))
        share = float(np.mean(draws != x[None, :])) / baseline if baseline > 0 else 0.0
    else:
        var = float(np.var(x))
        share = float(np.mean((draws - x[None, :]) ** 2)) / (2 * var) if var > 0 else 0.0
    return float(min(1.0, max(0.0, share)))


def _features(requested: list[str] | None, names: list[str]) -> list[str]:
    if requested is None:
        return list(names)
    if not requested:
        raise ConfigError("importance_test: features is empty: name at least one column, or "
                          "pass None to test every column.")
    unknown = [f for f in requested if f not in names]
    if unknown:
        hints = [f"'{f}' (did you mean '{m[0]}'?)" for f in unknown
                 if (m := difflib.get_close_matches(f, names, n=1))]
        raise ConfigError(
            f"importance_test: unknown feature(s) {unknown} in features."
            f"{' ' + '; '.join(hints) + '.' if hints else ''} The columns are: {names}.")
    return list(dict.fromkeys(requested))


def _tests(requested: list[str]) -> list[str]:
    bad = [t for t in requested if t not in KINDS]
    if bad or not requested:
        raise ConfigError(f"importance_test: tests must be a non-empty list of {list(KINDS)}, "
                          f"got {requested!r}.")
    return list(dict.fromkeys(requested))


def _complete_rows(X: np.ndarray, background: np.ndarray | None) -> np.ndarray:
    """The rows of ``X`` without missing values, every one (repeated rows are how discrete
    data shows its law: dropping them fits the wrong conditional), plus the background rows
    that are not rows of ``X`` (the default background is a sample of the data)."""
    rows = X
    if background is not None and len(background):
        background = np.asarray(background, dtype=float)
        seen = {r.tobytes() for r in np.ascontiguousarray(X)}
        extra = [r for r in np.ascontiguousarray(background) if r.tobytes() not in seen]
        if extra:
            rows = np.vstack([X, np.array(extra)])
    return rows[~np.isnan(rows).any(axis=1)]


class _LazyPredictions:
    """Model outputs of the rows in ``order``, predicted on demand in batches of
    :data:`PREDICT_BATCH` positions and kept for every feature and test."""

    def __init__(self, predict: Any, X: np.ndarray, order: np.ndarray) -> None:
        self.predict, self.X, self.order = predict, X, order
        self.values: np.ndarray | None = None
        self.done = np.zeros(len(order), dtype=bool)
        self.rows_predicted = 0

    def __call__(self, positions: np.ndarray) -> np.ndarray:
        positions = np.asarray(positions, dtype=int)
        for batch in np.unique(positions[~self.done[positions]] // PREDICT_BATCH):
            start = int(batch) * PREDICT_BATCH
            stop = min(start + PREDICT_BATCH, len(self.order))
            out = np.asarray(self.predict(self.X[self.order[start:stop]]), dtype=float)
            out = out.reshape(stop - start, -1)
            if not np.all(np.isfinite(out)):
                raise XaiError(
                    f"importance_test: the model returned non-finite outputs for "
                    f"{int((~np.isfinite(out)).any(axis=1).sum())} row(s); the kernels need "
                    "finite outputs: fix the model or leave those rows out.")
            if self.values is None:
                self.values = np.full((len(self.order), out.shape[1]), np.nan)
            self.values[start:stop] = out
            self.done[start:stop] = True
            self.rows_predicted += stop - start
        return self.values[positions]


def _run_test(test: str, method: str, usable: np.ndarray, predictions: _LazyPredictions,
              ordered: np.ndarray, j: int, sampler: ConditionalSampler | None,
              categorical_columns: set[int], params: dict[str, Any],
              rng: np.random.Generator) -> IndependenceOutcome:
    """One feature, one test, on the rows at positions ``usable`` of the seeded order."""
    categorical = j in categorical_columns
    x = ordered[:, j]
    rest_cols = [c for c in range(ordered.shape[1]) if c != j]
    rest_categorical = np.array([c in categorical_columns for c in rest_cols], dtype=bool)
    # The conditional tests compare partial residuals: a category code is a label, not a
    # number, so a categorical feature is compared as it is (delta kernel).
    center = None if categorical or sampler is None else sampler.mean
    if method == "permutation":
        y = predictions(usable)
        draws, xs = None, x[usable]
        if test == "conditional":
            rest = ordered[usable][:, rest_cols]
            draws = sampler.sample(rest, rng, size=params["n_permutations"])
            y, xs, draws = residualize(y, xs, draws, rest, center, rest_categorical)
        return permutation_test(y, xs, kind=test, alpha=params["alpha"],
                                n_permutations=params["n_permutations"], rng=rng,
                                x_draws=draws, categorical=categorical)
    if test == "conditional":
        warmup = conditional_warmup(params["warmup"], rest_categorical.size, len(usable))
        stream = ResidualStream(alpha=params["alpha"], warmup=warmup,
                                categorical=categorical, center=center,
                                rest_categorical=rest_categorical)
    else:
        stream = BettingStream(test, alpha=params["alpha"], warmup=params["warmup"],
                               categorical=categorical)
    for start in range(0, len(usable), PREDICT_BATCH):
        chunk = usable[start:start + PREDICT_BATCH]
        if test == "marginal":
            stopped = stream.feed(predictions(chunk), x[chunk])
        else:
            rest = ordered[chunk][:, rest_cols]
            stopped = stream.feed(predictions(chunk), x[chunk], sampler.sample(rest, rng), rest)
        if stopped:
            break
    return stream.outcome(len(usable))
