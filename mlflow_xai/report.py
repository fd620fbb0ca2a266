"""``xai/report.html``: one self-contained page (inline images, no network) with the top
features per method, the agreement matrix, every check with its verdict, the policy outcome,
data and model facts, and timings. Every user-controlled string is escaped."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

TOP_K = 10

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;
max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5}.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
.unknown,.skipped{color:#9a6700}.muted{color:#666;font-size:12px}img{max-width:100%}
.badge{display:inline-block;padding:2px 10px;border-radius:10px;color:#fff}
.badge.passed,.badge.ok{background:#1a7f37}.badge.failed{background:#cf222e}
.badge.skipped{background:#9a6700}
"""


def e(value: Any) -> str:
    """Escape anything for HTML text or attribute context."""
    return html.escape(str(value), quote=True)


def write_report(expl: Any, root: Path) -> Path:
    path = Path(root) / "report.html"
    path.write_text(render(expl, Path(root)), encoding="utf-8")
    return path


def render(expl: Any, root: Path) -> str:
    s = expl.summary
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
             f"<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; "
             f"img-src data:; style-src 'unsafe-inline'\">"
             f"<title>mlflow-xai report</title><style>{_STYLE}</style></head><body>",
             f"<h1>Explanation report <span class='badge {e(s['status'])}'>{e(s['status'])}"
             f"</span></h1>",
             _facts(s)]
    if expl.governance is not None:
        parts.append(_governance(expl.governance))
    parts.append(_top_features(expl))
    parts.append(_methods(s))
    if expl.checks:
        parts.append(_checks(expl.checks, root))
    if getattr(expl, "selection", None):
        parts.append(_selection(expl.selection, root))
    parts.append(_plots(expl, root))
    parts.append("<p class='muted'>Written by mlflow-xai "
                 f"{e(s['versions'].get('mlflow-xai'))}; all values computed in this run.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _facts(s: dict) -> str:
    model, data = s["model"], s["data"]
    rows = [
        ["model", e(model.get("uri") or model.get("class") or model.get("kind"))],
        ["model id", e(model.get("model_id") or "-")],
        ["model kind", e(f"{model.get('kind')} ({model.get('class')})")],
        ["explained output", e(s.get("output"))],
        ["rows explained", e(f"{data['rows_explained']} of {data['rows_total']}"
                             + (" (sampled)" if data.get("rows_sampled") else ""))],
        ["features", e(data.get("features", data.get("image_shape")))],
        ["background", e(data.get("background_source"))],
        ["device", e(s.get("device"))],
        ["seed", e(s.get("seed"))],
        ["total time", e(f"{s.get('seconds')} s")],
    ]
    return "<h2>Data and model</h2>" + _table(["fact", "value"], rows)


def _governance(gov: dict) -> str:
    rows = [[e(r["name"]), e(r["kind"]), e(r["figure"]),
             e("-" if r["value"] is None else (f"{r['value']:.4g}"
                                               if isinstance(r["value"], float) else r["value"])),
             f"<span class='{e(r['verdict'])}'>{e(r['verdict'])}</span>", e(r["message"])]
            for r in gov["rules"]]
    return (f"<h2>Policy <span class='badge {e(gov['verdict'])}'>{e(gov['verdict'])}</span>"
            "</h2>" + _table(["rule", "kind", "figure", "value", "verdict", "detail"], rows))


def _top_features(expl: Any) -> str:
    if expl.importance.empty:
        return ""
    ranks = expl.importance
    rows = []
    for method in ranks.columns:
        top = ranks[method].sort_values(ascending=False).head(TOP_K)
        rows.append([e(method), "<ol>" + "".join(
            f"<li>{e(f)} <span class='muted'>{v:.4g}</span></li>" for f, v in top.items())
            + "</ol>"])
    return f"<h2>Top {TOP_K} features per method</h2>" + _table(["method", "features"], rows)


def _methods(s: dict) -> str:
    rows = []
    for name, m in s["methods"].items():
        status = m["status"]
        note = m.get("reason") or m.get("error") or ""
        rows.append([e(name), f"<span class='{e(status)}'>{e(status)}</span>",
                     e(m.get("seconds")), e(m.get("model_evals")),
                     e(m.get("efficiency_max_abs_gap", "")), e(note)])
    for name, c in (s.get("selectors") or {}).items():
        rows.append([e(f"selector: {name}"), f"<span class='{e(c['status'])}'>"
                     f"{e(c['status'])}</span>", e(c.get("seconds")), e(c.get("model_evals")),
                     "", e(c.get("reason") or c.get("error") or "")])
    for name, c in (s.get("checks") or {}).items():
        rows.append([e(f"check: {name}"), f"<span class='{e(c['status'])}'>{e(c['status'])}"
                     "</span>", e(c.get("seconds")), e(c.get("model_evals")), "",
                     e(c.get("reason") or c.get("error") or "")])
    return "<h2>Methods and timings</h2>" + _table(
        ["method", "status", "seconds", "model evaluations", "efficiency gap", "note"], rows)


def _checks(checks: dict, root: Path) -> str:
    parts = ["<h2>Checks</h2>"]
    for name, entry in checks.items():
        parts.append(f"<h3>{e(name)} <span class='{e(entry['status'])}'>{e(entry['status'])}"
                     "</span></h3>")
        if entry["status"] != "ok":
            parts.append(f"<p class='muted'>{e(entry.get('reason') or entry.get('error'))}</p>")
            continue
        verdicts = entry.get("verdicts", {})
        thresholds = entry.get("thresholds", {})
        rows = []
        for figure, value in entry["figures"].items():
            verdict = verdicts.get(figure, "")
            bound = thresholds.get(figure, {})
            rows.append([e(figure), e("-" if value is None else f"{value:.4g}"),
                         e(json.dumps(bound) if bound else ""),
                         f"<span class='{e(verdict)}'>{e(verdict)}</span>"])
        parts.append(_table(["figure", "value", "threshold", "verdict"], rows))
        matrix = (entry.get("details") or {}).get("rank_correlation_matrix")
        if matrix:
            methods = list(matrix)
            parts.append("<p>Agreement matrix (Spearman correlation of global importance)</p>")
            parts.append(_table([""] + methods, [[e(a)] + [e(f"{matrix[a][b]:.2f}")
                                                          for b in methods] for a in methods]))
        parts.append(_img(root / "plots" / f"check_{name}.png", f"{name} plot"))
    return "\n".join(parts)


def _selection(selection: dict, root: Path) -> str:
    parts = ["<h2>Feature selection</h2>"]
    rows = []
    for name, sel in selection.items():
        stab, retrain = sel.stability, sel.retrain

        def fig(d: dict, key: str) -> str:
            value = d.get(key)
            return "-" if value is None else f"{value:.3f}"

        rows.append([e(name), e(f"{len(sel.selected)} of {len(sel.ranking)}"),
                     e(", ".join(map(str, sel.selected[:TOP_K]))
                       + (" ..." if len(sel.selected) > TOP_K else "")),
                     e(fig(stab, "kuncheva")), e(fig(stab, "jaccard")),
                     e(fig(stab, "score_spearman")),
                     e(fig(retrain, "gain") if retrain.get("status") == "ok"
                       else retrain.get("reason", "-"))])
    parts.append(_table(["selector", "selected", f"first {TOP_K} selected", "Kuncheva",
                         "Jaccard", "score Spearman", "retrain gain over random"], rows))
    for name in selection:
        parts.append(_img(root / "plots" / f"selection_{name}.png", f"{name} selection"))
    return "\n".join(parts)


def _plots(expl: Any, root: Path) -> str:
    parts = ["<h2>Plots</h2>"]
    for method in expl.methods:
        for suffix in ("bar", "beeswarm", "overlay"):
            parts.append(_img(root / "plots" / f"{method}_{suffix}.png", f"{method} {suffix}"))
    return "\n".join(parts)


def _img(path: Path, alt: str) -> str:
    if not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<p><img alt='{e(alt)}' src='data:image/png;base64,{data}'></p>"
