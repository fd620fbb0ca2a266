"""Tree SHAP: exact Shapley values from the trees themselves, no model calls.

scikit-learn trees (trees, forests, gradient boosting, histogram gradient boosting) use
``shap.TreeExplainer`` with the interventional background, explaining the same output
(probability for classifiers) as the model-agnostic methods. XGBoost and LightGBM use their own
built-in contribution output (path-dependent, in margin space).

Split thresholds. shap's interventional algorithm compares feature values with thresholds held
in float32, while scikit-learn compares float32 (trees) or float64 (histogram boosting) inputs
with float64 thresholds, so a value close to a threshold could take the other branch in shap
than in the model. Before calling shap, every value is replaced by its rank among the split
thresholds of its feature (and each threshold by its own rank): every split decision stays the
same and the numbers are small integers, exact in float32. Efficiency then holds to float
round-off.

Pipelines. A scikit-learn ``Pipeline`` whose last step is one of these tree models is explained
through its trees too. The steps before it (``pipeline[:-1]``) transform the background and the
explained rows, Tree SHAP runs on the transformed ("encoded") columns, and each raw input column
(``task.feature_names``) gets the sum of the attributions of the encoded columns made from it
(the indicators of a one-hot encoder sum to their categorical column). The map from encoded to
raw columns is read from the fitted steps: ``ColumnTransformer`` branches (``transformers_``,
``output_indices_``, the remainder, nested pipelines), column-wise transformers (scalers,
imputers, one-hot / ordinal / target encoders, binning, feature selectors, a
``FunctionTransformer`` that keeps the column count) and any transformer applied to a single raw
column. A step that builds an output column from several input columns (PCA,
PolynomialFeatures) or that is not known makes ``supports`` decline, naming the step: splitting
such a column among raw columns would be a guess.

What the summed value is, exactly: the sum, over the encoded columns of one raw column, of their
interventional Shapley values in the final estimator's game on the encoded features (players:
the encoded columns; the value of a coalition S is the mean over the transformed background rows
b of f(x_S, b_rest)). It is efficient: over the raw columns the sums add up to
f(x) - E[f(background)], because the encoded Shapley values do and summing only regroups them.
When each raw column maps to exactly one encoded column (scalers, imputers, ordinal codes), the
encoded game is the raw game (mixing x and b before or after a column-wise transform gives the
same encoded row), so the sum is the raw column's own interventional Shapley value, the value
``exact_shap`` computes on the raw columns with the same background. For a one-hot group it can
differ from treating the raw column as one player, which is what the model-agnostic methods do
on the raw columns: the encoded game also has coalitions that take some indicators of the group
from x and others from b. When x and b hold different categories, such coalitions give the trees
rows with no category active (all indicators 0) or two active (two 1s), rows that no raw input
can produce, and the model's output on them enters each indicator's value; a single raw player
only ever switches the whole group at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from mlflow_xai.plugin_api import Attribution, Explainer, ExplainTask

_BLACK_BOX = "explain the whole pipeline with a black-box method (kernel_shap, " \
             "permutation_shap or exact_shap) instead"

#: scikit-learn transformers whose every output column is a function of one input column, with
#: as many outputs as inputs and in the same order.
_ONE_TO_ONE = frozenset({
    "StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler", "PowerTransformer",
    "QuantileTransformer", "Binarizer", "OrdinalEncoder",
})

#: Transformers known to build output columns from several input columns (named in the reason).
_MIXING = frozenset({
    "PCA", "IncrementalPCA", "KernelPCA", "SparsePCA", "MiniBatchSparsePCA", "TruncatedSVD",
    "FastICA", "NMF", "MiniBatchNMF", "FactorAnalysis", "DictionaryLearning",
    "LatentDirichletAllocation", "PolynomialFeatures", "Normalizer", "Nystroem", "RBFSampler",
    "AdditiveChi2Sampler", "SkewedChi2Sampler", "PolynomialCountSketch",
    "GaussianRandomProjection", "SparseRandomProjection", "IterativeImputer", "KNNImputer",
    "LinearDiscriminantAnalysis", "PLSRegression", "PLSCanonical", "PLSSVD",
    "CCA", "Isomap", "LocallyLinearEmbedding", "RandomTreesEmbedding",
})

#: Boosted classifiers whose probability is a softmax over one ensemble per class when they
#: have more than two classes; shap.TreeExplainer explains the binary case only.
_BINARY_ONLY = frozenset({"GradientBoostingClassifier", "HistGradientBoostingClassifier"})


class TreeShap(Explainer):
    name: ClassVar[str] = "tree_shap"
    description: ClassVar[str] = (
        "Tree SHAP: exact Shapley values from tree internals (shap.TreeExplainer for "
        "scikit-learn trees; native pred_contribs for XGBoost and LightGBM), also through the "
        "preprocessing of a scikit-learn Pipeline ending in one of them."
    )
    requires: ClassVar[tuple[str, ...]] = ("tree",)
    shapley: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}

    def supports(self, task: ExplainTask) -> str | None:
        plan, reason = plan_or_reason(self, task)
        if reason is not None:
            return reason
        if plan.kind == "sklearn" and _has_missing(plan, task):
            # Measured: efficiency gaps of 0.24-0.71 in probability on NaN rows; shap does not
            # follow the routing scikit-learn learned for missing values.
            return (f"{self.name}: the rows the trees read contain missing values, and "
                    "shap.TreeExplainer does not route them as scikit-learn does; the planner "
                    "uses a black-box Shapley estimator instead (XGBoost and LightGBM are fine)")
        return None

    def rows_per_chunk(self, task: ExplainTask, params: dict[str, Any]) -> int:
        # Each chunk re-reads the trees (and re-encodes the background of a pipeline): bigger
        # chunks than the sampling methods' keep that overhead small.
        return 256

    def explain_rows(self, task: ExplainTask, X: np.ndarray, params: dict[str, Any]
                     ) -> Attribution:
        plan = _plan(task)
        rows = plan.model_rows(task, X)
        if plan.kind == "xgboost":
            attribution = _xgboost(plan.estimator, rows, task)
        elif plan.kind == "lightgbm":
            attribution = _lightgbm(plan.estimator, rows, task)
        else:
            attribution = _sklearn(plan.estimator, plan.model_background(task), rows, task, X)
        return plan.to_raw(attribution, task.feature_names)


def plan_or_reason(explainer: Explainer, task: ExplainTask) -> tuple[_Plan | None, str | None]:
    """What a tree explainer's ``supports()`` starts with: the base checks (data type, a tree
    model), then the trees to read; (plan, None) or (None, the reason it does not apply)."""
    reason = Explainer.supports(explainer, task)
    if reason is not None:
        return None, reason
    try:
        return _plan(task), None
    except NotTreeExplainable as exc:
        return None, f"{explainer.name}: {exc}"


def _has_missing(plan: _Plan, task: ExplainTask) -> bool:
    """NaN in what the trees would read: the rows and the background (after a pipeline's
    preprocessing, which may impute them)."""
    rows = np.asarray(plan.model_rows(task, task.X), dtype=float)
    background = np.asarray(plan.model_background(task), dtype=float)
    return bool(np.isnan(rows).any() or np.isnan(background).any())


class NotTreeExplainable(Exception):
    """The model's trees cannot give attributions of the raw columns; the message says why."""


# --- what the trees read: the model itself, or the final step of a Pipeline ------------------


@dataclass
class _Plan:
    """The tree model to read and, for a Pipeline, how its inputs relate to the raw columns."""

    kind: str  # 'sklearn', 'xgboost' or 'lightgbm'
    estimator: Any
    preprocess: Any = None  # pipeline[:-1]; None for a bare tree model
    sources: np.ndarray | None = None  # raw column index of each encoded column
    encoded_names: list[str] | None = None
    encoded_background: Any = None

    def model_rows(self, task: ExplainTask, X: np.ndarray) -> Any:
        """What the tree model reads for the encoded float rows ``X``."""
        if self.preprocess is None:
            # scikit-learn trees read floats (category codes included); boosters read the
            # model input (a frame with its dtypes, categories included).
            return X if self.kind == "sklearn" else task.to_model_input(X)
        return _transform(self.preprocess, task.to_model_input(X))

    def model_background(self, task: ExplainTask) -> Any:
        return task.background if self.preprocess is None else self.encoded_background

    def to_raw(self, attribution: Attribution, raw_names: list[str]) -> Attribution:
        """Sum the encoded columns' attributions into their raw columns (pipelines only)."""
        if self.sources is None:
            return attribution
        onto = np.zeros((len(self.sources), len(raw_names)))
        onto[np.arange(len(self.sources)), self.sources] = 1.0
        attribution.values = np.asarray(attribution.values, dtype=float) @ onto
        attribution.info = {**attribution.info, **self._info(raw_names)}
        return attribution

    def _info(self, raw_names: list[str]) -> dict[str, Any]:
        names = self.encoded_names or []
        groups: dict[str, list[str]] = {}
        for j, raw in enumerate(self.sources):
            groups.setdefault(raw_names[raw], []).append(names[j])
        info: dict[str, Any] = {
            "pipeline": True,
            "final_step": type(self.estimator).__name__,
            "encoded_features": len(self.sources),
            "grouped": {raw: cols for raw, cols in groups.items() if len(cols) > 1},
        }
        dropped = [name for name in raw_names if name not in groups]
        if dropped:  # the preprocessing drops them: the model cannot depend on them
            info["dropped"] = dropped
        return info


def _plan(task: ExplainTask) -> _Plan:
    model = task.raw_model
    if not _is_pipeline(model):
        plan = _Plan(kind=str(task.tree_kind), estimator=model)
    else:
        plan = _pipeline_plan(model, task)
    _check_estimator(plan.estimator)
    return plan


def _is_pipeline(model: Any) -> bool:
    return type(model).__name__ == "Pipeline" and hasattr(model, "steps")


def _pipeline_plan(pipeline: Any, task: ExplainTask) -> _Plan:
    preprocess, final = pipeline[:-1], pipeline.steps[-1][1]
    # Every step before the final one sees the raw columns in task.feature_names order.
    sources = _sources(preprocess, np.arange(len(task.feature_names)), "")
    background = _transform(preprocess, task.to_model_input(task.background))
    width = background.shape[1]
    if len(sources) != width:
        raise NotTreeExplainable(
            f"the pipeline's preprocessing outputs {width} columns, but reading its steps "
            f"column by column gives {len(sources)}: a step (for example a "
            f"FunctionTransformer) changes the number of columns; {_BLACK_BOX}.")
    return _Plan(kind=_final_kind(final), estimator=final, preprocess=preprocess,
                 sources=sources, encoded_names=_encoded_names(preprocess, width),
                 encoded_background=background)


def _transform(preprocess: Any, data: Any) -> Any:
    """``preprocess.transform(data)`` step by step, as the whole pipeline's predict does:
    ``Pipeline.transform`` would refuse a stateless last step as "not fitted"."""
    for _, step in preprocess.steps:
        if step is not None and not (isinstance(step, str) and step == "passthrough"):
            data = step.transform(data)
    return _dense(data)


def _final_kind(final: Any) -> str:
    module = type(final).__module__.split(".")[0]
    return module if module in ("xgboost", "lightgbm") else "sklearn"


def _encoded_names(preprocess: Any, width: int) -> list[str]:
    try:
        names = [str(n) for n in preprocess.get_feature_names_out()]
    except (AttributeError, TypeError, ValueError, NotImplementedError):
        # Not every step can name its outputs (e.g. a FunctionTransformer without names).
        return [f"encoded_{j}" for j in range(width)]
    return names if len(names) == width else [f"encoded_{j}" for j in range(width)]


def _dense(data: Any) -> Any:
    """A transform's output as a dense array, or the DataFrame it is (set_output='pandas')."""
    if isinstance(data, pd.DataFrame):
        return data
    if hasattr(data, "toarray"):  # scipy sparse (one-hot encoders' default)
        return data.toarray()
    return np.asarray(data)


def _check_estimator(est: Any) -> None:
    name = type(est).__name__
    if name.startswith("HistGradientBoosting"):
        # shap reads these trees and its values add up (efficiency holds), yet they differ
        # from exact enumeration by up to 0.14 in probability on breast_cancer
        # (tests/test_tree_pipeline.py): the black-box estimators are right, so use them.
        raise NotTreeExplainable(
            f"shap.TreeExplainer's values for a {name} disagree with exact Shapley values "
            "(measured); the planner uses exact_shap or kernel_shap for it instead.")
    classes = getattr(est, "classes_", None)
    if name in _BINARY_ONLY and classes is not None and len(classes) > 2:
        raise NotTreeExplainable(
            f"a {name} with {len(classes)} classes turns one tree ensemble per class into "
            "probabilities by a softmax, which shap.TreeExplainer cannot split exactly; use "
            "kernel_shap or permutation_shap.")
    categorical = getattr(est, "is_categorical_", None)
    if name.startswith("HistGradientBoosting") and categorical is not None and np.any(
            categorical):
        raise NotTreeExplainable(
            f"this {name} splits natively on categorical features, which shap.TreeExplainer "
            "does not read; fit it with categorical_features=None on encoded columns (for "
            "example an OrdinalEncoder in a Pipeline), or use kernel_shap or permutation_shap.")


# --- encoded column -> raw column --------------------------------------------------------------


def _sources(step: Any, inputs: np.ndarray, path: str) -> np.ndarray:
    """The raw column of each output column of the fitted ``step``, given the raw column of
    each of its input columns; NotTreeExplainable when an output mixes input columns."""
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return inputs
    name = type(step).__name__
    if _is_pipeline(step):
        for step_name, inner in step.steps:
            inputs = _sources(inner, inputs, _join(path, step_name))
        return inputs
    if name == "ColumnTransformer":
        return _column_transformer_sources(step, inputs, path)
    widths = _columnwise_widths(step, len(inputs), path)
    if isinstance(widths, tuple):  # a selection of input columns
        return inputs[list(widths)]
    return np.repeat(inputs, widths)


def _join(path: str, step: str) -> str:
    """The step's place in the pipeline for messages: 'prep > num > pca'."""
    return f"{path} > {step}" if path else step


def _columnwise_widths(step: Any, n_in: int, path: str) -> np.ndarray | tuple[int, ...]:
    """Output columns per input column, in order (an array), or the input columns kept (a
    tuple), for transformers that work column by column."""
    name = type(step).__name__
    if name in _ONE_TO_ONE:
        return np.ones(n_in, dtype=int)
    if name == "FunctionTransformer":
        # Taken as column-wise; a changed column count is caught against the actual output.
        return np.ones(n_in, dtype=int)
    if name == "OneHotEncoder":
        return _one_hot_widths(step)
    if name == "KBinsDiscretizer":
        ordinal = step.encode == "ordinal"
        return np.ones(n_in, dtype=int) if ordinal else np.asarray(step.n_bins_, dtype=int)
    if name == "TargetEncoder":
        per = len(step.classes_) if getattr(step, "target_type_", "") == "multiclass" else 1
        return np.full(n_in, per, dtype=int)
    if name == "SplineTransformer":
        return np.full(n_in, step.n_features_out_ // n_in, dtype=int)
    if name == "SimpleImputer":
        return _imputer_kept(step, n_in)
    if name == "MissingIndicator":
        return tuple(int(i) for i in step.features_)
    if hasattr(step, "get_support") and type(step).__module__.startswith("sklearn"):
        return tuple(int(i) for i in step.get_support(indices=True))  # feature selectors
    what = "makes each output column from several input columns" if name in _MIXING else (
        "is not a transformer whose output columns tree_shap can trace to single input columns "
        "(it knows ColumnTransformer, Pipeline, scalers, imputers, encoders, binning and "
        "feature selectors)")
    raise NotTreeExplainable(
        f"step '{path}' ({name}) {what}, so attributions of its outputs cannot be summed back "
        f"to the raw columns; {_BLACK_BOX}.")


def _one_hot_widths(encoder: Any) -> np.ndarray:
    """Indicator columns per input column: its categories, infrequent ones merged into one
    column, minus the dropped category."""
    widths = np.array([len(c) for c in encoder.categories_], dtype=int)
    infrequent = getattr(encoder, "infrequent_categories_", None)  # None unless enabled
    for i, rare in enumerate(infrequent or []):
        if rare is not None:
            widths[i] -= len(rare) - 1
    drop = getattr(encoder, "drop_idx_", None)
    if drop is not None:
        widths -= np.array([d is not None for d in drop], dtype=int)
    return widths


def _imputer_kept(imputer: Any, n_in: int) -> tuple[int, ...]:
    """Input columns a SimpleImputer outputs: the non-empty ones, then its missing
    indicators (each one reads one input column)."""
    stats = pd.isna(pd.Series(np.asarray(imputer.statistics_, dtype=object)))
    drops_empty = imputer.strategy != "constant" and not getattr(
        imputer, "keep_empty_features", False)
    kept = [i for i in range(n_in) if not (drops_empty and stats[i])]
    indicator = getattr(imputer, "indicator_", None)
    flagged = [int(i) for i in indicator.features_] if indicator is not None else []
    return tuple(kept + flagged)


def _column_transformer_sources(ct: Any, inputs: np.ndarray, path: str) -> np.ndarray:
    width = max((s.stop for s in ct.output_indices_.values()), default=0)
    out = np.full(width, -1, dtype=int)
    for branch, transformer, columns in ct.transformers_:
        where = ct.output_indices_[branch]
        n_out = where.stop - where.start
        if n_out == 0:  # 'drop', or a branch with no columns
            continue
        branch_inputs = inputs[_column_positions(ct, columns, len(inputs))]
        if len(set(branch_inputs.tolist())) == 1:
            # Every output of a branch that reads one raw column depends on that column only.
            out[where] = branch_inputs[0]
            continue
        sub = _sources(transformer, branch_inputs, _join(path, branch))
        if len(sub) != n_out:
            raise NotTreeExplainable(
                f"step '{_join(path, branch)}' ({type(transformer).__name__}) outputs {n_out} "
                f"columns, but reading it column by column gives {len(sub)}: it does not work "
                f"column by column; {_BLACK_BOX}.")
        out[where] = sub
    return out


def _column_positions(ct: Any, columns: Any, n_in: int) -> list[int]:
    """Positions (in the ColumnTransformer's input) of a fitted branch's column selection."""
    names = [str(n) for n in getattr(ct, "feature_names_in_", [])]
    if isinstance(columns, (str, int, np.integer)):
        columns = [columns]
    if isinstance(columns, slice):
        if isinstance(columns.start, str) or isinstance(columns.stop, str):  # labels: inclusive
            start = names.index(columns.start) if columns.start is not None else 0
            stop = names.index(columns.stop) + 1 if columns.stop is not None else n_in
            return list(range(start, stop))
        return list(range(n_in))[columns]
    selection = list(columns)
    if selection and all(isinstance(c, (bool, np.bool_)) for c in selection):
        return [i for i, keep in enumerate(selection) if keep]
    return [names.index(str(c)) if isinstance(c, str) else int(c) for c in selection]


# --- the three readers ------------------------------------------------------------------------


def _sklearn(est: Any, background: Any, rows: Any, task: ExplainTask, X: np.ndarray
             ) -> Attribution:
    import shap

    classifier = task.output_index is not None
    model, rank = _exact_threshold_model(est)
    explainer = shap.TreeExplainer(
        model, data=rank(background), feature_perturbation="interventional",
        model_output="probability" if classifier else "raw",
    )
    values = np.asarray(explainer.shap_values(rank(rows), check_additivity=False), dtype=float)
    expected = np.ravel(explainer.expected_value)
    if values.ndim == 3:  # (rows, features, outputs)
        values, base = values[:, :, task.output_index], expected[task.output_index]
    elif classifier and task.output_index == 0:
        # Binary boosting explains P(class 1) only; P(class 0) = 1 - P(class 1).
        values, base = -values, 1.0 - expected[0]
    else:
        base = expected[0]
    outputs = task.predict(X)
    return Attribution(values=values, base_values=np.full(len(values), float(base)),
                       outputs=outputs, output_space="probability" if classifier else "raw",
                       info={"feature_perturbation": "interventional"})


def _exact_threshold_model(est: Any) -> tuple[dict[str, Any], Any]:
    """shap's reading of ``est`` with every threshold replaced by its rank among the split
    thresholds of its feature, and the function that ranks data the same way (see the module
    docstring: shap compares against float32 thresholds, scikit-learn does not)."""
    import shap

    loaded = shap.TreeExplainer(est).model  # shap's own reading: scaling, leaf values, offset
    trees = loaded.trees
    inner = [t.children_left >= 0 for t in trees]
    features = np.concatenate([t.features[m] for t, m in zip(trees, inner)]).astype(int)
    thresholds = np.concatenate([np.asarray(t.thresholds, dtype=np.float64)[m]
                                 for t, m in zip(trees, inner)])
    n_features = int(features.max()) + 1 if len(features) else 0
    cuts = [np.unique(thresholds[features == j]) for j in range(n_features)]
    input_dtype = loaded.input_dtype  # what the model casts its input to before comparing

    def rank(data: Any) -> np.ndarray:
        values = np.asarray(data, dtype=input_dtype).astype(np.float64)
        out = np.zeros_like(values)
        for j, cut in enumerate(cuts[:values.shape[1]]):
            # Count of thresholds below x: x <= t_k exactly when this count is <= k.
            out[:, j] = np.searchsorted(cut, values[:, j], side="left")
        return out

    ranked = np.zeros_like(thresholds)
    for j, cut in enumerate(cuts):
        at = features == j
        ranked[at] = np.searchsorted(cut, thresholds[at], side="left")
    model = {
        "trees": _ranked_trees(trees, inner, ranked),
        "base_offset": loaded.base_offset,
        "tree_output": loaded.tree_output,
        "objective": loaded.objective,
    }
    return model, rank


def _ranked_trees(trees: list[Any], inner: list[np.ndarray], ranked: np.ndarray
                  ) -> list[dict[str, Any]]:
    out, start = [], 0
    for tree, mask in zip(trees, inner):
        thresholds = np.zeros(len(mask))
        thresholds[mask] = ranked[start:start + int(mask.sum())]
        start += int(mask.sum())
        out.append({
            "children_left": tree.children_left, "children_right": tree.children_right,
            "children_default": tree.children_default, "features": tree.features,
            "thresholds": thresholds, "values": tree.values,
            "node_sample_weight": tree.node_sample_weight,
        })
    return out


def _signed_class(contribs: np.ndarray, margins: np.ndarray, task: ExplainTask
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Pick the explained class from native contributions ``(n, k, d + 1)`` or ``(n, d + 1)``."""
    if contribs.ndim == 3:
        return contribs[:, task.output_index, :], margins[:, task.output_index]
    # Binary models have one margin, for the positive class; class 0 is its negation.
    sign = -1.0 if task.output_index == 0 else 1.0
    return sign * contribs, sign * margins


def _has_categories(data: Any) -> bool:
    return isinstance(data, pd.DataFrame) and any(
        isinstance(dtype, pd.CategoricalDtype) for dtype in data.dtypes)


def _xgboost(model: Any, rows: Any, task: ExplainTask) -> Attribution:
    import xgboost

    booster = model.get_booster() if hasattr(model, "get_booster") else model
    # pandas category columns need the flag, or DMatrix refuses them.
    matrix = xgboost.DMatrix(rows, enable_categorical=_has_categories(rows))
    contribs = np.asarray(booster.predict(matrix, pred_contribs=True), dtype=float)
    margins = np.asarray(booster.predict(matrix, output_margin=True), dtype=float)
    contribs, margins = _signed_class(contribs, margins, task)
    return Attribution(values=contribs[:, :-1], base_values=contribs[:, -1], outputs=margins,
                       output_space="margin", info={"feature_perturbation": "tree_path_dependent"})


def _lightgbm(model: Any, rows: Any, task: ExplainTask) -> Attribution:
    booster = model.booster_ if hasattr(model, "booster_") else model
    contribs = np.asarray(booster.predict(rows, pred_contrib=True), dtype=float)
    margins = np.asarray(booster.predict(rows, raw_score=True), dtype=float)
    d = rows.shape[1]
    if contribs.shape[1] != d + 1:  # multiclass: classes side by side, (d + 1) columns each
        contribs = contribs.reshape(len(contribs), -1, d + 1)
    contribs, margins = _signed_class(contribs, margins, task)
    return Attribution(values=contribs[:, :-1], base_values=contribs[:, -1], outputs=margins,
                       output_space="margin", info={"feature_perturbation": "tree_path_dependent"})
