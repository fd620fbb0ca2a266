"""Governance: a YAML policy of rules over the explanation figures, and its verdict.

Rule kinds (each rule has a ``name`` and exactly one kind):

* threshold:   ``metric: <figure>`` with ``min:`` and/or ``max:``. A figure is a check figure
  of ``stability.json`` (``<check>/<figure>``, e.g. ``seed_stability/kernel_shap/spearman``), a
  method figure (``<method>/seconds``, ``<method>/model_evals``, ``<method>/efficiency_gap``,
  ``<method>/importance/<feature>``), a selection figure (``selection/<selector>/<figure>``) or
  ``rows_explained`` / ``methods_ok`` / ``methods_failed``.
* forbidden features in the top k: ``forbid_top_k: {features: [...], k: 3, method: name}``.
* required methods: ``require_methods: [kernel_shap, ...]`` (each must have run successfully).
* maximum disagreement: ``max_disagreement: {methods: [a, b], max: 0.5}``: 1 - the Spearman
  correlation of the two methods' global importance (``figure:`` may name another agreement
  figure such as ``feature_agreement``, in which case disagreement is 1 - that figure).
* forbidden interaction: ``forbid_interaction: {features: [sex], with: [zip_code], max: 0.01}``
  (or ``top_k: 3`` instead of ``max``; ``with`` defaults to every other feature, ``method`` to
  the first interaction method that ran): no pair of a feature of ``features`` and one of
  ``with`` may have a mean |interaction| above ``max`` (or be among the ``top_k`` strongest
  pairs) in that method's global interaction matrix. Read only from
  ``interactions/<method>_matrix.json``; without one (no interaction method ran) the rule fails.
* significance (``importance_test`` check): ``require_significant: {features: [income],
  alpha: 0.05, test: conditional}`` passes when each feature's test rejected "the output does
  not depend on it" (p-value <= alpha); ``forbid_significant: {features: [sex], alpha: 0.05,
  test: both, min_rows: 200}`` fails when any named test is significant, and also when it
  cannot show absence: fewer than ``min_rows`` rows tested (warm-up rows not counted), a
  feature with one value, a test stopped at a looser alpha than the rule's, a permutation test
  whose smallest p-value is above alpha, a conditional sampler that failed its check, or a
  conditional test whose effective rows (rows tested x the share of the feature the others
  leave free) are under ``min_rows``.
* flip rate (``flip_test`` check): ``max_flip_rate: {feature: sex, max: 0.01}``: the share of
  rows whose decision changes when the feature is set to another value; by default its upper
  confidence bound, which the rule computes from the flips and rows at its own
  ``confidence`` (0.95; ``bound: estimate`` judges the point estimate). The decision is the
  policy's: ``threshold`` (default none: the predicted class), ``positive_class`` and, for a
  numeric feature with many values, ``shift`` must be what the check used; a feature no row
  could be set to another value of fails.
* recourse (``responsiveness`` check): ``max_fixed_rate: {max: 0.05}`` (share of adverse
  decisions no actionable change reverses) and ``require_actionable_top_k: {method:
  kernel_shap, k: 3, min_share: 1.0}`` (share of adverse rows whose top-k reasons are all
  responsive); both fail when there is no adverse decision, and both state the actionability
  they mean (``immutable``, ``monotone``, ``bounds``, ``target``, ``threshold``,
  ``positive_class``): the check must have used at least those immutable features and
  directions, exactly those bounds, that target (none: label 1 or True) and that decision.
* Rashomon spread (``rashomon`` check): ``max_rank_spread: {max: 1, features: [income], k: 5,
  min_models: 5}``: across the refits kept within epsilon of the best loss, no feature's rank
  (the named ones, else the top ``k``, which the check must have ranked) may move by more than
  ``max``; fewer than ``min_models`` kept fits fail, and so does a set built by a user
  ``refit`` (it decides what the set is) unless the rule says ``refit: any``.

A policy is read exactly as written or refused (:class:`~mlflow_xai.errors.ConfigError`, exit 2
in the gate): unknown keys, wrong types (``max: yes``, ``min: "0.8"``), duplicate keys, an empty
rule list, a method, check or figure that nothing produces, and (once the model is known) a
feature the model does not have.

Facts are read from the documents mlflow-xai wrote (``summary.json``, ``importance.json``,
``stability.json``, ``selection/*.json``, ``interactions/*_matrix.json``), never from run
metrics or tags: anybody with access
to a run can write those. :mod:`mlflow_xai.gate` binds the documents to the judged model and
verifies their digest.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from mlflow_xai.end_task_rules import CHECK_RULES, bound_text, check_params_for, judge_end_task
from mlflow_xai.errors import ConfigError

RULE_KINDS = ("metric", "forbid_top_k", "require_methods", "max_disagreement",
              "forbid_interaction", "require_significant", "forbid_significant",
              "max_flip_rate", "max_fixed_rate", "require_actionable_top_k", "max_rank_spread")
#: Figures every explainer that ran ``ok`` has (``<method>/<figure>``).
METHOD_FIGURES = ("seconds", "model_evals", "efficiency_gap", "importance")
#: Figures of the whole explanation.
RUN_FIGURES = ("rows_explained", "methods_ok", "methods_failed")
Number = Union[StrictInt, StrictFloat]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ForbidTopK(_Strict):
    features: list[StrictStr] = Field(min_length=1)
    k: StrictInt = Field(ge=1)
    method: StrictStr


class MaxDisagreement(_Strict):
    methods: list[StrictStr] = Field(min_length=2, max_length=2)
    max: Number
    figure: StrictStr = "rank_correlation"


class ForbidInteraction(_Strict):
    """A protected attribute must not interact with (a proxy among) other features."""

    features: list[StrictStr] = Field(min_length=1)
    with_: list[StrictStr] | None = Field(default=None, alias="with", min_length=1)
    method: StrictStr | None = None
    max: Number | None = None
    top_k: StrictInt | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_bound(self) -> ForbidInteraction:
        if (self.max is None) == (self.top_k is None):
            raise ValueError("forbid_interaction needs exactly one of 'max' (the largest mean "
                             "|interaction| a forbidden pair may have) and 'top_k' (the pair "
                             "may not be among the k strongest pairs)")
        if self.max is not None and self.max < 0:
            raise ValueError(f"forbid_interaction 'max' is a mean |interaction|, at least 0; "
                             f"got {self.max}")
        if self.with_ is not None and not any(a != b for a in self.features
                                              for b in self.with_):
            raise ValueError("forbid_interaction names no pair: 'with' must name a feature "
                             "other than those in 'features' (a feature's interaction with "
                             "itself is its main effect)")
        return self

    def pairs(self, features: list[str]) -> list[tuple[str, str]]:
        """The forbidden pairs (each unordered pair once), ``with`` defaulting to ``features``
        (every feature of the model)."""
        others = self.with_ if self.with_ is not None else features
        seen: set[frozenset[str]] = set()
        out = []
        for a in self.features:
            for b in others:
                key = frozenset((a, b))
                if a != b and key not in seen:
                    seen.add(key)
                    out.append((a, b))
        return out


Test = Literal["conditional", "marginal", "both"]


class RequireSignificant(_Strict):
    """Each feature's importance test must reject H0 "the output does not depend on it"."""

    features: list[StrictStr] = Field(min_length=1)
    alpha: Number = Field(default=0.05, gt=0, lt=1)
    test: Test = "conditional"


class ForbidSignificant(_Strict):
    """No named test may find the output dependent on the feature, on enough rows."""

    features: list[StrictStr] = Field(min_length=1)
    alpha: Number = Field(default=0.05, gt=0, lt=1)
    test: Test = "both"
    min_rows: StrictInt = Field(default=200, ge=1)


class MaxFlipRate(_Strict):
    """The decision rule and shift are the policy's, not the submitter's: the check must have
    decided by ``threshold`` (none: the predicted class) and shifted by ``shift`` (numeric
    features with many values only)."""

    feature: StrictStr
    max: Number = Field(ge=0, le=1)
    bound: Literal["upper", "estimate"] = "upper"
    #: of the upper bound, which the rule computes itself from the flips and rows
    confidence: Number = Field(default=0.95, gt=0, lt=1)
    threshold: Number | None = None
    positive_class: StrictStr | StrictInt | bool | None = None
    shift: Number | list[Number] | None = None


class _Recourse(_Strict):
    """The actionability a recourse rule is judged under: the check must have used at least
    these immutable features and monotone directions, exactly these bounds (any other bound
    widens recourse), this target and this decision threshold."""

    immutable: list[StrictStr] = Field(default_factory=list)
    monotone: dict[StrictStr, Literal[1, -1]] = Field(default_factory=dict)
    bounds: dict[StrictStr, list[Number | None]] = Field(default_factory=dict)
    target: StrictStr | StrictInt | bool | None = None
    threshold: Number | None = None
    positive_class: StrictStr | StrictInt | bool | None = None

    @model_validator(mode="after")
    def _bounds_are_intervals(self) -> _Recourse:
        for feature, bound in self.bounds.items():
            low, high = (bound + [None, None])[:2] if len(bound) <= 2 else (None, None)
            if len(bound) != 2 or (low is not None and high is not None and low > high):
                raise ValueError(f"bounds of '{feature}' must be [low, high] with low <= high "
                                 f"(null for the observed end), got {bound}")
        return self


class MaxFixedRate(_Recourse):
    max: Number = Field(ge=0, le=1)


class RequireActionableTopK(_Recourse):
    method: StrictStr
    k: StrictInt = Field(ge=1)
    min_share: Number = Field(default=1.0, ge=0, le=1)


class MaxRankSpread(_Strict):
    max: StrictInt = Field(ge=0)
    features: list[StrictStr] | None = Field(default=None, min_length=1)
    #: without ``features``: the top k features (by mean importance) are judged, and the check
    #: must have ranked at least that many
    k: StrictInt = Field(default=5, ge=1)
    min_models: StrictInt = Field(default=5, ge=2)
    #: "clone": the set must be the check's own refits (scikit-learn clone); a user ``refit``
    #: decides what the set is, so it passes only with "any"
    refit: Literal["clone", "any"] = "clone"


class Rule(_Strict):
    name: StrictStr = Field(min_length=1)
    metric: StrictStr | None = None
    min: Number | None = None
    max: Number | None = None
    forbid_top_k: ForbidTopK | None = None
    require_methods: list[StrictStr] | None = Field(default=None, min_length=1)
    max_disagreement: MaxDisagreement | None = None
    forbid_interaction: ForbidInteraction | None = None
    require_significant: RequireSignificant | None = None
    forbid_significant: ForbidSignificant | None = None
    max_flip_rate: MaxFlipRate | None = None
    max_fixed_rate: MaxFixedRate | None = None
    require_actionable_top_k: RequireActionableTopK | None = None
    max_rank_spread: MaxRankSpread | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Rule:
        kinds = [k for k in RULE_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of {', '.join(RULE_KINDS)}; got "
                             f"{kinds or 'none'}")
        if self.metric is not None and self.min is None and self.max is None:
            raise ValueError("a metric rule needs 'min' and/or 'max'")
        if self.metric is None and (self.min is not None or self.max is not None):
            raise ValueError("'min'/'max' belong to a metric rule (metric: <figure>)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"'min' ({self.min}) is above 'max' ({self.max}): nothing passes")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in RULE_KINDS if getattr(self, k) is not None)


class Policy(_Strict):
    rules: list[Rule] = Field(min_length=1)
    #: Reference data for ``mlflow-xai check --recompute`` (path relative to the policy file).
    data: StrictStr | None = None
    targets: StrictStr | None = None
    #: explain() options for ``--recompute`` (default: the methods and checks the rules name).
    explain: dict[str, Any] | None = None
    #: Where the policy came from (a file's folder resolves ``data``); not a YAML key.
    base_dir: StrictStr | None = None


def load_policy(policy: Any) -> Policy:
    """Read and validate a policy (path to YAML, YAML text, dict, or a :class:`Policy`)."""
    if isinstance(policy, Policy):
        return policy
    base_dir = None
    if isinstance(policy, (str, Path)) and Path(str(policy)).suffix in (".yaml", ".yml", ".json"):
        path = Path(policy)
        if not path.exists():
            raise ConfigError(f"policy file {path} does not exist.")
        base_dir = str(path.resolve().parent)
        policy = path.read_text()
    if isinstance(policy, str):
        policy = _yaml_strict(policy)
    if not isinstance(policy, dict) or not isinstance(policy.get("rules"), list):
        raise ConfigError("a policy is a mapping with a 'rules' list, e.g. "
                          "rules: [{name: stable, metric: seed_stability/kernel_shap/spearman, "
                          "min: 0.8}]")
    if "base_dir" in policy:
        raise ConfigError("unknown policy key 'base_dir'.")
    for index, rule in enumerate(policy["rules"]):
        if not isinstance(rule, dict) or not isinstance(rule.get("name"), str) or \
                not rule.get("name"):
            raise ConfigError(f"rule #{index + 1}: every rule needs a 'name' (a string).")
    try:
        parsed = Policy.model_validate({**policy, "base_dir": base_dir})
    except ValidationError as exc:
        raise ConfigError(_explain_validation(exc, policy)) from exc
    names = [r.name for r in parsed.rules]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"rule names must be unique; {duplicates} appear more than once.")
    _check_names_exist(parsed)
    return parsed


def _yaml_strict(text: str) -> Any:
    """YAML with duplicate keys refused (PyYAML silently keeps the last one)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"the policy repeats the key '{key}' (line "
                                  f"{key_node.start_mark.line + 1}); each key may appear once.")
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"the policy is not valid YAML: {exc}") from exc


_FIELDS = {
    "policy": list(Policy.model_fields.keys() - {"base_dir"}),
    "rule": list(Rule.model_fields),
    "forbid_top_k": list(ForbidTopK.model_fields),
    "max_disagreement": list(MaxDisagreement.model_fields),
    "forbid_interaction": [f.alias or name for name, f in
                           ForbidInteraction.model_fields.items()],
    "require_significant": list(RequireSignificant.model_fields),
    "forbid_significant": list(ForbidSignificant.model_fields),
    "max_flip_rate": list(MaxFlipRate.model_fields),
    "max_fixed_rate": list(MaxFixedRate.model_fields),
    "require_actionable_top_k": list(RequireActionableTopK.model_fields),
    "max_rank_spread": list(MaxRankSpread.model_fields),
}


def _explain_validation(exc: ValidationError, raw: dict[str, Any]) -> str:
    """pydantic's errors as 'rule <name>: field <path>: what is wrong' lines."""
    lines = []
    for error in exc.errors():
        loc = list(error["loc"])
        where = "policy"
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rule = raw["rules"][loc[1]]
            where = f"rule '{rule.get('name')}'" if isinstance(rule, dict) else \
                f"rule #{loc[1] + 1}"
            loc = loc[2:]
        path = ".".join(str(p) for p in loc if not isinstance(p, int) and p not in (
            "int", "float", "constrained-int", "constrained-float", "str"))
        kind, message = error["type"], error["msg"]
        if kind == "extra_forbidden":
            owner, _, key = path.rpartition(".")
            owner = owner or ("policy" if where == "policy" else "rule")
            valid = _FIELDS.get(owner, _FIELDS["rule"])
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            lines.append(f"{where}: unknown field '{path}'{hint}. Valid fields: "
                         f"{', '.join(valid)}.")
        elif kind in ("int_type", "float_type"):
            lines.append(f"{where}: field '{path}' must be a number, got "
                         f"{error.get('input')!r}.")
        elif kind == "string_type":
            lines.append(f"{where}: field '{path}' must be a string, got "
                         f"{error.get('input')!r}.")
        elif kind in ("too_short", "list_type") and (path in (
                "require_methods", "rules", "forbid_top_k.features",
                "forbid_interaction.features", "forbid_interaction.with")
                or path.endswith(".features")):
            lines.append(f"{where}: field '{path}' must be a non-empty list.")
        elif kind == "value_error":
            lines.append(f"{where}: {message.removeprefix('Value error, ')}.")
        elif path:
            lines.append(f"{where}: field '{path}': {message}.")
        else:
            lines.append(f"{where}: {message}.")
    # One line per problem, first problems first; duplicates (union branches) dropped.
    return "; ".join(dict.fromkeys(lines))


def _check_names_exist(policy: Policy) -> None:
    """Every method, check and figure a rule names must be one something can produce."""
    from mlflow_xai.plugins import get_registry

    registry = get_registry()
    explainers = registry.names("explainer")
    for rule in policy.rules:
        where = f"rule '{rule.name}'"
        methods: list[tuple[str, str]] = []
        if rule.forbid_top_k is not None:
            methods.append(("forbid_top_k.method", rule.forbid_top_k.method))
        if rule.require_methods is not None:
            methods += [("require_methods", m) for m in rule.require_methods]
        if rule.max_disagreement is not None:
            methods += [("max_disagreement.methods", m) for m in rule.max_disagreement.methods]
        if rule.forbid_interaction is not None and rule.forbid_interaction.method is not None:
            methods.append(("forbid_interaction.method", rule.forbid_interaction.method))
        if rule.require_actionable_top_k is not None:
            methods.append(("require_actionable_top_k.method",
                            rule.require_actionable_top_k.method))
        for field_name, method in methods:
            if method not in explainers:
                raise ConfigError(f"{where}: field '{field_name}' names '{method}', which is not "
                                  f"an explainer.{_did_you_mean(method, explainers)} Explainers: "
                                  f"{', '.join(sorted(explainers))}.")
        if rule.metric is not None:
            problem = _unknown_figure(rule.metric, registry)
            if problem:
                raise ConfigError(f"{where}: field 'metric': {problem}")


def _unknown_figure(figure: str, registry: Any) -> str | None:
    name = _strip_prefix(figure)
    parts = name.split("/")
    checks, explainers = registry.names("check"), registry.names("explainer")
    selectors = registry.names("selector")
    if len(parts) == 1:
        if name in RUN_FIGURES:
            return None
    elif parts[0] in checks:
        return None
    elif parts[0] == "selection":
        if len(parts) >= 3 and parts[1] in selectors:
            return None
        return (f"'{figure}' names no selector; use selection/<selector>/<figure> with one of "
                f"{', '.join(sorted(selectors))}.")
    elif parts[0] in explainers:
        if parts[1] in METHOD_FIGURES and (parts[1] != "importance" or len(parts) == 3):
            return None
        return (f"'{figure}': an explainer's figures are {', '.join(METHOD_FIGURES[:3])} and "
                f"importance/<feature>.")
    hint = _did_you_mean(parts[0], list(RUN_FIGURES) + checks + explainers)
    return (f"no check or method produces '{figure}'.{hint} A figure starts with a check "
            f"({', '.join(sorted(checks))}), an explainer, 'selection/' or is one of "
            f"{', '.join(RUN_FIGURES)}.")


def _strip_prefix(figure: str) -> str:
    for prefix in ("xai/check/", "xai/", "check/"):
        if figure.startswith(prefix):
            return figure[len(prefix):]
    return figure


def _did_you_mean(word: str, options: list[str]) -> str:
    lower = {o.lower(): o for o in options}
    if word.lower() in lower:
        return f" Did you mean '{lower[word.lower()]}'?"
    close = difflib.get_close_matches(word, options, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


# --------------------------------------------------------------------------- facts


@dataclass
class Facts:
    """What a policy is judged on, as recorded by mlflow-xai for one model."""

    metrics: dict[str, float]
    ranks: dict[str, dict[str, int]]
    methods_ok: list[str]
    features: list[str] = field(default_factory=list)
    status: str = "ok"
    #: Why these facts cannot pass whatever the rules say (explanation not ``ok``, ...).
    blockers: list[str] = field(default_factory=list)
    #: method -> its ``interactions/<method>_matrix.json`` (interaction methods only)
    interactions: dict[str, Any] = field(default_factory=dict)
    #: methods whose interaction matrix the summary's manifest lists (read or not)
    interactions_listed: list[str] = field(default_factory=list)
    #: raw column -> the feature group it was explained in (runs with ``feature_groups``)
    group_of: dict[str, str] = field(default_factory=dict)
    #: ``stability.json``: check -> its entry (status, figures, details); what the end-task
    #: rules (significance, flip rate, recourse, Rashomon spread) read
    checks: dict[str, Any] = field(default_factory=dict)

    def figure(self, name: str) -> float | None:
        key = _strip_prefix(name)
        for candidate in (f"xai/check/{key}", f"xai/{key}"):
            if candidate in self.metrics:
                return self.metrics[candidate]
        return None


def interaction_documents(summary: dict[str, Any]) -> dict[str, str]:
    """``{path inside xai/: method}`` for every interaction matrix the summary's manifest lists
    (``interactions/<method>_matrix.json``): the documents a reader of the facts must download,
    verify against the manifest and pass to :func:`facts_from_documents` as ``interactions``."""
    from mlflow_xai.artifacts import interaction_matrix_method

    listed = (summary.get("artifacts") or {}).get("sha256") or {}
    out = {}
    for name in sorted(listed) if isinstance(listed, dict) else []:
        method = interaction_matrix_method(name)
        if method is not None:
            out[name] = method
    return out


def facts_from_documents(summary: dict[str, Any], importance: dict[str, Any],
                         stability: dict[str, Any],
                         selection: dict[str, dict[str, Any]] | None = None,
                         interactions: dict[str, Any] | None = None) -> Facts:
    """Facts from the JSON documents of an ``xai/`` folder (the same figures as the metrics).

    ``interactions``: method -> its ``interactions/<method>_matrix.json`` (verified against the
    manifest by the caller, see :func:`interaction_documents`); the only source of the facts of
    ``forbid_interaction`` rules."""
    from mlflow_xai.artifacts import metrics_from_documents

    ranks = {m: {str(f): int(v["rank"]) for f, v in feats.items()}
             for m, feats in importance.items()}
    methods = summary.get("methods") or {}
    ok = [m for m, e in methods.items() if e.get("status") == "ok"]
    features = [str(f) for f in (summary.get("data") or {}).get("feature_names") or []]
    if not features:
        features = sorted({f for feats in ranks.values() for f in feats})
    status = str(summary.get("status"))
    blockers = [] if status == "ok" else [f"the explanation's status is '{status}', not 'ok'"]
    return Facts(metrics=metrics_from_documents(summary, importance, stability, selection),
                 ranks=ranks, methods_ok=ok, features=features, status=status,
                 blockers=blockers, interactions=dict(interactions or {}),
                 interactions_listed=list(interaction_documents(summary).values()),
                 group_of=_group_of(summary),
                 checks=stability if isinstance(stability, dict) else {})


def _group_of(summary: dict[str, Any]) -> dict[str, str]:
    """raw column -> its group, from ``summary.json``'s ``feature_groups.members``."""
    members = ((summary.get("feature_groups") or {}).get("members") or {})
    if not isinstance(members, dict):
        return {}
    return {str(column): str(group) for group, columns in members.items()
            if isinstance(columns, list) for column in columns}


def facts_from_explanations(expl: Any) -> Facts:
    from mlflow_xai.artifacts import importance_json, interactions_json, stability_json

    return facts_from_documents(
        expl.summary, importance_json(expl), stability_json(expl),
        {name: selection.to_json() for name, selection in expl.selection.items()},
        interactions_json(expl))


def check_features(policy: Policy, facts: Facts) -> None:
    """A rule that names a feature the model does not have checks nothing: refuse it.

    ``forbid_top_k.features`` name features as they are. A metric rule names a feature's
    importance by its metric-name segment (``<method>/importance/<segment>``, the name of the
    logged metric; ``xai/metric_names.json`` lists them): for most features the segment is the
    name itself; for one that has characters MLflow refuses, is too long or collides with
    another once made safe, the raw name is refused with the segment to write instead.
    """
    if not facts.features:
        return
    from mlflow_xai.metric_names import feature_metric_names

    known = set(facts.features)
    segments: dict[str, str] | None = None
    for rule in policy.rules:
        named: list[tuple[str, str]] = []
        if rule.forbid_top_k is not None:
            named = [("forbid_top_k.features", f) for f in rule.forbid_top_k.features]
        elif rule.forbid_interaction is not None:
            spec = rule.forbid_interaction
            named = [("forbid_interaction.features", f) for f in spec.features]
            named += [("forbid_interaction.with", f) for f in spec.with_ or []]
        elif rule.kind in ("require_significant", "forbid_significant", "max_rank_spread"):
            spec = getattr(rule, rule.kind)
            named = [(f"{rule.kind}.features", f) for f in spec.features or []]
        elif rule.max_flip_rate is not None:
            named = [("max_flip_rate.feature", rule.max_flip_rate.feature)]
        elif rule.kind in ("max_fixed_rate", "require_actionable_top_k"):
            spec = getattr(rule, rule.kind)
            named = [(f"{rule.kind}.immutable", f) for f in spec.immutable]
            named += [(f"{rule.kind}.monotone", f) for f in spec.monotone]
            named += [(f"{rule.kind}.bounds", f) for f in spec.bounds]
        elif rule.metric is not None:
            parts = _strip_prefix(rule.metric).split("/")
            if len(parts) == 3 and parts[1] == "importance":
                if segments is None:  # the mapping the metrics and the gate use
                    segments = feature_metric_names(facts.features)
                feature_of = {seg: f for f, seg in segments.items()}
                if parts[2] not in feature_of:
                    if parts[2] in segments:
                        raise ConfigError(
                            f"rule '{rule.name}': field 'metric' names feature '{parts[2]}' "
                            "as it is, but its importance is the metric "
                            f"'{parts[0]}/importance/{segments[parts[2]]}' (features become "
                            "metric-name segments, see xai/metric_names.json): write that.")
                    named = [("metric", parts[2])]
        for field_name, feature in named:
            if feature not in known:
                raise ConfigError(
                    f"rule '{rule.name}': field '{field_name}' names feature '{feature}', which "
                    f"the model does not have.{_did_you_mean(feature, facts.features)} Its "
                    f"features: {_short_list(facts.features)}.")


def _short_list(items: list[str], limit: int = 20) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


def evaluate_policy(policy: Any, expl_or_facts: Any) -> dict[str, Any]:
    """Judge every rule; the verdict is 'passed' only when every rule passes and nothing
    blocks the facts (an explanation that did not finish ``ok`` cannot pass)."""
    policy = load_policy(policy)
    facts = expl_or_facts if isinstance(expl_or_facts, Facts) else facts_from_explanations(
        expl_or_facts)
    check_features(policy, facts)
    outcomes = [_outcome("explanation-status", "status", "explanation status", facts.status,
                         {}, False, reason) for reason in facts.blockers]
    outcomes += [_judge(rule, facts) for rule in policy.rules]
    verdict = "passed" if all(o["verdict"] == "pass" for o in outcomes) else "failed"
    return {"verdict": verdict, "rules": outcomes}


def _judge(rule: Rule, facts: Facts) -> dict[str, Any]:
    name = rule.name
    if rule.metric is not None:
        value = facts.figure(rule.metric)
        bound = {k: getattr(rule, k) for k in ("min", "max") if getattr(rule, k) is not None}
        if value is None:
            return _outcome(name, "metric", rule.metric, None, bound, False,
                            f"figure '{rule.metric}' was not computed (is the check or "
                            "method enabled?)")
        ok = ("min" not in bound or value >= bound["min"]) and (
            "max" not in bound or value <= bound["max"])
        return _outcome(name, "metric", rule.metric, value, bound, ok,
                        bound_text(value, bound))
    if rule.forbid_top_k is not None:
        spec = rule.forbid_top_k
        ranks = facts.ranks.get(spec.method)
        label = f"top {spec.k} of {spec.method}"
        if ranks is None or spec.method not in facts.methods_ok:
            return _outcome(name, "forbid_top_k", label, None, spec.model_dump(), False,
                            f"method '{spec.method}' did not run")
        # A column explained inside a feature group ranks as its group: the group being in
        # the top k puts the forbidden column there too.
        ranked = {str(f): facts.group_of.get(str(f), str(f)) if str(f) not in ranks else str(f)
                  for f in spec.features}
        unranked = [f for f, as_ranked in ranked.items() if as_ranked not in ranks]
        if unranked:  # fail closed: a feature without a rank cannot be shown to be outside
            return _outcome(name, "forbid_top_k", label, None, spec.model_dump(), False,
                            f"feature(s) {unranked} have no rank in {spec.method}'s "
                            "importance.json")
        hits = [f if ranked[f] == f else f"{f} (in group '{ranked[f]}')"
                for f in ranked if ranks[ranked[f]] <= spec.k]
        return _outcome(name, "forbid_top_k", label, ", ".join(hits) or "none",
                        spec.model_dump(), not hits,
                        f"forbidden feature(s) {hits} in the {label}" if hits else
                        f"none of {list(spec.features)} in the {label}")
    if rule.forbid_interaction is not None:
        return _judge_interaction(rule, facts)
    if rule.kind in CHECK_RULES:
        spec = getattr(rule, rule.kind)
        label, value, ok, message = judge_end_task(rule.kind, spec, facts.checks)
        return _outcome(name, rule.kind, label, value, spec.model_dump(exclude_none=True), ok,
                        message)
    if rule.require_methods is not None:
        missing = [m for m in rule.require_methods if m not in facts.methods_ok]
        return _outcome(name, "require_methods", ", ".join(rule.require_methods),
                        ", ".join(missing) or "all present", {}, not missing,
                        f"missing or failed: {missing}" if missing else "all ran")
    spec = rule.max_disagreement
    a, b = spec.methods
    value = None
    for pair in (f"{a}__{b}", f"{b}__{a}"):
        value = facts.figure(f"agreement/{pair}/{spec.figure}")
        if value is not None:
            break
    label = f"disagreement {a} vs {b} (1 - {spec.figure})"
    if value is None:
        return _outcome(name, "max_disagreement", label, None, {"max": spec.max}, False,
                        f"no agreement figure for {a} and {b} (did both run, and the agreement "
                        "check?)")
    disagreement = 1.0 - value
    return _outcome(name, "max_disagreement", label, disagreement, {"max": spec.max},
                    disagreement <= spec.max, bound_text(disagreement, {"max": spec.max}))


def _judge_interaction(rule: Rule, facts: Facts) -> dict[str, Any]:
    """``forbid_interaction``: fails closed when there is no verified interaction matrix."""
    from mlflow_xai.artifacts import interaction_matrix_file, read_interaction_matrix
    from mlflow_xai.explanations import NUMERICAL_ZERO

    spec = rule.forbid_interaction
    bound = spec.model_dump(by_alias=True, exclude_none=True)
    ran = [m for m in facts.methods_ok if m in facts.interactions]
    method = spec.method or (ran[0] if ran else None)
    others = ", ".join(spec.with_) if spec.with_ is not None else "any other feature"
    label = f"interaction of {', '.join(spec.features)} with {others}"

    def fail(message: str, value: Any = None, where: str | None = method) -> dict[str, Any]:
        return _outcome(rule.name, "forbid_interaction",
                        f"{label} ({where})" if where else label, value, bound, False, message)

    if method is None:
        unread = [m for m in facts.interactions_listed if m in facts.methods_ok]
        if unread:
            return fail(f"the interaction matrix of {unread} is listed in the manifest but was "
                        "not read as a fact (xai/interactions/<method>_matrix.json): nothing "
                        "to judge")
        return fail("no interaction method ran, so there is no interaction matrix to judge "
                    "(xai/interactions/<method>_matrix.json): add an interaction explainer "
                    "(shapley_interactions, or tree_interactions for tree models) to the "
                    "explainers")
    if method not in facts.methods_ok:
        return fail(f"method '{method}' did not run")
    if method not in facts.interactions:
        return fail(f"method '{method}' recorded no interaction matrix "
                    f"(xai/{interaction_matrix_file(method)}): it is not an interaction method, "
                    "or the matrix was not read")
    try:
        features, matrix = read_interaction_matrix(facts.interactions[method])
    except ValueError as exc:
        return fail(f"xai/{interaction_matrix_file(method)}: {exc}")
    position = {f: i for i, f in enumerate(features)}
    absent = [f for f in list(spec.features) + list(spec.with_ or []) if f not in position]
    if absent:
        return fail(f"feature(s) {absent} are not in the interaction matrix of '{method}'")
    pairs = spec.pairs(features)
    if not pairs:
        return fail("no pair to judge: the model has no other feature")
    # The matrix is symmetric; should a writer disagree with itself, take the larger half.
    strength = {(a, b): max(matrix[position[a], position[b]], matrix[position[b], position[a]])
                for a, b in pairs}
    unknown = [f"{a} × {b}" for (a, b), v in strength.items() if not np.isfinite(v)]
    if unknown:
        return fail(f"the mean |interaction| of {_names_short(unknown)} is not finite: cannot "
                    "judge")
    if spec.max is not None:
        worst = max(strength, key=strength.get)
        value = float(strength[worst])
        over = [(p, v) for p, v in strength.items() if v > spec.max]
        over.sort(key=lambda pv: -pv[1])
        message = (f"{_names_short([f'{a} × {b} ({v:.4g})' for (a, b), v in over])} above "
                   f"max {spec.max}" if over else
                   f"strongest forbidden pair {worst[0]} × {worst[1]}: "
                   f"{bound_text(value, {'max': spec.max})}")
        return _outcome(rule.name, "forbid_interaction", f"{label} ({method})", value, bound,
                        not over, message)
    i, j = np.triu_indices(len(features), k=1)
    every = matrix[i, j]
    if not np.isfinite(every).all():
        return fail("the interaction matrix has values that are not finite, so the ranking of "
                    "pairs is unknown")
    rank = {p: int(1 + np.sum(every > v)) for p, v in strength.items()}
    best = min(rank, key=rank.get)
    # A pair that is 0 up to float rounding is no interaction, whatever its rank among zeros.
    zero = NUMERICAL_ZERO * float(np.max(np.abs(matrix), initial=0.0))
    inside = sorted((p for p in rank if rank[p] <= spec.top_k and strength[p] > zero),
                    key=rank.get)
    message = (f"{_names_short([f'{a} × {b} (rank {rank[(a, b)]})' for a, b in inside])} in "
               f"the top {spec.top_k} pairs" if inside else
               f"strongest forbidden pair {best[0]} × {best[1]} is rank {rank[best]} of "
               f"{len(every)} (needs > {spec.top_k}, or no interaction at all)")
    return _outcome(rule.name, "forbid_interaction", f"top {spec.top_k} pairs: {label} "
                    f"({method})", rank[best], bound, not inside, message)


def _names_short(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more"
                                       if len(items) > limit else "")


def _outcome(name: str, kind: str, figure: str, value: Any, bound: dict, ok: bool,
             message: str) -> dict[str, Any]:
    return {"name": name, "kind": kind, "figure": figure, "value": value, "bound": bound,
            "verdict": "pass" if ok else "fail", "message": message}


def methods_named(policy: Policy) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """(explainers, checks with their parameters) the rules need: what ``--recompute`` runs by
    default. The end-task checks get the features their rules name (the importance test at the
    smallest alpha asked for); parameters only the policy's ``explain:`` can give (the
    actionability metadata of ``responsiveness``) are not guessed."""
    from mlflow_xai.plugins import get_registry

    registry = get_registry()
    explainers: list[str] = []
    checks: list[str] = []
    for rule in policy.rules:
        if rule.kind in CHECK_RULES:
            checks.append(CHECK_RULES[rule.kind])
        if rule.require_actionable_top_k is not None:
            explainers.append(rule.require_actionable_top_k.method)
        if rule.forbid_top_k is not None:
            explainers.append(rule.forbid_top_k.method)
        if rule.require_methods is not None:
            explainers += rule.require_methods
        if rule.max_disagreement is not None:
            explainers += rule.max_disagreement.methods
            checks.append("agreement")
        if rule.forbid_interaction is not None and rule.forbid_interaction.method is not None:
            explainers.append(rule.forbid_interaction.method)
        if rule.metric is not None:
            parts = _strip_prefix(rule.metric).split("/")
            if parts[0] in registry.names("check"):
                checks.append(parts[0])
                explainers += [p for p in parts[1].split("__")
                               if p in registry.names("explainer")] if len(parts) > 1 else []
            elif parts[0] in registry.names("explainer"):
                explainers.append(parts[0])
    return (list(dict.fromkeys(explainers)),
            {name: check_params_for(name, policy.rules) for name in dict.fromkeys(checks)})


def set_governance_tags(verdict: Literal["passed", "failed"] | str, *, run_id: str | None = None,
                        model_id: str | None = None, registered_model: str | None = None,
                        model_version: str | None = None) -> None:
    """Write ``mlflow_xai.governance=passed|failed`` on the run, LoggedModel and model version."""
    from mlflow import MlflowClient

    from mlflow_xai import tags as tag

    client = MlflowClient()
    if run_id:
        client.set_tag(run_id, tag.GOVERNANCE, verdict)
    if model_id:
        try:
            client.set_logged_model_tags(model_id, {tag.GOVERNANCE: verdict})
        except Exception:  # not a LoggedModel id (older store): the run tag is still there
            pass
    if registered_model and model_version:
        client.set_model_version_tag(registered_model, str(model_version), tag.GOVERNANCE,
                                     verdict)
