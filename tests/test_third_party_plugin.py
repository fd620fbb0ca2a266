"""A third-party pack installed like any package is found, listed and used in a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "third_party_plugin"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    """pip-install the example plugin into its own folder (the environment stays untouched)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(PLUGIN)],
        check=True, capture_output=True, text=True,
    )
    return target


def _python(code: str, site: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    environ = {**inherited, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
               "MLFLOW_XAI_PROGRESS": "0", **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path,
                          env=environ, capture_output=True, text=True, timeout=300)


def test_installed_plugin_is_listed_with_its_package_and_version(plugin_site, tmp_path):
    out = _python("""
        import json, mlflow_xai
        print(json.dumps(mlflow_xai.list_methods("explainer")))
    """, plugin_site, tmp_path)
    assert out.returncode == 0, out.stderr
    methods = {m["name"]: m for m in json.loads(out.stdout)}
    assert methods["occlusion"]["package"] == "mlflow-xai-occlusion"
    assert methods["occlusion"]["version"] == "0.3.0"
    assert methods["occlusion"]["plugin"] == "occlusion"
    assert methods["kernel_shap"]["package"] == "mlflow-xai"


def test_plugin_method_runs_in_an_mlflow_run_and_passes_the_contract(plugin_site, tmp_path):
    out = _python(f"""
        import json, mlflow, numpy as np, mlflow_xai
        from sklearn.datasets import load_diabetes
        from sklearn.linear_model import LinearRegression
        from mlflow_xai.testing import checks_for
        for check in checks_for("occlusion"):
            check("occlusion")
        X, y = load_diabetes(return_X_y=True, as_frame=True)
        model = LinearRegression().fit(X, y)
        mlflow.set_tracking_uri("sqlite:///{tmp_path}/m.db")
        with mlflow.start_run() as run:
            expl = mlflow_xai.explain(model, X.iloc[:30], explainers=["occlusion"])
            expl.log()
        # Occlusion of a linear model is w_j (x_j - mean background x_j); with 30 rows the
        # background is all of them.
        rows = X.iloc[:30]
        expected = model.coef_ * (rows - rows.mean())
        err = float(np.abs(expl.attributions["occlusion"] - expected).to_numpy().max())
        client = mlflow.MlflowClient()
        paths = [a.path for a in client.list_artifacts(run.info.run_id, "xai/attributions")]
        print(json.dumps({{"paths": paths,
                          "status": client.get_run(run.info.run_id).data.tags["mlflow_xai.status"],
                          "err": err}}))
    """, plugin_site, tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["paths"] == ["xai/attributions/occlusion.parquet"]
    assert result["status"] == "ok"
    assert result["err"] < 1e-8


def test_disabling_the_plugin_by_name(plugin_site, tmp_path):
    out = _python("""
        import mlflow_xai
        print(sorted(m["name"] for m in mlflow_xai.list_methods()))
    """, plugin_site, tmp_path, MLFLOW_XAI_DISABLE_PLUGINS="occlusion,shap")
    assert out.returncode == 0, out.stderr
    names = eval(out.stdout)
    assert "occlusion" not in names and "tree_shap" not in names and "kernel_shap" in names
