#!/usr/bin/env python
"""Governance end tasks (issue 14): error control and power of ``importance_test``, flip rates
of ``flip_test``, responsiveness, and the Rashomon ranges, each measured over repetitions.

1. ``importance_test`` statistics, side by side on the same simulated data sets (the arrays
   the check feeds them, no model wrapper): the sequential betting test (what the check runs
   with >= 200 rows) against the fixed-sample permutation test (B = 199; its fallback),
   marginal and conditional (partial residuals, regression sampler). Cases, n = 400 rows:
   ``null`` (sigmoid(x1 + x2), z independent and ignored: H0 true for both tests), ``proxy``
   (x3 = x1 + noise, corr 0.9, not used: conditional H0 true, marginal false), ``moderate``
   (six features, 0.6 on the logit) and ``strong`` (sigmoid(3 x1 + x2)). Figures: rejection
   rate with its standard error, rows (= model evaluations) used, seconds; the ratio of rows
   betting / permutation.
2. ``flip_test`` and ``responsiveness`` on the governance example's fair and biased credit
   models (examples/governance/run_gate.py, 500 applicants): flip rate of sex with its 95 %
   interval, fixed-prediction rate, actionable top-1 share.
3. ``rashomon`` on y = x1 + x2 + x1 x2 + noise, x3 = x1 + N(0, 0.1^2), x4 noise (the test's
   ground truth), 20 data sets: how often the kept fits' FIS(x1, x2) range covers the true
   function's FIS (same rows and permutations), and how often the x1/x3 order swaps.

The results replace the section between the ``bench_end_tasks`` markers of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "examples" / "governance")]
START_MARK = "<!-- bench_end_tasks:start -->"
END_MARK = "<!-- bench_end_tasks:end -->"
ALPHA = 0.05


def _sigmoid(a: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-a))


def _case(name: str, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(X, model outputs, tested column) of one simulated data set."""
    if name == "null":
        X = rng.normal(size=(n, 3))
        return X, _sigmoid(X[:, 0] + X[:, 1]), 2
    if name == "proxy":
        X = rng.normal(size=(n, 3))
        X[:, 2] = X[:, 0] + 0.48 * rng.normal(size=n)
        return X, _sigmoid(X[:, 0] + X[:, 1]), 2
    if name == "moderate":
        X = rng.normal(size=(n, 6))
        return X, _sigmoid(2.0 * X[:, 0] + 0.6 * X[:, 1]), 1
    X = rng.normal(size=(n, 3))
    return X, _sigmoid(3.0 * X[:, 0] + X[:, 1]), 0


def _one_test(X: np.ndarray, y: np.ndarray, j: int, kind: str, method: str,
              rng: np.random.Generator) -> tuple[bool, int]:
    """(rejected, rows used): the check's test of column j (see importance_test._run_test)."""
    from mlflow_xai_checks._betting import (
        ResidualStream,
        betting_test,
        conditional_warmup,
        fit_conditional_sampler,
        permutation_test,
        residualize,
    )

    rest = np.delete(X, j, axis=1)
    plain = np.zeros(rest.shape[1], dtype=bool)
    if kind == "marginal":
        out = (betting_test(y, X[:, j], kind=kind, alpha=ALPHA, warmup=20) if method == "betting"
               else permutation_test(y, X[:, j], kind=kind, alpha=ALPHA, rng=rng))
        return out.rejected, out.rows_used
    sampler = fit_conditional_sampler(X, j)
    if method == "betting":
        stream = ResidualStream(alpha=ALPHA, warmup=conditional_warmup(20, rest.shape[1], len(X)),
                                categorical=False, center=sampler.mean, rest_categorical=plain)
        stream.feed(y, X[:, j], sampler.sample(rest, rng), rest)
        out = stream.outcome(len(X))
        return out.rejected, out.rows_used
    yr, xr, draws = residualize(y, X[:, j], sampler.sample(rest, rng, size=199), rest,
                                sampler.mean, plain)
    out = permutation_test(yr, xr, kind=kind, alpha=ALPHA, rng=rng, x_draws=draws)
    return out.rejected, out.rows_used


def bench_importance_test(reps: int, n: int) -> tuple[str, dict[str, Any]]:
    rows = []
    raw: dict[str, Any] = {}
    for case in ("null", "proxy", "moderate", "strong"):
        for kind in ("marginal", "conditional"):
            cells = {}
            for method in ("betting", "permutation"):
                t0 = time.perf_counter()
                results = [_one_test(*_case(case, np.random.default_rng(20_000 + r), n), kind,
                                     method, np.random.default_rng([r, 3]))
                           for r in range(reps)]
                rate = float(np.mean([r for r, _ in results]))
                cells[method] = {"rate": rate, "se": math.sqrt(rate * (1 - rate) / reps),
                                 "rows": float(np.mean([u for _, u in results])),
                                 "seconds": (time.perf_counter() - t0) / reps}
            h0 = case == "null" or (case == "proxy" and kind == "conditional")
            raw[f"{case}/{kind}"] = cells
            b, p = cells["betting"], cells["permutation"]
            rows.append(
                f"| {case} | {kind} | {'true' if h0 else 'false'} | "
                f"{b['rate']:.3f} ± {b['se']:.3f} | {p['rate']:.3f} ± {p['se']:.3f} | "
                f"{b['rows']:.0f} | {p['rows']:.0f} | {b['rows'] / p['rows']:.2f} | "
                f"{1000 * b['seconds']:.0f} / {1000 * p['seconds']:.0f} |")
    bound = ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / reps)
    text = (f"### importance_test: {reps} data sets per cell, n = {n} rows, alpha = {ALPHA}\n\n"
            f"Rejection rate ± its standard error (under a true H0 it is the type-I error, bound "
            f"alpha + 2 SE = {bound:.3f}; otherwise the power); rows = model evaluations used "
            "(the betting test stops at rejection).\n\n"
            "| case | test | H0 | betting: rejects | permutation (B = 199): rejects | "
            "betting rows | permutation rows | rows ratio | ms per test (bet / perm) |\n"
            "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    return text, raw


def bench_flip_and_recourse() -> tuple[str, dict[str, Any]]:
    import pandas as pd
    from run_gate import CHECKS, FINANCIAL, applicants, labels
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    import mlflow_xai

    X = applicants(2000)
    rows, raw = [], {}
    for name, biased in (("fair", False), ("biased", True)):
        y = labels(X, biased=biased)
        columns = list(X.columns) if biased else FINANCIAL
        model = make_pipeline(ColumnTransformer([("scale", StandardScaler(), columns)]),
                              LogisticRegression(max_iter=1000)).fit(X.iloc[:1500], y[:1500])
        checks = {k: CHECKS[k] for k in ("flip_test", "responsiveness")}
        t0 = time.perf_counter()
        expl = mlflow_xai.explain(model, X.iloc[1500:], targets=pd.Series(y[1500:]),
                                  explainers={"kernel_shap": {"n_samples": 256}}, checks=checks,
                                  background=X.iloc[:50], progress=False)
        seconds = time.perf_counter() - t0
        flip = expl.checks["flip_test"]["details"]["features"]["sex"]
        resp = expl.checks["responsiveness"]["details"]
        share = resp["methods"]["kernel_shap"]["actionable_top_k_share"]
        raw[name] = {"flip": flip, "fixed_rate": resp["fixed_rate"], "share": share}
        rows.append(f"| {name} | {flip['flip_rate']:.4f} ({flip['flips']} of {flip['rows']}) | "
                    f"[{flip['ci_low']:.4f}, {flip['ci_high']:.4f}] | "
                    f"{resp['fixed_rate']:.3f} of {resp['adverse_rows']} | "
                    f"{share['1']:.3f} / {share['2']:.3f} | "
                    f"{expl.checks['flip_test']['model_evals']} / "
                    f"{expl.checks['responsiveness']['model_evals']} | {seconds:.1f} |")
    text = ("### flip_test and responsiveness: the governance example's credit models "
            "(500 applicants)\n\n"
            "| model | flip rate of sex | 95 % interval | fixed rate (of adverse rows) | "
            "actionable top-1 / top-2 share (kernel_shap) | model rows (flip / recourse) | "
            "explain() s |\n|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    return text, raw


def bench_rashomon(data_sets: int) -> tuple[str, dict[str, Any]]:
    import pandas as pd
    from mlflow_xai_checks.rashomon import draw_permutations, split_rows
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures

    import mlflow_xai

    names = ["x1", "x2", "x3", "x4"]
    covered, swapped, kept, widths, lines = 0, 0, [], [], []
    for seed in range(data_sets):
        rng = np.random.default_rng(seed)
        x1, x2, x4 = rng.normal(size=(3, 300))
        A = np.column_stack([x1, x2, x1 + rng.normal(0, 0.1, 300), x4])
        y = x1 + x2 + x1 * x2 + rng.normal(0, 1, 300)
        X = pd.DataFrame(A, columns=names)
        model = make_pipeline(PolynomialFeatures(2, interaction_only=True),
                              LinearRegression()).fit(X, y)
        expl = mlflow_xai.explain(model, X, targets=y, explainers=["permutation_importance"],
                                  checks={"rashomon": {"n_models": 40}}, seed=seed,
                                  progress=False)
        d = expl.checks["rashomon"]["details"]
        # The true function's FIS on the check's own validation rows and permutations.
        _, val = split_rows(300, 0.3, seed)
        perms = draw_permutations(len(val), 2, seed)

        def truth(Z: np.ndarray) -> np.ndarray:
            return Z[:, 0] + Z[:, 1] + Z[:, 0] * Z[:, 1]

        def mr(cols: list[int], Av: np.ndarray = A[val], yv: np.ndarray = y[val]) -> float:
            base = np.mean((yv - truth(Av)) ** 2)
            out = []
            for p in perms:
                Z = Av.copy()
                Z[:, cols] = Av[p][:, cols]
                out.append(np.mean((yv - truth(Z)) ** 2) - base)
            return float(np.mean(out))

        true_fis = mr([0, 1]) - mr([0]) - mr([1])
        pair = next(p for p in d["pairs"] if set(p["features"]) == {"x1", "x2"})
        covered += pair["min"] <= true_fis <= pair["max"]
        swaps = [s["share"] for s in d["swaps"] if set(s["features"]) == {"x1", "x3"}]
        swapped += bool(swaps and swaps[0] > 0)
        kept.append(d["models_kept"])
        widths.append(pair["max"] - pair["min"])
        if seed < 3:
            f = d["features"]
            lines.append(f"| {seed} | {d['models_kept']} of {d['models_fitted']} | "
                         f"[{pair['min']:.2f}, {pair['max']:.2f}] | {true_fis:.2f} | "
                         f"{swaps[0] if swaps else 0:.2f} | "
                         + " ; ".join(f"{n} {f[n]['rank_min']}-{f[n]['rank_max']}"
                                      for n in names) + " |")
    text = (f"### rashomon: y = x1 + x2 + x1 x2 + noise, x3 = x1 + N(0, 0.1²), {data_sets} "
            "data sets of 300 rows, 40 refits each (epsilon auto: one standard error)\n\n"
            f"The kept fits' FIS(x1, x2) range covered the true function's FIS in **{covered} of "
            f"{data_sets}** data sets (median range width {np.median(widths):.2f}); x1 and x3 "
            f"swapped order in some kept fits in **{swapped} of {data_sets}**; median fits kept "
            f"{np.median(kept):.0f} of 40. The first three data sets:\n\n"
            "| data set | kept | FIS(x1, x2) range | true FIS | x1/x3 swap share | rank ranges |\n"
            "|---|---|---|---|---|---|\n" + "\n".join(lines))
    return text, {"covered": covered, "swapped": swapped, "data_sets": data_sets,
                  "kept": kept}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200, help="data sets per importance_test "
                        "cell (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=400, help="rows per data set")
    parser.add_argument("--rashomon-sets", type=int, default=20)
    parser.add_argument("--results", type=Path, default=Path(__file__).with_name("RESULTS.md"),
                        help="where to record the results (default: %(default)s)")
    parser.add_argument("--no-record", action="store_true", help="print only")
    args = parser.parse_args(argv)
    from results_file import cpu_name, replace_section  # benchmarks/ is on sys.path

    t0 = time.perf_counter()
    parts = [bench_importance_test(args.reps, args.rows)[0], bench_flip_and_recourse()[0],
             bench_rashomon(args.rashomon_sets)[0]]
    command = "python benchmarks/bench_end_tasks.py" + (
        f" --reps {args.reps}" if args.reps != 200 else "")
    body = (f"## Governance end tasks: error control, power, flips, recourse, Rashomon "
            f"(bench_end_tasks.py)\n\n`{command}` — {dt.date.today()}, {cpu_name()}, "
            f"Python {platform.python_version()}, {time.perf_counter() - t0:.0f} s in all.\n\n"
            + "\n\n".join(parts))
    print(body)
    if not args.no_record:
        replace_section(args.results, START_MARK, END_MARK, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
