"""Permutation feature importance (Breiman, 2001; Fisher et al., 2019 "model reliance")."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Attribution, ConfigError, Explainer, ExplainTask, hookimpl


class PermutationImportance(Explainer):
    name: ClassVar[str] = "permutation_importance"
    description: ClassVar[str] = (
        "Permutation importance (global only): how much the loss against targets grows, or "
        "without targets how much the explained output moves, when one feature is shuffled."
    )
    local: ClassVar[bool] = False
    #: scoring: 'auto' (loss against targets when given, else output change), 'targets' or
    #: 'output'; n_repeats: shuffles per feature (each costs one model call per explained row).
    defaults: ClassVar[dict[str, Any]] = {"n_repeats": 5, "scoring": "auto"}
    param_types: ClassVar[dict[str, str]] = {"n_repeats": "int >= 1",
                                         "scoring": "'auto' | 'targets' | 'output'"}

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_features: int,
                             n_background: int) -> float | None:
        # The rows once (the reference output), then every row per feature per repeat; the
        # background is not used.
        repeats = int({**self.defaults, **params}["n_repeats"])
        return n_rows + repeats * n_features * n_rows

    def explain(self, task: ExplainTask) -> Attribution:
        params = self.validate_params()
        scoring = params["scoring"]
        if scoring not in ("auto", "targets", "output"):
            raise ConfigError(f"scoring must be 'auto', 'targets' or 'output', got {scoring!r}.")
        if scoring == "targets" and task.targets is None:
            raise ConfigError("permutation_importance scoring='targets' needs targets; pass "
                              "targets= or use scoring='output'.")
        use_targets = task.targets is not None and scoring != "output"
        n, d = task.X.shape
        repeats = int(params["n_repeats"])
        rng = np.random.default_rng(task.seed)
        reference = task.predict(task.X)
        y = _target_values(task) if use_targets else None
        scores = np.zeros((d, repeats))
        for j in range(d):  # one batched model call per feature, all repeats at once
            shuffled = np.tile(task.X, (repeats, 1))
            for r in range(repeats):
                shuffled[r * n:(r + 1) * n, j] = task.X[rng.permutation(n), j]
            out = task.predict(shuffled).reshape(repeats, n)
            if use_targets:
                base_loss = np.mean((reference - y) ** 2)
                scores[j] = np.mean((out - y) ** 2, axis=1) - base_loss
            else:
                scores[j] = np.mean(np.abs(out - reference), axis=1)
            task.on_rows_done(0)
        task.on_rows_done(n)
        return Attribution(
            values=None, importance=scores.mean(axis=1),
            output_space="squared-error increase" if use_targets else "mean |output change|",
            info={"scoring": "targets" if use_targets else "output",
                  "importance_std": scores.std(axis=1).round(6).tolist()},
        )


def _target_values(task: ExplainTask) -> np.ndarray:
    """Targets on the scale of the explained output: the value itself, or 1 for the class."""
    if task.output_index is None:
        try:
            return np.asarray(task.targets, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ConfigError("targets must be numeric for a single-output model.") from exc
    label = task.output_label if task.output_label is not None else task.output_index
    return (np.asarray(task.targets) == label).astype(float)


@hookimpl
def xai_register_explainers() -> list[type]:
    return [PermutationImportance]
