"""One picture per end-task check, drawn from its ``details``: significance per feature
(importance_test), flip rates with their intervals (flip_test), responsiveness per feature
(responsiveness) and importance ranges over near-optimal refits (rashomon)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from mlflow_xai.canvas import MAX_FEATURES_SHOWN
from mlflow_xai.canvas import bar_height as _height
from mlflow_xai.canvas import new_figure as _figure
from mlflow_xai.canvas import save_figure as _save

_SIGNIFICANT, _QUIET, _MUTED = "#d62728", "#1f77b4", "#9a9a9a"


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def _importance_test(name: str, d: Mapping[str, Any], path: str) -> None:
    tests = [t for t in d.get("tests") or [] if t in ("marginal", "conditional")]
    features = list((d.get("features") or {}).items())[:MAX_FEATURES_SHOWN]
    alpha = _number(d.get("alpha")) or 0.05
    fig = _figure(_height(len(features)))
    ax = fig.add_subplot(1, 1, 1)
    height = 0.8 / max(1, len(tests))
    y = np.arange(len(features))[::-1]
    for i, test in enumerate(tests):
        p = np.array([_number(((r or {}).get(test) or {}).get("p_value")) or 1.0
                      for _, r in features])
        score = -np.log10(np.clip(p, 1e-12, 1.0))
        ax.barh(y + (i - (len(tests) - 1) / 2) * height, score, height=height,
                color=[_SIGNIFICANT if v <= alpha else _QUIET for v in p],
                alpha=1.0 if i == 0 else 0.55)
    ax.axvline(-math.log10(alpha), color="#333333", linestyle="--", linewidth=1)
    ax.set_yticks(y, [str(f) for f, _ in features], fontsize=8)
    ax.set_xlabel("-log10 p-value (right of the line: significant)")
    ax.set_title(f"{name}: does the output depend on the feature?")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    # The bars' colours say significant or not; their shade says which test.
    handles = [Patch(color="#555555", alpha=1.0 if i == 0 else 0.55, label=test)
               for i, test in enumerate(tests)]
    handles += [Patch(color=_SIGNIFICANT, label="significant"),
                Patch(color=_QUIET, label="not significant"),
                Line2D([], [], color="#333333", linestyle="--", label=f"alpha = {alpha:g}")]
    ax.legend(handles=handles, fontsize=7, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    _save(fig, path)


def _flip_test(name: str, d: Mapping[str, Any], path: str) -> None:
    features = list((d.get("features") or {}).items())[:MAX_FEATURES_SHOWN]
    fig = _figure(_height(len(features)))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(features))[::-1]
    rate = np.array([_number(r.get("flip_rate")) or 0.0 for _, r in features])
    low = np.array([_number(r.get("ci_low")) or 0.0 for _, r in features])
    high = np.array([_number(r.get("ci_high")) or 0.0 for _, r in features])
    ax.barh(y, rate, color=_QUIET)
    ax.errorbar(rate, y, xerr=[np.maximum(rate - low, 0), np.maximum(high - rate, 0)],
                fmt="none", ecolor="#333333", capsize=3, linewidth=1)
    ax.set_yticks(y, [str(f) for f, _ in features], fontsize=8)
    ax.set_xlabel(f"share of decisions that change (with its "
                  f"{100 * (_number(d.get('confidence')) or 0.95):g}% interval)")
    ax.set_title(f"{name}: setting the feature to its other values")
    ax.spines[["top", "right"]].set_visible(False)
    _save(fig, path)


def _responsiveness(name: str, d: Mapping[str, Any], path: str) -> None:
    features = sorted((d.get("features") or {}).items(),
                      key=lambda fr: -(_number((fr[1] or {}).get("mean_responsiveness")) or 0))
    features = features[:MAX_FEATURES_SHOWN]
    fig = _figure(_height(len(features)))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(features))[::-1]
    ax.barh(y, [_number(r.get("mean_responsiveness")) or 0.0 for _, r in features],
            color=[_QUIET if r.get("actionable") else _MUTED for _, r in features])
    ax.set_yticks(y, [f"{f}" + ("" if r.get("actionable") else " (not actionable)")
                      for f, r in features], fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean responsiveness R (probability an actionable change reaches the "
                  "target)")
    ax.set_title(f"{name}: fixed rate {_number(d.get('fixed_rate')) or 0:.3g} of "
                 f"{d.get('adverse_rows')} adverse rows")
    ax.spines[["top", "right"]].set_visible(False)
    _save(fig, path)


def _rashomon(name: str, d: Mapping[str, Any], path: str) -> None:
    features = sorted((d.get("features") or {}).items(),
                      key=lambda fr: -(_number((fr[1] or {}).get("mean")) or 0))
    features = features[:MAX_FEATURES_SHOWN]
    fig = _figure(_height(len(features)))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(len(features))[::-1]
    low = [_number(r.get("min")) or 0.0 for _, r in features]
    high = [_number(r.get("max")) or 0.0 for _, r in features]
    mean = [_number(r.get("mean")) or 0.0 for _, r in features]
    ax.hlines(y, low, high, color=_QUIET, linewidth=3, alpha=0.6, label="range over refits")
    ax.plot(mean, y, "o", color="#333333", markersize=4, label="mean")
    ax.set_yticks(y, [f"{f} (ranks {r.get('rank_min')}-{r.get('rank_max')})"
                      for f, r in features], fontsize=8)
    ax.set_xlabel("model reliance (loss increase when permuted)")
    ax.set_title(f"{name}: {d.get('models_kept')} near-optimal refits of "
                 f"{d.get('models_fitted')}")
    ax.legend(fontsize=7, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    _save(fig, path)


PLOTTERS: dict[str, Callable[[str, Mapping[str, Any], str], None]] = {
    "importance_test": _importance_test, "flip_test": _flip_test,
    "responsiveness": _responsiveness, "rashomon": _rashomon,
}


def end_task_plot(name: str, entry: Mapping[str, Any], path: str) -> bool:
    """Draw ``name``'s picture when it is an end-task check with readable details."""
    plotter = PLOTTERS.get(name)
    details = entry.get("details")
    if plotter is None or not isinstance(details, Mapping) or not details.get("features"):
        return False
    plotter(name, details, path)
    return True
