"""Plots of attributions (bar, beeswarm, waterfall, image overlays) and of checks, drawn
without pyplot's global state (thread-safe).

Each plot has a ``*_figure`` function that builds the :class:`~matplotlib.figure.Figure` (what
tests inspect) and a ``*_plot`` function that saves it. Axis labels carry the method's unit
(:mod:`mlflow_xai.units`): a reader must never compare numbers of different units.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlflow_xai.canvas import MAX_FEATURES_SHOWN
from mlflow_xai.canvas import bar_height as _height
from mlflow_xai.canvas import new_figure as _figure
from mlflow_xai.canvas import save_figure as _save
from mlflow_xai.end_task_plots import end_task_plot
from mlflow_xai.text import fmt
from mlflow_xai.units import MARGIN, MODEL_OUTPUT, PROBABILITY

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Units that are a scale of the model's output; the others name a quantity of their own
#: ("loss increase", "surrogate weight", ...) and are their own label.
OUTPUT_UNITS = frozenset({PROBABILITY, MARGIN, MODEL_OUTPUT})


def attribution_label(unit: str, *, shapley: bool = False) -> str:
    """What one attribution is, with its unit: "SHAP value (probability)", "surrogate weight"."""
    if shapley:
        return f"SHAP value ({unit})"
    return f"attribution ({unit})" if unit in OUTPUT_UNITS else unit


def importance_label(unit: str, *, local: bool = True, shapley: bool = False) -> str:
    """The x-axis of a global importance bar plot: "mean |SHAP value| (probability)" for a
    local method (importance = mean |attribution|), the method's own unit for a global one
    ("loss increase")."""
    if not local:
        return unit
    if shapley:
        return f"mean |SHAP value| ({unit})"
    return f"mean |attribution| ({unit})" if unit in OUTPUT_UNITS else f"mean |{unit}|"


def bar_figure(importance: pd.Series, method: str, *, unit: str = MODEL_OUTPUT,
               local: bool = True, shapley: bool = False,
               errors: pd.Series | None = None) -> Figure:
    """Horizontal bars of one method's global importance, most important on top; with
    ``errors`` (standard errors per feature) each bar gets its 95 % interval (1.96 SE)."""
    top = importance.sort_values(ascending=False).head(MAX_FEATURES_SHOWN)[::-1]
    fig = _figure(_height(len(top)))
    ax = fig.add_subplot(1, 1, 1)
    xerr = None
    if errors is not None:
        xerr = 1.96 * errors.reindex(top.index).fillna(0.0).to_numpy(dtype=float)
    ax.barh(range(len(top)), top.to_numpy(), color="#1f77b4", xerr=xerr,
            error_kw={"ecolor": "#333333", "elinewidth": 1, "capsize": 2})
    ax.set_yticks(range(len(top)), [str(n) for n in top.index])
    label = importance_label(unit, local=local, shapley=shapley)
    ax.set_xlabel(label + ("; bars: 95 % interval" if xerr is not None else ""))
    title = f"{method}: global feature importance"
    if len(importance) > len(top):
        title += f" (top {len(top)} of {len(importance)})"
    ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    return fig


def bar_plot(importance: pd.Series, method: str, path: str, *, unit: str = MODEL_OUTPUT,
             local: bool = True, shapley: bool = False,
             errors: pd.Series | None = None) -> None:
    _save(bar_figure(importance, method, unit=unit, local=local, shapley=shapley,
                     errors=errors), path)


def beeswarm_figure(values: pd.DataFrame, features: pd.DataFrame, method: str, *,
                    unit: str = MODEL_OUTPUT, shapley: bool = False, seed: int = 0) -> Figure:
    """One row per feature: each dot is one explained row's attribution, coloured by the
    feature's value (low = blue, high = red), features ordered by mean |attribution|."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable

    order = values.abs().mean().sort_values(ascending=False).index[:MAX_FEATURES_SHOWN][::-1]
    fig = _figure(_height(len(order)) + 0.6)
    ax = fig.add_subplot(1, 1, 1)
    rng = np.random.default_rng(seed)
    cmap = colormaps["coolwarm"]
    for y, name in enumerate(order):
        attr = values[name].to_numpy(dtype=float)
        colour = _normalised(features[name]) if name in features else np.full(len(attr), 0.5)
        jitter = _swarm_offsets(attr, rng)
        ax.scatter(attr, y + jitter, c=cmap(colour), s=9, alpha=0.8, linewidths=0)
    ax.axvline(0.0, color="#888888", linewidth=0.8)
    ax.set_yticks(range(len(order)), [str(n) for n in order])
    ax.set_xlabel(attribution_label(unit, shapley=shapley))
    ax.set_title(f"{method}: attributions per row")
    ax.spines[["top", "right"]].set_visible(False)
    bar = fig.colorbar(ScalarMappable(cmap=cmap), ax=ax, ticks=[0, 1], aspect=40, pad=0.02)
    bar.ax.set_yticklabels(["low", "high"])
    bar.set_label("feature value")
    return fig


def beeswarm_plot(values: pd.DataFrame, features: pd.DataFrame, method: str, path: str,
                  *, unit: str = MODEL_OUTPUT, shapley: bool = False, seed: int = 0) -> None:
    _save(beeswarm_figure(values, features, method, unit=unit, shapley=shapley, seed=seed),
          path)


def _normalised(column: pd.Series) -> np.ndarray:
    if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
        codes = pd.Categorical(column).codes.astype(float)
        column = pd.Series(codes)
    x = column.to_numpy(dtype=float)
    lo, hi = np.nanpercentile(x, [5, 95]) if len(x) else (0.0, 1.0)
    if hi <= lo:
        return np.full(len(x), 0.5)
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


def _swarm_offsets(attr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Vertical spread proportional to local density, so dense regions look wide."""
    if len(attr) < 2 or np.ptp(attr) == 0:
        return rng.uniform(-0.3, 0.3, len(attr)) * (len(attr) > 1)
    hist, edges = np.histogram(attr, bins=min(50, len(attr)))
    density = hist[np.clip(np.digitize(attr, edges[1:-1]), 0, len(hist) - 1)] / hist.max()
    return rng.uniform(-1.0, 1.0, len(attr)) * 0.38 * density


MAX_IMAGES_SHOWN = 8
#: Rows shown per waterfall: the largest contributions, the rest folded into one bar.
WATERFALL_MAX_DISPLAY = 10
_RAISES, _LOWERS = "#e0115f", "#1e88e5"  # shap's waterfall colours: up magenta, down blue


@dataclass(frozen=True)
class WaterfallData:
    """One row's waterfall, bottom to top: bar ``i`` spans ``starts[i]`` to
    ``starts[i] + contributions[i]``; the first starts at ``base``, the last ends at ``end``."""

    base: float
    end: float
    labels: list[str]
    contributions: list[float]
    starts: list[float]


def waterfall_data(values: pd.Series, base: float, features: Mapping[str, Any] | None = None,
                   *, max_display: int = WATERFALL_MAX_DISPLAY) -> WaterfallData:
    """The bars of one row's waterfall: the ``max_display - 1`` largest |contributions| as
    ``feature = value``, the rest summed into ``other N features`` (so the bars still add up
    to ``end - base``), the largest on top."""
    order = values.abs().sort_values(ascending=False, kind="stable").index
    if len(order) > max_display:
        shown, rest = list(order[:max_display - 1]), list(order[max_display - 1:])
    else:
        shown, rest = list(order), []
    labels = [_feature_label(f, features) for f in shown][::-1]
    contributions = [float(values[f]) for f in shown][::-1]
    if rest:
        labels.insert(0, f"other {len(rest)} features")
        contributions.insert(0, float(values[rest].sum()))
    starts = list(float(base) + np.concatenate([[0.0], np.cumsum(contributions)[:-1]]))
    return WaterfallData(base=float(base), end=float(base) + float(np.sum(contributions)),
                         labels=labels, contributions=contributions, starts=starts)


def _feature_label(feature: Any, features: Mapping[str, Any] | None) -> str:
    if features is None or feature not in features:
        return str(feature)
    value = features[feature]
    shown = fmt(value) if isinstance(value, (int, float, np.number)) else str(value)
    return f"{feature} = {shown if len(shown) <= 20 else shown[:19] + '…'}"


def extreme_rows(attributions: pd.DataFrame, base_values: pd.Series) -> list[Any]:
    """Index labels of the rows with the highest and the lowest output (base + sum of
    attributions, which is f(x) for Shapley values); one label when there is one row."""
    output = base_values.reindex(attributions.index).astype(float) + attributions.sum(axis=1)
    high, low = output.idxmax(), output.idxmin()
    return [high] if high == low else [high, low]


def waterfall_figure(attributions: pd.DataFrame, base_values: pd.Series,
                     features: pd.DataFrame | None, method: str, *, unit: str = MODEL_OUTPUT,
                     shapley: bool = False) -> Figure:
    """Shap-style waterfalls for the rows with the highest and the lowest output, side by side:
    from the base value, each feature's contribution, up to f(x)."""
    rows = extreme_rows(attributions, base_values)
    fig = _figure(_height(WATERFALL_MAX_DISPLAY + 1) + 0.4, 6.0 * len(rows), constrained=True)
    for i, (row, which) in enumerate(zip(rows, ("highest", "lowest"))):
        ax = fig.add_subplot(1, len(rows), i + 1)
        shown = features.loc[row] if features is not None and row in features.index else None
        data = waterfall_data(attributions.loc[row].astype(float),
                              float(base_values.loc[row]), shown)
        _draw_waterfall(ax, data, unit=unit, shapley=shapley)
        ax.set_title(f"{which} output: row {row}" if len(rows) > 1 else f"row {row}")
    fig.suptitle(f"{method}: contributions from the base value to the output")
    return fig


def _draw_waterfall(ax: Any, data: WaterfallData, *, unit: str, shapley: bool) -> None:
    ys = range(len(data.labels))
    colours = [_RAISES if c >= 0 else _LOWERS for c in data.contributions]
    ax.barh(ys, data.contributions, left=data.starts, color=colours, height=0.6)
    span = max(abs(data.end - data.base), *(abs(c) for c in data.contributions), 1e-12)
    for y, start, c in zip(ys, data.starts, data.contributions):
        # The value sits just past the bar's far end, on the side the bar moves to.
        ax.text(start + c + (0.01 * span if c >= 0 else -0.01 * span), y,
                f"+{fmt(c)}" if c >= 0 else fmt(c), va="center",
                ha="left" if c >= 0 else "right", fontsize=8)
    ax.set_yticks(list(ys), data.labels, fontsize=8)
    end_name = "f(x)" if shapley else "base + Σ attributions"
    ax.axvline(data.base, color="#888888", linewidth=0.8, linestyle="--")
    ax.axvline(data.end, color="#444444", linewidth=0.8, linestyle="--")
    ax.text(data.base, -0.9, f"base value = {fmt(data.base)}", ha="center", va="top",
            fontsize=8, color="#555555")
    ax.text(data.end, len(data.labels) - 0.3, f"{end_name} = {fmt(data.end)}",
            ha="center", va="bottom", fontsize=8)
    ax.set_ylim(-1.6, len(data.labels) + 0.4)
    lo = min(data.base, data.end, *data.starts, *(s + c for s, c in
                                                   zip(data.starts, data.contributions)))
    hi = max(data.base, data.end, *data.starts, *(s + c for s, c in
                                                   zip(data.starts, data.contributions)))
    ax.set_xlim(lo - 0.25 * span, hi + 0.25 * span)  # room for the value labels
    ax.set_xlabel(f"output ({unit})" if unit in OUTPUT_UNITS else unit)
    ax.spines[["top", "right"]].set_visible(False)


def waterfall_plot(attributions: pd.DataFrame, base_values: pd.Series,
                   features: pd.DataFrame | None, method: str, path: str, *,
                   unit: str = MODEL_OUTPUT, shapley: bool = False) -> None:
    _save(waterfall_figure(attributions, base_values, features, method, unit=unit,
                           shapley=shapley), path)


def overlay_figure(images: np.ndarray, maps: np.ndarray, method: str, *,
                   labels: list | None = None, unit: str | None = None) -> Figure:
    """For the first few images: the image (top row) above its attribution map laid over a
    grey copy of it (bottom row), one colour scale for all, shown by one colorbar."""
    k = min(MAX_IMAGES_SHOWN, len(images))
    shown = np.asarray(maps[:k], dtype=float)
    cmap, norm, extend = _map_scale(shown)
    fig = _figure(4.6, 1.9 * k + 1.4, constrained=True)
    axes = fig.subplots(2, k, squeeze=False)
    mappable = None
    for i in range(k):
        top, bottom = axes[0, i], axes[1, i]
        _show_image(top, images[i])
        top.set_title(f"explained: {labels[i]}" if labels is not None else f"image {i + 1}",
                      fontsize=9)
        bottom.imshow(np.asarray(images[i], dtype=float).mean(axis=0), cmap="gray",
                      interpolation="nearest")
        mappable = bottom.imshow(shown[i], cmap=cmap, norm=norm, alpha=0.75,
                                 interpolation="nearest")
        for ax in (top, bottom):
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("attribution")
    label = f"attribution ({unit})" if unit in OUTPUT_UNITS else (unit or "attribution")
    fig.colorbar(mappable, ax=axes[1, :].tolist(), label=label, extend=extend, shrink=0.9)
    fig.suptitle(f"{method}: attribution maps", fontsize=11)
    return fig


def overlay_plot(images: np.ndarray, maps: np.ndarray, method: str, path: str, *,
                 labels: list | None = None, unit: str | None = None) -> None:
    _save(overlay_figure(images, maps, method, labels=labels, unit=unit), path)


def _map_scale(maps: np.ndarray) -> tuple[str, Any, str]:
    """(colormap, norm, colorbar extend). Signed maps: 'RdBu_r', symmetric about 0, so white
    means "no effect" and red/blue are equally strong; one-signed maps: 'magma' (perceptually
    uniform) over their own range. Limits are the 99.5th percentile so one hot pixel does not
    wash out every other image; the colorbar's arrows say when values go beyond."""
    from matplotlib.colors import Normalize

    finite = maps[np.isfinite(maps)]
    if finite.size == 0:
        return "magma", Normalize(0.0, 1.0), "neither"
    if finite.min() < 0 < finite.max():
        limit = float(np.percentile(np.abs(finite), 99.5)) or float(np.abs(finite).max())
        extend = "both" if np.abs(finite).max() > limit else "neither"
        return "RdBu_r", Normalize(-limit, limit), extend
    lo, hi = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    if hi <= lo:
        lo, hi = float(finite.min()), float(finite.min()) + 1.0
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max",
              (True, True): "both"}[(finite.min() < lo, finite.max() > hi)]
    return "magma", Normalize(lo, hi), extend


def _show_image(ax: Any, image: np.ndarray) -> None:
    """An (C, H, W) image as it looks: RGB when it has 3 channels, else grey."""
    image = np.asarray(image, dtype=float)
    if image.shape[0] == 3:
        rgb = np.moveaxis(image, 0, -1)
        lo, hi = rgb.min(), rgb.max()
        ax.imshow((rgb - lo) / (hi - lo) if hi > lo else np.zeros_like(rgb),
                  interpolation="nearest")
    else:
        ax.imshow(image.mean(axis=0), cmap="gray", interpolation="nearest")


def check_plot(name: str, entry: dict, path: str) -> None:
    """One picture per check: curves, a method x method matrix, a cascade, or the figures as
    bars with their thresholds."""
    details = entry.get("details") or {}
    if end_task_plot(name, entry, path):
        return
    if "curves" in details:
        _curves_plot(name, details["curves"], path)
    elif "rank_correlation_matrix" in details:
        _matrix_plot(name, details["rank_correlation_matrix"], path)
    elif "cascade" in details:
        _cascade_plot(name, details["cascade"], path)
    else:
        _figures_plot(name, entry.get("figures") or {}, entry.get("thresholds") or {}, path)


def _curves_plot(name: str, curves: dict, path: str) -> None:
    fig = _figure(3.4)
    for i, mode in enumerate(("deletion", "insertion")):
        ax = fig.add_subplot(1, 2, i + 1)
        for method, curve in curves.items():
            ax.plot(curve["fractions"], curve[mode], label=method, linewidth=1.5)
        ax.set_xlabel(f"fraction of features {'removed' if mode == 'deletion' else 'inserted'}")
        ax.set_ylabel("mean explained output")
        ax.set_title(mode)
        ax.spines[["top", "right"]].set_visible(False)
    fig.axes[0].legend(fontsize=7)
    fig.suptitle(f"{name}: removing (inserting) features in attribution order", fontsize=10)
    _save(fig, path)


def _matrix_plot(name: str, matrix: dict, path: str) -> None:
    methods = list(matrix)
    values = np.array([[matrix[a][b] for b in methods] for a in methods], dtype=float)
    fig = _figure(max(3.0, 0.6 * len(methods) + 1.5))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(values, cmap="RdYlGn", vmin=-1, vmax=1)
    ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(methods)), methods, fontsize=8)
    for i in range(len(methods)):
        for j in range(len(methods)):
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="Spearman correlation of global importance")
    ax.set_title(f"{name}: method x method rank correlation")
    _save(fig, path)


def _cascade_plot(name: str, cascade: dict, path: str) -> None:
    fig = _figure(3.2)
    ax = fig.add_subplot(1, 1, 1)
    for method, corr in cascade.items():
        ax.plot(range(1, len(corr) + 1), corr, marker="o", label=method)
    ax.axhline(0.0, color="#888888", linewidth=0.8)
    ax.set_xlabel("layers randomized (from the output down)")
    ax.set_ylabel("rank correlation with original")
    ax.set_title(f"{name}: explanations must change")
    ax.legend(fontsize=7)
    _save(fig, path)


def _figures_plot(name: str, figures: dict, thresholds: dict, path: str) -> None:
    items = [(k, v) for k, v in figures.items() if v is not None][:30]
    fig = _figure(_height(len(items)))
    ax = fig.add_subplot(1, 1, 1)
    labels = [k for k, _ in items][::-1]
    values = [v for _, v in items][::-1]
    colours = []
    for label in labels:
        bound = thresholds.get(label)
        if not bound:
            colours.append("#1f77b4")
            continue
        value = figures[label]
        ok = ("min" not in bound or value >= bound["min"]) and (
            "max" not in bound or value <= bound["max"])
        colours.append("#2ca02c" if ok else "#d62728")
    ax.barh(range(len(values)), values, color=colours)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("figure value")
    ax.set_title(f"{name} (green: passes its threshold, red: fails)")
    ax.spines[["top", "right"]].set_visible(False)
    _save(fig, path)


def selection_plot(selection: Any, path: str) -> None:
    """A selector's scores in ranking order; selected features dark, the others grey."""
    ranking = selection.ranking[:MAX_FEATURES_SHOWN][::-1]
    chosen = set(selection.selected)
    scores = selection.scores.reindex(ranking).to_numpy(dtype=float)
    fig = _figure(_height(len(ranking)))
    ax = fig.add_subplot(1, 1, 1)
    colours = ["#1f77b4" if f in chosen else "#c7c7c7" for f in ranking]
    ax.barh(range(len(ranking)), scores, color=colours)
    ax.set_yticks(range(len(ranking)), [str(f) for f in ranking])
    ax.set_xlabel("score (larger = more relevant)")
    title = f"{selection.name}: {len(chosen)} of {len(selection.ranking)} features selected"
    if len(selection.ranking) > len(ranking):
        title += f" (top {len(ranking)} ranks shown)"
    ax.set_title(title)
    stab = selection.stability
    if stab.get("kuncheva") is not None or stab.get("jaccard") is not None:
        parts = [f"{k} {stab[k]:.2f}" for k in ("kuncheva", "jaccard", "score_spearman")
                 if stab.get(k) is not None]
        ax.text(0.99, 0.01, f"bootstrap stability: {', '.join(parts)}", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=8, color="#555555")
    ax.spines[["top", "right"]].set_visible(False)
    _save(fig, path)


#: Up to this many features the interaction heat map shows them all; beyond, the
#: :data:`INTERACTION_FEATURES_SHOWN` most involved in interactions.
MAX_INTERACTION_FEATURES = 40
INTERACTION_FEATURES_SHOWN = 20
#: Up to this many features each cell carries its value.
_ANNOTATE_UP_TO = 12


def interaction_order(matrix: pd.DataFrame, importance: pd.Series | None = None) -> list[str]:
    """The features a heat map shows, in order: all of them up to
    :data:`MAX_INTERACTION_FEATURES`, else the :data:`INTERACTION_FEATURES_SHOWN` most involved
    (largest sum of |interaction| with the others); ordered by main-effect importance
    (``importance``, else the |diagonal|), most important first, ties in feature order."""
    names = [str(f) for f in matrix.index]
    values = np.abs(matrix.to_numpy(dtype=float))
    keep = np.arange(len(names))
    if len(names) > MAX_INTERACTION_FEATURES:
        off = values.copy()
        np.fill_diagonal(off, 0.0)
        involvement = np.nan_to_num(off, nan=0.0).sum(axis=1)
        keep = np.sort(np.argsort(-involvement, kind="stable")[:INTERACTION_FEATURES_SHOWN])
    if importance is not None:
        main = pd.Series(importance).rename(index=str).reindex([names[i] for i in keep])
        main = main.to_numpy(dtype=float)
    else:
        main = np.diagonal(values)[keep]
    main = np.nan_to_num(main, nan=-np.inf)
    return [names[keep[i]] for i in np.argsort(-main, kind="stable")]


def interaction_figure(matrix: pd.DataFrame, method: str, *, unit: str = MODEL_OUTPUT,
                       importance: pd.Series | None = None, index: str | None = None,
                       rows: int | None = None) -> Figure:
    """A features x features heat map of a global interaction matrix (the diagonal, the main
    effects, is greyed out: it would drown the pairs' scale). A matrix with negative entries
    (signed means) gets a diverging colormap centred at 0 (``RdBu_r``, symmetric limits); a
    one-signed one (mean |interaction|) a sequential one (``viridis``) from 0. Features are
    ordered by main-effect importance; beyond :data:`MAX_INTERACTION_FEATURES` only the
    :data:`INTERACTION_FEATURES_SHOWN` most involved are shown (the title says so)."""
    from matplotlib.colors import Normalize

    order = interaction_order(matrix, importance)
    frame = matrix.rename(index=str, columns=str)
    values = frame.loc[order, order].to_numpy(dtype=float)
    k = len(order)
    off = values.copy()
    np.fill_diagonal(off, np.nan)
    finite = off[np.isfinite(off)]
    signed = bool(finite.size and finite.min() < 0)
    if signed:
        limit = float(np.abs(finite).max()) or 1e-12
        cmap, norm = "RdBu_r", Normalize(-limit, limit)
    else:
        cmap, norm = "viridis", Normalize(0.0, float(finite.max()) if finite.size and
                                          finite.max() > 0 else 1e-12)
    side = max(4.5, 0.3 * k + 3.0)
    fig = _figure(side, side + 1.2, constrained=True)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_facecolor("#d9d9d9")  # the masked diagonal (and any non-finite cell)
    image = ax.imshow(np.ma.masked_invalid(off), cmap=cmap, norm=norm, interpolation="nearest")
    size = 9 if k <= _ANNOTATE_UP_TO else (8 if k <= 25 else 7)
    labels = [name if len(name) <= 30 else name[:29] + "…" for name in order]
    ax.set_xticks(range(k), labels, rotation=90, fontsize=size)
    ax.set_yticks(range(k), labels, fontsize=size)
    if k <= _ANNOTATE_UP_TO:
        for i in range(k):
            for j in range(k):
                if i != j and np.isfinite(values[i, j]):
                    shade = norm(values[i, j])
                    dark = shade < 0.6 if not signed else abs(shade - 0.5) > 0.3
                    ax.text(j, i, fmt(values[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")
    what = index or "interaction"
    label = f"mean {what}" if signed else f"mean |{what}|"
    label += f" ({unit})" if unit in OUTPUT_UNITS else f" [{unit}]"
    fig.colorbar(image, ax=ax, label=label, shrink=0.8)
    title = f"{method}: pairwise interactions"
    if k < len(matrix):
        title += f" (top {k} of {len(matrix)} features by involvement)"
    ax.set_title(title, fontsize=10)
    note = "features ordered by main-effect importance;\ndiagonal (main effects) not shown"
    if rows is not None:
        note = f"averaged over {rows} explained rows; " + note
    ax.set_xlabel(note, fontsize=8)
    return fig


def interaction_plot(matrix: pd.DataFrame, method: str, path: str, *, unit: str = MODEL_OUTPUT,
                     importance: pd.Series | None = None, index: str | None = None,
                     rows: int | None = None) -> None:
    _save(interaction_figure(matrix, method, unit=unit, importance=importance, index=index,
                             rows=rows), path)
