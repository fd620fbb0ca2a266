"""Scale-out: explain every row of a large data set with Ray Data (``mlflow-xai[ray]``).

Two pieces:

* :class:`BatchExplainer` — a picklable, Ray-free callable, pandas batch in, pandas batch out.
  It loads the model once (at its first call, so it can be built on the driver and shipped to
  workers) and explains each batch with :func:`mlflow_xai.explain` against a fixed background.
  The same object serves Ray's ``Dataset.map_batches`` (as a stateful actor class) and Spark's
  ``DataFrame.mapInPandas`` (``lambda it: (explainer(b) for b in it)``).
* :func:`explain` — the Ray Data driver: row ids, a fixed background, ``map_batches`` over an
  actor pool (GPUs per actor may be fractional), per-row attributions written to parquet,
  global importance reduced exactly (sums and counts over all rows, never an average of batch
  averages), and the summary logged to MLflow.

Output table (one row per input row)::

    <row_id> | <method>/<feature> ... | <method>/xai.base_value | xai.output (classifiers only)

(``xai.`` is refused as a feature name prefix, so a feature never takes a reserved column.)

Ray is imported only inside the functions that need it, so this module imports without it.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlflow_xai.data import BASE_VALUE_COLUMN, check_feature_names
from mlflow_xai.data import OUTPUT_COLUMN as _OUTPUT_COLUMN
from mlflow_xai.errors import ConfigError, InvalidInputError, XaiError

#: Separator between method and feature in output column names: ``kernel_shap/age``.
SEP = "/"
#: Per-method base value column suffix: ``kernel_shap/xai.base_value``.
BASE_VALUE = BASE_VALUE_COLUMN
#: The class label each row was explained for (multi-output models; as text): ``xai.output``.
OUTPUT_COLUMN = _OUTPUT_COLUMN
#: Partial-sum columns carrying a batch's costs: ``cost:model_evals/<method>``.
COST_PREFIX = "cost:"
#: Explained rows copied into the run's ``xai/attributions/*.parquet`` (the whole table stays at
#: the output path): all of them up to this many, else a seeded sample of this many.
LOGGED_ROWS = 1000
#: Fault tolerance is Ray Data's own: its actor pools restart a dead actor and resubmit the
#: batch it was running (``max_restarts=-1``, ``max_task_retries=-1`` unless overridden).
RAY_DATA_RETRY_DEFAULTS = {"max_restarts": -1, "max_task_retries": -1}
INSTALL_HINT = "pip install 'mlflow-xai[ray]'"


#: Models loaded in this process, by (uri, device, tracking uri, registry uri, model type).
_MODEL_CACHE: dict[tuple[Any, ...], Any] = {}
_MODEL_CACHE_SIZE = 4


class MissingDependencyError(XaiError, ImportError):
    """An optional dependency (Ray Data) is not installed."""


def column_name(method: str, feature: str) -> str:
    """The output column of ``feature``'s attribution by ``method``."""
    return f"{method}{SEP}{feature}"


def split_column(column: str) -> tuple[str, str] | None:
    """``'kernel_shap/age'`` -> ``('kernel_shap', 'age')``; None for other columns."""
    method, sep, feature = column.partition(SEP)
    return (method, feature) if sep and method and feature else None


# --------------------------------------------------------------------------------------------
# The per-batch worker (no Ray in here: Spark uses it too)
# --------------------------------------------------------------------------------------------

class BatchExplainer:
    """Explain every row of each pandas batch; the model is loaded once per process.

    Args:
        model_uri: an MLflow model URI (``models:/<id>``, ``runs:/<run>/model``) or a local
            model directory; each worker loads it itself.
        explainers: method names or ``name -> parameters``; default every registered *local*
            explainer that applies to the model. Global-only methods are refused (a per-batch
            global figure cannot be combined exactly).
        background: the reference rows, a DataFrame with the feature columns. Required: a
            background drawn from each batch would make a row's attribution depend on the batch
            it landed in (:func:`explain` samples one from the data on the driver).
        output: which model output to explain (see :func:`mlflow_xai.explain`).
        device: ``"auto"`` (CUDA when this process was given a GPU and torch sees one, else CPU),
            ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        seed: every random choice of the methods. Methods whose randomness is shared by all
            rows (kernel_shap, permutation_shap, lime) or that have none (exact_shap,
            tree_shap, integrated_gradients, saliency, input_x_gradient, deeplift) give each
            row the same numbers whatever the batching, equal to one-process ``explain()``;
            the noise of smoothgrad, smoothgrad_sq, vargrad and gradient_shap is drawn per row
            position in the batch, so their values are equally valid draws but not equal.
        row_id: the column carried through unchanged to identify each row.
        feature_columns: the columns to explain, in order; default every column but ``row_id``.
        tracking_uri, registry_uri: where the worker finds ``models:/`` and ``runs:/`` URIs
            (default: the worker's own MLflow configuration).
        model_type: ``"classifier"`` or ``"regressor"`` when it cannot be inferred.
    """

    def __init__(self, model_uri: str, *, explainers: Any = None,
                 background: pd.DataFrame | None = None, output: Any = None,
                 device: str = "auto", seed: int = 0, row_id: str = "row_id",
                 feature_columns: list[str] | None = None, tracking_uri: str | None = None,
                 registry_uri: str | None = None, model_type: str | None = None) -> None:
        # Stored unchanged; the model is loaded at the first call, in the worker.
        self.model_uri = model_uri
        self.explainers = explainers
        self.background = background
        self.output = output
        self.device = device
        self.seed = seed
        self.row_id = row_id
        self.feature_columns = list(feature_columns) if feature_columns is not None else None
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri
        self.model_type = model_type
        self._model: Any = None
        self._device: str | None = None
        self._methods: dict[str, dict[str, Any]] | None = None
        self._empty: pd.DataFrame | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Ship the recipe, never a loaded model: each worker loads its own, once.
        state = self.__dict__.copy()
        state.update(_model=None, _device=None, _empty=None)
        return state

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def setup(self) -> None:
        """Load the model and check the methods (done by the first call when not called)."""
        if self._model is not None:
            return
        if self.background is None or len(self.background) == 0:
            raise InvalidInputError(
                "BatchExplainer needs background= (reference rows fixed for the whole job): a "
                "background drawn from each batch would make results depend on the batching. "
                "mlflow_xai.distributed.explain samples one from the data for you.")
        import mlflow

        from mlflow_xai.model import resolve_model

        if self.tracking_uri and mlflow.get_tracking_uri() != self.tracking_uri:
            mlflow.set_tracking_uri(self.tracking_uri)
        if self.registry_uri:
            mlflow.set_registry_uri(self.registry_uri)
        self._methods = local_methods(self.explainers)
        self._device = worker_device(self.device)
        # Spark unpickles a task's function for every task: the process-wide cache keeps the
        # model loaded once per worker process there too.
        key = (self.model_uri, self._device, self.tracking_uri, self.registry_uri,
               self.model_type)
        if key not in _MODEL_CACHE:
            while len(_MODEL_CACHE) >= _MODEL_CACHE_SIZE:
                _MODEL_CACHE.pop(next(iter(_MODEL_CACHE)))
            _MODEL_CACHE[key] = resolve_model(self.model_uri, device=self._device)
        self._model = _MODEL_CACHE[key]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """One output row per input row: ``row_id``, attributions, base values (,
        ``xai.output``)."""
        self.setup()
        if self.row_id not in batch.columns:
            raise InvalidInputError(
                f"the batch has no row id column '{self.row_id}' (columns: "
                f"{list(batch.columns)[:12]}). Add one, or pass row_id= naming the column "
                "that identifies each row.")
        if len(batch) == 0:
            return self._empty_output()
        features = self._features(batch)
        out = self._explain(features)
        out.insert(0, self.row_id, batch[self.row_id].to_numpy())
        if self._empty is None:
            self._empty = out.iloc[:0].copy()
        return out

    def output_dtypes(self) -> dict[str, str]:
        """Output column -> numpy dtype name (for a Spark schema), from one background row."""
        probe = self.background.head(1).copy()
        probe.insert(0, self.row_id, np.zeros(len(probe), dtype=np.int64))
        return {c: str(t) for c, t in self(probe).dtypes.items()}

    # -- internals ----------------------------------------------------------------------------

    def _features(self, batch: pd.DataFrame) -> pd.DataFrame:
        columns = self.feature_columns or [c for c in batch.columns if c != self.row_id]
        missing = [c for c in columns if c not in batch.columns]
        if missing:
            raise InvalidInputError(f"the batch lacks feature column(s) {missing}; it has "
                                    f"{list(batch.columns)[:20]}.")
        return plain_dtypes(batch[columns].reset_index(drop=True))

    def _explain(self, features: pd.DataFrame) -> pd.DataFrame:
        from mlflow_xai import explain as explain_frame

        background = self.background
        if self.feature_columns is None:
            background = background[[c for c in background.columns if c != self.row_id]]
        expl = explain_frame(
            self._model, features, explainers=self._methods, checks=[], selectors=None,
            background=background, max_rows=max(1, len(features)), device=self._device,
            seed=self.seed, output=self.output, progress=False, strict=True,
            model_type=self.model_type)
        # Per-batch costs, summed (evaluations) and maxed (efficiency gap) on the driver.
        self.last_costs = {m: {k: e[k] for k in ("model_evals", "efficiency_max_abs_gap")
                               if k in e}
                           for m, e in expl.summary["methods"].items() if e.get("status") == "ok"}
        missing = [m for m in self._methods if m not in expl.attributions
                   and expl.summary["methods"].get(m, {}).get("status") == "ok"]
        if missing:  # ran, but gave only a global figure: cannot be combined across batches
            raise ConfigError(f"explainer(s) {missing} return no per-row attributions; the "
                              "distributed backend needs local methods.")
        columns: dict[str, np.ndarray] = {}
        for method, frame in expl.attributions.items():
            for feature in frame.columns:
                columns[column_name(method, str(feature))] = frame[feature].to_numpy(float)
            if method in expl.base_values:
                columns[column_name(method, BASE_VALUE)] = \
                    expl.base_values[method].to_numpy(float)
        if expl.outputs is not None:
            columns[OUTPUT_COLUMN] = expl.outputs.astype(str).to_numpy()
        return pd.DataFrame(columns)

    def _empty_output(self) -> pd.DataFrame:
        if self._empty is None:  # learn the columns from one background row
            self.output_dtypes()
        return self._empty.copy()


def plain_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """Arrow-backed numeric columns (Ray hands batches over with them) as NumPy dtypes, so a
    batch is explained exactly as the same rows would be in one process."""
    changes = {}
    for column, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.ArrowDtype) and dtype.numpy_dtype.kind in "biuf":
            has_na = bool(frame[column].isna().any())
            changes[column] = np.float64 if has_na and dtype.numpy_dtype.kind != "f" \
                else dtype.numpy_dtype
    return frame.astype(changes) if changes else frame


def local_methods(explainers: Any) -> dict[str, dict[str, Any]]:
    """``explainers`` as ``name -> parameters``, checked; default every local explainer."""
    from mlflow_xai.config import normalize_methods
    from mlflow_xai.plugins import get_registry

    registry = get_registry()
    valid = registry.names("explainer")
    if explainers is None:
        return {n: {} for n in valid if registry.get(n, "explainer").cls.local}
    methods = normalize_methods(explainers, valid=valid, kind="explainer") or {}
    if not methods:
        raise ConfigError("explainers is empty: name at least one method to run.")
    global_only = [n for n in methods if not registry.get(n, "explainer").cls.local]
    if global_only:
        raise ConfigError(
            f"explainer(s) {global_only} are global-only: their per-batch figure is not a "
            "per-row attribution and cannot be combined exactly across batches. Run them "
            "with mlflow_xai.explain on a sample instead.")
    return methods


def worker_device(requested: str = "auto") -> str:
    """The device for this worker. ``auto`` inside a Ray actor: CPU unless Ray gave the actor a
    GPU (so an actor never takes a GPU another one reserved), then CUDA if torch sees it."""
    from mlflow_xai.device import resolve_device

    if (requested or "auto").strip().lower() != "auto":
        return resolve_device(requested)
    ray = sys.modules.get("ray")  # never import Ray here: Spark workers do not have it
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        try:
            in_actor = ray.get_runtime_context().get_actor_id() is not None
            gpus = ray.get_gpu_ids() if in_actor else None
        except Exception:  # noqa: BLE001 - an old or partial Ray: go by what torch sees
            in_actor, gpus = False, None
        if in_actor and not gpus:
            return "cpu"
    # With a GPU granted, Ray sets CUDA_VISIBLE_DEVICES, so "cuda" is that GPU; if torch sees no
    # CUDA (a CPU build, or a GPU declared but absent), this is the CPU.
    return resolve_device("auto")


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------

@dataclass
class DistributedExplanations:
    """What :func:`explain` returns.

    Attributes:
        path: the parquet folder with one row per input row (see the module docstring).
        importance: features x methods, mean |attribution| over *all* rows (exact).
        rows: rows explained (equals the input's row count).
        summary: the dict recorded as ``xai/summary.json``.
        timings: seconds per phase (``prepare``, ``explain_and_write``, ``reduce``, ``log``,
            ``total``).
        background: the reference rows every worker used (pass it to
            :func:`mlflow_xai.explain` to reproduce any row in one process).
        row_id: the row id column.
        run_id: the MLflow run logged to (``None`` with ``log=False``).
    """

    path: str
    importance: pd.DataFrame
    rows: int
    summary: dict[str, Any]
    timings: dict[str, float]
    background: pd.DataFrame
    row_id: str = "row_id"
    run_id: str | None = None
    methods: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows / max(self.timings.get("total", 0.0), 1e-9)

    def dataset(self) -> Any:
        """The attributions as a Ray Dataset (lazy; read from :attr:`path`)."""
        ray = require_ray()
        return ray.data.read_parquet(self.path)

    def to_pandas(self) -> pd.DataFrame:
        """All output rows in one DataFrame, sorted by row id (mind the size)."""
        frame = pd.read_parquet(self.path)
        return frame.sort_values(self.row_id, kind="stable").reset_index(drop=True)

    def attributions(self, method: str) -> pd.DataFrame:
        """One method's attributions: index = row id, columns = features."""
        if method not in self.methods:
            raise KeyError(f"no attributions for '{method}'; available: {self.methods}")
        frame = self.to_pandas().set_index(self.row_id)
        cols = [c for c in frame.columns if (s := split_column(c)) and s[0] == method
                and s[1] != BASE_VALUE]
        return frame[cols].rename(columns=lambda c: split_column(c)[1])

    def top_features(self, method: str, k: int = 5) -> list[str]:
        return list(self.importance[method].sort_values(ascending=False).index[:k])

    def __repr__(self) -> str:
        return (f"DistributedExplanations(methods={self.methods}, rows={self.rows}, "
                f"path={self.path!r})")


# --------------------------------------------------------------------------------------------
# The Ray driver
# --------------------------------------------------------------------------------------------

def require_ray() -> Any:
    """Import Ray (with Ray Data) or raise an error that says how to install it."""
    try:
        import importlib

        import ray
        importlib.import_module("ray.data")  # ray without [data] lacks it (and pyarrow etc.)
    except ImportError as exc:
        raise MissingDependencyError(
            f"mlflow_xai.distributed needs Ray Data, which is not installed ({exc}). "
            f"Install it with: {INSTALL_HINT}") from exc
    return ray


class ExplainAndWrite:
    """The Ray actor of :func:`explain`: a :class:`BatchExplainer` (or subclass) whose output is
    written to ``path`` by :func:`write_part`; returns the batch's partial sums."""

    def __init__(self, *, worker_class: type[BatchExplainer], worker_kwargs: dict[str, Any],
                 path: str, row_id: str) -> None:
        self.explainer = worker_class(**worker_kwargs)
        self.path = path
        self.row_id = row_id

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        partial = write_part(self.explainer(batch), self.path, self.row_id)
        for method, costs in (getattr(self.explainer, "last_costs", None) or {}).items():
            for key, value in costs.items():
                partial[f"{COST_PREFIX}{key}{SEP}{method}"] = [float(value)]
        return partial


def _actor_pool(ray: Any, concurrency: int | tuple[int, int]) -> Any:
    if isinstance(concurrency, tuple):
        low, high = concurrency
        return ray.data.ActorPoolStrategy(min_size=low, max_size=high)
    _check_positive(concurrency=concurrency)
    return ray.data.ActorPoolStrategy(size=concurrency)


def _resources(num_cpus: float | None, num_gpus: float) -> dict[str, float]:
    if num_gpus and num_gpus < 0 or (num_cpus is not None and num_cpus < 0):
        raise ConfigError("num_gpus_per_worker and num_cpus_per_worker must be >= 0.")
    if num_gpus:
        return {"num_gpus": num_gpus, **({} if num_cpus is None else {"num_cpus": num_cpus})}
    return {"num_cpus": 1 if num_cpus is None else num_cpus}


def explain(
    model_uri: str,
    dataset: Any,
    *,
    explainers: list[str] | dict[str, dict[str, Any] | None] | None = None,
    background: pd.DataFrame | None = None,
    background_rows: int = 100,
    num_gpus_per_worker: float = 0,
    num_cpus_per_worker: float | None = None,
    concurrency: int | tuple[int, int] = 2,
    batch_size: int = 1024,
    output: Any = None,
    seed: int = 0,
    output_path: str | os.PathLike | None = None,
    row_id: str = "row_id",
    log: bool = True,
    run_id: str | None = None,
    device: str = "auto",
    model_type: str | None = None,
    ray_remote_args: dict[str, Any] | None = None,
    worker_class: type[BatchExplainer] | None = None,
) -> DistributedExplanations:
    """Explain every row of ``dataset`` on a Ray cluster; write attributions to parquet.

    Args:
        model_uri: an MLflow model URI that every worker can load (``models:/<id>``,
            ``runs:/<run>/model``, a shared path).
        dataset: a Ray Dataset, a parquet path (file, folder or list; any filesystem Ray reads)
            or a pandas DataFrame. Every column but ``row_id`` is a feature (or, when the model
            has a signature, the signature's columns are used and others ignored).
        explainers: method names or ``name -> parameters``; default every local explainer that
            applies. Global-only methods are refused.
        background: reference rows; default ``background_rows`` rows sampled once, with
            ``seed``, on the driver (see :func:`sample_background`).
        num_gpus_per_worker: GPUs reserved per actor; fractions share a GPU (0.5: two actors).
        num_cpus_per_worker: CPUs reserved per actor; default 1 without GPUs, and Ray's
            default (no CPU reservation stated) with GPUs.
        concurrency: actors in the pool (an int, or ``(min, max)`` to autoscale).
        batch_size: rows per call of the actor.
        output: which model output to explain (see :func:`mlflow_xai.explain`).
        seed: background sampling and the methods' random choices.
        output_path: where to write the parquet files (must be empty or absent; default a new
            temporary folder; on a multi-node cluster use shared storage such as ``s3://``).
        row_id: the row id column. When the data lacks it, rows are numbered 0..n-1 in the
            data's order (a DataFrame's positional order; a Ray Dataset's or parquet's block
            order, read with ``preserve_order`` so it is the same every time).
        log: record the run like a one-process run (see :func:`log_distributed`).
        run_id: the run to log to; default the active run (or a new one).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` — resolved in each actor.
        model_type: ``"classifier"`` or ``"regressor"`` when it cannot be inferred.
        ray_remote_args: extra actor options passed to ``map_batches`` (for example
            ``{"max_restarts": 3, "max_task_retries": 3}`` to bound retries; Ray Data's default
            restarts a crashed actor and retries its batch without limit). Ray 2.51+ warns that
            these arguments are deprecated.
        worker_class: a subclass of :class:`BatchExplainer` to run in the actors instead
            (same constructor), for example to transform each batch first.

    Returns:
        :class:`DistributedExplanations` (parquet path, exact importance, row count, timings).
    """
    ray = require_ray()
    started = time.time()
    t0 = time.perf_counter()
    check_dataset_type(dataset)  # fail on the driver, before any actor starts
    methods = local_methods(explainers)
    _check_positive(batch_size=batch_size, background_rows=background_rows)
    model_info = _model_info(model_uri)
    path = _output_path(output_path)

    ds, row_source, n_rows = as_ray_dataset(dataset, row_id=row_id, batch_size=batch_size)
    features = _feature_columns(ds, row_id, model_info.get("input_names"))
    if background is None:
        source = dataset if isinstance(dataset, pd.DataFrame) else ds
        background, bg_source = sample_background(source, row_id=row_id, rows=background_rows,
                                                  seed=seed, n_rows=n_rows,
                                                  positional=row_source != "given")
        background = background[features]
    else:
        background, bg_source = _given_background(background, features)
    t_prepare = time.perf_counter() - t0

    t1 = time.perf_counter()
    worker = {"model_uri": model_uri, "explainers": methods, "background": background,
              "output": output, "device": device, "seed": seed, "row_id": row_id,
              "feature_columns": features, "tracking_uri": _tracking_uri(model_uri),
              "registry_uri": _registry_uri(model_uri), "model_type": model_type}
    remote_args = dict(ray_remote_args or {})
    # One streaming pass: each actor explains a batch, writes it to its own parquet file and
    # returns one row of partial sums; attributions never travel back through Ray.
    partials = ds.map_batches(
        ExplainAndWrite, fn_constructor_kwargs={
            "worker_class": worker_class or BatchExplainer, "worker_kwargs": worker,
            "path": path, "row_id": row_id},
        batch_size=batch_size, batch_format="pandas", compute=_actor_pool(ray, concurrency),
        **_resources(num_cpus_per_worker, num_gpus_per_worker), **remote_args).to_pandas()
    t_explain = time.perf_counter() - t1

    t2 = time.perf_counter()
    importance, rows, counts = combine_partials(partials)
    costs = combine_costs(partials)
    on_disk = written_rows(path)  # parquet footers only: catches a stray file from a retry
    if not rows == on_disk == n_rows:
        raise XaiError(f"the input has {n_rows} rows but {rows} were explained and {on_disk} "
                       f"written to {path}: rows were lost or duplicated.")
    t_reduce = time.perf_counter() - t2

    timings = {"prepare": t_prepare, "explain_and_write": t_explain, "reduce": t_reduce}
    result = DistributedExplanations(
        path=path, importance=importance, rows=rows, summary={}, timings=timings,
        background=background.reset_index(drop=True), row_id=row_id,
        methods=list(importance.columns))
    result.summary = _summary(
        result, model_uri=model_uri, model_info=model_info, methods=methods, features=features,
        row_source=row_source, bg_source=bg_source, seed=seed, output=output, device=device,
        ray_options={"concurrency": concurrency, "num_gpus_per_worker": num_gpus_per_worker,
                     "num_cpus_per_worker": num_cpus_per_worker, "batch_size": batch_size,
                     "remote_args": remote_args or f"Ray Data defaults "
                                                   f"{RAY_DATA_RETRY_DEFAULTS}",
                     "ray_version": ray.__version__},
        counts=counts, costs=costs, started=started)
    if log:
        t3 = time.perf_counter()
        result.run_id = log_distributed(
            result, run_id=run_id, model_id=model_info.get("model_id"),
            data=dataset if isinstance(dataset, pd.DataFrame) else None)
        timings["log"] = time.perf_counter() - t3
    timings["total"] = time.perf_counter() - t0
    _finish_summary(result)
    return result


# -- data ------------------------------------------------------------------------------------

def as_ray_dataset(dataset: Any, *, row_id: str, batch_size: int = 1024
                   ) -> tuple[Any, str, int]:
    """``dataset`` as a Ray Dataset with a ``row_id`` column; also how ids were made, rows."""
    ray = require_ray()
    if isinstance(dataset, pd.DataFrame):
        frame = dataset
        source = "given"
        if row_id not in frame.columns:  # positional: row i of the frame gets id i
            frame = frame.reset_index(drop=True)
            frame.insert(0, row_id, np.arange(len(frame), dtype=np.int64))
            source = "positional (DataFrame order)"
        if len(frame) == 0:
            raise InvalidInputError("dataset has no rows: pass at least one row to explain.")
        # Blocks of about batch_size rows, so the actor pool can work on them in parallel.
        step = max(1, batch_size)
        chunks = [frame.iloc[i:i + step] for i in range(0, len(frame), step)]
        return ray.data.from_pandas(chunks), source, len(frame)
    if isinstance(dataset, (str, os.PathLike)) or _is_path_list(dataset):
        paths = [os.fspath(p) for p in dataset] if _is_path_list(dataset) \
            else os.fspath(dataset)
        _check_local_paths(paths)
        dataset = ray.data.read_parquet(paths)
    check_dataset_type(dataset)
    if row_id in dataset.columns():
        return dataset, "given", dataset.count()
    numbered, rows = number_rows(dataset, row_id=row_id)
    return numbered, "positional (block order, preserve_order)", rows


def check_dataset_type(dataset: Any) -> None:
    """Raise :class:`InvalidInputError` naming the type unless ``dataset`` is one we take."""
    ray = require_ray()
    if isinstance(dataset, (pd.DataFrame, str, os.PathLike, ray.data.Dataset)) or \
            _is_path_list(dataset):
        return
    kind = f"{type(dataset).__module__}.{type(dataset).__qualname__}"
    hint = (" For a Spark DataFrame use BatchExplainer with mapInPandas (see "
            "examples/spark_map_in_pandas.py).") if "pyspark" in kind else ""
    raise InvalidInputError(f"dataset must be a Ray Dataset, a parquet path (or a list of "
                            f"them) or a pandas DataFrame; got {kind}.{hint}")


def number_rows(ds: Any, *, row_id: str) -> tuple[Any, int]:
    """Add ``row_id`` = 0..n-1 in the dataset's block order.

    Ray does not keep row order by default, so the dataset is executed once with
    ``preserve_order`` (blocks come out in input order: sorted files, then row groups, then
    rows) and each block's ids are its offset plus 0..len-1. Offsets come from the block sizes,
    so the numbering does not depend on which worker ran what, or when. Costs one pass that
    keeps the data in Ray's object store; pass a row id column to skip it.
    """
    ray = require_ray()
    # The dataset's own context (Ray captures it at creation); older Rays: the current one.
    context = getattr(ds, "context", None) or ray.data.DataContext.get_current()
    options = context.execution_options
    before = options.preserve_order
    options.preserve_order = True
    try:
        blocks = ds.to_arrow_refs()
    finally:
        options.preserve_order = before
    count = ray.remote(_table_rows)
    sizes = ray.get([count.remote(b) for b in blocks])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int) if sizes else []
    add_ids = ray.remote(_add_row_ids)
    numbered = [add_ids.remote(b, int(o), row_id) for b, o, s in zip(blocks, offsets, sizes)
                if s]
    if not numbered:
        raise InvalidInputError("dataset has no rows: pass at least one row to explain.")
    return ray.data.from_arrow_refs(numbered), int(sum(sizes))


def _table_rows(table: Any) -> int:
    return int(table.num_rows)


def _add_row_ids(table: Any, offset: int, column: str) -> Any:
    import pyarrow as pa

    ids = pa.array(np.arange(offset, offset + table.num_rows, dtype=np.int64))
    return table.add_column(0, column, ids)


def sample_background(ds: Any, *, row_id: str, rows: int, seed: int, n_rows: int,
                      positional: bool) -> tuple[pd.DataFrame, str]:
    """``rows`` reference rows drawn once, deterministically, from the data.

    Positional ids (0..n-1): the same positions :func:`mlflow_xai.explain` draws
    (``default_rng(seed).choice(n, rows)``), so with the same seed both paths use the same
    background. Ids given by the user (any values, any order): the ``rows`` rows with the
    smallest seeded hash of their id, which no batching or block order can change.
    """
    take = min(rows, n_rows)
    if n_rows < 2:
        raise InvalidInputError("the data has 1 row, so a background sampled from it would "
                                "equal the row explained; pass background= reference rows.")
    local = isinstance(ds, pd.DataFrame)
    if positional or local:  # a DataFrame's order is its positions, whatever its ids
        chosen = np.sort(np.random.default_rng(seed).choice(n_rows, size=take, replace=False))
        how = f"{take} rows sampled from the data (seed {seed}, positions as in explain())"
        if local:
            return plain_dtypes(ds.iloc[chosen].reset_index(drop=True)), how
        picked = ds.map_batches(_rows_with_ids, fn_kwargs={"ids": chosen, "column": row_id},
                                batch_format="pandas").to_pandas()
    else:
        picked = ds.map_batches(_smallest_hashes, fn_kwargs={
            "k": take, "column": row_id, "key": _hash_key(seed)}, batch_format="pandas"
        ).to_pandas()
        picked = picked.sort_values(["_hash", row_id], kind="stable").head(take)
        picked = picked.drop(columns=["_hash"])
        how = f"{take} rows with the smallest seeded hash of '{row_id}' (seed {seed})"
    picked = picked.sort_values(row_id, kind="stable").reset_index(drop=True)
    return plain_dtypes(picked), how


def _rows_with_ids(batch: pd.DataFrame, ids: np.ndarray, column: str) -> pd.DataFrame:
    return batch[batch[column].isin(ids)]


def _hash_key(seed: int) -> str:
    return hashlib.blake2b(str(seed).encode(), digest_size=8).hexdigest()  # 16 characters


def _smallest_hashes(batch: pd.DataFrame, k: int, column: str, key: str) -> pd.DataFrame:
    hashes = pd.util.hash_pandas_object(batch[column], index=False, hash_key=key).to_numpy()
    out = batch.assign(_hash=hashes.astype(np.uint64))
    return out.sort_values(["_hash", column], kind="stable").head(k)


def _given_background(background: Any, features: list[str]) -> tuple[pd.DataFrame, str]:
    if not isinstance(background, pd.DataFrame):
        raise InvalidInputError(f"background must be a pandas DataFrame with the feature "
                                f"columns, got {type(background).__name__}.")
    missing = [c for c in features if c not in background.columns]
    if missing:
        raise InvalidInputError(f"background lacks feature column(s) {missing}.")
    if len(background) == 0:
        raise InvalidInputError("background has no rows: pass at least one reference row.")
    return background[features].reset_index(drop=True), f"{len(background)} rows given"


def _feature_columns(ds: Any, row_id: str, signature_names: list[str] | None) -> list[str]:
    columns = [c for c in ds.columns() if c != row_id]
    if row_id == OUTPUT_COLUMN:
        raise InvalidInputError(f"row_id '{row_id}' is the name of an output column; name the "
                                "row id column differently.")
    if not signature_names:
        check_feature_names(columns)  # on the driver, before any actor starts
        return columns
    missing = [c for c in signature_names if c not in columns]
    if missing:
        raise InvalidInputError(
            f"the data lacks column(s) {missing} of the model's signature; it has "
            f"{columns[:20]}.")
    check_feature_names(list(signature_names))
    return list(signature_names)


def _is_path_list(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(
        isinstance(v, (str, os.PathLike)) for v in value)


def _check_local_paths(paths: str | list[str]) -> None:
    for p in [paths] if isinstance(paths, str) else paths:
        if "://" not in p and not os.path.exists(p):
            raise InvalidInputError(f"dataset path '{p}' does not exist.")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}.")


def _output_path(output_path: str | os.PathLike | None) -> str:
    if output_path is None:
        return tempfile.mkdtemp(prefix="mlflow-xai-distributed-")
    path = os.fspath(output_path)
    # Readers take every file in the folder: old files would mix with this job's rows.
    from pyarrow import fs as pafs

    filesystem, root = _filesystem(path)
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise InvalidInputError(f"output_path '{path}' is a file; pass a folder.")
    if info.type == pafs.FileType.Directory and filesystem.get_file_info(
            pafs.FileSelector(root, recursive=False)):
        raise InvalidInputError(f"output_path '{path}' is not empty; pass a new or empty "
                                "folder (importance is computed from every file in it).")
    return path


# -- model -----------------------------------------------------------------------------------

def _model_info(model_uri: str) -> dict[str, Any]:
    """Model id and signature columns from the MLmodel file (the model is not loaded here)."""
    if not isinstance(model_uri, str):
        raise ConfigError(f"model_uri must be a string every worker can load (models:/<id>, "
                          f"runs:/<run>/model, a shared path), got {type(model_uri).__name__}.")
    from mlflow.models import get_model_info

    try:
        info = get_model_info(model_uri)
    except Exception as exc:
        raise ConfigError(f"could not read the MLflow model '{model_uri}': {exc}") from exc
    names = None
    schema = info.signature.inputs if info.signature is not None else None
    if schema is not None and getattr(schema, "has_input_names", lambda: False)():
        names = [str(n) for n in schema.input_names()]
    return {"model_id": getattr(info, "model_id", None), "input_names": names,
            "flavors": sorted(info.flavors or {})}


def _tracking_uri(model_uri: str) -> str | None:
    """Workers must read ``models:/``/``runs:/`` URIs from the driver's tracking store."""
    import mlflow

    return mlflow.get_tracking_uri() if model_uri.startswith(("models:/", "runs:/")) else None


def _registry_uri(model_uri: str) -> str | None:
    import mlflow

    return mlflow.get_registry_uri() if model_uri.startswith("models:/") else None


# -- exact reduction -------------------------------------------------------------------------

def partial_sums(batch: pd.DataFrame, row_id: str = "row_id") -> pd.DataFrame:
    """One row per batch: ``rows``, and per attribution column ``sum|a|`` and its count."""
    out: dict[str, Any] = {"rows": [len(batch)]}
    for column in batch.columns:
        parts = split_column(str(column))
        if column == row_id or parts is None or parts[1] == BASE_VALUE:
            continue
        values = batch[column].to_numpy(dtype=float)
        finite = np.isfinite(values)
        out[f"abs{SEP}{column}"] = [float(np.abs(values[finite]).sum())]
        out[f"n{SEP}{column}"] = [int(finite.sum())]
    return pd.DataFrame(out)


def write_part(batch: pd.DataFrame, path: str, row_id: str = "row_id") -> pd.DataFrame:
    """Write one block of explained rows to ``path``; return its partial sums (one row).

    The file name is derived from the block's row ids, so a retried task overwrites its own
    file instead of adding a second copy of the same rows.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(batch):
        ids = pd.util.hash_pandas_object(batch[row_id], index=False).to_numpy()
        digest = hashlib.blake2b(ids.tobytes(), digest_size=10).hexdigest()
        filesystem, root = _filesystem(path)
        filesystem.create_dir(root, recursive=True)
        # Without pandas metadata, readers get plain types (not Ray's Arrow-backed dtypes).
        table = pa.Table.from_pandas(batch, preserve_index=False).replace_schema_metadata(None)
        pq.write_table(table, f"{root}/part-{len(batch)}-{digest}.parquet",
                       filesystem=filesystem)
    return partial_sums(batch, row_id)


def written_rows(path: str) -> int:
    """Rows in the parquet files under ``path``, from their footers."""
    import pyarrow.dataset as pads

    filesystem, root = _filesystem(path)
    return int(pads.dataset(root, format="parquet", filesystem=filesystem).count_rows())


def _filesystem(path: str) -> tuple[Any, str]:
    from pyarrow import fs as pafs

    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def combine_partials(partials: Iterable[dict[str, Any]] | pd.DataFrame
                     ) -> tuple[pd.DataFrame, int, dict[str, int]]:
    """Sum per-batch partials; importance = total |a| / total count (features x methods)."""
    frame = partials if isinstance(partials, pd.DataFrame) else pd.DataFrame(list(partials))
    totals = frame.sum(axis=0, numeric_only=True)
    rows = int(totals.get("rows", 0))
    values: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    for key in totals.index:
        kind, _, column = str(key).partition(SEP)
        if kind != "abs":
            continue
        method, feature = split_column(column)
        n = int(totals[f"n{SEP}{column}"])
        counts[method] = max(counts.get(method, 0), n)
        values.setdefault(method, {})[feature] = float(totals[key]) / n if n else math.nan
    importance = pd.DataFrame(values)
    importance.index.name = "feature"
    return importance, rows, counts


def combine_costs(partials: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per method: model evaluations summed over batches, the efficiency gap's maximum."""
    out: dict[str, dict[str, float]] = {}
    for column in partials.columns:
        if not str(column).startswith(COST_PREFIX):
            continue
        key, _, method = str(column)[len(COST_PREFIX):].partition(SEP)
        values = partials[column].dropna()
        if len(values):
            out.setdefault(method, {})[key] = float(
                values.max() if key == "efficiency_max_abs_gap" else values.sum())
    return out


def reduce_importance(ds: Any, *, row_id: str = "row_id"
                      ) -> tuple[pd.DataFrame, int, dict[str, int]]:
    """Exact mean |attribution| over every row of a Ray Dataset of explained rows: a map to
    per-batch sums and counts, then one sum on the driver (never an average of averages)."""
    partials = ds.map_batches(partial_sums, fn_kwargs={"row_id": row_id},
                              batch_format="pandas", batch_size=None).to_pandas()
    return combine_partials(partials)


def reduce_frames(frames: Iterator[pd.DataFrame] | Iterable[pd.DataFrame], *,
                  row_id: str = "row_id") -> tuple[pd.DataFrame, int, dict[str, int]]:
    """The same reduction over pandas batches (for example BatchExplainer outputs in Spark)."""
    return combine_partials(pd.concat([partial_sums(f, row_id) for f in frames],
                                      ignore_index=True))


# -- summary and logging ---------------------------------------------------------------------

def _summary(result: DistributedExplanations, *, model_uri: str, model_info: dict[str, Any],
             methods: dict[str, dict[str, Any]], features: list[str], row_source: str,
             bg_source: str, seed: int, output: Any, device: str,
             ray_options: dict[str, Any], counts: dict[str, int], started: float,
             costs: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    from mlflow_xai.pipeline import _versions

    return {
        "backend": "ray",
        "versions": {**_versions(), "ray": ray_options["ray_version"]},
        "model": {"uri": model_uri, "model_id": model_info.get("model_id"),
                  "flavors": model_info.get("flavors")},
        "status": "ok",
        "methods": {m: {"status": "ok", "params": p, "rows": counts.get(m, 0),
                        "seconds": round(result.timings.get("explain_and_write", 0.0), 4),
                        **{k: (int(v) if k == "model_evals" else v)
                           for k, v in (costs or {}).get(m, {}).items()}}
                    for m, p in methods.items() if m in result.importance.columns},
        "methods_skipped": sorted(set(methods) - set(result.importance.columns)),
        "data": {"rows_total": result.rows, "rows_explained": result.rows,
                 "rows_sampled": False, "features": len(features),
                 "feature_names": features,
                 "row_id": {"column": result.row_id, "source": row_source},
                 "background_rows": len(result.background),
                 "background_source": bg_source},
        "output": "default" if output is None else str(output),
        "device": device,
        "seed": seed,
        "ray": {k: v for k, v in ray_options.items() if k != "ray_version"},
        "output_path": result.path,
        "columns": {"row_id": result.row_id,
                    "attribution": f"<method>{SEP}<feature>",
                    "base_value": f"<method>{SEP}{BASE_VALUE}",
                    "output": f"{OUTPUT_COLUMN} (class explained; classifiers only)"},
        "importance_reduction": "exact: sum of |attribution| over all rows / rows, from "
                                "per-batch sums and counts",
        "importance": {m: {str(f): float(v) for f, v in result.importance[m].items()}
                       for m in result.importance.columns},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
    }


def _finish_summary(result: DistributedExplanations) -> None:
    timings = result.timings
    total = timings.get("total", sum(v for k, v in timings.items() if k != "log"))
    result.summary["timings"] = {k: round(v, 4) for k, v in timings.items()}
    result.summary["seconds"] = round(total, 4)
    result.summary["rows_per_second"] = round(result.rows / max(total, 1e-9), 2)


def log_distributed(result: DistributedExplanations, *, run_id: str | None = None,
                    model_id: str | None = None, data: pd.DataFrame | None = None,
                    logged_rows: int = LOGGED_ROWS) -> str:
    """Record through :func:`mlflow_xai.recording.record`, exactly as a one-process run is
    recorded: the same files (``summary.json`` bound to the model and written last,
    ``importance.json`` with the exact importance over all rows, ``stability.json``,
    ``attributions/<method>.parquet``, plots, ``report.html``), the same metric names and tags.
    ``attributions/`` holds ``logged_rows`` rows at most (a seeded sample, recorded in the
    summary); every row stays in the table at ``result.path``. ``data``: the explained frame,
    for the beeswarm colours (rows without it are drawn in one colour). Returns the run id."""
    import mlflow

    from mlflow_xai.recording import Destination, record

    started_here = False
    if run_id is None and mlflow.active_run() is None:
        run_id, started_here = mlflow.start_run().info.run_id, True
    _finish_summary(result)  # timings so far (the log step itself is not in the file)
    try:
        expl = as_explanations(result, data=data, rows=logged_rows)
        run_id = record(expl, Destination(run_id, model_id, source="distributed"))
    finally:
        if started_here:
            mlflow.end_run()
    return run_id


def as_explanations(result: DistributedExplanations, *, data: pd.DataFrame | None = None,
                    rows: int = LOGGED_ROWS) -> Any:
    """The distributed result as :class:`~mlflow_xai.explanations.Explanations`: the exact
    importance over all rows, and per-row attributions for at most ``rows`` rows (all of them,
    or a sample drawn with the run's seed)."""
    import pyarrow.dataset as pads

    from mlflow_xai.explanations import Explanations

    filesystem, root = _filesystem(result.path)
    table = pads.dataset(root, format="parquet", filesystem=filesystem)
    ids = table.to_table(columns=[result.row_id]).column(0).to_numpy()
    seed = int(result.summary.get("seed", 0))
    sampled = len(ids) > rows
    keep = np.sort(np.random.default_rng(seed).choice(ids, size=rows, replace=False)) \
        if sampled else np.sort(ids)
    import pyarrow as pa
    import pyarrow.compute as pc

    frame = table.to_table(filter=pc.field(result.row_id).isin(pa.array(keep))).to_pandas()
    frame = frame.sort_values(result.row_id, kind="stable").set_index(result.row_id)
    frame.index.name = None
    features = [str(f) for f in result.summary["data"]["feature_names"]]
    attributions, base_values = {}, {}
    for method in result.importance.columns:
        columns = [column_name(method, f) for f in features]
        attributions[method] = frame[columns].set_axis(features, axis=1)
        if column_name(method, BASE_VALUE) in frame.columns:
            base_values[method] = frame[column_name(method, BASE_VALUE)].rename("base_value")
    outputs = frame[OUTPUT_COLUMN].rename("output") if OUTPUT_COLUMN in frame.columns else None
    shown = pd.DataFrame(index=frame.index)
    if data is not None:
        source = data.set_index(result.row_id) if result.row_id in data.columns else \
            data.reset_index(drop=True)
        shown = source.loc[frame.index, [c for c in features if c in source.columns]]
    summary = dict(result.summary)
    summary["data"] = {**summary["data"], "rows_in_artifacts": int(len(frame)),
                       "rows_in_artifacts_sampled": bool(sampled)}
    importance = result.importance.copy()
    importance.index = importance.index.map(str)
    return Explanations(attributions=attributions, base_values=base_values,
                        importance=importance.loc[features], summary=summary, data=shown,
                        outputs=outputs, model_uri=summary["model"].get("uri"),
                        model_id=summary["model"].get("model_id"))
