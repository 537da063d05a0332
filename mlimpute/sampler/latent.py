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
evaluated where it is small and accurate; one-sided intervals need one Φ and one Φ⁻¹), with a
log-space version for intervals beyond Φ ≈ 1e-300: no rejection loop, no clamping, no retained
old value. The row loops are compiled (``_kernels``); uniforms come from the chain's Generator.

Ordinal thresholds use Cowles' (1996) Metropolis–Hastings step, one free threshold at a time
with its own step size: propose it from a truncated normal around the current value and accept
with the likelihood ratio that integrates the latent values out (the interval probabilities of
the two categories it separates), then redraw the latents given the thresholds. Albert & Chib's (1993) uniform Gibbs update of the thresholds given the
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
from numba import njit
from scipy.special import ndtr

from ..design import ColumnCodec
from . import _kernels as kern
from . import _vf_kernels as vfk

__all__ = ["truncated_normal", "one_sided_normal", "log_interval_prob", "update_latents",
           "cuts_to_codes", "latents_to_codes", "initial_latent"]


@njit(cache=True)
def _draw_intervals(mean, sd, lo, hi, u):
    out = np.empty(mean.size)
    for i in range(mean.size):
        if np.isinf(lo[i]) and np.isinf(hi[i]):
            out[i] = kern.one_sided(mean[i], sd, np.inf, -1.0, u[i])
        elif np.isinf(hi[i]):
            out[i] = kern.one_sided(mean[i], sd, lo[i], 1.0, u[i])
        elif np.isinf(lo[i]):
            out[i] = kern.one_sided(mean[i], sd, hi[i], -1.0, u[i])
        else:
            out[i] = kern.two_sided(mean[i], sd, lo[i], hi[i], u[i])
    return out


@njit(cache=True)
def _log_intervals(mean, sd, lo, hi):
    out = np.empty(mean.size)
    for i in range(mean.size):
        out[i] = kern._log_interval(mean[i], sd, lo[i], hi[i])
    return out


def _uniforms(rng: np.random.Generator, n: int) -> np.ndarray:
    """Uniforms on (0, 1] (never 0, so Φ⁻¹(U·P) is finite)."""
    u = rng.random(n)
    np.subtract(1.0, u, out=u)
    return u


def truncated_normal(
    rng: np.random.Generator, mean: np.ndarray, sd: float, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Exact draws from N(mean, sd²) restricted to (lo, hi), elementwise; bounds may be ±inf."""
    mean, lo, hi = (np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype=float), np.shape(mean)))
                    for v in (mean, lo, hi))
    return _draw_intervals(mean.ravel(), float(sd), lo.ravel(), hi.ravel(),
                           _uniforms(rng, mean.size)).reshape(mean.shape)


def one_sided_normal(
    rng: np.random.Generator, mean: np.ndarray, sd: float, bound: np.ndarray, side: np.ndarray
) -> np.ndarray:
    """Exact draws from N(mean, sd²) restricted to (bound, ∞) where side = +1 and to
    (−∞, bound) where side = −1 (bound = +inf with side −1: unrestricted)."""
    side = np.broadcast_to(np.asarray(side, dtype=float), np.shape(mean))
    bound = np.broadcast_to(np.asarray(bound, dtype=float), np.shape(mean))
    lo = np.where(side > 0, bound, -np.inf)
    hi = np.where(side > 0, np.inf, bound)
    return truncated_normal(rng, mean, sd, lo, hi)


def log_interval_prob(mean: np.ndarray, sd: float, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """log P(lo < N(mean, sd²) ≤ hi), accurate in both tails."""
    mean, lo, hi = (np.ascontiguousarray(np.broadcast_to(np.asarray(v, dtype=float), np.shape(mean)))
                    for v in (mean, lo, hi))
    return _log_intervals(mean.ravel(), float(sd), lo.ravel(), hi.ravel()).reshape(mean.shape)


def _cowles(
    rng: np.random.Generator, cuts: np.ndarray, y: np.ndarray, mean: np.ndarray,
    qc: np.ndarray, sd: float, c: int, codes: np.ndarray, steps: np.ndarray,
    vf: tuple | None = None, prior_sd: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cowles MH updates of the free thresholds γ_2..γ_{K−1} (``cuts`` has ±inf ends), one
    threshold at a time, each with its own step size; returns the thresholds and one
    acceptance indicator per free threshold.

    γ'_k ~ N(γ_k, step_k²) restricted to (γ_{k−1}, γ_{k+1}); the normal kernels of the proposal
    cancel in the Hastings ratio but its truncation masses do not. Only the rows in categories
    k−1 and k have intervals that move, so only they enter the likelihood ratio.
    """
    K = cuts.size - 1
    cur = cuts.copy()
    accepted = np.zeros(max(K - 2, 0))
    for k in range(2, K):
        step = steps[k - 2]
        prop = cur.copy()
        prop[k] = truncated_normal(rng, np.array([cur[k]]), step, np.array([cur[k - 1]]),
                                   np.array([cur[k + 1]]))[0]
        log_q = (np.log(ndtr((cur[k + 1] - cur[k]) / step) - ndtr((cur[k - 1] - cur[k]) / step))
                 - np.log(ndtr((cur[k + 1] - prop[k]) / step) - ndtr((cur[k - 1] - prop[k]) / step)))
        if vf is None:
            ratio = kern.ordinal_loglik_ratio(y, mean, qc, sd, c, codes, prop, cur, k)
        else:
            ratio = vfk.vf_ordinal_ratio(y, mean, *vf, c, codes, prop, cur, k)
        if prior_sd is not None:  # N(0, sd²) on every threshold (categorical_prior_sd)
            ratio -= 0.5 * (prop[k] ** 2 - cur[k] ** 2) / prior_sd ** 2
        if np.log(rng.random()) < ratio + log_q:
            cur, accepted[k - 2] = prop, 1.0
    return cur, accepted


def update_latents(
    rng: np.random.Generator,
    y: np.ndarray,
    mean: np.ndarray,
    prec: np.ndarray,
    codecs: tuple[ColumnCodec, ...],
    cuts: tuple[np.ndarray, ...],
    steps: np.ndarray,
    codes: tuple[np.ndarray, ...] | None = None,
    vf: tuple | None = None,
    prior_sd: float | None = None,
) -> tuple[np.ndarray, tuple[np.ndarray, ...], np.ndarray]:
    """Redraw the latents of every categorical cell (and ordinal thresholds); ``prec`` is the
    inverse of the rows' covariance.

    Observed categories constrain their latents as in the module notes. The latents of missing
    categories are not touched here: the missing-cell step draws them once per sweep, jointly
    with the row's other missing cells (a draw here too would be an exact Gibbs step as well,
    but a wasted one). Working on whole columns avoids gathering and scattering the observed
    rows. ``y`` (rows, p) is modified in place and returned, with the new thresholds (one
    array per ordinal codec, in codec order) and the acceptance indicator of each free threshold
    update. ``codes`` (one array per codec) replaces the observed category codes (the
    substantive component passes the current categories of some imputed cells; see ``outcome``).
    ``vf``: variance functions' (A0, G, rs, vcols) (``_vf_kernels``: each row has its own
    precision, which replaces ``prec``); ``prior_sd``: normal priors on the thresholds (None: flat).
    """
    mean = np.ascontiguousarray(mean)
    n = y.shape[0]
    new_cuts = list(cuts)
    accepted = np.zeros(steps.size)
    no_cuts = np.zeros(2)
    o = a = 0  # ordinal variable, and its first free threshold in ``steps``
    for v, codec in enumerate(codecs):
        var_codes = codec.codes if codes is None else codes[v]
        cols = np.asarray(codec.cols, dtype=np.int64)
        kind = {"binary": kern.BINARY, "ordinal": kern.ORDINAL, "nominal": kern.NOMINAL}[codec.kind]
        for m, c in enumerate(codec.cols):
            qcc = prec[c, c]
            sd = 1.0 / np.sqrt(qcc)
            qc = prec[:, c] / qcc
            qc[c] = 0.0
            ck = no_cuts
            if codec.kind == "ordinal":
                nf = codec.n_categories - 2
                if nf > 0:
                    new_cuts[o], accepted[a:a + nf] = _cowles(rng, cuts[o], y, mean, qc, sd, c,
                                                              var_codes, steps[a:a + nf], vf, prior_sd)
                ck = new_cuts[o]
                o, a = o + 1, a + nf
            if vf is None:
                kern.latent_column(y, mean, qc, sd, c, kind, var_codes, cols, m, ck, _uniforms(rng, n))
            else:
                vfk.vf_latent_column(y, mean, *vf, c, kind, var_codes, cols, m, ck, _uniforms(rng, n))
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
