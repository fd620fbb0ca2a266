"""Checks of explanations: stability, robustness, agreement, faithfulness, completeness, sanity,
rank uncertainty.

Each check is a plain function of the explain function and the data with an explicit random
state (Captum's metrics and scikit-learn's permutation_importance are the models). Cheap checks
(no or few model calls) run by default; costly ones run when named in ``checks=``.
"""

from __future__ import annotations

from mlflow_xai.plugin_api import hookimpl


@hookimpl
def xai_register_checks() -> list[type]:
    from .agreement import Agreement
    from .faithfulness import DeletionInsertion, FaithfulnessCorrelation, Infidelity
    from .sanity import ModelRandomization
    from .stability import (
        BootstrapImportance,
        Completeness,
        InputRobustness,
        SeedStability,
    )
    from .uncertainty import RankUncertainty

    return [SeedStability, InputRobustness, Agreement, BootstrapImportance, Completeness,
            DeletionInsertion, Infidelity, FaithfulnessCorrelation, ModelRandomization,
            RankUncertainty]
