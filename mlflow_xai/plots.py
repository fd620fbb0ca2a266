"""Bar and beeswarm plots of attributions, drawn without pyplot's global state (thread-safe)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

MAX_FEATURES_SHOWN = 20


def _figure(height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _height(n_features: int) -> float:
    return max(2.5, 0.5 + 0.32 * n_features)


def bar_plot(importance: pd.Series, method: str, path: str, *, subtitle: str = "") -> None:
    """Horizontal bars of global importance, most important on top."""
    top = importance.sort_values(ascending=False).head(MAX_FEATURES_SHOWN)[::-1]
    fig = _figure(_height(len(top)))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh(range(len(top)), top.to_numpy(), color="#1f77b4")
    ax.set_yticks(range(len(top)), [str(n) for n in top.index])
    ax.set_xlabel("mean |attribution|" if subtitle != "global" else "importance")
    hidden = len(importance) - len(top)
    title = f"{method}: global feature importance"
    if hidden > 0:
        title += f" (top {len(top)} of {len(importance)})"
    ax.set_title(title)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)


def beeswarm_plot(values: pd.DataFrame, features: pd.DataFrame, method: str, path: str,
                  *, seed: int = 0) -> None:
    """One row per feature: each dot is one explained row's attribution, coloured by the
    feature's value (low = blue, high = red), features ordered by mean |attribution|."""
    from matplotlib import colormaps

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
    ax.set_xlabel("attribution (impact on model output)")
    ax.set_title(f"{method}: attributions per row")
    ax.spines[["top", "right"]].set_visible(False)
    from matplotlib.cm import ScalarMappable

    bar = fig.colorbar(ScalarMappable(cmap=cmap), ax=ax, ticks=[0, 1], aspect=40, pad=0.02)
    bar.ax.set_yticklabels(["low", "high"])
    bar.set_label("feature value")
    fig.tight_layout()
    fig.savefig(path)


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


def overlay_plot(images: np.ndarray, maps: np.ndarray, method: str, path: str, *,
                 labels: list | None = None) -> None:
    """The first few images (grey) with the attribution heat map on top (red = raises the
    explained output, blue = lowers it), one column per image."""
    k = min(MAX_IMAGES_SHOWN, len(images))
    fig = _figure(2.6)
    fig.set_size_inches(1.9 * k + 0.6, 2.6)
    for i in range(k):
        ax = fig.add_subplot(1, k, i + 1)
        grey = images[i].mean(axis=0)
        ax.imshow(grey, cmap="gray", interpolation="nearest")
        limit = float(np.abs(maps[i]).max()) or 1.0
        ax.imshow(maps[i], cmap="bwr", alpha=0.55, vmin=-limit, vmax=limit,
                  interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if labels is not None:
            ax.set_title(f"explained: {labels[i]}", fontsize=9)
    fig.suptitle(f"{method}: attribution heat maps", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)


def check_plot(name: str, entry: dict, path: str) -> None:
    """One picture per check: curves, a method x method matrix, a cascade, or the figures as
    bars with their thresholds."""
    details = entry.get("details") or {}
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
    fig.tight_layout()
    fig.savefig(path)


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
    fig.tight_layout()
    fig.savefig(path)


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
    fig.tight_layout()
    fig.savefig(path)


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
    ax.set_title(f"{name} (green: passes its threshold, red: fails)")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    fig.savefig(path)


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
    fig.tight_layout()
    fig.savefig(path)
