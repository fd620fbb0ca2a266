"""Base classes for the three kinds of method, and the objects passed between them.

A method pack subclasses :class:`Explainer` (or :class:`Selector`, :class:`Check`), sets a few
class attributes that describe what it needs, and writes one small method. The base class does
the shared work: parameter validation, chunking rows for the progress bar, shape checks.
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mlflow_xai.device import batch_rows
from mlflow_xai.errors import ConfigError

if TYPE_CHECKING:
    from mlflow_xai.data import PreparedData
    from mlflow_xai.model import ModelAdapter

#: Explained rows per chunk for methods that do not choose (see Explainer.rows_per_chunk).
DEFAULT_CHUNK_ROWS = 64

#: What a method may need from the model.
REQUIREMENTS = {
    "predict": "black-box predict",
    "gradients": "gradients (torch nn.Module)",
    "tree": "tree internals (scikit-learn trees, XGBoost, LightGBM)",
    "targets": "targets (labels)",
}


@dataclass
class ExplainTask:
    """Everything a method sees: an encoded float matrix and a scalar-output model function.

    ``predict`` maps an ``(m, n_features)`` float array to the explained output, shape ``(m,)``.
    The pipeline has already chosen the output (class) and counts every row passed to it.
    """

    predict: Callable[[np.ndarray], np.ndarray]
    X: np.ndarray
    background: np.ndarray
    feature_names: list[str]
    #: Opaque handle on the model: pass it on (e.g. into a derived task); read model facts
    #: through ``raw_model``, ``tree_kind``, ``torch_module`` and ``classes``.
    model: ModelAdapter | None = None
    output_index: int | None = None
    output_label: Any = None
    to_model_input: Callable[[np.ndarray], Any] = lambda X: X
    targets: np.ndarray | None = None
    seed: int = 0
    device: str = "cpu"
    data_type: str = "tabular"
    #: (C, H, W) for image data; ``X`` and ``background`` hold images flattened to C*H*W.
    image_shape: tuple[int, int, int] | None = None
    #: Rows per ``explain_rows`` call (progress granularity); None lets the method choose.
    chunk_rows: int | None = None
    on_rows_done: Callable[[int], None] = lambda n: None
    #: Tensor (m, n_features) on ``device`` -> tensor (m,) of the explained output, no grad.
    predict_tensor: Callable[[Any], Any] | None = None
    #: Like ``predict_tensor`` but differentiable (torch models only; None otherwise).
    forward_grad: Callable[[Any], Any] | None = None
    #: Rows per model call allowed by the device memory budget.
    max_batch_rows: int = 65536
    #: Methods that call the model outside ``predict``/``forward_grad`` (e.g. through Captum)
    #: report the rows they pushed through it here, so that ``model_evals`` stays exact.
    count_model_rows: Callable[[int], None] = lambda n: None
    #: Indices of categorical columns (integer codes in ``X``); used by selectors.
    categorical: tuple[int, ...] = ()
    #: All model outputs for a float matrix, ``(m,)`` or ``(m, k)``; counted like ``predict``.
    predict_full: Callable[[np.ndarray], np.ndarray] | None = None
    #: True for classifiers (targets are class labels), False for regressors, None unknown.
    is_classifier: bool | None = None

    def tensor_predict(self) -> Callable[[Any], Any]:
        """``predict_tensor``, or ``predict`` wrapped to take and return tensors."""
        if self.predict_tensor is not None:
            return self.predict_tensor
        import torch

        def predict(x: Any) -> Any:
            out = self.predict(x.detach().cpu().numpy())
            return torch.as_tensor(np.asarray(out, dtype=np.float64), device=x.device)

        return predict

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    # Model facts, the stable way for a method to read them (``model`` itself is an opaque
    # handle: pass it on, for example into a derived task, but do not read its attributes).

    @property
    def raw_model(self) -> Any:
        """The model object behind ``predict``: the estimator, booster, ``nn.Module`` or
        function that was given or loaded from MLflow (the ``PyFuncModel`` when its flavor
        exposes none); None when the task has no model."""
        return getattr(self.model, "raw", None)

    @property
    def tree_kind(self) -> str | None:
        """``'sklearn'``, ``'xgboost'`` or ``'lightgbm'`` for a tree ensemble whose trees can be
        read (``raw_model`` is then that estimator or booster); None otherwise."""
        return getattr(self.model, "tree_kind", None)

    @property
    def torch_module(self) -> Any:
        """The torch ``nn.Module`` (on ``device``) when the model is one, else None."""
        return getattr(self.model, "torch_module", None)

    @property
    def classes(self) -> list[Any] | None:
        """The model's class labels in output order (classifiers), else None."""
        return getattr(self.model, "classes", None)


def build_task(*, counter: Any, prepared: PreparedData, model: ModelAdapter, device: str,
               X: np.ndarray, targets: np.ndarray | None, output_index: int | None, seed: int,
               on_rows_done: Callable[[int], None] | None = None) -> ExplainTask:
    """The one place a run builds the :class:`ExplainTask` that explainers, selectors and the
    explainers re-run by checks receive, so that every method sees the same fields.

    Args:
        counter: the run's counting model function for ``model`` (``scalar``, ``full``,
            ``tensor`` and ``count``, see ``pipeline.CountingPredict``).
        prepared: the prepared data (background, feature names, encoder, facts).
        model: the model adapter ``counter`` evaluates.
        X, targets: the encoded rows this task covers and their targets (or None).
        output_index: the model output explained (None: a single-output model).
        on_rows_done: progress callback, called with the rows each chunk explained.
    """
    labels = list(model.classes) if model.classes is not None else None
    categories = getattr(prepared.encoder, "categories", {})
    extra = {} if on_rows_done is None else {"on_rows_done": on_rows_done}
    return ExplainTask(
        predict=counter.scalar(output_index),
        X=X,
        background=prepared.background,
        feature_names=prepared.feature_names,
        model=model,
        output_index=output_index,
        output_label=labels[output_index] if labels and output_index is not None else None,
        to_model_input=prepared.encoder.decode,
        targets=targets,
        seed=seed,
        device=device,
        data_type=prepared.facts.get("data_type", "tabular"),
        image_shape=getattr(prepared.encoder, "shape", None),
        predict_tensor=counter.tensor(output_index),
        forward_grad=counter.tensor(output_index, grad=True),
        max_batch_rows=batch_rows(X.shape[1], device),
        count_model_rows=counter.count,
        categorical=tuple(i for i, c in enumerate(prepared.feature_names) if c in categories),
        predict_full=counter.full,
        is_classifier=bool(model.is_classifier),
        **extra,
    )


@dataclass
class Attribution:
    """What an explainer returns.

    ``values`` is ``(n_rows, n_features)`` for local methods and ``None`` for global-only ones;
    ``importance`` defaults to the mean absolute attribution per feature.
    ``outputs`` is the model output in the space the method explains (for example the margin
    of a boosted tree), so that ``values.sum(1) + base_values == outputs`` can be checked.
    """

    values: np.ndarray | None
    base_values: np.ndarray | None = None
    importance: np.ndarray | None = None
    outputs: np.ndarray | None = None
    output_space: str = "model output"
    info: dict[str, Any] = field(default_factory=dict)
    #: ``(n_rows, n_features)`` standard error of each value, for sampled estimators (None for
    #: exact methods): from the estimator's own samples (paired samples or the regression).
    standard_errors: np.ndarray | None = None
    #: ``(n_rows, n_features, n_features)`` pairwise Shapley interaction values (symmetric;
    #: the diagonal holds each feature's main effect), for interaction explainers; the index
    #: (k-SII, Faith-SHAP, ...) is named in ``info["index"]``.
    interactions: np.ndarray | None = None

    def global_importance(self) -> np.ndarray:
        if self.importance is not None:
            return np.asarray(self.importance, dtype=float)
        return np.abs(np.asarray(self.values, dtype=float)).mean(axis=0)


_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NUMERIC_RULE = re.compile(
    rf"^(int|float)(?:\s*(>=|>|<=|<)\s*({_NUMBER})"
    rf"|\s+in\s*([\[(])\s*({_NUMBER})\s*,\s*({_NUMBER})\s*([\])]))?$")
_PLAIN_KINDS = {"None": "None", "str": "a string", "bool": "True or False", "dict": "a dict",
                "list[str]": "a list of names", "any": "any value"}


@dataclass(frozen=True)
class _Alternative:
    """One ``|``-separated alternative of a ``param_types`` rule."""

    kind: str  # int, float, literal or one of _PLAIN_KINDS
    value: Any = None  # the literal
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def accept(self, value: Any) -> tuple[bool, Any]:
        """``(True, normalized value)`` when ``value`` is of this alternative."""
        is_bool = isinstance(value, (bool, np.bool_))
        if self.kind == "literal":
            same = (bool(value) is self.value) if isinstance(self.value, bool) else (
                isinstance(value, str) and value == self.value)
            return (is_bool if isinstance(self.value, bool) else True) and same, self.value
        if self.kind in ("int", "float"):
            if is_bool or not isinstance(value, numbers.Integral if self.kind == "int"
                                         else numbers.Real):
                return False, value
            number = int(value) if self.kind == "int" else float(value)
            if not math.isfinite(number):
                return False, value
            ok = (self.low is None or number > self.low or (not self.low_open
                                                            and number == self.low)) and (
                self.high is None or number < self.high or (not self.high_open
                                                             and number == self.high))
            return ok, number
        if self.kind == "None":
            return value is None, value
        if self.kind == "str":
            return isinstance(value, str), value
        if self.kind == "bool":
            return is_bool, bool(value) if is_bool else value
        if self.kind == "dict":
            return isinstance(value, dict), value
        if self.kind == "list[str]":
            ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            return ok, list(value) if ok else value
        return True, value  # any

    def describe(self) -> str:
        if self.kind == "literal":
            return repr(self.value)
        if self.kind not in ("int", "float"):
            return _PLAIN_KINDS[self.kind]
        noun = "integer" if self.kind == "int" else "number"
        if self.low is not None and self.high is not None:
            return (f"{'an' if noun == 'integer' else 'a'} {noun} in {'(' if self.low_open else '['}"
                    f"{self.low:g}, {self.high:g}{')' if self.high_open else ']'}")
        if self.low == 0 and self.low_open:
            return f"a positive {noun}"
        article = "an" if noun == "integer" else "a"
        if self.low is not None:
            return f"{article} {noun} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{article} {noun} {'<' if self.high_open else '<='} {self.high:g}"
        return f"{article} {noun}"


@functools.cache
def parse_param_type(rule: str) -> tuple[_Alternative, ...]:
    """Read one ``param_types`` rule (see :attr:`Method.param_types`); ValueError if malformed."""
    alternatives = []
    for text in (part.strip() for part in str(rule).split("|")):
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
            alternatives.append(_Alternative("literal", text[1:-1]))
        elif text in ("True", "False"):
            alternatives.append(_Alternative("literal", text == "True"))
        elif text in _PLAIN_KINDS:
            alternatives.append(_Alternative(text))
        elif match := _NUMERIC_RULE.match(text):
            kind, op, bound, left, low, high, right = match.groups()
            if left:
                alternatives.append(_Alternative(kind, low=float(low), high=float(high),
                                                 low_open=left == "(", high_open=right == ")"))
            elif op in (">=", ">"):
                alternatives.append(_Alternative(kind, low=float(bound), low_open=op == ">"))
            elif op:
                alternatives.append(_Alternative(kind, high=float(bound), high_open=op == "<"))
            else:
                alternatives.append(_Alternative(kind))
        else:
            raise ValueError(
                f"cannot read the parameter rule {rule!r} at {text!r}: use alternatives "
                "separated by '|' among int, float (each optionally followed by >= N, > N, "
                "<= N, < N or in [a, b] / (a, b)), 'literal', True, False, None, str, bool, "
                "dict, list[str] and any.")
    return tuple(alternatives)


def describe_param_type(rule: str) -> str:
    """The rule in words: ``"int > 0 | None"`` -> ``"a positive integer or None"``."""
    words = [a.describe() for a in parse_param_type(rule)]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


class Method:
    """Shared by explainers, selectors and checks: a name, a description and parameters."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ("predict",)
    data_types: ClassVar[tuple[str, ...]] = ("tabular",)
    #: Parameters and their defaults; anything else is refused with the list of valid names.
    defaults: ClassVar[dict[str, Any]] = {}
    #: What each parameter accepts, checked by :meth:`validate_params` (merged over the base
    #: classes, so a subclass declares only its own). A rule is a string of alternatives
    #: separated by ``|``: ``int`` (an int or NumPy integer, never a bool or a float) or
    #: ``float`` (any real number but a bool, finite), each optionally bounded by ``>= N``,
    #: ``> N``, ``<= N``, ``< N`` or ``in [a, b]`` (round brackets exclude the end);
    #: ``'text'``, ``True``, ``False`` (that exact value: choices); ``None``, ``str``, ``bool``,
    #: ``dict``, ``list[str]`` or ``any``. Examples: ``"int >= 2"``, ``"float in (0, 1)"``,
    #: ``"int > 0 | None"`` (a positive integer or None), ``"'auto' | 'targets' | 'output'"``.
    #: A value that matches no alternative is refused: "<method>: parameter n_samples must be
    #: an integer >= 2, got 10.5." Parameters without a rule are passed on unchecked.
    param_types: ClassVar[dict[str, str]] = {}

    def __init__(self, **params: Any) -> None:
        # Stored unchanged (scikit-learn convention); validated when the method runs.
        self.params = params

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for param, rule in cls.__dict__.get("param_types", {}).items():
            try:
                parse_param_type(rule)
            except ValueError as exc:  # a mistake of the method's author: say where
                raise TypeError(f"{cls.__qualname__}.param_types[{param!r}]: {exc}") from None

    @classmethod
    def all_param_types(cls) -> dict[str, str]:
        """``param_types`` of this class and its bases (the nearest declaration wins)."""
        merged: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("param_types", {}))
        return merged

    def get_params(self) -> dict[str, Any]:
        return {**self.defaults, **self.params}

    def validate_params(self) -> dict[str, Any]:
        unknown = sorted(set(self.params) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "(none)"
            hints = [
                f"'{k}' (did you mean '{m[0]}'?)"
                for k in unknown
                if (m := difflib.get_close_matches(k, self.defaults, n=1))
            ]
            hint = f" {'; '.join(hints)}." if hints else ""
            raise ConfigError(
                f"unknown parameter(s) {unknown} for method '{self.name}'.{hint} "
                f"Valid parameters: {valid}."
            )
        params = self.get_params()
        for param, rule in self.all_param_types().items():
            if param not in params:
                continue
            for alternative in parse_param_type(rule):
                ok, value = alternative.accept(params[param])
                if ok:
                    params[param] = value
                    break
            else:
                raise ConfigError(f"{self.name}: parameter {param} must be "
                                  f"{describe_param_type(rule)}, got {params[param]!r}.")
        return params

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"


class Explainer(Method):
    """A feature-attribution method.

    Subclasses set ``name`` and the class attributes below and implement
    :meth:`explain_rows` (local methods) or override :meth:`explain` (global-only methods).
    """

    kind: ClassVar[str] = "explainer"
    #: True when attributions are Shapley values, which must satisfy efficiency.
    shapley: ClassVar[bool] = False
    #: False for methods that only produce a global importance (no per-row attributions).
    local: ClassVar[bool] = True
    #: True when the result depends on the random seed.
    stochastic: ClassVar[bool] = True
    #: False for methods that run only when named: ``explain()``'s default "every explainer
    #: that applies" leaves them out (interaction methods: d x d values per row).
    runs_by_default: ClassVar[bool] = True

    def supports(self, task: ExplainTask) -> str | None:
        """Return ``None`` when this method applies to the task, else the reason it does not."""
        if task.data_type not in self.data_types:
            return f"{self.name} explains {'/'.join(self.data_types)} data, not {task.data_type}"
        if "tree" in self.requires and task.tree_kind is None:
            return f"{self.name} needs a tree model (scikit-learn trees, XGBoost or LightGBM)"
        if "gradients" in self.requires and task.forward_grad is None:
            return f"{self.name} needs gradients: a torch nn.Module"
        if "targets" in self.requires and task.targets is None:
            return f"{self.name} needs targets"
        return None

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_features: int,
                             n_background: int) -> float | None:
        """Rows this method will push through the model to explain ``n_rows`` rows with
        ``params`` (validated), for the planner's time budget; ``None`` when it cannot say
        (the planner then times a small pilot run instead). Methods that read the model's
        internals (trees, gradients) return ``None``."""
        return None

    def explain(self, task: ExplainTask) -> Attribution:
        """Explain every row of ``task.X``, a chunk at a time so that progress can be shown."""
        params = self.validate_params()
        parts: list[Attribution] = []
        size = task.chunk_rows or self.rows_per_chunk(task, params)
        for start, stop in chunks(len(task.X), size):
            parts.append(self.explain_rows(task, task.X[start:stop], params))
            task.on_rows_done(stop - start)
        return _concat(parts)

    def rows_per_chunk(self, task: ExplainTask, params: dict[str, Any]) -> int:
        """Rows per :meth:`explain_rows` call when the task does not say. Sampling methods
        already batch many model rows per explained row, so a small chunk keeps the progress
        bar moving at no cost; methods with few model rows per row override this."""
        return DEFAULT_CHUNK_ROWS

    def explain_rows(
        self, task: ExplainTask, X: np.ndarray, params: dict[str, Any]
    ) -> Attribution:
        raise NotImplementedError(f"{type(self).__name__} must implement explain_rows or explain")


@dataclass
class Selection:
    """What a selector returns.

    ``scores`` has one value per feature, larger = more relevant (any scale). ``selected`` holds
    the indices of the chosen subset. ``ranking`` lists feature indices, most relevant first;
    by default the features sorted by decreasing score (ties keep column order). Methods whose
    order is not the score order (recursive elimination, greedy forward selection) set it.
    ``info`` is free-form and goes to ``xai/selection/<name>.json``.
    """

    scores: np.ndarray
    selected: np.ndarray
    ranking: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=float)
        self.selected = np.asarray(self.selected, dtype=int).reshape(-1)
        if self.ranking is None:
            self.ranking = np.argsort(-self.scores, kind="stable")
        self.ranking = np.asarray(self.ranking, dtype=int).reshape(-1)


#: Parameters every selector accepts: the subset rule. ``k`` wins over ``threshold``.
SUBSET_DEFAULTS: dict[str, Any] = {"k": None, "threshold": None}


def choose_subset(scores: np.ndarray, params: dict[str, Any],
                  own: np.ndarray | None = None, ranking: np.ndarray | None = None
                  ) -> np.ndarray:
    """The selected feature indices, by the shared rule.

    ``k`` given: the first ``k`` of ``ranking`` (default: by decreasing score). Else
    ``threshold``: every feature whose score is at least that. Else the method's own subset
    ``own`` when it has one (e.g. non-zero lasso coefficients). Else the features scoring at
    least the mean score (scikit-learn's ``SelectFromModel`` default).
    """
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable") if ranking is None else np.asarray(ranking)
    k, threshold = params.get("k"), params.get("threshold")
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"k must be a positive integer, got {k!r}.")
        return np.sort(order[: min(int(k), len(scores))])
    if threshold is not None:
        return np.flatnonzero(scores >= float(threshold))
    if own is not None:
        return np.sort(np.asarray(own, dtype=int))
    return np.flatnonzero(scores >= scores.mean())


class Selector(Method):
    """A feature-selection method: a score per feature, a ranking and a selected subset.

    Subclasses set ``name``, ``requires`` (``"targets"`` for supervised filters, ``"predict"``
    when they query the model, ``"gradients"`` for torch-trained ones), ``defaults`` (which
    must include :data:`SUBSET_DEFAULTS`) and implement :meth:`select`. They read
    ``task.X`` (encoded float rows), ``task.targets``, ``task.categorical`` (indices of
    categorical columns, integer-coded), ``task.predict`` / ``task.predict_full`` (counted
    model calls), ``task.is_classifier`` and ``task.seed``.
    """

    kind: ClassVar[str] = "selector"
    requires: ClassVar[tuple[str, ...]] = ("targets",)
    #: True when the result depends on the random seed.
    stochastic: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = dict(SUBSET_DEFAULTS)
    #: The subset rule's parameters; subclasses declare only their own (rules are merged).
    param_types: ClassVar[dict[str, str]] = {"k": "int > 0 | None", "threshold": "float | None"}

    def supports(self, task: ExplainTask) -> str | None:
        """Return ``None`` when this selector applies to the task, else the reason it does not."""
        if task.data_type not in self.data_types:
            return f"{self.name} selects among {'/'.join(self.data_types)} features, " \
                   f"not {task.data_type}"
        if "gradients" in self.requires and task.forward_grad is None:
            return f"{self.name} needs gradients: a torch nn.Module"
        if "predict" in self.requires and task.model is None:
            return f"{self.name} needs a model"
        return None

    def select(self, task: ExplainTask) -> Selection:
        raise NotImplementedError(f"{type(self).__name__} must implement select")


@dataclass
class CheckContext:
    """What a check sees: the explained rows, the results, and functions to query the model.

    ``predict_rows(Z)`` evaluates perturbed copies ``Z`` of shape ``(n_rows, k, n_features)``
    (k variants of each explained row) and returns ``(n_rows, k)``: each row's own explained
    output. ``explain(method, X, rows, seed=..., model=...)`` re-runs an explainer that ran,
    with its parameters, on ``X`` (variants of the explained rows ``rows``, e.g. perturbed),
    with another seed or another model (any model :func:`mlflow_xai.explain` accepts, e.g. a
    modified copy of ``torch_module``; it runs where the explained model runs), and returns
    ``(len(X), n_features)`` attributions of each row's explained output. ``model`` is an
    opaque handle on the explained model; read its facts through ``raw_model`` and
    ``torch_module``.
    """

    X: np.ndarray
    background: np.ndarray
    feature_names: list[str]
    results: dict[str, Attribution]
    shapley: dict[str, bool]
    stochastic: dict[str, bool]
    predict_rows: Callable[[np.ndarray], np.ndarray]
    explain: Callable[..., np.ndarray]
    outputs: np.ndarray
    model: Any = None
    seed: int = 0
    data_type: str = "tabular"
    # What the checks that query the model directly (importance_test, flip_test,
    # responsiveness, rashomon) need: the data in its own columns, whatever the explainers'
    # players were (a grouped run's ``X`` holds group presences, not columns).
    #: The explained rows, encoded (floats; a categorical column holds its category codes).
    data_X: np.ndarray | None = None
    #: The background rows, encoded like ``data_X``.
    data_background: np.ndarray | None = None
    #: The columns of ``data_X``.
    data_feature_names: list[str] | None = None
    #: column index (in ``data_X``) -> the category labels a code indexes, categorical columns.
    categories: dict[int, list[Any]] = field(default_factory=dict)
    #: The targets of the explained rows (None without targets).
    targets: np.ndarray | None = None
    #: Encoded rows ``(m, d)`` -> every model output, ``(m,)`` or ``(m, k)`` (probabilities for
    #: classifiers with predict_proba); counted in the check's ``model_evals``.
    predict_full: Callable[[np.ndarray], np.ndarray] | None = None
    #: Another model with the explained model's input (e.g. a refit) -> its ``predict_full``,
    #: counted like the explained model's.
    predict_full_with: Callable[[Any], Callable[[np.ndarray], np.ndarray]] | None = None
    #: Encoded rows -> the model's own input (a DataFrame with the original dtypes, or an
    #: array): what a refit model is trained on.
    to_model_input: Callable[[np.ndarray], Any] = lambda X: X
    #: True for classifiers; ``classes`` are then the labels in output order (when known).
    is_classifier: bool = False
    classes: list[Any] | None = None

    @property
    def local_methods(self) -> list[str]:
        return [m for m, a in self.results.items() if a.values is not None]

    @property
    def standard_errors(self) -> dict[str, np.ndarray]:
        """method -> ``(n_rows, n_features)`` standard error of each value, for the methods
        that report one (sampled estimators); read from ``results``, so it is always theirs."""
        return {m: a.standard_errors for m, a in self.results.items()
                if a.standard_errors is not None}

    @property
    def raw_model(self) -> Any:
        """The explained model object (see :attr:`ExplainTask.raw_model`); None without one."""
        return getattr(self.model, "raw", None)

    @property
    def torch_module(self) -> Any:
        """The explained torch ``nn.Module`` when the model is one, else None."""
        return getattr(self.model, "torch_module", None)


@dataclass
class CheckResult:
    """Figures (name -> number, flat; per-method figures as '<method>/<figure>'), verdicts for
    the figures that have a threshold, a details dict for ``stability.json`` and optional plot
    data. ``status`` is 'ok' or 'skipped' (with ``reason``)."""

    figures: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    reason: str | None = None

    def verdicts(self) -> dict[str, str]:
        out = {}
        for name, bound in self.thresholds.items():
            value = self.figures.get(name)
            if value is None or not np.isfinite(value):
                out[name] = "unknown"
                continue
            ok = ("min" not in bound or value >= bound["min"]) and (
                "max" not in bound or value <= bound["max"])
            out[name] = "pass" if ok else "fail"
        return out


class Check(Method):
    """A check of explanations (stability, faithfulness, sanity): figures with verdicts.

    ``default = True`` checks are cheap and run on every evaluation; the others run when named
    in ``checks=``. ``cost`` says roughly how many model evaluations the check needs.
    """

    kind: ClassVar[str] = "check"
    default: ClassVar[bool] = False
    cost: ClassVar[str] = ""
    #: ``"error"``: a failing verdict makes the run's headline ``failed``; ``"warning"``: only
    #: ``ok with warnings`` (figures about precision, e.g. rankings within sampling error).
    severity: ClassVar[str] = "error"

    def supports(self, ctx: CheckContext) -> str | None:
        return None

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_methods: int,
                             n_features: int | None = None) -> float | None:
        """Model rows this check evaluates on ``n_rows`` explained rows of ``n_features``
        columns with ``n_methods`` local explanations (for the planner's budget); None when it
        cannot say or calls no model."""
        return None

    def run(self, ctx: CheckContext) -> CheckResult:
        raise NotImplementedError(f"{type(self).__name__} must implement run")


def chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    size = max(1, int(size))
    for start in range(0, n, size):
        yield start, min(n, start + size)


def _concat(parts: list[Attribution]) -> Attribution:
    if len(parts) == 1:
        return parts[0]

    def cat(attr: str) -> np.ndarray | None:
        arrays = [getattr(p, attr) for p in parts]
        return None if arrays[0] is None else np.concatenate(arrays, axis=0)

    return Attribution(
        values=cat("values"),
        base_values=cat("base_values"),
        outputs=cat("outputs"),
        output_space=parts[0].output_space,
        info=parts[0].info,
        standard_errors=cat("standard_errors"),
        interactions=cat("interactions"),
    )
