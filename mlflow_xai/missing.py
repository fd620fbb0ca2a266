"""Does the model accept missing values?

Many models handle missing values themselves (XGBoost, LightGBM, scikit-learn's
HistGradientBoosting and, since 1.4, its trees and forests; pipelines that impute first).
Dropping the rows with missing values would change which population is explained, so mlflow-xai
keeps them when the model accepts them. :func:`accepts_missing` decides, and says how:

* known from the model: its library handles missing values natively, or scikit-learn's
  ``allow_nan`` estimator tag says so (numeric columns only: the tag says nothing about
  missing categories);
* otherwise probed once: one ``predict`` call on a few real rows with the columns that have
  missing values set to missing. Accepted when it raises nothing and returns finite outputs,
  one per row. A pipeline is always probed: whether its first step imputes *these* columns
  (a ColumnTransformer may route them elsewhere, an imputer may look for another marker) is
  only known by trying.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from mlflow_xai.model import ModelAdapter

#: Rows in the probe: few model rows, but more than one so that a model that treats a batch
#: specially (or returns one value for the whole batch) is caught by the shape test.
PROBE_ROWS = 3
#: Libraries whose models route missing values down the trees natively.
_NATIVE_LIBRARIES = ("xgboost", "lightgbm")


def accepts_missing(model: ModelAdapter, frame: pd.DataFrame, columns: list[str], *,
                    to_model_input: Callable[[pd.DataFrame], Any] | None = None
                    ) -> tuple[bool, str]:
    """``(accepted, how)``: whether ``model`` predicts on rows with missing values in
    ``columns`` of ``frame``, and how that was decided (or why not, for the error message).

    ``to_model_input`` turns rows of ``frame`` into what the model's predict takes (by default
    the frame itself, or its float values for models that take arrays); pass the encoder's
    round trip so that the probe shows the model exactly what explainers will.
    """
    known = known_from_model(model, frame, columns)
    if known is not None:
        return True, known
    rows = probe_rows(frame, columns)
    convert = to_model_input or _default_input(model)
    numeric = all(_is_numeric(frame[c].dtype) for c in columns)
    where = f"rows with {'NaN' if numeric else 'missing values'} in {_columns_text(columns)}"
    return _probe(model, convert(rows), where)


def known_from_model(model: ModelAdapter, frame: pd.DataFrame, columns: list[str]) -> str | None:
    """How we know the model accepts missing values without calling it, or None."""
    # What a library or a tag says is about NaN in numeric input; a missing category is another
    # matter (the model may one-hot encode it, or refuse a None among strings): probe for those.
    if any(not _is_numeric(frame[c].dtype) for c in columns):
        return None
    library = _native_library(model)
    if library is not None:
        return f"known: {library} models handle missing values natively"
    if _sklearn_allows_nan(model.raw):
        return (f"known: scikit-learn's {type(model.raw).__name__} declares missing-value "
                "support (estimator tag allow_nan)")
    return None


def probe_rows(frame: pd.DataFrame, columns: list[str], rows: int = PROBE_ROWS) -> pd.DataFrame:
    """A few real rows of ``frame`` with every one of ``columns`` set to missing (all at once:
    the hardest case a perturbation can produce)."""
    probe = frame.head(rows).copy()
    for column in columns:
        probe[column] = _missing_column(frame[column], probe.index)
    return probe


def missing_marker(values: pd.Series) -> Any:
    """The missing value a column uses (None, NaN or pd.NA), so that a decoded missing value
    is the one the model saw in the data; NaN when the column has none."""
    missing = values[values.isna()]
    return missing.iloc[0] if len(missing) else np.nan


def _missing_column(values: pd.Series, index: pd.Index) -> pd.Series:
    """An all-missing column shaped like ``values`` (on the probe's ``index``: pandas aligns
    assigned columns by index)."""
    if _is_numeric(values.dtype) and isinstance(values.dtype, np.dtype):
        # A NumPy int or bool column cannot hold NaN; float is what the data would have.
        return pd.Series(np.full(len(index), np.nan), index=index)
    return pd.Series([missing_marker(values)] * len(index), index=index, dtype=values.dtype)


def _is_numeric(dtype: Any) -> bool:
    return (pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)) and not (
        isinstance(dtype, pd.CategoricalDtype))


def _native_library(model: ModelAdapter) -> str | None:
    if model.kind in _NATIVE_LIBRARIES:
        return model.kind
    if model.raw is not None:
        module = type(model.raw).__module__.split(".")[0]
        if module in _NATIVE_LIBRARIES:
            return module
    # An MLflow model of such a flavor loaded without its raw model: the flavor is the library.
    flavors = [f for f in model.flavors if f in _NATIVE_LIBRARIES]
    return flavors[0] if flavors and model.kind == "pyfunc" else None


def _sklearn_allows_nan(raw: Any) -> bool:
    """scikit-learn's own word (``allow_nan`` tag) for a plain estimator. Meta-estimators
    (Pipeline, ColumnTransformer) report False even when they impute: they are probed."""
    if raw is None or type(raw).__module__.split(".")[0] != "sklearn":
        return False
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(raw).input_tags.allow_nan)
    except Exception:  # older scikit-learn or a tag error: the probe decides
        return False


def _default_input(model: ModelAdapter) -> Callable[[pd.DataFrame], Any]:
    if model.wants_frame:
        return lambda rows: rows
    return lambda rows: rows.to_numpy(dtype=model.input_dtype or np.float64, na_value=np.nan)


def _probe(model: ModelAdapter, rows: Any, where: str) -> tuple[bool, str]:
    """One predict call on ``rows`` (``where`` says which: "rows with NaN in 'age'"); the
    verdict and what happened, in words."""
    n = len(rows)
    try:
        with _quiet():
            out = np.asarray(model.predict(rows))
    except Exception as exc:
        return False, (f"the model's predict raised {type(exc).__name__} on {where} "
                       f"({_first_line(exc)})")
    if out.ndim == 0 or len(out) != n:
        got = "a scalar" if out.ndim == 0 else f"{len(out)} outputs"
        return False, f"the model's predict returned {got} for {n} {where}"
    if out.dtype.kind in "fc" and not np.isfinite(out).all():
        return False, (f"the model's predict returned NaN or infinite outputs for {where} "
                       "(it propagates missing values instead of handling them)")
    return True, (f"probed: the model's predict returned finite outputs for {n} "
                  f"{where}{_structure(model.raw)}")


def _columns_text(columns: list[str]) -> str:
    shown = ", ".join(f"'{c}'" for c in columns[:10])
    return shown + (f" and {len(columns) - 10} more column(s)" if len(columns) > 10 else "")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    line = text[0].rstrip(".") if text else "no message"
    return line if len(line) <= 300 else line[:297] + "..."


def _structure(raw: Any) -> str:
    """`` (Pipeline: simpleimputer -> logisticregression)`` for a pipeline, else empty: what
    the probe found working, for the record."""
    steps = getattr(raw, "steps", None)
    if not isinstance(steps, list):
        return ""
    names = " -> ".join(f"{type(step).__name__}" for _, step in steps)
    return f" ({type(raw).__name__}: {names})"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The probe is our internal question, not the user's call: its warnings (scikit-learn's
    'X has feature names', NumPy's invalid-value) and prints must not reach them."""
    with warnings.catch_warnings(), np.errstate(all="ignore"), \
            contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
