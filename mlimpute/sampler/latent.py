"""Latent normals of the categorical variables: exact truncated-normal draws and thresholds.

Notes
-----
Every categorical cell with an observed category carries a latent value (one per binary or
ordinal variable, K−1 per nominal variable). Given all other columns of its row, a latent
column is normal with the conditional mean and variance of the row's joint normal::

    y_c | y_-c ~ N(μ_c − Q_cc⁻¹ Σ_{k≠c} Q_ck (y_k − μ_k),  Q_cc⁻¹),   Q = Σ⁻¹,

restricted to the region its category allows:

- binary: (0, ∞) for the second category, (−∞, 0] for the first;
- ordinal: (γ_k, γ_{k+1}] with γ_0 = −∞ < γ_1 = 0 < γ_2 < … < γ_K = ∞;
- nominal, component m (Gibbs, one component at a time): category m ⇔ w_m = max_l w_l > 0,
  so w_m > max(0, max_{l≠m} w_l); another non-reference category k ⇔ w_m < w_k; the
  reference (last) category ⇔ all w < 0.

The draw is an exact inverse-CDF draw ``x = Φ⁻¹(Φ(a) + U (Φ(b) − Φ(a)))`` on the side of the
distribution where the interval sits (reflected when it lies above the mean, so that Φ is
evaluated where it is small and accurate), with a log-space version for intervals beyond
Φ ≈ 1e-300: no rejection loop, no clamping, no retained old value.

Ordinal thresholds use Cowles' (1996) Metropolis–Hastings step: propose all free thresholds
from truncated normals around the current ones and accept with the likelihood ratio that
integrates the latent values out (their interval probabilities), then redraw the latents
given the thresholds. Albert & Chib's (1993) uniform Gibbs update of the thresholds given the
latents is simpler but moves them by O(1/N) per sweep, so it mixes ever more slowly as N grows.

References
----------
Albert, J. H., & Chib, S. (1993). Bayesian analysis of binary and polychotomous response data.
JASA, 88(422), 669-679.
Cowles, M. K. (1996). Accelerating Monte Carlo Markov chain convergence for cumulative-link
generalized linear models. Statistics and Computing, 6(2), 101-111.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr, ndtr, ndtri, ndtri_exp

from ..design import ColumnCodec

__all__ = ["truncated_normal", "one_sided_normal", "log_interval_prob", "update_latents", "cuts_to_codes",
           "latents_to_codes", "initial_latent"]

_TINY = 1e-300


def _oriented(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reflect intervals that lie mostly above 0 so both ends are where Φ is small."""
    with np.errstate(invalid="ignore"):
        flip = (a + b) > 0
    return flip, np.where(flip, -b, a), np.where(flip, -a, b)


def truncated_normal(
    rng: np.random.Generator, mean: np.ndarray, sd: np.ndarray | float, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Exact draws from N(mean, sd²) restricted to (lo, hi), elementwise; bounds may be ±inf."""
    mean = np.asarray(mean, dtype=float)
    a = (lo - mean) / sd
    b = (hi - mean) / sd
    flip, aa, bb = _oriented(a, b)
    pa, pb = ndtr(aa), ndtr(bb)
    u = rng.random(mean.shape)
    x = ndtri(pa + u * (pb - pa))
    far = pb < _TINY
    if np.any(far):  # both ends beyond Φ ≈ 1e-300: the same inverse CDF in log space
        la, lb = log_ndtr(aa[far]), log_ndtr(bb[far])
        x[far] = ndtri_exp(lb + np.log1p(-u[far] * -np.expm1(la - lb)))
    x = np.where(flip, -x, x)
    return mean + sd * x


def one_sided_normal(
    rng: np.random.Generator, mean: np.ndarray, sd: float, bound: np.ndarray, side: np.ndarray
) -> np.ndarray:
    """Exact draws from N(mean, sd²) restricted to (bound, ∞) where side = +1 and to
    (−∞, bound) where side = −1 (bound = +inf with side −1: unrestricted).

    Notes
    -----
    With ``P = Φ(side·(mean − bound)/sd)``, the mass of the allowed side, the draw is
    ``mean − side·sd·Φ⁻¹(U·P)``: one Φ and one Φ⁻¹ per element, half the work of the two-sided
    formula, and Φ is again only evaluated where it is small or 1 (no cancellation).
    """
    zb = np.subtract(mean, bound)       # in-place arithmetic: few full-length temporaries
    zb *= side
    zb /= sd
    P = ndtr(zb)
    u = rng.random(mean.shape)
    t = np.multiply(u, P)
    far = P < _TINY
    ndtri(t, out=t)
    if np.any(far):  # allowed side beyond Φ ≈ 1e-300: the same inverse CDF in log space
        t[far] = ndtri_exp(np.log(u[far]) + log_ndtr(zb[far]))
    t *= side
    t *= -sd
    t += mean
    return t


def log_interval_prob(mean: np.ndarray, sd: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """log P(lo < N(mean, sd²) ≤ hi), accurate in both tails."""
    flip, aa, bb = _oriented((lo - mean) / sd, (hi - mean) / sd)
    pa, pb = ndtr(aa), ndtr(bb)
    with np.errstate(divide="ignore"):
        out = np.log(pb - pa)
    bad = ~(pb - pa > _TINY)
    if np.any(bad):
        la, lb = log_ndtr(aa[bad]), log_ndtr(bb[bad])
        out[bad] = lb + np.log1p(-np.exp(la - lb))
    return out


def _cowles(
    rng: np.random.Generator, cuts: np.ndarray, codes: np.ndarray, mean: np.ndarray, sd: float,
    step: float,
) -> tuple[np.ndarray, bool]:
    """One Cowles MH update of the free thresholds γ_2..γ_{K−1} (``cuts`` has ±inf ends)."""
    K = cuts.size - 1
    new = cuts.copy()
    for k in range(2, K):  # sequentially: γ'_k ~ N(γ_k, step²) on (γ'_{k−1}, γ_{k+1})
        new[k] = truncated_normal(rng, np.array([cuts[k]]), step, np.array([new[k - 1]]),
                                  np.array([cuts[k + 1]]))[0]
    # q(old | new) / q(new | old): the normal kernels cancel, the truncation masses do not
    ks = np.arange(2, K)
    log_q = np.sum(np.log(ndtr((cuts[ks + 1] - cuts[ks]) / step) - ndtr((new[ks - 1] - cuts[ks]) / step)))
    log_q -= np.sum(np.log(ndtr((new[ks + 1] - new[ks]) / step) - ndtr((cuts[ks - 1] - new[ks]) / step)))
    # Rows of the first category, (−∞, 0], have the same probability under both: skip them.
    keep = codes > 0
    c, mu = codes[keep], mean[keep]
    ll_new = log_interval_prob(mu, sd, new[c], new[c + 1]).sum()
    ll_old = log_interval_prob(mu, sd, cuts[c], cuts[c + 1]).sum()
    if np.log(rng.random()) < ll_new - ll_old + log_q:
        return new, True
    return cuts, False


def update_latents(
    rng: np.random.Generator,
    y: np.ndarray,
    mean: np.ndarray,
    cov: np.ndarray,
    codecs: tuple[ColumnCodec, ...],
    obs_rows: tuple[np.ndarray, ...],
    cuts: tuple[np.ndarray, ...],
    steps: np.ndarray,
) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """Redraw the latents of every categorical cell (and ordinal thresholds).

    Observed categories constrain their latents as in the module notes; the latents of missing
    categories get the unconstrained conditional draw (also an exact Gibbs step; the missing-cell
    step later redraws them jointly with the row's other missing cells). Working on whole
    columns avoids gathering and scattering the observed rows. ``y`` (rows, p) is modified in
    place and returned, with the new thresholds (one array per ordinal codec, in codec order)
    and the acceptance indicator of each threshold update.
    """
    Q = np.linalg.inv(cov)
    # column-major residuals: every step below reads or writes whole columns of them
    resid = np.empty(y.shape, order="F")
    np.subtract(y, mean, out=resid)
    new_cuts = list(cuts)
    accepted = np.zeros(len(cuts))
    o = 0
    for codec, rows in zip(codecs, obs_rows):
        codes = codec.codes
        missing = codes < 0
        for m, c in enumerate(codec.cols):
            qcc = Q[c, c]
            sd = 1.0 / np.sqrt(qcc)
            qc = Q[:, c] / qcc
            qc[c] = 0.0
            cm = mean[:, c] - resid @ qc
            if codec.kind == "binary":   # (0, ∞) for code 1, (−∞, 0) for code 0, free if missing
                side = np.where(codes == 1, 1.0, -1.0)
                bound = np.where(missing, np.inf, 0.0)
            elif codec.kind == "ordinal":
                if codec.n_categories > 2:
                    new_cuts[o], accepted[o] = _cowles(rng, cuts[o], codes[rows], cm[rows], sd, steps[o])
                ext = np.append(new_cuts[o], [-np.inf, np.inf])   # code −1 → (−inf, inf)
                lo = ext[np.where(missing, -2, codes)]
                hi = ext[np.where(missing, -1, codes + 1)]
                o += 1
            else:  # nominal, component m; reference = last category
                K = codec.n_categories
                other_max = np.full(codes.size, -np.inf)
                w_code = np.zeros(codes.size)
                for k, ck in enumerate(codec.cols):
                    if k != m:
                        other_max = np.maximum(other_max, y[:, ck])
                        w_code = np.where(codes == k, y[:, ck], w_code)
                is_m = codes == m
                side = np.where(is_m, 1.0, -1.0)
                bound = np.where(is_m, np.maximum(0.0, other_max),
                                 np.where((codes == K - 1) | missing, np.where(missing, np.inf, 0.0), w_code))
            if codec.kind == "ordinal":
                draw = truncated_normal(rng, cm, sd, lo, hi)
            else:  # binary and nominal intervals are one-sided
                draw = one_sided_normal(rng, cm, sd, bound, side)
            y[:, c] = draw
            resid[:, c] = draw - mean[:, c]
    return y, tuple(new_cuts), accepted


def latents_to_codes(codec: ColumnCodec, latent: np.ndarray, cuts: np.ndarray | None) -> np.ndarray:
    """Map latent rows (n, width) of one categorical variable to category codes."""
    if codec.kind == "binary":
        return (latent[:, 0] > 0).astype(np.int64)
    if codec.kind == "ordinal":
        return cuts_to_codes(cuts, latent[:, 0])
    best = latent.argmax(axis=1)
    return np.where(latent.max(axis=1) > 0, best, codec.n_categories - 1).astype(np.int64)


def cuts_to_codes(cuts: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Category k ⇔ cuts[k] < z ≤ cuts[k+1]."""
    return (np.searchsorted(cuts, z, side="left") - 1).astype(np.int64)


def initial_latent(codec: ColumnCodec, codes: np.ndarray, cuts: np.ndarray | None) -> np.ndarray:
    """Latent values consistent with ``codes`` (n, width): a valid starting point."""
    n = codes.size
    if codec.kind == "binary":
        return np.where(codes == 1, 0.5, -0.5)[:, None]
    if codec.kind == "ordinal":
        lo, hi = cuts[codes], cuts[codes + 1]
        mid = np.where(np.isinf(lo), hi - 0.5, np.where(np.isinf(hi), lo + 0.5, 0.5 * (lo + hi)))
        return mid[:, None]
    w = np.full((n, codec.n_categories - 1), -0.5)
    nonref = codes < codec.n_categories - 1
    w[np.flatnonzero(nonref), codes[nonref]] = 0.5
    return w
