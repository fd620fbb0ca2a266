"""Every hook a method pack can implement (pluggy project name ``mlflow_xai``).

A pack is a module or object registered under the ``mlflow_xai`` entry-point group whose
functions are decorated with :data:`mlflow_xai.hookimpl`. The hook names are checked when
plugins load, so a misspelt hook fails loudly instead of being ignored.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "mlflow_xai"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def xai_register_explainers() -> list[type]:
    """Return the explainer classes (subclasses of :class:`mlflow_xai.base.Explainer`).

    Each class has a unique ``name``; the core raises an error naming both providers when two
    packs register the same name. Return an empty list to register nothing.
    """


@hookspec
def xai_register_selectors() -> list[type]:
    """Return the feature-selector classes (subclasses of :class:`mlflow_xai.base.Selector`).

    Selectors rank features and pick a subset; they share the explainer name space rules.
    """


@hookspec
def xai_register_checks() -> list[type]:
    """Return the check classes (subclasses of :class:`mlflow_xai.base.Check`).

    Checks score explanations (stability, faithfulness, sanity); same name space rules.
    """
