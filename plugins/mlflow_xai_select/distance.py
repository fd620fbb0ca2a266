"""``distance_correlation``: dCor of each feature with the target (Szekely et al., 2007), in torch.

dCor catches non-linear and non-monotone dependence (it is 0 only under independence). The
V-statistic is computed without the n x n distance matrices, from these sums:

    dCov^2 = S_ab / n^2 + (S_a / n^2)(S_b / n^2) - 2 sum_i a_i. b_i. / n^3

where ``a_ij = |x_i - x_j|``, ``b_ij`` the target distance, ``a_i.`` a row sum and ``S`` a total.

* Class targets (``b_ij = 1[y_i != y_j]``, the distance of one-hot labels up to a factor that
  dCor ignores): every sum follows from sorting each feature, overall and within each class,
  so the cost is O(n log n) per feature and exact on all rows.
* Continuous targets: the cross sum ``S_ab`` needs the pairs, computed in row blocks whose
  size keeps the (block, n, features) tensor within ``block_mb``; O(n^2) time, so rows beyond
  ``max_rows`` are subsampled with the seed (recorded in the info).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mlflow_xai.plugin_api import (
    SUBSET_DEFAULTS,
    ConfigError,
    ExplainTask,
    Selection,
    Selector,
    choose_subset,
)

from ._common import check_positive_int, targets_of


class DistanceCorrelation(Selector):
    name: ClassVar[str] = "distance_correlation"
    description: ClassVar[str] = (
        "Distance correlation with the target (non-linear dependence), batched in torch: "
        "exact O(n log n) by sorting for class targets, row blocks of bounded memory otherwise."
    )
    #: max_rows: rows used for continuous targets (O(n^2) pairs); block_mb: memory of one
    #: block of pairwise distances; method: 'auto', 'sorted' (class targets) or 'blocked'.
    defaults: ClassVar[dict[str, Any]] = {**SUBSET_DEFAULTS, "max_rows": 5000,
                                          "block_mb": 256, "method": "auto"}
    param_types: ClassVar[dict[str, str]] = {"max_rows": "int >= 2", "block_mb": "int >= 1",
                                         "method": "'auto' | 'sorted' | 'blocked'"}

    def select(self, task: ExplainTask) -> Selection:
        import torch

        params = self.validate_params()
        max_rows = check_positive_int(params["max_rows"], self.name, "max_rows", minimum=2)
        block_mb = check_positive_int(params["block_mb"], self.name, "block_mb")
        method = params["method"]
        if method not in ("auto", "sorted", "blocked"):
            raise ConfigError(f"{self.name}: method must be 'auto', 'sorted' or 'blocked', got "
                              f"{method!r}.")
        y, discrete = targets_of(task, self.name)
        if method == "sorted" and not discrete:
            raise ConfigError(f"{self.name}: method='sorted' needs class targets; continuous "
                              "targets use method='blocked'.")
        device = torch.device(task.device)
        X = task.X
        info: dict[str, Any] = {"rows": len(X)}
        if method == "blocked" or (method == "auto" and not discrete):
            if len(X) > max_rows:
                rows = np.sort(np.random.default_rng(task.seed).choice(len(X), max_rows,
                                                                         replace=False))
                X, y = X[rows], y[rows]
                info.update(rows=max_rows, subsampled_from=len(task.X))
            target = torch.as_tensor(y, dtype=torch.float64, device=device)
            scores = dcor_blocked(torch.as_tensor(X, dtype=torch.float64, device=device),
                                  target, block_bytes=block_mb * 2**20)
            info["method"] = "blocked"
        else:
            scores = dcor_classes(torch.as_tensor(X, dtype=torch.float64, device=device),
                                  torch.as_tensor(y, device=device))
            info["method"] = "sorted"
        scores = scores.cpu().numpy()
        return Selection(scores=scores, selected=choose_subset(scores, params), info=info)


def _row_sums_sorted(X: Any) -> Any:
    """``sum_j |x_i - x_j|`` for every row and column of ``X`` (n, d), by sorting: for the
    value at sorted position r, ``s_r (2r - n) + T - 2 P_r`` with ``P_r`` the prefix sum."""
    import torch

    n = X.shape[0]
    values, order = torch.sort(X, dim=0)
    prefix = torch.cumsum(values, dim=0) - values
    r = torch.arange(n, dtype=X.dtype, device=X.device)[:, None]
    sums_sorted = values * (2 * r - n) + values.sum(0, keepdim=True) - 2 * prefix
    return torch.empty_like(X).scatter_(0, order, sums_sorted)


def _dcor_from_sums(n: int, s_ab: Any, s_a: Any, s_b: Any, ra_rb: Any, s_aa: Any, ra_ra: Any,
                    s_bb: Any, rb_rb: Any) -> Any:
    import torch

    cov = s_ab / n**2 + (s_a / n**2) * (s_b / n**2) - 2 * ra_rb / n**3
    var_x = s_aa / n**2 + (s_a / n**2) ** 2 - 2 * ra_ra / n**3
    var_y = s_bb / n**2 + (s_b / n**2) ** 2 - 2 * rb_rb / n**3
    denom = torch.sqrt(torch.clamp(var_x * var_y, min=0))
    ratio = torch.where(denom > 0, cov / torch.where(denom > 0, denom, 1.0), 0.0)
    return torch.sqrt(torch.clamp(ratio, min=0))


def _x_terms(X: Any) -> tuple[Any, Any, Any, Any]:
    """Row sums, total, sum of squares of ``|x_i - x_j|`` and sum of squared row sums."""
    n = X.shape[0]
    rows = _row_sums_sorted(X)
    s_aa = 2 * n * (X**2).sum(0) - 2 * X.sum(0) ** 2
    return rows, rows.sum(0), s_aa, (rows**2).sum(0)


def dcor_classes(X: Any, labels: Any) -> Any:
    """Exact dCor of every column of ``X`` (n, d) with class labels, O(n log n) per column."""
    import torch

    n = X.shape[0]
    X = X - X.mean(0, keepdim=True)  # distances are shift-invariant; centring keeps precision
    rows_a, s_a, s_aa, ra_ra = _x_terms(X)
    classes, codes, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    counts = counts.to(X.dtype)
    rows_b = n - counts[codes]                      # b_i. = rows of another class
    s_b = rows_b.sum()
    same_class = torch.zeros_like(s_a)              # sum of a_ij over pairs of one class
    for k in range(len(classes)):
        members = X[codes == k]
        if len(members) > 1:
            same_class += _row_sums_sorted(members).sum(0)
    s_ab = s_a - same_class
    ra_rb = (rows_a * rows_b[:, None]).sum(0)
    return _dcor_from_sums(n, s_ab, s_a, s_b, ra_rb, s_aa, ra_ra, s_b, (rows_b**2).sum())


def dcor_blocked(X: Any, y: Any, *, block_bytes: int = 256 * 2**20) -> Any:
    """Exact dCor of every column of ``X`` (n, d) with a continuous ``y`` (n,), pairs computed
    in blocks of rows so that memory stays near ``block_bytes``."""
    import torch

    n, d = X.shape
    X = X - X.mean(0, keepdim=True)
    y = (y - y.mean()).reshape(-1)
    rows_a, s_a, s_aa, ra_ra = _x_terms(X)
    rows_b, s_b, s_bb, rb_rb = _x_terms(y[:, None])
    rows_b = rows_b[:, 0]
    block = max(1, int(block_bytes // (8 * n * max(d, 1) * 2)))
    s_ab = torch.zeros(d, dtype=X.dtype, device=X.device)
    for start in range(0, n, block):
        a = torch.abs(X[start:start + block, None, :] - X[None, :, :])   # (m, n, d)
        b = torch.abs(y[start:start + block, None] - y[None, :])          # (m, n)
        s_ab += torch.einsum("ijd,ij->d", a, b)
    ra_rb = (rows_a * rows_b[:, None]).sum(0)
    return _dcor_from_sums(n, s_ab, s_a, s_b, ra_rb, s_aa, ra_ra, s_bb, rb_rb)
