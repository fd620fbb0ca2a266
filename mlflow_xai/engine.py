"""Batched evaluation of masked inputs on the chosen device: the shared core of the
model-agnostic explainers (Kernel/Permutation/Exact SHAP, LIME, ...).

Masks are built as tensors, every model call is as large as the memory budget allows, and no
Python loop runs over explained rows. On a device out-of-memory error the batch is halved and the
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


def coalition_values(predict: TensorFn, X, background, masks, *, max_rows: int):
    """v[r, s] = mean over background rows b of f(x_r where mask_s else b).

    ``X`` (R, M), ``background`` (B, M) and ``masks`` (S, M, bool) are tensors on one device.
    Work is split over rows and coalitions so that one model call sees at most ``max_rows`` rows;
    the (R, S, B, M) tensor is never materialised whole.
    """
    import torch

    R, M = X.shape
    B = background.shape[0]
    S = masks.shape[0]
    values = torch.empty((R, S), dtype=torch.float64, device=X.device)
    per_coalition = B  # model rows per (row, coalition)
    s_chunk = max(1, min(S, max_rows // per_coalition))
    r_chunk = max(1, max_rows // (per_coalition * s_chunk))
    for r0 in range(0, R, r_chunk):
        x = X[r0:r0 + r_chunk]
        for s0 in range(0, S, s_chunk):
            m = masks[s0:s0 + s_chunk]
            # (r, s, B, M): take x where the coalition has the feature, the background elsewhere.
            mixed = torch.where(m[None, :, None, :], x[:, None, None, :],
                                background[None, None, :, :])
            out = call_batched(predict, mixed.reshape(-1, M), max_rows)
            values[r0:r0 + len(x), s0:s0 + len(m)] = out.reshape(len(x), len(m), B).mean(dim=2)
    return values
