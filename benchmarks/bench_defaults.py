#!/usr/bin/env python
"""What the default path costs a team: ``log_model`` with and without ``mlflow_xai.autolog``,
and ``mlflow.models.evaluate`` with and without the ``xai`` evaluator installed.

Everything runs in one process against one embedded sqlite MLflow store (a temporary folder):

* ``log_model`` seconds for three models, each logged three ways: autolog off, default
  ``autolog(data=..., targets=...)`` (the planner's choice within ``budget_s`` = 30 s), and
  ``autolog(..., asynchronous=True)`` (``log_model`` returns, then ``mlflow_xai.wait()``):
  a random forest on breast_cancer (171 held-out rows), the ``ColumnTransformer`` +
  ``GradientBoostingClassifier`` pipeline of :func:`mlflow_xai.datasets.adult_like_pipeline`
  (1,000 rows), a torch MLP on breast_cancer, and a black-box scaler + SVC whose slow
  ``predict_proba`` makes the budget bind (Kernel SHAP sized to it). It records the methods the plan chose, the
  rows explained and the number of ``xai/*`` metrics logged.
* ``mlflow.models.evaluate`` on a 300 x 30 random forest: MLflow's default evaluator alone
  (``evaluators=["default"]``) against the plain call (``evaluators`` not given, so ``xai`` runs
  too), median of ``--repeats``, and their ratio.

Targets (issue 12): default autolog adds at most ``budget_s + 10`` s to ``log_model``; the plain
``evaluate()`` stays within 2x of MLflow's default evaluator. The results replace the section
between the ``bench_defaults`` markers of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from results_file import replace_section  # benchmarks/ is on sys.path when run as a script

START_MARK = "<!-- bench_defaults:start -->"
END_MARK = "<!-- bench_defaults:end -->"
BUDGET_S = 30.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="evaluate() repeats (default 3)")
    p.add_argument("--cases", default="forest,pipeline,mlp,svm",
                   help="log_model cases to run (default forest,pipeline,mlp,svm)")
    p.add_argument("--results", type=Path,
                   default=Path(__file__).resolve().parent / "RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    return p.parse_args(argv)


def _forest() -> dict[str, Any]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import train_test_split

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0)
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(X_tr, y_tr)
    return {"name": "random forest, breast_cancer (171 rows x 30)", "model": model,
            "X": X_te, "y": y_te, "flavor": "sklearn"}


def _pipeline() -> dict[str, Any]:
    from mlflow_xai.datasets import adult_like, adult_like_pipeline

    X, y = adult_like(2000, seed=0)
    model = adult_like_pipeline(X.iloc[:1000], y.iloc[:1000])
    return {"name": "ColumnTransformer + GBC pipeline, adult-like (1000 rows x 9)",
            "model": model, "X": X.iloc[1000:], "y": y.iloc[1000:], "flavor": "sklearn"}


def _mlp() -> dict[str, Any]:
    import torch
    from sklearn.datasets import load_breast_cancer
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(X), torch.from_numpy(y).long()
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()
    return {"name": "torch MLP, breast_cancer (569 rows x 30)", "model": net, "X": X[:569],
            "y": y[:569], "flavor": "pytorch"}


def _svm() -> dict[str, Any]:
    """A black-box model whose predict is slow: the budget, not the data, sets the work."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, random_state=0)
    model = make_pipeline(StandardScaler(), SVC(probability=True, random_state=0))
    return {"name": "scaler + SVC (black box), breast_cancer (171 rows x 30)",
            "model": model.fit(X_tr, y_tr), "X": X_te, "y": y_te, "flavor": "sklearn"}


CASES = {"forest": _forest, "pipeline": _pipeline, "mlp": _mlp, "svm": _svm}


def _log(case: dict[str, Any]) -> Any:
    import mlflow

    example = case["X"][:3] if isinstance(case["X"], np.ndarray) else case["X"].head(3)
    if case["flavor"] == "pytorch":
        return mlflow.pytorch.log_model(case["model"], name="model", input_example=example)
    import skops.io

    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(case["model"]))
    return mlflow.sklearn.log_model(case["model"], name="model", input_example=example,
                                    skops_trusted_types=trusted)


def time_log_model(case: dict[str, Any], mode: str) -> dict[str, Any]:
    """Seconds ``log_model`` took with autolog ``mode`` (off/default/async), and what it did."""
    import mlflow

    import mlflow_xai

    mlflow_xai.autolog(disable=True)
    if mode != "off":
        mlflow_xai.autolog(data=case["X"], targets=case["y"], asynchronous=mode == "async")
    with mlflow.start_run() as run:
        t0 = time.perf_counter()
        _log(case)
        seconds = time.perf_counter() - t0
        waited = 0.0
        if mode == "async":
            t1 = time.perf_counter()
            mlflow_xai.wait()
            waited = time.perf_counter() - t1
    mlflow_xai.autolog(disable=True)
    out = {"seconds": seconds, "wait": waited, "metrics": None, "methods": "", "rows": None}
    if mode != "off":
        client = mlflow.MlflowClient()
        data = client.get_run(run.info.run_id).data
        out["metrics"] = sum(k.startswith("xai") for k in data.metrics)
        out["status"] = data.tags.get("mlflow_xai.status")
        try:
            summary = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/xai/summary.json")
            plan = summary.get("plan") or {}
            out["methods"] = ", ".join(_described(c) for c in plan.get("chosen", []))
            out["rows"] = f"{plan.get('rows')} of {plan.get('rows_available')}"
            out["spent"] = plan.get("spent_s")
        except Exception as exc:  # recorded as a failed explanation: show why
            out["methods"] = f"(no summary: {type(exc).__name__})"
    return out


def _described(chosen: dict[str, Any]) -> str:
    """``kernel_shap (auto, <= 2048 samples)``: a planned method and what sized it."""
    params = chosen.get("params") or {}
    if "max_samples" in params:
        return f"{chosen['method']} ({params.get('n_samples')}, <= {params['max_samples']} samples)"
    return chosen["method"]


def time_evaluate(repeats: int) -> dict[str, Any]:
    """Median seconds of evaluate() with MLflow's default evaluator only, and with all."""
    import mlflow
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    X, y = make_classification(300, 30, random_state=0)
    X = pd.DataFrame(X, columns=[f"f{i}" for i in range(30)])
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(X, y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", input_example=X.head(3),
                                        serialization_format="cloudpickle")
    frame = X.assign(label=y)
    times: dict[str, list[float]] = {"builtin": [], "plain": []}
    metrics: dict[str, int] = {}
    for _ in range(repeats):
        for key, kwargs in (("builtin", {"evaluators": ["default"]}), ("plain", {})):
            with mlflow.start_run():
                t0 = time.perf_counter()
                result = mlflow.models.evaluate(info.model_uri, frame, targets="label",
                                                model_type="classifier", **kwargs)
                times[key].append(time.perf_counter() - t0)
                metrics[key] = sum(k.startswith("xai") for k in result.metrics)
    builtin, plain = statistics.median(times["builtin"]), statistics.median(times["plain"])
    return {"builtin": builtin, "plain": plain, "ratio": plain / builtin,
            "xai_metrics": metrics["plain"]}


def render(rows: list[dict[str, Any]], evaluate: dict[str, Any], argv: list[str]) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    lines = [
        "## Default path: `log_model` with autolog, and `evaluate()` (bench_defaults.py)",
        "",
        "Command: `" + " ".join(["python benchmarks/bench_defaults.py", *map(shlex.quote, argv)])
        + "`",
        f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, load average "
        f"{load[0]:.2f}; embedded sqlite store; budget_s = {BUDGET_S:g} (the default).",
        "",
        "| model | autolog | `log_model` s | added s | target (<= budget + 10) | then `wait()` s "
        "| plan | rows | xai/* metrics |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = {r["case"]: r["seconds"] for r in rows if r["mode"] == "off"}
    for r in rows:
        added = r["seconds"] - base.get(r["case"], r["seconds"])
        autolog_on = r["mode"] != "off"
        target = ("PASS" if added <= BUDGET_S + 10 else "MISS") if autolog_on else ""
        added_text = f"{added:+.1f}" if autolog_on else ""
        wait_text = f"{r['wait']:.1f}" if r["mode"] == "async" else ""
        metrics_text = "" if r.get("metrics") is None else str(r["metrics"])
        lines.append(
            f"| {r['case']} | {r['mode']} | {r['seconds']:.1f} | {added_text} | {target} | "
            f"{wait_text} | {r.get('methods') or ''} | {r.get('rows') or ''} | "
            f"{metrics_text} |")
    ok = "PASS" if evaluate["ratio"] <= 2.0 else "MISS"
    lines += [
        "",
        "| `mlflow.models.evaluate`, 300 x 30 random forest | seconds (median) |",
        "|---|---|",
        f"| MLflow's default evaluator only (`evaluators=['default']`) | {evaluate['builtin']:.2f} |",
        f"| plain call (`xai` installed, runs unnamed) | {evaluate['plain']:.2f} |",
        f"| ratio (target <= 2x) | {evaluate['ratio']:.2f}x {ok} |",
        f"| xai/* metrics the plain call returns | {evaluate['xai_metrics']} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ["MLFLOW_XAI_PROGRESS"] = "0"
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        mlflow.set_experiment("bench-defaults")
        rows = []
        for key in [c.strip() for c in args.cases.split(",") if c.strip()]:
            case = CASES[key]()
            _log_warm_up(case)
            for mode in ("off", "default", "async"):
                result = time_log_model(case, mode)
                rows.append({"case": case["name"], "mode": mode, **result})
                print(f"{case['name']:60s} {mode:8s} {result['seconds']:6.1f} s "
                      f"wait {result['wait']:5.1f} s  {result.get('methods')}  "
                      f"rows {result.get('rows')}  metrics {result.get('metrics')}", flush=True)
        evaluate = time_evaluate(args.repeats)
        print(f"evaluate: default evaluator {evaluate['builtin']:.2f} s, plain "
              f"{evaluate['plain']:.2f} s, ratio {evaluate['ratio']:.2f}", flush=True)
    body = render(rows, evaluate, raw)
    print(body)
    if not args.no_write:
        replace_section(args.results, START_MARK, END_MARK, body)
    return 0


def _log_warm_up(case: dict[str, Any]) -> None:
    """One untimed log first: MLflow's first ``log_model`` of a flavor imports and caches."""
    import mlflow

    with mlflow.start_run():
        _log(case)


if __name__ == "__main__":
    sys.exit(main())
