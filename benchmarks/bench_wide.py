#!/usr/bin/env python
"""Wide data (issue 13, item 3): what each Shapley path costs on 2,000 and 10,000 features, and
how close it gets to the closed form.

Data: ``n`` rows of ``d`` columns drawn from 40 latent factors plus noise (so columns come in
correlated clusters, as in real wide data). Model: a linear model plus ten terms
``c tanh(x_a + x_b x_c)`` on random columns, evaluated in NumPy (about 2 us per row at
d = 2,000). Its exact interventional Shapley values over the background rows used are known:
``beta_j (x_j - m_j)`` for the linear part (``m``: the background means) plus, by additivity,
each term's values in its own game of at most three players, enumerated (pairwise products
alone would not do: antithetic permutations and the paired kernel design are exact for them).
Grouped, the players are the groups (the linear part sums over each group; each term is a game
over the groups it touches). Errors: ``max |err|`` and ``rel. err`` = mean |err| / mean |phi|,
over rows and players.

Cases (each in its own process, so that its peak RSS is its own; ``--timeout`` s each):

* ``permutation``: Permutation SHAP over the 2,000 single columns, one antithetic pair
  (``n_samples=2``: 2 x 1,999 coalitions per row), and four pairs.
* ``grouped_permutation`` / ``grouped_kernel``: ``feature_groups="auto"`` (at most 64
  correlation groups), Permutation SHAP (8 pairs) and Kernel SHAP (1,024 coalitions).
* ``kernel``: plain Kernel SHAP over 2,000 single columns (``n_samples=1024``): what its guard
  does (raise the budget to an identifiable one, or decline).
* ``auto``: ``explainers="auto", budget_s=20`` on all rows: the plan chosen and its time.
* ``issue``: the issue's case, 10,000 columns, 6 rows (the background: those 6 rows),
  ``n_samples=16``: plain Kernel SHAP (562 s before the guard), grouped Kernel SHAP, and
  Permutation SHAP (one pair).
* ``estimators``: Kernel against Permutation SHAP over 16, 32 and 64 auto groups of the 2,000
  columns at equal budgets (coalitions per row), on the linear + tanh model (exact reference)
  and on a one-hidden-layer tanh MLP (reference: Permutation SHAP with 256 pairs): the
  evidence for the planner's choice of estimator over groups (``KERNEL_MAX_GROUPS``,
  ``MIN_COALITIONS_PER_PLAYER``).

The results replace the section between the ``bench_wide`` markers of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

START_MARK = "<!-- bench_wide:start -->"
END_MARK = "<!-- bench_wide:end -->"
TERMS = 10

#: name -> (d, explained rows, background rows, explain() keywords, what the row is)
CASES: dict[str, tuple[int, int, int, dict[str, Any], str]] = {
    "permutation_1pair": (2000, 20, 20, {"explainers": {"permutation_shap": {"n_samples": 2}}},
                          "permutation_shap, single columns, 1 pair"),
    "permutation_4pairs": (2000, 20, 20,
                           {"explainers": {"permutation_shap": {"n_samples": 8 * 1999 + 2}}},
                           "permutation_shap, single columns, 4 pairs"),
    "grouped_permutation": (2000, 20, 20,
                            {"explainers": {"permutation_shap": {"n_samples": 1024}},
                             "feature_groups": "auto"},
                            "permutation_shap, auto groups, 8 pairs"),
    "grouped_kernel": (2000, 20, 20, {"explainers": {"kernel_shap": {"n_samples": 1024}},
                                      "feature_groups": "auto"},
                       "kernel_shap, auto groups, 1,024 coalitions"),
    "kernel": (2000, 20, 20, {"explainers": {"kernel_shap": {"n_samples": 1024}}},
               "kernel_shap, single columns, n_samples=1024"),
    "auto": (2000, 300, 100, {"explainers": "auto", "budget_s": 20.0},
             "explainers='auto', budget_s=20"),
    "issue_kernel": (10000, 6, 6, {"explainers": {"kernel_shap": {"n_samples": 16}}},
                     "kernel_shap, single columns, n_samples=16"),
    "issue_grouped_kernel": (10000, 6, 6, {"explainers": {"kernel_shap": {"n_samples": 16}},
                                           "feature_groups": "auto"},
                             "kernel_shap, auto groups, n_samples=16"),
    "issue_permutation": (10000, 6, 6, {"explainers": {"permutation_shap": {"n_samples": 16}}},
                          "permutation_shap, single columns, n_samples=16 (1 pair)"),
    "estimators": (2000, 10, 20, {}, "kernel_shap vs permutation_shap over 16, 32, 64 groups"),
}
#: The ``estimators`` case: groups and budgets (coalitions per row) compared.
STUDY_GROUPS = (16, 32, 64)
STUDY_BUDGETS = (128, 256, 1024, 2048)
#: Antithetic pairs of the MLP's reference (no closed form): Permutation SHAP, converged.
STUDY_REFERENCE_PAIRS = 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES),
                   help=f"cases to run (default all: {', '.join(CASES)})")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds each case may take (default 600); a case over it is reported "
                        "as timed out")
    p.add_argument("--results", type=Path,
                   default=Path(__file__).resolve().parent / "RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="print only")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case, print JSON
    return p.parse_args(argv)


def make_data(d: int, n: int, seed: int = 0) -> tuple[np.ndarray, Any]:
    """(X, model): latent-factor columns; a linear model plus TERMS terms
    ``c tanh(x_a + x_b x_c)`` on random columns."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 40))
    X = latent[:, rng.integers(0, 40, d)] + 0.5 * rng.normal(size=(n, d))
    beta = rng.normal(size=d) / np.sqrt(d)
    columns = rng.choice(d, size=(TERMS, 3), replace=False)
    c = rng.normal(size=TERMS)

    def model(Z: np.ndarray) -> np.ndarray:
        Z = np.asarray(Z, dtype=float)
        return Z @ beta + _terms(Z[:, columns]) @ c

    model.parts = (beta, columns, c)  # type: ignore[attr-defined]
    return X, model


def _terms(W: np.ndarray) -> np.ndarray:
    """(..., TERMS, 3) -> (..., TERMS): tanh(x_a + x_b x_c)."""
    return np.tanh(W[..., 0] + W[..., 1] * W[..., 2])


def closed_form(model: Any, X: np.ndarray, background: np.ndarray,
                index: np.ndarray | None = None) -> np.ndarray:
    """Exact interventional Shapley values of ``model`` over ``background`` for each row of
    ``X``: per column, or per group when ``index`` gives each column's group. The linear part
    is beta_j (x_j - m_j) (summed over a group); each term, by additivity, is its own small
    game over the (at most 3) players it touches, enumerated exactly."""
    from itertools import product
    from math import factorial

    beta, columns, c = model.parts
    index = np.arange(X.shape[1]) if index is None else np.asarray(index)
    n_players = int(index.max()) + 1
    phi = np.zeros((len(X), n_players))
    np.add.at(phi.T, index, (beta * (X - background.mean(axis=0))).T)
    for k, cols in enumerate(columns):
        players = list(dict.fromkeys(index[cols]))           # the groups this term touches
        P = len(players)
        value = {}
        for S in product((0, 1), repeat=P):
            keep = np.array([S[players.index(g)] for g in index[cols]], dtype=bool)
            W = np.where(keep, X[:, None, cols], background[None, :, cols])   # (R, B, 3)
            value[S] = c[k] * np.tanh(W[..., 0] + W[..., 1] * W[..., 2]).mean(axis=1)
        for i, g in enumerate(players):
            for S, v in value.items():
                if S[i]:
                    continue
                size = sum(S)
                weight = factorial(size) * factorial(P - size - 1) / factorial(P)
                phi[:, g] += weight * (value[S[:i] + (1,) + S[i + 1:]] - v)
    return phi


def run_study() -> dict[str, Any]:
    """The ``estimators`` case: relative errors of both estimators over auto groups."""
    import pandas as pd

    import mlflow_xai
    from mlflow_xai.groups import auto_groups

    d, rows, background_rows, _, _ = CASES["estimators"]
    X, model = make_data(d, rows + background_rows)
    rng = np.random.default_rng(5)
    W1, w2 = rng.normal(size=(d, 16)) * 3 / np.sqrt(d), rng.normal(size=16)

    def mlp(Z: np.ndarray) -> np.ndarray:
        return np.tanh(np.asarray(Z, dtype=float) @ W1) @ w2

    frame = pd.DataFrame(X, columns=[f"c{j}" for j in range(d)])
    data, background = frame.iloc[:rows], frame.iloc[rows:]
    results = []
    for G in STUDY_GROUPS:
        groups = auto_groups(X, list(frame.columns), max_groups=G)
        spec = groups.members()
        for label, f in (("linear + tanh", model), ("MLP", mlp)):
            if f is model:
                reference = closed_form(model, data.to_numpy(), background.to_numpy(),
                                        groups.index)
            else:
                n = 2 * (groups.n_groups - 1) * STUDY_REFERENCE_PAIRS + 2
                reference = mlflow_xai.explain(
                    f, data, background=background, feature_groups=spec, checks=[],
                    explainers={"permutation_shap": {"n_samples": n}}
                ).attributions["permutation_shap"].to_numpy()
            scale = max(np.abs(reference).mean(), 1e-12)
            for budget in STUDY_BUDGETS:
                row = {"model": label, "groups": groups.n_groups, "budget": budget}
                for method in ("kernel_shap", "permutation_shap"):
                    expl = mlflow_xai.explain(f, data, background=background, checks=[],
                                              feature_groups=spec,
                                              explainers={method: {"n_samples": budget}})
                    values = expl.attributions[method].to_numpy()
                    row[method] = float(np.abs(values - reference).mean() / scale)
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    return {"case": "estimators", "d": d, "status": "ok", "study": results}


def run_case(name: str) -> dict[str, Any]:
    """One case in this process: its figures as a dict."""
    import pandas as pd

    import mlflow_xai

    if name == "estimators":
        return run_study()

    d, rows, background_rows, options, _ = CASES[name]
    if name.startswith("issue"):
        # The issue's case: 6 rows, the background sampled from them (all 6).
        X, model = make_data(d, rows)
        frame = pd.DataFrame(X, columns=[f"c{j}" for j in range(d)])
        data, background = frame, frame
    else:
        X, model = make_data(d, rows + background_rows)
        frame = pd.DataFrame(X, columns=[f"c{j}" for j in range(d)])
        data, background = frame.iloc[:rows], frame.iloc[rows:]
    t0 = time.perf_counter()
    expl = mlflow_xai.explain(model, data, background=background, checks=[], strict=False,
                              **options)
    wall = time.perf_counter() - t0
    summary = expl.summary
    out: dict[str, Any] = {"case": name, "wall_s": wall, "d": d}
    methods = summary["methods"]
    method = next(iter(methods))
    entry = methods[method]
    out.update(method=method, status=entry.get("status"), seconds=entry.get("seconds"),
               peak_mb=entry.get("peak_memory_mb"), model_evals=entry.get("model_evals"),
               reason=entry.get("reason") or entry.get("error"),
               budget_raised=entry.get("budget_raised"),
               rows=summary["data"]["rows_explained"],
               background=summary["data"]["background_rows"])
    if "plan" in summary:
        plan = summary["plan"]
        out["plan"] = {"chosen": [(c["method"], c.get("params")) for c in plan["chosen"]],
                       "spent_s": plan.get("spent_s"), "estimated_s": plan.get("estimated_s"),
                       "rows": plan.get("rows"), "background_rows": plan.get("background_rows"),
                       "groups": (plan.get("feature_groups") or {}).get("groups")}
    groups = summary.get("feature_groups")
    out["players"] = groups["groups"] if groups else d
    if groups:
        out["grouping_s"] = groups.get("seconds")
    if entry.get("status") == "ok":
        rows_x = expl.encoded                      # the explained rows, encoded
        bg_used = _background_used(expl, background.to_numpy())
        index = None
        if groups:
            index = np.empty(d, dtype=int)
            for g, cols in enumerate(groups["members"].values()):
                index[[int(col[1:]) for col in cols]] = g
        exact = closed_form(model, rows_x, bg_used, index)
        values = expl.attributions[method].to_numpy()
        err = np.abs(values - exact)
        out.update(max_abs_err=float(err.max()),
                   rel_err=float(err.mean() / max(np.abs(exact).mean(), 1e-12)),
                   efficiency_gap=entry.get("efficiency_max_abs_gap"))
    return out


def _background_used(expl: Any, background: np.ndarray) -> np.ndarray:
    """The background rows the run used: the given ones, or the plan's sample of them (drawn
    as the planner draws it: pilot rows, explained rows, then background rows)."""
    plan = expl.summary.get("plan") or {}
    if not plan.get("background_rows") or plan["background_rows"] >= len(background):
        return background
    rng = np.random.default_rng(expl.summary["seed"])
    n = plan["rows_available"]
    rng.choice(n, size=min(n, 16), replace=False)            # the planner's pilot rows
    if plan["rows"] < n:
        rng.choice(n, size=plan["rows"], replace=False)      # its explained rows
    keep = np.sort(rng.choice(len(background), size=plan["background_rows"], replace=False))
    return background[keep]


def run_isolated(name: str, timeout: float) -> dict[str, Any]:
    """``name`` in a fresh process (its own peak RSS), stopped after ``timeout`` s."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", name]
    env = {**os.environ, "MLFLOW_XAI_PROGRESS": "0"}
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"case": name, "status": "timed out", "wall_s": time.perf_counter() - t0,
                "d": CASES[name][0]}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
        return {"case": name, "status": "error", "reason": tail[0], "d": CASES[name][0],
                "wall_s": time.perf_counter() - t0}
    return json.loads(lines[-1])


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None:
        return ""
    return format(value, spec) if isinstance(value, (int, float)) else str(value)


def render(results: list[dict[str, Any]], argv: list[str], timeout: float) -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    lines = [
        "## Wide data: 2,000 and 10,000 features (bench_wide.py)",
        "",
        "Command: `" + " ".join(["python benchmarks/bench_wide.py", *map(shlex.quote, argv)])
        + "`",
        (f"Run {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
         f"{os.cpu_count()} cores (shared), Python {platform.python_version()}, load average "
         f"{load[0]:.2f}; CPU; each case in its own process, time-boxed at {timeout:g} s. "
         f"Model: linear + {TERMS} terms c tanh(x_a + x_b x_c) over latent-factor columns; "
         "errors against the exact interventional Shapley values (closed form for the linear "
         "part, each term's small game enumerated; grouped: the group game). Seconds: the "
         "method's own (summary.json), grouping not included (see notes)."),
        "",
        ("| case | d | rows x background | players | status | seconds | peak RSS MB "
         "| model rows | max abs err | rel. err | notes |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    study = next((r for r in results if r["case"] == "estimators"), None)
    for r in results:
        if r["case"] == "estimators":
            continue
        name = CASES[r["case"]][4]
        notes = []
        if r.get("budget_raised"):
            raised = r["budget_raised"]
            notes.append(f"budget raised {raised.get('requested')} -> {raised.get('used')}")
        if r.get("reason") and r.get("status") != "ok":
            notes.append(str(r["reason"])[:160].replace("|", "/"))
        if r.get("grouping_s") is not None:
            notes.append(f"grouping {r['grouping_s']:.1f} s")
        if r.get("plan"):
            p = r["plan"]
            chosen = ", ".join(f"{m} {json.dumps(params)}" for m, params in p["chosen"])
            notes.append(f"plan: {chosen}; {p.get('groups') or 'no'} groups; "
                         f"estimated {sum((p.get('estimated_s') or {}).values()):.1f} s, "
                         f"spent {p.get('spent_s')} s")
        if r.get("status") == "timed out":
            notes.append(f"stopped after {timeout:g} s")
        seconds = r.get("seconds") if r.get("seconds") is not None else r.get("wall_s")
        shape = f"{r.get('rows', '')} x {r.get('background', '')}" if r.get("rows") else ""
        lines.append(
            f"| {name} | {r['d']:,} | {shape} | {_fmt(r.get('players'), ',')} | "
            f"{r.get('status')} | {_fmt(seconds, '.1f')} | {_fmt(r.get('peak_mb'), '.0f')} | "
            f"{_fmt(r.get('model_evals'), ',')} | {_fmt(r.get('max_abs_err'))} | "
            f"{_fmt(r.get('rel_err'))} | {'; '.join(notes)} |")
    if study is not None:
        lines += ["", _render_study(study)]
    return "\n".join(lines)


def _render_study(study: dict[str, Any]) -> str:
    if study.get("status") != "ok":
        return f"Estimators over groups: {study.get('status')} ({study.get('reason', '')})"
    rows, background = CASES["estimators"][1], CASES["estimators"][2]
    lines = [
        (f"Kernel against Permutation SHAP over auto groups of the 2,000 columns ({rows} rows "
         f"x {background} background rows): mean |error| / mean |value|, equal budgets in "
         "coalitions per row (kernel_shap raises a budget under 2 x groups to that bound). "
         f"MLP reference: Permutation SHAP with {STUDY_REFERENCE_PAIRS} antithetic pairs."),
        "",
        "| model | groups | budget | kernel_shap | permutation_shap | kernel / permutation |",
        "|---|---|---|---|---|---|",
    ]
    for r in study["study"]:
        ratio = r["kernel_shap"] / max(r["permutation_shap"], 1e-15)
        lines.append(f"| {r['model']} | {r['groups']} | {r['budget']:,} | "
                     f"{r['kernel_shap']:.4f} | {r['permutation_shap']:.4f} | {ratio:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    args = parse_args(raw)
    os.environ["MLFLOW_XAI_PROGRESS"] = "0"
    if args.case:
        import warnings

        warnings.filterwarnings("ignore")
        print(json.dumps(run_case(args.case), default=str))
        return 0
    results = []
    for name in [c.strip() for c in args.cases.split(",") if c.strip()]:
        result = run_isolated(name, args.timeout)
        results.append(result)
        print(json.dumps(result, default=str), flush=True)
    body = render(results, raw, args.timeout)
    print(body)
    if not args.no_write:
        from results_file import replace_section  # benchmarks/ is on sys.path as a script

        replace_section(args.results, START_MARK, END_MARK, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
