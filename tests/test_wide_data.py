"""Wide data and feature groups (issue 13, item 3).

Grouped Shapley values against exact enumeration of the group game and against the closed form
of a linear model; ``feature_groups="auto"`` (deterministic correlation clusters, every column in
exactly one group); clear errors for bad groups; the auto plan on 2,000 features (a grouped plan
within its budget) and Permutation SHAP on 2,000 single columns (bounded, exact for a linear
model).
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest

import mlflow_xai
from mlflow_xai import groups as grouping
from mlflow_xai.config import XaiConfig
from mlflow_xai.errors import ConfigError

GROUPS = {"a": ["x0", "x1", "x2"], "b": ["x3", "x4", "x5"], "c": ["x6", "x7", "x8"],
          "d": ["x9", "x10", "x11"]}


def _interacting(Z: np.ndarray) -> np.ndarray:
    """Interactions within and across the groups of GROUPS."""
    Z = np.asarray(Z, dtype=float)
    return (Z[:, 0] * Z[:, 4] + np.sin(Z[:, 6]) * Z[:, 1] + Z[:, 9] ** 2 + Z[:, 2] * Z[:, 11]
            + 0.5 * Z[:, 3] * Z[:, 7] * Z[:, 10] + Z.sum(axis=1))


def group_game_shapley(f, X: np.ndarray, background: np.ndarray, index: np.ndarray
                       ) -> np.ndarray:
    """Exact Shapley values of the group game v(S) = mean_b f(x_S, b_rest), by enumeration."""
    G = int(index.max()) + 1
    value = {}
    for S in itertools.product((0, 1), repeat=G):
        columns = np.asarray(S, dtype=bool)[index]
        mixed = np.where(columns[None, None, :], X[:, None, :], background[None, :, :])
        value[S] = f(mixed.reshape(-1, X.shape[1])).reshape(len(X), -1).mean(axis=1)
    phi = np.zeros((len(X), G))
    for g in range(G):
        for S, v in value.items():
            if S[g]:
                continue
            k = sum(S)
            weight = math.factorial(k) * math.factorial(G - k - 1) / math.factorial(G)
            phi[:, g] += weight * (value[S[:g] + (1,) + S[g + 1:]] - v)
    return phi


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(30, 12)), columns=[f"x{i}" for i in range(12)])
    return X.iloc[:6], X.iloc[10:18]


# ------------------------------------------------------------------------------------------
# Grouped values are the group game's Shapley values
# ------------------------------------------------------------------------------------------

def test_grouped_values_equal_exact_enumeration_of_the_group_game(small):
    X, background = small
    expl = mlflow_xai.explain(
        _interacting, X, background=background, feature_groups=GROUPS,
        explainers={"exact_shap": {}, "kernel_shap": {"n_samples": 64},
                    "permutation_shap": {"n_samples": 4096}})
    index = np.repeat(np.arange(4), 3)
    exact = group_game_shapley(_interacting, X.to_numpy(), background.to_numpy(), index)
    scale = np.abs(exact).max()
    for method in ("exact_shap", "kernel_shap", "permutation_shap"):
        values = expl.attributions[method]
        assert list(values.columns) == ["a", "b", "c", "d"]
        entry = expl.summary["methods"][method]
        assert entry["grouping"] == "native" and entry["players"] == "4 groups"
        # Efficiency holds over the groups.
        assert entry["efficiency_max_abs_gap"] < 1e-9
    np.testing.assert_allclose(expl.attributions["exact_shap"].to_numpy(), exact, atol=1e-10)
    # 64 >= 2**4 - 2 coalitions: Kernel SHAP enumerates the group game, so it is exact too.
    np.testing.assert_allclose(expl.attributions["kernel_shap"].to_numpy(), exact, atol=1e-8)
    # Permutations of 4 groups: sampled, unbiased, close at 682 antithetic pairs.
    error = np.abs(expl.attributions["permutation_shap"].to_numpy() - exact).max()
    assert error < 0.05 * scale, (error, scale)
    recorded = expl.summary["feature_groups"]
    assert recorded["how"] == "given" and recorded["members"] == GROUPS
    assert list(expl.importance.index) == ["a", "b", "c", "d"]


def test_the_checks_see_groups_as_features(small):
    """The removal checks remove whole groups (to their background mean); every default check
    runs on a grouped explanation."""
    X, background = small
    expl = mlflow_xai.explain(_interacting, X, background=background, feature_groups=GROUPS,
                              explainers=["exact_shap"])
    statuses = {name: entry["status"] for name, entry in expl.summary["checks"].items()}
    assert "failed" not in statuses.values(), statuses
    for check in ("deletion_insertion", "infidelity", "faithfulness_correlation",
                  "completeness", "bootstrap_importance"):
        assert statuses[check] == "ok", statuses
    figures = expl.checks["deletion_insertion"]["figures"]
    assert np.isfinite(figures["exact_shap/deletion_auc"])
    # Exact group values ranked the groups: insertion beats random orders.
    assert figures["exact_shap/insertion_gain"] > 0
    assert expl.checks["completeness"]["status"] == "ok"


def test_grouped_presence_expands_to_columns():
    X = np.array([[1.0, 2.0, 3.0, np.nan]])
    background = np.array([[0.0, 0.0, 1.0, 5.0], [2.0, 2.0, 3.0, np.nan]])
    g = grouping.given_groups({"ab": ["a", "b"]}, ["a", "b", "c", "d"])
    assert g.names == ("ab", "c", "d")
    removal = grouping.removal_values(background)
    np.testing.assert_allclose(removal, [1.0, 1.0, 2.0, 5.0])
    presence = np.array([[[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.0, 1.0]]])
    out = grouping.expand_presence(presence, X, removal, g)
    np.testing.assert_allclose(out[0, 0, :3], [1.0, 2.0, 3.0])
    assert np.isnan(out[0, 0, 3])                         # kept: missing stays missing
    np.testing.assert_allclose(out[0, 1], [1.0, 1.0, 3.0, 5.0])   # removed: background mean
    np.testing.assert_allclose(out[0, 2, :3], [1.0, 1.5, 2.0])    # half-way


def test_engine_expands_group_masks_to_columns():
    import torch

    from mlflow_xai.engine import coalition_values

    rng = np.random.default_rng(1)
    X = torch.as_tensor(rng.normal(size=(3, 7)))
    background = torch.as_tensor(rng.normal(size=(4, 7)))
    groups = np.array([0, 0, 1, 2, 2, 2, 1])
    masks = torch.as_tensor(rng.random((5, 3)) < 0.5)
    weights = torch.as_tensor(rng.normal(size=7))

    def predict(x):
        return torch.tanh(x @ weights)

    grouped = coalition_values(predict, X, background, masks, max_rows=7, groups=groups)
    expanded = coalition_values(predict, X, background, masks[:, groups], max_rows=64)
    torch.testing.assert_close(grouped, expanded)
    with pytest.raises(ValueError, match="players"):
        coalition_values(predict, X, background, masks, max_rows=64)
    with pytest.raises(ValueError, match="columns"):
        coalition_values(predict, X, background, masks, max_rows=64, groups=groups[:5])


# ------------------------------------------------------------------------------------------
# A linear model: grouped values are sums of the closed form
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def linear():
    rng = np.random.default_rng(2)
    d = 30
    latent = rng.normal(size=(80, 6))
    X = latent[:, np.arange(d) % 6] + 0.3 * rng.normal(size=(80, d))
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(d)])
    beta = rng.normal(size=d)

    def f(Z):
        return np.asarray(Z, dtype=float) @ beta + 1.5

    return frame, beta, f


def test_linear_grouped_values_are_sums_of_the_closed_form(linear):
    X, beta, f = linear
    rows, background = X.iloc[:8], X.iloc[20:60]
    closed = beta * (rows.to_numpy() - background.to_numpy().mean(axis=0))   # per column
    for spec in ("auto", {"odd": [f"f{i}" for i in range(1, 30, 2)], "first": ["f0", "f2"]}):
        expl = mlflow_xai.explain(
            f, rows, background=background, feature_groups=spec, max_groups=6, checks=[],
            explainers={"permutation_shap": {"n_samples": 256},
                        "kernel_shap": {"n_samples": 256}})
        members = expl.summary["feature_groups"]["members"]
        position = {c: j for j, c in enumerate(X.columns)}
        expected = np.stack([closed[:, [position[c] for c in cols]].sum(axis=1)
                             for cols in members.values()], axis=1)
        for method in ("permutation_shap", "kernel_shap"):
            values = expl.attributions[method]
            assert list(values.columns) == list(members)
            np.testing.assert_allclose(values.to_numpy(), expected, atol=1e-8)
    assert len(members) == 2 + 30 - 17    # the two groups, the other columns single


def test_a_method_that_explains_columns_is_summed_over_the_groups(linear):
    """LIME does not explain groups itself: its per-column attributions are summed."""
    X, _, f = linear
    rows, background = X.iloc[:5], X.iloc[20:60]
    groups = {"g": ["f0", "f1", "f2", "f3"], "h": ["f10", "f20"]}
    plain = mlflow_xai.explain(f, rows, background=background, explainers=["lime"], checks=[])
    grouped = mlflow_xai.explain(f, rows, background=background, explainers=["lime"],
                                 checks=[], feature_groups=groups)
    assert grouped.summary["methods"]["lime"]["grouping"] == "summed"
    per_column = plain.attributions["lime"]
    values = grouped.attributions["lime"]
    np.testing.assert_allclose(values["g"], per_column[groups["g"]].sum(axis=1), atol=1e-10)
    np.testing.assert_allclose(values["h"], per_column[groups["h"]].sum(axis=1), atol=1e-10)
    np.testing.assert_allclose(values["f4"], per_column["f4"], atol=1e-10)


# ------------------------------------------------------------------------------------------
# "auto": correlation clusters
# ------------------------------------------------------------------------------------------

def _blocks(seed: int = 3, sizes=(5, 6, 7, 8), noise: int = 3, n: int = 200):
    rng = np.random.default_rng(seed)
    parts, truth = [], []
    for b, size in enumerate(sizes):
        factor = rng.normal(size=(n, 1))
        parts.append(factor + 0.2 * rng.normal(size=(n, size)))
        truth += [b] * size
    parts.append(rng.normal(size=(n, noise)))
    truth += [len(sizes) + i for i in range(noise)]
    X = np.concatenate(parts, axis=1)
    order = rng.permutation(X.shape[1])          # blocks interleaved in column order
    return X[:, order], np.asarray(truth)[order]


@pytest.mark.parametrize("anchored", [False, True])
def test_auto_groups_find_the_correlated_blocks_deterministically(anchored, monkeypatch):
    if anchored:  # the path for very wide data, on a small case
        monkeypatch.setattr(grouping, "MAX_CLUSTERED_COLUMNS", 20)
    X, truth = _blocks()
    columns = [f"c{j}" for j in range(X.shape[1])]
    groups = grouping.auto_groups(X, columns, max_groups=7)
    again = grouping.auto_groups(X, columns, max_groups=7)
    assert groups.names == again.names and np.array_equal(groups.index, again.index)
    # Every column in exactly one group; the blocks are the groups.
    members = groups.members()
    assert sorted(c for cols in members.values() for c in cols) == sorted(columns)
    assert len(groups.index) == len(columns)
    # 4 blocks of correlated columns and 3 independent ones: 7 clusters (with anchors, an
    # independent column that is no anchor joins another group).
    assert groups.n_groups == 7 or (anchored and 5 <= groups.n_groups <= 7)
    for block in range(4):
        assert len(set(groups.index[truth == block])) == 1
    assert len({groups.index[truth == b][0] for b in range(4)}) == 4
    # Named after the most central member, plus the count of the others.
    for name, cols in members.items():
        if len(cols) > 1:
            assert re.fullmatch(r"c\d+ \(\+\d+\)", name) and name.split(" ")[0] in cols
            assert name.endswith(f"(+{len(cols) - 1})")
        else:
            assert name == cols[0]
    assert groups.how == "auto" and groups.details["max_groups"] == 7
    assert ("anchors" in groups.details) is anchored


def test_auto_groups_through_explain_are_recorded():
    X, _ = _blocks(n=60)
    frame = pd.DataFrame(X, columns=[f"c{j}" for j in range(X.shape[1])])
    w = np.linspace(-1, 1, X.shape[1])
    expl = mlflow_xai.explain(lambda Z: np.asarray(Z) @ w, frame.iloc[:5],
                              background=frame.iloc[20:50], feature_groups="auto",
                              max_groups=7, explainers=["exact_shap"], checks=[])
    recorded = expl.summary["feature_groups"]
    assert recorded["how"] == "auto" and recorded["groups"] == 7
    assert "Spearman" in recorded["method"] and recorded["seconds"] >= 0
    assert list(expl.attributions["exact_shap"].columns) == list(recorded["members"])


def test_constant_columns_form_one_group():
    X, _ = _blocks(n=50)
    X = np.concatenate([X, np.ones((50, 3)), np.zeros((50, 1))], axis=1)
    columns = [f"c{j}" for j in range(X.shape[1])]
    groups = grouping.auto_groups(X, columns, max_groups=8)
    constant = groups.index[-4:]
    assert len(set(constant)) == 1 and groups.details["constant_columns"] == 4
    assert np.sum(groups.index == constant[0]) == 4


# ------------------------------------------------------------------------------------------
# Bad groups: clear errors
# ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ({"g": ["x0", "nope"]}, r"does not have: 'nope' \(in 'g'\)"),
    ({"g": ["x01"]}, r"'x01': did you mean 'x[01]'\?"),
    ({"a": ["x0", "x1"], "b": ["x1"]}, r"more than one place: 'x1' \(in 'a' and 'b'\)"),
    ({"a": ["x0", "x0"]}, r"'x0' \(in 'a' twice\)"),
    ({"a": []}, r"feature_groups\['a'\] is empty"),
    ({"a": "x0"}, r"must be a list of column names"),
    ({"x1": ["x0"]}, r"also column\(s\) left out"),
    ({"xai.g": ["x0"]}, r"reserves"),
    ({}, r"empty dict"),
    ("clusters", r"must be 'auto'"),
    (3, r"must be 'auto'"),
])
def test_bad_feature_groups_are_refused_with_a_clear_error(small, spec, message):
    X, background = small
    with pytest.raises(ConfigError, match=message):
        mlflow_xai.explain(_interacting, X, background=background, feature_groups=spec,
                           explainers=["exact_shap"], checks=[])


def test_every_entrance_validates_the_options():
    with pytest.raises(ConfigError, match="max_groups must be an integer >= 2"):
        XaiConfig.from_mapping({"feature_groups": "auto", "max_groups": 1})
    with pytest.raises(ConfigError, match="must be 'auto'"):
        XaiConfig.from_mapping({"feature_groups": ["x0"]}, where="autolog")
    config = XaiConfig.from_mapping({"feature_groups": {"g": ["x0"]}, "max_groups": 8})
    assert config.feature_groups == {"g": ["x0"]} and config.max_groups == 8


# ------------------------------------------------------------------------------------------
# 2,000 features
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wide():
    rng = np.random.default_rng(4)
    d, n = 2000, 200
    latent = rng.normal(size=(n, 40))
    X = latent[:, rng.integers(0, 40, d)] + 0.5 * rng.normal(size=(n, d))
    frame = pd.DataFrame(X, columns=[f"w{j}" for j in range(d)])
    beta = rng.normal(size=d) / np.sqrt(d)

    def model(Z):  # linear plus a few interactions
        Z = np.asarray(Z, dtype=float)
        return Z @ beta + 0.5 * Z[:, 0] * Z[:, 1] + 0.3 * np.tanh(Z[:, 2] * Z[:, 3])

    return frame, beta, model


def test_auto_plan_on_2000_features_explains_groups_within_its_budget(wide):
    frame, _, model = wide
    budget = 20.0
    expl = mlflow_xai.explain(model, frame, explainers="auto", budget_s=budget, checks=[])
    plan = expl.summary["plan"]
    assert plan["feature_groups"]["how"] == "auto" and plan["feature_groups"]["groups"] <= 64
    assert plan["wide_data"]["features"] == 2000 and "wide data" in plan["wide_data"]["reasons"][0]
    (chosen,) = plan["chosen"]
    assert chosen["method"] in ("kernel_shap", "permutation_shap")
    assert "groups of 2000 columns" in chosen["why"]
    assert plan["spent_s"] <= budget, plan
    entry = expl.summary["methods"][chosen["method"]]
    assert entry["status"] == "ok" and entry["grouping"] == "native"
    assert entry["efficiency_max_abs_gap"] < 1e-8
    assert entry["peak_memory_mb"] is None or entry["peak_memory_mb"] < 4096
    members = expl.summary["feature_groups"]["members"]
    assert sorted(c for cols in members.values() for c in cols) == sorted(frame.columns)
    assert list(expl.attributions[chosen["method"]].columns) == list(members)


def test_permutation_shap_on_2000_single_columns_is_bounded_and_exact_for_a_linear_model(wide):
    frame, beta, _ = wide

    def linear(Z):
        return np.asarray(Z, dtype=float) @ beta

    rows, background = frame.iloc[:3], frame.iloc[100:110]
    expl = mlflow_xai.explain(linear, rows, background=background, checks=[],
                              explainers={"permutation_shap": {"n_samples": 2}})
    entry = expl.summary["methods"]["permutation_shap"]
    # One antithetic pair: 2 x 1,999 coalitions per row per background row, plus endpoints.
    assert entry["model_evals"] == 3 * (2 * 1999) * 10 + 3 + 10
    assert entry["seconds"] < 60 and entry["peak_memory_mb"] is None or \
        entry["peak_memory_mb"] < 4096
    closed = beta * (rows.to_numpy() - background.to_numpy().mean(axis=0))
    np.testing.assert_allclose(expl.attributions["permutation_shap"].to_numpy(), closed,
                               atol=1e-9)


def test_auto_plan_falls_back_to_permutation_shap_when_grouping_is_off(wide):
    frame, _, model = wide
    expl = mlflow_xai.explain(model, frame.iloc[:3], background=frame.iloc[100:108],
                              explainers="auto", feature_groups=False, checks=[])
    plan = expl.summary["plan"]
    (chosen,) = plan["chosen"]
    assert chosen["method"] == "permutation_shap", chosen
    assert "feature_groups=False" in chosen["why"] and "feature_groups" not in plan
    left = {x["method"]: x["why"] for x in plan["left_out"]}
    assert left["kernel_shap"].startswith("not used")
    assert expl.attributions["permutation_shap"].shape == (3, 2000)


def test_forbid_top_k_on_a_column_inside_a_group_judges_its_group():
    """A grouped run ranks groups: a forbidden column is in the top k when its group is
    (before, a rule naming the raw column passed silently: fail-open)."""
    from mlflow_xai.governance import evaluate_policy, load_policy

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(60, 6)), columns=["sex", "zip", "a", "b", "c", "d"])

    def model(Z):
        Z = np.asarray(Z, dtype=float)
        return 3 * Z[:, 0] + 0.5 * Z[:, 2] + 0.1 * Z[:, 3]

    expl = mlflow_xai.explain(model, X, explainers=["kernel_shap"], checks=[],
                              feature_groups={"demographics": ["sex", "zip"]})
    assert list(expl.attributions["kernel_shap"].columns)[0] == "demographics"
    policy = load_policy({"rules": [{"name": "no-sex-on-top", "forbid_top_k": {
        "features": ["sex"], "k": 1, "method": "kernel_shap"}}]})
    outcome = evaluate_policy(policy, expl)
    assert outcome["verdict"] == "failed"
    assert "sex (in group 'demographics')" in outcome["rules"][0]["message"]
