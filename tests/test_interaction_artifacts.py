"""Interaction artifacts, report, metrics and the ``forbid_interaction`` policy rule.

The interaction explainers themselves live in ``plugins/``; these tests register a tiny exact
one of their own through the plugin API (``pair_oracle``: exact pairwise Shapley interaction
values by enumerating every coalition against the background, in the k-SII convention: the
off-diagonal holds each pair's Shapley interaction index, the diagonal the main effect
``phi_i - 1/2 sum_j SII_ij``), so that every value downstream is known exactly.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import mlflow_xai
from mlflow_xai.artifacts import (
    all_metrics,
    headline_metrics,
    importance_json,
    interactions_json,
    metrics_for,
    stability_json,
    write_artifacts,
)
from mlflow_xai.cli import cli
from mlflow_xai.errors import ConfigError
from mlflow_xai.governance import evaluate_policy, facts_from_documents, load_policy
from mlflow_xai.plugin_api import Attribution, Explainer, ExplainTask, hookimpl
from mlflow_xai.provenance import check_manifest
from tests.conftest import SKLEARN_REQS

ORACLE = "pair_oracle"


class _PairOracle(Explainer):
    """Exact Shapley values and pairwise interactions by enumeration (d <= 8)."""

    name: ClassVar[str] = ORACLE
    description: ClassVar[str] = "test-only exact pairwise Shapley interactions"
    shapley: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    defaults: ClassVar[dict[str, Any]] = {}

    def explain_rows(self, task: ExplainTask, X: np.ndarray, params: dict) -> Attribution:
        n, d = X.shape
        background = task.background
        codes = np.arange(2 ** d)
        masks = ((codes[:, None] >> np.arange(d)) & 1).astype(bool)  # (m, d)
        Z = np.where(masks[None, :, None, :], X[:, None, None, :], background[None, None])
        v = np.asarray(task.predict(Z.reshape(-1, d)), dtype=float).reshape(
            n, len(codes), len(background)).mean(axis=2)  # (n, m): v(S) per row
        size = masks.sum(axis=1)
        phi = np.zeros((n, d))
        sii = np.zeros((n, d, d))
        for i in range(d):
            without = codes[(codes >> i) & 1 == 0]
            weight = np.array([math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d)
                               for s in size[without]])
            phi[:, i] = (v[:, without | (1 << i)] - v[:, without]) @ weight
            for j in range(i + 1, d):
                rest = codes[((codes >> i) & 1 == 0) & ((codes >> j) & 1 == 0)]
                weight = np.array([math.factorial(s) * math.factorial(d - s - 2)
                                   / math.factorial(d - 1) for s in size[rest]])
                delta = (v[:, rest | (1 << i) | (1 << j)] - v[:, rest | (1 << i)]
                         - v[:, rest | (1 << j)] + v[:, rest])
                sii[:, i, j] = sii[:, j, i] = delta @ weight
        diagonal = phi - 0.5 * sii.sum(axis=2)
        sii[:, np.arange(d), np.arange(d)] = diagonal
        return Attribution(values=phi, base_values=v[:, 0], interactions=sii,
                           info={"index": "k-SII"})


class _Pack:
    @hookimpl
    def xai_register_explainers(self):
        return [_PairOracle]


@pytest.fixture()
def oracle():
    from mlflow_xai.plugins import MethodInfo, get_registry

    registry = get_registry(reload=True)
    registry.pm.register(_Pack(), name="pair-oracle-pack")
    registry.methods[ORACLE] = MethodInfo(ORACLE, "explainer", _PairOracle, "pair-oracle-pack",
                                          "tests", "0")
    yield ORACLE
    get_registry(reload=True)


def _product(a: Any) -> np.ndarray:
    """f = x0 * x1 + x2 (the other features do nothing)."""
    a = np.asarray(a, dtype=float)
    return a[:, 0] * a[:, 1] + a[:, 2]


def _frame(d: int = 4, rows: int = 24, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    index = pd.Index([f"r{i}" for i in range(rows)], name="applicant")
    return pd.DataFrame(rng.normal(1.0, 1.0, (rows, d)), columns=[f"x{i}" for i in range(d)],
                        index=index)


@pytest.fixture()
def product_expl(oracle):
    X = _frame()
    return mlflow_xai.explain(_product, X, explainers=[ORACLE], checks=[], background=X)


# --------------------------------------------------------------------------- values


def test_interactions_are_the_exact_values_of_the_product(product_expl):
    expl = product_expl
    X = expl.data.to_numpy()
    values = expl.interactions[ORACLE]
    assert values.shape == (len(X), 4, 4)
    # Interventional SII of x0*x1 against background B: x0 x1 - x0 E[b1] - E[b0] x1 + E[b0 b1];
    # x2 is additive and x3 unused: no other pair interacts.
    expected = X[:, 0] * X[:, 1] - X[:, 0] * X[:, 1].mean() - X[:, 0].mean() * X[:, 1] + (
        X[:, 0] * X[:, 1]).mean()
    np.testing.assert_allclose(values[:, 0, 1], expected, atol=1e-10)
    np.testing.assert_allclose(values[:, 1, 0], expected, atol=1e-10)
    for a, b in ((0, 2), (0, 3), (1, 2), (1, 3), (2, 3)):
        np.testing.assert_allclose(values[:, a, b], 0.0, atol=1e-10)
    # k-SII is efficient: main effects plus pairs add up to f(x) - E f.
    upper = values[:, np.triu_indices(4, 1)[0], np.triu_indices(4, 1)[1]].sum(axis=1)
    total = np.trace(values, axis1=1, axis2=2) + upper
    base = expl.base_values[ORACLE].to_numpy()
    np.testing.assert_allclose(total + base, _product(X), atol=1e-10)
    assert expl.interaction_index(ORACLE) == "k-SII"
    assert expl.interaction_methods == [ORACLE]


def test_interactions_reported_in_shaps_half_convention_are_made_whole(oracle, product_expl):
    class Halves(_PairOracle):
        def explain_rows(self, task, X, params):
            out = super().explain_rows(task, X, params)
            d = X.shape[1]
            off = ~np.eye(d, dtype=bool)
            out.interactions[:, off] /= 2  # shap: half of each pair in each triangle
            out.info["off_diagonal"] = "half"
            return out

    from mlflow_xai.plugins import MethodInfo, get_registry

    get_registry().methods[ORACLE] = MethodInfo(ORACLE, "explainer", Halves, "pair-oracle-pack",
                                                "tests", "0")
    X = product_expl.data
    halves = mlflow_xai.explain(_product, X, explainers=[ORACLE], checks=[], background=X)
    np.testing.assert_allclose(halves.interactions[ORACLE], product_expl.interactions[ORACLE],
                               atol=1e-12)
    assert interactions_json(halves)[ORACLE]["off_diagonal"] == "full"


def test_the_global_matrix_is_the_mean_absolute_interaction(product_expl):
    expl = product_expl
    values = expl.interactions[ORACLE]
    matrix = expl.interaction_matrix(ORACLE)
    assert list(matrix.index) == list(matrix.columns) == ["x0", "x1", "x2", "x3"]
    by_hand = np.array([[np.mean([abs(values[r, i, j]) for r in range(len(values))])
                         for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(matrix.to_numpy(), by_hand, rtol=1e-12)
    np.testing.assert_allclose(expl.interaction_matrix(ORACLE, signed=True).to_numpy(),
                               values.mean(axis=0), rtol=1e-12)
    top = expl.top_interactions(ORACLE, 3)
    assert list(top.columns) == ["feature_a", "feature_b", "mean_abs", "mean_value", "top3_share"]
    assert (top.feature_a[0], top.feature_b[0]) == ("x0", "x1")
    assert top.mean_abs[0] == pytest.approx(by_hand[0, 1])
    assert top.mean_value[0] == pytest.approx(values[:, 0, 1].mean())
    assert top.top3_share[0] == 1.0  # the only non-zero pair is in every row's top 3
    assert len(expl.top_interactions(ORACLE, None)) == 6


def _six_pairs(a: Any) -> np.ndarray:
    """Five interacting pairs among six features: x0x1, x2x3 and (x0, x4, x5) together."""
    a = np.asarray(a, dtype=float)
    return a[:, 0] * a[:, 1] - 2 * a[:, 2] * a[:, 3] + 0.5 * a[:, 4] * a[:, 5] * a[:, 0]


def test_each_rows_strongest_pairs_by_absolute_value(oracle):
    X = _frame(d=6, rows=10, seed=3)
    expl = mlflow_xai.explain(_six_pairs, X, explainers=[ORACLE], checks=[], background=X.iloc[:6])
    table = expl.row_interactions(ORACLE, 10)
    values = expl.interactions[ORACLE]
    a, b = np.triu_indices(6, 1)
    assert len(table) == 10 * len(X)
    for position, label in enumerate(X.index):
        rows = table[table.row == label]
        assert list(rows["rank"]) == list(range(1, 11))
        pairs = values[position, a, b]
        order = np.argsort(-np.abs(pairs), kind="stable")[:10]
        assert list(zip(rows.feature_a, rows.feature_b)) == [(f"x{a[k]}", f"x{b[k]}")
                                                             for k in order]
        np.testing.assert_allclose(rows["value"], pairs[order])


# --------------------------------------------------------------------------- artifacts


def test_artifact_files_have_the_documented_columns_and_the_manifest_covers_them(
        product_expl, tmp_path):
    root = write_artifacts(product_expl, tmp_path / "xai")
    parquet = root / "interactions" / f"{ORACLE}.parquet"
    matrix_file = root / "interactions" / f"{ORACLE}_matrix.json"
    plot = root / "plots" / f"{ORACLE}_interactions.png"
    assert parquet.is_file() and matrix_file.is_file() and plot.is_file()

    table = pd.read_parquet(parquet)
    assert list(table.columns) == ["row", "feature_a", "feature_b", "value", "rank"]
    assert set(table.row) == set(product_expl.data.index)  # the input's index labels
    assert table.groupby("row").size().max() == 6  # 4 features: all 6 pairs (<= 10)
    assert table["rank"].min() == 1 and table["rank"].dtype == np.int64
    first = table[table["rank"] == 1]
    assert set(zip(first.feature_a, first.feature_b)) == {("x0", "x1")}

    doc = json.loads(matrix_file.read_text())
    assert doc["method"] == ORACLE and doc["index"] == "k-SII"
    assert doc["features"] == ["x0", "x1", "x2", "x3"] and doc["rows"] == 24
    np.testing.assert_allclose(doc["matrix"],
                               product_expl.interaction_matrix(ORACLE).to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(doc["mean"], product_expl.interactions[ORACLE].mean(axis=0),
                               rtol=1e-12)

    summary = json.loads((root / "summary.json").read_text())
    for path in (parquet, matrix_file, plot):
        name = path.relative_to(root).as_posix()
        assert check_manifest(summary, name, path.read_bytes()) is None, name
    assert check_manifest(summary, f"interactions/{ORACLE}_matrix.json",
                          matrix_file.read_bytes() + b" ") is not None


def test_no_interaction_files_without_an_interaction_method(tmp_path):
    X = _frame()
    expl = mlflow_xai.explain(_product, X, explainers=["exact_shap"], checks=[])
    root = write_artifacts(expl, tmp_path / "xai", plots=False)
    assert not (root / "interactions").exists()
    assert expl.interactions == {} and interactions_json(expl) == {}


def test_a_non_finite_interaction_is_written_as_null(product_expl, tmp_path):
    product_expl.interactions[ORACLE] = product_expl.interactions[ORACLE].copy()
    product_expl.interactions[ORACLE][3, 2, 3] = np.nan
    root = write_artifacts(product_expl, tmp_path / "xai", plots=False)
    doc = json.loads((root / "interactions" / f"{ORACLE}_matrix.json").read_text())
    assert doc["matrix"][2][3] is None and doc["matrix"][0][1] is not None


def test_interaction_values_of_the_wrong_shape_are_dropped_with_a_note(oracle, caplog):
    class Broken(_PairOracle):
        def explain_rows(self, task, X, params):
            out = super().explain_rows(task, X, params)
            out.interactions = out.interactions[:, :2, :2]
            return out

    from mlflow_xai.plugins import MethodInfo, get_registry

    get_registry().methods[ORACLE] = MethodInfo(ORACLE, "explainer", Broken, "pair-oracle-pack",
                                                "tests", "0")
    expl = mlflow_xai.explain(_product, _frame(), explainers=[ORACLE], checks=[])
    assert expl.interactions == {}
    assert "dropped" in expl.summary["methods"][ORACLE]["interactions_dropped"]


# --------------------------------------------------------------------------- plot


def test_heat_map_orders_by_main_effect_and_picks_its_colormap():
    from mlflow_xai.plots import interaction_figure

    names = ["a", "b", "c"]
    magnitude = pd.DataFrame([[1.0, 0.2, 0.0], [0.2, 3.0, 0.5], [0.0, 0.5, 2.0]],
                             index=names, columns=names)
    fig = interaction_figure(magnitude, "m", unit="probability", index="k-SII")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "c", "a"]  # by |diagonal|
    image = ax.images[0]
    assert image.get_cmap().name == "viridis" and image.norm.vmin == 0.0
    assert image.norm.vmax == pytest.approx(0.5)  # the diagonal is not on the scale
    colorbar = fig.axes[1]
    assert colorbar.get_ylabel() == "mean |k-SII| (probability)"
    assert "pairwise interactions" in ax.get_title()

    signed = magnitude.copy()
    signed.loc["a", "b"] = signed.loc["b", "a"] = -0.8
    image = interaction_figure(signed, "m", importance=pd.Series(
        {"a": 3.0, "b": 1.0, "c": 2.0})).axes[0].images[0]
    assert image.get_cmap().name == "RdBu_r"
    assert image.norm.vmin == pytest.approx(-0.8) and image.norm.vmax == pytest.approx(0.8)


def test_heat_map_of_many_features_shows_the_twenty_most_involved():
    from mlflow_xai.plots import interaction_figure

    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(50)]
    values = rng.uniform(0, 0.01, (50, 50))
    values[:10, :10] += 1.0  # f0..f9 interact strongly among themselves
    values = (values + values.T) / 2
    fig = interaction_figure(pd.DataFrame(values, index=names, columns=names), "m")
    shown = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(shown) == 20 and {f"f{i}" for i in range(10)} <= set(shown)
    assert "top 20 of 50 features" in fig.axes[0].get_title()
    small = interaction_figure(pd.DataFrame(values[:40, :40], index=names[:40],
                                            columns=names[:40]), "m")
    assert len(small.axes[0].get_yticklabels()) == 40


# --------------------------------------------------------------------------- report, metrics


def test_report_shows_the_strongest_pair_in_the_methods_unit_section(product_expl, tmp_path):
    root = write_artifacts(product_expl, tmp_path / "xai")
    page = (root / "report.html").read_text()
    section = page[page.index("Top 10 features per method"):page.index("Methods and timings")]
    assert "Strongest interactions: pair_oracle (k-SII)" in section
    unit = section.index("Unit: model output")
    assert section.index("Strongest interactions") > unit
    row = re.search(r"<tr><td>x0 × x1</td><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td>",
                    section)
    assert row, section
    top = product_expl.top_interactions(ORACLE, 1).iloc[0]
    from mlflow_xai.report import fmt

    assert row.group(1) == fmt(top.mean_abs) and row.group(2) == fmt(top.mean_value)
    assert row.group(3) == "100 %"
    assert "alt='pair_oracle interactions'" in page


def test_headline_and_all_metrics_name_the_strongest_pairs(oracle, product_expl):
    X = _frame(d=6, rows=12, seed=1)
    expl = mlflow_xai.explain(_six_pairs, X, explainers=[ORACLE], checks=[], background=X)
    headline = metrics_for(expl)
    pairs = [m for m in headline if ".interaction." in m]
    top = expl.top_interactions(ORACLE, 3)
    assert pairs == [f"xai.{ORACLE}.interaction.{a}__{b}"
                     for a, b in zip(top.feature_a, top.feature_b)]
    assert list(headline)[-3:] == pairs  # last: the first the cap cuts
    matrix = expl.interaction_matrix(ORACLE)
    assert headline[pairs[0]] == pytest.approx(matrix.loc[top.feature_a[0], top.feature_b[0]])

    expl.summary["log_metrics"] = "all"
    every = {m: v for m, v in metrics_for(expl).items() if "/interaction/" in m}
    # The 5 pairs that interact (<= 20); the 10 others are 0 up to float rounding.
    assert sorted(every) == sorted(f"xai/{ORACLE}/interaction/{a}" for a in (
        "x0__x1", "x2__x3", "x0__x4", "x0__x5", "x4__x5"))
    assert every[f"xai/{ORACLE}/interaction/x2__x3"] == pytest.approx(matrix.loc["x2", "x3"])

    # x0 * x1 + x2: one pair interacts, so one headline pair.
    assert [m for m in metrics_for(product_expl) if ".interaction." in m] == [
        f"xai.{ORACLE}.interaction.x0__x1"]


def test_interaction_metrics_only_where_the_headline_cap_leaves_room(product_expl):
    docs = (product_expl.summary, importance_json(product_expl), stability_json(product_expl))
    crowded = {f"check_{i}": {"figures": {"a": 0.5, "b": 0.5},
                              "thresholds": {"a": {"min": 0}, "b": {"min": 0}}}
               for i in range(12)}
    metrics = headline_metrics(docs[0], docs[1], crowded,
                               interactions=interactions_json(product_expl))
    assert len(metrics) == 30 and not any(".interaction." in m for m in metrics)
    assert metrics == headline_metrics(docs[0], docs[1], crowded)
    assert all_metrics(*docs) == all_metrics(*docs, interactions={})


# --------------------------------------------------------------------------- governance


def _people(rows: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"income": rng.normal(5, 1, rows), "age": rng.normal(4, 1, rows),
                         "sex": rng.integers(0, 2, rows).astype(float),
                         "zip_code": rng.integers(0, 5, rows).astype(float)})


def _credit_model(biased: bool):
    """A linear model over every pairwise product; the biased one scores sex x zip_code."""
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures

    X = _people()
    y = 0.5 * X.income * X.age + X.sex + 0.3 * X.zip_code
    if biased:
        y = 0.5 * X.income * X.age + 3.0 * X.sex * X.zip_code
    return make_pipeline(PolynomialFeatures(2, interaction_only=True, include_bias=False),
                         LinearRegression()).fit(X, y)


NO_SEX_ZIP = """
rules:
  - name: no-sex-zip-interaction
    forbid_interaction: {features: [sex], with: [zip_code], max: 0.01}
  - name: sex-interacts-with-nothing-on-top
    forbid_interaction: {features: [sex], top_k: 1, method: pair_oracle}
"""


@pytest.fixture()
def credit_explanations(oracle):
    X = _people().iloc[:40]
    return {kind: mlflow_xai.explain(_credit_model(kind == "biased"), X, explainers=[ORACLE],
                                     checks=[], background=X.iloc[:20])
            for kind in ("fair", "biased")}


def test_forbid_interaction_passes_the_fair_model_and_fails_the_biased_one(
        credit_explanations):
    fair = evaluate_policy(NO_SEX_ZIP, credit_explanations["fair"])
    assert fair["verdict"] == "passed", fair
    assert fair["rules"][0]["value"] < 1e-8
    biased = evaluate_policy(NO_SEX_ZIP, credit_explanations["biased"])
    assert biased["verdict"] == "failed"
    rules = {r["name"]: r for r in biased["rules"]}
    by_max = rules["no-sex-zip-interaction"]
    assert by_max["verdict"] == "fail" and by_max["kind"] == "forbid_interaction"
    assert "sex × zip_code" in by_max["message"] and "above max 0.01" in by_max["message"]
    matrix = credit_explanations["biased"].interaction_matrix(ORACLE)
    assert by_max["value"] == pytest.approx(matrix.loc["sex", "zip_code"])
    assert by_max["bound"] == {"features": ["sex"], "with": ["zip_code"], "max": 0.01}
    by_rank = rules["sex-interacts-with-nothing-on-top"]
    assert by_rank["verdict"] == "fail" and by_rank["value"] == 1
    assert "(rank 1) in the top 1 pairs" in by_rank["message"]


def test_the_policy_applied_while_explaining_records_the_verdict(oracle):
    X = _people().iloc[:30]
    expl = mlflow_xai.explain(_credit_model(True), X, explainers=[ORACLE], checks=[],
                              policy=NO_SEX_ZIP)
    assert expl.governance["verdict"] == "failed"


@pytest.mark.parametrize("spec, message", [
    ("{features: [sex], wiht: [zip_code], max: 0.01}", "did you mean 'with'?"),
    ("{features: [sex], maximum: 0.01}", "did you mean 'max'?"),
    ("{features: [sex]}", "exactly one of 'max'"),
    ("{features: [sex], max: 0.01, top_k: 2}", "exactly one of 'max'"),
    ("{features: [sex], max: '0.01'}", "field 'forbid_interaction.max' must be a number"),
    ("{features: [sex], max: -1}", "at least 0"),
    ("{features: [sex], top_k: 0}", "forbid_interaction.top_k"),
    ("{features: [], max: 1}", "field 'forbid_interaction.features' must be a non-empty list"),
    ("{features: [sex], with: [sex], max: 1}", "names no pair"),
    ("{features: [sex], max: 1, method: pair_orcale}", "Did you mean 'pair_oracle'?"),
])
def test_bad_forbid_interaction_specs_are_refused(oracle, spec, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_policy(f"rules:\n  - name: r\n    forbid_interaction: {spec}\n")


def test_feature_names_are_checked_against_the_model(credit_explanations):
    for text, hint in (("{features: [Sex], max: 0.01}", "Did you mean 'sex'?"),
                       ("{features: [sex], with: [zipcode], max: 0.01}",
                        "Did you mean 'zip_code'?")):
        with pytest.raises(ConfigError, match=re.escape(hint)):
            evaluate_policy(f"rules:\n  - name: r\n    forbid_interaction: {text}\n",
                            credit_explanations["fair"])


def test_forbid_interaction_fails_closed_without_interaction_facts(credit_explanations):
    X = _people().iloc[:30]
    shap_only = mlflow_xai.explain(_credit_model(False), X, explainers=["exact_shap"], checks=[])
    outcome = evaluate_policy("rules:\n  - name: r\n    forbid_interaction: "
                              "{features: [sex], max: 0.01}\n", shap_only)
    assert outcome["verdict"] == "failed"
    assert "no interaction method ran" in outcome["rules"][0]["message"]

    named = evaluate_policy("rules:\n  - name: r\n    forbid_interaction: "
                            "{features: [sex], max: 0.01, method: pair_oracle}\n", shap_only)
    assert named["verdict"] == "failed"
    assert "method 'pair_oracle' did not run" in named["rules"][0]["message"]
    not_interactions = evaluate_policy("rules:\n  - name: r\n    forbid_interaction: "
                                       "{features: [sex], max: 0.01, method: exact_shap}\n",
                                       shap_only)
    assert "recorded no interaction matrix" in not_interactions["rules"][0]["message"]

    # The facts come only from the matrix documents: a summary whose manifest lists a matrix
    # that was not handed over as a document cannot pass.
    expl = credit_explanations["fair"]
    summary = {**expl.summary, "artifacts": {"sha256": {
        f"interactions/{ORACLE}_matrix.json": "0" * 64}}}
    facts = facts_from_documents(summary, importance_json(expl), stability_json(expl), {})
    unread = evaluate_policy("rules:\n  - name: r\n    forbid_interaction: "
                             "{features: [sex], max: 0.01}\n", facts)
    assert unread["verdict"] == "failed"
    assert "listed in the manifest but was not read" in unread["rules"][0]["message"]

    for broken in ({"features": ["sex"], "matrix": [[0.0]]},
                   {**interactions_json(expl)[ORACLE], "matrix": "none"}):
        facts = facts_from_documents(expl.summary, importance_json(expl), stability_json(expl),
                                     {}, {ORACLE: broken})
        outcome = evaluate_policy("rules:\n  - name: r\n    forbid_interaction: "
                                  "{features: [sex], max: 0.01}\n", facts)
        assert outcome["verdict"] == "failed", broken


def test_a_pair_that_does_not_interact_is_in_no_top_k(product_expl):
    # x0 * x1 + x2: x2 interacts with nothing, so its pairs (0 up to float rounding) are never
    # "among the strongest", whatever their order among the zeros.
    outcome = evaluate_policy("rules:\n  - name: r\n    forbid_interaction: "
                              "{features: [x2], top_k: 2}\n", product_expl)
    assert outcome["verdict"] == "passed", outcome
    outcome = evaluate_policy("rules:\n  - name: r\n    forbid_interaction: "
                              "{features: [x1], with: [x0, x3], top_k: 1}\n", product_expl)
    assert outcome["verdict"] == "failed"
    assert "x1 × x0 (rank 1) in the top 1 pairs" in outcome["rules"][0]["message"]


def test_a_non_finite_forbidden_pair_fails(credit_explanations):
    expl = credit_explanations["fair"]
    doc = interactions_json(expl)[ORACLE]
    at = doc["features"].index("sex"), doc["features"].index("zip_code")
    doc["matrix"][at[0]][at[1]] = doc["matrix"][at[1]][at[0]] = None
    facts = facts_from_documents(expl.summary, importance_json(expl), stability_json(expl), {},
                                 {ORACLE: doc})
    outcome = evaluate_policy(NO_SEX_ZIP, facts)
    assert [r["verdict"] for r in outcome["rules"]] == ["fail", "fail"]
    assert "not finite" in outcome["rules"][0]["message"]


# --------------------------------------------------------------------------- the gate




def _log_credit_model(X: pd.DataFrame, biased: bool) -> str:
    import mlflow

    mlflow_xai.autolog(data=X, explainers=[ORACLE], max_rows=40, checks=[], budget_s=None)
    try:
        with mlflow.start_run() as run:
            mlflow.sklearn.log_model(_credit_model(biased), name="model",
                                     input_example=X.head(2), pip_requirements=SKLEARN_REQS)
    finally:
        mlflow_xai.autolog(disable=True)
    return run.info.run_id


def test_the_gate_reads_forbid_interaction_from_the_verified_documents(
        oracle, experiment, tmp_path):
    import mlflow

    X = _people().iloc[:40]
    policy = tmp_path / "policy.yaml"
    policy.write_text(NO_SEX_ZIP)
    fair_run = _log_credit_model(X, biased=False)
    biased_run = _log_credit_model(X, biased=True)

    fair = CliRunner().invoke(cli, ["check", "--run-id", fair_run, "--policy",
                                                   str(policy)])
    assert fair.exit_code == 0, fair.output
    biased = CliRunner().invoke(cli, ["check", "--run-id", biased_run,
                                                     "--policy", str(policy)])
    assert biased.exit_code == 1, biased.output
    assert re.search(r"no-sex-zip-interaction\s+forbid_interaction.*FAIL", biased.output)
    client = mlflow.MlflowClient()
    assert client.get_run(biased_run).data.tags["mlflow_xai.governance"] == "failed"

    # An edited matrix (the sex x zip_code interaction zeroed) is refused: exit 2.
    local = mlflow.artifacts.download_artifacts(run_id=biased_run, artifact_path="xai",
                                                dst_path=str(tmp_path / "down"))
    path = f"{local}/interactions/{ORACLE}_matrix.json"
    with open(path) as handle:
        doc = json.load(handle)
    doc["matrix"] = [[0.0] * len(doc["features"]) for _ in doc["features"]]
    with open(path, "w") as handle:
        json.dump(doc, handle)
    client.log_artifact(biased_run, path, "xai/interactions")
    forged = CliRunner().invoke(cli, ["check", "--run-id", biased_run,
                                                     "--policy", str(policy)])
    assert forged.exit_code == 2, forged.output
    assert "was changed after mlflow-xai wrote it" in forged.output


def test_the_gate_fails_closed_on_forbid_interaction_whatever_it_reads(
        oracle, experiment, tmp_path):
    """Until (and after) the gate reads the matrix documents, a biased model never passes."""
    X = _people().iloc[:40]
    policy = tmp_path / "policy.yaml"
    policy.write_text(NO_SEX_ZIP)
    biased = CliRunner().invoke(cli, ["check", "--run-id",
                                                     _log_credit_model(X, biased=True),
                                                     "--policy", str(policy)])
    assert biased.exit_code == 1, biased.output
    assert "governance: FAILED" in biased.output
