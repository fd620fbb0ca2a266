"""Exact pairwise Shapley interaction values of tree ensembles, no model calls.

The index: the SHAP interaction values of shap's TreeExplainer (Lundberg et al. 2020), which
are k-SII of order 2 (``info['index'] = 'k-SII'``; equal to shapiq's ``ExactComputer`` 'k-SII'
to float round-off, tested): ``interactions[r]`` is a symmetric ``(d, d)`` matrix whose
off-diagonal cells (i, j) and (j, i) each hold half the pair's Shapley interaction index SII_ij
(``info['off_diagonal'] = 'half'``, shap's convention) and whose diagonal holds the main effect
phi_i - 1/2 sum_{j != i} SII_ij. Row i sums to the feature's Shapley value (``values``, the
numbers tree_shap gives) and the matrix to f(x) - base.

Which game (``feature_perturbation``):

* ``'interventional'`` (the default for scikit-learn trees, as in tree_shap): the game of every
  other method here, v(S) = mean over background rows b of f(x_S, b_rest); base value
  E[f(background)]. shap computes no interventional interaction values (its C code prints
  "FEATURE_DEPENDENCE::independent does not support interactions!" and returns zeros), so they
  are computed here, exactly, from the trees: for one explained row x, one background row b and
  one leaf, the leaf's share of the game is its value times [A in S][B outside S], A the path's
  features only x satisfies and B those only b satisfies (zero if some feature neither does),
  whose Shapley values and interaction indices are Beta integrals in |A| and |B| alone. Summed
  over leaves and averaged over the background, vectorised; cost about rows x background x
  leaves x depth^2 operations (with the split thresholds ranked as in tree_shap, so every
  split decision is the model's own).
* ``'tree_path_dependent'``: shap's own algorithm (its C extension; XGBoost's native
  ``pred_interactions``), the conditional expectation along the training cover of each node;
  base value the cover-weighted mean leaf value. Fast, but a different game: values differ from
  the interventional ones (and from tree_shap's for scikit-learn trees) by ~10% of the largest
  value on a random forest. XGBoost and LightGBM (``'auto'``) use it, as tree_shap does for
  them, so rows sum to tree_shap's values there too.

Output spaces: regressors their prediction (``'raw'``), forests and single trees that classify
the class probability (``'probability'``, their leaves hold probabilities), gradient-boosted
classifiers, XGBoost and LightGBM the margin (``'margin'``: a probability after a sigmoid or a
softmax is not a sum over leaves, so its interactions cannot be read from the trees).

Pipelines: as in tree_shap, the values and interactions of the encoded columns are summed into
the raw columns they come from (M_raw = P' M P, P the encoded-to-raw indicator matrix): the
interactions between the indicators of one one-hot group land on that raw column's diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import factorial
from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Attribution, Explainer, ExplainTask

from .tree import (
    _exact_threshold_model,
    _has_categories,
    _has_missing,
    _Plan,
    _plan,
    plan_or_reason,
)

#: Elements (doubles) held by one step of the interventional computation.
_STEP_ELEMENTS = 1 << 22
#: Largest interaction result tree_interactions builds at once: rows x features^2 doubles.
_MAX_RESULT_BYTES = 4 << 30


class TreeInteractions(Explainer):
    name: ClassVar[str] = "tree_interactions"
    runs_by_default: ClassVar[bool] = False  # d x d values per row: only when named
    description: ClassVar[str] = (
        "Exact pairwise Shapley interaction values of tree ensembles (k-SII of order 2 in "
        "shap's convention; rows sum to the Tree SHAP values): interventional for "
        "scikit-learn trees, computed from the trees; path-dependent (shap, XGBoost "
        "pred_interactions) for XGBoost and LightGBM or on request; also through a "
        "scikit-learn Pipeline's preprocessing."
    )
    requires: ClassVar[tuple[str, ...]] = ("tree",)
    shapley: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    #: feature_perturbation: 'auto' (interventional for scikit-learn trees, path-dependent for
    #: XGBoost and LightGBM, as tree_shap), 'interventional' or 'tree_path_dependent'.
    defaults: ClassVar[dict[str, Any]] = {"feature_perturbation": "auto"}
    param_types: ClassVar[dict[str, str]] = {
        "feature_perturbation": "'auto' | 'interventional' | 'tree_path_dependent'"}

    def supports(self, task: ExplainTask) -> str | None:
        plan, reason = plan_or_reason(self, task)
        if reason is not None:
            return reason
        mode = _mode(plan.kind, self.get_params().get("feature_perturbation"))
        est = plan.estimator
        if plan.kind == "sklearn":
            if _has_missing(plan, task):
                return (f"{self.name}: the rows the trees read contain missing values, and "
                        "neither shap nor this reading of the trees routes them as "
                        "scikit-learn does; use a black-box method (shapley_interactions)")
            outputs = getattr(est, "n_outputs_", 1)
            if task.output_index is None and outputs > 1:
                return (f"{self.name}: a multi-output regressor ({outputs} outputs) has no "
                        "single explained output")
        elif mode == "interventional":
            return (f"{self.name}: interventional interaction values are computed for "
                    f"scikit-learn trees only; a {plan.kind} model gets path-dependent ones "
                    "(feature_perturbation='auto' or 'tree_path_dependent')")
        if plan.kind == "lightgbm":
            booster = est.booster_ if hasattr(est, "booster_") else est
            if _models_per_iteration(booster) > 1:
                return (f"{self.name}: shap.TreeExplainer returns the interaction values of "
                        "one class only for a multiclass LightGBM booster (measured), and "
                        "LightGBM has no native interaction output; use shapley_interactions")
            if _lightgbm_categorical(booster):
                return (f"{self.name}: this LightGBM booster splits natively on categorical "
                        "features, which shap.TreeExplainer does not read; use "
                        "shapley_interactions")
        # The result (rows x d^2) and, through a pipeline, one chunk's encoded matrices.
        d, width = task.n_features, len(plan.sources) if plan.sources is not None else 0
        size = 8 * max(len(task.X) * d * d, self.rows_per_chunk(task, {}) * width * width)
        if size > _MAX_RESULT_BYTES:
            return (f"{self.name}: {len(task.X)} rows x {max(d, width)}^2 interaction values "
                    f"need {size / 2**30:.1f} GiB; explain fewer rows or fewer features")
        return None

    def rows_per_chunk(self, task: ExplainTask, params: dict[str, Any]) -> int:
        # 256 rows, fewer on wide data: a chunk's (rows, d, d) matrices stay near 256 MB.
        return int(max(1, min(256, (1 << 25) // max(1, task.n_features ** 2))))

    def explain(self, task: ExplainTask) -> Attribution:
        params = self.validate_params()
        plan = _plan(task)
        mode = _mode(plan.kind, params["feature_perturbation"])
        if plan.kind == "xgboost":
            reader = _XGBoost(plan, task)
        elif plan.kind == "lightgbm":
            reader = _LightGBM(plan, task)
        elif mode == "interventional":
            reader = _Interventional(plan, task)
        else:
            reader = _PathDependent(plan, task)
        size = max(1, int(task.chunk_rows or self.rows_per_chunk(task, params)))
        onto = _onto_raw(plan, len(task.feature_names))
        parts = []
        for start in range(0, len(task.X), size):
            X = task.X[start:start + size]
            part = reader.explain(X)
            if onto is not None:  # a pipeline: encoded-column blocks summed, chunk by chunk
                part.interactions = np.einsum("ea,reg,gb->rab", onto, part.interactions, onto)
            parts.append(part)
            task.on_rows_done(len(X))
        out = Attribution(
            values=np.concatenate([p.values for p in parts]),
            base_values=np.concatenate([p.base_values for p in parts]),
            outputs=np.concatenate([p.outputs for p in parts]),
            interactions=np.concatenate([p.interactions for p in parts]),
            output_space=reader.output_space,
            info={"index": "k-SII", "order": 2, "off_diagonal": "half",
                  "feature_perturbation": reader.perturbation})
        # Values summed into the raw columns (the rows of the summed matrices add up to them)
        # and the pipeline's facts recorded, as tree_shap does.
        return plan.to_raw(out, task.feature_names)


def _mode(kind: str, requested: Any) -> str:
    if requested in ("interventional", "tree_path_dependent"):
        return requested
    return "interventional" if kind == "sklearn" else "tree_path_dependent"


def _onto_raw(plan: _Plan, n_raw: int) -> np.ndarray | None:
    """P (encoded, raw): 1 where an encoded column comes from a raw column; None without a
    pipeline. Raw interactions are P' M P."""
    if plan.sources is None:
        return None
    onto = np.zeros((len(plan.sources), n_raw))
    onto[np.arange(len(plan.sources)), plan.sources] = 1.0
    return onto


@dataclass
class _Part:
    values: np.ndarray
    base_values: np.ndarray
    outputs: np.ndarray
    interactions: np.ndarray


def _from_matrices(M: np.ndarray, base: Any, outputs: np.ndarray) -> _Part:
    n = len(M)
    return _Part(values=M.sum(axis=2), base_values=np.broadcast_to(
        np.asarray(base, dtype=float), (n,)).copy(), outputs=np.asarray(outputs, dtype=float),
        interactions=M)


# --- scikit-learn trees: which output, in which space --------------------------------------------


@dataclass
class _Output:
    column: int  # column of the trees' leaf values
    sign: float  # -1 for class 0 of a binary model whose trees hold class 1's margin
    space: str  # 'raw', 'probability' or 'margin'


def _sklearn_output(model: dict[str, Any], task: ExplainTask) -> _Output:
    """From shap's reading of the trees (``_exact_threshold_model``'s dict)."""
    n_out = int(np.asarray(model["trees"][0]["values"]).reshape(
        len(model["trees"][0]["children_left"]), -1).shape[1])
    space = {"probability": "probability", "log_odds": "margin"}.get(model["tree_output"], "raw")
    if task.output_index is None:
        return _Output(0, 1.0, space)
    if n_out > 1:
        return _Output(int(task.output_index), 1.0, space)
    # A binary gradient-boosted classifier: one margin, of class 1.
    return _Output(0, -1.0 if task.output_index == 0 else 1.0, space)


def _sklearn_outputs(est: Any, rows: Any, X: np.ndarray, out: _Output, task: ExplainTask
                     ) -> np.ndarray:
    """The model's own output in the explained space, for the efficiency check."""
    if out.space == "margin":
        task.count_model_rows(len(X))
        return out.sign * np.asarray(est.decision_function(rows), dtype=float).reshape(len(X))
    return np.asarray(task.predict(X), dtype=float)


class _PathDependent:
    """shap.TreeExplainer(...).shap_interaction_values on the rank-threshold trees."""

    perturbation = "tree_path_dependent"

    def __init__(self, plan: _Plan, task: ExplainTask) -> None:
        import shap

        self.plan, self.task = plan, task
        model, self.rank = _exact_threshold_model(plan.estimator)
        self.explainer = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent",
                                            model_output="raw")
        self.out = _sklearn_output(model, task)
        self.output_space = self.out.space

    def explain(self, X: np.ndarray) -> _Part:
        rows = self.plan.model_rows(self.task, X)
        M = np.asarray(self.explainer.shap_interaction_values(self.rank(rows)), dtype=float)
        expected = np.ravel(self.explainer.expected_value)
        if M.ndim == 4:
            M = M[..., self.out.column]
        base = expected[self.out.column if len(expected) > 1 else 0]
        outputs = _sklearn_outputs(self.plan.estimator, rows, X, self.out, self.task)
        return _from_matrices(self.out.sign * M, self.out.sign * base, outputs)


# --- scikit-learn trees, interventional: the leaf games ------------------------------------------


def _beta(p: int, q: int) -> float:
    """B(p, q) = (p-1)! (q-1)! / (p+q-1)! for integers p, q >= 1."""
    return factorial(p - 1) * factorial(q - 1) / factorial(p + q - 1)


def _coefficients(k: int) -> dict[str, np.ndarray]:
    """Shapley values and pairwise SII of g(S) = [A in S][B outside S], |A| = a, |B| = b,
    tabled over a, b in 0..k. With g = sum over T in B of (-1)^|T| u_{A+T} (u the unanimity
    games), each sum over T is a Beta integral:
    phi(i in A) = B(a, b+1), phi(i in B) = -B(a+1, b), SII(A, A) = B(a-1, b+1),
    SII(A, B) = -B(a, b), SII(B, B) = B(a+1, b-1)."""
    size = k + 1
    table = {name: np.zeros((size, size)) for name in ("A", "B", "AA", "AB", "BB")}
    for a in range(size):
        for b in range(size):
            if a >= 1:
                table["A"][a, b] = _beta(a, b + 1)
            if b >= 1:
                table["B"][a, b] = -_beta(a + 1, b)
            if a >= 2:
                table["AA"][a, b] = _beta(a - 1, b + 1)
            if a >= 1 and b >= 1:
                table["AB"][a, b] = -_beta(a, b)
            if b >= 2:
                table["BB"][a, b] = _beta(a + 1, b - 1)
    return table


@dataclass
class _Leaves:
    """Every leaf of every tree: the features on its path (K slots, padded), the interval
    (lo, hi] each must fall in to reach it, and its value in the explained output."""

    feature: np.ndarray  # (L, K) int, 0 in padding
    real: np.ndarray  # (L, K) bool
    lo: np.ndarray  # (L, K)
    hi: np.ndarray  # (L, K)
    value: np.ndarray  # (L,)


def _leaves(trees: list[dict[str, Any]], column: int) -> _Leaves:
    paths: list[dict[int, list[float]]] = []
    values: list[float] = []
    for tree in trees:
        left, right = tree["children_left"], tree["children_right"]
        features, thresholds = tree["features"], tree["thresholds"]
        leaf_values = np.asarray(tree["values"], dtype=float).reshape(len(left), -1)
        stack: list[tuple[int, dict[int, list[float]]]] = [(0, {})]
        while stack:
            node, bounds = stack.pop()
            if left[node] < 0:
                paths.append(bounds)
                values.append(float(leaf_values[node, column]))
                continue
            f, t = int(features[node]), float(thresholds[node])
            lo, hi = bounds.get(f, [-np.inf, np.inf])
            stack.append((int(left[node]), {**bounds, f: [lo, min(hi, t)]}))   # x <= t
            stack.append((int(right[node]), {**bounds, f: [max(lo, t), hi]}))  # x > t
    K = max(1, max((len(p) for p in paths), default=1))
    L = len(paths)
    feature = np.zeros((L, K), dtype=np.int64)
    real = np.zeros((L, K), dtype=bool)
    lo = np.full((L, K), -np.inf)
    hi = np.full((L, K), np.inf)
    for leaf, bounds in enumerate(paths):
        for slot, (f, (low, high)) in enumerate(sorted(bounds.items())):
            feature[leaf, slot], real[leaf, slot] = f, True
            lo[leaf, slot], hi[leaf, slot] = low, high
    return _Leaves(feature, real, lo, hi, np.asarray(values, dtype=float))


class _Interventional:
    """Exact interventional values and pairwise SII from the leaf games (module docstring)."""

    perturbation = "interventional"

    def __init__(self, plan: _Plan, task: ExplainTask) -> None:
        self.plan, self.task = plan, task
        model, self.rank = _exact_threshold_model(plan.estimator)
        self.out = _sklearn_output(model, task)
        self.output_space = self.out.space
        self.leaves = _leaves(model["trees"], self.out.column)
        self.offset = float(np.ravel(model["base_offset"])[
            self.out.column if np.size(model["base_offset"]) > 1 else 0])
        self.background = self.rank(plan.model_background(task))
        self.table = _coefficients(self.leaves.feature.shape[1])
        # E[f(background)]: the leaves each background row reaches, a block of leaves at a time.
        total = 0.0
        for leaves in self._leaf_blocks(len(self.background)):
            reached = self._satisfied(self.background, leaves).all(axis=2)  # (l, B)
            total += float(self.leaves.value[leaves] @ reached.mean(axis=1))
        self.base = self.out.sign * (total + self.offset)

    def _leaf_blocks(self, n_rows: int):
        """Slices of leaves whose (leaves, rows, background rows) arrays hold about
        _STEP_ELEMENTS elements."""
        L, K = self.leaves.feature.shape
        step = max(1, _STEP_ELEMENTS // max(1, n_rows * max(len(self.background), K)))
        for l0 in range(0, L, step):
            yield slice(l0, min(L, l0 + step))

    def _satisfied(self, data: np.ndarray, leaves: slice) -> np.ndarray:
        """(l, m, K): the row's value of each path feature lies in the leaf's interval
        (padding slots: True)."""
        lv = self.leaves
        picked = data[:, lv.feature[leaves]]  # (m, l, K)
        ok = (picked > lv.lo[leaves]) & (picked <= lv.hi[leaves])
        return np.transpose(ok | ~lv.real[leaves], (1, 0, 2))

    def explain(self, X: np.ndarray) -> _Part:
        rows_data = self.plan.model_rows(self.task, X)
        rows = self.rank(rows_data)
        n, D = rows.shape
        M = np.zeros((n, D, D))
        phi = np.zeros((n, D))
        for leaves in self._leaf_blocks(n):
            self._accumulate(self._satisfied(rows, leaves), leaves, M, phi)
        off = M.copy()
        idx = np.arange(D)
        off[:, idx, idx] = 0.0
        M = self.out.sign * off
        M[:, idx, idx] = self.out.sign * (phi - off.sum(axis=2))
        outputs = _sklearn_outputs(self.plan.estimator, rows_data, X, self.out, self.task)
        return _from_matrices(M, self.base, outputs)

    def _accumulate(self, xs: np.ndarray, leaves: slice, M: np.ndarray, phi: np.ndarray
                    ) -> None:
        """Add the leaves' shares: Shapley values into ``phi`` (r, D) and half pairwise SII
        into the off-diagonal of ``M`` (r, D, D).

        Only the (leaf, row, background row) triples that reach the leaf for some coalition
        contribute (a few percent of them in deep trees), so they are found with one matrix
        product and processed as a flat list."""
        bs = self._satisfied(self.background, leaves)                    # (l, B, K)
        # A triple is dead when some path feature fails for both x and b.
        both_fail = (~xs).astype(np.float32) @ (~bs).astype(np.float32).transpose(0, 2, 1)
        li, ri, bi = np.nonzero(both_fail == 0)
        step = max(1, _STEP_ELEMENTS // max(1, xs.shape[2] ** 2))
        for start in range(0, len(li), step):
            part = slice(start, start + step)
            self._add_triples(li[part], ri[part], bi[part], xs, bs, leaves.start, M, phi)

    def _add_triples(self, li: np.ndarray, ri: np.ndarray, bi: np.ndarray, xs: np.ndarray,
                     bs: np.ndarray, first_leaf: int, M: np.ndarray, phi: np.ndarray) -> None:
        lv, t = self.leaves, self.table
        x_ok = xs[li, ri]                                                # (E, K)
        in_a = x_ok & ~bs[li, bi]          # x satisfies, b does not (padding: never)
        in_b = ~x_ok                       # x fails; alive, so b satisfies (padding: never)
        a, b = in_a.sum(axis=1), in_b.sum(axis=1)
        value = lv.value[first_leaf + li] / self.background.shape[0]
        w = {name: value * t[name][a, b] for name in ("A", "B", "AA", "AB", "BB")}
        A, Bm = in_a.astype(float), in_b.astype(float)
        sv = w["A"][:, None] * A + w["B"][:, None] * Bm                  # (E, K)
        ab = (w["AB"][:, None] * A)[:, :, None] * Bm[:, None, :]
        pairs = (w["AA"][:, None] * A)[:, :, None] * A[:, None, :]
        pairs += ab
        pairs += ab.transpose(0, 2, 1)
        pairs += (w["BB"][:, None] * Bm)[:, :, None] * Bm[:, None, :]
        pairs *= 0.5                                       # shap's convention: half per cell
        k = np.arange(pairs.shape[1])
        pairs[:, k, k] = 0.0
        # Scatter onto (row, feature) cells; padding slots carry zero weight.
        D = phi.shape[1]
        feat = lv.feature[first_leaf + li]                               # (E, K)
        cell = ri[:, None] * D + feat
        _scatter_add(phi.reshape(-1), cell.ravel(), sv.ravel())
        index = (ri[:, None, None] * D * D + feat[:, :, None] * D + feat[:, None, :])
        _scatter_add(M.reshape(-1), index.ravel(), pairs.ravel())


def _scatter_add(target: np.ndarray, index: np.ndarray, weights: np.ndarray) -> None:
    """target[index] += weights, repeated indices summed (``target`` a flat view): a dense
    bincount when the target is not much larger than the entries, else ``np.add.at``."""
    if len(target) <= 4 * len(index):
        target += np.bincount(index, weights=weights, minlength=len(target))
    else:
        np.add.at(target, index, weights)


# --- XGBoost and LightGBM (path-dependent) -------------------------------------------------------


class _XGBoost:
    """XGBoost's native ``pred_interactions`` (shap's algorithm, path-dependent, margin)."""

    perturbation = "tree_path_dependent"
    output_space = "margin"

    def __init__(self, plan: _Plan, task: ExplainTask) -> None:
        self.plan, self.task = plan, task
        est = plan.estimator
        self.booster = est.get_booster() if hasattr(est, "get_booster") else est

    def explain(self, X: np.ndarray) -> _Part:
        import xgboost

        rows = self.plan.model_rows(self.task, X)
        matrix = xgboost.DMatrix(rows, enable_categorical=_has_categories(rows))
        phi = np.asarray(self.booster.predict(matrix, pred_interactions=True), dtype=float)
        margins = np.asarray(self.booster.predict(matrix, output_margin=True), dtype=float)
        sign = 1.0
        if phi.ndim == 4:  # (n, classes, d + 1, d + 1)
            phi, margins = phi[:, self.task.output_index], margins[:, self.task.output_index]
        elif self.task.output_index == 0:  # binary: the margin is class 1's
            sign = -1.0
        d = phi.shape[1] - 1
        M = phi[:, :d, :d].copy()
        # The bias row and column hold only the base value; fold anything else into the
        # main effects so that the matrix still sums to margin - base.
        idx = np.arange(d)
        M[:, idx, idx] += phi[:, :d, d] + phi[:, d, :d]
        return _from_matrices(sign * M, sign * phi[:, d, d], sign * margins)


class _LightGBM:
    """shap.TreeExplainer on the booster (path-dependent, margin); LightGBM has no native
    interaction output."""

    perturbation = "tree_path_dependent"
    output_space = "margin"

    def __init__(self, plan: _Plan, task: ExplainTask) -> None:
        import shap

        self.plan, self.task = plan, task
        est = plan.estimator
        self.booster = est.booster_ if hasattr(est, "booster_") else est
        self.explainer = shap.TreeExplainer(self.booster)

    def explain(self, X: np.ndarray) -> _Part:
        rows = self.plan.model_rows(self.task, X)
        M = np.asarray(self.explainer.shap_interaction_values(rows), dtype=float)
        base = float(np.ravel(self.explainer.expected_value)[0])
        margins = np.asarray(self.booster.predict(rows, raw_score=True), dtype=float)
        sign = -1.0 if self.task.output_index == 0 else 1.0
        return _from_matrices(sign * M, sign * base, sign * margins.reshape(len(X)))


def _models_per_iteration(booster: Any) -> int:
    """Trees per boosting round: the number of classes of a multiclass booster, else 1."""
    return int(getattr(booster, "num_model_per_iteration", lambda: 1)())


def _lightgbm_categorical(booster: Any) -> bool:
    """Whether any split of the booster is a categorical one (decision type '==')."""
    dump = booster.dump_model()
    stack = [tree.get("tree_structure", {}) for tree in dump.get("tree_info", [])]
    while stack:
        node = stack.pop()
        if node.get("decision_type") == "==":
            return True
        stack.extend(node[k] for k in ("left_child", "right_child") if k in node)
    return False
