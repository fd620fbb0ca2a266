"""Checks of explanations: stability, robustness, agreement, faithfulness, completeness, sanity.

Each check is a plain function of the explain function and the data with an explicit random
state (Captum's metrics and scikit-learn's permutation_importance are the models). Cheap checks
(no or few model calls) run by default; costly ones run when named in ``checks=``.
"""

from __future__ import annotations

from mlflow_xai import hookimpl


@hookimpl
def xai_register_checks() -> list[type]:
    from mlflow_xai_checks.agreement import Agreement
    from mlflow_xai_checks.faithfulness import DeletionInsertion, FaithfulnessCorrelation, Infidelity
    from mlflow_xai_checks.sanity import ModelRandomization
    from mlflow_xai_checks.stability import (
        BootstrapImportance,
        Completeness,
        InputRobustness,
        SeedStability,
    )

    return [SeedStability, InputRobustness, Agreement, BootstrapImportance, Completeness,
            DeletionInsertion, Infidelity, FaithfulnessCorrelation, ModelRandomization]
