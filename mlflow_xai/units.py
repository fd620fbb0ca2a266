"""The unit of each method's numbers, so that incomparable importances are never ranked together.

An explainer reports its ``output_space`` in its own words ("model output", "margin",
"surrogate weights", ...). :func:`unit_of` turns that into one of a few units a reader can
compare: two methods' importances may share a table, a plot or a ranking only when their units
are equal. The unit is recorded per method in ``summary.json`` (``methods.<name>.unit``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PROBABILITY = "probability"
MARGIN = "margin (log-odds)"
MODEL_OUTPUT = "model output"
LOSS_INCREASE = "loss increase"
OUTPUT_CHANGE = "output change"
SURROGATE_WEIGHT = "surrogate weight"
GRADIENT = "gradient"
IMAGE_SCORE = "image relevance"

#: An explainer's own ``output_space`` -> unit; "model output" depends on the model (below).
_BY_OUTPUT_SPACE = {
    "probability": PROBABILITY,
    "margin": MARGIN,
    "raw": MODEL_OUTPUT,
    "squared-error increase": LOSS_INCREASE,
    "mean |output change|": OUTPUT_CHANGE,
    "surrogate weights": SURROGATE_WEIGHT,
    "|gradient|": GRADIENT,
    "gradient": GRADIENT,
    "squared gradient": GRADIENT,
    "gradient variance": GRADIENT,
    "input x gradient": MODEL_OUTPUT,
    "expected output when kept": IMAGE_SCORE,
    "total Sobol index": IMAGE_SCORE,
}


def model_output_unit(model_description: Mapping[str, Any]) -> str:
    """What "the model output" is for this model: class probability for a classifier that is
    explained through ``predict_proba`` (every non-torch classifier), else the raw output."""
    if model_description.get("classifier") and model_description.get("kind") != "torch":
        return PROBABILITY
    return MODEL_OUTPUT


def unit_of(output_space: str | None, model_unit: str = MODEL_OUTPUT) -> str:
    """The unit of a method whose attributions are in ``output_space``."""
    if output_space in (None, "", "model output"):
        return model_unit
    return _BY_OUTPUT_SPACE.get(str(output_space), str(output_space))


def group_by_unit(methods: Iterable[str], units: Mapping[str, str],
                  primary: str | None = None) -> list[tuple[str, list[str]]]:
    """``[(unit, [methods...]), ...]``: the primary method's unit first (the primary method
    first within it), then the other units in order of first appearance."""
    order: dict[str, list[str]] = {}
    methods = list(methods)
    if primary in methods:
        methods.remove(primary)
        methods.insert(0, primary)
    for method in methods:
        order.setdefault(units.get(method, MODEL_OUTPUT), []).append(method)
    return list(order.items())
