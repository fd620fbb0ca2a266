"""Explain every row of a Spark DataFrame with mlflow-xai's BatchExplainer and mapInPandas.

Run from the repository root:  python examples/spark_map_in_pandas.py

``mlflow_xai.distributed.BatchExplainer`` is a plain picklable callable, pandas batch in, pandas
batch out, that loads the model once per worker process. Ray Data runs it as an actor class
(``mlflow_xai.distributed.explain``); Spark runs the very same object in ``mapInPandas``::

    explainer = BatchExplainer(model_uri, explainers=..., background=background_pdf)
    out = sdf.mapInPandas(lambda batches: (explainer(b) for b in batches), schema)

Each output row carries the input's ``row_id`` column, one ``<method>/<feature>`` attribution
column per feature, ``<method>/xai.base_value`` and, for classifiers, ``xai.output`` (the class
explained). The background is fixed on the driver, so a row's attribution does not depend on the
partition it lands in. Global importance is ``avg(abs(col))`` over all rows, which Spark computes
exactly.

Spark is not a dependency of mlflow-xai: with ``pyspark`` installed (and Java 17+; checked with
pyspark 4.3.0) this script runs a local Spark session, writes the per-row table to parquet once
and summarises it; without pyspark it runs the same partition function over an iterator of
pandas chunks, which is what each Spark Python worker does, and prints the same numbers. It trains a
logistic regression on scikit-learn's bundled breast-cancer data and logs it to an embedded
MLflow store (``sqlite:///mlruns.db`` by default), so it needs no server and no download.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from collections.abc import Iterator

import mlflow
import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mlflow_xai.distributed import BatchExplainer, reduce_frames


def log_model(tracking_uri: str) -> tuple[str, pd.DataFrame]:
    """Train and log a small classifier; return its URI and the rows to explain."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("mlflow-xai-spark-example")
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X = X[["mean radius", "mean texture", "mean smoothness", "mean concave points",
           "worst radius", "worst texture", "worst concave points", "worst symmetry"]]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", input_example=X.head(2),
                                        pip_requirements=["scikit-learn"])
    return info.model_uri, X


def spark_schema(dtypes: dict[str, str]):
    """BatchExplainer.output_dtypes() as a Spark StructType (no DDL quoting of odd names)."""
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

    kinds = {"f": DoubleType(), "i": LongType(), "u": LongType()}
    return StructType([StructField(name, kinds.get(np.dtype(t).kind, StringType())
                                   if t not in ("object", "str", "string") else StringType())
                       for name, t in dtypes.items()])


def run_with_spark(explainer: BatchExplainer, rows: pd.DataFrame, partitions: int) -> None:
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    spark = SparkSession.builder.master("local[2]").appName("mlflow-xai").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    sdf = spark.createDataFrame(rows).repartition(partitions)

    def explain_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return (explainer(b) for b in batches)

    schema = spark_schema(explainer.output_dtypes())
    # Explain once, write the per-row table, then read it for the summaries (each Spark action
    # on the mapInPandas frame itself would explain every row again).
    with tempfile.TemporaryDirectory(prefix="mlflow-xai-spark-") as tmp:
        sdf.mapInPandas(explain_partition, schema).write.parquet(f"{tmp}/attributions")
        out = spark.read.parquet(f"{tmp}/attributions")
        attributions = [c for c in out.columns if "/" in c and not c.endswith("/xai.base_value")]
        # avg over all rows is exact (Spark sums and counts), unlike a mean of batch means.
        importance = out.agg(*[F.avg(F.abs(F.col(f"`{c}`"))).alias(c) for c in attributions])
        print(f"rows explained: {out.count()} (in {partitions} Spark partitions)")
        shown = ["row_id", *out.columns[1:4], "kernel_shap/xai.base_value", "xai.output"]
        print(out.orderBy("row_id").select(*[F.col(f"`{c}`") for c in shown]).limit(5)
              .toPandas().to_string(index=False))
        print(importance.toPandas().T.rename(columns={0: "mean |attribution|"})
              .sort_values("mean |attribution|", ascending=False).to_string())
    spark.stop()


def run_without_spark(explainer: BatchExplainer, rows: pd.DataFrame, partitions: int) -> None:
    # What each Spark Python worker does: an iterator of Arrow batches as pandas frames in,
    # an iterator of pandas frames out.
    def explain_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        return (explainer(b) for b in batches)

    chunks = np.array_split(np.arange(len(rows)), partitions)
    outputs = list(explain_partition(rows.iloc[c] for c in chunks))
    out = pd.concat(outputs, ignore_index=True)
    importance, n, _ = reduce_frames(outputs)
    print(f"rows explained: {n} (in {partitions} pandas batches)")
    shown = ["row_id", *out.columns[1:4], "kernel_shap/xai.base_value", "xai.output"]
    print(out.sort_values("row_id")[shown].head(5).to_string(index=False))
    print(importance.sort_values(importance.columns[0], ascending=False).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns.db",
                        help="MLflow tracking store (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=200, help="rows to explain")
    parser.add_argument("--partitions", type=int, default=4, help="Spark partitions / batches")
    parser.add_argument("--no-spark", action="store_true", help="skip Spark even if installed")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    started = time.perf_counter()

    model_uri, X = log_model(args.tracking_uri)
    rows = X.head(args.rows).reset_index(drop=True)
    rows.insert(0, "row_id", np.arange(len(rows), dtype=np.int64))
    # Fixed on the driver and shipped inside the explainer: every partition uses these rows.
    background = X.sample(50, random_state=0)
    explainer = BatchExplainer(model_uri, explainers={"kernel_shap": {"n_samples": 256}},
                               background=background, seed=0,
                               feature_columns=list(X.columns),
                               tracking_uri=mlflow.get_tracking_uri())
    print(f"model: {model_uri}")
    have_spark = importlib.util.find_spec("pyspark") is not None
    if have_spark and not args.no_spark:
        run_with_spark(explainer, rows, args.partitions)
    else:
        why = "pyspark is not installed" if not have_spark else "--no-spark"
        print(f"{why}: running the mapInPandas function over pandas chunks")
        run_without_spark(explainer, rows, args.partitions)
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
