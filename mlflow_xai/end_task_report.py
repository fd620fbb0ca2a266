"""The report's sections for the end-task checks (importance_test, flip_test, responsiveness,
rashomon): tables a reviewer reads, built from each check's ``details`` (the figures stay in
``stability.json``). Each renderer tolerates missing keys: the report never fails on them."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mlflow_xai.text import e, fmt
from mlflow_xai.text import table as _table

MAX_ROWS = 30


def _more(n: int) -> str:
    return f"<p class='muted'>... and {n - MAX_ROWS} more in stability.json</p>" \
        if n > MAX_ROWS else ""


def _importance_test(d: Mapping[str, Any]) -> str:
    tests = [t for t in d.get("tests") or [] if t in ("marginal", "conditional")]
    features = d.get("features") or {}
    alpha = d.get("alpha")
    lines = [(f"<p>H0 per feature: <b>marginal</b> — the output is independent of the feature; "
             f"<b>conditional</b> — independent given the other features (sampler: "
             f"{e(d.get('sampler'))}). Rejected at alpha = {e(fmt(alpha))}; "
             f"{e(d.get('method'))} test, {e(d.get('rows_available'))} rows available.</p>")]
    rows = []
    for feature, by_test in list(features.items())[:MAX_ROWS]:
        cells = [e(feature)]
        for test in tests:
            r = (by_test or {}).get(test) or {}
            mark = "<span class='fail'>significant</span>" if r.get("rejected") else \
                "<span class='muted'>not significant</span>"
            early = " (stopped early)" if r.get("stopped_early") else ""
            if r.get("reliable") is False:  # its sampler failed its check: not a result
                mark += " <span class='fail'>sampler does not fit the data</span>"
            cells.append(f"p = {e(fmt(r.get('p_value')))} {mark}<br><span class='muted'>"
                         f"{e(r.get('rows_used'))} rows{e(early)}</span>")
        rows.append(cells)
    return "\n".join(lines + [_table(["feature"] + tests, rows), _more(len(features))])


def _flip_test(d: Mapping[str, Any]) -> str:
    features = d.get("features") or {}
    level = d.get("confidence")
    rows = [[e(f), e(fmt(r.get("flip_rate"))),
             e(f"[{fmt(r.get('ci_low'))}, {fmt(r.get('ci_high'))}]"),
             e(f"{r.get('flips')} of {r.get('rows')}"), e(r.get("kind"))]
            for f, r in list(features.items())[:MAX_ROWS]]
    ci = f"{100 * level:g}% interval" if isinstance(level, (int, float)) else "interval"
    return (f"<p>Share of rows whose decision ({e(d.get('decision'))}) changes when the "
            "feature is set to each of its other values: a direct query of the model, not an "
            "attribution.</p>" + _table(["feature", "flip rate", ci, "rows flipped", "changed by"],
                                        rows) + _more(len(features)))


def _responsiveness(d: Mapping[str, Any]) -> str:
    parts = [(f"<p>Target decision {e(d.get('target'))} ({e(d.get('decision'))}); "
             f"{e(d.get('adverse_rows'))} of {e(d.get('rows'))} rows have another decision; "
             f"<b>{e(d.get('fixed_rows'))} fixed</b> (no actionable change reaches the target): "
             f"fixed rate {e(fmt(d.get('fixed_rate')))}. Immutable: "
             f"{e(', '.join(map(str, d.get('immutable') or [])) or 'none')}.</p>")]
    features = d.get("features") or {}
    ranked = sorted(features.items(), key=lambda fr: -(fr[1] or {}).get(
        "mean_responsiveness", 0.0) if isinstance((fr[1] or {}).get("mean_responsiveness"),
                                                   (int, float)) else 0.0)
    rows = [[e(f), "yes" if r.get("actionable") else "<b>no</b>",
             e(fmt(r.get("mean_responsiveness"))), e(fmt(r.get("responsive_share")))]
            for f, r in ranked[:MAX_ROWS]]
    parts.append(_table(["feature", "actionable", "mean responsiveness R",
                         "share of adverse rows with R > 0"], rows) + _more(len(features)))
    methods = d.get("methods") or {}
    if methods:
        k = d.get("top_k")
        rows = []
        for method, m in methods.items():
            shares = m.get("actionable_top_k_share") or {}
            worst = sorted(((f, n) for f, n in (m.get("non_actionable_reasons") or {}).items()
                            if isinstance(n, int) and n > 0), key=lambda fn: -fn[1])[:3]
            rows.append([e(method)] + [e(fmt(shares.get(str(i)))) for i in range(1, (k or 0) + 1)]
                        + [e(", ".join(f"{f} ({n})" for f, n in worst) or "none")])
        parts.append("<p>Reasons given to adverse rows: share whose top-k features (by "
                     "|attribution|) are all actionable.</p>")
        parts.append(_table(["method"] + [f"top {i}" for i in range(1, (k or 0) + 1)]
                            + ["non-actionable reasons (rows)"], rows))
    return "\n".join(parts)


def _rashomon(d: Mapping[str, Any]) -> str:
    eps = (f"loss <= best + {fmt(d['epsilon_absolute'])}" if d.get("epsilon_absolute")
           is not None else f"loss <= best x (1 + {fmt(d.get('epsilon'))})")
    parts = [(f"<p>{e(d.get('models_kept'))} of {e(d.get('models_fitted'))} refits kept "
             f"({e(eps)}; best {e(d.get('loss'))} {e(fmt(d.get('best_loss')))} on "
             f"{e(d.get('validation_rows'))} validation rows). Importance: "
             f"{e(d.get('importance'))}.</p>")]
    features = d.get("features") or {}
    ranked = sorted(features.items(), key=lambda fr: (fr[1] or {}).get("rank_min", 1e9))
    rows = [[e(f), e(f"{fmt(r.get('min'))} – {fmt(r.get('max'))}"), e(fmt(r.get("mean"))),
             e(f"{r.get('rank_min')} – {r.get('rank_max')}"), e(r.get("rank_spread")),
             e(fmt(r.get("p_top_k")))] for f, r in ranked[:MAX_ROWS]]
    parts.append(_table(["feature", "importance range", "mean", "rank range", "rank spread",
                         f"P(in top {d.get('top_k')})"], rows) + _more(len(features)))
    pairs = d.get("pairs") or []
    if pairs:
        parts.append("<p>Interaction (joint minus individual model reliance) of the top "
                     "features' pairs across the kept refits:</p>")
        parts.append(_table(["pair", "range", "mean"], [
            [e(" × ".join(map(str, p.get("features") or []))),
             e(f"{fmt(p.get('min'))} – {fmt(p.get('max'))}"), e(fmt(p.get("mean")))]
            for p in pairs[:MAX_ROWS]]))
    swaps = [s for s in d.get("swaps") or [] if s.get("share")]
    if swaps:
        parts.append("<p>Order swaps: " + e("; ".join(
            f"{' / '.join(map(str, s['features']))} in {fmt(100 * s['share'])}% of refits"
            for s in swaps[:10])) + ".</p>")
    return "\n".join(parts)


RENDERERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "importance_test": _importance_test, "flip_test": _flip_test,
    "responsiveness": _responsiveness, "rashomon": _rashomon,
}


def render_end_task(name: str, entry: Mapping[str, Any]) -> str | None:
    """The section body of an end-task check, or None for any other check."""
    renderer = RENDERERS.get(name)
    details = entry.get("details")
    if renderer is None or not isinstance(details, Mapping):
        return None
    try:
        return renderer(details)
    except (TypeError, ValueError, AttributeError, KeyError):  # malformed: the figures table
        return None
