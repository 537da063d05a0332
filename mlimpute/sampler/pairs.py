"""Collapsed move for the covariance of two rare categories' latent columns (both samplers).

Notes
-----
``collapsed`` integrates one latent column out at a time, so the covariance of two columns
that are both rare (two rare binary variables, a rare binary variable and a rare nominal
component, at level 1, at level 2 or among a classification's own variables) stays pinned by
the latents of whichever column is not integrated out: on the three-level design of
``docs/sampler-quality.md`` it was the slowest parameter (18–25 effective draws per 1,000
sweeps). Here the pair (z_a, z_b) is integrated out together. With Q = Ω⁻¹, a row's pair
given its other coordinates is bivariate normal with covariance S = (Q_{ab,ab})⁻¹ and mean
F_i + K(Y_i − F_i), K = −S Q_{ab,·} (zero in columns a and b), and its categories have
probability P_i = P(Z ∈ I_a × I_b): a bivariate normal rectangle probability, by Drezner &
Wesolowsky's (1990) formula for the upper orthant

    P(X > h, Y > k) = Φ(−h)Φ(−k) + (2π)⁻¹ ∫_0^{arcsin ρ} exp(−(h² + k² − 2hk sin θ) / (2 cos² θ)) dθ

with Gauss–Legendre rules of 6, 12 or 20 points by |ρ| (as Genz 2004; ρ is the same for every
row, so the nodes' sines are computed once a proposal), reflections for the other orthants and differences for two-sided intervals
(ordinals' middle categories). Each sweep, for each pair:

1. Ω[a, b] by random-walk Metropolis–Hastings on Σ_i log P_i plus the restricted
   inverse-Wishart prior (the other coordinates' density does not involve Ω[a, b]; step tuned
   in burn-in);
2. (z_a, z_b) of every row from their joint conditional, exactly: the coordinate whose
   interval is less probable first, from its truncated normal, accepted with the probability
   of the other's interval given it (rejection with envelope 1), then the other from its
   truncated conditional; where the expected number of tries exceeds ``MAX_TRIES`` the first
   coordinate is drawn by inverting its marginal distribution function (bisection on rectangle
   probabilities) instead.

Step 1 then 2 is a partially collapsed Gibbs step (van Dyk & Park 2008): the parameter from
its conditional with the pair integrated out, then the pair from theirs. The quadrature is
accurate (absolute error ~1e-15) for |ρ| < ``RHO_MAX``, ρ the pair's conditional
correlation; a state with |ρ| ≥ ``RHO_MAX`` is left alone and proposals there are rejected,
so the move keeps the posterior restricted to either side (the other moves cross between
them) and stays exact. ``tests/test_pairs.py`` checks the rectangle probability against scipy,
the joint redraw's moments against the truncated bivariate normal's, and the sampler with and
without the move against each other.

References
----------
Genz, A. (2004). Numerical computation of rectangular bivariate and trivariate normal and t
probabilities. Statistics and Computing, 14(3), 251-260.
Drezner, Z., & Wesolowsky, G. O. (1990). On the computation of the bivariate normal integral.
Journal of Statistical Computation and Simulation, 35(1-2), 101-107.
van Dyk, D. A., & Park, T. (2008). Partially collapsed Gibbs samplers. JASA, 103(482), 790-796.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import _kernels as kern
from ._small import spd_inv
from .collapsed import _log_prior1

__all__ = ["ENABLED", "RHO_MAX", "MAX_TRIES", "rare_pairs", "rect_probability", "pair_move"]

ENABLED = True       # (switched off only to measure what the move buys)
RHO_MAX = 0.925
MAX_TRIES = 25.0     # expected rejection tries above which a row's pair is drawn by inversion
PROPOSALS = 2
# Gauss–Legendre rules of 6, 12 and 20 points (rows of _NODES/_WEIGHTS, zero-padded), for
# |ρ| below 0.3, 0.75 and RHO_MAX: the integrand is smoother the smaller |ρ| (Genz 2004)
_RULES = [np.polynomial.legendre.leggauss(n) for n in (6, 12, 20)]
_NODES = np.array([np.pad(x, (0, 20 - x.size)) for x, _ in _RULES])
_WEIGHTS = np.array([np.pad(w, (0, 20 - w.size)) for _, w in _RULES])
_SIZES = np.array([6, 12, 20])
_INV_2PI = 1.0 / (2.0 * math.pi)


def rare_pairs(cols: tuple) -> tuple:
    """The pairs of ``collapsed.Column``s of different variables (a nominal variable's own
    block is fixed: its components' covariances are not parameters)."""
    return tuple((p, q) for i, p in enumerate(cols) for q in cols[i + 1:] if p.cols[0] != q.cols[0])


@njit(cache=True)
def _theta(r):
    """sin θ at the Gauss–Legendre nodes of [0, arcsin r] and the weights times the interval's
    half-length over 2π."""
    asr = math.asin(r)
    rule = 0 if abs(r) < 0.3 else (1 if abs(r) < 0.75 else 2)
    n = _SIZES[rule]
    sn = np.empty(n)
    w = np.empty(n)
    for g in range(n):
        sn[g] = math.sin(0.5 * asr * (1.0 + _NODES[rule, g]))
        w[g] = _WEIGHTS[rule, g] * 0.5 * asr * _INV_2PI
    return sn, w


@njit(cache=True)
def _upper(h, k, sn, w, s):
    """P(X > h, Y > k) for standard normals with correlation s·r (sn, w: ``_theta(r)``, s = ±1;
    h, k may be ±inf)."""
    if h == np.inf or k == np.inf:
        return 0.0
    if h == -np.inf:
        return kern.ndtr(-k)
    if k == -np.inf:
        return kern.ndtr(-h)
    hs = 0.5 * (h * h + k * k)
    hk = h * k
    acc = 0.0
    for g in range(sn.size):
        t = s * sn[g]
        acc += w[g] * math.exp((t * hk - hs) / (1.0 - t * t))
    return kern.ndtr(-h) * kern.ndtr(-k) + s * acc


@njit(cache=True)
def _rect(la, ua, lb, ub, sn, w):
    """P(la < X < ua, lb < Y < ub) for standard normals with correlation r (``_theta(r)``): a
    lower-open interval is reflected (X → −X flips the correlation's sign), a two-sided one
    taken as a difference of upper orthants."""
    s = 1.0
    if la == -np.inf and ua != np.inf:
        la, ua, s = -ua, np.inf, -s
    if lb == -np.inf and ub != np.inf:
        lb, ub, s = -ub, np.inf, -s
    p = _upper(la, lb, sn, w, s)
    if ua != np.inf:
        p -= _upper(ua, lb, sn, w, s)
    if ub != np.inf:
        p -= _upper(la, ub, sn, w, s)
        if ua != np.inf:
            p += _upper(ua, ub, sn, w, s)
    return p


def rect_probability(la: float, ua: float, lb: float, ub: float, r: float) -> float:
    """P(la < X < ua, lb < Y < ub) for standard normals with correlation |r| < ``RHO_MAX``."""
    sn, w = _theta(r)
    return float(_rect(la, ua, lb, ub, sn, w))


@njit(cache=True)
def _pair_moments(omega, a, b):
    """K (2 × P: the pair's regression on the other coordinates, zero at a and b), the
    conditional SDs and correlation, and whether Ω is positive definite."""
    Q, ok = spd_inv(omega)
    P = omega.shape[0]
    K = np.zeros((2, P))
    if not ok:
        return K, 1.0, 1.0, 0.0, False
    qaa, qab, qbb = Q[a, a], Q[a, b], Q[b, b]
    det = qaa * qbb - qab * qab
    saa, sab, sbb = qbb / det, -qab / det, qaa / det
    for k in range(P):
        if k != a and k != b:
            K[0, k] = -(saa * Q[a, k] + sab * Q[b, k])
            K[1, k] = -(sab * Q[a, k] + sbb * Q[b, k])
    sda, sdb = math.sqrt(saa), math.sqrt(sbb)
    return K, sda, sdb, sab / (sda * sdb), True


@njit(cache=True, inline="always")
def _means(Y, F, K, i, a, b):
    ma, mb = F[i, a], F[i, b]
    for k in range(Y.shape[1]):
        r = Y[i, k] - F[i, k]
        ma += K[0, k] * r
        mb += K[1, k] * r
    return ma, mb


@njit(cache=True)
def _loglik(Y, F, a, b, lo_a, hi_a, lo_b, hi_b, rows, omega):
    """Σ_i log P_i over ``rows`` (those with a category in a or b) and whether the move applies
    (Ω positive definite, |ρ| < RHO_MAX)."""
    K, sda, sdb, r, ok = _pair_moments(omega, a, b)
    if not ok or abs(r) >= RHO_MAX:
        return 0.0, False
    sn, w = _theta(r)
    out = 0.0
    for i in rows:
        ma, mb = _means(Y, F, K, i, a, b)
        p = _rect((lo_a[i] - ma) / sda, (hi_a[i] - ma) / sda, (lo_b[i] - mb) / sdb, (hi_b[i] - mb) / sdb, sn, w)
        out += math.log(max(p, 1e-300))
    return out, True


@njit(cache=True)
def _step(Y, F, a, b, lo_a, hi_a, lo_b, hi_b, rows, omega, psi, nu, scale, eps, logu):
    """Step 1: Ω[a, b] by random-walk MH (``eps``, ``logu``: one per proposal). Returns Ω and
    the acceptance rate (0 where the move does not apply)."""
    cur, ok = _loglik(Y, F, a, b, lo_a, hi_a, lo_b, hi_b, rows, omega)
    if not ok:
        return omega, 0.0
    Q, _ = spd_inv(omega)
    cur_prior = _log_prior1(omega, Q, psi, nu)
    taken = 0.0
    for g in range(eps.size):
        om = omega.copy()
        om[a, b] += scale * eps[g]
        om[b, a] = om[a, b]
        w, ok = _loglik(Y, F, a, b, lo_a, hi_a, lo_b, hi_b, rows, om)
        if not ok:
            continue
        Qn, _ = spd_inv(om)
        pri = _log_prior1(om, Qn, psi, nu)
        if logu[g] < w + pri - cur - cur_prior:
            omega, cur, cur_prior = om, w, pri
            taken += 1.0 / eps.size
    return omega, taken


@njit(cache=True)
def _truncated(m, sd, lo, hi, u):
    """N(m, sd²) restricted to (lo, hi) (either may be infinite)."""
    if lo == -np.inf and hi == np.inf:
        return m + sd * kern.ndtri(u)
    if lo == -np.inf:
        return kern.one_sided(m, sd, hi, -1.0, u)
    if hi == np.inf:
        return kern.one_sided(m, sd, lo, 1.0, u)
    return kern.two_sided(m, sd, lo, hi, u)


@njit(cache=True)
def _interval(m, sd, lo, hi):
    """P(lo < N(m, sd²) < hi)."""
    if lo == -np.inf and hi == np.inf:
        return 1.0
    return math.exp(kern._log_interval(m, sd, lo, hi))


@njit(cache=True)
def _invert(la, ua, lb, ub, sn, w, total, u):
    """The first coordinate X of the standardised pair restricted to the rectangle, by
    bisection on its distribution function P(la < X < t, lb < Y < ub)/total = u."""
    lo = la if la != -np.inf else min(ua, 0.0) - 40.0
    hi = ua if ua != np.inf else max(la, 0.0) + 40.0
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        if _rect(la, mid, lb, ub, sn, w) < u * total:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@njit(cache=True)
def _redraw(Y, F, a, b, lo_a, hi_a, lo_b, hi_b, omega, u, start):
    """Step 2: (z_a, z_b) of rows start, start + 1, … from their joint conditional (module
    notes), into Y. Returns −1 when done, else the row at which the uniforms ``u`` ran out."""
    K, sda, sdb, r, ok = _pair_moments(omega, a, b)
    if not ok or abs(r) >= RHO_MAX:    # the move does not apply here (module notes)
        return -1
    sn, w = _theta(r)
    cr = math.sqrt(1.0 - r * r)
    t = 0
    for i in range(start, Y.shape[0]):
        if t + 8 > u.size:
            return i
        ma, mb = _means(Y, F, K, i, a, b)
        fa = lo_a[i] != -np.inf or hi_a[i] != np.inf
        fb = lo_b[i] != -np.inf or hi_b[i] != np.inf
        first_a = True
        if fa and fb:
            first_a = _interval(ma, sda, lo_a[i], hi_a[i]) <= _interval(mb, sdb, lo_b[i], hi_b[i])
        elif fb:
            first_a = False
        if first_a:
            m1, s1, l1, h1, m2, s2, l2, h2 = ma, sda, lo_a[i], hi_a[i], mb, sdb, lo_b[i], hi_b[i]
        else:
            m1, s1, l1, h1, m2, s2, l2, h2 = mb, sdb, lo_b[i], hi_b[i], ma, sda, lo_a[i], hi_a[i]
        if fa and fb:
            p1 = _interval(m1, s1, l1, h1)
            both = _rect((l1 - m1) / s1, (h1 - m1) / s1, (l2 - m2) / s2, (h2 - m2) / s2, sn, w)
            if both * MAX_TRIES < p1:
                x1 = m1 + s1 * _invert((l1 - m1) / s1, (h1 - m1) / s1, (l2 - m2) / s2, (h2 - m2) / s2, sn, w,
                                       both, u[t])
                t += 1
            else:
                while True:
                    if t + 8 > u.size:
                        return i
                    x1 = _truncated(m1, s1, l1, h1, u[t])
                    c = m2 + r * s2 / s1 * (x1 - m1)
                    take = u[t + 1] < _interval(c, s2 * cr, l2, h2)
                    t += 2
                    if take:
                        break
        else:
            x1 = _truncated(m1, s1, l1, h1, u[t])
            t += 1
        x2 = _truncated(m2 + r * s2 / s1 * (x1 - m1), s2 * cr, l2, h2, u[t])
        t += 1
        if first_a:
            Y[i, a], Y[i, b] = x1, x2
        else:
            Y[i, a], Y[i, b] = x2, x1
    return -1


def pair_move(rng: np.random.Generator, Y: np.ndarray, F: np.ndarray, a: int, b: int, bounds_a: tuple,
              bounds_b: tuple, omega: np.ndarray, prior: tuple, step: float) -> tuple:
    """Steps 1 and 2 for coordinates a and b of rows Y (means F, covariance ``omega``, its
    inverse-Wishart ``prior``): ``bounds_a``/``bounds_b`` the rows' intervals of each (±inf
    where the category is missing). Y's columns a and b are redrawn in place; returns (Ω, the
    acceptance rate). The random-walk scale is ``step`` × (Ω_aa Ω_bb / rows with both
    categories)^½."""
    lo_a, hi_a = bounds_a
    lo_b, hi_b = bounds_b
    fa = np.isfinite(lo_a) | np.isfinite(hi_a)
    fb = np.isfinite(lo_b) | np.isfinite(hi_b)
    rows = np.flatnonzero(fa | fb)
    scale = step * math.sqrt(omega[a, a] * omega[b, b] / max(int(np.sum(fa & fb)), 1))
    psi, nu = prior
    omega, taken = _step(Y, F, a, b, lo_a, hi_a, lo_b, hi_b, rows, omega, psi, float(nu), scale,
                         rng.standard_normal(PROPOSALS), np.log(rng.random(PROPOSALS)))
    n = Y.shape[0]
    start = 0
    while start >= 0:
        start = _redraw(Y, F, a, b, lo_a, hi_a, lo_b, hi_b, omega, 1.0 - rng.random(3 * n + 64), start)
    return omega, taken
