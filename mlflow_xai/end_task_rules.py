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
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        # A document of an unexpected shape: fail closed, never crash the gate.
        return fail(f"the {check} details in stability.json are malformed "
                    f"({type(exc).__name__}: {exc}): cannot judge")
    return label, value, ok, message


class _Unjudgeable(Exception):
    """The details do not hold what the rule needs (fail closed with this message)."""


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value):
        raise _Unjudgeable(f"{what} is {value!r}, not a finite number: cannot judge")
    return float(value)


def _share(value: Any, what: str) -> float:
    """A probability, rate or share: a finite number in [0, 1]."""
    number = _number(value, what)
    if not 0.0 <= number <= 1.0:
        raise _Unjudgeable(f"{what} is {number!r}, outside [0, 1]: cannot judge")
    return number


def _count(value: Any, what: str) -> int:
    """A count: a whole number >= 0 (a float like 3.0 is accepted, 0.4 is not)."""
    number = _number(value, what)
    if number < 0 or number != int(number):
        raise _Unjudgeable(f"{what} is {number!r}, not a count: cannot judge")
    return int(number)


def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Unjudgeable(f"{what} is missing: cannot judge")
    return value


def _tests_of(test: str) -> list[str]:
    return ["marginal", "conditional"] if test == "both" else [test]


def _test_results(spec: Any, details: dict[str, Any]
                  ) -> list[tuple[str, str, dict[str, Any], float]]:
    """(feature, test, result, p-value) for every feature and test the rule names. Fails
    closed when the check did not test one of them, when a feature took one value only (no
    test can show anything about it), and when a conditional test's sampler did not match the
    data (its error control is void)."""
    features = _mapping(details.get("features"), "importance_test's per-feature results")
    out = []
    for feature in spec.features:
        tested = features.get(feature)
        if not isinstance(tested, dict):
            raise _Unjudgeable(f"importance_test did not test '{feature}' (run it with "
                               f"features including '{feature}')")
        if _count(tested.get("distinct_values"), f"the distinct values of '{feature}'") < 2:
            raise _Unjudgeable(f"'{feature}' has a single value in the rows tested: no test can "
                               "show whether the output depends on it; test on rows where it "
                               "varies")
        for test in _tests_of(spec.test):
            result = tested.get(test)
            if not isinstance(result, dict):
                raise _Unjudgeable(f"importance_test ran no {test} test of '{feature}' (run "
                                   f"it with tests including '{test}')")
            if test == "conditional" and result.get("reliable") is not True:
                check = result.get("sampler_check") or {}
                raise _Unjudgeable(
                    f"the conditional sampler of '{feature}' does not match the data (its "
                    f"check rejected it, p = {check.get('p_value')}): the conditional test's "
                    "error control does not hold; use another sampler (sampler: gaussian) or "
                    "judge the marginal test (test: marginal)")
            p = _share(result.get("p_value"), f"the {test} p-value of '{feature}'")
            out.append((feature, test, result, p))
    return out


def _check_alpha(details: dict[str, Any]) -> float:
    return _share(details.get("alpha"), "importance_test's alpha")


def _judge_require_significant(spec: Any, details: dict[str, Any]) -> tuple[bool, Any, str]:
    check_alpha = _check_alpha(details)
    weak = []
    worst = 0.0
    for feature, test, _, p in _test_results(spec, details):
        worst = max(worst, p)
        if p > spec.alpha:
            weak.append(f"{feature} ({test}: p = {p:.3g})")
    if not weak:
        return True, worst, (f"every named feature is significant at alpha {spec.alpha} "
                             f"(largest p-value {worst:.3g})")
    hint = ""
    if check_alpha > spec.alpha:
        hint = (f"; the sequential test stops once it rejects at its own alpha "
                f"({check_alpha}): run importance_test with alpha <= {spec.alpha}")
    return False, worst, f"not significant at alpha {spec.alpha}: {', '.join(weak)}{hint}"


def _judge_forbid_significant(spec: Any, details: dict[str, Any]) -> tuple[bool, Any, str]:
    check_alpha = _check_alpha(details)
    significant, thin, blunt, loose = [], [], [], []
    smallest = 1.0
    for feature, test, result, p in _test_results(spec, details):
        smallest = min(smallest, p)
        label = f"{feature} ({test})"
        if p <= spec.alpha:
            significant.append(f"{feature} ({test}: p = {p:.3g})")
        elif result.get("rejected") is not False:
            # It stopped at its own, looser alpha: more rows could have gone below ours.
            loose.append(f"{label}: p = {p:.3g}")
        elif _share(result.get("min_p_value"), f"the smallest p-value of {label}") > spec.alpha:
            blunt.append(f"{label}: at best p = {result['min_p_value']:.3g}")
        elif _count(result.get("rows_tested"), f"the rows tested by {label}") < spec.min_rows:
            thin.append(f"{label}: {result['rows_tested']} rows")
        elif test == "conditional" and _count(
                result.get("effective_rows"), f"the effective rows of {label}") < spec.min_rows:
            # The other features nearly determine it: the redrawn values are the real ones.
            thin.append(f"{label}: {result['effective_rows']} effective rows (the other "
                        f"features leave {result.get('independent_share', 0):.1%} of it free)")
    if significant:
        return False, smallest, (f"the output depends on {', '.join(significant)} at alpha "
                                 f"{spec.alpha}")
    if loose:
        return False, smallest, (f"significant at the check's own alpha {check_alpha}, which is "
                                 f"looser than {spec.alpha}: {', '.join(loose)}; run "
                                 f"importance_test with alpha <= {spec.alpha}")
    if blunt:
        return False, smallest, (f"the test cannot reach alpha {spec.alpha}: "
                                 f"{', '.join(blunt)}; use more permutations or more rows")
    if thin:
        return False, smallest, (f"tested on fewer than min_rows = {spec.min_rows} rows (warm-up "
                                 f"rows not counted): {', '.join(thin)}; a test on so few rows "
                                 "cannot show that the output does not depend on a feature: "
                                 "explain more rows")
    return True, smallest, (f"no named test significant at alpha {spec.alpha} (smallest "
                            f"p-value {smallest:.3g}), each on >= {spec.min_rows} rows")


def _same(a: Any, b: Any) -> bool:
    """Two recorded values (numbers, labels) are the same: 0.5 == 0.5, 1 == "1"."""
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and \
            not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)
    return a == b or (a is not None and b is not None and str(a) == str(b))


def _require_decision(spec: Any, details: dict[str, Any], check: str) -> None:
    """The check decided as the policy means (its threshold; none = the predicted class)."""
    if "threshold" not in details:
        raise _Unjudgeable(f"{check} did not record its decision threshold: cannot judge")
    used = details.get("threshold")
    if (used is None) != (spec.threshold is None) or (
            used is not None and not _same(used, spec.threshold)):
        said = "the predicted class" if spec.threshold is None else \
            f"threshold {spec.threshold}"
        raise _Unjudgeable(f"{check} decided by '{details.get('decision')}', but the policy "
                           f"means {said}: run it with the policy's threshold (or state the "
                           "threshold in the rule)")
    # The class the threshold applies to: another one turns the decision around.
    recorded = details.get("positive_class", "missing")
    if recorded == "missing" or (recorded is None) != (spec.positive_class is None) or (
            recorded is not None and not _same(recorded, spec.positive_class)):
        raise _Unjudgeable(f"{check} decided by '{details.get('decision')}' with positive_class "
                           f"{recorded!r}; the policy's is {spec.positive_class!r} (none: the "
                           "model's last class)")


def _judge_max_flip_rate(spec: Any, details: dict[str, Any]) -> tuple[bool, Any, str]:
    _require_decision(spec, details, "flip_test")
    features = _mapping(details.get("features"), "flip_test's per-feature results")
    result = features.get(spec.feature)
    if not isinstance(result, dict):
        raise _Unjudgeable(f"flip_test did not flip '{spec.feature}' (run it with features "
                           f"including '{spec.feature}')")
    rate = _share(result.get("flip_rate"), f"the flip rate of '{spec.feature}'")
    rows = _count(result.get("rows"), f"the rows flip_test used for '{spec.feature}'")
    if rows < 1:
        raise _Unjudgeable(f"flip_test decided no row for '{spec.feature}'")
    if _count(result.get("rows_with_alternative"),
              f"the rows of '{spec.feature}' set to another value") < 1:
        raise _Unjudgeable(f"no row could be set to another value of '{spec.feature}' (it has "
                           "one value in the data): nothing was flipped, so nothing is shown; "
                           "check on rows where it varies")
    if result.get("kind") == "shift":
        wanted = spec.shift if isinstance(spec.shift, list) else (
            [] if spec.shift is None else [spec.shift])
        used = result.get("shift") or []
        if not wanted or sorted(map(float, wanted)) != sorted(map(float, used)):
            raise _Unjudgeable(f"flip_test shifted '{spec.feature}' by {used}; the policy "
                               "must state the shift it means (shift: ...) and the check use "
                               "it")
    flips = _count(result.get("flips"), f"the flipped rows of '{spec.feature}'")
    if flips > rows or abs(flips / rows - rate) > 1e-9:
        raise _Unjudgeable(f"the flip rate {rate} of '{spec.feature}' is not {flips} of {rows} "
                           "rows: cannot judge")
    if spec.bound == "estimate":
        value, what = rate, "flip rate"
    else:
        # The rule's own bound, at the policy's confidence (the check's may differ).
        value = clopper_pearson_upper(flips, rows, spec.confidence)
        what = (f"upper {100 * spec.confidence:g}% bound of the flip rate (estimate "
                f"{rate:.3g} on {rows} rows)")
    return value <= spec.max, value, f"{what}: {bound_text(value, {'max': spec.max})}"


def clopper_pearson_upper(flips: int, rows: int, confidence: float) -> float:
    """The upper end of the two-sided Clopper-Pearson interval of ``flips`` of ``rows``."""
    from scipy.stats import beta

    if flips >= rows:
        return 1.0
    return float(beta.ppf(1 - (1 - confidence) / 2, flips + 1, rows - flips))


def _require_actionability(spec: Any, details: dict[str, Any]) -> None:
    """The check used the policy's actionability: at least its immutable features and
    monotone directions, exactly its bounds, its target and its decision threshold."""
    _require_decision(spec, details, "responsiveness")
    immutable = details.get("immutable")
    monotone = details.get("monotone")
    bounds = details.get("bounds")
    if not isinstance(immutable, list) or not isinstance(monotone, dict) or \
            not isinstance(bounds, dict):
        raise _Unjudgeable("responsiveness did not record its actionability metadata: cannot "
                           "judge")
    mutable = [f for f in spec.immutable if f not in immutable]
    if mutable:
        raise _Unjudgeable(f"responsiveness treated {mutable} as actionable; the policy says "
                           "they are immutable: run it with the policy's immutable features")
    loose = [f for f, sign in spec.monotone.items() if not _same(monotone.get(f), sign)]
    if loose:
        raise _Unjudgeable(f"responsiveness did not hold {loose} to the policy's monotone "
                           "directions")
    if {f: list(b) for f, b in bounds.items()} != {f: list(b) for f, b in spec.bounds.items()}:
        raise _Unjudgeable(f"responsiveness used the bounds {bounds}, the policy states "
                           f"{dict(spec.bounds)}: a bound widens or narrows recourse, so they "
                           "must be the same")
    wanted = spec.target
    if wanted is None:  # the default favourable decision: label 1 (or True)
        if not (_same(details.get("target"), 1) or details.get("target") is True):
            raise _Unjudgeable(f"responsiveness aimed at target {details.get('target')!r}; "
                               "the policy states none, which means label 1 (or True): state "
                               "the favourable decision in the rule (target: ...)")
    elif not _same(details.get("target"), wanted):
        raise _Unjudgeable(f"responsiveness aimed at target {details.get('target')!r}, the "
                           f"policy's favourable decision is {wanted!r}")


def _adverse_rows(details: dict[str, Any]) -> int:
    adverse = _count(details.get("adverse_rows"), "the number of adverse decisions")
    if adverse < 1:
        raise _Unjudgeable(f"no adverse decision among the {details.get('rows')} rows checked, "
                           "so nothing shows that recourse exists: check on data that has "
                           "adverse decisions")
    return adverse


def _judge_max_fixed_rate(spec: Any, details: dict[str, Any]) -> tuple[bool, Any, str]:
    _require_actionability(spec, details)
    adverse = _adverse_rows(details)
    rate = _share(details.get("fixed_rate"), "the fixed-prediction rate")
    return rate <= spec.max, rate, (f"{details.get('fixed_rows')} of {adverse} adverse "
                                    f"decisions fixed: {bound_text(rate, {'max': spec.max})}")


def _judge_actionable_top_k(spec: Any, details: dict[str, Any]) -> tuple[bool, Any, str]:
    _require_actionability(spec, details)
    _adverse_rows(details)
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
    share = _share(shares[str(spec.k)], f"the actionable top-{spec.k} share")
    reasons = result.get("non_actionable_reasons")
    reasons = reasons if isinstance(reasons, dict) else {}
    worst = sorted(((f, n) for f, n in reasons.items() if isinstance(n, int) and n > 0),
                   key=lambda fn: -fn[1])[:3]
    note = (f"; non-actionable reasons in the top {details.get('top_k')}: "
            + ", ".join(f"{f} ({n} rows)" for f, n in worst) if worst else "")
    return share >= spec.min_share, share, (
        f"share of adverse rows whose top {spec.k} {spec.method} reasons are all actionable: "
        f"{bound_text(share, {'min': spec.min_share})}{note}")


def _judge_max_rank_spread(spec: Any, details: dict[str, Any]) -> tuple[bool, Any, str]:
    if spec.refit == "clone" and details.get("refit") != "clone":
        raise _Unjudgeable(f"the Rashomon set was built by a {details.get('refit')!r} refit, "
                           "which decides what the set is: the rule needs the check's own "
                           "refits (no refit=), or refit: any in the rule")
    kept = _count(details.get("models_kept"), "the number of refits kept")
    if kept < spec.min_models:
        raise _Unjudgeable(f"only {kept} refits were kept within epsilon of the best loss "
                           f"(min_models = {spec.min_models}): too few to show a spread; "
                           "refit more models (rashomon n_models)")
    features = _mapping(details.get("features"), "rashomon's per-feature ranges")
    for name, entry in features.items():
        _mapping(entry, f"rashomon's range of '{name}'")
    if spec.features is not None:
        named = list(spec.features)
        missing = [f for f in named if f not in features]
        if missing:
            raise _Unjudgeable(f"rashomon has no rank range of {missing}")
    else:
        k = min(spec.k, len(features))
        if _count(details.get("top_k"), "rashomon's top_k") < k:
            raise _Unjudgeable(f"rashomon ranked its top {details.get('top_k')} features, the "
                               f"rule judges the top {k}: run it with top_k >= {k}")
        ranked = sorted(features, key=lambda f: -_number(
            features[f].get("mean"), f"the mean importance of '{f}'"))
        named = ranked[:k]
        if not named:
            raise _Unjudgeable("rashomon ranked no feature")
    spreads = {f: _count(features[f].get("rank_spread"), f"the rank spread of '{f}'")
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
    read it): the features they name and the decision, shift and actionability they state
    (rules that state different ones for one check cannot all be met by one run: the first
    rule's are used and the others fail closed)."""
    rules = [r for r in rules if CHECK_RULES.get(r.kind) == check]
    specs = [getattr(r, r.kind) for r in rules]
    if check == "importance_test":
        tests = sorted({t for s in specs for t in _tests_of(s.test)})
        return {"features": list(dict.fromkeys(f for s in specs for f in s.features)),
                "tests": tests, "alpha": min(s.alpha for s in specs)}
    if check == "flip_test":
        params: dict[str, Any] = {"features": list(dict.fromkeys(s.feature for s in specs))}
        if specs[0].threshold is not None:
            params["threshold"] = specs[0].threshold
        if specs[0].positive_class is not None:
            params["positive_class"] = specs[0].positive_class
        shifts = {s.feature: s.shift for s in specs if s.shift is not None}
        if shifts:
            params["shift"] = shifts
        return params
    if check == "responsiveness":
        first = specs[0]
        params = {"immutable": list(first.immutable), "monotone": dict(first.monotone),
                  "bounds": {f: list(b) for f, b in first.bounds.items()}}
        if first.target is not None:
            params["target"] = first.target
        if first.threshold is not None:
            params["threshold"] = first.threshold
        if first.positive_class is not None:
            params["positive_class"] = first.positive_class
        ks = [s.k for s in specs if hasattr(s, "k")]
        if ks:
            params["top_k"] = max(ks)
        return params
    if check == "rashomon":
        ks = [s.k for s in specs if s.features is None]
        return {"top_k": max(ks)} if ks else {}
    return {}
