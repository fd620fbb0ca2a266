"""Quick start: log a model and get its explanations without writing explanation code.

Run from the repository root:  python examples/quickstart.py
It uses an embedded MLflow store (sqlite:///mlruns.db) and scikit-learn's bundled
breast_cancer data, so it needs no server and no download.
"""

from __future__ import annotations

import argparse
import os
import time

import mlflow
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import train_test_split

import mlflow_xai


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns.db",
                        help="MLflow tracking store (default: %(default)s)")
    parser.add_argument("--max-rows", type=int, default=100,
                        help="explain at most this many held-out rows (default: %(default)s)")
    args = parser.parse_args()

    started = time.perf_counter()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment("mlflow-xai-quickstart")

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0)
    model = RandomForestClassifier(n_estimators=50, max_depth=6, random_state=0)
    model.fit(X_train, y_train)

    # One line turns explanations on: every model logged from here on is explained.
    mlflow_xai.autolog(data=X_test, targets=y_test, max_rows=args.max_rows, background=X_train
                       .sample(50, random_state=0))

    with mlflow.start_run(run_name="breast-cancer-rf") as run:
        mlflow.log_metric("test_accuracy", model.score(X_test, y_test))
        info = mlflow.sklearn.log_model(
            model, name="model", input_example=X_test.head(3),
            # skops (the default format) loads tree internals only when told to trust them.
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        )

    client = mlflow.MlflowClient()
    tags = client.get_run(run.info.run_id).data.tags
    print(f"run id:      {run.info.run_id}")
    print(f"model:       {info.model_uri}")
    print(f"explained:   {tags.get('mlflow_xai.status')} ({tags.get('mlflow_xai.methods')})")
    print("artifacts:")
    for path in _walk(client, run.info.run_id, "xai"):
        print(f"  {path}")

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
