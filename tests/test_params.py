"""Strict, uniform parameter validation: every built-in method declares what each parameter
accepts (``param_types``) and :meth:`Method.validate_params` enforces it, at explain(),
autolog() and evaluator time alike."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest

import mlflow_xai
from mlflow_xai.base import Explainer, Method, describe_param_type
from mlflow_xai.errors import ConfigError
from mlflow_xai.plugins import get_registry

BUILT_IN_PACKAGES = ("mlflow_xai_torch", "mlflow_xai_shap", "mlflow_xai_importance",
                     "mlflow_xai_select", "mlflow_xai_checks")


def _built_in_methods() -> list[tuple[str, type]]:
    registry = get_registry()
    return [(name, registry.get(name).cls) for kind in ("explainer", "selector", "check")
            for name in registry.names(kind)
            if registry.get(name).cls.__module__.split(".")[0] in BUILT_IN_PACKAGES]


def _validate(name: str, **params: Any) -> dict[str, Any]:
    return get_registry().get(name).cls(**params).validate_params()


def test_every_built_in_method_declares_every_parameter():
    methods = _built_in_methods()
    assert len(methods) > 30
    for name, cls in methods:
        types = cls.all_param_types()
        assert set(types) == set(cls.defaults), (name, set(types) ^ set(cls.defaults))
        cls().validate_params()  # the defaults are valid


def test_float_n_samples_is_refused_with_a_clear_message():
    with pytest.raises(ConfigError) as info:
        _validate("kernel_shap", n_samples=10.5)
    assert str(info.value) == ("kernel_shap: parameter n_samples must be an integer >= 2 or "
                               "'auto', "
                               "got 10.5.")


def test_negative_n_samples_is_refused():
    with pytest.raises(ConfigError, match=r"kernel_shap: parameter n_samples must be an "
                                          r"integer >= 2 or 'auto', got -5"):
        _validate("kernel_shap", n_samples=-5)


@pytest.mark.parametrize("name, param, value, expected", [
    ("kernel_shap", "n_samples", True, "an integer >= 2 or 'auto'"),
    ("kernel_shap", "n_samples", 256.0, "an integer >= 2 or 'auto'"),
    ("kernel_shap", "n_samples", "256", "an integer >= 2 or 'auto'"),
    ("kernel_shap", "sampling", "random", "'kernel' or 'leverage'"),
    ("permutation_shap", "n_samples", 0, "an integer >= 1 or 'auto'"),
    ("lime", "n_samples", 1, "an integer >= 2"),
    ("lime", "kernel_width", -1.0, "a positive number or None"),
    ("permutation_importance", "n_repeats", 2.5, "an integer >= 1"),
    ("permutation_importance", "n_repeats", -1, "an integer >= 1"),
    ("permutation_importance", "scoring", "loss", "'auto', 'targets' or 'output'"),
    ("integrated_gradients", "n_steps", 0, "an integer >= 1"),
    ("integrated_gradients", "baseline", "ones", "'mean' or 'zeros'"),
    ("smoothgrad", "noise_level", -0.1, "a number >= 0"),
    ("gradient_shap", "n_samples", 12.0, "an integer >= 1"),
    ("rise", "p_keep", 1.0, "a number in (0, 1)"),
    ("sobol", "grid_size", 0, "an integer >= 1"),
    ("seed_stability", "n_seeds", 1, "an integer >= 2"),
    ("seed_stability", "k", 2.5, "a positive integer or None"),
    ("bootstrap_importance", "level", 1.0, "a number in (0, 1)"),
    ("infidelity", "subset_fraction", 0, "a number in (0, 1]"),
    ("deletion_insertion", "min_gain", float("nan"), "a number"),
    ("input_robustness", "methods", "kernel_shap", "a list of names or None"),
    ("mutual_info", "k", 2.5, "a positive integer or None"),
    ("mutual_info", "k", True, "a positive integer or None"),
    ("sequential_attention", "batch_size", 0, "an integer >= 1"),
    ("sequential_attention", "batch_size", 32.0, "an integer >= 1"),
    ("attribution_rfe", "step", 2.5, "a number in (0, 1) or an integer >= 1"),
    ("attribution_rfe", "rows", -3, "an integer >= 1"),
    ("inf_fs", "supervised", 1, "'auto', True or False"),
    ("distance_correlation", "method", "fast", "'auto', 'sorted' or 'blocked'"),
])
def test_bad_values_are_refused_uniformly(name, param, value, expected):
    with pytest.raises(ConfigError) as info:
        _validate(name, **{param: value})
    assert str(info.value) == f"{name}: parameter {param} must be {expected}, got {value!r}."


@pytest.mark.parametrize("name, params", [
    ("permutation_importance", {"scoring": "auto"}),
    ("inf_fs", {"supervised": "auto"}),
    ("inf_fs", {"supervised": False}),
    ("distance_correlation", {"method": "auto"}),
    ("attribution_rfe", {"step": 0.5}),
    ("attribution_rfe", {"step": 2}),
    ("mutual_info", {"k": 3, "threshold": 0}),
    ("agreement", {"k": None}),
    ("lime", {"kernel_width": None, "alpha": 0}),
    ("input_robustness", {"methods": ["kernel_shap"]}),
])
def test_auto_and_other_documented_values_still_work(name, params):
    assert _validate(name, **params).items() >= params.items()


def test_numpy_numbers_are_accepted_and_normalized():
    params = _validate("kernel_shap", n_samples=np.int64(64))
    assert params["n_samples"] == 64 and type(params["n_samples"]) is int
    params = _validate("rise", p_keep=np.float32(0.25), n_samples=np.int32(10))
    assert type(params["p_keep"]) is float and type(params["n_samples"]) is int


def test_autolog_refuses_a_bad_value_at_once():
    with pytest.raises(ConfigError, match="kernel_shap: parameter n_samples must be an integer "
                                          ">= 2 or 'auto', got -5"):
        mlflow_xai.autolog(explainers={"kernel_shap": {"n_samples": -5}})
    with pytest.raises(ConfigError, match="parameter n_repeats must be an integer >= 1, got 2.5"):
        mlflow_xai.autolog(explainers=["kernel_shap"],
                           checks={"seed_stability": {}},
                           selectors={"permutation": {"n_repeats": 2.5}})


def test_explain_refuses_a_float_n_samples(logreg, cancer_small):
    X, _ = cancer_small
    with pytest.raises(ConfigError, match="parameter n_samples must be an integer >= 2 or 'auto', "
                                          "got 10.5"):
        mlflow_xai.explain(logreg, X, explainers={"kernel_shap": {"n_samples": 10.5}},
                           checks=[], max_rows=5)


def test_attribution_rfe_checks_its_explainer_parameters_up_front():
    with pytest.raises(ConfigError, match="kernel_shap: parameter n_samples must be"):
        _validate("attribution_rfe", explainer_params={"n_samples": 1.5})
    with pytest.raises(ConfigError, match="unknown explainer 'kernal_shap'"):
        _validate("attribution_rfe", explainer="kernal_shap")


def test_a_malformed_rule_fails_where_the_method_is_defined():
    with pytest.raises(TypeError, match=r"Broken.param_types\['n'\]: cannot read the "
                                        r"parameter rule 'integer >= 1'"):
        class Broken(Explainer):
            name: ClassVar[str] = "broken"
            defaults: ClassVar[dict[str, Any]] = {"n": 1}
            param_types: ClassVar[dict[str, str]] = {"n": "integer >= 1"}


def test_rules_are_inherited_and_methods_without_rules_stay_unchecked():
    class Free(Method):
        name: ClassVar[str] = "free"
        defaults: ClassVar[dict[str, Any]] = {"anything": 1}

    assert Free(anything=2.5).validate_params() == {"anything": 2.5}

    class Base(Method):
        name: ClassVar[str] = "base"
        defaults: ClassVar[dict[str, Any]] = {"n": 2, "mode": "a"}
        param_types: ClassVar[dict[str, str]] = {"n": "int in [1, 3]", "mode": "'a' | 'b'"}

    class Child(Base):
        name: ClassVar[str] = "child"
        param_types: ClassVar[dict[str, str]] = {"mode": "'a' | 'c'"}

    assert Child(n=3, mode="c").validate_params() == {"n": 3, "mode": "c"}
    with pytest.raises(ConfigError, match=r"child: parameter n must be an integer in \[1, 3\]"):
        Child(n=4).validate_params()
    with pytest.raises(ConfigError, match="child: parameter mode must be 'a' or 'c', got 'b'"):
        Child(mode="b").validate_params()


@pytest.mark.parametrize("rule, words", [
    ("int >= 2", "an integer >= 2"),
    ("int > 0 | None", "a positive integer or None"),
    ("float > 0", "a positive number"),
    ("float in (0, 1]", "a number in (0, 1]"),
    ("float < 5", "a number < 5"),
    ("'auto' | True | False", "'auto', True or False"),
    ("str | dict | list[str] | bool | any",
     "a string, a dict, a list of names, True or False or any value"),
])
def test_rules_read_as_words(rule, words):
    assert describe_param_type(rule) == words


def test_methods_json_lists_what_each_parameter_accepts():
    import json

    from click.testing import CliRunner

    from mlflow_xai.cli import cli

    out = CliRunner().invoke(cli, ["methods", "--json", "--kind", "explainer"])
    assert out.exit_code == 0, out.output
    rows = {row["name"]: row for row in json.loads(out.output)}
    assert rows["kernel_shap"]["params"]["n_samples"] == {"default": 1024,
                                                          "accepts": "an integer >= 2 or 'auto'"}
    assert rows["permutation_importance"]["params"]["scoring"]["accepts"] == \
        "'auto', 'targets' or 'output'"
