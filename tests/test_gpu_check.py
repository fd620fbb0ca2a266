"""benchmarks/gpu_check.py without a GPU: --allow-cpu runs both sides on the CPU.

The script itself is the check for the day a GPU is lent (issue 13, item 5); here it must run,
list every batched method that is registered, exit 0 when the sides agree, exit 1 naming the
method when they do not (a test-only flag perturbs one side), and exit 2 without CUDA.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def _run(*args: str, timeout: float = 100) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}  # no $OUT copies from tests
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _batched_registered() -> list[str]:
    """What the check must cover: the torch pack's explainers and the interaction methods."""
    import mlflow_xai

    return [m["name"] for m in mlflow_xai.list_methods("explainer")
            if m["plugin"] == gpu_check.BATCHED_PACK or m["name"] in gpu_check.INTERACTIONS]


@pytest.mark.slow
def test_quick_cpu_run_matches_every_batched_method(tmp_path):
    report_path, results = tmp_path / "report.json", tmp_path / "RESULTS.md"
    proc = _run("--allow-cpu", "--quick", "--json", str(report_path), "--results", str(results))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    expected = set(_batched_registered())
    assert set(gpu_check.BATCHED) <= expected  # the torch pack's known methods
    table = results.read_text()
    assert gpu_check.START_MARK in table and gpu_check.END_MARK in table
    rows = report["rows"]
    assert {r["method"] for r in rows} == expected
    for name in expected:
        assert f"| {name} |" in table and f"| {name} |" in proc.stdout
    for row in rows:
        # both sides on the CPU: identical, except a tree method without shap (skipped)
        assert row["result"] in ("match", "skipped"), row
        if row["result"] == "match":
            assert row["max_rel_diff"] <= 1e-4 and row["cpu_s"] is not None
            assert row["cpu_peak_mb"] is not None and row["model_evals"] > 0
    kinds = {(r["method"], r["data"]) for r in rows}
    assert ("saliency", "tabular") in kinds and ("saliency", "image") in kinds
    assert ("exact_shap", "tabular_narrow") in kinds  # 20 features are over its limit
    assert report["complete"] and report["device"] == "cpu"

    # --render writes the same table from the JSON (as done here with the GPU machine's copy)
    rendered = tmp_path / "RENDERED.md"
    proc = _run("--render", str(report_path), "--results", str(rendered))
    assert proc.returncode == 0, proc.stderr
    assert "| kernel_shap | tabular |" in rendered.read_text()


@pytest.mark.slow
def test_a_perturbed_side_fails_naming_the_method(tmp_path):
    report_path = tmp_path / "report.json"
    proc = _run("--allow-cpu", "--quick", "--methods", "saliency,lime",
                "--perturb-for-test", "lime", "--no-results", "--json", str(report_path))
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "FAILED" in proc.stderr and "lime (tabular): MISMATCH" in proc.stderr
    assert "saliency" not in proc.stderr.split("FAILED", 1)[1]
    rows = {(r["method"], r["data"]): r for r in json.loads(report_path.read_text())["rows"]}
    assert rows[("lime", "tabular")]["result"] == "MISMATCH"
    assert rows[("lime", "tabular")]["max_rel_diff"] > 1e-3
    assert rows[("saliency", "tabular")]["result"] == "match"


def test_without_cuda_it_exits_2_unless_allowed():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    proc = _run("--quick", "--methods", "saliency", "--no-results", timeout=60)
    assert proc.returncode == 2
    assert "CUDA is not available" in proc.stderr and "--allow-cpu" in proc.stderr


def test_compare_uses_the_attribution_scale():
    import numpy as np

    ref = {"values": np.array([[1.0, -2.0], [0.5, 0.0]]), "base_values": np.array([3.0, 3.0])}
    close = {"values": ref["values"] + 1e-5, "base_values": ref["base_values"].copy()}
    far = {"values": ref["values"] + np.array([[0.0, 1e-3], [0.0, 0.0]]),
           "base_values": ref["base_values"].copy()}
    ok = gpu_check.compare(ref, close, 1e-4)
    assert ok["matched"] and ok["max_abs"] == pytest.approx(1e-5)
    assert ok["max_rel"] == pytest.approx(1e-5 / 2)  # relative to max |value| = 2
    bad = gpu_check.compare(ref, far, 1e-4)
    assert not bad["matched"] and "values" in bad["problems"][0]
    shape = gpu_check.compare(ref, {**close, "values": close["values"][:1]}, 1e-4)
    assert not shape["matched"]
    labels = gpu_check.compare({**ref, "explained_class": np.array([1, 2])},
                               {**close, "explained_class": np.array([1, 3])}, 1e-4)
    assert not labels["matched"] and "explained class" in labels["problems"][0]


def test_dist_info_carries_the_projects_entry_points(tmp_path, monkeypatch):
    """Without mlflow-xai installed (the GPU machine), a generated dist-info lets the registry
    find the packs; the Python 3.10 fallback (no tomllib) reads the same entry points."""
    info = gpu_check._write_dist_info(tmp_path / "a")
    text = (info / "entry_points.txt").read_text()
    assert "[mlflow_xai]" in text and "torch = mlflow_xai_torch" in text
    assert "Name: mlflow-xai" in (info / "METADATA").read_text()
    monkeypatch.setitem(sys.modules, "tomllib", None)  # import tomllib -> ImportError
    assert (gpu_check._write_dist_info(tmp_path / "b") / "entry_points.txt").read_text() == text


def test_wheel_selection_matches_this_interpreter(tmp_path):
    cp = f"cp{sys.version_info[0]}{sys.version_info[1]}"
    names = ["tqdm-4.70.1-py3-none-any.whl",
             "pillow-13.0.0-cp39-cp39-manylinux_2_28_x86_64.whl",
             f"pillow-13.0.0-{cp}-{cp}-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert gpu_check._matching_wheel(tmp_path, "tqdm").name == names[0]
    if sys.platform.startswith("linux") and os.uname().machine == "x86_64":
        assert gpu_check._matching_wheel(tmp_path, "pillow").name == names[2]
    assert gpu_check._matching_wheel(tmp_path, "captum") is None


def test_carried_wheels_are_the_ones_the_script_downloads():
    script = (ROOT / "scripts" / "gpu_wheels.sh").read_text()
    listed = set()
    for line in script.splitlines():
        if line.startswith(("PURE=", "COMPILED=")):
            listed |= set(line.split("=", 1)[1].strip('"').split())
    assert listed == {dist for _, dist, _ in gpu_check.CARRIED}
    assert ".gpu_wheels/" in (ROOT / ".gitignore").read_text().splitlines()
