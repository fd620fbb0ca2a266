"""Faithfulness: do the features an explanation ranks high actually move the model?

Every score is reported next to a random-attribution baseline (ROAR's lesson: a score without
a baseline says nothing). Removing a feature means replacing it with its background mean.
(Missing background values are left out of that mean; see ``_stats.background_mean``.)
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Check, CheckContext, CheckResult

from ._stats import background_mean


def per_feature(ctx: CheckContext, values: np.ndarray) -> np.ndarray | None:
    """Attributions with one value per model feature (pixel maps repeated over channels)."""
    d = ctx.X.shape[1]
    if values.shape[1] == d:
        return values
    if d % values.shape[1] == 0:  # (H*W) map for C*H*W features
        return np.tile(values, (1, d // values.shape[1]))
    return None


def _curves(ctx: CheckContext, orders: np.ndarray, steps: int, insertion: bool) -> np.ndarray:
    """Model output as features are removed (or inserted) in ``orders`` (rows, d): (rows, steps+1)."""
    n, d = ctx.X.shape
    base = np.broadcast_to(background_mean(ctx.background), (n, d))
    cuts = np.unique(np.linspace(0, d, steps + 1).round().astype(int))
    variants = np.empty((n, len(cuts), d))
    for s, cut in enumerate(cuts):
        chosen = np.zeros((n, d), dtype=bool)
        np.put_along_axis(chosen, orders[:, :cut], True, axis=1)
        if insertion:
            variants[:, s] = np.where(chosen, ctx.X, base)
        else:
            variants[:, s] = np.where(chosen, base, ctx.X)
    return ctx.predict_rows(variants), cuts / d


def _gain(difference: np.ndarray, scale: float) -> float:
    """Mean AUC difference relative to the output scale; float noise (|gain| < 1e-9) is 0, so
    orders that coincide with the random ones neither pass nor fail by rounding."""
    gain = float(np.mean(difference) / scale)
    return 0.0 if abs(gain) < 1e-9 else gain


def _auc(curve: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    return np.trapezoid(curve, fractions, axis=1)


class DeletionInsertion(Check):
    name: ClassVar[str] = "deletion_insertion"
    description: ClassVar[str] = (
        "Deletion and insertion curves (Petsiuk et al., 2018): remove (insert) features in "
        "attribution order and track the output; areas compared with random orders.")
    default: ClassVar[bool] = True
    cost: ClassVar[str] = "2 x (steps + 1) x (methods + n_random) evaluations per row"
    defaults: ClassVar[dict[str, Any]] = {"steps": 20, "n_random": 3, "max_rows": 200,
                                          "min_gain": 0.0}
    param_types: ClassVar[dict[str, str]] = {"steps": "int >= 1", "n_random": "int >= 1",
                                         "max_rows": "int >= 1", "min_gain": "float"}

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_methods: int,
                             n_features: int | None = None) -> float | None:
        rows = min(n_rows, int(params["max_rows"]))
        return 2.0 * (params["steps"] + 1) * (n_methods + params["n_random"]) * rows

    def supports(self, ctx: CheckContext) -> str | None:
        if ctx.X.shape[1] < 2:  # every order is the same one: no gain can be measured
            return "deletion and insertion orders need at least 2 features"
        return None

    def run(self, ctx: CheckContext) -> CheckResult:
        params = self.validate_params()
        rng = np.random.default_rng(ctx.seed + 21)
        n, d = ctx.X.shape
        result = CheckResult()
        scale = np.abs(ctx.outputs - ctx.predict_rows(
            np.broadcast_to(background_mean(ctx.background), (n, 1, d)).copy())[:, 0]).mean()
        scale = max(float(scale), 1e-12)
        random_orders = [np.argsort(rng.random((n, d)), axis=1) for _ in range(params["n_random"])]
        random_auc = {}
        for mode in ("deletion", "insertion"):
            aucs = [_auc(*_curves(ctx, o, params["steps"], mode == "insertion"))
                    for o in random_orders]
            random_auc[mode] = np.mean(aucs, axis=0)
        curves: dict[str, Any] = {}
        for method in ctx.local_methods:
            values = per_feature(ctx, ctx.results[method].values)
            if values is None:
                continue
            order = np.argsort(-values, axis=1, kind="stable")   # most positive first
            deletion, fractions = _curves(ctx, order, params["steps"], insertion=False)
            insertion, _ = _curves(ctx, order, params["steps"], insertion=True)
            del_auc, ins_auc = _auc(deletion, fractions), _auc(insertion, fractions)
            result.figures.update({
                f"{method}/deletion_auc": float(del_auc.mean()),
                f"{method}/insertion_auc": float(ins_auc.mean()),
                f"{method}/deletion_gain": _gain(random_auc["deletion"] - del_auc, scale),
                f"{method}/insertion_gain": _gain(ins_auc - random_auc["insertion"], scale),
            })
            result.thresholds[f"{method}/deletion_gain"] = {"min": params["min_gain"]}
            result.thresholds[f"{method}/insertion_gain"] = {"min": params["min_gain"]}
            curves[method] = {"fractions": fractions.tolist(),
                              "deletion": deletion.mean(axis=0).tolist(),
                              "insertion": insertion.mean(axis=0).tolist()}
        if not curves:
            return CheckResult(status="skipped", reason="no local explainer ran")
        result.figures["random/deletion_auc"] = float(random_auc["deletion"].mean())
        result.figures["random/insertion_auc"] = float(random_auc["insertion"].mean())
        result.details = {"curves": curves, "output_scale": scale, "steps": params["steps"],
                          "removal": "background mean"}
        return result


class Infidelity(Check):
    name: ClassVar[str] = "infidelity"
    description: ClassVar[str] = (
        "Infidelity (Yeh et al., 2019) with subset-removal perturbations I = (x - baseline) on "
        "a random subset S: E[(beta * sum_S phi - (f(x) - f(x - I)))^2] / E[(f(x) - f(x - I))^2] "
        "with the best scale beta (Captum's normalize); 0 is perfect. A random attribution of "
        "the same values is scored alongside.")
    default: ClassVar[bool] = True
    cost: ClassVar[str] = "n_perturbations evaluations per row (shared by all methods)"
    defaults: ClassVar[dict[str, Any]] = {"n_perturbations": 20, "subset_fraction": 0.25}
    param_types: ClassVar[dict[str, str]] = {"n_perturbations": "int >= 1",
                                         "subset_fraction": "float in (0, 1]"}

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_methods: int,
                             n_features: int | None = None) -> float | None:
        return float(params["n_perturbations"]) * n_rows

    def run(self, ctx: CheckContext) -> CheckResult:
        params = self.validate_params()
        rng = np.random.default_rng(ctx.seed + 31)
        n, d = ctx.X.shape
        mask = _random_subsets(rng, n, params["n_perturbations"], d, params["subset_fraction"])
        removed = np.where(mask > 0, background_mean(ctx.background), ctx.X[:, None, :])
        drop = ctx.outputs[:, None] - ctx.predict_rows(removed)          # (n, k)
        norm = max(float((drop**2).mean()), 1e-12)
        result = CheckResult()
        for method in ctx.local_methods:
            values = per_feature(ctx, ctx.results[method].values)
            if values is None:
                continue
            random = rng.permutation(values.ravel()).reshape(values.shape)
            for key, phi in ((f"{method}/infidelity", values),
                             (f"{method}/random_infidelity", random)):
                mass = np.einsum("nkd,nd->nk", mask, phi)
                beta = (mass * drop).sum() / max(float((mass**2).sum()), 1e-12)
                result.figures[key] = float(((beta * mass - drop) ** 2).mean() / norm)
            result.figures[f"{method}/infidelity_gain"] = (
                result.figures[f"{method}/random_infidelity"]
                - result.figures[f"{method}/infidelity"])
        if not result.figures:
            return CheckResult(status="skipped", reason="no local explainer ran")
        result.details = {"perturbation": "subset removal to the background mean",
                          "perturbations": params["n_perturbations"]}
        return result


def _random_subsets(rng: np.random.Generator, n: int, k: int, d: int, fraction: float
                    ) -> np.ndarray:
    size = max(1, int(round(d * fraction)))
    order = np.argsort(rng.random((n, k, d)), axis=2)[:, :, :size]
    mask = np.zeros((n, k, d))
    np.put_along_axis(mask, order, 1.0, axis=2)
    return mask


class FaithfulnessCorrelation(Check):
    name: ClassVar[str] = "faithfulness_correlation"
    description: ClassVar[str] = (
        "Faithfulness correlation (Bhatt et al., 2020): correlation between the attribution "
        "mass of random feature subsets and the output drop when they are removed.")
    default: ClassVar[bool] = True
    cost: ClassVar[str] = "n_subsets evaluations per row (shared by all methods)"
    defaults: ClassVar[dict[str, Any]] = {"n_subsets": 30, "subset_fraction": 0.25}
    param_types: ClassVar[dict[str, str]] = {"n_subsets": "int >= 2", "subset_fraction": "float in (0, 1]"}

    def estimated_model_rows(self, params: dict[str, Any], *, n_rows: int, n_methods: int,
                             n_features: int | None = None) -> float | None:
        return float(params["n_subsets"]) * n_rows

    def run(self, ctx: CheckContext) -> CheckResult:
        params = self.validate_params()
        rng = np.random.default_rng(ctx.seed + 41)
        n, d = ctx.X.shape
        mask = _random_subsets(rng, n, params["n_subsets"], d, params["subset_fraction"])
        size = int(mask[0, 0].sum())
        removed = np.where(mask > 0, background_mean(ctx.background), ctx.X[:, None, :])
        drop = ctx.outputs[:, None] - ctx.predict_rows(removed)
        result = CheckResult()
        for method in ctx.local_methods:
            values = per_feature(ctx, ctx.results[method].values)
            if values is None:
                continue
            mass = np.einsum("nkd,nd->nk", mask, values)
            for name, phi_mass in ((method, mass), ("random", None)):
                if phi_mass is None:
                    phi_mass = np.einsum("nkd,nd->nk", mask,
                                         rng.permutation(values.ravel()).reshape(values.shape))
                corr = [np.corrcoef(phi_mass[i], drop[i])[0, 1] for i in range(n)
                        if np.ptp(phi_mass[i]) > 0 and np.ptp(drop[i]) > 0]
                key = f"{method}/faithfulness_correlation" if name == method else \
                    f"{method}/random_faithfulness_correlation"
                result.figures[key] = float(np.mean(corr)) if corr else float("nan")
        if not result.figures:
            return CheckResult(status="skipped", reason="no local explainer ran")
        result.details = {"subset_size": size, "subsets": params["n_subsets"]}
        return result
