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

    import mlflow

    client = mlflow.MlflowClient(uri)
    for name, verdict in (("credit-fair", "passed"), ("credit-biased", "failed")):
        version = client.get_model_version(name, "1")
        assert version.tags.get("mlflow_xai.governance") == verdict
        run = client.get_run(version.run_id)
        assert run.data.tags["mlflow_xai.governance"] == verdict
