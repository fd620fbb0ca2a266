"""The examples run as documented (each against its own embedded sqlite store)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_governance_example_passes_the_fair_model_and_fails_the_biased_one(tmp_path):
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"sqlite:///{tmp_path / 'gov.db'}"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "governance" / "run_gate.py"),
                           "--tracking-uri", uri], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert out.count("governance: PASSED") == 1 and out.count("governance: FAILED") == 1
    assert "forbidden feature(s) ['sex'] in the top 3 of kernel_shap" in out
    # The lending policy's end-task rules tell the two models apart by querying them.
    fair, biased = out.split("# biased model")
    for rule in ("uses-financial-criteria", "sex-not-significant", "sex-flips-no-decision",
                 "recourse-exists", "reasons-are-actionable", "ranking-holds-across-refits"):
        line = next(li for li in fair.splitlines() if li.startswith(rule))
        assert " PASS " in line, line
    assert "the output depends on sex (marginal: p = " in biased
    flip = next(li for li in biased.splitlines() if li.startswith("sex-flips-no-decision"))
    assert " FAIL " in flip and "upper 95% bound of the flip rate" in flip
    reasons = next(li for li in biased.splitlines() if li.startswith("reasons-are-actionable"))
    assert " FAIL " in reasons and "sex (" in reasons

    import mlflow

    client = mlflow.MlflowClient(uri)
    for name, verdict in (("credit-fair", "passed"), ("credit-biased", "failed")):
        version = client.get_model_version(name, "1")
        assert version.tags.get("mlflow_xai.governance") == verdict
        run = client.get_run(version.run_id)
        assert run.data.tags["mlflow_xai.governance"] == verdict


@pytest.mark.slow
def test_quickstart_explains_the_pipeline_with_tree_shap_on_raw_columns_within_budget(tmp_path):
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    uri = f"sqlite:///{tmp_path / 'quick.db'}"
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"),
                           "--tracking-uri", uri, "--budget", "20"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "ran  tree_shap" in out and "ran  permutation_importance" in out
    assert "left kernel_shap" in out and "left lime" in out

    import mlflow

    client = mlflow.MlflowClient(uri)
    run = client.search_runs([client.get_experiment_by_name(
        "mlflow-xai-quickstart").experiment_id])[0]
    summary = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/xai/summary.json")
    assert summary["status"] == "ok" and summary["primary_method"] == "tree_shap"
    assert summary["plan"]["spent_s"] <= 20
    importance = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/xai/importance.json")
    # Raw columns (one-hot groups summed back), not the encoder's output names.
    assert set(importance["tree_shap"]) == {"age", "workclass", "education", "marital_status",
                                            "occupation", "sex", "hours_per_week",
                                            "capital_gain", "education_years"}
    # The gate command the quick start prints passes on this model.
    model_id = summary["model"]["model_id"]
    gate = subprocess.run([sys.executable, "-m", "mlflow_xai.cli", "check", "--model-uri",
                           f"models:/{model_id}", "--policy",
                           str(ROOT / "examples" / "quickstart_policy.yaml")],
                          cwd=tmp_path, env={**env, "MLFLOW_TRACKING_URI": uri},
                          capture_output=True, text=True, timeout=300)
    assert gate.returncode == 0, gate.stdout[-2000:] + gate.stderr[-2000:]
