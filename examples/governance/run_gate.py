"""Governance example: log a fair and a biased credit model, then gate both with a lending policy.

Run from the repository root:  python examples/governance/run_gate.py
Both models take the same applicant features, including ``sex`` and ``age``. The fair model
reads only the financial columns and is trained on labels that depend on income, debt and
history; the biased one reads every column and is trained on historical labels that also
penalise one sex, so it leans on ``sex``. Autolog explains each model and runs the end-task
checks the policy reads (importance_test, flip_test, responsiveness with the lending
actionability metadata, rashomon); ``mlflow-xai check`` then passes the first run and fails
the second (exit codes 0 and 1), and tags both runs, their LoggedModels and the registered
model versions with the verdict.
Uses an embedded store (sqlite:///mlruns.db); no server, no download.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import mlflow_xai

POLICY = Path(__file__).with_name("policy.yaml")
FAST = {"kernel_shap": {"n_samples": 256}, "permutation_shap": {"n_samples": 256}}
FINANCIAL = ["income", "debt_ratio", "years_employed", "late_payments", "credit_lines"]
#: The checks the policy reads, with the lending actionability metadata: an applicant cannot
#: change their sex or age; income and employment can only grow, debt and the count of recent
#: late payments only shrink.
CHECKS = {
    "completeness": {}, "agreement": {},
    "importance_test": {"features": ["income", "debt_ratio", "sex"]},
    "flip_test": {"features": ["sex"]},
    "responsiveness": {"immutable": ["sex", "age"],
                       "monotone": {"income": 1, "years_employed": 1, "debt_ratio": -1,
                                    "late_payments": -1},
                       "top_k": 2},
    "rashomon": {"n_models": 20},
}


def applicants(n: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic loan applicants (no real people): numeric features only."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "income": rng.lognormal(10.5, 0.4, n),
        "debt_ratio": rng.beta(2, 5, n),
        "years_employed": rng.gamma(2.0, 3.0, n),
        "late_payments": rng.poisson(0.8, n).astype(float),
        "credit_lines": rng.integers(1, 12, n).astype(float),
        "sex": rng.integers(0, 2, n).astype(float),
        "age": rng.integers(21, 70, n).astype(float),
    })


def labels(X: pd.DataFrame, *, biased: bool, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    score = (1.2 * (np.log(X["income"]) - 10.5) / 0.4 - 2.5 * (X["debt_ratio"] - 0.3) / 0.16
             + 0.15 * X["years_employed"] - 0.9 * X["late_payments"])
    if biased:  # historical decisions that penalised one group
        score = score - 3.0 * X["sex"]
    return (score + rng.normal(0, 0.5, len(X)) > np.median(score)).astype(int).to_numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns.db",
                        help="MLflow tracking store (default: %(default)s)")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_experiment("mlflow-xai-governance")

    X = applicants(2000)
    X_train, X_eval = X.iloc[:1500], X.iloc[1500:]

    runs = {}
    for name, biased in (("fair", False), ("biased", True)):
        y = labels(X, biased=biased)
        # The fair model reads only the financial columns (the others pass through unused).
        columns = list(X.columns) if biased else FINANCIAL
        model = make_pipeline(ColumnTransformer([("scale", StandardScaler(), columns)]),
                              LogisticRegression(max_iter=1000))
        model.fit(X_train, y[:1500])
        # Targets: the Rashomon check refits the model on the explained rows.
        mlflow_xai.autolog(data=X_eval, targets=y[1500:], explainers=FAST, checks=CHECKS,
                           max_rows=500, background=X_train.sample(50, random_state=0),
                           policy=str(POLICY))
        with mlflow.start_run(run_name=f"credit-{name}") as run:
            mlflow.log_metric("eval_accuracy", model.score(X_eval, y[1500:]))
            mlflow.sklearn.log_model(model, name="model", input_example=X_eval.head(3),
                                     registered_model_name=f"credit-{name}")
        runs[name] = run.info.run_id

    codes = {}
    for name, run_id in runs.items():
        print(f"\n$ mlflow-xai check --run-id {run_id} --policy {POLICY.name}   # {name} model")
        env = {**os.environ, "MLFLOW_TRACKING_URI": args.tracking_uri}
        codes[name] = subprocess.call([sys.executable, "-m", "mlflow_xai.cli", "check",
                                       "--run-id", run_id, "--policy", str(POLICY)], env=env)
        print(f"exit code {codes[name]}")
    print(f"\nopen the UI:  mlflow ui --backend-store-uri {args.tracking_uri}")
    # The example succeeds when the gate tells the two models apart.
    return 0 if codes == {"fair": 0, "biased": 1} else 1


if __name__ == "__main__":
    sys.exit(main())
