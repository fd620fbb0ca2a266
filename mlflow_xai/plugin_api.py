"""The plugin API: everything a method pack may import from mlflow-xai, in one module.

A method pack (built-in or third-party) imports from ``mlflow_xai.plugin_api`` only: the names
in ``__all__`` below are stable (kept backward compatible, changes announced in the changelog).
Every other ``mlflow_xai`` module, and every name with a leading underscore, is internal and may
change in any release. The built-in packs under ``plugins/`` are held to this by
``tests/test_plugin_api.py``, so they can do nothing a third-party pack could not.

=====================  ===========================================================================
name                   what it is
=====================  ===========================================================================
``hookimpl``           marker for the registration hooks (``xai_register_explainers`` ...)
``Explainer``          base class of attribution methods (implement ``explain_rows``/``explain``)
``Selector``           base class of feature selectors (implement ``select``)
``Check``              base class of checks (implement ``run``)
``ExplainTask``        what explainers and selectors receive; model facts through ``raw_model``,
                       ``tree_kind``, ``torch_module`` and ``classes``
``Attribution``        what an explainer returns
``Selection``          what a selector returns
``SUBSET_DEFAULTS``    the subset parameters every selector accepts (``k``, ``threshold``)
``choose_subset``      the shared subset rule for selectors
``CheckContext``       what a check receives (``explain``, ``predict_rows``, ``torch_module`` ...)
``CheckResult``        what a check returns
``XaiError``           base of mlflow-xai's errors
``ConfigError``        a bad parameter or option (raise it from parameter validation)
``InvalidInputError``  data or targets that cannot be used as given (say which and what to pass)
``as_tensor``          ndarray -> float64 tensor on a device
``call_batched``       a tensor function over slices of rows, halving the slice on out-of-memory
``coalition_values``   mean model output over the background for every (row, coalition) mask
``method_class``       the registered class of a method by name (e.g. an explainer to drive RFE)
``feature_metric_names`` feature -> its segment in metric names (per-feature figure names)
=====================  ===========================================================================

Importing this module is cheap: torch, mlflow and the method libraries load only when used.
"""

from __future__ import annotations

from mlflow_xai.base import (
    SUBSET_DEFAULTS,
    Attribution,
    Check,
    CheckContext,
    CheckResult,
    Explainer,
    ExplainTask,
    Method,
    Selection,
    Selector,
    choose_subset,
)
from mlflow_xai.engine import as_tensor, call_batched, coalition_values
from mlflow_xai.errors import ConfigError, InvalidInputError, XaiError
from mlflow_xai.hookspecs import hookimpl
from mlflow_xai.metric_names import feature_metric_names
from mlflow_xai.standard_errors import importance_standard_errors

__all__ = [
    "SUBSET_DEFAULTS",
    "Attribution",
    "Check",
    "CheckContext",
    "CheckResult",
    "ConfigError",
    "ExplainTask",
    "Explainer",
    "InvalidInputError",
    "Selection",
    "Selector",
    "XaiError",
    "as_tensor",
    "call_batched",
    "choose_subset",
    "coalition_values",
    "feature_metric_names",
    "hookimpl",
    "importance_standard_errors",
    "method_class",
]


def method_class(name: str, kind: str | None = None) -> type[Method]:
    """The class registered under ``name`` (``kind``: 'explainer', 'selector', 'check' or any).

    Raises :class:`ConfigError` naming the valid methods when there is none. Call it when the
    method runs, not at import: the registry loads the packs, yours among them.
    """
    from mlflow_xai.plugins import get_registry

    return get_registry().get(str(name), kind).cls
