"""The ``xai`` MLflow evaluator: ``mlflow.models.evaluate(..., evaluators=["xai"])``.

Registered through the ``mlflow.model_evaluator`` entry point. It runs the same pipeline as
:func:`mlflow_xai.explain`, logs the ``xai/`` artifacts to the evaluation run and returns the
metrics, which MLflow links to the evaluated model's ``model_id``.

When ``evaluators`` is not given, MLflow runs every installed evaluator that accepts the model
type; ``xai`` then runs too for classifiers and regressors (as MLflow's own ``shap`` evaluator
does), and never raises: a failure is a warning, the run tag ``mlflow_xai.status=failed`` and
``xai/error.txt``. Pass ``{"strict": True}`` to make failures raise, or ``{"disable": True}``
to turn ``xai`` off.
"""

from __future__ import annotations

import difflib
import logging
import threading
from typing import Any

from mlflow.models.evaluation import base as _mlflow_evaluation
from mlflow.models.evaluation.base import EvaluationResult, ModelEvaluator

_logger = logging.getLogger(__name__)
_requested = threading.local()


def _remember_requested(resolve: Any) -> Any:
    """Wrap MLflow's evaluator resolution to learn whether ``xai`` was asked for by name.

    MLflow passes an evaluator neither the list it was called with nor whether it was named;
    ``evaluate()`` replaces its ``evaluators`` argument with the resolved bundles. Unnamed (the
    ``evaluators=None`` default runs every installed evaluator), ``xai`` must never make
    ``evaluate`` fail: every error, configuration errors included, becomes a warning and a
    recorded status.
    """
    if getattr(resolve, "_mlflow_xai", False):
        return resolve

    def resolve_and_remember(evaluators: Any, *args: Any, **kwargs: Any) -> Any:
        names = [evaluators] if isinstance(evaluators, str) else list(evaluators or [])
        _requested.by_name = "xai" in names
        return resolve(evaluators, *args, **kwargs)

    resolve_and_remember._mlflow_xai = True
    return resolve_and_remember


if hasattr(_mlflow_evaluation, "resolve_evaluators_and_configs"):
    _mlflow_evaluation.resolve_evaluators_and_configs = _remember_requested(
        _mlflow_evaluation.resolve_evaluators_and_configs)


def asked_by_name() -> bool:
    """Was ``xai`` named in the current ``mlflow.models.evaluate`` call? (Unknown: no.)"""
    return bool(getattr(_requested, "by_name", False))

#: Keys understood by MLflow's built-in evaluators. When ``evaluator_config`` is one flat dict,
#: MLflow hands the same dict to every evaluator, so these are ignored rather than refused.
MLFLOW_BUILTIN_KEYS = frozenset({
    "average", "col_mapping", "eval_results_mode", "eval_results_path",
    "explainability_algorithm", "explainability_kernel_link", "explainability_nsamples",
    "ignore_exceptions", "label_list", "log_explainer", "log_model_explainability",
    "max_classes_for_multiclass_roc_pr", "metric_prefix", "pos_label", "sample_weights",
})
#: Keys of the evaluator that ``explain()`` does not have.
EVALUATOR_ONLY_KEYS = frozenset({"disable"})
SUPPORTED_MODEL_TYPES = ("classifier", "regressor")


#: When ``evaluate()`` runs ``xai`` without naming it (every installed evaluator runs), the
#: explanation must stay cheap next to MLflow's own default evaluator: the planner's choice in
#: a small budget, on at most 100 rows against 50 background rows, with the checks that call no model.
IMPLICIT_DEFAULTS: dict[str, Any] = {
    "explainers": "auto", "budget_s": 1.0, "max_rows": 100, "background_rows": 50,
    "checks": ["agreement", "bootstrap_importance", "completeness", "rank_uncertainty"]}


def parse_evaluator_config(config: dict[str, Any] | None, model_type: str | None, *,
                           implicit: bool = False):
    """Evaluator config -> :class:`XaiConfig`; ``targets`` and ``model_type`` come from MLflow.
    ``implicit``: ``xai`` was not named (see :data:`IMPLICIT_DEFAULTS`)."""
    from mlflow_xai.config import ENTRANCE_DEFAULTS, XaiConfig, check_methods
    from mlflow_xai.errors import ConfigError

    options = {k: v for k, v in (config or {}).items()
               if k not in MLFLOW_BUILTIN_KEYS and k not in EVALUATOR_ONLY_KEYS}
    for key in ("targets", "model_type"):
        if key in options:
            raise ConfigError(f"'{key}' cannot be set in the xai evaluator config: "
                              "mlflow.models.evaluate passes it.")
    ours = set(XaiConfig.keys())
    unknown = [k for k in options if k not in ours]
    if unknown and not (set(options) & ours) and not any(
            difflib.get_close_matches(k, ours, n=1) for k in unknown):
        # A flat config meant for other evaluators (MLflow hands it to all of them): not ours.
        _logger.info("mlflow-xai: ignoring evaluator_config keys %s meant for other evaluators",
                     unknown)
        options = {}
    options.setdefault("strict", False)
    defaults = IMPLICIT_DEFAULTS if implicit else ENTRANCE_DEFAULTS
    options = {**defaults, **options}
    config = XaiConfig.from_mapping(
        {**options, "model_type": model_type}, where="evaluator_config['xai']")
    check_methods(config)
    return config


class XaiEvaluator(ModelEvaluator):
    name = "xai"

    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        return model_type in SUPPORTED_MODEL_TYPES and not (evaluator_config or {}).get("disable")

    def evaluate(self, *, model_type, dataset, run_id, evaluator_config, model=None,
                 extra_metrics=None, custom_artifacts=None, predictions=None, **kwargs
                 ) -> EvaluationResult:
        from mlflow_xai.recording import Destination, explain_and_record, record_failure

        named = asked_by_name()
        model_id = kwargs.get("model_id")
        # MLflow logs the returned metrics itself, linked to the model: log them here only
        # when there is no model id to link them to.
        dest = Destination(run_id, model_id, source="evaluate", log_metrics=model_id is None)
        try:
            config = parse_evaluator_config(evaluator_config, model_type, implicit=not named)
        except Exception as exc:
            if named:  # asked for by name: the caller's mistake to fix
                raise
            _logger.warning("mlflow-xai: skipped (evaluator_config not usable: %s). Pass "
                            "evaluators=[..., 'xai'] to make this an error.", exc)
            record_failure(dest, exc)
            return EvaluationResult({}, {}, run_id)
        if model is None:
            _logger.warning("mlflow-xai: no model was given (static predictions); nothing to "
                            "explain.")
            record_failure(dest, "no model given: explanations need a model to query",
                           status="skipped")
            return EvaluationResult({}, {}, run_id)
        try:
            features = dataset.features_data
            if not hasattr(features, "columns") and dataset.feature_names is not None:
                import pandas as pd

                features = pd.DataFrame(features, columns=list(dataset.feature_names))
            config.targets = dataset.labels_data
            outcome = explain_and_record(model, features, config, dest)
        except Exception as exc:
            if config.strict:
                raise
            # Not ours to break: recording the failure itself failed (server down).
            _logger.warning("mlflow-xai: explaining the model failed: %s", exc)
            return EvaluationResult({}, {}, run_id)
        if outcome.explanations is None:
            _logger.warning("mlflow-xai: explaining the model failed (recorded in run %s as "
                            "xai/error.txt): %s", run_id, outcome.error)
            return EvaluationResult({}, {}, run_id)
        from mlflow_xai.artifacts import metrics_for

        expl = outcome.explanations
        return EvaluationResult(metrics_for(expl), _artifacts(expl, run_id), run_id)


def _artifacts(expl: Any, run_id: str) -> dict[str, Any]:
    from mlflow import MlflowClient
    from mlflow.models.evaluation.artifacts import (
        ImageEvaluationArtifact,
        JsonEvaluationArtifact,
        ParquetEvaluationArtifact,
    )

    root = MlflowClient().get_run(run_id).info.artifact_uri.rstrip("/") + "/xai"
    out: dict[str, Any] = {
        "xai_summary": JsonEvaluationArtifact(uri=f"{root}/summary.json"),
        "xai_importance": JsonEvaluationArtifact(uri=f"{root}/importance.json"),
    }
    for method in expl.methods:
        if method in expl.attributions:
            out[f"xai_{method}_attributions"] = ParquetEvaluationArtifact(
                uri=f"{root}/attributions/{method}.parquet")
            out[f"xai_{method}_beeswarm"] = ImageEvaluationArtifact(
                uri=f"{root}/plots/{method}_beeswarm.png")
        out[f"xai_{method}_bar"] = ImageEvaluationArtifact(uri=f"{root}/plots/{method}_bar.png")
    for name in expl.selection:
        out[f"xai_selection_{name}"] = JsonEvaluationArtifact(uri=f"{root}/selection/{name}.json")
        out[f"xai_selection_{name}_plot"] = ImageEvaluationArtifact(
            uri=f"{root}/plots/selection_{name}.png")
    if expl.checks:
        out["xai_stability"] = JsonEvaluationArtifact(uri=f"{root}/stability.json")
    return out
