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

* **Wide data** (the black-box Shapley estimator of an auto plan): Kernel SHAP's regression
  cannot identify d values from fewer than 2 d coalitions, is inaccurate near that bound, and
  its solve grows as d**3 (10,000 features, 16 coalitions: 562 s in the solve, values
  unidentified). So with more than :data:`WIDE_FEATURES` features, or when the largest sample
  cap that fits the budget gives Kernel SHAP fewer than :data:`MIN_COALITIONS_PER_PLAYER`
  coalitions per feature, the plan explains correlation groups of columns
  (``feature_groups="auto"``, at most ``max_groups``; see :mod:`mlflow_xai.groups`): the game
  then has as many players as groups, whatever the number of columns. Over the groups it uses
  Kernel SHAP up to :data:`KERNEL_MAX_GROUPS` groups and Permutation SHAP above (the more
  accurate at equal budget there, measured). Where grouping is turned off
  (``feature_groups=False``) or cannot help (no more columns than ``max_groups``),
  Permutation SHAP over single columns is the fallback: each permutation costs d - 1
  coalitions and no solve, its estimate is unbiased with any number of permutations and adds
  up exactly, and its standard errors say how noisy it is. ``plan["wide_data"]`` says why.

The plan and why each method was chosen or left out is ``summary.json``'s ``plan``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlflow_xai import groups as grouping
from mlflow_xai.base import build_task
from mlflow_xai.config import AUTO, XaiConfig, normalize_methods
from mlflow_xai.groups import FeatureGroups

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

#: More features than this is wide data: an auto plan explains correlation groups of columns
#: (``feature_groups="auto"``) instead of single columns (see the module docstring).
WIDE_FEATURES = 200
#: An auto plan keeps Kernel SHAP only with at least this many coalitions per player. Its
#: least-squares system has M - 1 free unknowns under the efficiency constraint: below 2 per
#: player it cannot identify the values (kernel_shap raises such budgets to 2 x M itself), and
#: at 2 per player it identifies them without estimating them (measured on 2,000 columns,
#: benchmarks/bench_wide.py: over 64 groups, mean errors 0.8x and 6x the values' mean size,
#: 15-18x Permutation SHAP's at the same budget; over 2,000 single columns 5.9x); at 4 per
#: player its error was within 2.3x of Permutation SHAP's. Below it the plan groups the
#: columns or falls back to Permutation SHAP.
MIN_COALITIONS_PER_PLAYER = 4
#: Over more groups than this an auto plan explains them with Permutation SHAP rather than
#: Kernel SHAP. Measured (bench_wide.py, 2,000 columns, a linear + tanh model and an MLP,
#: 128 to 2,048 coalitions per row): Kernel SHAP's error / Permutation SHAP's was 0.0-1.6
#: over 16 groups (mostly below 1), 0.7-1.4 over 32, but 1.1-2.3 over 64 at 256-1,024
#: coalitions (1.0-1.5 at 2,048, 15-18 at 128).
KERNEL_MAX_GROUPS = 32

_SHAPLEY_ESTIMATORS = ("kernel_shap", "exact_shap", "permutation_shap")
#: The estimators whose sample budget an auto plan sizes (same unit: model calls per explained
#: row per background row).
_SIZED_ESTIMATORS = ("kernel_shap", "permutation_shap")
_GRADIENT_DEFAULT = "integrated_gradients"
_IMAGE_DEFAULT = "rise"


@dataclass
class Plan:
    """What :func:`make_plan` decided."""

    methods: dict[str, dict[str, Any]]
    #: The groups of columns explained as players (the user's, or chosen for wide data);
    #: None: single columns.
    groups: FeatureGroups | None = None
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


def applicability(methods: dict[str, dict[str, Any]], registry: Any, task: Any,
                  groups: FeatureGroups | None = None) -> dict[str, str | None]:
    """name -> None when the method applies to ``task`` (over ``groups`` when given), else
    the reason it does not."""
    out = {}
    for name, params in methods.items():
        explainer = registry.get(name, "explainer").cls(**params)
        try:
            out[name] = explainer.supports(grouping.task_for(explainer, task, groups))
        except Exception as exc:  # a plugin's supports() must not sink the plan
            out[name] = f"supports() raised {type(exc).__name__}: {exc}"
    return out


def choose_auto(registry: Any, task: Any, *, has_targets: bool, image: bool,
                groups: FeatureGroups | None = None
                ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The default methods for this model and data: (methods, chosen reasons, left out)."""
    everything = {name: {} for name in registry.names("explainer")}
    reasons = applicability(everything, registry, task, groups)
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
    elif "permutation_shap" in usable and not image:
        take("permutation_shap", "a black-box model: one Shapley estimator (Permutation "
             f"SHAP; kernel_shap does not apply: {reasons.get('kernel_shap')})")
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


def seconds_per_built_row(n_features: int, device: str) -> float:
    """Seconds to build one masked input row of ``n_features`` columns (a coalition's mix of
    a row and a background row, what the batched engine writes before every model call).

    Next to a cheap model on wide data this dominates: 2,000 columns are 16 kB written per
    model row, 5 to 10 us on a CPU where a linear model's predict takes 0.5 us. Timed as
    NumPy's ``where`` on at most ~4 M values, which costs about what the engine's masked
    copy does on a CPU (a GPU builds rows much faster: 0 there)."""
    if device.startswith(("cuda", "mps")):
        return 0.0
    rows = max(16, min(2048, 4_000_000 // max(1, n_features)))
    rng = np.random.default_rng(0)
    mask = rng.random((rows, n_features)) < 0.5
    x = rng.random(n_features)
    background = rng.random((rows, n_features))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        np.where(mask, x, background)
        best = min(best, time.perf_counter() - t0)
    return best / rows


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

    With groups of columns, a method that explains groups itself is costed for ``players``
    (the groups) instead of ``n_features``: its coalitions are over the groups.
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
    groups: FeatureGroups | None = None
    #: Seconds to build one masked model row (see :func:`seconds_per_built_row`); measured,
    #: so the uncalibrated overhead multiplies only the model's own time.
    per_built_row: float = 0.0
    _pilots: dict[str, tuple[float, float]] = field(default_factory=dict)
    _overhead: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @property
    def players(self) -> int:
        """The players of the Shapley estimators: the groups, or the features."""
        return self.n_features if self.groups is None else self.groups.n_groups

    def width(self, name: str) -> int:
        """The number of players ``name`` draws coalitions over."""
        if self.groups is not None and \
                grouping.explains_groups(self.registry.get(name, "explainer").cls):
            return self.groups.n_groups
        return self.n_features

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
                           n_features=self.width(name), n_background=background)
        if rows is None:
            return self._piloted(name, params)
        model_factor, built_factor, fixed = self._calibration(name, params)
        per_row = self.per_model_row * model_factor + self.per_built_row * built_factor
        return rows * per_row / max(self.n_rows, 1), fixed

    def _piloted(self, name: str, params: dict[str, Any]) -> tuple[float, float]:
        if name not in self._pilots:  # a pilot runs the method: once per method
            self._pilots[name] = self.pilot(name, params)
        return self._pilots[name]

    def _calibration(self, name: str, params: dict[str, Any]) -> tuple[float, float, float]:
        """(factor on the model's time, factor on building rows, fixed seconds), once per
        method: measured / estimated when calibrated, else (DEFAULT_OVERHEAD, 1, 0)."""
        if name in self._overhead:
            return self._overhead[name]
        # Timed at a fixed, small sample count (adaptive sampling could stop early on a few
        # pilot rows), so that calibrating stays cheap next to the budget.
        trial = dict(params)
        if trial.get("n_samples") == "auto":
            trial["n_samples"] = min(int(trial.get("min_samples") or 128), 128)
        expected = (_model_rows(name, trial, self.registry, n_rows=self.pilot_rows,
                                n_features=self.width(name), n_background=self.n_background)
                    or 0.0) * (self.per_model_row + self.per_built_row)
        self._overhead[name] = (DEFAULT_OVERHEAD, 1.0, 0.0)
        if 0 < expected <= CALIBRATION_SHARE * self.budget_s:
            per_row, fixed = self._piloted(name, trial)  # two sizes: per-row vs set-up
            if per_row > 0:
                factor = min(max(per_row * self.pilot_rows / expected, 1.0), 50.0)
                self._overhead[name] = (factor, factor, fixed)
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
    """Rows, background rows and Shapley samples that fit :data:`WORK_SHARE` of the
    budget: exact enumeration when it fits :data:`TARGET_ROWS` rows (auto plans), else the
    largest sample cap of the auto plan's estimator (Kernel or Permutation SHAP) that does,
    then as many rows as fit; background rows are halved (down to :data:`MIN_BACKGROUND`) only
    when fewer than :data:`MIN_ROWS` fit. The estimator's players are the groups of columns
    when the plan has groups (``model.players``)."""
    work = model.budget_s * WORK_SHARE
    n_rows, players = model.n_rows, model.players
    methods = {n: dict(p) for n, p in methods.items()}
    background = model.n_background
    goal = min(n_rows, TARGET_ROWS)
    estimator = sized_estimator(methods) if auto else None
    coalitions = 2 ** players - 2 if players < 64 else float("inf")
    if estimator and coalitions <= KERNEL_SAMPLES[0]:
        # Every coalition fits the largest sample cap: enumerate when that still fits.
        others = {n: p for n, p in methods.items() if n != estimator}
        exact = {"exact_shap": {}, **others}
        costs = model.costs(exact, background)
        fit = costs.rows_that_fit(work, n_rows)
        if fit >= goal:
            rows = min(n_rows, fit)
            return Sizing(exact, rows, background, costs.estimates(rows), False)
    caps = [s for s in KERNEL_SAMPLES if s < coalitions] if estimator else []
    previous = None
    for cap in caps:
        # Adaptive: rounds from min_samples, doubling, stop once the standard errors are
        # within 5 % of each row's attributions; max_samples bounds the cost planned.
        trial = {**methods[estimator], "n_samples": "auto", "max_samples": cap,
                 "min_samples": min(128, cap)}
        costs = model.costs({**methods, estimator: trial}, background)
        per_row = costs.per_row.get(estimator, 0.0)
        if previous is not None and per_row >= previous:
            break  # a lower cap saves nothing (one permutation already costs more)
        methods[estimator], previous = trial, per_row
        if costs.rows_that_fit(work, n_rows) >= goal:
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


def sized_estimator(methods: dict[str, dict[str, Any]]) -> str | None:
    """The Shapley estimator whose samples an auto plan sizes (its n_samples not given)."""
    for name in _SIZED_ESTIMATORS:
        if name in methods and "n_samples" not in methods[name]:
            return name
    return None


def identifies(sizing: Sizing, players: int) -> bool:
    """False when the plan's Kernel SHAP gets fewer coalitions per row than
    :data:`MIN_COALITIONS_PER_PLAYER` x ``players``: its regression then cannot identify, or
    barely identifies, the values (and on wide data its solve alone would take minutes)."""
    params = sizing.methods.get("kernel_shap")
    if params is None:
        return True
    cap = params.get("max_samples") if params.get("n_samples") == "auto" \
        else params.get("n_samples", 1024)
    try:
        cap = int(cap)
    except (TypeError, ValueError):
        return True
    return enough_coalitions(cap, players)


def enough_coalitions(samples: int, players: int) -> bool:
    """``samples`` coalitions per row are at least :data:`MIN_COALITIONS_PER_PLAYER` per
    player, or every coalition there is."""
    return samples >= min(MIN_COALITIONS_PER_PLAYER * players, 2 ** min(players, 62) - 2)


def make_plan(*, config: XaiConfig, registry: Any, prepared: Any, adapter: Any, counter: Any,
              device: str, output_index: int | None, check_rows_per_row: float,
              groups: FeatureGroups | None = None) -> Plan:
    """Choose methods (``explainers="auto"``) and size them to ``config.budget_s``.

    ``groups``: the groups of columns the user asked for (``feature_groups=``), if any; an
    auto plan may choose groups itself on wide data (``plan.groups``, see the module
    docstring)."""
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
                                                image=image, groups=groups)
    else:
        methods = requested_methods(config, registry)
        if methods is None:
            methods = {name: {} for name in registry.names("explainer")
                       if getattr(registry.get(name).cls, "runs_by_default", True)}
        chosen = [{"method": m, "why": "requested"} for m in methods]
        left_out = []
    record: dict[str, Any] = {"mode": "auto" if auto else "requested",
                              "budget_s": config.budget_s, "rows_available": int(n)}
    plan = Plan(methods=methods, record=record, groups=groups)
    wide = _WidePlan(plan=plan, chosen=chosen, left_out=left_out, registry=registry,
                     config=config, prepared=prepared, n_features=d,
                     reason_of=lambda name: applicability({name: {}}, registry, task,
                                                          plan.groups)[name],
                     active=auto and not image)
    if groups is not None:
        wide.note_groups(groups, "given by feature_groups=" if groups.how == "given" else
                         "feature_groups='auto': correlation clusters of the columns")
    elif wide.active and d > WIDE_FEATURES:
        wide.widen(f"{d} features, more than {WIDE_FEATURES} (wide data)")
    if config.budget_s is None or not plan.methods:
        if wide.active and not wide.identified(_default_samples(plan.methods, registry)):
            wide.widen(f"kernel_shap's {_default_samples(plan.methods, registry)} "
                       f"coalitions per row are fewer than {MIN_COALITIONS_PER_PLAYER} per "
                       f"value for {wide.players} values")
        record.update(rows=int(n), chosen=_with_params(chosen, plan.methods),
                      left_out=wide.left_out, cut=False)
        wide.finish()
        return plan

    per_model_row = seconds_per_model_row(counter, prepared.X[pilot_pos])
    # Building each masked row: on wide data it costs more than a cheap model's predict.
    per_built_row = seconds_per_built_row(d, device)

    def pilot(name: str, params: dict[str, Any]) -> tuple[float, float]:
        """Time the method on a quarter of the pilot rows, then on all of them: (seconds per
        row, fixed seconds). Two sizes separate set-up (building a TreeExplainer, ...) from
        the cost that grows with rows."""
        explainer = registry.get(name, "explainer").cls(**params)
        if explainer.supports(grouping.task_for(explainer, task, plan.groups)):
            return 0.0, 0.0
        small = max(1, len(pilot_pos) // 4)
        try:
            # A first call pays one-time costs (importing torch: seconds) that would be
            # read as the method's set-up cost: run it once on one row, untimed.
            _timed(explainer, dataclasses.replace(task, X=task.X[:1]), plan.groups)
            t_small = _timed(explainer, dataclasses.replace(task, X=task.X[:small]),
                             plan.groups)
            t_all = _timed(explainer, task, plan.groups)
        except Exception:  # it will fail again, recorded, when it runs for real
            return 0.0, 0.0
        if len(pilot_pos) <= small:
            return t_all / small, 0.0
        per_row = max((t_all - t_small) / (len(pilot_pos) - small), 0.05 * t_all / len(pilot_pos))
        return per_row, max(t_small - small * per_row, 0.0)

    def size() -> tuple[dict[str, dict[str, Any]], Sizing]:
        applicable = {m: p for m, p in plan.methods.items()
                      if applicability({m: p}, registry, task, plan.groups)[m] is None}
        cost_model = CostModel(registry=registry, pilot=pilot, n_rows=n, n_features=d,
                               n_background=len(prepared.background),
                               pilot_rows=len(pilot_pos), per_model_row=per_model_row,
                               check_rows_per_row=check_rows_per_row,
                               budget_s=float(config.budget_s), groups=plan.groups,
                               per_built_row=per_built_row)
        return applicable, size_to_budget(applicable, cost_model, auto=auto)

    applicable, sizing = size()
    for _ in range(2):  # group the columns, then (if still needed) Permutation SHAP
        if not wide.active or identifies(sizing, wide.players):
            break
        cap = sizing.methods["kernel_shap"].get("max_samples",
                                                sizing.methods["kernel_shap"].get("n_samples"))
        wide.widen(f"the largest kernel_shap sample cap that fits the budget ({cap} "
                   f"coalitions per row) is under {MIN_COALITIONS_PER_PLAYER} per value for "
                   f"{wide.players} values")
        applicable, sizing = size()
    sized, rows, background, cut = sizing.methods, sizing.rows, sizing.background, sizing.cut
    left_out = wide.left_out
    if auto:  # exact_shap may have replaced the sampled estimator
        for c in chosen:
            if c["method"] in _SIZED_ESTIMATORS and "exact_shap" in sized and \
                    c["method"] not in sized:
                replaced = c["method"]
                players = f"{wide.players} groups of columns" if plan.groups is not None \
                    else f"{d} features"
                c["method"] = "exact_shap"
                c["why"] = (f"a black-box model with {players}: all 2**{wide.players} "
                            "coalitions fit the budget, so Shapley values are computed exactly")
                left_out = [x for x in left_out if x["method"] != replaced]
                left_out.append({"method": replaced, "why": "redundant: exact_shap computes "
                                 "the same values exactly"})
        left_out = [x for x in left_out if x["method"] not in sized]
    plan.methods = {**sized, **{m: p for m, p in plan.methods.items() if m not in applicable}}
    if rows < n:
        plan.rows = np.sort(rng.choice(n, size=rows, replace=False))
    if background < len(prepared.background):
        plan.background = np.sort(rng.choice(len(prepared.background), size=background,
                                             replace=False))
    record.update(rows=int(rows), background_rows=int(background),
                  seconds_per_model_row=float(f"{per_model_row:.3g}"),
                  seconds_per_built_row=float(f"{per_built_row:.3g}"),
                  estimated_s=sizing.estimated_s,
                  chosen=_with_params(chosen, plan.methods), left_out=left_out, cut=bool(cut))
    wide.finish()
    return plan


@dataclass
class _WidePlan:
    """The wide-data decisions of an auto plan whose Shapley estimator samples (Kernel or
    Permutation SHAP): group the columns (``feature_groups="auto"``), or fall back from
    Kernel to Permutation SHAP; each decision is written into ``chosen`` / ``left_out``,
    ``record["feature_groups"]`` and ``record["wide_data"]``."""

    plan: Plan
    chosen: list[dict[str, Any]]
    left_out: list[dict[str, Any]]
    registry: Any
    config: XaiConfig
    prepared: Any
    n_features: int
    #: name -> None when that explainer applies to the data (over the plan's groups, if
    #: any), else the reason it does not.
    reason_of: Any
    #: False: not an auto plan with a black-box Shapley estimator (nothing to decide).
    active: bool = False
    reasons: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.active = self.active and self.estimator() is not None

    def estimator(self) -> str | None:
        """The plan's sampling Shapley estimator."""
        return next((n for n in _SIZED_ESTIMATORS if n in self.plan.methods), None)

    @property
    def players(self) -> int:
        return self.n_features if self.plan.groups is None else self.plan.groups.n_groups

    def identified(self, samples: int | None) -> bool:
        """Kernel SHAP with ``samples`` coalitions per row gets enough per player."""
        if "kernel_shap" not in self.plan.methods or samples is None:
            return True
        return enough_coalitions(samples, self.players)

    def can_group(self) -> bool:
        """Grouping is allowed (not ``feature_groups=False``), not done yet, and would give
        fewer players than columns."""
        return (self.plan.groups is None and self.config.feature_groups is not False
                and self.n_features > self.config.max_groups)

    def widen(self, reason: str) -> None:
        """Single-column Kernel SHAP will not do (``reason``): group the columns when
        allowed, else (or when Kernel SHAP cannot explain the groups well) Permutation SHAP."""
        self.reasons.append(reason)
        if self.can_group():
            groups = grouping.for_data(grouping.AUTO, self.prepared,
                                       max_groups=self.config.max_groups)
            self.note_groups(groups, f"{reason}: per-column Kernel SHAP cannot estimate the "
                             "values from an affordable budget (and its solve grows as "
                             f"d**3), so the plan explains {groups.n_groups} correlation "
                             "groups of columns (feature_groups='auto')")
            return
        if self.estimator() == "kernel_shap":
            why = "grouping is turned off (feature_groups=False)" \
                if self.config.feature_groups is False and self.plan.groups is None else (
                    f"grouping cannot give fewer players than the {self.players} columns "
                    f"(max_groups={self.config.max_groups})" if self.plan.groups is None else
                    f"even over {self.players} groups kernel_shap's budget cannot identify "
                    "the values")
            self._use("permutation_shap",
                      f"{reason}; {why}: Permutation SHAP instead (each permutation costs one "
                      "model call per player and no solve; unbiased with any number of "
                      "permutations, exact efficiency, standard errors from its pairs)")

    def note_groups(self, groups: FeatureGroups, why: str) -> None:
        """Explain over ``groups``: the plan's estimator becomes one that explains groups
        itself (Kernel SHAP when it does, else Permutation SHAP)."""
        self.plan.groups = groups
        self.plan.record["feature_groups"] = {"how": groups.how, "groups": groups.n_groups,
                                              "columns": len(groups.columns), "why": why}
        if not self.active:
            return
        players = f"{groups.n_groups} groups of {len(groups.columns)} columns"
        kernel = self.registry.get("kernel_shap", "explainer").cls \
            if "kernel_shap" in self.registry.names("explainer") else None
        # Left out as not applicable to the columns: say whether they apply to the groups.
        for entry in self.left_out:
            if entry["why"].startswith("not applicable"):
                reason = self.reason_of(entry["method"])
                entry["why"] = f"not applicable: {reason}" if reason else (
                    "applies to the groups, but not part of the default plan")
        if kernel is None or not grouping.explains_groups(kernel) or \
                self.reason_of("kernel_shap") is not None:
            self._use("permutation_shap", f"a black-box model: Permutation SHAP over "
                      f"{players} ({why}); kernel_shap does not explain these groups")
        elif groups.n_groups > KERNEL_MAX_GROUPS:
            self._use("permutation_shap", f"a black-box model: Permutation SHAP over "
                      f"{players} ({why}); over more than {KERNEL_MAX_GROUPS} groups its "
                      "error is lower than Kernel SHAP's at equal budget (measured)")
        else:
            self._use("kernel_shap", f"a black-box model: Kernel SHAP over {players} ({why})")

    def _use(self, new: str, why: str) -> None:
        """Make ``new`` the plan's estimator (its parameters reset when it replaces another)."""
        old = self.estimator()
        if old is None or new not in self.registry.names("explainer"):
            return
        self.plan.methods = {(new if m == old else m): (p if m == new else {} if m == old
                                                        else p)
                             for m, p in self.plan.methods.items()}
        for c in self.chosen:
            if c["method"] == old:
                c["method"], c["why"] = new, why
        self.left_out = [x for x in self.left_out if x["method"] not in (old, new)]
        if old != new:
            self.left_out.append({"method": old, "why": f"not used: {why}"})

    def finish(self) -> None:
        """Record why the plan left single-column Kernel SHAP (``record["wide_data"]``)."""
        if self.reasons:
            self.plan.record["wide_data"] = {"features": self.n_features,
                                             "players": self.players,
                                             "reasons": list(self.reasons)}


def _default_samples(methods: dict[str, dict[str, Any]], registry: Any) -> int | None:
    """Kernel SHAP's coalitions per row as planned without a budget (its n_samples)."""
    if "kernel_shap" not in methods:
        return None
    cls = registry.get("kernel_shap", "explainer").cls
    value = {**cls.defaults, **methods["kernel_shap"]}.get("n_samples")
    if value == "auto":
        value = {**cls.defaults, **methods["kernel_shap"]}.get("max_samples")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _timed(explainer: Any, task: Any, groups: FeatureGroups | None = None) -> float:
    t0 = time.perf_counter()
    grouping.explain(explainer, task, groups)
    return time.perf_counter() - t0


def _with_params(chosen: list[dict[str, Any]], methods: dict[str, dict[str, Any]]
                 ) -> list[dict[str, Any]]:
    return [{**c, "params": dict(methods.get(c["method"], {}))} for c in chosen]
