"""The plan: which explainers run, on how many rows and with how many samples, in a time budget.

Two questions, answered before any explainer runs:

* **Which methods** (``explainers="auto"``): exact Tree SHAP when the model, or the final step
  of its scikit-learn Pipeline, is a tree ensemble; Integrated Gradients for a torch module;
  otherwise **one** Shapley estimator: exact enumeration when ``2**d`` coalitions are
  affordable, else Kernel SHAP; plus permutation importance when targets are given. The other
  applicable methods are left out with the reason (other Shapley estimators give the same
  numbers; LIME's surrogate weights are a different quantity and run only when asked).
* **How much** (``budget_s``): the model's cost per row is measured on a small pilot, each
  method's cost comes from its :meth:`~mlflow_xai.base.Explainer.estimated_model_rows` (or a
  timed pilot on a few rows for methods that read trees or gradients), the checks' from theirs;
  then rows, Kernel SHAP samples and, last, background rows are reduced until the work fits
  :data:`WORK_SHARE` of the budget (the rest is kept for loading, plots and upload).

The plan and why each method was chosen or left out is ``summary.json``'s ``plan``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlflow_xai.base import build_task
from mlflow_xai.config import AUTO, XaiConfig, normalize_methods

#: Share of ``budget_s`` planned for explainers and checks; the rest covers data preparation,
#: plots, the report and the upload, which do not shrink with rows.
WORK_SHARE = 0.7
#: Never fewer explained rows than this (or all rows, when there are fewer) unless even the
#: cheapest setting does not fit; the plan then says it was cut.
MIN_ROWS = 20
#: Rows the sizing aims for before it trades samples for rows.
TARGET_ROWS = 200
MIN_BACKGROUND = 20
#: Kernel SHAP sample budgets the sizing tries, largest first.
KERNEL_SAMPLES = (2048, 1024, 512, 256, 128, 64)
#: Rows timed to learn the model's cost per row, and rows a pilot run of an explainer uses.
PILOT_ROWS = 16
#: A method's estimate of its model rows is calibrated by a timed run on the pilot rows when
#: that run is expected to cost at most this share of the budget ...
CALIBRATION_SHARE = 0.03
#: ... else its time is taken as this multiple of the model's time on those rows.
DEFAULT_OVERHEAD = 1.5

_SHAPLEY_ESTIMATORS = ("kernel_shap", "exact_shap", "permutation_shap")
_GRADIENT_DEFAULT = "integrated_gradients"
_IMAGE_DEFAULT = "rise"


@dataclass
class Plan:
    """What :func:`make_plan` decided."""

    methods: dict[str, dict[str, Any]]
    #: Positions (into the prepared rows) to explain; None: all of them.
    rows: np.ndarray | None = None
    #: Positions (into the prepared background) to keep; None: all of it.
    background: np.ndarray | None = None
    record: dict[str, Any] = field(default_factory=dict)


def wants_plan(config: XaiConfig) -> bool:
    return is_auto(config.explainers) or config.budget_s is not None


def is_auto(explainers: Any) -> bool:
    return isinstance(explainers, str) and explainers == AUTO


def requested_methods(config: XaiConfig, registry: Any) -> dict[str, dict[str, Any]] | None:
    """Explicitly requested explainers (name -> params); None for every one ("all") or auto."""
    if isinstance(config.explainers, (list, tuple)) and not config.explainers:
        return {}
    if is_auto(config.explainers):
        return None
    return normalize_methods(config.explainers, valid=registry.names("explainer"),
                             kind="explainer")


def applicability(methods: dict[str, dict[str, Any]], registry: Any, task: Any
                  ) -> dict[str, str | None]:
    """name -> None when the method applies to ``task``, else the reason it does not."""
    out = {}
    for name, params in methods.items():
        explainer = registry.get(name, "explainer").cls(**params)
        try:
            out[name] = explainer.supports(task)
        except Exception as exc:  # a plugin's supports() must not sink the plan
            out[name] = f"supports() raised {type(exc).__name__}: {exc}"
    return out


def choose_auto(registry: Any, task: Any, *, has_targets: bool, image: bool
                ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The default methods for this model and data: (methods, chosen reasons, left out)."""
    everything = {name: {} for name in registry.names("explainer")}
    reasons = applicability(everything, registry, task)
    usable = [n for n, r in reasons.items() if r is None]
    chosen: list[dict[str, Any]] = []

    def take(name: str, why: str) -> None:
        if name in usable and all(c["method"] != name for c in chosen):
            chosen.append({"method": name, "why": why})

    if "tree_shap" in usable:
        pipeline = type(task.raw_model).__name__ == "Pipeline"
        take("tree_shap", "exact Tree SHAP: the model" + (
            "'s Pipeline ends in" if pipeline else " is") + " a tree ensemble; no sampling, "
            "and it reads the trees instead of calling the model")
    elif task.torch_module is not None and _GRADIENT_DEFAULT in usable:
        take(_GRADIENT_DEFAULT, "a torch module: Integrated Gradients uses its gradients "
             "(attributions add up to f(x) - f(baseline))")
    elif image and _IMAGE_DEFAULT in usable:
        take(_IMAGE_DEFAULT, "images and a black-box model: RISE (random masks)")
    elif "kernel_shap" in usable:
        take("kernel_shap", "a black-box model: one Shapley estimator (Kernel SHAP; exact "
             "enumeration instead when 2**d coalitions fit the budget)")
    if has_targets:
        take("permutation_importance", "targets are given: the loss increase when a feature "
             "is shuffled (global, in loss units)")
    if not chosen and usable:  # nothing above applies: the first applicable method
        take(usable[0], "the only kind of method that applies to this model and data")
    picked = {c["method"] for c in chosen}
    left_out = []
    for name, reason in reasons.items():
        if name in picked:
            continue
        if reason is not None:
            left_out.append({"method": name, "why": f"not applicable: {reason}"})
        elif name in _SHAPLEY_ESTIMATORS or name == "tree_shap":
            left_out.append({"method": name, "why": "redundant: another Shapley method gives "
                             "the same values; ask for it by name to compare"})
        elif name == "lime":
            left_out.append({"method": name, "why": "runs only when asked: its surrogate "
                             "weights are a different quantity than Shapley values"})
        else:
            left_out.append({"method": name, "why": "not part of the default plan; ask for "
                             "it by name"})
    return {c["method"]: {} for c in chosen}, chosen, left_out


def seconds_per_model_row(counter: Any, X: np.ndarray, *, max_rows: int = 65536) -> float:
    """Seconds the model takes per row in the large batches explainers send it.

    Per-call overhead (building a DataFrame, dispatch) dominates small batches, so the batch
    grows 8-fold (rows repeated) while a call takes under 50 ms, up to ``max_rows``; the best
    per-row time is kept (floor 10 ns)."""
    rows = X[: max(1, min(len(X), PILOT_ROWS))]
    size, best = 256, float("inf")
    while True:
        batch = np.resize(rows, (size, rows.shape[1]))
        t0 = time.perf_counter()
        counter.full(batch)
        elapsed = time.perf_counter() - t0
        best = min(best, elapsed / size)
        if elapsed > 0.05 or size >= max_rows:
            return max(best, 1e-8)
        size = min(size * 8, max_rows)


@dataclass
class _Costs:
    """Seconds per explained row and fixed seconds of each planned method (and the checks)."""

    per_row: dict[str, float]
    fixed: dict[str, float]

    def rows_that_fit(self, seconds: float, n_rows: int) -> int:
        per_row = sum(self.per_row.values())
        spare = seconds - sum(self.fixed.values())
        return n_rows if per_row <= 0 else int(max(spare, 0.0) // per_row)

    def estimates(self, rows: int) -> dict[str, float]:
        """Estimated seconds of each method (and the checks) on ``rows`` rows."""
        return {name: round(self.fixed.get(name, 0.0) + per_row * rows, 3)
                for name, per_row in self.per_row.items()}


def _model_rows(name: str, params: dict[str, Any], registry: Any, *, n_rows: int,
                n_features: int, n_background: int) -> float | None:
    """The method's own estimate of the model rows it evaluates (None: it cannot say)."""
    explainer = registry.get(name, "explainer").cls(**params)
    try:
        validated = explainer.validate_params()
        rows = explainer.estimated_model_rows(validated, n_rows=n_rows, n_features=n_features,
                                              n_background=n_background)
    except Exception:  # a plugin's estimate must not sink the plan: fall back to a pilot
        return None
    return None if rows is None else float(rows)


@dataclass
class CostModel:
    """Seconds a method will take, from its model-row estimate and the model's measured cost
    per row, or from a timed pilot.

    ``pilot(name, params)`` times a method on up to ``pilot_rows`` rows: (seconds per row,
    fixed seconds). It gives the cost of a method that cannot estimate its model rows, and
    calibrates the estimate of one that can (building masked inputs and solving add to the
    model's own time, several-fold for a cheap model) when the pilot is expected to cost at
    most :data:`CALIBRATION_SHARE` of the budget; else :data:`DEFAULT_OVERHEAD` is assumed.
    """

    registry: Any
    pilot: Any
    n_rows: int
    n_features: int
    n_background: int
    pilot_rows: int
    per_model_row: float
    check_rows_per_row: float
    budget_s: float
    _pilots: dict[str, tuple[float, float]] = field(default_factory=dict)
    _overhead: dict[str, tuple[float, float]] = field(default_factory=dict)

    def costs(self, methods: dict[str, dict[str, Any]], background: int) -> _Costs:
        per_row, fixed = {}, {}
        for name, params in methods.items():
            per_row[name], fixed[name] = self.seconds(name, params, background)
        per_row["checks"] = self.check_rows_per_row * self.per_model_row
        fixed["checks"] = 0.0
        return _Costs(per_row, fixed)

    def seconds(self, name: str, params: dict[str, Any], background: int
                ) -> tuple[float, float]:
        """(seconds per explained row, fixed seconds) of one method."""
        rows = _model_rows(name, params, self.registry, n_rows=self.n_rows,
                           n_features=self.n_features, n_background=background)
        if rows is None:
            return self._piloted(name, params)
        factor, fixed = self._calibration(name, params)
        return rows * self.per_model_row / max(self.n_rows, 1) * factor, fixed

    def _piloted(self, name: str, params: dict[str, Any]) -> tuple[float, float]:
        if name not in self._pilots:  # a pilot runs the method: once per method
            self._pilots[name] = self.pilot(name, params)
        return self._pilots[name]

    def _calibration(self, name: str, params: dict[str, Any]) -> tuple[float, float]:
        """(measured / estimated time per row, fixed seconds), once per method."""
        if name in self._overhead:
            return self._overhead[name]
        # Timed at a fixed, small sample count (adaptive sampling could stop early on a few
        # pilot rows), so that calibrating stays cheap next to the budget.
        trial = dict(params)
        if trial.get("n_samples") == "auto":
            trial["n_samples"] = min(int(trial.get("min_samples") or 128), 128)
        expected = (_model_rows(name, trial, self.registry, n_rows=self.pilot_rows,
                                n_features=self.n_features, n_background=self.n_background)
                    or 0.0) * self.per_model_row
        self._overhead[name] = (DEFAULT_OVERHEAD, 0.0)
        if 0 < expected <= CALIBRATION_SHARE * self.budget_s:
            per_row, fixed = self._piloted(name, trial)  # two sizes: per-row vs set-up
            if per_row > 0:
                factor = min(max(per_row * self.pilot_rows / expected, 1.0), 50.0)
                self._overhead[name] = (factor, fixed)
        return self._overhead[name]


@dataclass
class Sizing:
    """What :func:`size_to_budget` chose."""

    methods: dict[str, dict[str, Any]]
    rows: int
    background: int
    estimated_s: dict[str, float]
    cut: bool  # even the cheapest setting fitted fewer than MIN_ROWS rows


def size_to_budget(methods: dict[str, dict[str, Any]], model: CostModel, *, auto: bool
                   ) -> Sizing:
    """Rows, background rows and Kernel SHAP samples that fit :data:`WORK_SHARE` of the
    budget: exact enumeration when it fits :data:`TARGET_ROWS` rows (auto plans), else the
    largest Kernel SHAP sample cap that does, then as many rows as fit; background rows are
    halved (down to :data:`MIN_BACKGROUND`) only when fewer than :data:`MIN_ROWS` fit."""
    work = model.budget_s * WORK_SHARE
    n_rows, n_features = model.n_rows, model.n_features
    methods = {n: dict(p) for n, p in methods.items()}
    background = model.n_background
    goal = min(n_rows, TARGET_ROWS)
    sizable = auto and "kernel_shap" in methods and "n_samples" not in methods["kernel_shap"]
    if sizable and 2 ** n_features - 2 <= KERNEL_SAMPLES[0]:
        # Every coalition fits the largest sample cap: enumerate when that still fits.
        others = {n: p for n, p in methods.items() if n != "kernel_shap"}
        exact = {"exact_shap": {}, **others}
        costs = model.costs(exact, background)
        fit = costs.rows_that_fit(work, n_rows)
        if fit >= goal:
            rows = min(n_rows, fit)
            return Sizing(exact, rows, background, costs.estimates(rows), False)
    caps = [s for s in KERNEL_SAMPLES if s < 2 ** n_features - 2] if sizable else []
    for cap in caps:
        # Adaptive: rounds from min_samples, doubling, stop once the standard errors are
        # within 5 % of each row's attributions; max_samples bounds the cost planned.
        methods["kernel_shap"].update(n_samples="auto", max_samples=cap,
                                      min_samples=min(128, cap))
        if model.costs(methods, background).rows_that_fit(work, n_rows) >= goal:
            break
    costs = model.costs(methods, background)
    while costs.rows_that_fit(work, n_rows) < min(n_rows, MIN_ROWS) and \
            background > MIN_BACKGROUND:
        background = max(MIN_BACKGROUND, background // 2)
        costs = model.costs(methods, background)
    fit = costs.rows_that_fit(work, n_rows)
    rows = max(min(n_rows, fit), min(n_rows, 5))
    return Sizing(methods, rows, background, costs.estimates(rows),
                  cut=fit < min(n_rows, MIN_ROWS))


def make_plan(*, config: XaiConfig, registry: Any, prepared: Any, adapter: Any, counter: Any,
              device: str, output_index: int | None, check_rows_per_row: float) -> Plan:
    """Choose methods (``explainers="auto"``) and size them to ``config.budget_s``."""
    n, d = prepared.X.shape
    rng = np.random.default_rng(config.seed)
    pilot_pos = np.sort(rng.choice(n, size=min(n, PILOT_ROWS), replace=False))
    task = build_task(counter=counter, prepared=prepared, model=adapter, device=device,
                      X=prepared.X[pilot_pos], output_index=output_index, seed=config.seed,
                      targets=prepared.targets[pilot_pos] if prepared.targets is not None
                      else None)
    auto = is_auto(config.explainers)
    image = prepared.facts.get("data_type") == "image"
    if auto:
        methods, chosen, left_out = choose_auto(registry, task,
                                                has_targets=prepared.targets is not None,
                                                image=image)
    else:
        methods = requested_methods(config, registry)
        if methods is None:
            methods = {name: {} for name in registry.names("explainer")}
        chosen = [{"method": m, "why": "requested"} for m in methods]
        left_out = []
    record: dict[str, Any] = {"mode": "auto" if auto else "requested",
                              "budget_s": config.budget_s, "rows_available": int(n)}
    plan = Plan(methods=methods, record=record)
    if config.budget_s is None or not methods:
        record.update(rows=int(n), chosen=_with_params(chosen, methods), left_out=left_out,
                      cut=False)
        return plan

    per_model_row = seconds_per_model_row(counter, prepared.X[pilot_pos])

    def pilot(name: str, params: dict[str, Any]) -> tuple[float, float]:
        """Time the method on a quarter of the pilot rows, then on all of them: (seconds per
        row, fixed seconds). Two sizes separate set-up (building a TreeExplainer, ...) from
        the cost that grows with rows."""
        explainer = registry.get(name, "explainer").cls(**params)
        if explainer.supports(task):
            return 0.0, 0.0
        small = max(1, len(pilot_pos) // 4)
        try:
            t_small = _timed(explainer, dataclasses.replace(task, X=task.X[:small]))
            t_all = _timed(explainer, task)
        except Exception:  # it will fail again, recorded, when it runs for real
            return 0.0, 0.0
        if len(pilot_pos) <= small:
            return t_all / small, 0.0
        per_row = max((t_all - t_small) / (len(pilot_pos) - small), 0.05 * t_all / len(pilot_pos))
        return per_row, max(t_small - small * per_row, 0.0)

    applicable = {m: p for m, p in methods.items()
                  if applicability({m: p}, registry, task)[m] is None}
    cost_model = CostModel(registry=registry, pilot=pilot, n_rows=n, n_features=d,
                           n_background=len(prepared.background), pilot_rows=len(pilot_pos),
                           per_model_row=per_model_row, check_rows_per_row=check_rows_per_row,
                           budget_s=float(config.budget_s))
    sizing = size_to_budget(applicable, cost_model, auto=auto)
    sized, rows, background, cut = sizing.methods, sizing.rows, sizing.background, sizing.cut
    if auto:  # exact_shap may have replaced kernel_shap
        for c in chosen:
            if c["method"] == "kernel_shap" and "exact_shap" in sized:
                c["method"] = "exact_shap"
                c["why"] = (f"a black-box model with {d} features: all 2**{d} coalitions fit "
                            "the budget, so Shapley values are computed exactly")
        left_out = [x for x in left_out if x["method"] not in sized]
        if "exact_shap" in sized:
            left_out.append({"method": "kernel_shap", "why": "redundant: exact_shap computes "
                             "the same values exactly"})
    plan.methods = {**sized, **{m: p for m, p in methods.items() if m not in applicable}}
    if rows < n:
        plan.rows = np.sort(rng.choice(n, size=rows, replace=False))
    if background < len(prepared.background):
        plan.background = np.sort(rng.choice(len(prepared.background), size=background,
                                             replace=False))
    record.update(rows=int(rows), background_rows=int(background),
                  seconds_per_model_row=float(f"{per_model_row:.3g}"),
                  estimated_s=sizing.estimated_s,
                  chosen=_with_params(chosen, plan.methods), left_out=left_out, cut=bool(cut))
    return plan


def _timed(explainer: Any, task: Any) -> float:
    t0 = time.perf_counter()
    explainer.explain(task)
    return time.perf_counter() - t0


def _with_params(chosen: list[dict[str, Any]], methods: dict[str, dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    return [{**c, "params": dict(methods.get(c["method"], {}))} for c in chosen]
