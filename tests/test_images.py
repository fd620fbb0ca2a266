"""Image explanations on a small CNN trained on scikit-learn's bundled digits (8x8 images)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mlflow_xai


@pytest.fixture(scope="module")
def digits_cnn():
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]           # (N, 1, 8, 8)
    labels = digits.target
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 4 * 4, 10))
    x, y = torch.as_tensor(images[:1500]), torch.as_tensor(labels[:1500])
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = (net(torch.as_tensor(images[1500:])).argmax(1).numpy() == labels[1500:]).mean()
    assert accuracy > 0.85, f"the test CNN did not learn digits (accuracy {accuracy:.2f})"
    return net, images, labels


IMAGE_METHODS = {"rise": {"n_samples": 500, "grid_size": 4}, "sobol": {"n_samples": 16,
                 "grid_size": 4}, "integrated_gradients": {"n_steps": 16},
                 "saliency": {}, "smoothgrad": {"n_samples": 8}, "deeplift": {}}


def test_every_image_method_runs_on_the_digits_cnn(digits_cnn, tmp_path):
    net, images, _ = digits_cnn
    expl = mlflow_xai.explain(net, images[1500:1512], background=images[:40],
                              explainers=IMAGE_METHODS, output_dir=tmp_path)
    assert set(expl.heatmaps) == set(IMAGE_METHODS)
    for name, maps in expl.heatmaps.items():
        assert maps.shape == (12, 8, 8) and np.isfinite(maps).all(), name
        assert np.abs(maps).sum() > 0, name
        saved = np.load(tmp_path / "attributions" / f"{name}.npy")
        np.testing.assert_allclose(saved, maps.astype(np.float32))
        assert (tmp_path / "plots" / f"{name}_overlay.png").stat().st_size > 3000
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["data"]["image_shape"] == [1, 8, 8]
    # Multiclass: each image is explained for its predicted digit.
    import torch

    with torch.no_grad():
        predicted = net(torch.as_tensor(images[1500:1512])).argmax(1).numpy()
    assert list(expl.outputs) == list(predicted)
    assert not list((tmp_path / "attributions").glob("*.parquet"))


def test_tabular_methods_are_skipped_for_images_with_a_reason(digits_cnn):
    net, images, _ = digits_cnn
    expl = mlflow_xai.explain(net, images[:4], background=images[4:10],
                              explainers=["kernel_shap", "saliency"])
    entry = expl.summary["methods"]["kernel_shap"]
    assert entry["status"] == "skipped" and "tabular data, not image" in entry["reason"]
    assert expl.summary["methods"]["saliency"]["status"] == "ok"


@pytest.mark.parametrize("method", ["rise", "integrated_gradients"])
def test_deleting_top_pixels_hurts_more_than_deleting_random_pixels(digits_cnn, method):
    """A faithfulness sanity check: the most attributed pixels matter to the model."""
    import torch

    net, images, _ = digits_cnn
    subset = images[1500:1540]
    expl = mlflow_xai.explain(net, subset, background=images[:50],
                              explainers={method: IMAGE_METHODS[method]})
    maps = expl.heatmaps[method].reshape(len(subset), -1)
    classes = np.asarray(expl.outputs)
    k = 13  # about 20 % of the 64 pixels
    rng = np.random.default_rng(0)
    top, rand = subset.copy().reshape(len(subset), -1), subset.copy().reshape(len(subset), -1)
    for i in range(len(subset)):
        top[i, np.argsort(-maps[i])[:k]] = 0.0
        rand[i, rng.choice(64, k, replace=False)] = 0.0

    def score(batch):
        with torch.no_grad():
            out = torch.softmax(net(torch.as_tensor(batch.reshape(-1, 1, 8, 8))), dim=1)
        return out.numpy()[np.arange(len(batch)), classes]

    base = score(subset)
    assert (base - score(top)).mean() > 2 * (base - score(rand)).mean()


def test_sobol_gives_zero_to_cells_the_model_never_reads(digits_cnn):
    import torch

    class LeftHalf(torch.nn.Module):
        def forward(self, x):
            return (x[:, :, :, :4] ** 2).sum(dim=(1, 2, 3))[:, None]

    _, images, _ = digits_cnn
    expl = mlflow_xai.explain(LeftHalf(), images[:5], background=images[5:20],
                              explainers={"sobol": {"n_samples": 32, "grid_size": 4}})
    maps = expl.heatmaps["sobol"]
    assert np.abs(maps[:, :, 4:]).max() < 1e-12
    assert (maps[:, :, :4].sum(axis=(1, 2)) > 0).all()


def test_image_input_errors_are_clear(digits_cnn):
    net, images, _ = digits_cnn
    bad = images[:5].copy()
    bad[2, 0, 3, 3] = np.nan
    with pytest.raises(mlflow_xai.errors.InvalidInputError, match="NaN or infinite pixels"):
        mlflow_xai.explain(net, bad, explainers=["saliency"])
    with pytest.raises(mlflow_xai.errors.InvalidInputError, match=r"\(N, C, H, W\); got \(5, 8, 8\)"):
        mlflow_xai.explain(net, images[:5], background=images[:5, 0], explainers=["saliency"])


def test_autolog_logs_image_overlays(experiment, digits_cnn):
    import mlflow

    net, images, _ = digits_cnn
    mlflow_xai.autolog(data=images[1500:1506], background=images[:20],
                       explainers={"integrated_gradients": {"n_steps": 8},
                                   "rise": {"n_samples": 200, "grid_size": 4}})
    with mlflow.start_run() as run:
        mlflow.pytorch.log_model(net, name="model", input_example=images[:2],
                                 serialization_format="pickle", pip_requirements=["torch"])
    client = mlflow.MlflowClient()
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "xai/plots")}
    arrays = {a.path for a in client.list_artifacts(run.info.run_id, "xai/attributions")}
    assert {"xai/plots/integrated_gradients_overlay.png", "xai/plots/rise_overlay.png"} <= plots
    assert {"xai/attributions/integrated_gradients.npy", "xai/attributions/rise.npy"} <= arrays
    assert client.get_run(run.info.run_id).data.tags["mlflow_xai.status"] == "ok"
