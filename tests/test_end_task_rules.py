"""The end-task policy rules (significance, flip rate, recourse, Rashomon spread) on recorded
documents: each passes on good evidence and fails closed on missing, thin or malformed
evidence. (The checks that write the evidence are tested in their own files.)"""

from __future__ import annotations

import copy

import pytest

from mlflow_xai.errors import ConfigError
from mlflow_xai.governance import Facts, evaluate_policy, load_policy, methods_named

FEATURES = ["income", "debt", "age", "sex", "zip"]


def _test(p: float, rows: int = 400) -> dict:
    return {"p_value": p, "e_value": 1 / p, "rejected": p <= 0.05, "rows_used": rows,
            "steps": rows, "method": "betting", "stopped_early": p <= 0.05}


def _stability() -> dict:
    return {
        "importance_test": {"status": "ok", "details": {
            "alpha": 0.05, "method": "betting", "sampler": "regression", "rows_available": 400,
            "tests": ["marginal", "conditional"],
            "features": {"income": {"marginal": _test(0.001, 60), "conditional": _test(0.002, 80)},
                         "sex": {"marginal": _test(0.4), "conditional": _test(0.9)},
                         "zip": {"marginal": _test(0.01, 120), "conditional": _test(0.7)}}}},
        "flip_test": {"status": "ok", "details": {
            "confidence": 0.95, "decision": "predicted class",
            "features": {"sex": {"flip_rate": 0.002, "ci_low": 0.0001, "ci_high": 0.011,
                                 "rows": 1000, "flips": 2, "kind": "categories",
                                 "alternatives": []}}}},
        "responsiveness": {"status": "ok", "details": {
            "target": 1, "rows": 500, "adverse_rows": 200, "fixed_rows": 10, "fixed_rate": 0.05,
            "top_k": 3, "features": {},
            "methods": {"kernel_shap": {"actionable_top_k_share": {"1": 0.9, "2": 0.8,
                                                                   "3": 0.7},
                                        "non_actionable_reasons": {"age": 60}}}}},
        "rashomon": {"status": "ok", "details": {
            "models_fitted": 20, "models_kept": 12, "top_k": 2,
            "features": {"income": {"mean": 0.3, "rank_min": 1, "rank_max": 1, "rank_spread": 0},
                         "debt": {"mean": 0.2, "rank_min": 2, "rank_max": 4, "rank_spread": 2},
                         "age": {"mean": 0.1, "rank_min": 2, "rank_max": 5, "rank_spread": 3},
                         "sex": {"mean": 0.0, "rank_min": 3, "rank_max": 5, "rank_spread": 2},
                         "zip": {"mean": 0.0, "rank_min": 3, "rank_max": 5, "rank_spread": 2}}}},
    }


def _judge(rule: dict, stability: dict | None = None) -> dict:
    facts = Facts(metrics={}, ranks={}, methods_ok=["kernel_shap"], features=FEATURES,
                  checks=_stability() if stability is None else stability)
    result = evaluate_policy({"rules": [{"name": "r", **rule}]}, facts)
    return result["rules"][0]


@pytest.mark.parametrize("rule, verdict, value", [
    ({"require_significant": {"features": ["income"]}}, "pass", 0.002),
    ({"require_significant": {"features": ["income"], "test": "both"}}, "pass", 0.002),
    ({"require_significant": {"features": ["zip"]}}, "fail", 0.7),
    ({"require_significant": {"features": ["zip"], "test": "marginal"}}, "pass", 0.01),
    ({"require_significant": {"features": ["income"], "alpha": 0.001}}, "fail", 0.002),
    ({"forbid_significant": {"features": ["sex"]}}, "pass", 0.4),
    # zip carries information about the output (a proxy): the marginal test catches it.
    ({"forbid_significant": {"features": ["zip"]}}, "fail", 0.01),
    ({"forbid_significant": {"features": ["zip"], "test": "conditional"}}, "pass", 0.7),
    ({"max_flip_rate": {"feature": "sex", "max": 0.01}}, "fail", 0.011),
    ({"max_flip_rate": {"feature": "sex", "max": 0.01, "bound": "estimate"}}, "pass", 0.002),
    ({"max_flip_rate": {"feature": "sex", "max": 0.02}}, "pass", 0.011),
    ({"max_fixed_rate": {"max": 0.05}}, "pass", 0.05),
    ({"max_fixed_rate": {"max": 0.04}}, "fail", 0.05),
    ({"require_actionable_top_k": {"method": "kernel_shap", "k": 1, "min_share": 0.9}},
     "pass", 0.9),
    ({"require_actionable_top_k": {"method": "kernel_shap", "k": 3}}, "fail", 0.7),
    ({"max_rank_spread": {"max": 2}}, "pass", 2),           # top 2 by mean: income, debt
    ({"max_rank_spread": {"max": 1}}, "fail", 2),
    ({"max_rank_spread": {"max": 2, "features": ["age"]}}, "fail", 3),
])
def test_rules_judge_the_recorded_figures(rule, verdict, value):
    outcome = _judge(rule)
    assert outcome["verdict"] == verdict, outcome["message"]
    assert outcome["value"] == pytest.approx(value)


def test_messages_say_what_was_found():
    assert "zip (marginal: p = 0.01)" in _judge(
        {"forbid_significant": {"features": ["zip"]}})["message"]
    assert "age (60 rows)" in _judge(
        {"require_actionable_top_k": {"method": "kernel_shap", "k": 3}})["message"]
    assert "age (ranks 2-5)" in _judge(
        {"max_rank_spread": {"max": 2, "features": ["age"]}})["message"]
    hint = _judge({"require_significant": {"features": ["income"], "alpha": 0.001}})["message"]
    assert "run importance_test with alpha <= 0.001" in hint


def _without(path: list[str]) -> dict:
    stability = _stability()
    node = stability
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return stability


def _with(path: list[str], value) -> dict:
    stability = _stability()
    node = stability
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return stability


FORBID_SEX = {"forbid_significant": {"features": ["sex"]}}
FLIP_SEX = {"max_flip_rate": {"feature": "sex", "max": 0.5}}
FIXED = {"max_fixed_rate": {"max": 0.5}}
TOPK = {"require_actionable_top_k": {"method": "kernel_shap", "k": 1, "min_share": 0.1}}
SPREAD = {"max_rank_spread": {"max": 10}}


@pytest.mark.parametrize("rule, stability, words", [
    # the check did not run / did not finish
    (FORBID_SEX, _without(["importance_test"]), "did not run"),
    (FORBID_SEX, _with(["importance_test", "status"], "skipped"), "did not finish ok"),
    (FLIP_SEX, _with(["flip_test", "status"], "failed"), "did not finish ok"),
    (FIXED, _without(["responsiveness"]), "did not run"),
    (SPREAD, _without(["rashomon"]), "did not run"),
    # the feature or test the rule names was not tested: absence is not evidence
    (FORBID_SEX, _without(["importance_test", "details", "features", "sex"]),
     "did not test 'sex'"),
    (FORBID_SEX, _without(["importance_test", "details", "features", "sex", "conditional"]),
     "no conditional test of 'sex'"),
    (FLIP_SEX, _without(["flip_test", "details", "features", "sex"]), "did not flip 'sex'"),
    # too little evidence
    (FORBID_SEX, _with(["importance_test", "details", "features", "sex", "marginal",
                        "rows_used"], 50), "fewer than min_rows = 200"),
    (FIXED, _with(["responsiveness", "details", "adverse_rows"], 0), "no adverse decision"),
    (SPREAD, _with(["rashomon", "details", "models_kept"], 3), "only 3 refits"),
    (TOPK, _with(["responsiveness", "details", "methods"], {}), "no reasons of 'kernel_shap'"),
    ({"require_actionable_top_k": {"method": "kernel_shap", "k": 5}}, None,
     "run it with top_k >= 5"),
    (FLIP_SEX, _with(["flip_test", "details", "features", "sex", "rows"], 0), "no row"),
    # malformed or tampered figures
    (FORBID_SEX, _with(["importance_test", "details", "features", "sex", "marginal",
                        "p_value"], "0.9"), "not a finite number"),
    (FORBID_SEX, _with(["importance_test", "details", "features", "sex", "marginal",
                        "p_value"], float("nan")), "not a finite number"),
    (FLIP_SEX, _with(["flip_test", "details", "features", "sex", "ci_high"], None),
     "not a finite number"),
    (FIXED, _with(["responsiveness", "details", "fixed_rate"], True), "not a finite number"),
    (SPREAD, _with(["rashomon", "details"], "x"), "no details"),
])
def test_rules_fail_closed(rule, stability, words):
    outcome = _judge(rule, stability)
    assert outcome["verdict"] == "fail"
    assert words in outcome["message"], outcome["message"]


@pytest.mark.parametrize("rule, words", [
    ({"forbid_significant": {"features": ["gender"]}}, "names feature 'gender'"),
    ({"max_flip_rate": {"feature": "gender", "max": 0.1}}, "names feature 'gender'"),
    ({"max_rank_spread": {"max": 1, "features": ["gender"]}}, "names feature 'gender'"),
    ({"forbid_significant": {"features": []}}, "must be a non-empty list"),
    ({"forbid_significant": {"features": ["sex"], "alpha": 1.5}}, "alpha"),
    ({"forbid_significant": {"features": ["sex"], "test": "partial"}}, "'conditional'"),
    ({"forbid_significant": {"features": ["sex"], "min_rows": "200"}}, "min_rows"),
    ({"max_flip_rate": {"feature": "sex", "max": 1.5}}, "max_flip_rate.max"),
    ({"max_flip_rate": {"feature": "sex", "max": 0.1, "bound": "lower"}}, "bound"),
    ({"require_actionable_top_k": {"method": "kernel_shapp", "k": 3}}, "Did you mean"),
    ({"max_rank_spread": {"max": -1}}, "max_rank_spread.max"),
    ({"max_rank_spread": {"max": 1, "min_models": 1}}, "min_models"),
])
def test_bad_rules_are_refused(rule, words):
    with pytest.raises(ConfigError, match="rule 'r'") as info:
        _judge(rule)
    assert words in str(info.value)


def test_recompute_runs_the_checks_the_rules_read_with_their_features():
    policy = load_policy({"rules": [
        {"name": "a", "forbid_significant": {"features": ["sex"], "alpha": 0.01}},
        {"name": "b", "require_significant": {"features": ["income"],
                                              "test": "marginal"}},
        {"name": "c", "max_flip_rate": {"feature": "sex", "max": 0.01}},
        {"name": "d", "require_actionable_top_k": {"method": "kernel_shap", "k": 2}},
        {"name": "e", "max_rank_spread": {"max": 1}}]})
    explainers, checks = methods_named(policy)
    assert explainers == ["kernel_shap"]
    assert checks == {"importance_test": {"features": ["sex", "income"],
                                          "tests": ["conditional", "marginal"], "alpha": 0.01},
                      "flip_test": {"features": ["sex"]},
                      "responsiveness": {"top_k": 2}, "rashomon": {}}


def test_the_documents_are_not_changed_by_judging():
    stability = _stability()
    before = copy.deepcopy(stability)
    for rule in (FORBID_SEX, FLIP_SEX, FIXED, TOPK, SPREAD):
        _judge(rule, stability)
    assert stability == before
