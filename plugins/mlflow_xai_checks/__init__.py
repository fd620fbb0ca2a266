"""Checks of explanations: stability, robustness, agreement, faithfulness, completeness, sanity,
rank uncertainty; and governance end tasks answered by querying the model: importance tests
with error control, flip tests, recourse (responsiveness) and the Rashomon spread.

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
    from .importance_test import ImportanceTest
    from .rashomon import Rashomon
    from .recourse import FlipTest, Responsiveness
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
            RankUncertainty, ImportanceTest, FlipTest, Responsiveness, Rashomon]
