"""Quick start: log a model and get its explanations without writing explanation code.

Run from the repository root:  python examples/quickstart.py
It uses an embedded MLflow store (sqlite:///mlruns.db) and a synthetic census-like table
(mlflow_xai.datasets.adult_like: numbers and strings, income > 50K), so it needs no server and
no download. The model is the one most teams log first: a scikit-learn Pipeline that one-hot
encodes the string columns and fits a gradient-boosted classifier.
"""

from __future__ import annotations

import argparse
import os
import time

import mlflow
import skops.io
from sklearn.model_selection import train_test_split

import mlflow_xai
from mlflow_xai.datasets import adult_like, adult_like_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns.db",
                        help="MLflow tracking store (default: %(default)s)")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="seconds of explanation work (default: %(default)s, as autolog)")
    args = parser.parse_args()

    started = time.perf_counter()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment("mlflow-xai-quickstart")

    X, y = adult_like(2000, seed=0)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.5, random_state=0)
    model = adult_like_pipeline(X_train, y_train)

    # One line turns explanations on: every model logged from here on is explained, within
    # a time budget, by the methods the planner picks for the model.
    mlflow_xai.autolog(data=X_test, targets=y_test, budget_s=args.budget)

    with mlflow.start_run(run_name="adult-like-gbc-pipeline") as run:
        mlflow.log_metric("test_accuracy", model.score(X_test, y_test))
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=X_test.head(3),
            # skops (the default format) loads only the types it is told to trust: this
            # pipeline's own (ColumnTransformer, OneHotEncoder, the boosted trees, ...).
            skops_trusted_types=skops.io.get_untrusted_types(data=skops.io.dumps(model)),
        )

    client = mlflow.MlflowClient()
    tags = client.get_run(run.info.run_id).data.tags
    print(f"run id:      {run.info.run_id}")
    print(f"model:       {info.model_uri}")
    print(f"explained:   {tags.get('mlflow_xai.status')} ({tags.get('mlflow_xai.methods')})")
    print("artifacts:")
    for path in _walk(client, run.info.run_id, "xai"):
        print(f"  {path}")

    summary = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/xai/summary.json")
    plan = summary.get("plan") or {}
    print(f"plan:        {plan.get('rows')} of {plan.get('rows_available')} rows, "
          f"budget {plan.get('budget_s')} s, spent {plan.get('spent_s')} s; "
          f"report headline: {summary.get('headline')}")
    for chosen in plan.get("chosen", []):
        print(f"  ran  {chosen['method']:22s} {chosen['why']}")
    for left in plan.get("left_out", []):
        if not left["why"].startswith("not applicable"):
            print(f"  left {left['method']:22s} {left['why']}")
    importance = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/xai/importance.json")
    print("top 5 features per method:")
    for method, ranking in importance.items():
        top = sorted(ranking, key=lambda f: ranking[f]["rank"])[:5]
        print(f"  {method:24s} {', '.join(top)}")
    print(f"done in {time.perf_counter() - started:.1f} s")
    print(f"open the UI:  mlflow ui --backend-store-uri {args.tracking_uri}")
    print(f"gate it:      MLFLOW_TRACKING_URI={args.tracking_uri} mlflow-xai check "
          f"--model-uri {info.model_uri} --policy examples/quickstart_policy.yaml")


def _walk(client: mlflow.MlflowClient, run_id: str, path: str) -> list[str]:
    out = []
    for item in client.list_artifacts(run_id, path):
        out.extend(_walk(client, run_id, item.path) if item.is_dir else [item.path])
    return out


if __name__ == "__main__":
    main()
