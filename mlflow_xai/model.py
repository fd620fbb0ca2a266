"""Turn whatever the user passed as a model into one batched prediction function.

Accepted: a model URI, a loaded MLflow ``PyFuncModel``, a scikit-learn style estimator
(including XGBoost and LightGBM), a torch ``nn.Module``, or a callable ``f(ndarray) -> ndarray``.
The adapter keeps the raw model when there is one, so tree and gradient methods can use it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlflow_xai.device import is_out_of_memory
from mlflow_xai.errors import ConfigError

_SKLEARN_TREES = (
    "DecisionTreeClassifier", "DecisionTreeRegressor", "ExtraTreeClassifier", "ExtraTreeRegressor",
    "RandomForestClassifier", "RandomForestRegressor", "ExtraTreesClassifier",
    "ExtraTreesRegressor", "GradientBoostingClassifier", "GradientBoostingRegressor",
    "HistGradientBoostingClassifier", "HistGradientBoostingRegressor",
)


@dataclass
class ModelAdapter:
    """A model as mlflow-xai sees it.

    ``predict`` takes the model's own input (a DataFrame when ``wants_frame``, else a float
    array) and returns ``(n,)`` or ``(n, n_outputs)`` floats. For classifiers with
    ``predict_proba`` the outputs are class probabilities.
    """

    predict: Callable[[Any], np.ndarray]
    kind: str
    raw: Any = None
    uri: str | None = None
    model_id: str | None = None
    flavors: list[str] = field(default_factory=list)
    input_names: list[str] | None = None
    input_types: dict[str, str] | None = None
    input_dtype: Any = None
    wants_frame: bool = True
    is_classifier: bool = False
    classes: list[Any] | None = None
    tree_kind: str | None = None
    torch_module: Any = None
    device: str = "cpu"

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "uri": self.uri,
            "model_id": self.model_id,
            "flavors": self.flavors,
            "class": type(self.raw).__name__ if self.raw is not None else None,
            "classifier": self.is_classifier,
            "classes": [_jsonable(c) for c in self.classes] if self.classes is not None else None,
        }


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def resolve_model(model: Any, *, device: str = "cpu") -> ModelAdapter:
    """Wrap ``model`` in a :class:`ModelAdapter`; raise :class:`ConfigError` if it is not usable."""
    if isinstance(model, ModelAdapter):
        return model
    if isinstance(model, str):
        return _from_uri(model, device)
    if _is_pyfunc(model):
        return _from_pyfunc(model, device, uri=None)
    if _is_torch_module(model):
        return _from_torch(model, device)
    if hasattr(model, "predict") and hasattr(model, "fit"):
        return _from_estimator(model)
    if _is_native_booster(model):
        return _from_estimator(model)
    if callable(model):
        return ModelAdapter(predict=_array_callable(model), kind="callable", raw=model,
                            wants_frame=False)
    if callable(getattr(model, "predict", None)):  # e.g. MLflow's wrapper of a plain function
        return ModelAdapter(predict=_pyfunc_predict(model), kind="pyfunc", raw=model)
    raise ConfigError(
        f"cannot explain a model of type {type(model).__name__}. Pass a model URI "
        "('models:/<id>', 'runs:/<run>/<path>'), a loaded MLflow model, a scikit-learn style "
        "estimator, a torch nn.Module, or a function f(ndarray) -> ndarray."
    )


def _is_pyfunc(model: Any) -> bool:
    return type(model).__name__ == "PyFuncModel" and hasattr(model, "metadata")


def _is_torch_module(model: Any) -> bool:
    import sys

    if "torch" not in sys.modules:  # no nn.Module exists before torch is imported
        return False
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
    return isinstance(model, torch.nn.Module)


def _is_native_booster(model: Any) -> bool:
    module = type(model).__module__
    return type(model).__name__ == "Booster" and module.split(".")[0] in ("xgboost", "lightgbm")


def _from_uri(uri: str, device: str) -> ModelAdapter:
    import mlflow

    try:
        with _quiet_artifact_downloads():
            pyfunc = mlflow.pyfunc.load_model(uri)
    except Exception as exc:
        raise ConfigError(f"could not load the MLflow model '{uri}': {exc}") from exc
    return _from_pyfunc(pyfunc, device, uri=uri)


@contextlib.contextmanager
def _quiet_artifact_downloads() -> Iterator[None]:
    """Loading a model is our internal step, not the user's download: no progress bar for it
    (unless the user set MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR explicitly)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    if key in os.environ:
        yield
        return
    os.environ[key] = "false"
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _from_pyfunc(pyfunc: Any, device: str, uri: str | None) -> ModelAdapter:
    meta = pyfunc.metadata
    flavors = list(meta.flavors)
    names, types, dtype = _schema_facts(meta)
    model_id = getattr(pyfunc, "model_id", None) or getattr(meta, "model_id", None)
    raw = None
    try:
        raw = pyfunc.get_raw_model()
    except Exception:  # not every flavor exposes its raw model
        raw = None
    if "pytorch" in flavors and _is_torch_module(raw):
        adapter = _from_torch(raw, device)
    elif raw is not None and any(f in flavors for f in ("sklearn", "xgboost", "lightgbm")) and (
        hasattr(raw, "predict")
    ):
        adapter = _from_estimator(raw)
    else:
        adapter = ModelAdapter(predict=_pyfunc_predict(pyfunc), kind="pyfunc", raw=pyfunc)
    adapter.uri = uri
    adapter.model_id = model_id
    adapter.flavors = flavors
    if names is not None:
        adapter.input_names, adapter.input_types = names, types
    if dtype is not None and adapter.kind == "pyfunc":
        # A tensor signature: the model takes an array of that dtype (e.g. float32), not a frame.
        adapter.input_dtype = dtype
        adapter.wants_frame = False
    return adapter


def _schema_facts(meta: Any) -> tuple[list[str] | None, dict[str, str] | None, Any]:
    """Column names and types from the model signature, or a tensor dtype."""
    try:
        schema = meta.get_input_schema()
    except Exception:
        return None, None, None
    if schema is None:
        return None, None, None
    if schema.is_tensor_spec():
        try:
            return None, None, schema.numpy_types()[0]
        except Exception:
            return None, None, None
    if not schema.has_input_names():
        return None, None, None
    names = schema.input_names()
    types = {}
    for spec in schema.inputs:
        try:
            types[spec.name] = str(spec.type.name) if hasattr(spec.type, "name") else str(spec.type)
        except Exception:
            types[spec.name] = "unknown"
    return names, types, None


def _pyfunc_predict(pyfunc: Any) -> Callable[[Any], np.ndarray]:
    def predict(X: Any) -> np.ndarray:
        return _as_float_output(pyfunc.predict(X))

    return predict


def _tree_kind(est: Any) -> str | None:
    """'sklearn', 'xgboost' or 'lightgbm' when tree_shap can read ``est``'s trees, else None.
    A scikit-learn Pipeline gets the kind of its final step (tree_shap explains through its
    preprocessing); the adapter's ``raw`` stays the Pipeline."""
    if _is_sklearn_pipeline(est):
        final = est.steps[-1][1] if est.steps else None
        # A nested Pipeline as the final step is not unwrapped: tree_shap reads one level.
        return None if final is None or _is_sklearn_pipeline(final) else _tree_kind(final)
    module = type(est).__module__.split(".")[0]
    if module == "sklearn" and type(est).__name__ in _SKLEARN_TREES:
        return "sklearn"
    return module if module in ("xgboost", "lightgbm") else None


def _is_sklearn_pipeline(est: Any) -> bool:
    return type(est).__name__ == "Pipeline" and type(est).__module__.startswith("sklearn")


def _from_estimator(est: Any) -> ModelAdapter:
    module = type(est).__module__.split(".")[0]
    tree_kind = _tree_kind(est)
    is_classifier = _is_classifier(est)
    if _is_native_booster(est):
        predict = _booster_predict(est)
    elif is_classifier and hasattr(est, "predict_proba"):
        predict = lambda X: _as_float_output(est.predict_proba(X))  # noqa: E731
    else:
        predict = lambda X: _as_float_output(est.predict(X))  # noqa: E731
    # LightGBM reports its own sanitized names (spaces -> underscores), not the input columns.
    names = None if module == "lightgbm" else getattr(est, "feature_names_in_", None)
    # A scikit-learn estimator fitted on an array gets arrays: a DataFrame would cost a
    # feature-name check (and a warning) on every call.
    fitted_on_array = module == "sklearn" and names is None and hasattr(est, "n_features_in_")
    return ModelAdapter(
        wants_frame=not fitted_on_array,
        predict=predict,
        kind=module if module in ("xgboost", "lightgbm") else "sklearn",
        raw=est,
        input_names=[str(n) for n in names] if names is not None else None,
        is_classifier=is_classifier,
        classes=list(getattr(est, "classes_", [])) or None if is_classifier else None,
        tree_kind=tree_kind,
    )


def _is_classifier(est: Any) -> bool:
    try:
        from sklearn.base import is_classifier

        if is_classifier(est):
            return True
    except Exception:
        pass
    return hasattr(est, "predict_proba") and hasattr(est, "classes_")


def _booster_predict(booster: Any) -> Callable[[Any], np.ndarray]:
    if type(booster).__module__.startswith("xgboost"):
        import xgboost

        def predict(X: Any) -> np.ndarray:
            # pandas category columns (enable_categorical models) need the flag in DMatrix.
            categorical = isinstance(X, pd.DataFrame) and any(
                isinstance(dtype, pd.CategoricalDtype) for dtype in X.dtypes)
            return _as_float_output(booster.predict(xgboost.DMatrix(
                X, enable_categorical=categorical)))

        return predict
    return lambda X: _as_float_output(booster.predict(X))


def _array_callable(fn: Callable) -> Callable[[Any], np.ndarray]:
    def predict(X: Any) -> np.ndarray:
        return _as_float_output(fn(np.asarray(X)))

    return predict


def _from_torch(module: Any, device: str) -> ModelAdapter:
    import torch

    module = module.to(device)

    def predict(X: Any, batch_size: int = 8192) -> np.ndarray:
        x = torch.as_tensor(np.asarray(X, dtype=np.float32))
        outputs = []
        was_training = set_training(module, False)
        try:
            with torch.inference_mode():
                start = 0
                while start < len(x):
                    try:
                        out = module(x[start:start + batch_size].to(device))
                    except Exception as exc:
                        # Out of memory on the device: halve the batch and retry that slice.
                        if is_out_of_memory(exc) and batch_size > 1:
                            batch_size //= 2
                            if device.startswith("cuda"):
                                torch.cuda.empty_cache()
                            continue
                        raise
                    outputs.append(out.detach().float().cpu().numpy())
                    start += batch_size
        finally:
            set_training(module, was_training)
        return _as_float_output(np.concatenate(outputs, axis=0))

    return ModelAdapter(predict=predict, kind="torch", raw=module, wants_frame=False,
                        torch_module=module, device=device, input_dtype=np.float32)


def set_training(module: Any, mode: bool) -> bool:
    """Switch train/eval mode; return the previous mode. Exported (pt2) programs have a fixed
    mode and refuse ``eval()``, which is fine: they were exported for inference."""
    previous = bool(getattr(module, "training", False))
    try:
        module.train(mode)
    except NotImplementedError:
        pass
    return previous


def _as_float_output(pred: Any) -> np.ndarray:
    if isinstance(pred, (pd.DataFrame, pd.Series)):
        pred = pred.to_numpy()
    if isinstance(pred, dict):
        pred = np.column_stack([np.asarray(v) for v in pred.values()])
    arr = np.asarray(pred)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise TypeError(
            f"the model returned non-numeric predictions (dtype {arr.dtype}); mlflow-xai explains "
            "numeric outputs: log a classifier with predict_proba, or return scores."
        )
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    return arr
