"""The plugin manager: loads method packs from the ``mlflow_xai`` entry-point group.

Built-in packs (``plugins/`` in the source tree) are found through the same group as any
third-party package. ``MLFLOW_XAI_DISABLE_PLUGINS=a,b`` skips entry points by name. A pack
that fails to import is a warning naming it; the others still load.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import threading
import warnings
from dataclasses import dataclass

import pluggy

from mlflow_xai import hookspecs
from mlflow_xai.base import REQUIREMENTS, Method
from mlflow_xai.errors import ConfigError, PluginError

ENTRY_POINT_GROUP = "mlflow_xai"
DISABLE_ENV = "MLFLOW_XAI_DISABLE_PLUGINS"
KINDS = ("explainer", "selector", "check")
_HOOK_FOR_KIND = {
    "explainer": "xai_register_explainers",
    "selector": "xai_register_selectors",
    "check": "xai_register_checks",
}


@dataclass(frozen=True)
class MethodInfo:
    """One registered method and where it comes from."""

    name: str
    kind: str
    cls: type[Method]
    plugin: str
    package: str
    version: str

    @property
    def requires(self) -> tuple[str, ...]:
        return tuple(self.cls.requires)

    @property
    def data_types(self) -> tuple[str, ...]:
        return tuple(self.cls.data_types)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "kind": self.kind,
            "plugin": self.plugin,
            "package": self.package,
            "version": self.version,
            "requires": [REQUIREMENTS.get(r, r) for r in self.requires],
            "data": list(self.data_types),
            "description": self.cls.description,
        }


class Registry:
    """Loaded plugins and the methods they register, by name."""

    def __init__(self, pm: pluggy.PluginManager, methods: dict[str, MethodInfo],
                 failed: dict[str, str]) -> None:
        self.pm = pm
        self.methods = methods
        self.failed = failed

    def names(self, kind: str | None = None) -> list[str]:
        return [n for n, m in self.methods.items() if kind is None or m.kind == kind]

    def get(self, name: str, kind: str | None = None) -> MethodInfo:
        info = self.methods.get(name)
        if info is None or (kind is not None and info.kind != kind):
            valid = ", ".join(sorted(self.names(kind))) or "(none registered)"
            what = kind or "method"
            raise ConfigError(f"unknown {what} '{name}'. Valid {what}s: {valid}.")
        return info


_lock = threading.Lock()
_registry: Registry | None = None


def get_registry(*, reload: bool = False) -> Registry:
    """The process-wide registry, loaded on first use (``reload=True`` rescans entry points)."""
    global _registry
    with _lock:
        if _registry is None or reload:
            _registry = _load()
        return _registry


def _disabled_names() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {n.strip() for n in raw.split(",") if n.strip()}


def _load() -> Registry:
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    disabled = _disabled_names()
    provenance: dict[str, tuple[str, str]] = {}
    failed: dict[str, str] = {}
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in disabled or pm.has_plugin(ep.name):
            continue
        dist = getattr(ep, "dist", None)
        package = dist.metadata["Name"] if dist else ep.module
        version = dist.version if dist else "unknown"
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken pack must not take the others down
            failed[ep.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"mlflow-xai plugin '{ep.name}' from package '{package}' failed to load and is "
                f"skipped: {type(exc).__name__}: {exc}. Disable it with {DISABLE_ENV}={ep.name}.",
                RuntimeWarning,
                stacklevel=3,
            )
            continue
        provenance[ep.name] = (package, version)
    pm.check_pending()
    methods = _collect(pm, provenance)
    return Registry(pm, methods, failed)


def _collect(pm: pluggy.PluginManager, provenance: dict[str, tuple[str, str]]
             ) -> dict[str, MethodInfo]:
    methods: dict[str, MethodInfo] = {}
    for kind in KINDS:
        hook = getattr(pm.hook, _HOOK_FOR_KIND[kind])
        for impl in hook.get_hookimpls():
            plugin_name = impl.plugin_name
            package, version = provenance.get(plugin_name, (plugin_name, "unknown"))
            for cls in impl.function() or []:
                _validate_class(cls, kind, plugin_name)
                if cls.name in methods:
                    other = methods[cls.name]
                    raise PluginError(
                        f"method name '{cls.name}' is registered twice: by plugin "
                        f"'{other.plugin}' (package {other.package}) and by plugin "
                        f"'{plugin_name}' (package {package}). Rename one, or disable a plugin "
                        f"with {DISABLE_ENV}={plugin_name}."
                    )
                methods[cls.name] = MethodInfo(cls.name, kind, cls, plugin_name, package, version)
    # Deterministic order whatever the plugin load order: by kind, then name.
    return dict(sorted(methods.items(), key=lambda kv: (KINDS.index(kv[1].kind), kv[0])))


def _validate_class(cls: object, kind: str, plugin_name: str) -> None:
    from mlflow_xai.base import Check, Explainer, Selector

    base = {"explainer": Explainer, "selector": Selector, "check": Check}[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(
            f"plugin '{plugin_name}' registered {cls!r} as a {kind}, but it is not a subclass of "
            f"mlflow_xai.base.{base.__name__}."
        )
    if not cls.name or not isinstance(cls.name, str):
        raise PluginError(f"plugin '{plugin_name}' registered {cls.__name__} without a name.")


def list_methods(kind: str | None = None) -> list[dict]:
    """Every registered method: name, kind, provider package and version, needs and data."""
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"unknown kind '{kind}'. Valid kinds: {', '.join(KINDS)}.")
    reg = get_registry()
    return [m.as_dict() for m in reg.methods.values() if kind is None or m.kind == kind]
