"""Input validation, encoding and sampling.

Every explainer works on one float matrix. Non-numeric columns the model accepts are encoded as
category codes for the explainers and decoded back to the original values before each model call,
so a perturbation never shows the model a value it has not seen.

Missing values (NaN, None, pd.NA) are kept when the model accepts them (see
:mod:`mlflow_xai.missing`): they are NaN in the float matrix and decoded back to the column's own
missing value, so the explained population is the one given, not the rows ``dropna`` leaves.
Infinite values are always refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from mlflow_xai.errors import InvalidInputError
from mlflow_xai.missing import accepts_missing, missing_marker
from mlflow_xai.model import ModelAdapter

_STRING_SCHEMA_TYPES = {"string", "str", "binary", "object", "category"}
#: Columns mlflow-xai adds next to the features in its tables start with this prefix; a feature
#: name may not (it could overwrite or be mistaken for one of them).
RESERVED_COLUMN_PREFIX = "xai."
#: ``attributions/<method>.parquet`` (and ``<method>/xai.base_value`` in the distributed table):
#: the base value each row's attributions add up from.
BASE_VALUE_COLUMN = RESERVED_COLUMN_PREFIX + "base_value"
#: The class (label) each row was explained for, as text; classifiers only.
OUTPUT_COLUMN = RESERVED_COLUMN_PREFIX + "output"


@dataclass
class Encoder:
    """Maps between the model's input (DataFrame or array) and the float matrix explainers use."""

    columns: list[str]
    dtypes: dict[str, Any]
    categories: dict[str, pd.Index] = field(default_factory=dict)
    wants_frame: bool = True
    array_dtype: Any = None
    #: The missing value each categorical column uses in the data (None, NaN or pd.NA).
    missing_markers: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def single_float_dtype(self) -> Any:
        """The NumPy dtype when every column has the same NumPy float dtype (no categories),
        else None (pandas' nullable Float64 cannot be the target of ``ndarray.astype``)."""
        kinds = set(self.dtypes.values())
        if self.categories or len(kinds) != 1:
            return None
        kind = next(iter(kinds))
        return kind if isinstance(kind, np.dtype) and kind.kind == "f" else None

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Rows -> float matrix; a missing value (of any column) becomes NaN."""
        out = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        for j, col in enumerate(self.columns):
            values = frame[col]
            if col in self.categories:
                codes = pd.Categorical(values, categories=self.categories[col]).codes
                # Code -1 is pandas' missing category: NaN, never a category's code.
                out[:, j] = np.where(codes < 0, np.nan, codes)
            else:
                out[:, j] = values.to_numpy(dtype=np.float64, na_value=np.nan)
        return out

    def decode(self, X: np.ndarray) -> pd.DataFrame | np.ndarray:
        """Float matrix -> what the model's predict takes."""
        if not self.wants_frame:
            return X.astype(self.array_dtype or np.float64, copy=False)
        if self.single_float_dtype is not None:
            # One 2-D block, not a column-by-column frame: several times faster for wide data,
            # and this runs for every model call.
            return pd.DataFrame(X.astype(self.single_float_dtype, copy=False),
                                columns=self.columns)
        data = {col: self._decode_column(X[:, j], col) for j, col in enumerate(self.columns)}
        return pd.DataFrame(data, columns=self.columns)

    def _decode_column(self, x: np.ndarray, col: str) -> Any:
        dtype = self.dtypes[col]
        if col in self.categories:
            return self._decode_category(x, col, np.isnan(x))
        is_bool = pd.api.types.is_bool_dtype(dtype)
        if not (is_bool or pd.api.types.is_integer_dtype(dtype)):  # floats hold NaN as it is
            return x.astype(dtype, copy=False) if isinstance(dtype, np.dtype) \
                else pd.Series(x).astype(dtype)
        missing = np.isnan(x)
        # Perturbed values of bool and int columns are rounded back to values of the column.
        values = (x >= 0.5) if is_bool else np.rint(x)
        if not isinstance(dtype, np.dtype):  # nullable Int64 / boolean: NaN becomes pd.NA
            return pd.Series(np.where(missing, np.nan, values.astype(np.float64))).astype(dtype)
        if missing.any():
            # A NumPy int or bool column cannot hold NaN (a background row brought it): float
            # keeps it missing instead of turning it silently into 0 / False.
            return np.where(missing, np.nan, values.astype(np.float64))
        return values if is_bool else values.astype(dtype)

    def _decode_category(self, x: np.ndarray, col: str, missing: np.ndarray) -> pd.Series:
        """Codes -> the categories; NaN -> the column's own missing value (clipping NaN to a
        code would silently show the model the first category instead)."""
        cats, dtype = self.categories[col], self.dtypes[col]
        if len(cats) == 0:  # nothing but missing values in data and background
            values = np.full(len(x), self.missing_markers.get(col, np.nan), dtype=object)
            return pd.Series(values, dtype=object).astype(dtype, copy=False)
        codes = np.clip(np.rint(np.where(missing, 0, x)), 0, len(cats) - 1).astype(int)
        if not missing.any():
            return pd.Series(cats.take(codes)).astype(dtype, copy=False)
        values = np.asarray(cats.take(codes), dtype=object)
        values[missing] = self.missing_markers.get(col, np.nan)
        return pd.Series(values, dtype=object).astype(dtype, copy=False)


@dataclass
class PreparedData:
    """The rows to explain, the background, targets and facts for ``summary.json``."""

    frame: pd.DataFrame
    X: np.ndarray
    background: np.ndarray
    encoder: Encoder
    targets: np.ndarray | None
    facts: dict[str, Any]
    #: Rows for the selectors (up to ``selection_rows``, sampled from all of ``data``).
    selection_X: np.ndarray | None = None
    selection_targets: np.ndarray | None = None

    @property
    def feature_names(self) -> list[str]:
        return self.encoder.columns


def prepare_data(
    data: Any,
    model: ModelAdapter,
    *,
    targets: Any = None,
    background: Any = None,
    background_rows: int = 100,
    max_rows: int = 1000,
    seed: int = 0,
    selection_rows: int = 0,
) -> PreparedData:
    """Validate ``data`` against the model and return encoded rows and background."""
    frame = _as_frame(data, model, what="data")
    frame, y = _split_targets(frame, targets)
    frame = _match_columns(frame, model, what="data")
    check_feature_names(list(frame.columns), what="data")
    if len(frame) == 0:
        raise InvalidInputError("data has no rows: pass at least one row to explain.")
    if frame.shape[1] == 0:
        raise InvalidInputError("data has no feature columns: nothing to explain.")
    bg_given = None
    if background is not None:
        bg_given = _match_columns(_as_frame(background, model, what="background"), model,
                                  what="background", columns=list(frame.columns))
        if len(bg_given) == 0:
            raise InvalidInputError("background has no rows: pass at least one reference row.")
    encoder = _make_encoder(frame, model, extra=bg_given)
    missing_facts = _check_values(frame, bg_given, encoder, model)

    rng = np.random.default_rng(seed)
    rows_total = len(frame)
    sampled = rows_total > max_rows
    if max_rows < 1:
        raise InvalidInputError(f"max_rows must be at least 1, got {max_rows}.")
    positions = np.sort(rng.choice(rows_total, size=max_rows, replace=False)) if sampled else None

    if bg_given is None:
        if rows_total < 2:
            raise InvalidInputError(
                "data has 1 row, so a background sampled from it would equal the row being "
                "explained and every attribution would be 0. Pass background= with reference "
                "rows (for example a sample of the training data)."
            )
        if background_rows < 1:
            raise InvalidInputError(f"background_rows must be at least 1, got {background_rows}.")
        take = min(background_rows, rows_total)
        bg_pos = np.sort(rng.choice(rows_total, size=take, replace=False))
        bg_frame = frame.iloc[bg_pos]
        bg_source = f"{take} rows sampled from data (seed {seed})"
    else:
        bg_frame = bg_given
        bg_source = f"{len(bg_frame)} rows given"

    selection_X = selection_y = None
    if selection_rows > 0:  # selectors see more rows than explainers: filters are cheap
        pick = np.sort(rng.choice(rows_total, size=selection_rows, replace=False)) \
            if rows_total > selection_rows else slice(None)
        selection_X = encoder.encode(frame.iloc[pick])
        selection_y = y[pick] if y is not None else None

    if positions is not None:
        frame = frame.iloc[positions]
        y = y[positions] if y is not None else None

    facts = {
        "rows_total": int(rows_total),
        "rows_explained": int(len(frame)),
        "rows_sampled": bool(sampled),
        "max_rows": int(max_rows),
        "features": len(encoder.columns),
        "feature_names": list(encoder.columns),
        "encoded_columns": sorted(encoder.categories),
        "background_rows": int(len(bg_frame)),
        "background_source": bg_source,
        "targets": y is not None,
    }
    if selection_X is not None:
        facts["selection_rows"] = int(len(selection_X))
    if missing_facts is not None:
        facts["missing_values"] = missing_facts
    return PreparedData(frame=frame, X=encoder.encode(frame), background=encoder.encode(bg_frame),
                        encoder=encoder, targets=y, facts=facts, selection_X=selection_X,
                        selection_targets=selection_y)


def _as_frame(data: Any, model: ModelAdapter, *, what: str) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        _check_unique_columns(data, what=what)
        return data
    if isinstance(data, pd.Series):
        raise InvalidInputError(
            f"{what} is a pandas Series; pass a DataFrame (one column per feature), "
            "for example series.to_frame().T for a single row."
        )
    if data is None:
        raise InvalidInputError(f"{what} is None: pass a DataFrame or a 2-D array.")
    try:
        arr = np.asarray(data)
    except Exception as exc:
        raise InvalidInputError(f"{what} of type {type(data).__name__} cannot be read as a "
                                f"table: {exc}") from exc
    if arr.ndim == 1 and arr.size and arr.dtype != object:
        raise InvalidInputError(
            f"{what} is 1-D with shape {arr.shape}; pass a 2-D array of shape "
            "(rows, features), for example x.reshape(1, -1) for one row."
        )
    if arr.ndim != 2:
        if arr.size == 0:
            raise InvalidInputError(f"{what} has no rows: pass at least one row to explain.")
        raise InvalidInputError(
            f"{what} has shape {arr.shape}; tabular explainers need 2-D data (rows, features)."
        )
    names = model.input_names
    if names is None or len(names) != arr.shape[1]:
        names = [f"x{i}" for i in range(arr.shape[1])]
    frame = pd.DataFrame(arr, columns=names)
    _check_unique_columns(frame, what=what)
    return frame


def _check_unique_columns(frame: pd.DataFrame, *, what: str) -> None:
    """Every column must have its own name, also as text (``0`` and ``"0"`` are one feature to
    every table and metric mlflow-xai writes)."""
    by_text: dict[str, list[Any]] = {}
    for column in frame.columns:
        by_text.setdefault(str(column), []).append(column)
    repeated = {text: cols for text, cols in by_text.items() if len(cols) > 1}
    if repeated:
        detail = "; ".join(f"{text!r} ({len(cols)} columns: "
                           f"{', '.join(repr(c) for c in cols)})"
                           for text, cols in list(repeated.items())[:10])
        raise InvalidInputError(
            f"{what} has {len(repeated)} duplicated column name(s): {detail}. Each feature needs "
            "one unique name (as text); rename the columns, for example "
            "data.columns = [f'{c}_{i}' for i, c in enumerate(data.columns)], or drop the "
            "duplicates (data.loc[:, ~data.columns.astype(str).duplicated()]).")


def check_feature_names(names: list[Any], *, what: str = "data") -> None:
    """Refuse feature names that start with :data:`RESERVED_COLUMN_PREFIX`."""
    reserved = [str(n) for n in names if str(n).startswith(RESERVED_COLUMN_PREFIX)]
    if reserved:
        raise InvalidInputError(
            f"{what} has column(s) {reserved[:10]} whose names start with "
            f"'{RESERVED_COLUMN_PREFIX}', which mlflow-xai reserves for the columns it adds to "
            f"the attribution tables ({BASE_VALUE_COLUMN}, {OUTPUT_COLUMN}). Rename them (for "
            f"example data.rename(columns={{'{reserved[0]}': 'feature_{reserved[0]}'}})).")


def _split_targets(frame: pd.DataFrame, targets: Any) -> tuple[pd.DataFrame, np.ndarray | None]:
    if targets is None:
        return frame, None
    if isinstance(targets, str):
        if targets not in frame.columns:
            raise InvalidInputError(
                f"targets='{targets}' is not a column of data. Columns: {list(frame.columns)}. "
                "Pass the target column's name, or an array with one value per row."
            )
        y = frame[targets].to_numpy()
        _check_targets_finite(y)
        return frame.drop(columns=[targets]), y
    y = np.asarray(targets)
    if y.ndim == 0 or len(y) != len(frame):
        n = 1 if y.ndim == 0 else len(y)
        raise InvalidInputError(
            f"targets has {n} value(s) but data has {len(frame)} row(s): pass one target per row."
        )
    _check_targets_finite(y)
    return frame, y


def _check_targets_finite(y: np.ndarray) -> None:
    """NaN or inf targets make every target-based figure NaN: refuse them. Numeric targets:
    NaN and +-inf; other labels: None and NaN."""
    if y.dtype.kind in "biufc":
        n_nan = int(np.isnan(y).sum()) if y.dtype.kind in "fc" else 0
        n_inf = int(np.isinf(y).sum()) if y.dtype.kind in "fc" else 0
    else:
        n_nan, n_inf = int(pd.isna(pd.Series(y.ravel(), dtype=object)).sum()), 0
        if y.dtype.kind == "O":
            floats = [v for v in y.ravel() if isinstance(v, (float, np.floating))]
            n_inf = int(np.isinf(np.asarray(floats, dtype=float)).sum()) if floats else 0
    if n_nan or n_inf:
        rows = len(y)
        parts = ", ".join(p for p in (f"{n_nan} missing (NaN/None)" if n_nan else "",
                                      f"{n_inf} infinite" if n_inf else "") if p)
        raise InvalidInputError(
            f"targets has {parts} value(s) in {rows} row(s). Drop those rows from data and "
            "targets (for example keep = y.notna(); data, y = data[keep], y[keep]) or impute "
            "the targets before explaining.")


def _match_columns(frame: pd.DataFrame, model: ModelAdapter, *, what: str,
                   columns: list[str] | None = None) -> pd.DataFrame:
    frame = frame.rename(columns=lambda c: c if isinstance(c, str) else str(c))
    expected = columns if columns is not None else model.input_names
    if expected is None:
        return frame
    missing = [c for c in expected if c not in frame.columns]
    extra = [c for c in frame.columns if c not in expected]
    if missing or extra:
        source = "the data" if columns is not None else "the model signature"
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if extra:
            parts.append(f"unexpected column(s) {extra}")
        raise InvalidInputError(
            f"{what} does not match {source}: {'; '.join(parts)}. Expected {len(expected)} "
            f"columns: {expected}. Drop extra columns (pass a target column as targets='name')."
        )
    return frame[expected]


def _is_numeric(dtype: Any) -> bool:
    return (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)) and not (
        isinstance(dtype, pd.CategoricalDtype)
    )


def _make_encoder(frame: pd.DataFrame, model: ModelAdapter,
                  extra: pd.DataFrame | None = None) -> Encoder:
    dtypes = dict(frame.dtypes.items())
    non_numeric = [c for c, d in dtypes.items() if not _is_numeric(d)]
    datetimes = [c for c in non_numeric if pd.api.types.is_datetime64_any_dtype(dtypes[c])]
    if datetimes:
        raise InvalidInputError(
            f"column(s) {datetimes} hold dates/times, which cannot be perturbed; convert them to "
            "numbers (for example days since a reference date) before explaining."
        )
    if non_numeric:
        refused = [c for c in non_numeric if not _model_accepts_strings(model, frame, c)]
        if refused:
            kinds = {c: str(dtypes[c]) for c in refused}
            raise InvalidInputError(
                f"column(s) {refused} are not numeric ({kinds}) and the model does not accept "
                "them as they are. Encode them as numbers, or log the model with a signature that "
                "declares them as strings (the model must then handle the encoding)."
            )
    both = frame if extra is None else pd.concat([frame, extra], ignore_index=True)
    # A plain object Index in order of appearance: for a pandas category column, pd.unique
    # gives a Categorical whose own category order would disagree with these positions.
    categories = {c: pd.Index(np.asarray(pd.unique(both[c].dropna()), dtype=object),
                              dtype=object) for c in non_numeric}
    markers = {c: missing_marker(both[c]) for c in non_numeric}
    return Encoder(columns=list(frame.columns), dtypes=dtypes, categories=categories,
                   wants_frame=model.wants_frame, array_dtype=model.input_dtype,
                   missing_markers=markers)


def _model_accepts_strings(model: ModelAdapter, frame: pd.DataFrame, column: str) -> bool:
    if not model.wants_frame:
        return False
    if model.input_types is not None:
        return model.input_types.get(column, "").lower() in _STRING_SCHEMA_TYPES
    # No signature: believe the model if it predicts on the raw rows. Complete rows where there
    # are some: whether it takes missing values is another question (_check_values asks it).
    complete = frame.dropna().head(2)
    try:
        model.predict(complete if len(complete) else frame.head(2))
    except Exception:
        return False
    return True


def _check_values(frame: pd.DataFrame, background: pd.DataFrame | None, encoder: Encoder,
                  model: ModelAdapter) -> dict[str, Any] | None:
    """Refuse infinite values; keep missing ones when the model accepts them.

    Returns the ``missing_values`` facts for ``summary.json`` (None when nothing is missing).
    ``background`` is the one the user gave (a sampled background comes from ``frame``).
    """
    missing, infinite = _count_bad(frame, encoder)
    bg_missing, bg_infinite = _count_bad(background, encoder) if background is not None \
        else ({}, {})
    if infinite:
        _refuse_infinite("data", missing, infinite, encoder)
    if bg_infinite:
        _refuse_infinite("background", bg_missing, bg_infinite, encoder)
    columns = list(dict.fromkeys([*missing, *bg_missing]))
    if not columns:
        return None
    accepted, how = accepts_missing(model, frame, columns,
                                    to_model_input=lambda rows: encoder.decode(encoder.encode(rows)))
    if not accepted:
        what, counts = ("data", missing) if missing else ("background", bg_missing)
        _refuse_missing(what, counts, how, encoder)
    facts: dict[str, Any] = {"columns": missing,
                             "rows": int(frame[list(missing)].isna().any(axis=1).sum()),
                             "accepted": True, "how": how}
    if bg_missing:
        facts["background_columns"] = bg_missing
    return facts


def _count_bad(frame: pd.DataFrame, encoder: Encoder) -> tuple[dict[str, int], dict[str, int]]:
    """Per column: missing values (NaN, None, pd.NA) and infinite values, where there are any."""
    missing: dict[str, int] = {}
    infinite: dict[str, int] = {}
    for col in frame.columns:
        values = frame[col]
        n_missing = int(values.isna().sum())
        if n_missing:
            missing[col] = n_missing
        if col not in encoder.categories and not pd.api.types.is_bool_dtype(values.dtype):
            n_inf = int(np.isinf(values.to_numpy(dtype=np.float64, na_value=np.nan)).sum())
            if n_inf:
                infinite[col] = n_inf
    return missing, infinite


def _detail(counts: dict[str, int], encoder: Encoder, label: str | None = None) -> str:
    """``'age': 3 NaN; 'city': 2 missing`` (categorical columns hold None/pd.NA, not NaN)."""
    return "; ".join(
        f"'{c}': {n} {label or ('missing' if c in encoder.categories else 'NaN')}"
        for c, n in counts.items())


def _refuse_infinite(what: str, missing: dict[str, int], infinite: dict[str, int],
                     encoder: Encoder) -> None:
    also = f" (and missing values: {_detail(missing, encoder)})" if missing else ""
    raise InvalidInputError(
        f"{what} has infinite values in {len(infinite)} column(s): "
        f"{_detail(infinite, encoder, 'inf')}{also}. Infinite inputs cannot be explained: "
        "perturbations average over them and every attribution becomes infinite or NaN. "
        "Replace them (for example data.replace([np.inf, -np.inf], np.nan), kept as missing "
        "values when the model handles them) or drop those rows (data.replace([np.inf, "
        "-np.inf], np.nan).dropna()) before explaining.")


def _refuse_missing(what: str, counts: dict[str, int], how: str, encoder: Encoder) -> None:
    raise InvalidInputError(
        f"{what} has missing values in {len(counts)} column(s): {_detail(counts, encoder)}, "
        f"and the model does not accept them: {how}. Explain a model that handles missing "
        "values (a Pipeline that imputes first, HistGradientBoosting*, XGBoost, LightGBM), or "
        "impute or drop those rows (for example data.dropna()) before explaining; dropping "
        "rows changes which population is explained.")
