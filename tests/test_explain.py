"""mlflow_xai.explain(): the Python API, on every kind of model it accepts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import mlflow_xai
from tests.conftest import train_torch_mlp


def test_explain_returns_frames_indexed_like_the_input(logreg, cancer_small, fast_explainers):
    X, y = cancer_small
    X = X.set_index(pd.Index([f"patient-{i}" for i in range(len(X))]))
    expl = mlflow_xai.explain(logreg, X, targets=y.to_numpy(), explainers=fast_explainers,
                              max_rows=30, background_rows=20)
    assert set(expl.attributions) == {"kernel_shap", "permutation_shap", "lime"}
    for frame in expl.attributions.values():
        assert list(frame.columns) == list(X.columns)
        assert len(frame) == 30 and frame.index.isin(X.index).all()
    assert set(expl.importance.columns) == set(fast_explainers)
    assert list(expl.importance.index) == list(X.columns)
    # Binary classifier: the positive class probability is explained.
    base = expl.base_values["kernel_shap"]
    proba = logreg.predict_proba(X.loc[base.index])[:, 1]
    total = expl.attributions["kernel_shap"].sum(axis=1) + base
    np.testing.assert_allclose(total, proba, atol=1e-8)
    assert expl.summary["data"] == {**expl.summary["data"], "rows_total": 120,
                                    "rows_explained": 30, "rows_sampled": True}


def test_default_runs_every_method_that_applies_and_says_why_not(logreg, cancer_small):
    X, _ = cancer_small
    expl = mlflow_xai.explain(logreg, X, max_rows=5, background_rows=10)
    statuses = {m: e["status"] for m, e in expl.summary["methods"].items()}
    gradient = {"saliency", "input_x_gradient", "integrated_gradients", "smoothgrad",
                "smoothgrad_sq", "vargrad", "gradient_shap", "deeplift"}
    assert statuses == {"kernel_shap": "ok", "lime": "ok", "permutation_importance": "ok",
                        "permutation_shap": "ok", "exact_shap": "ok", "tree_shap": "skipped",
                        "rise": "skipped", "sobol": "skipped",
                        **{name: "skipped" for name in gradient}}
    assert "image data, not tabular" in expl.summary["methods"]["rise"]["reason"]
    assert "tree model" in expl.summary["methods"]["tree_shap"]["reason"]
    assert "gradients" in expl.summary["methods"]["saliency"]["reason"]


def test_importance_is_mean_absolute_attribution(logreg, cancer_small):
    X, _ = cancer_small
    expl = mlflow_xai.explain(logreg, X, explainers={"kernel_shap": {"n_samples": 100}},
                              max_rows=20)
    manual = expl.attributions["kernel_shap"].abs().mean()
    np.testing.assert_allclose(expl.importance["kernel_shap"], manual)
    assert expl.top_features("kernel_shap", 3) == list(manual.sort_values(
        ascending=False).index[:3])


def test_linear_regression_matches_closed_form_shap(linreg, diabetes):
    X, _ = diabetes
    bg = X.iloc[100:140]
    expl = mlflow_xai.explain(linreg, X.iloc[:25], background=bg,
                              explainers=["kernel_shap", "permutation_shap"])
    expected = linreg.coef_ * (X.iloc[:25] - bg.mean())
    for method in ("kernel_shap", "permutation_shap"):
        np.testing.assert_allclose(expl.attributions[method], expected, atol=1e-8)
        assert expl.summary["methods"][method]["efficiency_max_abs_gap"] < 1e-8


def test_same_seed_same_result_other_seed_other_sample(logreg, cancer_small, fast_explainers):
    X, _ = cancer_small
    a = mlflow_xai.explain(logreg, X, explainers=fast_explainers, max_rows=15, seed=3)
    b = mlflow_xai.explain(logreg, X, explainers=fast_explainers, max_rows=15, seed=3)
    c = mlflow_xai.explain(logreg, X, explainers=fast_explainers, max_rows=15, seed=4)
    for method in a.attributions:
        pd.testing.assert_frame_equal(a.attributions[method], b.attributions[method])
    assert not a.attributions["lime"].index.equals(c.attributions["lime"].index)


def test_tree_shap_on_random_forest_is_exact_in_probability_space(forest, cancer_small):
    X, _ = cancer_small
    expl = mlflow_xai.explain(forest, X, explainers=["tree_shap"], max_rows=40)
    total = expl.attributions["tree_shap"].sum(axis=1) + expl.base_values["tree_shap"]
    np.testing.assert_allclose(total, forest.predict_proba(X.loc[total.index])[:, 1], atol=1e-6)
    assert expl.summary["methods"]["tree_shap"]["model_evals"] == 40  # no model calls but f(x)


@pytest.mark.parametrize("library", ["xgboost", "lightgbm"])
def test_tree_shap_uses_native_contributions(library, cancer_small):
    X, y = cancer_small
    if library == "xgboost":
        import xgboost

        model = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y)
        margin = model.predict(X, output_margin=True)
    else:
        import lightgbm

        model = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, y)
        margin = model.predict(X, raw_score=True)
    expl = mlflow_xai.explain(model, X, explainers=["tree_shap"])
    total = expl.attributions["tree_shap"].sum(axis=1) + expl.base_values["tree_shap"]
    np.testing.assert_allclose(total, margin, rtol=1e-5, atol=1e-5)
    assert expl.summary["methods"]["tree_shap"]["output_space"] == "margin"


def test_multiclass_explains_each_rows_predicted_class():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True, as_frame=True)
    model = LogisticRegression(max_iter=1000).fit(X, y)
    expl = mlflow_xai.explain(model, X, explainers={"kernel_shap": {"n_samples": 64}},
                              max_rows=45, seed=1)
    predicted = model.predict(X.loc[expl.outputs.index])
    assert (expl.outputs.to_numpy() == predicted).all()
    proba = model.predict_proba(X.loc[expl.outputs.index])
    explained = proba[np.arange(len(proba)), predicted]
    total = expl.attributions["kernel_shap"].sum(axis=1) + expl.base_values["kernel_shap"]
    np.testing.assert_allclose(total, explained, atol=1e-8)
    assert "predicted class" in expl.summary["output"]
    # Naming a class explains that class for every row.
    one = mlflow_xai.explain(model, X, explainers={"kernel_shap": {"n_samples": 64}},
                             max_rows=10, output=2)
    assert set(one.outputs) == {2}


def test_plain_callable_and_unknown_output(diabetes):
    X, _ = diabetes
    w = np.arange(X.shape[1], dtype=float)
    expl = mlflow_xai.explain(lambda a: a @ w, X.to_numpy(), explainers=["permutation_shap"],
                              max_rows=10)
    assert list(expl.attributions["permutation_shap"].columns) == [f"x{i}" for i in range(10)]
    with pytest.raises(mlflow_xai.errors.XaiError, match="single output"):
        mlflow_xai.explain(lambda a: a @ w, X.to_numpy(), explainers=["kernel_shap"], output=3)


def test_torch_module_is_explained_on_cpu(cancer_small):
    import torch

    X, y = cancer_small
    Xs = ((X - X.mean()) / X.std()).to_numpy(np.float32)
    net = train_torch_mlp(Xs, y.to_numpy())
    expl = mlflow_xai.explain(net, Xs, explainers=["kernel_shap"], max_rows=10, device="auto")
    assert expl.summary["device"] == "cpu"
    assert expl.summary["model"]["kind"] == "torch"
    with torch.no_grad():
        logits = net(torch.tensor(Xs))[:, 1].numpy()
    total = expl.attributions["kernel_shap"].sum(axis=1) + expl.base_values["kernel_shap"]
    np.testing.assert_allclose(total, logits[expl.attributions["kernel_shap"].index], atol=1e-4)


def test_cuda_request_without_cuda_fails_clearly(logreg, cancer_small):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    X, _ = cancer_small
    with pytest.raises(mlflow_xai.errors.DeviceError, match="CUDA is not available"):
        mlflow_xai.explain(logreg, X, device="cuda")
    with pytest.raises(mlflow_xai.errors.DeviceError, match="unknown device"):
        mlflow_xai.explain(logreg, X, device="tpu")


def test_categorical_columns_are_encoded_when_the_model_accepts_them():
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(0)
    colour = rng.choice(["red", "green", "blue"], size=200)
    size = rng.normal(size=200)
    X = pd.DataFrame({"colour": colour, "size": size})
    y = (colour == "red") * 3.0 + size
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["colour"]), remainder="passthrough"),
        LinearRegression()).fit(X, y)
    expl = mlflow_xai.explain(model, X, explainers=["permutation_shap", "kernel_shap"],
                              max_rows=40)
    assert expl.summary["data"]["encoded_columns"] == ["colour"]
    for method in ("permutation_shap", "kernel_shap"):
        total = expl.attributions[method].sum(axis=1) + expl.base_values[method]
        np.testing.assert_allclose(total, model.predict(X.loc[total.index]), atol=1e-8)
    assert expl.importance.loc["colour", "kernel_shap"] > 0.5


def test_non_strict_records_a_failing_method(logreg, cancer_small):
    X, _ = cancer_small
    expl = mlflow_xai.explain(logreg, X, explainers={"kernel_shap": {"n_samples": 32},
                                                    "permutation_importance": {"scoring": "x"}},
                              strict=False, max_rows=10)
    entry = expl.summary["methods"]["permutation_importance"]
    assert entry["status"] == "failed" and "scoring" in entry["error"]
    assert expl.summary["status"] == "failed"
    assert "kernel_shap" in expl.attributions
    with pytest.raises(mlflow_xai.errors.ConfigError, match="scoring"):
        mlflow_xai.explain(logreg, X, explainers={"permutation_importance": {"scoring": "x"}})


def test_permutation_importance_with_and_without_targets(linreg, diabetes):
    X, y = diabetes
    with_targets = mlflow_xai.explain(linreg, X, targets=y, explainers=["permutation_importance"])
    without = mlflow_xai.explain(linreg, X, explainers=["permutation_importance"])
    info = with_targets.summary["methods"]["permutation_importance"]
    assert info["scoring"] == "targets"
    assert without.summary["methods"]["permutation_importance"]["scoring"] == "output"
    # Both rank the largest-effect feature first (|coef| * std of the column).
    effect = (np.abs(linreg.coef_) * X.std()).sort_values(ascending=False)
    assert with_targets.top_features("permutation_importance", 1) == [effect.index[0]]
    assert without.top_features("permutation_importance", 1) == [effect.index[0]]
    assert "permutation_importance" not in with_targets.attributions  # global only


def test_output_dir_writes_the_artifact_contract(logreg, cancer_small, tmp_path, fast_explainers):
    X, y = cancer_small
    mlflow_xai.explain(logreg, X, targets=y, explainers=fast_explainers, max_rows=20,
                       output_dir=tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    importance = json.loads((tmp_path / "importance.json").read_text())
    assert summary["status"] == "ok" and set(importance) == set(fast_explainers)
    ranks = sorted(v["rank"] for v in importance["kernel_shap"].values())
    assert ranks == list(range(1, X.shape[1] + 1))
    table = pd.read_parquet(tmp_path / "attributions" / "kernel_shap.parquet")
    assert list(table.columns) == list(X.columns) + ["xai.base_value", "xai.output"]
    for method in fast_explainers:
        assert (tmp_path / "plots" / f"{method}_bar.png").stat().st_size > 5000
    assert (tmp_path / "plots" / "kernel_shap_beeswarm.png").exists()
    assert not (tmp_path / "plots" / "permutation_importance_beeswarm.png").exists()


def test_progress_bar_is_shown_when_asked(logreg, cancer_small, capsys):
    X, _ = cancer_small
    mlflow_xai.explain(logreg, X, explainers={"kernel_shap": {"n_samples": 32}}, max_rows=5,
                       progress=True)
    assert "mlflow-xai" in capsys.readouterr().err
    mlflow_xai.explain(logreg, X, explainers={"kernel_shap": {"n_samples": 32}}, max_rows=5,
                       progress=False)
    assert capsys.readouterr().err == ""


def test_string_columns_declared_in_the_signature_are_encoded(experiment):
    import mlflow
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(1)
    X = pd.DataFrame({"plan": rng.choice(["basic", "pro", "team"], 300),
                      "seats": rng.integers(1, 50, 300).astype(float)})
    y = ((X["plan"] == "team") | (X["seats"] > 40)).astype(int)
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(), ["plan"]), remainder="passthrough"),
        LogisticRegression(max_iter=1000)).fit(X, y)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(model, name="model", input_example=X.head(3),
                                        pip_requirements=["scikit-learn"])
    assert info.signature.inputs.input_types()[0].name == "string"
    expl = mlflow_xai.explain(info.model_uri, X, explainers=["kernel_shap"], max_rows=30)
    assert expl.summary["data"]["encoded_columns"] == ["plan"]
    total = expl.attributions["kernel_shap"].sum(axis=1) + expl.base_values["kernel_shap"]
    np.testing.assert_allclose(total, model.predict_proba(X.loc[total.index])[:, 1], atol=1e-8)


def test_torch_out_of_memory_halves_the_batch_and_retries():
    import torch

    from mlflow_xai.model import resolve_model

    class Picky(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.batches = []

        def forward(self, x):
            self.batches.append(len(x))
            if len(x) > 1000:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
            return x.sum(dim=1, keepdim=True)

    module = Picky()
    adapter = resolve_model(module)
    X = np.arange(5000 * 3, dtype=float).reshape(5000, 3)
    np.testing.assert_allclose(adapter.predict(X), X.sum(axis=1), rtol=1e-6)
    # Default batch 8192 (all 5000 rows), then halved until it fits, then kept.
    assert module.batches[:5] == [5000, 4096, 2048, 1024, 512]
    assert set(module.batches[4:]) == {512, 5000 % 512}
