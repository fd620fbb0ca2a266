"""The options shared by every entrance (``explain``, the evaluator, ``autolog``, the CLI)."""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any

from mlflow_xai.errors import ConfigError


@dataclass
class XaiConfig:
    """Validated options. Field names are the keyword arguments of :func:`mlflow_xai.explain`."""

    targets: Any = None
    explainers: list[str] | dict[str, dict[str, Any] | None] | None = None
    checks: list[str] | dict[str, dict[str, Any] | None] | None = None
    selectors: list[str] | dict[str, dict[str, Any] | None] | None = None
    policy: Any = None
    background: Any = None
    background_rows: int = 100
    max_rows: int = 1000
    device: str = "auto"
    seed: int = 0
    output: Any = None
    strict: bool = True
    progress: bool | None = None
    model_type: str | None = None
    selection_rows: int = 10_000
    selection_bootstrap: int = 5
    retrain: Any = None
    timeout: float | None = None
    #: Seconds of explanation work (explainers and checks) to plan for; None: no limit. The
    #: planner sizes rows and samples to it (see :mod:`mlflow_xai.planner`).
    budget_s: float | None = None
    #: ``"headline"``: at most 30 ``xai.*`` metrics (see ``artifacts.headline_metrics``);
    #: ``"all"``: every figure as a metric. The artifacts always hold every figure.
    log_metrics: str = "headline"
    #: Explain groups of columns instead of single columns (see :mod:`mlflow_xai.groups`):
    #: ``"auto"`` (correlation clusters, at most ``max_groups``), a dict ``{group name:
    #: [columns]}`` (unlisted columns stay single), ``False`` (never group, not even the
    #: ``explainers="auto"`` plan on wide data), or None (single columns; the auto plan groups
    #: wide data itself, see :mod:`mlflow_xai.planner`).
    feature_groups: Any = None
    #: The most groups ``feature_groups="auto"`` (and the wide-data plan) makes.
    max_groups: int = 64
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "extra"]

    @classmethod
    def from_mapping(cls, options: dict[str, Any], *, ignore: frozenset[str] = frozenset(),
                     where: str = "options") -> XaiConfig:
        """Build a config from a dict, refusing unknown keys with the list of valid ones."""
        valid = cls.keys()
        unknown = [k for k in options if k not in valid and k not in ignore]
        if unknown:
            hints = [f"'{k}' (did you mean '{m[0]}'?)" for k in unknown
                     if (m := difflib.get_close_matches(k, valid, n=1))]
            hint = f" {'; '.join(hints)}." if hints else ""
            raise ConfigError(f"unknown {where} key(s) {unknown}.{hint} "
                              f"Valid keys: {', '.join(valid)}.")
        config = cls(**{k: v for k, v in options.items() if k in valid})
        config.validate()
        return config

    def validate(self) -> None:
        for name in ("background_rows", "max_rows", "selection_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}.")
        value = self.selection_bootstrap
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"selection_bootstrap must be an integer >= 0 (0 or 1 turns the "
                              f"selection stability check off), got {value!r}.")
        if self.retrain is not None and not callable(self.retrain) and \
                not hasattr(self.retrain, "fit"):
            raise ConfigError(f"retrain must be a scikit-learn estimator or a function "
                              f"score(X_subset, y) -> float, got {type(self.retrain).__name__}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}.")
        value = self.timeout
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                  or not math.isfinite(value) or value <= 0):
            raise ConfigError(f"timeout must be a positive number of seconds (or None for no "
                              f"limit), got {value!r}.")
        value = self.budget_s
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                  or not math.isfinite(value) or value <= 0):
            raise ConfigError(f"budget_s must be a positive number of seconds (or None for no "
                              f"budget), got {value!r}.")
        if self.log_metrics not in ("headline", "all"):
            raise ConfigError(f"log_metrics must be 'headline' (at most 30 xai.* metrics) or "
                              f"'all' (every figure), got {self.log_metrics!r}.")
        from mlflow_xai.groups import check_option

        check_option(self.feature_groups, self.max_groups)
        if self.model_type not in (None, "classifier", "regressor"):
            raise ConfigError(
                f"model_type must be 'classifier', 'regressor' or None, got {self.model_type!r}.")


#: ``explainers="auto"``: the planner chooses (see :mod:`mlflow_xai.planner`).
AUTO = "auto"
#: Seconds of explanation work planned by the entrances that explain on their own
#: (``autolog``, the evaluator, the CLI, the watcher) unless ``budget_s`` is given.
DEFAULT_BUDGET_S = 30.0
#: What those entrances default to: the planner's choice within the default budget.
ENTRANCE_DEFAULTS: dict[str, Any] = {"explainers": AUTO, "budget_s": DEFAULT_BUDGET_S}


def normalize_methods(spec: Any, *, valid: list[str], kind: str) -> dict[str, dict[str, Any]] | None:
    """``None`` | list of names | dict name -> params  ->  dict name -> params (names checked)."""
    if spec is None or (isinstance(spec, str) and spec == AUTO):
        return None
    if isinstance(spec, str):
        spec = [s.strip() for s in spec.split(",") if s.strip()]
    if isinstance(spec, dict):
        items = list(spec.items())
    elif isinstance(spec, (list, tuple)):
        items = [(name, None) for name in spec]
    else:
        raise ConfigError(f"{kind}s must be a list of names or a dict of name -> parameters, "
                          f"got {type(spec).__name__}.")
    methods: dict[str, dict[str, Any]] = {}
    for name, params in items:
        if name not in valid:
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown {kind} '{name}'.{hint} "
                              f"Valid {kind}s: {', '.join(sorted(valid)) or '(none)'}.")
        if params is not None and not isinstance(params, dict):
            raise ConfigError(f"parameters for {kind} '{name}' must be a dict, "
                              f"got {type(params).__name__}.")
        methods[name] = dict(params or {})
    if not methods:
        raise ConfigError(f"no {kind}s given: name at least one, or leave the option unset "
                          "to use every one that applies.")
    return methods


def check_methods(config: XaiConfig) -> None:
    """Fail fast on unknown explainer names or parameters (before any model is loaded)."""
    from mlflow_xai.plugins import get_registry

    registry = get_registry()
    for kind, spec in (("explainer", config.explainers), ("check", config.checks),
                       ("selector", config.selectors)):
        if isinstance(spec, (list, tuple)) and not spec:
            continue  # [] turns that kind off
        methods = normalize_methods(spec, valid=registry.names(kind), kind=kind)
        for name, params in (methods or {}).items():
            registry.get(name).cls(**params).validate_params()
    if config.policy is not None:
        from mlflow_xai.governance import load_policy

        load_policy(config.policy)
