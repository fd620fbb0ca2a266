"""The report and its plots: a headline that tells the truth, units never mixed, skipped methods
folded into one line, numbers to 3 significant digits, waterfalls that add up, image overlays
beside their image. Most tests build an :class:`Explanations` by hand (no model run)."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import pytest

from mlflow_xai.artifacts import write_artifacts
from mlflow_xai.explanations import Explanations
from mlflow_xai.report import FAILED, OK, WARNINGS, assess, fmt, headline, render

FEATURES = ["age", "income", "tenure", "score", "visits", "region_code", "balance", "calls",
            "clicks", "days", "logins", "tickets"]
N_ROWS = 30
BASE = 0.4


def _checks(verdict: str = "pass") -> dict:
    """Full check entries as the pipeline keeps them on ``Explanations.checks``."""
    return {
        "completeness": {"status": "ok", "figures": {"exact_shap/mean_relative_gap":
                                                     3.1496073110703904e-16},
                         "thresholds": {"exact_shap/mean_relative_gap": {"max": 1e-06}},
                         "verdicts": {"exact_shap/mean_relative_gap": "pass"}, "details": {},
                         "seconds": 0.00012345, "model_evals": 0},
        "agreement": {"status": "ok",
                      "figures": {"exact_shap__lime/rank_correlation": 0.8999999999999998},
                      "thresholds": {"exact_shap__lime/rank_correlation": {"min": 0.5}},
                      "verdicts": {"exact_shap__lime/rank_correlation": verdict},
                      "details": {"rank_correlation_matrix": {
                          "exact_shap": {"exact_shap": 1.0, "lime": 0.8999999999999998},
                          "lime": {"exact_shap": 0.8999999999999998, "lime": 1.0}}},
                      "seconds": 0.0016789, "model_evals": 0},
        "model_randomization": {"status": "skipped", "reason": "model_randomization needs a "
                                "torch model", "seconds": 0.0, "model_evals": 0},
    }


def _summary(**extra) -> dict:
    methods = {
        "exact_shap": {"status": "ok", "output_space": "model output", "unit": "probability",
                       "shapley": True, "local": True, "seconds": 1.23456789,
                       "model_evals": 96130, "efficiency_max_abs_gap": 3.1496073110703904e-16},
        "permutation_importance": {"status": "ok", "output_space": "squared-error increase",
                                   "shapley": False, "local": False, "seconds": 0.0051234,
                                   "model_evals": 780},  # no unit: derived from output_space
        "lime": {"status": "ok", "output_space": "surrogate weights", "unit": "surrogate weight",
                 "shapley": False, "local": True, "seconds": 0.104512, "model_evals": 1029},
        "tree_shap": {"status": "skipped", "reason": "tree_shap needs a tree model (scikit-learn"
                      " trees, XGBoost or LightGBM)", "seconds": 0.0035, "model_evals": 0},
        "gradient_shap": {"status": "skipped", "reason": "gradient_shap needs a torch model",
                          "seconds": 0.0, "model_evals": 0},
    }
    summary = {
        "status": "ok", "primary_method": "exact_shap", "versions": {"mlflow-xai": "0.1.0"},
        "model": {"kind": "sklearn", "class": "LogisticRegression", "classifier": True},
        "device": "cpu", "output": "output 1 (class 1)", "seed": 0,
        "data": {"rows_total": 900, "rows_explained": N_ROWS, "rows_sampled": True,
                 "features": len(FEATURES), "feature_names": FEATURES,
                 "background_source": "100 rows sampled from data (seed 0)"},
        "methods": methods, "seconds": 12.3456789,
        "checks": {n: {k: c[k] for k in ("status", "seconds", "model_evals")}
                   for n, c in _checks().items()},
    }
    summary.update(extra)
    return summary


def _explanations(summary: dict | None = None, checks: dict | None = None) -> Explanations:
    rng = np.random.default_rng(0)
    index = pd.RangeIndex(100, 100 + N_ROWS)
    data = pd.DataFrame(rng.normal(size=(N_ROWS, len(FEATURES))) * 7.123456, index=index,
                        columns=FEATURES)
    data["region_code"] = rng.choice(["north", "south"], N_ROWS)
    weights = np.linspace(0.3, 0.001, len(FEATURES))
    shap = pd.DataFrame(rng.normal(size=(N_ROWS, len(FEATURES))) * weights, index=index,
                        columns=FEATURES)
    lime = pd.DataFrame(rng.normal(size=(N_ROWS, len(FEATURES))) * weights[::-1], index=index,
                        columns=FEATURES)
    importance = pd.DataFrame({"exact_shap": shap.abs().mean(),
                               "permutation_importance": weights * 0.731234567,
                               "lime": lime.abs().mean()},
                              index=pd.Index(FEATURES, name="feature"))
    return Explanations(
        attributions={"exact_shap": shap, "lime": lime},
        base_values={"exact_shap": pd.Series(BASE, index=index, name="base_value"),
                     "lime": pd.Series(0.1, index=index, name="base_value")},
        importance=importance, summary=summary or _summary(), data=data,
        checks=_checks() if checks is None else checks)


def _visible_text(page: str) -> str:
    """What a reader sees: no style sheet, no inline image data, no tags."""
    page = re.sub(r"<style>.*?</style>", " ", page, flags=re.DOTALL)
    page = re.sub(r"src='data:[^']*'", " ", page)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def _significant_digits(number: str) -> int:
    mantissa = re.split(r"[eE]", number)[0].lstrip("+-")
    digits = mantissa.replace(".", "").lstrip("0")
    if "." not in mantissa:
        digits = digits.rstrip("0")  # "12300": trailing zeros of an integer are not significant
    return len(digits)


# -- fmt --------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, shown", [
    (3.1496073110703904e-16, "3.15e-16"), (0.8999999999999998, "0.9"), (12.3456, "12.3"),
    (0.0012345, "0.00123"), (1234.56, "1230"), (123456.0, "1.23e+05"), (1.0, "1"), (0.0, "0"),
    (-0.25678, "-0.257"), (96130, "96130"), (np.float32(0.123456), "0.123"),
    (np.int64(7), "7"), (None, "-"), (float("nan"), "nan"), ("text", "text")])
def test_fmt_shows_three_significant_digits(value, shown):
    assert fmt(value) == shown


# -- headline ---------------------------------------------------------------------------------

def test_headline_fails_on_a_failing_verdict_although_the_status_is_ok():
    summary = _summary()
    assert summary["status"] == "ok"
    assert headline(summary, _checks("fail")) == FAILED
    assert "agreement (exact_shap__lime/rank_correlation)" in assess(summary, _checks("fail"))[1][0]
    assert headline(summary, _checks("pass")) == OK


def test_headline_warns_on_an_unknown_verdict_a_broken_check_or_a_cut_plan():
    assert headline(_summary(), _checks("unknown")) == WARNINGS
    broken = {**_checks(), "infidelity": {"status": "failed", "error": "ValueError: boom"}}
    assert headline(_summary(), broken) == WARNINGS
    assert headline(_summary(plan={"budget_s": 30.0, "cut": True}), _checks()) == WARNINGS
    assert headline(_summary(plan={"budget_s": 30.0, "cut": False}), _checks()) == OK


def test_a_failing_check_of_warning_severity_only_warns():
    checks = {"rank_uncertainty": {"status": "ok", "severity": "warning",
                                   "figures": {"kernel_shap/unstable_top_k_pairs": 2.0},
                                   "verdicts": {"kernel_shap/unstable_top_k_pairs": "fail"}}}
    verdict, reasons = assess(_summary(), checks)
    assert verdict == WARNINGS
    assert "rank_uncertainty (kernel_shap/unstable_top_k_pairs)" in reasons[0]
    assert headline(_summary(), {**checks, **_checks("fail")}) == FAILED


def test_headline_fails_when_an_explainer_failed_or_nothing_was_explained():
    summary = _summary()
    summary["methods"]["lime"] = {"status": "failed", "error": "RuntimeError: x"}
    assert headline(summary, _checks()) == FAILED
    nothing = _summary()
    nothing["methods"] = {"tree_shap": nothing["methods"]["tree_shap"]}
    verdict, reasons = assess(nothing, {})
    assert verdict == FAILED and "nothing was explained" in reasons[0]
    # A failing verdict outranks a warning.
    assert headline(_summary(plan={"cut": True}), _checks("fail")) == FAILED


def test_report_header_shows_the_headline_and_why():
    page = render(_explanations(checks=_checks("fail")), root=_no_plots())
    assert "<span class='badge failed'>failed</span></h1>" in page
    reason = re.search(r"<p class='reason failed'>(.*?)</p>", page).group(1)
    assert "check verdict" in reason and "exact_shap__lime/rank_correlation" in reason
    ok = render(_explanations(), root=_no_plots())
    assert "<span class='badge ok'>ok</span></h1>" in ok and "class='reason" not in ok
    # A headline the pipeline stored wins.
    stored = render(_explanations(_summary(headline="ok with warnings")), root=_no_plots())
    assert "<span class='badge warnings'>ok with warnings</span>" in stored


def _no_plots():
    from pathlib import Path

    return Path("/nonexistent-mlflow-xai-plots")


# -- report body ------------------------------------------------------------------------------

def test_skipped_methods_are_one_element_and_not_rows():
    page = render(_explanations(), root=_no_plots())
    folded = re.findall(r"<details class='not-applicable'>.*?</details>", page, flags=re.DOTALL)
    assert len(folded) == 1
    line = re.search(r"<summary>(.*?)</summary>", folded[0]).group(1)
    assert line == "Not applicable: tree_shap, gradient_shap, check: model_randomization"
    assert "needs a tree model (scikit-learn trees" in folded[0]
    assert "<b>tree_shap</b>: needs a tree model" in folded[0]  # the name is not repeated
    rows = re.findall(r"<tr><td>([^<]*)</td>", page)
    assert "tree_shap" not in rows and "gradient_shap" not in rows
    assert "model_randomization" not in re.sub(r"<details.*?</details>", "", page, flags=re.DOTALL)


def test_no_number_in_the_report_has_more_than_three_significant_digits():
    summary = _summary(plan={"budget_s": 30.0, "spent_s": 12.3456789, "rows": 200,
                             "rows_available": 900, "cut": False,
                             "chosen": [{"method": "exact_shap",
                                         "params": {"tolerance": 0.000123456789},
                                         "why": "few features"}]})
    text = _visible_text(render(_explanations(summary), root=_no_plots()))
    numbers = re.findall(r"(?<![\w.])[-+]?\d+\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+", text)
    assert numbers, "the report shows no decimal numbers at all"
    too_long = [n for n in numbers if _significant_digits(n) > 3]
    assert not too_long, too_long
    assert "3.15e-16" in text and "12.3 s" in text  # the efficiency gap and the total time


def test_importance_tables_and_plots_are_grouped_by_unit_primary_first():
    expl = _explanations()
    assert expl.units == {"exact_shap": "probability", "permutation_importance": "loss increase",
                          "lime": "surrogate weight"}
    page = render(expl, root=_no_plots())
    section = page.split("<h2>Top 10 features per method</h2>")[1].split("<h2>")[0]
    units = re.findall(r"<h3>Unit: (.*?)</h3>", section)
    assert units == ["probability", "loss increase", "surrogate weight"]
    tables = re.findall(r"<table><thead><tr>(.*?)</tr>", section)
    headers = [re.findall(r"<th>(.*?)</th>", t)[1:] for t in tables]
    assert headers == [["exact_shap (primary)"], ["permutation_importance"], ["lime"]]
    methods = page.split("<h2>Methods and timings</h2>")[1]
    assert methods.index("exact_shap") < methods.index("permutation_importance")


def test_plan_section_renders_choices_and_a_cut():
    plan = {"budget_s": 30.0, "spent_s": 31.2, "rows": 200, "rows_available": 900,
            "chosen": [{"method": "tree_shap", "params": {"check_additivity": False},
                        "why": "a tree model: exact and fast"}],
            "left_out": [{"method": "lime", "why": "would not fit in the budget"}], "cut": True}
    page = render(_explanations(_summary(plan=plan)), root=_no_plots())
    section = page.split("<h2>Plan</h2>")[1].split("<h2>")[0]
    text = _visible_text(section)
    assert "Time budget 30 s, spent 31.2 s" in text
    assert "Rows explained: 200 of 900 available" in text
    assert "check_additivity=False" in text and "a tree model: exact and fast" in text
    assert "lime" in text and "would not fit in the budget" in text
    assert "The time budget cut planned work" in text
    assert "<span class='badge warnings'>ok with warnings</span>" in page
    assert "<h2>Plan</h2>" not in render(_explanations(), root=_no_plots())


# -- plots ------------------------------------------------------------------------------------

def test_write_artifacts_writes_labelled_plots_and_the_primary_waterfall(tmp_path):
    expl = _explanations()
    write_artifacts(expl, tmp_path)
    plots = tmp_path / "plots"
    for name in ("exact_shap_bar", "exact_shap_beeswarm", "exact_shap_waterfall",
                 "permutation_importance_bar", "lime_bar", "lime_beeswarm", "check_agreement"):
        assert (plots / f"{name}.png").stat().st_size > 5000, name
    assert not (plots / "lime_waterfall.png").exists()  # the primary method's only
    page = (tmp_path / "report.html").read_text()
    assert "alt='exact_shap waterfall'" in page
    assert page.index("alt='exact_shap bar'") < page.index("alt='permutation_importance bar'")


def test_axis_labels_state_the_unit():
    from mlflow_xai.plots import bar_figure, beeswarm_figure

    expl = _explanations()

    def xlabel(fig) -> str:
        return fig.axes[0].get_xlabel()

    assert xlabel(bar_figure(expl.importance["exact_shap"], "exact_shap", unit="probability",
                             shapley=True)) == "mean |SHAP value| (probability)"
    assert xlabel(bar_figure(expl.importance["permutation_importance"], "pi",
                             unit="loss increase", local=False)) == "loss increase"
    assert xlabel(bar_figure(expl.importance["lime"], "lime",
                             unit="surrogate weight")) == "mean |surrogate weight|"
    assert xlabel(bar_figure(expl.importance["lime"], "ig", unit="margin (log-odds)")) == \
        "mean |attribution| (margin (log-odds))"
    bee = beeswarm_figure(expl.attributions["exact_shap"], expl.data, "exact_shap",
                          unit="probability", shapley=True)
    assert xlabel(bee) == "SHAP value (probability)"
    assert bee.axes[0].get_title() == "exact_shap: attributions per row"


def test_waterfall_bars_add_up_from_base_to_output():
    from mlflow_xai.plots import waterfall_data, waterfall_figure

    expl = _explanations()
    shap, base = expl.attributions["exact_shap"], expl.base_values["exact_shap"]
    row = shap.iloc[0]
    data = waterfall_data(row, BASE, expl.data.iloc[0])
    assert len(data.labels) == 10 and data.labels[0] == "other 3 features"
    assert data.labels[-1].startswith(f"{row.abs().idxmax()} = ")  # the largest on top
    assert sum(data.contributions) == pytest.approx(data.end - data.base)
    assert data.end == pytest.approx(BASE + row.sum())
    assert data.starts[0] == BASE
    assert data.starts[-1] + data.contributions[-1] == pytest.approx(data.end)

    fig = waterfall_figure(shap, base, expl.data, "exact_shap", unit="probability",
                           shapley=True)
    output = base + shap.sum(axis=1)
    assert [ax.get_title() for ax in fig.axes] == [f"highest output: row {output.idxmax()}",
                                                   f"lowest output: row {output.idxmin()}"]
    for ax, row_label in zip(fig.axes, (output.idxmax(), output.idxmin())):
        widths = [p.get_width() for p in ax.patches]
        assert sum(widths) == pytest.approx(output[row_label] - BASE)
        assert ax.get_xlabel() == "output (probability)"
        assert any(t.get_text().startswith("f(x) = ") for t in ax.texts)
        assert any(t.get_text() == f"base value = {fmt(BASE)}" for t in ax.texts)


def test_overlay_shows_the_image_beside_its_map_with_a_colorbar():
    from mlflow_xai.plots import overlay_figure

    rng = np.random.default_rng(0)
    images = rng.random((1, 1, 8, 8))
    signed = rng.normal(size=(1, 8, 8))
    fig = overlay_figure(images, signed, "integrated_gradients", labels=[3],
                         unit="model output")
    colorbars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 and len(colorbars) == 1
    assert colorbars[0].get_ylabel() == "attribution (model output)"
    heat = panels[1].images[-1]
    assert heat.get_cmap().name == "RdBu_r"
    assert heat.norm.vmin == pytest.approx(-heat.norm.vmax)  # centred at 0
    assert panels[0].get_title() == "explained: 3"

    unsigned = overlay_figure(images, np.abs(signed), "rise", unit="image relevance")
    assert [ax for ax in unsigned.axes if ax.get_label() != "<colorbar>"][1] \
        .images[-1].get_cmap().name == "magma"


def test_a_real_run_writes_the_waterfall_and_a_true_headline(tmp_path):
    import mlflow_xai

    rng = np.random.default_rng(1)
    X = pd.DataFrame(rng.normal(size=(60, 4)), columns=["a", "b", "c", "d"])
    expl = mlflow_xai.explain(lambda a: a @ np.array([3.0, 1.0, 0.5, 0.0]), X,
                              explainers=["exact_shap", "tree_shap"], checks=[], max_rows=20,
                              output_dir=tmp_path)
    assert (tmp_path / "plots" / "exact_shap_waterfall.png").stat().st_size > 5000
    page = (tmp_path / "report.html").read_text()
    assert f"<span class='badge ok'>{headline(expl.summary, expl.checks)}</span>" in page
    assert "Not applicable: tree_shap" in page


def test_end_task_checks_get_a_reviewers_table_and_their_own_plot(tmp_path):
    """importance_test, flip_test, responsiveness and rashomon render tables from their
    details (not a wall of per-feature figures) and a plot each."""
    import mlflow_xai
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    X = pd.DataFrame({"income": rng.normal(0, 1, 300), "sex": rng.integers(0, 2, 300) * 1.0,
                      "age": rng.normal(0, 1, 300)})
    y = (X["income"] + 1.5 * X["sex"] + rng.normal(0, 0.5, 300) > 0.7).astype(int)
    model = LogisticRegression().fit(X, y)
    expl = mlflow_xai.explain(model, X, targets=y, explainers=["exact_shap"], checks={
        "importance_test": {"features": ["income", "sex"]},
        "flip_test": {"features": ["sex"]},
        "responsiveness": {"immutable": ["sex", "age"], "n_joint": 10},
        "rashomon": {"n_models": 6}}, output_dir=tmp_path)
    assert all(expl.checks[c]["status"] == "ok" for c in expl.checks), expl.checks
    page = (tmp_path / "report.html").read_text()
    flips = expl.checks["flip_test"]["details"]["features"]["sex"]
    assert f"{flips['flips']} of {flips['rows']}" in page
    assert "H0 per feature" in page and "p = " in page
    assert "fixed</b>" in page and "mean responsiveness R" in page
    assert "refits kept" in page and "rank range" in page
    # the per-feature figures without a verdict are not repeated as rows
    assert "sex/flip_rate_ci_low" not in page
    for name in ("importance_test", "flip_test", "responsiveness", "rashomon"):
        assert (tmp_path / "plots" / f"check_{name}.png").stat().st_size > 5000
