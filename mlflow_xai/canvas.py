"""Figures drawn without pyplot's global state (thread-safe): a new figure on an Agg canvas,
saving it, and the height a bar plot of n features needs."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Features a bar plot shows at most.
MAX_FEATURES_SHOWN = 20


def new_figure(height: float, width: float = 8.0, *, constrained: bool = False) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100,
                 layout="constrained" if constrained else None)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str) -> None:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path)


def bar_height(n_features: int) -> float:
    return max(2.5, 0.5 + 0.32 * n_features)
