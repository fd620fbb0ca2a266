"""Gradient attributions for torch models, batched over rows and samples on the device.

saliency (Simonyan et al., 2014), input_x_gradient (Shrikumar et al., 2016), integrated_gradients
(Sundararajan et al., 2017; Gauss-Legendre quadrature, as Captum), smoothgrad / smoothgrad_sq /
vargrad (Smilkov et al., 2017; Adebayo et al., 2018), gradient_shap (expected gradients,
Lundberg & Lee, 2017; Erion et al., 2021) and deeplift (Shrikumar et al., 2017, through Captum:
its rescale rule needs per-layer hooks that Captum already implements and tests).

The sampled ones (smoothgrad, smoothgrad_sq, vargrad, gradient_shap) also return the standard
error of each value from their own samples (``Attribution.standard_errors``): the mean over
``n_samples`` i.i.d. draws has SE = sample std / sqrt(n_samples); vargrad's variance has the
standard error of a variance estimate, from the draws' fourth central moment. With one sample
no error can be estimated and ``standard_errors`` is None.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Attribution, ConfigError, Explainer, ExplainTask, as_tensor


def input_gradients(task: ExplainTask, inputs):
    """d output / d input for every row of ``inputs`` (m, M), in slices of the batch budget."""
    import torch

    grads = []
    for start in range(0, len(inputs), task.max_batch_rows):
        x = inputs[start:start + task.max_batch_rows].detach().to(torch.float32)
        x.requires_grad_(True)
        out = task.forward_grad(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
        grads.append(grad.to(torch.float64))
    return torch.cat(grads)


def _baseline(task: ExplainTask, kind: str):
    if kind == "mean":
        return as_tensor(task.background.mean(axis=0), task.device)
    if kind == "zeros":
        return as_tensor(np.zeros(task.n_features), task.device)
    raise ConfigError(f"baseline must be 'mean' (of the background) or 'zeros', got {kind!r}.")


def _f(task: ExplainTask, x) -> np.ndarray:
    return task.tensor_predict()(x).detach().cpu().numpy()


def mean_standard_error(samples) -> np.ndarray | None:
    """SE of the mean over dim 1 of ``samples`` (rows, k, features): std (ddof 1) / sqrt(k);
    None for k < 2 (no spread to estimate it from)."""
    k = samples.shape[1]
    if k < 2:
        return None
    return (samples.std(dim=1, unbiased=True) / np.sqrt(k)).cpu().numpy()


def variance_standard_error(samples) -> np.ndarray | None:
    """SE of the (biased, 1/k) variance over dim 1 of ``samples`` (rows, k, features).

    For the unbiased s^2, Var(s^2) = (mu4 - sigma^4 (k - 3) / (k - 1)) / k (exact for i.i.d.
    draws); the 1/k variance is (k - 1) / k * s^2. mu4 and sigma^2 are the draws' own central
    moments (plug-in), so Gaussian gradients give about sqrt(2 / (k - 1)) * sigma^2.
    """
    k = samples.shape[1]
    if k < 2:
        return None
    centred = samples - samples.mean(dim=1, keepdim=True)
    var = centred.pow(2).sum(dim=1) / (k - 1)                          # s^2
    mu4 = centred.pow(4).mean(dim=1)
    var_s2 = (mu4 - var.pow(2) * (k - 3) / (k - 1)).clamp(min=0) / k
    return ((k - 1) / k * var_s2.sqrt()).cpu().numpy()


def with_error_info(result: Attribution) -> Attribution:
    """Add ``max_standard_error`` (over all rows and features; None when there are no
    standard errors or some are not finite) to ``result.info``, and, with standard errors,
    ``row_error_correlation`` 0: each row's samples are drawn independently, so the rows'
    errors are independent and average out in the global importance."""
    se = result.standard_errors
    finite = se is not None and se.size > 0 and bool(np.all(np.isfinite(se)))
    info = {**result.info, "max_standard_error": float(se.max()) if finite else None}
    if se is not None:
        info["row_error_correlation"] = 0.0
    result.info = info
    return result


class _GradientExplainer(Explainer):
    requires: ClassVar[tuple[str, ...]] = ("gradients",)
    data_types: ClassVar[tuple[str, ...]] = ("tabular", "image")
    stochastic: ClassVar[bool] = False
    #: The parameter that says how many gradient rows each explained row costs (None: one).
    samples_param: ClassVar[str | None] = None

    def rows_per_chunk(self, task: ExplainTask, params: dict[str, Any]) -> int:
        # A few gradient rows per explained row: fill whole device batches, as Captum does
        # with all rows at once, instead of many small forward/backward passes.
        per_row = max(1, int(params[self.samples_param])) if self.samples_param else 1
        return max(1, task.max_batch_rows // per_row)


class Saliency(_GradientExplainer):
    name: ClassVar[str] = "saliency"
    description: ClassVar[str] = "Saliency: absolute input gradient |df/dx|."

    def explain_rows(self, task: ExplainTask, X: np.ndarray, params: dict[str, Any]
                     ) -> Attribution:
        grads = input_gradients(task, as_tensor(X, task.device))
        return Attribution(values=grads.abs().cpu().numpy(), output_space="|gradient|")


class InputXGradient(_GradientExplainer):
    name: ClassVar[str] = "input_x_gradient"
    description: ClassVar[str] = "Input x gradient: x * df/dx."

    def explain_rows(self, task: ExplainTask, X: np.ndarray, params: dict[str, Any]
                     ) -> Attribution:
        x = as_tensor(X, task.device)
        return Attribution(values=(x * input_gradients(task, x)).cpu().numpy(),
                           output_space="input x gradient")


class IntegratedGradients(_GradientExplainer):
    name: ClassVar[str] = "integrated_gradients"
    description: ClassVar[str] = (
        "Integrated gradients from a baseline (background mean by default), Gauss-Legendre "
        "quadrature; attributions sum to f(x) - f(baseline) up to quadrature error.")
    #: n_steps: quadrature points (gradient calls per row); baseline: 'mean' or 'zeros'.
    defaults: ClassVar[dict[str, Any]] = {"n_steps": 50, "baseline": "mean"}
    param_types: ClassVar[dict[str, str]] = {"n_steps": "int >= 1", "baseline": "'mean' | 'zeros'"}
    samples_param: ClassVar[str | None] = "n_steps"

    def explain_rows(self, task: ExplainTask, X: np.ndarray, params: dict[str, Any]
                     ) -> Attribution:
        steps = int(params["n_steps"])
        if steps < 1:
            raise ConfigError(f"n_steps must be at least 1, got {steps}.")
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        alphas = as_tensor((nodes + 1) / 2, task.device)
        w = as_tensor(weights / 2, task.device)
        x = as_tensor(X, task.device)
        base = _baseline(task, params["baseline"])
        delta = x - base                                              # (R, M)
        path = base + alphas[None, :, None] * delta[:, None, :]       # (R, K, M)
        grads = input_gradients(task, path.reshape(-1, task.n_features))
        avg = (grads.reshape(len(x), steps, -1) * w[None, :, None]).sum(dim=1)
        f_base = float(_f(task, base[None])[0])
        return Attribution(values=(delta * avg).cpu().numpy(),
                           base_values=np.full(len(x), f_base),
                           info={"baseline": params["baseline"]})


class _NoisyGradients(_GradientExplainer):
    """Gradients at ``n_samples`` noisy copies of each row; noise = noise_level * feature std."""

    stochastic: ClassVar[bool] = True
    #: n_samples: noisy copies per row (gradient calls per row); noise_level: noise standard
    #: deviation as a fraction of each feature's standard deviation in the background.
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 50, "noise_level": 0.15}
    param_types: ClassVar[dict[str, str]] = {"n_samples": "int >= 1", "noise_level": "float >= 0"}
    samples_param: ClassVar[str | None] = "n_samples"

    def explain(self, task: ExplainTask) -> Attribution:
        # NumPy draws its stream value by value, so each row gets the same noise whatever the
        # chunk size or device (torch's CPU normal_ changes with the tensor size).
        self._rng = np.random.default_rng(task.seed)
        return with_error_info(super().explain(task))

    def noisy_gradients(self, task: ExplainTask, X: np.ndarray, params: dict[str, Any]):
        k = int(params["n_samples"])
        if k < 1:
            raise ConfigError(f"n_samples must be at least 1, got {k}.")
        x = as_tensor(X, task.device)
        sigma = as_tensor(task.background.std(axis=0) * float(params["noise_level"]),
                          task.device)
        noise = as_tensor(self._rng.standard_normal((len(x), k, task.n_features)), task.device)
        noisy = x[:, None, :] + noise * sigma
        return input_gradients(task, noisy.reshape(-1, task.n_features)).reshape(len(x), k, -1)


class SmoothGrad(_NoisyGradients):
    name: ClassVar[str] = "smoothgrad"
    description: ClassVar[str] = "SmoothGrad: mean gradient over noisy copies of the input."

    def explain_rows(self, task, X, params):
        grads = self.noisy_gradients(task, X, params)
        return Attribution(values=grads.mean(dim=1).cpu().numpy(), output_space="gradient",
                           standard_errors=mean_standard_error(grads))


class SmoothGradSq(_NoisyGradients):
    name: ClassVar[str] = "smoothgrad_sq"
    description: ClassVar[str] = "SmoothGrad-Squared: mean squared gradient over noisy copies."

    def explain_rows(self, task, X, params):
        squared = self.noisy_gradients(task, X, params).pow(2)
        return Attribution(values=squared.mean(dim=1).cpu().numpy(),
                           output_space="squared gradient",
                           standard_errors=mean_standard_error(squared))


class VarGrad(_NoisyGradients):
    name: ClassVar[str] = "vargrad"
    description: ClassVar[str] = "VarGrad: variance of the gradient over noisy copies."

    def explain_rows(self, task, X, params):
        grads = self.noisy_gradients(task, X, params)
        return Attribution(values=grads.var(dim=1, unbiased=False).cpu().numpy(),
                           output_space="gradient variance",
                           standard_errors=variance_standard_error(grads))


class GradientShap(_GradientExplainer):
    name: ClassVar[str] = "gradient_shap"
    description: ClassVar[str] = (
        "GradientSHAP / expected gradients: (x - b) * df/dx at b + a (x - b) for random "
        "background rows b and a ~ U(0, 1), averaged.")
    stochastic: ClassVar[bool] = True
    #: n_samples: (baseline, alpha) draws per row (gradient calls per row).
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 50}
    param_types: ClassVar[dict[str, str]] = {"n_samples": "int >= 1"}
    samples_param: ClassVar[str | None] = "n_samples"

    def explain(self, task: ExplainTask) -> Attribution:
        self._rng = np.random.default_rng(task.seed)  # chunk- and device-independent draws
        return with_error_info(super().explain(task))

    def explain_rows(self, task, X, params):
        import torch

        k = int(params["n_samples"])
        if k < 1:
            raise ConfigError(f"n_samples must be at least 1, got {k}.")
        x = as_tensor(X, task.device)
        bg = as_tensor(task.background, task.device)
        # One draw per row holds both its baseline picks and its alphas: rows stay aligned
        # with the stream however the rows are chunked.
        u = self._rng.random((len(x), k, 2))
        pick = as_tensor(np.minimum((u[..., 0] * len(bg)).astype(np.int64), len(bg) - 1),
                         task.device, dtype=torch.long)
        alpha = as_tensor(u[..., 1:], task.device)
        b = bg[pick]                                                  # (R, K, M)
        delta = x[:, None, :] - b
        grads = input_gradients(task, (b + alpha * delta).reshape(-1, task.n_features))
        terms = delta * grads.reshape(len(x), k, -1)                  # (R, K, M)
        values = terms.mean(dim=1)
        base = float(_f(task, bg).mean())
        return Attribution(values=values.cpu().numpy(), base_values=np.full(len(x), base),
                           standard_errors=mean_standard_error(terms))


class DeepLift(_GradientExplainer):
    name: ClassVar[str] = "deeplift"
    description: ClassVar[str] = (
        "DeepLIFT (rescale rule) through Captum, from a baseline (background mean by "
        "default); needs a module whose nonlinearities are nn.Module layers.")
    defaults: ClassVar[dict[str, Any]] = {"baseline": "mean"}
    param_types: ClassVar[dict[str, str]] = {"baseline": "'mean' | 'zeros'"}

    def supports(self, task: ExplainTask) -> str | None:
        reason = super().supports(task)
        if reason:
            return reason
        import torch

        module = task.torch_module
        if module is None or isinstance(module, (torch.fx.GraphModule, torch.jit.ScriptModule)):
            return ("deeplift needs an nn.Module built from layers; an exported (pt2) or "
                    "scripted program has no layers to attach the rescale rule to. Log the "
                    "model with serialization_format='pickle', or use integrated_gradients")
        return None

    def explain_rows(self, task, X, params):
        import torch
        from captum.attr import DeepLift as CaptumDeepLift

        module = task.torch_module
        shape = (-1, *task.image_shape) if task.image_shape else (-1, task.n_features)
        x = as_tensor(X, task.device).to(torch.float32).reshape(shape)
        base = _baseline(task, params["baseline"]).to(torch.float32).reshape(shape).expand_as(x)
        with torch.no_grad():
            out = module(x[:1])
        target = None if out.ndim == 1 else (task.output_index or 0)
        attr = CaptumDeepLift(module).attribute(x, baselines=base, target=target)
        task.count_model_rows(2 * len(x))  # Captum runs inputs and baselines as one batch
        f_base = float(_f(task, base[:1].reshape(1, -1).to(torch.float64))[0])
        return Attribution(values=attr.detach().to(torch.float64).reshape(len(X), -1)
                           .cpu().numpy(),
                           base_values=np.full(len(x), f_base),
                           info={"baseline": params["baseline"], "implementation": "captum"})


GRADIENT_METHODS = [Saliency, InputXGradient, IntegratedGradients, SmoothGrad, SmoothGradSq,
                    VarGrad, GradientShap, DeepLift]
