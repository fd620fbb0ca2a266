"""The policy rules answered by end-task checks: significance (``importance_test``), flip rate
(``flip_test``), recourse (``responsiveness``) and the Rashomon spread (``rashomon``).

Each rule reads its check's ``details`` in ``stability.json`` (the verified document, never a
metric or tag) and fails closed: a check that did not run, a feature it did not test, a figure
that is missing or not a number, too few rows or refits to show anything: each is a failure
that says what to run.
"""

from __future__ import annotations

import math
from typing import Any

#: Rule kind -> the check whose ``stability.json`` details it reads.
CHECK_RULES = {"require_significant": "importance_test", "forbid_significant": "importance_test",
               "max_flip_rate": "flip_test", "max_fixed_rate": "responsiveness",
               "require_actionable_top_k": "responsiveness", "max_rank_spread": "rashomon"}

#: How a check is named in ``checks=`` with the parameters a rule needs, for messages.
_HOW_TO_RUN = {
    "importance_test": "checks={'importance_test': {'features': [...]}}",
    "flip_test": "checks={'flip_test': {'features': [...]}}",
    "responsiveness": "checks={'responsiveness': {'immutable': [...], ...}}",
    "rashomon": "checks=['rashomon'] with targets",
}


def bound_text(value: float, bound: dict[str, float]) -> str:
    """``0.3 (needs >= 0.5 and <= 1)``: a figure and the bound it is judged by."""
    parts = []
    if "min" in bound:
        parts.append(f">= {bound['min']}")
    if "max" in bound:
        parts.append(f"<= {bound['max']}")
    return f"{value:.4g} (needs {' and '.join(parts)})"


def judge_end_task(kind: str, spec: Any, checks: dict[str, Any]
                   ) -> tuple[str, Any, bool, str]:
    """``(figure label, value, passed, message)`` of one end-task rule of ``kind`` with its
    ``spec`` (see :mod:`mlflow_xai.governance`), judged on ``checks`` (``stability.json``)."""
    check = CHECK_RULES[kind]
    label = _LABELS[kind](spec)

    def fail(message: str, value: Any = None) -> tuple[str, Any, bool, str]:
        return label, value, False, message

    entry = checks.get(check)
    if not isinstance(entry, dict):
        return fail(f"the {check} check did not run, so there is nothing to judge: add it "
                    f"({_HOW_TO_RUN[check]})")
    if entry.get("status") != "ok":
        why = entry.get("reason") or entry.get("error") or "no reason recorded"
        return fail(f"the {check} check did not finish ok (status '{entry.get('status')}': "
                    f"{why})")
    details = entry.get("details")
    if not isinstance(details, dict):
        return fail(f"stability.json has no details for {check}: cannot judge")
    try:
        ok, value, message = _JUDGES[kind](spec, details)
    except _Unjudgeable as exc:
        return fail(str(exc))
    return label, value, ok, message


class _Unjudgeable(Exception):
    """The details do not hold what the rule needs (fail closed with this message)."""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value):
        raise _Unjudgeable(f"{what} is {value!r}, not a finite number: cannot judge")
    return float(value)


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Unjudgeable(f"{what} is missing: cannot judge")
    return value


def _tests_of(test: str) -> list[str]:
    return ["marginal", "conditional"] if test == "both" else [test]


def _test_results(spec: Any, details: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(feature, test, result) for every feature and test the rule names; fails closed when
    the check did not test one of them."""
    features = _mapping(details.get("features"), "importance_test's per-feature results")
    out = []
    for feature in spec.features:
        tested = features.get(feature)
        if not isinstance(tested, dict):
            raise _Unjudgeable(f"importance_test did not test '{feature}' (run it with "
                               f"features including '{feature}')")
        for test in _tests_of(spec.test):
            result = tested.get(test)
            if not isinstance(result, dict):
                raise _Unjudgeable(f"importance_test ran no {test} test of '{feature}' (run "
                                   f"it with tests including '{test}')")
            out.append((feature, test, result))
    return out


def _judge_require_significant(spec: Any, details: dict[str, Any]) -> tuple[bool, Any, str]:
    check_alpha = details.get("alpha")
    weak = []
    worst = 0.0
    for feature, test, result in _test_results(spec, details):
        p = _number(result.get("p_value"), f"the {test} p-value of '{feature}'")
        worst = max(worst, p)
        if p > spec.alpha:
            weak.append(f"{feature} ({test}: p = {p:.3g})")
    if not weak:
        return True, worst, (f"every named feature is significant at alpha {spec.alpha} "
                             f"(largest p-value {worst:.3g})")
    hint = ""
    if isinstance(check_alpha, (int, float)) and check_alpha > spec.alpha:
        hint = (f"; the sequential test stops once it rejects at its own alpha "
                f"({check_alpha}): run importance_test with alpha <= {spec.alpha}")
    return False, worst, f"not significant at alpha {spec.alpha}: {', '.join(weak)}{hint}"


def _judge_forbid_significant(spec: Any, details: dict[str, Any]) -> tuple[bool, Any, str]:
    significant, thin = [], []
    smallest = 1.0
    for feature, test, result in _test_results(spec, details):
        p = _number(result.get("p_value"), f"the {test} p-value of '{feature}'")
        smallest = min(smallest, p)
        if p <= spec.alpha:
            significant.append(f"{feature} ({test}: p = {p:.3g})")
            continue
        rows = _number(result.get("rows_used"), f"the rows the {test} test of '{feature}' used")
        if rows < spec.min_rows:
            thin.append(f"{feature} ({test}: {int(rows)} rows)")
    if significant:
        return False, smallest, (f"the output depends on {', '.join(significant)} at alpha "
                                 f"{spec.alpha}")
    if thin:
        return False, smallest, (f"tested on fewer than min_rows = {spec.min_rows} rows: "
                                 f"{', '.join(thin)}; a test on so few rows cannot show that "
                                 "the output does not depend on a feature: explain more rows")
    return True, smallest, (f"no named test significant at alpha {spec.alpha} (smallest "
                            f"p-value {smallest:.3g}), each on >= {spec.min_rows} rows")


def _judge_max_flip_rate(spec: Any, details: dict[str, Any]) -> tuple[bool, Any, str]:
    features = _mapping(details.get("features"), "flip_test's per-feature results")
    result = features.get(spec.feature)
    if not isinstance(result, dict):
        raise _Unjudgeable(f"flip_test did not flip '{spec.feature}' (run it with features "
                           f"including '{spec.feature}')")
    rate = _number(result.get("flip_rate"), f"the flip rate of '{spec.feature}'")
    rows = int(_number(result.get("rows"), f"the rows flip_test used for '{spec.feature}'"))
    if rows < 1:
        raise _Unjudgeable(f"flip_test decided no row for '{spec.feature}'")
    if spec.bound == "estimate":
        value, what = rate, "flip rate"
    else:
        value = _number(result.get("ci_high"), f"the flip rate's upper bound of "
                                               f"'{spec.feature}'")
        what = (f"upper {_confidence(details)} bound of the flip rate (estimate "
                f"{rate:.3g} on {rows} rows)")
    return value <= spec.max, value, f"{what}: {bound_text(value, {'max': spec.max})}"


def _confidence(details: dict[str, Any]) -> str:
    level = details.get("confidence")
    return f"{100 * level:g}%" if isinstance(level, (int, float)) else "confidence"


def _judge_max_fixed_rate(spec: Any, details: dict[str, Any]) -> tuple[bool, Any, str]:
    adverse = int(_number(details.get("adverse_rows"), "the number of adverse decisions"))
    if adverse < 1:
        raise _Unjudgeable(f"no adverse decision among the {details.get('rows')} rows checked, "
                           "so nothing shows that recourse exists: check on data that has "
                           "adverse decisions")
    rate = _number(details.get("fixed_rate"), "the fixed-prediction rate")
    return rate <= spec.max, rate, (f"{details.get('fixed_rows')} of {adverse} adverse "
                                    f"decisions fixed: {bound_text(rate, {'max': spec.max})}")


def _judge_actionable_top_k(spec: Any, details: dict[str, Any]) -> tuple[bool, Any, str]:
    methods = _mapping(details.get("methods"), "responsiveness's per-method reasons")
    result = methods.get(spec.method)
    if not isinstance(result, dict):
        raise _Unjudgeable(f"responsiveness judged no reasons of '{spec.method}' (did it run "
                           "with per-column attributions?)")
    shares = _mapping(result.get("actionable_top_k_share"),
                      f"the actionable top-k shares of '{spec.method}'")
    if str(spec.k) not in shares:
        raise _Unjudgeable(f"responsiveness judged the top {details.get('top_k')} reasons, "
                           f"not the top {spec.k}: run it with top_k >= {spec.k}")
    share = _number(shares[str(spec.k)], f"the actionable top-{spec.k} share")
    reasons = result.get("non_actionable_reasons") or {}
    worst = sorted(((f, n) for f, n in reasons.items() if isinstance(n, int) and n > 0),
                   key=lambda fn: -fn[1])[:3]
    note = (f"; non-actionable reasons in the top {details.get('top_k')}: "
            + ", ".join(f"{f} ({n} rows)" for f, n in worst) if worst else "")
    return share >= spec.min_share, share, (
        f"share of adverse rows whose top {spec.k} {spec.method} reasons are all actionable: "
        f"{bound_text(share, {'min': spec.min_share})}{note}")


def _judge_max_rank_spread(spec: Any, details: dict[str, Any]) -> tuple[bool, Any, str]:
    kept = int(_number(details.get("models_kept"), "the number of refits kept"))
    if kept < spec.min_models:
        raise _Unjudgeable(f"only {kept} refits were kept within epsilon of the best loss "
                           f"(min_models = {spec.min_models}): too few to show a spread; "
                           "refit more models (rashomon n_models)")
    features = _mapping(details.get("features"), "rashomon's per-feature ranges")
    if spec.features is not None:
        named = list(spec.features)
        missing = [f for f in named if not isinstance(features.get(f), dict)]
        if missing:
            raise _Unjudgeable(f"rashomon has no rank range of {missing}")
    else:
        k = int(_number(details.get("top_k"), "rashomon's top_k"))
        ranked = sorted(features, key=lambda f: -_number(
            (features[f] or {}).get("mean"), f"the mean importance of '{f}'"))
        named = ranked[:k]
        if not named:
            raise _Unjudgeable("rashomon ranked no feature")
    spreads = {f: int(_number(features[f].get("rank_spread"), f"the rank spread of '{f}'"))
               for f in named}
    worst = max(spreads, key=spreads.get)
    over = [f"{f} (ranks {features[f].get('rank_min')}-{features[f].get('rank_max')})"
            for f in named if spreads[f] > spec.max]
    which = "named features" if spec.features is not None else f"top {len(named)} features"
    if over:
        return False, spreads[worst], (f"across {kept} near-optimal refits the rank of "
                                       f"{', '.join(over)} moves by more than {spec.max}")
    return True, spreads[worst], (f"largest rank spread of the {which} across {kept} "
                                  f"near-optimal refits: {spreads[worst]} "
                                  f"(needs <= {spec.max})")


_JUDGES = {
    "require_significant": _judge_require_significant,
    "forbid_significant": _judge_forbid_significant,
    "max_flip_rate": _judge_max_flip_rate,
    "max_fixed_rate": _judge_max_fixed_rate,
    "require_actionable_top_k": _judge_actionable_top_k,
    "max_rank_spread": _judge_max_rank_spread,
}

_LABELS = {
    "require_significant": lambda s: f"{s.test} importance test of {', '.join(s.features)}",
    "forbid_significant": lambda s: f"{s.test} importance test of {', '.join(s.features)}",
    "max_flip_rate": lambda s: f"flip rate of {s.feature}",
    "max_fixed_rate": lambda s: "fixed-prediction rate",
    "require_actionable_top_k": lambda s: f"actionable top {s.k} reasons of {s.method}",
    "max_rank_spread": lambda s: ("Rashomon rank spread of " + (", ".join(s.features)
                                                                 if s.features else "the top k")),
}


def check_params_for(check: str, rules: list[Any]) -> dict[str, Any]:
    """The parameters ``--recompute`` runs ``check`` with, from the policy's rules (those that
    read it)."""
    rules = [r for r in rules if CHECK_RULES.get(r.kind) == check]
    if check == "importance_test":
        specs = [getattr(r, r.kind) for r in rules]
        tests = sorted({t for s in specs for t in _tests_of(s.test)})
        return {"features": list(dict.fromkeys(f for s in specs for f in s.features)),
                "tests": tests, "alpha": min(s.alpha for s in specs)}
    if check == "flip_test":
        return {"features": list(dict.fromkeys(r.max_flip_rate.feature for r in rules))}
    if check == "responsiveness":
        ks = [r.require_actionable_top_k.k for r in rules if r.require_actionable_top_k]
        return {"top_k": max(ks)} if ks else {}
    return {}
