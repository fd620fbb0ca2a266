"""Batched torch explainers: Kernel/Permutation/Exact SHAP, Shapley interactions (FSII), LIME,
gradient methods, RISE, Sobol.

Every method here evaluates the model in large batches on the chosen device (CUDA when there
is one) through the plugin API's batched engine (``coalition_values``, ``call_batched``);
none loops over explained rows in Python.
"""

from __future__ import annotations

from mlflow_xai.plugin_api import hookimpl


@hookimpl
def xai_register_explainers() -> list[type]:
    from .exact import ExactShap
    from .gradients import GRADIENT_METHODS
    from .images import Rise, Sobol
    from .interactions import ShapleyInteractions
    from .kernel import KernelShap
    from .lime import Lime
    from .permutation import PermutationShap

    return [KernelShap, PermutationShap, ExactShap, Lime, *GRADIENT_METHODS, Rise, Sobol,
            ShapleyInteractions]
