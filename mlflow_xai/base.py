"""Base classes for the three kinds of method, and the objects passed between them.

A method pack subclasses :class:`Explainer` (or :class:`Selector`, :class:`Check`), sets a few
class attributes that describe what it needs, and writes one small method. The base class does
the shared work: parameter validation, chunking rows for the progress bar, shape checks.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mlflow_xai.errors import ConfigError

if TYPE_CHECKING:
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

    def global_importance(self) -> np.ndarray:
        if self.importance is not None:
            return np.asarray(self.importance, dtype=float)
        return np.abs(np.asarray(self.values, dtype=float)).mean(axis=0)


class Method:
    """Shared by explainers, selectors and checks: a name, a description and parameters."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = ""
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ("predict",)
    data_types: ClassVar[tuple[str, ...]] = ("tabular",)
    #: Parameters and their defaults; anything else is refused with the list of valid names.
    defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, **params: Any) -> None:
        # Stored unchanged (scikit-learn convention); validated when the method runs.
        self.params = params

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
        return self.get_params()

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

    def supports(self, task: ExplainTask) -> str | None:
        """Return ``None`` when this method applies to the task, else the reason it does not."""
        if task.data_type not in self.data_types:
            return f"{self.name} explains {'/'.join(self.data_types)} data, not {task.data_type}"
        if "tree" in self.requires and (task.model is None or task.model.tree_kind is None):
            return f"{self.name} needs a tree model (scikit-learn trees, XGBoost or LightGBM)"
        if "gradients" in self.requires and task.forward_grad is None:
            return f"{self.name} needs gradients: a torch nn.Module"
        if "targets" in self.requires and task.targets is None:
            return f"{self.name} needs targets"
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
    with another seed or another model (a ``ModelAdapter``), and returns ``(len(X), n_features)``
    attributions of each row's explained output.
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

    @property
    def local_methods(self) -> list[str]:
        return [m for m, a in self.results.items() if a.values is not None]


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

    def supports(self, ctx: CheckContext) -> str | None:
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
    )
