"""The default estimator of kernel_shap: odd-polynomial regression on a stratified paired design.

Why this estimator (the study behind it is in ``benchmarks/bench_estimators.py`` and its section
of ``benchmarks/RESULTS.md``):

* **Only the odd part of the game carries Shapley value.** Write a coalition as z in {-1, +1}^M
  and the game in the parity basis chi_T(z) = prod_{j in T} z_j. A parity of even order takes the
  same value on S and on its complement, so it is symmetric and its Shapley values are 0; one of
  odd order |T| gives each j in T the value 2 / |T| (times its coefficient). So the Shapley
  values of v are those of its odd part o(S) = (v(S) - v(~S)) / 2, which one complementary pair
  measures exactly, and a design of pairs loses nothing by regressing o alone.
* **Paired Kernel SHAP is the first-order odd fit** (o ~ sum_j c_j z_j, phi = 2c): the even
  columns of any polynomial are orthogonal to the odd ones on a paired design, which is why
  paired sampling already matches a second-order (2-additive, kADD-SHAP order 2) regression
  (Fumagalli, Witter & Musco, 2026, show the same). The next gain must come from odd terms of
  order 3: here o ~ z'beta + g(z), with g spanned by the C(M, 3) parities of order 3, and
  phi_j = 2 beta_j + (2/3) sum_{T ni j} c_T, read off the fitted surrogate in closed form.
  Under pairing this is a fourth-order polynomial regression.
* **Ridge on the order-3 part, chosen by generalised cross-validation.** The linear part is
  never penalised, so with the full design the residual is orthogonal to every additive game
  and the values are exact whatever the penalty; with a sample the estimator is the Shapley
  value of a fitted surrogate plus the (zero) kernel estimate of its residual: a regression-
  adjusted (control-variate) estimator. When the pairs cannot support the order-3 terms, GCV
  picks a large penalty and the fit falls back smoothly to paired Kernel SHAP. The penalty is
  chosen per row by GCV on that row's own values (so a row's values never depend on the rows
  explained with it); one design for all rows and one factorisation per distinct penalty.
* **Kernel form.** With few players (M + C(M, 3) columns, at most :data:`PRIMAL_MAX_COLUMNS`
  and no more than the pairs) the fit is an explicit penalised regression: one
  eigendecomposition of the order-3 block (the linear part projected out) serves the whole GCV
  grid, then one constrained solve. Otherwise it is solved in its dual: the kernel
  sum_{|T|=3} chi_T(z) chi_T(z') is the elementary symmetric polynomial e_3 of z * z', a
  function of z . z' alone, so no matrix ever has C(M, 3) columns: one eigendecomposition of a
  P x P matrix (P = pairs) serves the GCV grid, then one bordered solve of size P + 1 + M. Both
  forms give the same values (tested). Above :data:`CUBIC_MAX_PAIRS` pairs or
  :data:`CUBIC_MAX_FEATURES` players only the linear part is fitted (an M x M Cholesky solve,
  M <= 4,096).
* **Stratified paired design, without replacement.** The pairs are stratified by coalition size
  (s with M - s); each stratum gets pairs in proportion to its Shapley-kernel mass (or uniformly
  over sizes: ``sampling='leverage'``), water-filled so that a stratum whose share covers it is
  enumerated, and its pairs are distinct, drawn uniformly without replacement. The count of a
  stratum whose share is fractional is rounded systematically (unbiased in expectation);
  a stratum's pairs carry weight mass / count (a stratum whose expected share is below one
  pair: mass / share). The classic design samples with replacement: 16 % of its coalitions
  were repeats at d = 10 and 256-512 samples, 22 % at d = 8 and 128.
* **Exact efficiency.** The grand coalition is a noiseless observation of the surrogate, so
  sum(phi) = f(x) - E f(b) holds by construction (then to the last bit by a uniform shift).

Standard errors: a delete-one-pair jackknife in closed form, the penalty held fixed. The fit
is a linear smoother, phi = G o, so deleting pair p moves phi by G[:, p] e_p / (1 - h_p), with
e_p its residual and h_p its leverage; the squared moves are summed within strata with the
finite-population factor (1 - n_h / N_h), so an enumerated stratum adds nothing, and strata
with a single pair are pooled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations
from math import comb
from typing import Any

import numpy as np

from ._shapley import kernel_weight, size_mass

#: Most pairs for which the order-3 part is fitted (its P x P eigendecomposition, ~10 s on two
#: CPU cores at the cap); above, only the linear part (an M x M solve).
CUBIC_MAX_PAIRS = 2048
#: Most players for which the order-3 part is fitted: wider data never has the pairs for it.
CUBIC_MAX_FEATURES = 128
#: The order-3 fit is solved in its primal form (M + C(M, 3) columns) when it has no more
#: columns than pairs and at most this many; else in its dual (kernel) form, P x P.
PRIMAL_MAX_COLUMNS = 1200
#: Penalties tried by GCV (relative to a unit kernel diagonal and unit mean weight).
PENALTIES = tuple(10.0 ** k for k in np.arange(-4.0, 4.01, 0.5))
#: Rows x pairs x players held at once while computing the standard errors.
_SE_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------
# The design
# --------------------------------------------------------------------------------------------

@dataclass
class _Stratum:
    size: int            # s; the pair is (S, ~S) with |S| = s <= M / 2
    total: int           # distinct pairs in the stratum
    mass: float          # Shapley-kernel weight of all its coalitions
    middle: bool         # 2s == M: S and ~S have the same size; canonical S holds player 0
    keys: set = field(default_factory=set)
    share: float = 0.0   # expected pairs at the current budget

    @property
    def count(self) -> int:
        return len(self.keys)


def _strata(M: int) -> list[_Stratum]:
    out = []
    for s in range(1, M // 2 + 1):
        if 2 * s == M:
            out.append(_Stratum(s, comb(M, s) // 2, size_mass(M, s), True))
        else:
            out.append(_Stratum(s, comb(M, s), size_mass(M, s) + size_mass(M, M - s), False))
    return out


def _water_fill(pairs: float, totals: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Expected pairs per stratum: proportional to ``score``, capped at each stratum's size,
    the excess of a capped stratum handed to the others."""
    share = np.zeros(len(totals))
    active = np.ones(len(totals), dtype=bool)
    left = float(pairs)
    while active.any():
        share[active] = left * score[active] / score[active].sum()
        full = active & (share >= totals)
        if not full.any():
            break
        share[full] = totals[full]
        left -= float(totals[full].sum())
        active &= ~full
    return share


def _systematic(expected: np.ndarray, total: int, rng: np.random.Generator) -> np.ndarray:
    """Integer counts with the given expectations (scaled to sum to ``total``), each the floor
    or the ceiling of its expectation: systematic sampling over the strata."""
    if total <= 0 or expected.sum() <= 0:
        return np.zeros(len(expected), dtype=np.int64)
    expected = expected * (total / expected.sum())
    edges = np.concatenate([[0.0], np.cumsum(expected)])
    u = rng.random()
    hits = np.floor(edges - u + 1.0)  # number of points u, u+1, ... below each edge
    counts = np.diff(hits).astype(np.int64)
    counts[-1] += total - counts.sum()  # float round-off at the last edge
    return np.maximum(counts, 0)


class StratifiedPairs:
    """Complementary pairs stratified by coalition size, drawn without replacement; rounds may
    append pairs (``grow``) and the weights follow the cumulative counts."""

    def __init__(self, n_features: int, rng: np.random.Generator, sampling: str = "kernel"):
        self.n_features = n_features
        self.rng = rng
        self.sampling = sampling
        self.strata = _strata(n_features)
        self._first: list[np.ndarray] = []     # per round: canonical S of its pairs (k, M)
        self._stratum: list[np.ndarray] = []   # per round: stratum index of each pair

    @property
    def n_pairs(self) -> int:
        return sum(len(s) for s in self._first)

    @property
    def total_pairs(self) -> int:
        return sum(s.total for s in self.strata)

    def _score(self) -> np.ndarray:
        if self.sampling == "leverage":  # leverage scores are uniform over sizes
            return np.array([2.0 - st.middle for st in self.strata])
        return np.array([st.mass for st in self.strata])

    def grow(self, pairs: int) -> np.ndarray:
        """Bring the design to ``pairs`` pairs in all (never more); returns the coalitions of
        the new pairs, ``[S; ~S]`` (2k, M)."""
        M = self.n_features
        new = min(int(pairs), self.total_pairs) - self.n_pairs
        if new <= 0:
            return np.zeros((0, M), dtype=bool)
        # (sizes capped for floats: C(2000, 1000) overflows one; no budget comes near 2**62)
        totals = np.array([min(st.total, 2**62) for st in self.strata], dtype=float)
        counts = np.array([st.count for st in self.strata], dtype=float)
        share = _water_fill(self.n_pairs + new, totals, self._score())
        for st, sh in zip(self.strata, share):
            st.share = max(st.share, float(sh))
        deficit = np.maximum(share - counts, 0.0)
        full = (share >= totals) & (deficit > 0)
        take = np.zeros(len(self.strata), dtype=np.int64)
        # Strata whose share covers them are completed first, while the budget lasts.
        for h in np.flatnonzero(full):
            k = min(int(totals[h] - counts[h]), new - int(take.sum()))
            take[h] = k
        rest = new - int(take.sum())
        open_ = ~full & (counts < totals)
        if rest > 0 and open_.any():
            expected = np.where(open_, deficit, 0.0)
            if expected.sum() <= 0:  # shares all met: spread over the open strata by score
                expected = np.where(open_, self._score(), 0.0)
            take += _systematic(expected, rest, self.rng)
            # a count rounded above its stratum's room goes to the strata with room left
            over = np.maximum(take + counts - totals, 0).astype(np.int64)
            take -= over
            spill = int(over.sum())
            while spill > 0:
                room = (totals - counts - take).astype(np.int64)
                open_h = np.flatnonzero(room > 0)
                if not len(open_h):
                    break
                h = open_h[np.argmax(np.where(open_, self._score(), 0.0)[open_h])]
                k = min(spill, int(room[h]))
                take[h] += k
                spill -= k
        rows, which = [], []
        for h in np.flatnonzero(take):
            drawn = self._draw(self.strata[h], int(take[h]))
            rows.append(drawn)
            which.append(np.full(len(drawn), h))
        first = np.concatenate(rows) if rows else np.zeros((0, M), dtype=bool)
        self._first.append(first)
        self._stratum.append(np.concatenate(which) if which else np.zeros(0, np.int64))
        return np.concatenate([first, ~first])

    def _draw(self, st: _Stratum, k: int) -> np.ndarray:
        """``k`` new distinct canonical coalitions of a stratum, uniformly without replacement."""
        M, s = self.n_features, st.size
        left = st.total - st.count
        k = min(k, left)
        if 2 * k >= left:  # most of what is left: list the stratum and choose
            every = _layer(M, s, st.middle)
            keys = [np.packbits(r).tobytes() for r in every]
            unused = [i for i, key in enumerate(keys) if key not in st.keys]
            pick = self.rng.choice(len(unused), size=k, replace=False)
            chosen = every[np.asarray(unused)[np.sort(pick)]]
            st.keys.update(keys[unused[i]] for i in pick)
            return chosen
        out: list[np.ndarray] = []
        while len(out) < k:
            need = 2 * (k - len(out)) + 4
            keys_ = self.rng.random((need, M))
            if st.middle:
                keys_[:, 0] = -1.0  # the canonical member holds player 0
            idx = np.argpartition(keys_, s - 1, axis=1)[:, :s]
            rows = np.zeros((need, M), dtype=bool)
            np.put_along_axis(rows, idx, True, axis=1)
            for row in rows:
                key = np.packbits(row).tobytes()
                if key not in st.keys:
                    st.keys.add(key)
                    out.append(row)
                    if len(out) == k:
                        break
        return np.asarray(out, dtype=bool).reshape(-1, M)

    def first_halves(self) -> np.ndarray:
        """The canonical member S of every pair, in the order drawn: (P, M)."""
        if not self._first:
            return np.zeros((0, self.n_features), dtype=bool)
        return np.concatenate(self._first)

    def stratum_of_pairs(self) -> np.ndarray:
        if not self._stratum:
            return np.zeros(0, np.int64)
        return np.concatenate(self._stratum)

    def pair_weights(self) -> np.ndarray:
        """Kernel weight of each coalition of each pair (both members weigh the same)."""
        h = self.stratum_of_pairs()
        M = self.n_features
        per = np.zeros(len(self.strata))
        for i, st in enumerate(self.strata):
            if st.count == 0:
                continue
            # A stratum whose expected share is under one pair: Horvitz-Thompson (mass / share);
            # else the ratio estimator (the stratum's mass exactly).
            denominator = st.share if st.share < 1.0 and st.count == 1 else st.count
            per[i] = st.mass / (2.0 * denominator)
        w = per[h]
        # An enumerated stratum carries exactly the kernel weight of each coalition.
        for i, st in enumerate(self.strata):
            if st.count == st.total:
                w[h == i] = kernel_weight(M, st.size)
        return w

    def variance_groups(self) -> tuple[np.ndarray, dict[int, float]]:
        """For each pair, its jackknife group (-1: an enumerated stratum, no variance), and the
        finite-population factor of each group. Strata with one pair form one pooled group."""
        h = self.stratum_of_pairs()
        group = np.full(len(h), -1, dtype=np.int64)
        fpc: dict[int, float] = {}
        pooled = len(self.strata)
        for i, st in enumerate(self.strata):
            if st.count == 0 or st.count == st.total:
                continue
            if st.count == 1:
                group[h == i] = pooled
                fpc[pooled] = 1.0
            else:
                group[h == i] = i
                fpc[i] = 1.0 - st.count / st.total
        return group, fpc

    def masks(self) -> np.ndarray:
        """Every coalition evaluated so far, in evaluation order (per round: ``[S; ~S]``)."""
        if not self._first:
            return np.zeros((0, self.n_features), dtype=bool)
        return np.concatenate([np.concatenate([f, ~f]) for f in self._first])

    def pair_columns(self) -> tuple[np.ndarray, np.ndarray]:
        """Columns of S and of ~S of every pair within :meth:`masks`' order."""
        s_col, c_col, start = [], [], 0
        for f in self._first:
            k = len(f)
            s_col.append(np.arange(start, start + k))
            c_col.append(np.arange(start + k, start + 2 * k))
            start += 2 * k
        if not s_col:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return np.concatenate(s_col), np.concatenate(c_col)


def _layer(M: int, s: int, middle: bool) -> np.ndarray:
    rows = [c for c in combinations(range(M), s) if not middle or c[0] == 0]
    out = np.zeros((len(rows), M), dtype=bool)
    for i, c in enumerate(rows):
        out[i, list(c)] = True
    return out


# --------------------------------------------------------------------------------------------
# The fit
# --------------------------------------------------------------------------------------------

@dataclass
class PolyFit:
    phi: Any                 # (R, M)
    se: Any                  # (R, M)
    order: int               # 3 when the order-3 part was fitted, else 1
    penalty: float | None    # the GCV-chosen ridge penalty of the order-3 part


def _e3(t, M: int):
    """e_3 of a +-1 vector of length M whose entries sum to t (Newton's identities)."""
    return (t**3 - 3.0 * M * t + 2.0 * t) / 6.0


def fit(first, w, odd, odd_full, groups: np.ndarray, fpc: dict[int, float], *,
        order: int = 3, standard_errors: bool = True) -> PolyFit:
    """Shapley values of the odd-polynomial fit for all rows at once.

    ``first`` (P, M) bool: the canonical coalition of each pair; ``w`` (P,) its kernel weight;
    ``odd`` (R, P) = (v(S) - v(~S)) / 2; ``odd_full`` (R,) = (v(N) - v(empty)) / 2. Tensors
    (float64) on one device, except ``groups`` and ``fpc`` (see
    :meth:`StratifiedPairs.variance_groups`).
    """
    import torch

    P, M = first.shape
    Z = first.to(torch.float64) * 2.0 - 1.0
    w = w / w.mean()
    cubic = order >= 3 and M >= 3 and P <= CUBIC_MAX_PAIRS and M <= CUBIC_MAX_FEATURES
    aug = torch.cat([odd, odd_full[:, None]], dim=1)
    if not cubic:
        smoothers = {None: (_linear_smoother(Z, w), np.arange(len(odd)))}
    else:
        # Each row's penalty by GCV on its own values, so that a row's explanation never
        # depends on which other rows are explained with it (chunks, output groups, workers).
        primal = M + comb(M, 3) <= min(P, PRIMAL_MAX_COLUMNS)
        if primal:
            X3, T = _triples(Z)
            penalties = _gcv_penalty_primal(Z, X3, w, odd)
        else:
            penalties = _gcv_penalty(_cubic_kernel(Z, Z, M), Z, w, odd)
        smoothers = {}
        for penalty in sorted(set(penalties.tolist())):
            rows = np.flatnonzero(penalties == penalty)
            smoother = (_primal_cubic_smoother(Z, w, penalty, X3, T) if primal
                        else _cubic_smoother(Z, w, penalty))
            smoothers[penalty] = (smoother, rows)
    phi = torch.empty((len(odd), M), dtype=odd.dtype, device=odd.device)
    se = torch.zeros_like(phi)
    for (G, hat, residual_of), rows in smoothers.values():
        index = torch.as_tensor(rows, device=odd.device)
        part = aug[index]
        # phi = [odd, odd_full] @ G.T; the smoother already meets efficiency.
        values = part @ G.T
        values = values + ((2.0 * odd_full[index] - values.sum(dim=1)) / M)[:, None]
        phi[index] = values  # round-off only above
        if standard_errors:
            se[index] = _jackknife(residual_of(part, values), G, hat, values, groups, fpc)
    chosen = [k for k in smoothers if k is not None]
    penalty = float(np.median([k for k, (_, rows) in smoothers.items() if k is not None
                               for _ in rows])) if chosen else None
    return PolyFit(phi, se, 3 if cubic else 1, penalty)


def sym_inverse(H):
    """Inverse of a symmetric positive semi-definite matrix by Cholesky, O(n^3 / 3). A matrix
    that is singular to working precision (a design with barely as many pairs as players) gets
    a jitter of 1e-10 of its mean diagonal, which pins its null directions at their minimum
    norm as a pseudo-inverse would, at a thirtieth of the cost of the eigendecomposition a
    pseudo-inverse needs; the pseudo-inverse remains the last resort."""
    import torch

    n = H.shape[0]
    eye = torch.eye(n, dtype=H.dtype, device=H.device)
    scale = float(torch.diagonal(H).mean()) if n else 1.0
    for jitter in (0.0, 1e-10, 1e-7):
        L, info = torch.linalg.cholesky_ex(H + (jitter * scale) * eye if jitter else H)
        if int(info) == 0:
            inverse = torch.cholesky_inverse(L)
            if bool(torch.isfinite(inverse).all()):
                return inverse
    return torch.linalg.pinv(H, hermitian=True)


def _linear_smoother(Z, w):
    """Paired Kernel SHAP as a smoother: phi = G [odd; odd_full], the pairs' leverages, and
    the map from [odd; odd_full] to the pairs' residuals.

    argmin_c sum_p w_p (o_p - z_p . c)^2 subject to sum(c) = odd_full; phi = 2c.
    """
    import torch

    P, M = Z.shape
    ZW = Z * w[:, None]
    H_inv = sym_inverse(Z.T @ ZW)
    ones = torch.ones(M, dtype=Z.dtype, device=Z.device)
    h1 = H_inv @ ones
    K = H_inv - torch.outer(h1, h1) / (ones @ h1)
    G = torch.empty((M, P + 1), dtype=Z.dtype, device=Z.device)
    G[:, :P] = 2.0 * (K @ ZW.T)
    G[:, P] = 2.0 * h1 / (ones @ h1)
    hat = ((Z @ K) * ZW).sum(dim=1)

    def residual_of(aug, phi):  # odd - z . c with c = phi / 2
        return aug[:, :P] - phi @ Z.T / 2.0

    return G, hat, residual_of


def _cubic_kernel(A, B, M: int):
    return _e3(A @ B.T, M) / comb(M, 3)


def _cubic_smoother(Z, w, penalty: float):
    """Linear + ridge-penalised order-3 odd fit in kernel form, for one ``penalty`` (chosen
    per row by :func:`_gcv_penalty`). Returns the smoother G (M, P + 1), the pairs'
    leverages and the residual map.

    The linear part stays unpenalised even near the identifiability bound: shrinking it pulls
    the values towards an equal split, which on sparse models cost 3-30x the error at 32-64
    pairs for 30 players (measured; GCV never preferred it), and it would cost exactness."""
    import torch

    P, M = Z.shape
    ones = torch.ones((1, M), dtype=Z.dtype, device=Z.device)
    Za = torch.cat([Z, ones])                                   # (P + 1, M); the last is N
    n = P + 1
    eye = torch.eye(M, dtype=Z.dtype, device=Z.device)
    # phi_j = 2 beta_j + (2/3) sum_q alpha_q z_qj e_2(z_q without j) / C(M, 3)
    t = Za.sum(dim=1, keepdim=True) - Za                        # sums without j: (n, M)
    E = (Za * ((t**2 - (M - 1)) / 2.0)).T * (2.0 / 3.0 / comb(M, 3))   # (M, n)
    # Bordered (universal-kriging) system, the grand coalition a noiseless point:
    # [K + penalty W^-1, Z; Z', 0] [alpha; beta] = [odd; 0].
    A = torch.zeros((n + M, n + M), dtype=Z.dtype, device=Z.device)
    A[:n, :n] = _cubic_kernel(Za, Za, M)
    A[:n, n:] = Za
    A[n:, :n] = Za.T
    Phi = torch.cat([E, 2.0 * eye], dim=1)
    A[:P, :P] += torch.diag(penalty / w)
    A_inv = torch.linalg.inv(A)
    G = Phi @ A_inv[:, :n]                                      # (M, P + 1)
    hat = 1.0 - (penalty / w) * torch.diagonal(A_inv)[:P]
    # residual = odd - fitted = (penalty / w) alpha, alpha = A^-1 [odd; odd_full; 0] (first P)
    to_alpha = A_inv[:P, :n]

    def residual_of(aug, phi):
        return (aug @ to_alpha.T) * (penalty / w)[None, :]

    return G, hat, residual_of


def _triples(Z):
    """The order-3 parities of every pair, scaled so that each row has unit norm^2 per
    C(M, 3) (the kernel form's unit diagonal): (P, C(M, 3))."""
    import torch

    M = Z.shape[1]
    T = torch.as_tensor(np.array(list(combinations(range(M), 3)), dtype=np.int64),
                        device=Z.device)
    return Z[:, T[:, 0]] * Z[:, T[:, 1]] * Z[:, T[:, 2]] / np.sqrt(comb(M, 3)), T


def _primal_cubic_smoother(Z, w, penalty: float, X3, T):
    """:func:`_cubic_smoother` in primal form, for few players (M + C(M, 3) <= pairs): the
    same model, with the order-3 parities ``X3`` (triples ``T``) as explicit columns."""
    import torch

    P, M = Z.shape
    p3 = X3.shape[1]
    X = torch.cat([Z, X3], dim=1)                               # (P, p)
    XW = X * w[:, None]
    H = X.T @ XW
    H[M:, M:] += penalty * torch.eye(p3, dtype=Z.dtype, device=Z.device)
    H_inv = sym_inverse(H)
    a = torch.cat([torch.ones(M, dtype=Z.dtype, device=Z.device),
                   torch.full((p3,), 1.0 / np.sqrt(comb(M, 3)), dtype=Z.dtype, device=Z.device)])
    ha = H_inv @ a
    K = H_inv - torch.outer(ha, ha) / (a @ ha)
    coef = torch.empty((X.shape[1], P + 1), dtype=Z.dtype, device=Z.device)
    coef[:, :P] = K @ XW.T
    coef[:, P] = ha / (a @ ha)
    # phi_j = 2 c_j + (2/3) sum_{T ni j} c_T / sqrt(C(M, 3))
    Tmap = torch.zeros((M, X.shape[1]), dtype=Z.dtype, device=Z.device)
    Tmap[:, :M] = 2.0 * torch.eye(M, dtype=Z.dtype, device=Z.device)
    cols = torch.arange(p3, device=Z.device) + M
    for k in range(3):
        Tmap[T[:, k], cols] = 2.0 / 3.0 / np.sqrt(comb(M, 3))
    G = Tmap @ coef
    hat = ((X @ K) * XW).sum(dim=1)
    fitted = X @ coef                                           # (P, P + 1)

    def residual_of(aug, phi):
        return aug[:, :P] - aug @ fitted.T

    return G, hat, residual_of


def _gcv_penalty_primal(Z, X3, w, odd) -> np.ndarray:
    """:func:`_gcv_penalty` with explicit order-3 columns: the linear part projected out, one
    eigendecomposition of the (C(M, 3) x C(M, 3)) penalised block serves every penalty and
    every row; (R,) the penalty of each row."""
    import torch

    P, M = Z.shape
    sw = w.sqrt()
    X1, X3w, y = sw[:, None] * Z, sw[:, None] * X3, odd * sw[None, :]
    B = torch.linalg.pinv(X1.T @ X1, hermitian=True)
    X3r = X3w - X1 @ (B @ (X1.T @ X3w))                          # linear part projected out
    yr = y - (y @ X1) @ B @ X1.T
    ev, U = torch.linalg.eigh(X3r.T @ X3r)
    ev = ev.clamp(min=0.0)
    F = X3r @ U                                                  # (P, p3), F'F = diag(ev)
    a = yr @ F                                                   # (R, p3)
    base = (yr**2).sum(dim=1)                                    # (R,)
    a2 = a**2
    best = np.full(len(odd), np.inf)
    chosen = np.full(len(odd), float(PENALTIES[-1]))
    for penalty in PENALTIES:
        D = 1.0 / (ev + penalty)
        rss = (base - (a2 * (2.0 * D - ev * D**2)[None, :]).sum(dim=1)).clamp(min=0.0)
        dof = 1.0 - (M + float((ev * D).sum())) / P
        if dof <= 1e-6:
            continue
        score = (rss / dof**2).cpu().numpy()
        better = score < best
        best[better], chosen[better] = score[better], float(penalty)
    return chosen


def _gcv_penalty(K, Z, w, odd) -> np.ndarray:
    """(R,): for each row, the penalty of :data:`PENALTIES` with the least generalised
    cross-validation error of that row's values (the grand-coalition constraint left out of
    this choice), for the kernel ``K`` plus an unpenalised linear part ``Z`` (None: none).
    One eigendecomposition of W^1/2 K W^1/2 serves every penalty and every row."""
    import torch

    P = K.shape[0]
    sw = w.sqrt()
    ev, U = torch.linalg.eigh(sw[:, None] * K * sw[None, :])
    ev = ev.clamp(min=0.0)
    yh = (odd * sw[None, :]) @ U                                # (R, P)
    Xh = None if Z is None else U.T @ (sw[:, None] * Z)         # (P, M)
    best = np.full(len(odd), np.inf)
    chosen = np.full(len(odd), float(PENALTIES[-1]))
    for penalty in PENALTIES:
        D = 1.0 / (ev + penalty)
        if Xh is None:
            residual = penalty * D[None, :] * yh
            trace_h = float((ev * D).sum())
        else:
            XtDX = Xh.T @ (D[:, None] * Xh)
            try:
                beta = torch.linalg.solve(XtDX, ((yh * D[None, :]) @ Xh).T).T   # (R, M)
                trace_q = D.sum() - torch.trace(
                    torch.linalg.solve(XtDX, Xh.T @ ((D**2)[:, None] * Xh)))
            except RuntimeError:  # singular: too few pairs for the linear part
                continue
            residual = penalty * D[None, :] * (yh - beta @ Xh.T)
            trace_h = P - penalty * float(trace_q)
        dof = 1.0 - trace_h / P
        if dof <= 1e-6:
            continue
        score = ((residual**2).sum(dim=1) / dof**2).cpu().numpy()
        better = score < best
        best[better], chosen[better] = score[better], float(penalty)
    return chosen


def _jackknife(residual, G, hat, phi, groups: np.ndarray, fpc: dict[int, float]):
    """Delete-one-pair jackknife of the smoother, stratified (see the module docstring).
    ``residual`` (R, P): each pair's odd observation minus its fitted value.

    The moves of the pairs are sorted by group and summed per group through cumulative sums:
    O(R P M) whatever the number of strata, and deterministic on every device."""
    import torch

    R, M = phi.shape
    dev = phi.device
    sampled = np.flatnonzero(groups >= 0)
    if len(sampled) < 2:
        return torch.full((R, M), float("nan"), dtype=torch.float64, device=dev)
    order = sampled[np.argsort(groups[sampled], kind="stable")]
    labels, starts, counts = np.unique(groups[order], return_index=True, return_counts=True)
    keep = counts >= 2
    if not keep.any():
        return torch.full((R, M), float("nan"), dtype=torch.float64, device=dev)
    factor = np.array([fpc[int(g)] * (n - 1) / n for g, n in zip(labels, counts)])
    starts_t = torch.as_tensor(starts[keep], device=dev)
    ends_t = torch.as_tensor(starts[keep] + counts[keep], device=dev)
    n_t = torch.as_tensor(counts[keep], dtype=torch.float64, device=dev)
    factor_t = torch.as_tensor(factor[keep], dtype=torch.float64, device=dev)
    order_t = torch.as_tensor(order, device=dev)
    inflate = 1.0 / (1.0 - hat[order_t]).clamp(min=1e-6)             # (Ps,)
    Gs = G[:, order_t].T                                              # (Ps, M)
    Ps = len(order)
    se = torch.empty((R, M), dtype=torch.float64, device=dev)
    # Chunks of rows and of players: at most _SE_CHUNK_ELEMENTS moves held at once.
    cols = max(1, min(M, _SE_CHUNK_ELEMENTS // max(1, Ps)))
    step = max(1, _SE_CHUNK_ELEMENTS // max(1, Ps * cols))
    for r0 in range(0, R, step):
        t = residual[r0:r0 + step][:, order_t] * inflate[None, :]     # (r, Ps)
        for m0 in range(0, M, cols):
            delta = t[:, :, None] * Gs[None, :, m0:m0 + cols]         # (r, Ps, m)
            zero = torch.zeros((len(t), 1, delta.shape[2]), dtype=torch.float64, device=dev)
            c1 = torch.cat([zero, delta.cumsum(dim=1)], dim=1)
            s1 = c1[:, ends_t] - c1[:, starts_t]                      # (r, groups, m)
            del c1
            c2 = torch.cat([zero, delta.square_().cumsum(dim=1)], dim=1)
            s2 = c2[:, ends_t] - c2[:, starts_t]
            del c2, delta
            within = (s2 - s1**2 / n_t[None, :, None]).clamp(min=0.0)
            se[r0:r0 + step, m0:m0 + cols] = (within * factor_t[None, :, None]).sum(dim=1).sqrt()
    return se
