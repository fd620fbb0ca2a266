#!/usr/bin/env python
"""Shapley-value estimators at equal budget: mlflow-xai against shap and shapiq.

Every method explains the same game: v(S) = mean over the same background rows of the same
model with the columns outside S taken from the background (interventional). The budget is the
number of coalitions per explained row, each evaluated on all background rows; shapiq's budget
also counts the empty and the grand coalition, which mlflow-xai and shap evaluate as endpoints
outside their budget, so shapiq gets ``budget + 2``. Exact values come from enumeration (the
trained MLP, d <= 14), shap's interventional TreeExplainer with the same background (the
gradient-boosted ensemble; checked against enumeration at d <= 14) or the closed form
beta_j (x_j - mean_bg_j) (the linear model with correlated features).

Methods: mlflow-xai ``kernel_shap`` (the new default: ``estimator='poly'``; the old default:
``estimator='kernel'``; the ablation ``order=1``), ``permutation_shap``; ``shap.KernelExplainer``
(``l1_reg=False``, as in ``bench_attributions.py``); shapiq ``KernelSHAP``, ``kADDSHAP``
(order 2), ``PermutationSamplingSV`` and ``SVARM``. Reported: mean absolute error against the
exact values (over rows, features and seeds), seconds for all rows (model evaluations included:
every method calls the real model, no cache is shared), model rows per explained row, and the
time each method needs to reach shap's and kADD-SHAP's error at the largest budget.

The tables replace the section between the ``bench_estimators`` markers of
``benchmarks/RESULTS.md``. ``python benchmarks/bench_estimators.py --quick`` runs in about 20 s
(one seed: expect single-seed noise in its cells); the full run in about 13 minutes on two quiet
cores (25 minutes with the machine's load average at 5).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from math import factorial
from pathlib import Path
from typing import Any

import numpy as np
from results_file import cpu_name, replace_section  # benchmarks/ is on sys.path as a script

START_MARK = "<!-- bench_estimators:start -->"
END_MARK = "<!-- bench_estimators:end -->"
BUDGETS = (64, 128, 256, 512, 1024, 2048)
FULL_CASES = ("mlp:8", "mlp:10", "mlp:14", "gbr:10", "gbr:14", "gbr:30", "gbr:60",
              "linear:8", "linear:30", "linear:60")
QUICK_CASES = ("mlp:10", "gbr:30", "linear:30")
OURS_NEW = "kernel_shap (new default: poly)"
OURS_OLD = "kernel_shap (old default: kernel)"
ABLATION = "kernel_shap (poly, order=1)"
PERMUTATION = "permutation_shap"
SHAP = "shap.KernelExplainer"
SHAPIQ = ("shapiq.KernelSHAP", "shapiq.kADDSHAP", "shapiq.PermutationSamplingSV", "shapiq.SVARM")
KADD = "shapiq.kADDSHAP"


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 3 cases, 6 rows, 1 seed, "
                   "16 background rows, budgets up to 1024 (about 2 minutes)")
    p.add_argument("--cases", default=None, help="comma-separated model:d (models mlp, gbr, "
                   f"linear); default {','.join(FULL_CASES)}")
    p.add_argument("--budgets", default=None, help="comma-separated coalitions per row "
                   "(default 64,...,2048; budgets >= 2**d - 2 are skipped: every method is "
                   "exact there)")
    p.add_argument("--rows", type=int, default=None, help="explained rows (default 20; 6 with "
                   "--quick)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per budget (default 3; 1 "
                   "with --quick)")
    p.add_argument("--background", type=int, default=None, help="background rows (default 24;"
                   " 16 with --quick)")
    p.add_argument("--methods", default=None, help="comma-separated subset of the methods")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0, help="seed of the models and data")
    p.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md",
                   help="markdown file whose bench_estimators section is replaced")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    q = args.quick
    args.cases = [c.strip() for c in (args.cases or ",".join(QUICK_CASES if q else FULL_CASES)
                                      ).split(",") if c.strip()]
    args.budgets = [int(b) for b in (args.budgets or ",".join(
        str(b) for b in (BUDGETS[:-1] if q else BUDGETS))).split(",")]
    args.rows = args.rows or (6 if q else 20)
    args.seeds = args.seeds or (1 if q else 3)
    args.background = args.background or (16 if q else 24)
    all_methods = [OURS_NEW, OURS_OLD, ABLATION, PERMUTATION, SHAP, *SHAPIQ]
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",")]
        unknown = [m for m in wanted if m not in all_methods]
        if unknown:
            p.error(f"unknown methods {unknown}; choose from {all_methods}")
        args.methods = wanted
    else:
        args.methods = [m for m in all_methods if not (q and m == ABLATION)]
    return args


# --------------------------------------------------------------------------------------------
# Models, data and exact values
# --------------------------------------------------------------------------------------------

class Counting:
    """A numpy model function that counts the rows it is called on."""

    def __init__(self, f: Callable[[np.ndarray], np.ndarray]) -> None:
        self.f, self.rows = f, 0

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        Z = np.asarray(Z)
        self.rows += len(Z)
        return np.asarray(self.f(Z), dtype=np.float64).reshape(-1)


@dataclass
class Case:
    model: str
    d: int
    f: Callable[[np.ndarray], np.ndarray]
    X: np.ndarray
    background: np.ndarray
    exact: np.ndarray
    about: str
    checks: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.model}, d = {self.d}"


def _correlated(rng: np.random.Generator, n: int, d: int, rho: float = 0.5) -> np.ndarray:
    cov = rho ** np.abs(np.subtract.outer(np.arange(d), np.arange(d)))
    return rng.multivariate_normal(np.zeros(d), cov, size=n)


def make_case(name: str, rows: int, n_background: int, seed: int) -> Case:
    model, d = name.split(":")
    d = int(d)
    rng = np.random.default_rng(seed * 1000 + d + {"mlp": 1, "gbr": 2, "linear": 3}[model])
    if model == "mlp":
        f, about = _mlp(d, rng)
        X, bg = rng.standard_normal((rows, d)), rng.standard_normal((n_background, d))
        exact = enumerate_shapley(f, X, bg)
        return Case(model, d, f, X, bg, exact, about)
    if model == "gbr":
        return _gbr(d, rng, rows, n_background)
    if model == "linear":
        beta = rng.normal(size=d)
        X, bg = _correlated(rng, rows, d, 0.8), _correlated(rng, n_background, d, 0.8)
        exact = beta * (X - bg.mean(axis=0))
        return Case(model, d, lambda Z: np.asarray(Z) @ beta + 0.5, X, bg, exact,
                    "linear model, features correlated 0.8^|i-j|; exact: beta_j (x_j - mean_bg_j)")
    raise SystemExit(f"unknown model {model!r} (mlp, gbr, linear)")


def _mlp(d: int, rng: np.random.Generator):
    """A torch MLP trained on a target with pairwise and three-way interactions."""
    import torch
    from torch import nn

    n = 4000
    Xt = rng.standard_normal((n, d))
    y = 0.5 * Xt @ rng.normal(size=d)
    for _ in range(d):
        i, j = rng.choice(d, 2, replace=False)
        y += rng.normal() * Xt[:, i] * Xt[:, j]
    for _ in range(max(1, d // 3)):
        i, j, k = rng.choice(d, 3, replace=False)
        y += 0.5 * rng.normal() * Xt[:, i] * Xt[:, j] * Xt[:, k]
    y += np.sin(2 * Xt[:, 0]) + np.maximum(Xt[:, 1], Xt[:, 2])
    torch.manual_seed(int(rng.integers(1 << 31)))
    net = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                        nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    xs, ys = torch.tensor(Xt, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for _ in range(600):
        idx = torch.randint(0, n, (512,))
        loss = ((net(xs[idx])[:, 0] - ys[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.inference_mode():
        r2 = 1 - float(((net(xs)[:, 0] - ys) ** 2).mean() / ys.var())

    def f(Z: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = net(torch.as_tensor(np.asarray(Z), dtype=torch.float32))
        return out[:, 0].double().numpy()

    return f, (f"torch MLP {d}-64-64-1 (ReLU) trained on a target with {d} pairwise and "
               f"{max(1, d // 3)} three-way products, sin and max terms (train R^2 {r2:.2f}); "
               "exact: enumeration of all 2^d coalitions")


def _gbr(d: int, rng: np.random.Generator, rows: int, n_background: int) -> Case:
    import shap
    from sklearn.ensemble import GradientBoostingRegressor

    Xt = _correlated(rng, 3000, d)
    y = (10 * np.sin(np.pi * Xt[:, 0] * Xt[:, 1]) + 20 * (Xt[:, 2] - 0.5) ** 2 + 10 * Xt[:, 3]
         + 5 * Xt[:, 4] + 0.5 * Xt[:, 5:].sum(axis=1) + 2 * Xt[:, 5] * Xt[:, 6] * (Xt[:, 7] > 0))
    model = GradientBoostingRegressor(n_estimators=100, max_depth=3, random_state=0).fit(Xt, y)
    X, bg = _correlated(rng, rows, d), _correlated(rng, n_background, d)
    explainer = shap.TreeExplainer(model, data=bg, feature_perturbation="interventional")
    exact = np.asarray(explainer.shap_values(X))
    case = Case("gbr", d, model.predict, X, bg, exact,
                "sklearn GradientBoostingRegressor (100 trees, depth 3) on a Friedman-like "
                "target, features correlated 0.5^|i-j|; exact: shap.TreeExplainer "
                "(interventional, the same background)")
    if d <= 14:
        enumerated = enumerate_shapley(model.predict, X[:3], bg)
        gap = float(np.abs(enumerated - exact[:3]).max())
        case.checks.append(f"TreeExplainer vs enumeration on 3 rows: max |diff| {gap:.1e}")
        assert gap < 1e-6, gap
    return case


def enumerate_shapley(f: Callable, X: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Exact interventional Shapley values by enumerating all 2^d coalitions."""
    R, d = X.shape
    ids = np.arange(2**d)
    masks = ((ids[:, None] >> np.arange(d)) & 1).astype(bool)
    V = np.empty((R, 2**d))
    step = max(1, 200_000 // len(bg))
    for r in range(R):
        for s0 in range(0, 2**d, step):
            m = masks[s0:s0 + step]
            mixed = np.where(m[:, None, :], X[r][None, None, :], bg[None, :, :])
            V[r, s0:s0 + len(m)] = f(mixed.reshape(-1, d)).reshape(len(m), len(bg)).mean(1)
    sizes = masks.sum(axis=1)
    weight = np.array([factorial(s) * factorial(d - s - 1) / factorial(d) for s in range(d)])
    phi = np.zeros((R, d))
    for j in range(d):
        without = ids[(ids >> j) & 1 == 0]
        phi[:, j] = (V[:, without | (1 << j)] - V[:, without]) @ weight[sizes[without]]
    return phi


# --------------------------------------------------------------------------------------------
# The methods: each returns (values (R, d), coalitions per row it evaluated)
# --------------------------------------------------------------------------------------------

def _ours(method: str, params: dict[str, Any]):
    def run(case: Case, f: Counting, budget: int, seed: int):
        from mlflow_xai_torch.kernel import KernelShap
        from mlflow_xai_torch.permutation import PermutationShap

        from mlflow_xai.base import ExplainTask

        task = ExplainTask(predict=f, X=case.X, background=case.background,
                           feature_names=[f"x{j}" for j in range(case.d)], seed=seed)
        cls = KernelShap if method == "kernel_shap" else PermutationShap
        result = cls(n_samples=budget, **params).explain(task)
        info = result.info
        used = info.get("coalitions", info.get("n_samples_effective", budget))
        return result.values, used, info
    return run


def _shap_kernel(case: Case, f: Counting, budget: int, seed: int):
    import shap

    np.random.seed(seed)  # KernelExplainer samples with numpy's global generator
    explainer = shap.KernelExplainer(f, case.background)
    values = explainer.shap_values(case.X, nsamples=budget, silent=True, l1_reg=False)
    return np.asarray(values), budget, {}


def _shapiq(cls_name: str, **kwargs):
    def run(case: Case, f: Counting, budget: int, seed: int):
        import shapiq

        cls = getattr(shapiq, cls_name)
        R, d = case.X.shape
        out = np.zeros((R, d))
        for r in range(R):
            x = case.X[r]

            def game(coalitions: np.ndarray, x=x) -> np.ndarray:
                C = np.atleast_2d(np.asarray(coalitions, dtype=bool))
                mixed = np.where(C[:, None, :], x[None, None, :], case.background[None, :, :])
                return f(mixed.reshape(-1, d)).reshape(len(C), -1).mean(axis=1)

            approximator = cls(n=d, random_state=seed * 1000 + r, **kwargs)
            values = approximator.approximate(budget + 2, game)
            out[r] = [values[(j,)] for j in range(d)]
        return out, budget, {}
    return run


METHODS: dict[str, Callable] = {
    OURS_NEW: _ours("kernel_shap", {}),
    OURS_OLD: _ours("kernel_shap", {"estimator": "kernel"}),
    ABLATION: _ours("kernel_shap", {"order": 1}),
    PERMUTATION: _ours("permutation_shap", {}),
    SHAP: _shap_kernel,
    "shapiq.KernelSHAP": _shapiq("KernelSHAP"),
    "shapiq.kADDSHAP": _shapiq("kADDSHAP", max_order=2),
    "shapiq.PermutationSamplingSV": _shapiq("PermutationSamplingSV"),
    "shapiq.SVARM": _shapiq("SVARM"),
}


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

@dataclass
class Cell:
    """One method at one budget on one case, over the seeds."""

    errors: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    model_rows: list[float] = field(default_factory=list)   # per explained row
    used: list[int] = field(default_factory=list)           # coalitions per row evaluated
    raised: bool = False

    @property
    def mae(self) -> float:
        return float(np.mean(self.errors))

    @property
    def secs(self) -> float:
        return float(np.mean(self.seconds))


def run_case(case: Case, args: argparse.Namespace) -> dict[str, dict[int, Cell]]:
    budgets = [b for b in args.budgets if b < 2**case.d - 2]
    table: dict[str, dict[int, Cell]] = {m: {} for m in args.methods}
    for method in args.methods:
        t_method = time.perf_counter()
        for budget in budgets:
            cell = Cell()
            for seed in range(args.seeds):
                f = Counting(case.f)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t0 = time.perf_counter()
                    values, used, info = METHODS[method](case, f, budget, seed)
                    cell.seconds.append(time.perf_counter() - t0)
                cell.errors.append(float(np.abs(np.asarray(values) - case.exact).mean()))
                cell.model_rows.append(f.rows / len(case.X))
                cell.used.append(int(used))
                cell.raised |= "budget_raised" in info or int(used) > budget
            table[method][budget] = cell
        print(f"  {case.label:16s} {method:36s} {time.perf_counter() - t_method:7.1f} s",
              flush=True)
    return table


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

#: Errors below this share of mean |phi| are float round-off: every such method is exact.
FLOAT_TIE = 1e-9


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "-"
    return f"{x:.2e}" if x < 1e-3 or x >= 1e3 else f"{x:.4f}"


def _tiny(x: float, case: Case) -> bool:
    return x <= FLOAT_TIE * max(float(np.abs(case.exact).mean()), 1e-300)


def _secs(x: float) -> str:
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def error_table(case: Case, table: dict[str, dict[int, Cell]]) -> list[str]:
    budgets = sorted(next(iter(table.values())).keys())
    scale = float(np.abs(case.exact).mean())
    lines = [f"#### {case.label}", "", f"- {case.about}; mean |phi| = {scale:.4f}",
             *[f"- check: {c}" for c in case.checks], "",
             "| method | " + " | ".join(str(b) for b in budgets) + " | s at "
             f"{budgets[-1]} | model rows / row at {budgets[-1]} |",
             "|---|" + "---:|" * (len(budgets) + 2)]
    best = {b: min(table[m][b].mae for m in table) for b in budgets}
    for method, cells in table.items():
        row = []
        for b in budgets:
            c = cells[b]
            text = _fmt(c.mae) + ("†" if c.raised else "")
            top = c.mae == best[b] or (_tiny(c.mae, case) and _tiny(best[b], case))
            row.append(f"**{text}**" if top else text)
        last = cells[budgets[-1]]
        lines.append(f"| {method} | " + " | ".join(row)
                     + f" | {_secs(last.secs)} | {np.mean(last.model_rows):,.0f} |")
    return lines + [""]


def comparison(cases: list[Case], tables: list[dict[str, dict[int, Cell]]]) -> list[str]:
    """The new default against kADD-SHAP and the best shapiq approximator, cell by cell."""
    lines = ["| case | budget | new default | kADD-SHAP | ratio | best shapiq | ratio | "
             "old default | shap |", "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    wins = total = 0
    losses: list[str] = []
    for case, table in zip(cases, tables):
        if OURS_NEW not in table:
            continue
        for b, ours in table[OURS_NEW].items():
            peers = {m: table[m][b].mae for m in SHAPIQ if m in table}
            if not peers:
                continue
            best_name = min(peers, key=peers.get)
            kadd = peers.get(KADD, float("nan"))
            mark = "†" if ours.raised else ""
            old = table.get(OURS_OLD, {}).get(b)
            shp = table.get(SHAP, {}).get(b)
            def ratio(peer: float, ours: Cell = ours, case: Case = case) -> str:
                if _tiny(ours.mae, case):
                    return "exact (float)" if not _tiny(peer, case) else "tie (float)"
                return f"{ours.mae / peer:.2f}" if peer > 0 else "-"

            lines.append(
                f"| {case.label} | {b}{mark} | {_fmt(ours.mae)} | {_fmt(kadd)} | "
                f"{ratio(kadd)} | {best_name.split('.')[-1]} {_fmt(peers[best_name])} | "
                f"{ratio(peers[best_name])} | {_fmt(old.mae) if old else '-'} | "
                f"{_fmt(shp.mae) if shp else '-'} |")
            if ours.raised:
                continue
            total += 1
            if ours.mae <= min(peers.values()) or _tiny(ours.mae, case):
                wins += 1
            else:
                losses.append(f"{case.label} at {b} ({ours.mae:.3g} vs {best_name} "
                              f"{peers[best_name]:.3g})")
    head = [f"- the new default is no worse than every shapiq approximator in **{wins} of "
            f"{total}** comparable cells" + (f"; not in: {'; '.join(losses)}" if losses else ""),
            "- ratio = new default's error / the peer's (below 1: the new default is more "
            "accurate); exact (float) / tie (float): errors at float round-off (below "
            f"{FLOAT_TIE:g} x mean |phi|); † = the budget is under 2 d coalitions, below which "
            "kernel_shap raises it (not an equal-budget cell, left out of the count)", ""]
    return head + lines + [""]


def time_to_accuracy(cases: list[Case], tables: list[dict[str, dict[int, Cell]]]) -> list[str]:
    """Smallest budget (and its seconds) at which each method reaches the error of shap's and
    of kADD-SHAP's largest budget."""
    lines = ["| case | target | " + " | ".join(m for m in (OURS_NEW, OURS_OLD, PERMUTATION,
                                                             SHAP, *SHAPIQ))
             + " |", "|---|---|" + "---:|" * (4 + len(SHAPIQ))]
    for case, table in zip(cases, tables):
        for target_name in (SHAP, KADD):
            if target_name not in table:
                continue
            cells = table[target_name]
            top = max(cells)
            target = cells[top].mae
            if _tiny(target, case):
                lines.append(f"| {case.label} | {target_name.split('.')[-1]}@{top} "
                             f"({_fmt(target)}: float round-off, no target) |"
                             + " |" * (4 + len(SHAPIQ)))
                continue
            row = []
            for m in (OURS_NEW, OURS_OLD, PERMUTATION, SHAP, *SHAPIQ):
                if m not in table:
                    row.append("n/a")
                    continue
                hit = [b for b in sorted(table[m]) if table[m][b].mae <= target]
                row.append(f"{hit[0]}: {_secs(table[m][hit[0]].secs)} s" if hit else "-")
            lines.append(f"| {case.label} | {target_name.split('.')[-1]}@{top} "
                         f"({_fmt(target)}) | " + " | ".join(row) + " |")
    return ["- each cell: the smallest budget at which the method's error is at most the "
            "target's, and its seconds for all rows there (model calls included); - = not "
            "reached within the budgets run", ""] + lines + [""]


def machine() -> str:
    import torch

    cpu = cpu_name()
    return (f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch threads {torch.get_num_threads()}")


def report(args: argparse.Namespace, cases: list[Case], tables: list, minutes: float,
           load: tuple[float, float]) -> str:
    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "?"

    argv = " ".join(shlex.quote(a) for a in sys.argv[1:])
    lines = [
        "## Shapley estimators at equal budget: mlflow-xai vs shap and shapiq", "",
        f"- date: {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; total run time "
        f"{minutes:.1f} min; load average (1 min) at start {load[0]:.2f}, at end {load[1]:.2f}",
        f"- machine: {machine()}",
        f"- versions: shap {ver('shap')}, shapiq {ver('shapiq')}, scikit-learn "
        f"{ver('scikit-learn')}, torch {ver('torch')}, numpy {ver('numpy')}",
        f"- command: `python benchmarks/bench_estimators.py{(' ' + argv) if argv else ''}`",
        f"- {args.rows} explained rows, {args.background} background rows, {args.seeds} "
        f"seed(s) per budget; budget = coalitions per explained row, each evaluated on every "
        "background row (shapiq: budget + 2, its count includes the empty and grand "
        "coalitions); every method evaluates the same game through the real model",
        "- error: mean absolute error against the exact values over rows, features and seeds; "
        "**bold**: the best method at that budget",
        "",
        "### The new default against shapiq, cell by cell", "",
        *comparison(cases, tables),
        "### Time to equal accuracy", "",
        *time_to_accuracy(cases, tables),
        "### Error by budget", "",
    ]
    for case, table in zip(cases, tables):
        lines += error_table(case, table)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    # kernel_shap logs a warning each time it raises a budget under 2 d; the tables mark those
    # cells (†) instead.
    logging.getLogger("mlflow_xai_torch.kernel").setLevel(logging.ERROR)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    cases, tables = [], []
    for name in args.cases:
        t_case = time.perf_counter()
        case = make_case(name, args.rows, args.background, args.seed)
        print(f"{case.label}: model and exact values in {time.perf_counter() - t_case:.1f} s",
              flush=True)
        cases.append(case)
        tables.append(run_case(case, args))
    minutes = (time.perf_counter() - t0) / 60
    text = report(args, cases, tables, minutes, (load0, os.getloadavg()[0]))
    print()
    print(text)
    if not args.no_write:
        replace_section(args.results, START_MARK, END_MARK, text)
        print(f"\nwrote the bench_estimators section of {args.results}")


if __name__ == "__main__":
    main()
