"""Image inputs: (N, C, H, W) arrays are flattened to (N, C*H*W) for the explainers and
reshaped back before every model call, so gradient methods work on images unchanged while
image-specific methods (RISE, Sobol) read the shape from the task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlflow_xai.data import PreparedData
from mlflow_xai.errors import InvalidInputError


def is_image_data(data: Any) -> bool:
    shape = getattr(data, "shape", None)
    return shape is not None and not isinstance(data, pd.DataFrame) and len(shape) == 4


@dataclass
class ImageEncoder:
    shape: tuple[int, int, int]
    dtype: Any = np.float32

    @property
    def columns(self) -> list[str]:
        C, H, W = self.shape
        return [f"c{c}_y{y}_x{x}" for c in range(C) for y in range(H) for x in range(W)]

    @property
    def categories(self) -> dict:
        return {}

    def decode(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=self.dtype).reshape((-1, *self.shape))


def prepare_images(data: Any, *, targets: Any = None, background: Any = None,
                   background_rows: int = 100, max_rows: int = 1000, seed: int = 0
                   ) -> PreparedData:
    """Validate (N, C, H, W) images; sample rows and background like tabular data."""
    images = _as_array(data, "data")
    n = len(images)
    if n == 0:
        raise InvalidInputError("data has no images: pass at least one (C, H, W) image.")
    y = None
    if targets is not None:
        y = np.asarray(targets)
        if y.ndim == 0 or len(y) != n:
            raise InvalidInputError(f"targets has {1 if y.ndim == 0 else len(y)} value(s) but "
                                    f"data has {n} image(s): pass one target per image.")
    rng = np.random.default_rng(seed)
    sampled = n > max_rows
    positions = np.sort(rng.choice(n, size=max_rows, replace=False)) if sampled else None
    if background is None:
        take = min(background_rows, n)
        bg = images[np.sort(rng.choice(n, size=take, replace=False))]
        source = f"{take} images sampled from data (seed {seed})"
    else:
        bg = _as_array(background, "background")
        if bg.shape[1:] != images.shape[1:]:
            raise InvalidInputError(f"background images have shape {bg.shape[1:]} but data "
                                    f"images have {images.shape[1:]}.")
        source = f"{len(bg)} images given"
    if positions is not None:
        images = images[positions]
        y = y[positions] if y is not None else None
    shape = tuple(int(s) for s in images.shape[1:])
    facts = {"data_type": "image", "image_shape": list(shape), "rows_total": int(n),
             "rows_explained": int(len(images)), "rows_sampled": bool(sampled),
             "max_rows": int(max_rows), "background_rows": int(len(bg)),
             "background_source": source, "targets": y is not None}
    index = pd.RangeIndex(n)[positions] if positions is not None else pd.RangeIndex(n)
    return PreparedData(frame=pd.DataFrame(index=index), X=images.reshape(len(images), -1),
                        background=bg.reshape(len(bg), -1), encoder=ImageEncoder(shape),
                        targets=y, facts=facts)


def _as_array(data: Any, what: str) -> np.ndarray:
    if hasattr(data, "detach"):
        data = data.detach().cpu().numpy()
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim != 4:
        raise InvalidInputError(f"{what} images must have shape (N, C, H, W); got {arr.shape}.")
    bad = ~np.isfinite(arr)
    if bad.any():
        count = int(bad.reshape(len(arr), -1).any(axis=1).sum())
        raise InvalidInputError(f"{what} has NaN or infinite pixels in {count} image(s); "
                                "clean or drop them before explaining.")
    return arr


def heatmaps(values: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(n, C*H*W) attributions or (n, H*W) maps -> (n, H, W), channels summed."""
    C, H, W = shape
    if values.shape[1] == H * W:
        return values.reshape(len(values), H, W)
    return values.reshape(len(values), C, H, W).sum(axis=1)
