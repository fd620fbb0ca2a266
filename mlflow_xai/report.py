"""``xai/report.html``: one self-contained page (inline images, no network) with a headline
verdict, the plan, the top features per method (grouped by unit; with each interaction method's
strongest pairs in its unit's section), the agreement matrix, every
check with its verdict, the policy outcome, data and model facts, and timings. Every
user-controlled string is escaped; every number is shown to 3 significant digits (:func:`fmt`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow_xai.end_task_report import render_end_task
from mlflow_xai.text import e, fmt
from mlflow_xai.text import table as _table
from mlflow_xai.units import group_by_unit

TOP_K = 10
OK, WARNINGS, FAILED = "ok", "ok with warnings", "failed"
#: A reason line names at most this many items, then "and N more" (it must stay one line).
_MAX_NAMED = 3

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;
max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
h3{font-size:14px;margin:14px 0 4px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
.unknown,.skipped{color:#9a6700}.muted{color:#666;font-size:12px}img{max-width:100%}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff}
.badge.passed,.badge.ok{background:#1a7f37}.badge.failed{background:#cf222e}
.badge.skipped,.badge.warnings{background:#9a6700}
.reason{margin-top:-8px}.not-applicable{margin:8px 0;font-size:13px;color:#555}
"""
# No network: images are inline and the page may load nothing else.
_HEAD = ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
         "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
         "img-src data:; style-src 'unsafe-inline'\">"
         f"<title>mlflow-xai report</title><style>{_STYLE}</style></head><body>")
#: The headline's CSS class (a class name cannot hold spaces).
_BADGE = {OK: "ok", WARNINGS: "warnings", FAILED: "failed"}




def headline(summary: Mapping[str, Any], checks: Mapping[str, Any] | None = None) -> str:
    """The run's outcome in one word: 'failed', 'ok with warnings' or 'ok' (see
    :func:`assess`). ``checks`` are the full check entries (with verdicts); without them only
    the check statuses in ``summary['checks']`` count."""
    return assess(summary, checks)[0]


def assess(summary: Mapping[str, Any], checks: Mapping[str, Any] | None = None
           ) -> tuple[str, list[str]]:
    """(headline, reasons). 'failed' when an explainer failed, nothing was explained, or a
    check's verdict is 'fail'; 'ok with warnings' when a check of severity 'warning' fails,
    a check or selector could not run, a verdict is 'unknown', or the time budget cut planned
    work; else 'ok'."""
    checks = (summary.get("checks") or {}) if checks is None else checks
    failures = _failures(summary, checks)
    if failures:
        return FAILED, failures
    warnings = _warnings(summary, checks)
    return (WARNINGS, warnings) if warnings else (OK, [])


def _failures(summary: Mapping[str, Any], checks: Mapping[str, Any]) -> list[str]:
    methods = summary.get("methods") or {}
    reasons = []
    broken = [m for m, entry in methods.items() if entry.get("status") == "failed"]
    if broken:
        reasons.append(f"explainer failed: {_names(broken)}")
    if not any(entry.get("status") == "ok" for entry in methods.values()):
        reasons.append("nothing was explained: no explainer produced a result")
    failing = _verdicts(checks, "fail")
    if failing:
        reasons.append(f"check verdict 'fail': {_names(failing)}")
    if not reasons and summary.get("status") == "failed":
        reasons.append("the run's status is 'failed'")
    return reasons


def _warnings(summary: Mapping[str, Any], checks: Mapping[str, Any]) -> list[str]:
    reasons = []
    broken = [n for n, entry in checks.items() if entry.get("status") == "failed"]
    if broken:
        reasons.append(f"check could not run: {_names(broken)}")
    cautions = _verdicts(checks, "fail", severity="warning")
    if cautions:
        reasons.append(f"check verdict 'fail' (a warning): {_names(cautions)}")
    unknown = (_verdicts(checks, "unknown")
               + _verdicts(checks, "unknown", severity="warning"))
    if unknown:
        reasons.append(f"verdict unknown (no finite figure): {_names(unknown)}")
    selectors = [n for n, entry in (summary.get("selectors") or {}).items()
                 if entry.get("status") == "failed"]
    if selectors:
        reasons.append(f"selector failed: {_names(selectors)}")
    plan = summary.get("plan") or {}
    if plan.get("cut"):
        reasons.append("the time budget cut planned work"
                       + (f" ({plan['cut']})" if isinstance(plan["cut"], str) else ""))
    return reasons


def _verdicts(checks: Mapping[str, Any], verdict: str, *, severity: str = "error"
              ) -> list[str]:
    """'check (figure)' for every figure whose verdict is ``verdict``, among the checks of
    ``severity`` (``error``, the default of a check, or ``warning``: a failing figure that
    questions the explanation's precision rather than its correctness)."""
    return [f"{name} ({figure})" for name, entry in checks.items()
            if entry.get("severity", "error") == severity
            for figure, v in (entry.get("verdicts") or {}).items() if v == verdict]


def _names(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_NAMED])
    return shown + (f" and {len(items) - _MAX_NAMED} more" if len(items) > _MAX_NAMED else "")


def write_report(expl: Any, root: Path) -> Path:
    path = Path(root) / "report.html"
    path.write_text(render(expl, Path(root)), encoding="utf-8")
    return path


def render(expl: Any, root: Path) -> str:
    s = expl.summary
    parts = [_HEAD, _header(s, expl.checks or None),
             _facts(s, expl.primary_method)]
    if s.get("plan"):
        parts.append(_plan(s["plan"]))
    if expl.governance is not None:
        parts.append(_governance(expl.governance))
    parts.append(_top_features(expl))
    parts.append(_methods(s, expl))
    if any(entry.get("status") != "skipped" for entry in expl.checks.values()):
        parts.append(_checks(expl.checks, root))
    if getattr(expl, "selection", None):
        parts.append(_selection(expl.selection, root))
    parts.append(_plots(expl, root))
    parts.append("<p class='muted'>Written by mlflow-xai "
                 f"{e((s.get('versions') or {}).get('mlflow-xai'))}; all values computed in "
                 "this run.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _header(s: Mapping[str, Any], checks: Mapping[str, Any] | None) -> str:
    """The headline badge (``summary['headline']`` when the pipeline stored one), and why
    when it is not 'ok'."""
    computed, reasons = assess(s, checks)
    verdict = s.get("headline") or computed
    badge = _BADGE.get(verdict, "skipped")
    line = f"<h1>Explanation report <span class='badge {badge}'>{e(verdict)}</span></h1>"
    if verdict == OK:
        return line
    # A stored headline may be stricter than what this page can see; never show no reason.
    why = "; ".join(reasons) if reasons else "see the sections below"
    return line + f"<p class='reason {badge}'>{e(why)}</p>"


def _facts(s: Mapping[str, Any], primary: str | None) -> str:
    model, data = s["model"], s["data"]
    rows = [
        ["model", e(model.get("uri") or model.get("class") or model.get("kind"))],
        ["model id", e(model.get("model_id") or "-")],
        ["model kind", e(f"{model.get('kind')} ({model.get('class')})")],
        ["explained output", e(s.get("output"))],
        ["primary method", e(primary or "-")],
        ["explainers' status", e(s.get("status"))],
        ["rows explained", e(f"{fmt(data.get('rows_explained'))} of "
                             f"{fmt(data.get('rows_total'))}"
                             + (" (sampled)" if data.get("rows_sampled") else ""))],
        ["features", e(data.get("features", data.get("image_shape")))],
        ["background", e(data.get("background_source"))],
        ["device", e(s.get("device"))],
        ["seed", e(s.get("seed"))],
        ["total time", e(f"{fmt(s.get('seconds'))} s")],
    ]
    return "<h2>Data and model</h2>" + _table(["fact", "value"], rows)


def _plan(plan: Mapping[str, Any]) -> str:
    """What the planner chose within the time budget, what it left out, and whether the
    budget cut planned work (``summary['plan']``)."""
    budget = plan.get("budget_s")
    line = (f"Time budget {fmt(budget)} s, spent {fmt(plan.get('spent_s'))} s."
            if budget is not None else f"No time budget; spent {fmt(plan.get('spent_s'))} s.")
    if plan.get("rows") is not None:
        line += (f" Rows explained: {fmt(plan['rows'])} of "
                 f"{fmt(plan.get('rows_available'))} available.")
    parts = ["<h2>Plan</h2>", f"<p>{e(line)}</p>"]
    if plan.get("cut"):
        detail = f": {plan['cut']}" if isinstance(plan["cut"], str) else "."
        parts.append(f"<p class='fail'>The time budget cut planned work{e(detail)}</p>")
    chosen = [[e(c.get("method")), e(_params(c.get("params") or {})), e(c.get("why", ""))]
              for c in plan.get("chosen") or []]
    if chosen:
        parts.append(_table(["chosen method", "parameters", "why"], chosen))
    left = [[e(c.get("method")), e(c.get("why", ""))] for c in plan.get("left_out") or []]
    if left:
        parts.append(_table(["left out", "why"], left))
    return "\n".join(parts)


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in params.items()) or "defaults"


def _governance(gov: dict) -> str:
    rows = [[e(r["name"]), e(r["kind"]), e(r["figure"]), e(fmt(r["value"])),
             f"<span class='{e(r['verdict'])}'>{e(r['verdict'])}</span>", e(r["message"])]
            for r in gov["rules"]]
    return (f"<h2>Policy <span class='badge {e(gov['verdict'])}'>{e(gov['verdict'])}</span>"
            "</h2>" + _table(["rule", "kind", "figure", "value", "verdict", "detail"], rows))


def _top_features(expl: Any) -> str:
    """One table per unit, methods side by side within it (primary first): numbers in
    different units cannot be compared, so no table puts them in one ranking."""
    if expl.importance.empty:
        return ""
    primary = expl.primary_method
    groups = [(unit, [m for m in methods if m in expl.importance.columns])
              for unit, methods in expl.unit_groups()]
    groups = [(unit, methods) for unit, methods in groups if methods]
    parts = [f"<h2>Top {TOP_K} features per method</h2>"]
    if len(groups) > 1:
        parts.append("<p class='muted'>Grouped by unit: importances in different units are "
                     "not comparable, so they are never ranked together.</p>")
    for unit, methods in groups:
        parts.append(f"<h3>Unit: {e(unit)}</h3>")
        parts.append(_ranking(expl.importance[methods], primary, _importance_errors(expl)))
        # Interactions are in their method's unit: they stand in that unit's section.
        parts.extend(_interactions(expl, method, unit) for method in methods
                     if method in (getattr(expl, "interactions", None) or {}))
    return "\n".join(parts)


def _interactions(expl: Any, method: str, unit: str) -> str:
    """The strongest pairs of one interaction method: pair, mean |value|, mean value and the
    share of rows where the pair is among the row's 3 strongest."""
    top = expl.top_interactions(method, TOP_K)
    if top.empty:
        return ""
    index = expl.interaction_index(method)
    rows = [[f"{e(r.feature_a)} × {e(r.feature_b)}", e(fmt(r.mean_abs)), e(fmt(r.mean_value)),
             e(f"{fmt(100 * r.top3_share)} %")] for r in top.itertuples()]
    head = (f"<p>Strongest interactions: {e(method)}"
            + (f" ({e(index)})" if index else "") + "</p>")
    note = (f"<p class='muted'>Mean over the {fmt(len(expl.interactions[method]))} explained "
            f"rows, in {e(unit)}; main effects (the diagonal) are not pairs. Heat map: "
            f"plots/{e(method)}_interactions.png.</p>")
    return head + _table(["pair", "mean |value|", "mean value",
                          "rows where in the row's top 3"], rows) + note


def _importance_errors(expl: Any) -> dict[str, Any]:
    from mlflow_xai.standard_errors import importance_errors

    try:
        return importance_errors(expl)
    except Exception:  # a report is never lost over its error bars
        return {}


def _ranking(importance: Any, primary: str | None, errors: Mapping[str, Any] | None = None
             ) -> str:
    """Rank x method: each cell the feature at that rank and its importance (± its 95 %
    interval, 1.96 standard errors, for sampled estimators)."""
    errors = errors or {}
    tops = {m: importance[m].sort_values(ascending=False).head(TOP_K) for m in importance}
    headers = ["rank"] + [f"{m} (primary)" if m == primary else m for m in importance]
    rows = []
    for rank in range(max(len(t) for t in tops.values())):
        row = [str(rank + 1)]
        for method, top in tops.items():
            if rank < len(top):
                feature, value = top.index[rank], top.iloc[rank]
                shown = fmt(value)
                if method in errors and feature in errors[method].index:
                    shown += f" ± {fmt(1.96 * float(errors[method][feature]))}"
                row.append(f"{e(feature)} <span class='muted'>{e(shown)}</span>")
            else:
                row.append("")
        rows.append(row)
    return _table(headers, rows)


def _methods(s: Mapping[str, Any], expl: Any) -> str:
    """Every method that ran or failed (primary first, then by unit); the ones that did not
    apply are folded into one line below the table."""
    entries = s.get("methods") or {}
    units = expl.units
    ran = [m for m, entry in entries.items() if entry.get("status") == "ok"]
    order = [m for _, group in group_by_unit(ran, units, expl.primary_method) for m in group]
    order += [m for m, entry in entries.items() if entry.get("status") not in ("ok", "skipped")]
    rows = [_method_row(name, entries[name], units.get(name) if name in ran else None)
            for name in order]
    for kind, key in (("selector", "selectors"), ("check", "checks")):
        for name, entry in (s.get(key) or {}).items():
            if entry.get("status") != "skipped":
                rows.append(_method_row(f"{kind}: {name}", entry, None))
    return ("<h2>Methods and timings</h2>" + _table(
        ["method", "unit", "status", "seconds", "model evaluations", "efficiency gap", "note"],
        rows) + _not_applicable(s))


def _method_row(label: str, entry: Mapping[str, Any], unit: str | None) -> list[str]:
    status = entry.get("status", "")
    gap = entry.get("efficiency_max_abs_gap")
    return [e(label), e(unit or "-"), f"<span class='{e(status)}'>{e(status)}</span>",
            e(fmt(entry.get("seconds"))), e(fmt(entry.get("model_evals"))),
            e("" if gap is None else fmt(gap)),
            e(entry.get("reason") or entry.get("error") or "")]


def _not_applicable(s: Mapping[str, Any]) -> str:
    """One element for every explainer, selector and check that did not apply: their names on
    one line, the reasons inside a <details> (a long list of skips must not bury the rest)."""
    skipped = []
    for prefix, key in (("", "methods"), ("selector: ", "selectors"), ("check: ", "checks")):
        for name, entry in (s.get(key) or {}).items():
            if entry.get("status") == "skipped":
                skipped.append((prefix + name, _short_reason(name, entry.get("reason"))))
    if not skipped:
        return ""
    items = "".join(f"<li><b>{e(label)}</b>: {e(reason)}</li>" for label, reason in skipped)
    names = ", ".join(label for label, _ in skipped)
    return (f"<details class='not-applicable'><summary>Not applicable: {e(names)}</summary>"
            f"<ul>{items}</ul></details>")


def _short_reason(name: str, reason: str | None) -> str:
    """'tree_shap needs a tree model' -> 'needs a tree model': the name is already shown."""
    reason = reason or "not applicable to this model or data"
    return reason[len(name) + 1:] if reason.startswith(f"{name} ") else reason


def _checks(checks: dict, root: Path) -> str:
    parts = ["<h2>Checks</h2>"]
    for name, entry in checks.items():
        if entry["status"] == "skipped":  # listed under "Not applicable"
            continue
        parts.append(f"<h3>{e(name)} <span class='{e(entry['status'])}'>{e(entry['status'])}"
                     "</span></h3>")
        if entry["status"] != "ok":
            parts.append(f"<p class='muted'>{e(entry.get('reason') or entry.get('error'))}</p>")
            continue
        verdicts = entry.get("verdicts", {})
        thresholds = entry.get("thresholds", {})
        section = render_end_task(name, entry)
        if section is not None:
            # A reviewer's table; figures with a verdict still get their rows below.
            parts.append(section)
        rows = []
        for figure, value in entry["figures"].items():
            if section is not None and figure not in verdicts:
                continue
            verdict = verdicts.get(figure, "")
            rows.append([e(figure), e(fmt(value)), e(_bound(thresholds.get(figure) or {})),
                         f"<span class='{e(verdict)}'>{e(verdict)}</span>"])
        if rows:
            parts.append(_table(["figure", "value", "threshold", "verdict"], rows))
        matrix = (entry.get("details") or {}).get("rank_correlation_matrix")
        if matrix:
            methods = list(matrix)
            # Rank correlations compare orderings only, so they are unit-free: this is the
            # one place where methods of different units may stand side by side.
            parts.append("<p>Agreement matrix (Spearman correlation of global importance "
                         "rankings; unit-free)</p>")
            parts.append(_table([""] + methods, [[e(a)] + [e(fmt(matrix[a][b]))
                                                          for b in methods] for a in methods]))
        parts.append(_img(root / "plots" / f"check_{name}.png", f"{name} plot"))
    return "\n".join(parts)


def _bound(bound: Mapping[str, Any]) -> str:
    """{"min": 0.5, "max": 1e-06} -> '≥ 0.5, ≤ 1e-06'."""
    parts = [f"≥ {fmt(bound['min'])}" if "min" in bound else "",
             f"≤ {fmt(bound['max'])}" if "max" in bound else ""]
    return ", ".join(p for p in parts if p)


def _selection(selection: dict, root: Path) -> str:
    parts = ["<h2>Feature selection</h2>"]
    rows = []
    for name, sel in selection.items():
        stab, retrain = sel.stability, sel.retrain
        rows.append([e(name), e(f"{len(sel.selected)} of {len(sel.ranking)}"),
                     e(", ".join(map(str, sel.selected[:TOP_K]))
                       + (" ..." if len(sel.selected) > TOP_K else "")),
                     e(fmt(stab.get("kuncheva"))), e(fmt(stab.get("jaccard"))),
                     e(fmt(stab.get("score_spearman"))),
                     e(fmt(retrain.get("gain")) if retrain.get("status") == "ok"
                       else retrain.get("reason", "-"))])
    parts.append(_table(["selector", "selected", f"first {TOP_K} selected", "Kuncheva",
                         "Jaccard", "score Spearman", "retrain gain over random"], rows))
    for name in selection:
        parts.append(_img(root / "plots" / f"selection_{name}.png", f"{name} selection"))
    return "\n".join(parts)


def _plots(expl: Any, root: Path) -> str:
    """The plots of each method, grouped by unit like the tables (primary method first)."""
    parts = ["<h2>Plots</h2>"]
    for unit, methods in expl.unit_groups():
        images = [_img(root / "plots" / f"{method}_{suffix}.png", f"{method} {suffix}")
                  for method in methods
                  for suffix in ("bar", "beeswarm", "waterfall", "overlay", "interactions")]
        if any(images):
            parts.append(f"<h3>Unit: {e(unit)}</h3>")
            parts.extend(i for i in images if i)
    return "\n".join(parts)


def _img(path: Path, alt: str) -> str:
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<p><img alt='{e(alt)}' src='data:image/png;base64,{data}'></p>"
