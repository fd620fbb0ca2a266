"""The pluggy registry: loading, provenance, conflicts, broken and disabled plugins."""

from __future__ import annotations

import inspect
import re
import types
import warnings
from pathlib import Path
from typing import ClassVar

import pluggy
import pytest

from mlflow_xai import hookimpl, hookspecs, plugins
from mlflow_xai.base import Explainer
from mlflow_xai.errors import PluginError

ROOT = Path(__file__).resolve().parents[1]


class _Dist:
    def __init__(self, name: str, version: str) -> None:
        self.metadata = {"Name": name}
        self.version = version


class _EntryPoint:
    def __init__(self, name: str, plugin: object, package: str = "pkg", version: str = "1.0"):
        self.name, self._plugin = name, plugin
        self.module = name
        self.dist = _Dist(package, version)

    def load(self) -> object:
        if isinstance(self._plugin, Exception):
            raise self._plugin
        return self._plugin


def _pack(*classes: type) -> types.SimpleNamespace:
    @hookimpl
    def xai_register_explainers():
        return list(classes)

    return types.SimpleNamespace(xai_register_explainers=xai_register_explainers)


def _explainer(method_name: str) -> type:
    class _E(Explainer):
        name: ClassVar[str] = method_name

    return _E


@pytest.fixture()
def fake_entry_points(monkeypatch):
    def install(*eps):
        monkeypatch.setattr(plugins.md, "entry_points", lambda group: list(eps))
        return plugins.get_registry(reload=True)

    yield install
    monkeypatch.undo()
    plugins.get_registry(reload=True)


def test_builtin_packs_load_through_the_entry_point_group():
    registry = plugins.get_registry(reload=True)
    assert {"shap", "torch", "importance"} <= set(dict(registry.pm.list_name_plugin()))
    info = registry.get("tree_shap")
    assert (info.kind, info.plugin, info.package) == ("explainer", "shap", "mlflow-xai")
    assert info.requires == ("tree",)


def test_duplicate_method_names_name_both_providers(fake_entry_points):
    with pytest.raises(PluginError) as err:
        fake_entry_points(
            _EntryPoint("first", _pack(_explainer("dup")), package="pkg-one"),
            _EntryPoint("second", _pack(_explainer("dup")), package="pkg-two"),
        )
    message = str(err.value)
    assert "'dup' is registered twice" in message
    assert "pkg-one" in message and "pkg-two" in message


def test_a_plugin_that_fails_to_import_is_a_warning_and_the_rest_load(fake_entry_points):
    with pytest.warns(RuntimeWarning, match="plugin 'broken' from package 'pkg-broken'.*"
                                            "ModuleNotFoundError"):
        registry = fake_entry_points(
            _EntryPoint("broken", ModuleNotFoundError("No module named 'cupy'"),
                        package="pkg-broken"),
            _EntryPoint("fine", _pack(_explainer("fine_method")), package="pkg-fine",
                        version="2.5"),
        )
    assert registry.names() == ["fine_method"]
    assert registry.get("fine_method").version == "2.5"
    assert "cupy" in registry.failed["broken"]


def test_disable_env_skips_named_plugins(fake_entry_points, monkeypatch):
    monkeypatch.setenv(plugins.DISABLE_ENV, " a , c")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry = fake_entry_points(
            _EntryPoint("a", _pack(_explainer("from_a"))),
            _EntryPoint("b", _pack(_explainer("from_b"))),
            _EntryPoint("c", RuntimeError("must not even be imported")),
        )
    assert registry.names() == ["from_b"]


def test_a_misspelt_hook_fails_loudly(fake_entry_points):
    @hookimpl
    def xai_register_explainer():  # missing the final "s"
        return []

    with pytest.raises(pluggy.PluginValidationError, match="xai_register_explainer"):
        fake_entry_points(_EntryPoint("typo", types.SimpleNamespace(
            xai_register_explainer=xai_register_explainer)))


def test_registering_something_that_is_not_a_method_class(fake_entry_points):
    with pytest.raises(PluginError, match="not a subclass of mlflow_xai.base.Explainer"):
        fake_entry_points(_EntryPoint("bad", _pack(dict)))


def test_list_methods_describes_needs_and_data():
    import mlflow_xai

    rows = {m["name"]: m for m in mlflow_xai.list_methods()}
    assert rows["kernel_shap"]["requires"] == ["black-box predict"]
    assert rows["tree_shap"]["requires"] == [
        "tree internals (scikit-learn trees, XGBoost, LightGBM)"]
    assert rows["kernel_shap"]["data"] == ["tabular"]
    assert rows["rise"]["data"] == ["image"]
    assert rows["integrated_gradients"]["data"] == ["tabular", "image"]
    assert rows["integrated_gradients"]["requires"] == ["gradients (torch nn.Module)"]
    assert {r["kind"] for r in rows.values()} == {"explainer", "check", "selector"}
    assert rows["mutual_info"]["requires"] == ["targets (labels)"]
    assert rows["permutation"]["requires"] == ["black-box predict", "targets (labels)"]
    assert rows["inf_fs"]["requires"] == []          # data only; targets when given
    assert rows["agreement"]["requires"] == ["black-box predict"]
    with pytest.raises(mlflow_xai.errors.ConfigError, match="Valid kinds"):
        mlflow_xai.list_methods("explainers")


def test_every_hookspec_is_tested_and_documented():
    """Meta-test (datasette style): a new hookspec needs a test and a README entry."""
    specs = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
             if name.startswith("xai_")]
    assert specs == ["xai_register_checks", "xai_register_explainers", "xai_register_selectors"]
    tests_text = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    readme = (ROOT / "README.md").read_text()
    for spec in specs:
        assert re.search(rf"\b{spec}\b", readme), f"{spec} is not documented in README.md"
    for spec in specs:
        assert f"def {spec}" in tests_text, f"no test implements the hook {spec}"


def test_selector_and_check_hooks_register_their_kinds(fake_entry_points):
    from mlflow_xai.base import Check, Selector

    class Sel(Selector):
        name: ClassVar[str] = "fake_selector"

    class Chk(Check):
        name: ClassVar[str] = "fake_check"

    @hookimpl
    def xai_register_selectors():
        return [Sel]

    @hookimpl
    def xai_register_checks():
        return [Chk]

    registry = fake_entry_points(_EntryPoint("kinds", types.SimpleNamespace(
        xai_register_selectors=xai_register_selectors, xai_register_checks=xai_register_checks)))
    assert registry.get("fake_selector").kind == "selector"
    assert registry.get("fake_check").kind == "check"
    with pytest.raises(PluginError, match="not a subclass of mlflow_xai.base.Selector"):
        fake_entry_points(_EntryPoint("wrong", types.SimpleNamespace(
            xai_register_selectors=hookimpl(lambda: [Chk]))))
