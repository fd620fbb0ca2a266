"""Permutation SHAP (Strumbelj & Kononenko, 2014) with antithetic permutations, batched.

A set of permutations, each followed by its reverse, is drawn once and shared by all rows; every
prefix coalition of every permutation is evaluated in large batches. Each permutation telescopes
from E[f(background)] to f(x), so efficiency holds exactly.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import Attribution, Explainer, ExplainTask, coalition_values

from ._shapley import tensors


class PermutationShap(Explainer):
    name: ClassVar[str] = "permutation_shap"
    description: ClassVar[str] = (
        "Permutation SHAP, batched: antithetic permutation pairs shared by all rows; exact "
        "efficiency by telescoping."
    )
    shapley: ClassVar[bool] = True
    #: n_samples: model calls per explained row per background row; each permutation costs
    #: M - 1, and at least one antithetic pair is always run.
    defaults: ClassVar[dict[str, Any]] = {"n_samples": 1024}
    param_types: ClassVar[dict[str, str]] = {"n_samples": "int >= 1"}

    def explain(self, task: ExplainTask) -> Attribution:
        import torch

        params = self.validate_params()
        M = task.n_features
        pairs = max(1, (int(params["n_samples"]) - 2) // (2 * max(1, M - 1)))
        rng = np.random.default_rng(task.seed)
        forward = np.stack([rng.permutation(M) for _ in range(pairs)])
        perms = np.empty((2 * pairs, M), dtype=np.int64)
        perms[0::2], perms[1::2] = forward, forward[:, ::-1]
        P = len(perms)
        # prefix[p, k, j] = feature j is among the first k + 1 of permutation p (k < M - 1).
        position = np.argsort(perms, axis=1)                  # position of feature j in p
        prefix = position[:, None, :] <= np.arange(M - 1)[None, :, None]
        predict, x, background, f_x, base = tensors(task, task.X)
        masks = torch.as_tensor(prefix.reshape(-1, M), device=x.device)
        inner = coalition_values(predict, x, background, masks, max_rows=task.max_batch_rows)
        R = len(task.X)
        chain = torch.cat([base.reshape(1, 1, 1).expand(R, P, 1), inner.reshape(R, P, M - 1),
                           f_x[:, None, None].expand(R, P, 1)], dim=2)   # (R, P, M + 1)
        gains = chain[:, :, 1:] - chain[:, :, :-1]            # gain of the k-th feature added
        # Back to feature order: feature j was added at step position[p, j].
        idx = torch.as_tensor(position, device=x.device)[None].expand(R, P, M)
        phi = torch.gather(gains, 2, idx).mean(dim=1)
        task.on_rows_done(R)
        return Attribution(values=phi.cpu().numpy(), base_values=np.full(R, float(base)),
                           info={"permutations": int(P),
                                 "n_samples_effective": int(P * (M - 1) + 2)})
