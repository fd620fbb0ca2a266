"""The declared plugin API (``mlflow_xai.plugin_api``) and the package's import hygiene.

* Every built-in method pack imports from mlflow-xai only the names in ``plugin_api.__all__``,
  never another built-in pack, and treats the task's model handle as opaque: a built-in pack
  can do nothing a third-party pack could not.
* ``from mlflow_xai import *`` works and ``import mlflow_xai`` stays cheap.
* One factory builds the tasks the pipeline hands to methods.
* The package's module import graph has no cycle.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlflow_xai
from mlflow_xai import plugin_api

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
PACKAGE = ROOT / "mlflow_xai"
API = "mlflow_xai.plugin_api"
BUILTIN_PACKS = sorted(p.name for p in PLUGINS.iterdir() if (p / "__init__.py").exists())
PACK_FILES = sorted(PLUGINS.rglob("*.py"))


# --------------------------------------------------------------------------------------------
# The API module itself
# --------------------------------------------------------------------------------------------

def test_every_declared_name_exists_and_is_public():
    assert len(set(plugin_api.__all__)) == len(plugin_api.__all__)
    for name in plugin_api.__all__:
        assert not name.startswith("_"), name
        assert hasattr(plugin_api, name), f"plugin_api.__all__ names {name!r}, which is missing"


def test_every_declared_name_is_documented_in_the_readme():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Plugins"):]
    section = section[:section.index("\n## ", 1)]
    for name in plugin_api.__all__:
        assert f"`{name}`" in section, f"README 'Plugins' does not document {name}"


# --------------------------------------------------------------------------------------------
# What the built-in packs import
# --------------------------------------------------------------------------------------------

def _pack_of(path: Path) -> tuple[str, int]:
    """(the pack a file belongs to, how many packages deep its module is inside the pack)."""
    parts = path.relative_to(PLUGINS).parts
    return parts[0], len(parts) - 2


def _violations(path: Path, source: str | None = None) -> list[str]:
    """Every import in ``path`` (at any depth, not only at the top) a method pack must not make,
    and every name it uses from the API that the API does not declare."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    own, depth = _pack_of(path)
    declared = set(plugin_api.__all__)
    aliases: set[str] = set()       # local names bound to the plugin_api module itself
    bad: list[str] = []

    def check_module(module: str, line: int) -> bool:
        """False (and a violation recorded) for a forbidden module; True for the API."""
        top = module.split(".")[0]
        if top in BUILTIN_PACKS and top != own:
            bad.append(f"{line}: imports another built-in pack: {module}")
        elif module == API:
            return True
        elif top == "mlflow_xai":
            bad.append(f"{line}: imports {module}; a pack may import only {API}")
        return False

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if check_module(alias.name, node.lineno):
                    if alias.asname is None:  # binds "mlflow_xai": every internal reachable
                        bad.append(f"{node.lineno}: 'import {API}' needs 'as <name>'")
                    else:
                        aliases.add(alias.asname)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > depth + 1:
                    bad.append(f"{node.lineno}: relative import leaves the pack {own}")
                continue
            module = node.module or ""
            if module == "mlflow_xai":
                for alias in node.names:
                    if alias.name == "plugin_api":
                        aliases.add(alias.asname or alias.name)
                    else:
                        bad.append(f"{node.lineno}: 'from mlflow_xai import {alias.name}'; "
                                   f"import it from {API}")
            elif check_module(module, node.lineno):
                for alias in node.names:
                    if alias.name != "*" and alias.name not in declared:
                        bad.append(f"{node.lineno}: {alias.name} is not in {API}.__all__")
        elif isinstance(node, ast.Call):
            # importlib.import_module("...") / __import__("...") with a literal name.
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__") and node.args and isinstance(
                    node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                check_module(node.args[0].value, node.lineno)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                node.value.id in aliases and node.attr not in declared:
            bad.append(f"{node.lineno}: {node.value.id}.{node.attr} is not in {API}.__all__")
    return bad


def test_there_are_built_in_packs_to_check():
    assert {"mlflow_xai_torch", "mlflow_xai_shap", "mlflow_xai_checks",
            "mlflow_xai_select", "mlflow_xai_importance"} <= set(BUILTIN_PACKS)
    assert len(PACK_FILES) >= 20


@pytest.mark.parametrize("path", PACK_FILES, ids=lambda p: str(p.relative_to(PLUGINS)))
def test_pack_imports_only_the_declared_plugin_api(path):
    assert _violations(path) == []


@pytest.mark.parametrize("path", PACK_FILES, ids=lambda p: str(p.relative_to(PLUGINS)))
def test_pack_treats_the_model_handle_as_opaque(path):
    """``task.model`` / ``ctx.model`` may be passed on, never read into: model facts come
    through the declared accessors (``raw_model``, ``tree_kind``, ``torch_module``,
    ``classes``)."""
    tree = ast.parse(path.read_text())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and \
                node.value.attr == "model":
            bad.append(f"{node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in (
                "getattr", "hasattr") and node.args and isinstance(node.args[0], ast.Attribute) \
                and node.args[0].attr == "model":
            bad.append(f"{node.lineno}: {ast.unparse(node)}")
    assert bad == []


def test_the_checker_catches_what_it_should():
    """The rules above fail on the imports they exist to stop (a regression guard)."""
    sample = PLUGINS / "mlflow_xai_shap" / "not_a_real_module.py"
    lines = [
        "import mlflow_xai.engine",
        "import mlflow_xai.plugin_api",
        "import mlflow_xai.plugin_api as api",
        "from mlflow_xai import hookimpl",
        "from mlflow_xai.model import resolve_model",
        "from mlflow_xai.plugin_api import Explainer, build_task",
        "from mlflow_xai_torch._shapley import tensors",
        "from ..mlflow_xai_torch import kernel",
        "from . import tree",
        "x = api.coalition_values, api.engine",
        "def f():",
        "    from mlflow_xai.plugins import get_registry",
    ]
    source = "\n".join(lines)
    found = "\n".join(_violations(sample, source))
    for expected in ("1: imports mlflow_xai.engine", "2: 'import mlflow_xai.plugin_api' needs",
                     "4: 'from mlflow_xai import hookimpl'", "5: imports mlflow_xai.model",
                     "6: build_task is not in", "7: imports another built-in pack",
                     "8: relative import leaves", "10: api.engine is not in",
                     "12: imports mlflow_xai.plugins"):
        assert expected in found, (expected, found)
    assert "3:" not in found and "9:" not in found and "api.coalition_values" not in found


# --------------------------------------------------------------------------------------------
# The public accessors that replaced reaching into the model adapter
# --------------------------------------------------------------------------------------------

def test_task_model_facts_come_through_public_accessors():
    from sklearn.ensemble import RandomForestClassifier

    from mlflow_xai.model import resolve_model

    X = np.random.default_rng(0).normal(size=(30, 3))
    forest = RandomForestClassifier(n_estimators=3, random_state=0).fit(X, X[:, 0] > 0)
    task = plugin_api.ExplainTask(predict=lambda a: a[:, 0], X=X, background=X[:5],
                                  feature_names=["a", "b", "c"], model=resolve_model(forest))
    assert task.raw_model is forest and task.tree_kind == "sklearn"
    assert task.torch_module is None and list(task.classes) == [False, True]
    bare = plugin_api.ExplainTask(predict=lambda a: a[:, 0], X=X, background=X[:5],
                                  feature_names=["a", "b", "c"])
    assert (bare.raw_model, bare.tree_kind, bare.torch_module, bare.classes) == (None,) * 4


def test_method_class_finds_registered_methods_and_names_the_valid_ones():
    assert plugin_api.method_class("kernel_shap", "explainer").name == "kernel_shap"
    assert issubclass(plugin_api.method_class("mutual_info"), plugin_api.Selector)
    with pytest.raises(plugin_api.ConfigError, match="Valid explainers"):
        plugin_api.method_class("mutual_info", "explainer")


def test_model_driven_selectors_run_through_the_api():
    """attribution_rfe finds its explainer with method_class and refits task.raw_model;
    permutation reads task.classes."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(200, 6)), columns=[f"x{i}" for i in range(6)])
    y = (X["x0"] - X["x1"] > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    expl = mlflow_xai.explain(
        model, X, targets=y, explainers=[], checks=[], selection_bootstrap=0, progress=False,
        selectors={"attribution_rfe": {"k": 2, "step": 0.5, "rows": 30, "background_rows": 10,
                                       "explainer_params": {"n_samples": 64}},
                   "permutation": {"k": 2}})
    rfe = expl.selection["attribution_rfe"]
    assert rfe.info["mode"] == "refit" and set(rfe.selected) == {"x0", "x1"}
    assert set(expl.selection["permutation"].selected) == {"x0", "x1"}


# --------------------------------------------------------------------------------------------
# One factory for the tasks the pipeline hands to methods
# --------------------------------------------------------------------------------------------

def test_only_the_factory_builds_tasks_inside_the_core():
    """ExplainTask(...) is built by base.build_task only (testing.py builds synthetic tasks
    for the public contract suite, with no run behind them)."""
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name in ("base.py", "testing.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ExplainTask":
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_the_factory_fills_the_same_fields_for_every_caller():
    from mlflow_xai.base import build_task
    from mlflow_xai.data import prepare_data
    from mlflow_xai.model import ModelAdapter
    from mlflow_xai.pipeline import CountingPredict

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40),
                      "c": rng.choice(["u", "v"], size=40)})
    y = np.array(["no", "yes"])[(X["a"] > 0).to_numpy().astype(int)]

    def predict(frame: pd.DataFrame) -> np.ndarray:  # reads the string column as it is
        p = 1 / (1 + np.exp(-frame["a"].to_numpy(dtype=float) - (frame["c"] == "u")))
        return np.column_stack([1 - p, p])

    adapter = ModelAdapter(predict=predict, kind="callable", is_classifier=True,
                           classes=["no", "yes"])
    prepared = prepare_data(X, adapter, targets=y, background_rows=10, max_rows=40, seed=0)
    counter = CountingPredict(adapter, prepared)
    done = []
    task = build_task(counter=counter, prepared=prepared, model=adapter, device="cpu",
                      X=prepared.X[:5], targets=prepared.targets[:5], output_index=1, seed=3,
                      on_rows_done=done.append)
    assert task.output_label == "yes" and task.seed == 3 and task.is_classifier is True
    assert task.categorical == (2,) and task.data_type == "tabular" and task.image_shape is None
    assert task.predict(task.X).shape == (5,) and task.predict_full(task.X).shape == (5, 2)
    task.count_model_rows(7)
    task.on_rows_done(5)
    assert counter.rows == 5 + 5 + 7 and done == [5]
    assert task.max_batch_rows > 0 and task.predict_tensor is not None
    assert task.forward_grad is None  # not a torch module


# --------------------------------------------------------------------------------------------
# The package's own imports
# --------------------------------------------------------------------------------------------

def test_star_import_gives_every_public_name():
    namespace: dict = {}
    exec("from mlflow_xai import *", namespace)  # noqa: S102 - the statement under test
    assert set(mlflow_xai.__all__) <= set(namespace)
    assert namespace["Explanations"].__name__ == "Explanations"


@pytest.mark.parametrize("module", ["mlflow_xai", API])
def test_import_is_cheap(module):
    """No mlflow and no torch at import, for the package and for the plugin API."""
    out = subprocess.run(
        [sys.executable, "-c",
         f"import {module}, sys; print('mlflow' in sys.modules, 'torch' in sys.modules)"],
        capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr


#: Imports made inside a function that close a cycle, each deferred on purpose and outside
#: this test's reach to remove. Everything else, at any depth, must form no cycle.
DEFERRED_BACK_EDGES = {
    # pipeline.run hands the work to a worker process, whose entry point runs pipeline.run.
    ("mlflow_xai.pipeline", "mlflow_xai.worker"),
    # Explanations.log() is a convenience that hands the result to the recorder, which runs
    # the pipeline that builds Explanations.
    ("mlflow_xai.explanations", "mlflow_xai.recording"),
}


def _module_name(path: Path) -> str:
    return "mlflow_xai" if path.name == "__init__.py" else f"mlflow_xai.{path.stem}"


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The mlflow_xai modules ``path`` imports (``if TYPE_CHECKING:`` blocks excluded: they never
    run). ``top_level_only``: only what runs when the module is imported."""
    modules = {_module_name(p) for p in PACKAGE.glob("*.py")}
    found: set[str] = set()

    def visit(node: ast.AST, nested: bool) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child, nested)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "mlflow_xai":
                    found.add(alias.name if alias.name in modules else "mlflow_xai")
        elif isinstance(node, ast.ImportFrom):
            base = "mlflow_xai" if node.level else (node.module or "")
            if node.level and node.module:
                base = f"mlflow_xai.{node.module}"
            if base.split(".")[0] != "mlflow_xai":
                return
            if base == "mlflow_xai":
                for alias in node.names:  # "from mlflow_xai import tags" names a module
                    sub = f"mlflow_xai.{alias.name}"
                    found.add(sub if sub in modules else "mlflow_xai")
            else:
                found.add(base)
        inner = nested or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        if top_level_only and inner:
            return
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found & modules


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}   # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := dfs(start)):
            return cycle
    return None


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    graph = {_module_name(p): _imports(p, top_level_only=top_level_only)
             for p in PACKAGE.glob("*.py")}
    for name, imported in graph.items():
        imported.discard(name)
    return graph


def test_no_import_cycle_at_import_time():
    """Module-level imports (what runs on import): no cycle at all, no exception."""
    cycle = _find_cycle(_graph(top_level_only=True))
    assert cycle is None, " -> ".join(cycle)


def test_no_import_cycle_counting_deferred_imports():
    """All imports, including those inside functions: no cycle apart from the listed deferred
    back edges (pipeline and checking, for one, no longer import each other)."""
    graph = _graph(top_level_only=False)
    for src, dst in DEFERRED_BACK_EDGES:
        graph[src].discard(dst)
    cycle = _find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)
    assert "mlflow_xai.pipeline" not in _graph(top_level_only=False)["mlflow_xai.checking"]


def test_the_cycle_finder_finds_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None
    assert re.fullmatch(r"mlflow_xai(\.\w+)?", _module_name(PACKAGE / "pipeline.py"))
