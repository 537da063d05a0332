"""Compiled row loops for the sampler's per-row work (numba).

Profiling showed the per-row steps (latent truncated-normal draws, ordinal threshold
likelihoods, missing-cell draws) dominate a sweep once the cluster-level algebra is batched:
as numpy expressions they pass over N-long temporaries a dozen times per column. Here each is
one loop over rows. Random numbers still come from numpy's Generator in bulk (the kernels
only transform them), so a seed gives the same stream whatever compiles the loops.

Special functions: Φ(x) = erfc(−x/√2)/2 from libm; Φ⁻¹ by Wichura's AS 241 (relative error
~1e-16, the algorithm of Python's ``statistics.NormalDist.inv_cdf``); far tails (Φ below
~1e-300) in log space, log Φ(z) from its asymptotic series for z < −37 and Φ⁻¹ of a log
probability through AS 241's tail branch, which takes r = √(−log p) directly. All are checked
against scipy.special in tests/test_kernels.py.

References
----------
Wichura, M. J. (1988). Algorithm AS 241: The percentage points of the normal distribution.
Applied Statistics, 37(3), 477-484.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

__all__ = ["BINARY", "ORDINAL", "NOMINAL", "ndtr", "ndtri", "log_ndtr", "latent_column",
           "ordinal_loglik_ratio", "missing_rows", "fitted_rows", "residual_crossprod",
           "draw_category_latent"]

BINARY, ORDINAL, NOMINAL = 0, 1, 2
_INV_SQRT2 = 0.7071067811865476
_LOG_SQRT_2PI = 0.9189385332046728
_FAR = -37.0          # below this Φ(z) < 1e-300: use logs
_INF = np.inf


@njit(cache=True)
def ndtr(x):
    """Standard normal CDF."""
    return 0.5 * math.erfc(-x * _INV_SQRT2)


@njit(cache=True)
def log_ndtr(x):
    """log Φ(x), accurate in the far lower tail (asymptotic series below −37)."""
    if x > _FAR:
        return math.log(0.5 * math.erfc(-x * _INV_SQRT2))
    z2 = x * x
    w = 1.0 / z2
    s = 1.0 - w * (1.0 - w * (3.0 - w * (15.0 - 105.0 * w)))
    return -0.5 * z2 - math.log(-x) - _LOG_SQRT_2PI + math.log(s)


@njit(cache=True)
def _tail(r):
    """AS 241 for p < 0.075 given r = √(−log p); returns −Φ⁻¹(p) (a positive number)."""
    if r <= 5.0:
        r = r - 1.6
        num = (((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r
                    + 2.41780725177450611770e-1) * r + 1.27045825245236838258e+0) * r
                  + 3.64784832476320460504e+0) * r + 5.76949722146069140550e+0) * r
                + 4.63033784615654529590e+0) * r + 1.42343711074968357734e+0)
        den = (((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r
                    + 1.51986665636164571966e-2) * r + 1.48103976427480074590e-1) * r
                  + 6.89767334985100004550e-1) * r + 1.67638483018380384940e+0) * r
                + 2.05319162663775882187e+0) * r + 1.0)
    else:
        r = r - 5.0
        num = (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r
                    + 1.24266094738807843860e-3) * r + 2.65321895265761230930e-2) * r
                  + 2.96560571828504891230e-1) * r + 1.78482653991729133580e+0) * r
                + 5.46378491116411436990e+0) * r + 6.65790464350110377720e+0)
        den = (((((((2.04426310338993978564e-15 * r + 1.42151175831644588870e-7) * r
                    + 1.84631831751005468180e-5) * r + 7.86869131145613259100e-4) * r
                  + 1.48753612908506148525e-2) * r + 1.36929880922735805310e-1) * r
                + 5.99832206555887937690e-1) * r + 1.0)
    return num / den


@njit(cache=True)
def ndtri(p):
    """Standard normal quantile (AS 241)."""
    if p <= 0.0:
        return -_INF
    if p >= 1.0:
        return _INF
    q = p - 0.5
    if abs(q) <= 0.425:
        r = 0.180625 - q * q
        num = (((((((2.5090809287301226727e+3 * r + 3.3430575583588128105e+4) * r
                    + 6.7265770927008700853e+4) * r + 4.5921953931549871457e+4) * r
                  + 1.3731693765509461125e+4) * r + 1.9715909503065514427e+3) * r
                + 1.3314166789178437745e+2) * r + 3.3871328727963666080e+0) * q
        den = (((((((5.2264952788528545610e+3 * r + 2.8729085735721942674e+4) * r
                    + 3.9307895800092710610e+4) * r + 2.1213794301586595867e+4) * r
                  + 5.3941960214247511077e+3) * r + 6.8718700749205790830e+2) * r
                + 4.2313330701600911252e+1) * r + 1.0)
        return num / den
    if q < 0.0:
        return -_tail(math.sqrt(-math.log(p)))
    return _tail(math.sqrt(-math.log1p(-p)))


@njit(cache=True)
def _ndtri_log(logp):
    """Φ⁻¹(exp(logp)) for exp(logp) < 0.075, without forming the probability."""
    return -_tail(math.sqrt(-logp))


@njit(cache=True)
def one_sided(cm, sd, bound, side, u):
    """N(cm, sd²) restricted to (bound, ∞) (side +1) or (−∞, bound) (side −1); u in (0, 1]."""
    zb = side * (cm - bound) / sd
    if zb > _FAR:
        P = ndtr(zb)
        p = u * P
        t = ndtri(p) if p > 1e-300 else _ndtri_log(math.log(u) + math.log(P))
    else:
        t = _ndtri_log(math.log(u) + log_ndtr(zb))
    return cm - side * sd * t


@njit(cache=True)
def two_sided(cm, sd, lo, hi, u):
    """N(cm, sd²) restricted to (lo, hi), both finite; u in (0, 1]."""
    a = (lo - cm) / sd
    b = (hi - cm) / sd
    flip = a + b > 0.0
    if flip:
        a, b = -b, -a
    pb = ndtr(b)
    if pb > 1e-300:
        pa = ndtr(a)
        t = ndtri(pb - u * (pb - pa))
    else:  # the whole interval beyond Φ ≈ 1e-300
        la = log_ndtr(a)
        lb = log_ndtr(b)
        t = _ndtri_log(lb + math.log1p(-u * -math.expm1(la - lb)))
    return cm - sd * t if flip else cm + sd * t


@njit(cache=True)
def _log_interval(cm, sd, lo, hi):
    """log P(lo < N(cm, sd²) ≤ hi)."""
    a = (lo - cm) / sd
    b = (hi - cm) / sd
    if a + b > 0.0:
        a, b = -b, -a
    pa = ndtr(a)
    pb = ndtr(b)
    if pb - pa > 1e-300:
        return math.log(pb - pa)
    la = log_ndtr(a)
    lb = log_ndtr(b)
    return lb + math.log1p(-math.exp(la - lb))


@njit(cache=True, inline="always")
def draw_category_latent(y, i, cm, sd, kind, code, cols, m, K, cuts, u):
    """The latent of row i's column for its observed ``code``: N(cm, sd²) restricted to the
    category's region (module notes of ``latent``)."""
    if kind == BINARY:
        return one_sided(cm, sd, 0.0, 1.0 if code == 1 else -1.0, u)
    if kind == ORDINAL:
        if code == 0:
            return one_sided(cm, sd, cuts[1], -1.0, u)
        if code == K - 1:
            return one_sided(cm, sd, cuts[K - 1], 1.0, u)
        return two_sided(cm, sd, cuts[code], cuts[code + 1], u)
    # nominal; the reference category is the last
    if code == K - 1:
        return one_sided(cm, sd, 0.0, -1.0, u)
    if code == m:
        low = 0.0
        for k in range(cols.size):
            if k != m and y[i, cols[k]] > low:
                low = y[i, cols[k]]
        return one_sided(cm, sd, low, 1.0, u)
    return one_sided(cm, sd, y[i, cols[code]], -1.0, u)


@njit(cache=True)
def latent_column(y, mean, qc, sd, c, kind, codes, cols, m, cuts, u):
    """Redraw latent column ``c`` of every row with an observed category from its conditional
    given the row's other columns, restricted by that category (rows with a missing category,
    ``codes < 0``, are left to the missing-cell step).

    ``qc`` = Q[:, c] / Q[c, c] with qc[c] = 0, so the conditional mean is
    ``mean[i, c] − Σ_k qc[k] (y[i, k] − mean[i, k])``; ``cols`` are the variable's latent
    columns and ``m`` the position of ``c`` among them (nominal); ``cuts`` the ordinal
    thresholds with ±inf ends; ``u`` uniforms in (0, 1]. Updates ``y`` in place (residuals are
    formed on the fly: no N×p temporary).
    """
    n, p = y.shape
    K = cols.size + 1 if kind == NOMINAL else cuts.size - 1
    for i in range(n):
        code = codes[i]
        if code < 0:
            continue
        acc = 0.0
        for k in range(p):
            acc += qc[k] * (y[i, k] - mean[i, k])
        y[i, c] = draw_category_latent(y, i, mean[i, c] - acc, sd, kind, code, cols, m, K, cuts, u[i])


@njit(cache=True)
def ordinal_loglik_ratio(y, mean, qc, sd, c, codes, new, old, k):
    """Σ_i log P_new(category_i) − log P_old(category_i) over the rows whose observed category
    is k−1 or k: the only ones whose interval moves with the threshold γ_k = ``new[k]``
    (the others' probabilities cancel in the ratio)."""
    n, p = y.shape
    total = 0.0
    for i in range(n):
        code = codes[i]
        if code != k and code != k - 1:
            continue
        acc = 0.0
        for m in range(p):
            acc += qc[m] * (y[i, m] - mean[i, m])
        cm = mean[i, c] - acc
        total += _log_interval(cm, sd, new[code], new[code + 1])
        total -= _log_interval(cm, sd, old[code], old[code + 1])
    return total


@njit(cache=True)
def missing_rows(y, mean, rows, pid, masks, K, C, cluster, per_cluster, z):
    """Missing cells ``μ_m + K (y_o − μ_o) + C z`` of every row with a hole, in row order.

    ``K``, ``C``: (patterns, Jc, p, p) from ``missing.conditionals`` (zero outside their blocks);
    the Jc index is the row's cluster when ``per_cluster``, else 0; ``z``: one standard normal
    per missing cell, in row order.
    """
    G, p = masks.shape
    miss = np.empty((G, p), dtype=np.int64)
    obs = np.empty((G, p), dtype=np.int64)
    nmiss = np.zeros(G, dtype=np.int64)
    nobs = np.zeros(G, dtype=np.int64)
    for g in range(G):
        for a in range(p):
            if masks[g, a]:
                miss[g, nmiss[g]] = a
                nmiss[g] += 1
            else:
                obs[g, nobs[g]] = a
                nobs[g] += 1
    e = np.empty(p)
    pos = 0
    for r in range(rows.size):
        i = rows[r]
        g = pid[r]
        j = cluster[i] if per_cluster else 0
        for t in range(nobs[g]):
            b = obs[g, t]
            e[b] = y[i, b] - mean[i, b]
        for s in range(nmiss[g]):
            a = miss[g, s]
            v = mean[i, a]
            for t in range(nobs[g]):
                v += K[g, j, a, obs[g, t]] * e[obs[g, t]]
            for t in range(s + 1):       # C is lower triangular within the missing block
                v += C[g, j, a, miss[g, t]] * z[pos + t]
            y[i, a] = v
        pos += nmiss[g]


@njit(cache=True)
def fitted_rows(x, b, u1, cluster, z, q, out):
    """Level-1 means ``X1 B1 + Z U1_j`` row by row into ``out`` (N, p), without a temporary
    per term. ``u1`` is (J, p·q) variable-major (``u1[j, l*q + k]``); ``z`` is (N, q).
    """
    fitted_crossprod(x, b, u1, cluster, z, q, out, out, False)
    return out


@njit(cache=True)
def fitted_crossprod(x, b, u1, cluster, z, q, out, y, cross=True):
    """``fitted_rows`` and, in the same pass (``cross``), Σ (y_i − f_i)(y_i − f_i)' over all
    rows (p × p)."""
    n, f = x.shape
    p = b.shape[1]
    S = np.zeros((p, p))
    e = np.empty(p)
    for i in range(n):
        j = cluster[i]
        for l in range(p):
            v = 0.0
            for a in range(f):
                v += x[i, a] * b[a, l]
            for k in range(q):
                v += z[i, k] * u1[j, l * q + k]
            out[i, l] = v
            e[l] = y[i, l] - v
        if cross:
            for a in range(p):
                for c in range(a + 1):
                    S[a, c] += e[a] * e[c]
    for a in range(p):
        for c in range(a):
            S[c, a] = S[a, c]
    return S


@njit(cache=True)
def residual_crossprod(y, fitted, cluster, n_groups):
    """Σ (y_i − f_i)(y_i − f_i)' per cluster (n_groups = J) or overall (n_groups = 1),
    without materialising the N×p residual matrix."""
    n, p = y.shape
    out = np.zeros((n_groups, p, p))
    e = np.empty(p)
    for i in range(n):
        g = cluster[i] if n_groups > 1 else 0
        for a in range(p):
            e[a] = y[i, a] - fitted[i, a]
        for a in range(p):
            for b in range(a + 1):
                out[g, a, b] += e[a] * e[b]
    for g in range(n_groups):
        for a in range(p):
            for b in range(a):
                out[g, b, a] = out[g, a, b]
    return out
