"""Batched evaluation of masked inputs on the chosen device: the shared core of the
model-agnostic explainers (Kernel/Permutation/Exact SHAP, LIME, ...).

Masks are built as tensors, every model call is as large as the memory budget allows, and no
Python loop runs over explained rows. The players of a coalition are the columns, or groups of
columns (``groups=``: see :func:`coalition_values` and :mod:`mlflow_xai.groups`). On a device out-of-memory error the batch is halved and the
same slice retried.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mlflow_xai.device import is_out_of_memory

TensorFn = Callable[["torch.Tensor"], "torch.Tensor"]  # noqa: F821


def as_tensor(array: np.ndarray, device: str, dtype=None):
    import torch

    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype or torch.float64,
                           device=device)


def call_batched(fn: TensorFn, inputs, max_rows: int):
    """``fn`` over ``inputs`` in slices of at most ``max_rows`` rows, halving on OOM."""
    import torch

    outputs = []
    start, size = 0, max(1, int(max_rows))
    while start < len(inputs):
        try:
            outputs.append(fn(inputs[start:start + size]))
        except Exception as exc:
            if is_out_of_memory(exc) and size > 1:
                size //= 2
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            raise
        start += size
    return torch.cat(outputs) if len(outputs) > 1 else outputs[0]


def coalition_values(predict: TensorFn, X, background, masks, *, max_rows: int, groups=None):
    """v[r, s] = mean over background rows b of f(x_r where mask_s else b).

    ``X`` (R, M), ``background`` (B, M) and ``masks`` (S, P, bool) are tensors on one device.
    The P players of a coalition are the M columns (``groups`` None, P = M), or groups of
    columns: ``groups`` (M,) gives each column's player (an integer in 0 .. P - 1, as an array
    or tensor), and a column is taken from ``x`` when its player is in the coalition. A grouped
    game is the same computation on masks expanded to columns, so every method built on this
    function explains groups by passing ``groups`` and drawing its coalitions over P players.
    Work is split over rows and coalitions so that one model call sees at most ``max_rows`` rows;
    the (R, S, B, M) tensor is never materialised whole, nor the expanded (S, M) masks.
    """
    import torch

    R, M = X.shape
    B = background.shape[0]
    S, P = masks.shape
    player = _player_index(groups, M, P, X.device)
    values = torch.empty((R, S), dtype=torch.float64, device=X.device)
    per_coalition = B  # model rows per (row, coalition)
    s_chunk = max(1, min(S, max_rows // per_coalition))
    r_chunk = max(1, max_rows // (per_coalition * s_chunk))
    # One buffer for the masked inputs, reused by every chunk: a fresh tensor per chunk costs
    # more in page faults than filling it (5x on a CPU, measured at 4,096 rows x 2,000 columns).
    buffer = torch.empty(min(R, r_chunk) * min(S, s_chunk) * B * M,
                         dtype=torch.promote_types(X.dtype, background.dtype), device=X.device)
    for s0 in range(0, S, s_chunk):
        m = masks[s0:s0 + s_chunk]
        if player is not None:
            m = m[:, player]  # (s, M): each column follows its group
        for r0 in range(0, R, r_chunk):
            x = X[r0:r0 + r_chunk]
            shape = (len(x), len(m), B, M)
            mixed = buffer[:len(x) * len(m) * B * M].view(shape)
            # (r, s, B, M): take x where the coalition has the feature, the background elsewhere.
            torch.where(m[None, :, None, :], x[:, None, None, :], background[None, None, :, :],
                        out=mixed)
            out = call_batched(predict, mixed.reshape(-1, M), max_rows)
            values[r0:r0 + len(x), s0:s0 + len(m)] = out.reshape(len(x), len(m), B).mean(dim=2)
    return values


def _player_index(groups, n_columns: int, n_players: int, device):
    """``groups`` as a long tensor on ``device`` (None when the players are the columns),
    after checking that it fits the masks and the data."""
    import torch

    if groups is None:
        if n_players != n_columns:
            raise ValueError(f"coalition masks have {n_players} players but the data has "
                             f"{n_columns} columns; pass groups= (the player of each column) "
                             "to evaluate a game over groups of columns.")
        return None
    player = torch.as_tensor(np.asarray(groups) if not isinstance(groups, torch.Tensor)
                             else groups, device=device).long().reshape(-1)
    if len(player) != n_columns:
        raise ValueError(f"groups gives a player for {len(player)} columns; the data has "
                         f"{n_columns}.")
    if n_columns and (int(player.min()) < 0 or int(player.max()) >= n_players):
        raise ValueError(f"groups must hold player indices in 0 .. {n_players - 1} (the "
                         f"masks' width), got {int(player.min())} .. {int(player.max())}.")
    return player
