"""Collapsed block moves for the latent column of a rare category (two-level sampler).

Notes
-----
Where a category is rare — a binary variable's or an ordinal's rarer category, a nominal
variable's non-reference category — its latent column z_a pins the parameters it is drawn
with: given the latents, the column's fixed effects B_a, its clusters' random effects u_a and
its level-1 covariances Ω1[a, ·] are known to within what thousands of latent values say, while
the categories say far less (a rare event's probit information is a few per cent of a
latent's). A Gibbs scan then moves them by the little the latents leave room for, and they
mix slowly (on JSPmiss, fluent's two 3 % categories: bulk ESS 9–20 per 1,000 sweeps for their
level-2 variances, intercepts and covariances with english).

Each sweep, for each such column, this module updates θ_a = (u_a, B_a, Ω1's free elements of
row a) with z_a integrated out, then draws z_a from its conditional: a blocked update of
(θ_a, z_a) given everything else (the other columns' latents, the continuous values, Ω2, the
other variables' effects). With z_a integrated out, a row's contribution is the probability of
its category's interval for z_a given its other columns,

    P_i = Φ((hi_i − μ_i)/σ) − Φ((lo_i − μ_i)/σ),   μ_i = x_i'B_a + z_i'u_{j(i),a} + c_i,

(σ² and c_i = Σ_k K_k e_ik the conditional variance and regression on the other columns'
residuals under Ω1; a row with a missing category has P_i = 1; a nominal component's interval
is bounded by its variable's other latents, an ordinal's by its thresholds), log P_i is concave
in μ_i, and its first two derivatives give a Newton-preconditioned Langevin proposal
(mean θ + (h²/2) H⁻¹∇, covariance h² H⁻¹, H the negative Hessian; Metropolis–Hastings with the
reverse proposal):

1. u_a of all clusters at once (they are independent given the rest: each cluster's q-dimensional
   proposal is accepted or not on its own), with their normal prior given the cluster's other
   level-2 coordinates under Ω2;
2. B_a (flat prior or ``categorical_prior_sd``);
3. the free elements of row a of Ω1 (covariances with continuous variables and other
   categorical variables' latents; a nominal variable's own block stays fixed) by random-walk
   MH on the collapsed target with the restricted inverse-Wishart prior, its step tuned in
   burn-in;
4. z_a of every row from its conditional (observed category: truncated normal; missing: normal),
   which also replaces the missing-cell step's draw of that latent for this sweep.

Each proposal is one pass over the rows (a normal CDF and density per row). The moves run for
columns whose category has fewer than ``RARE`` of the observed values: there data augmentation
is slow and the passes pay; with common categories the latents are nearly as informative as
the categories and the Gibbs steps alone do (measured in ``docs/sampler-quality.md``). Not with
a substantive model or ``covariance="cluster"``. ``tests/test_collapsed.py`` checks the
derivatives and targets against scipy and the sampler with and without the moves against each
other; ``tests/test_jomo_mixed.py`` the posterior against jomo's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from . import _kernels as kern
from ._small import chol, spd_inv

__all__ = ["RARE", "ENABLED", "Column", "rare_columns", "interval_terms", "column_block"]

RARE = 0.10      # a column's category below this share of the observed values gets the moves
ENABLED = True   # (switched off only to measure what the moves buy)
H_STEP = 1.4     # Langevin step of the u and B proposals (in units of the Newton scale)
GAMMA_PROPOSALS = 2
FIXED_STEP = True
_LOG_SQRT_2PI = 0.9189385332046728


@dataclass(frozen=True)
class Column:
    """One latent column that gets the collapsed moves."""

    c: int              # its column of Y1
    kind: int           # _kernels.BINARY, ORDINAL or NOMINAL
    codes: np.ndarray   # its variable's observed category per row (−1: missing)
    cols: np.ndarray    # its variable's latent columns
    m: int              # position of c among them
    cuts: int           # ordinal: index of its thresholds among the ordinal variables' (else −1)
    free: np.ndarray    # the free coordinates of Ω1's row c
    share: float        # the category's share of the observed values
    rows: np.ndarray    # the rows with an observed category (the others' P_i = 1)


def rare_columns(cat1: tuple, p1: int, rare: float = RARE) -> tuple[Column, ...]:
    """The level-1 latent columns whose category is rarer than ``rare``: a binary variable's
    column if either category is, an ordinal's if an end category is, a nominal component if
    its own category is (the reference category's rarity shows in every component)."""
    out, o = [], 0
    kinds = {"binary": kern.BINARY, "ordinal": kern.ORDINAL, "nominal": kern.NOMINAL}
    for codec in cat1:
        codes = np.asarray(codec.codes, np.int64)
        n_obs = max(int(np.sum(codes >= 0)), 1)
        shares = np.bincount(codes[codes >= 0], minlength=codec.n_categories) / n_obs
        cols = np.asarray(codec.cols, np.int64)
        for m, c in enumerate(codec.cols):
            if codec.kind == "nominal":
                share = min(shares[m], shares[-1])
            elif codec.kind == "ordinal":
                share = min(shares[0], shares[-1])
            else:
                share = shares.min()
            if share < rare:
                free = np.array([k for k in range(p1) if k not in codec.cols], np.int64)
                out.append(Column(c=c, kind=kinds[codec.kind], codes=codes, cols=cols, m=m,
                                  cuts=o if codec.kind == "ordinal" else -1, free=free, share=float(share),
                                  rows=np.flatnonzero(codes >= 0).astype(np.int64)))
        o += codec.kind == "ordinal"
    return tuple(out)


@njit(cache=True)
def interval_terms(m, sd, lo, hi):
    """log P(lo < N(m, sd²) < hi) and its first two derivatives in m (0, 0, 0 for an open
    interval), accurate in both tails: the interval is reflected into the lower half first."""
    a = (lo - m) / sd
    b = (hi - m) / sd
    if a == -np.inf and b == np.inf:
        return 0.0, 0.0, 0.0
    flip = a + b > 0.0
    if flip:
        a, b = -b, -a
    lb = kern.log_ndtr(b)
    if a == -np.inf:
        lp = lb
    else:
        lp = lb + math.log1p(-math.exp(kern.log_ndtr(a) - lb))
    ra = 0.0 if a == -np.inf else math.exp(-0.5 * a * a - _LOG_SQRT_2PI - lp)
    rb = math.exp(-0.5 * b * b - _LOG_SQRT_2PI - lp)
    d1 = (ra - rb) / sd
    ara = 0.0 if a == -np.inf else a * ra
    d2 = (ara - b * rb) / (sd * sd) - d1 * d1
    if flip:
        d1 = -d1
    return lp, d1, d2


@njit(cache=True)
def _bounds(y, kind, codes, cols, m, cuts):
    """Each row's interval for the column's latent given its variable's other latents (the
    regions of ``_kernels.draw_category_latent``); ±inf where open or the category missing."""
    n = y.shape[0]
    lo = np.full(n, -np.inf)
    hi = np.full(n, np.inf)
    K = cols.size + 1 if kind == kern.NOMINAL else cuts.size - 1
    for i in range(n):
        code = codes[i]
        if code < 0:
            continue
        if kind == kern.BINARY:
            if code == 1:
                lo[i] = 0.0
            else:
                hi[i] = 0.0
        elif kind == kern.ORDINAL:
            lo[i] = cuts[code]
            hi[i] = cuts[code + 1]
        elif code == K - 1:
            hi[i] = 0.0
        elif code == m:
            low = 0.0
            for k in range(cols.size):
                if k != m and y[i, cols[k]] > low:
                    low = y[i, cols[k]]
            lo[i] = low
        else:
            hi[i] = y[i, cols[code]]
    return lo, hi


@njit(cache=True)
def _offsets(y, fitted, qc):
    """c_i = −Σ_k qc_k (y_ik − fitted_ik): the column's conditional mean minus its own fitted
    value (qc = Q[:, a] / Q[a, a] with qc[a] = 0)."""
    n, p = y.shape
    out = np.empty(n)
    for i in range(n):
        acc = 0.0
        for k in range(p):
            acc -= qc[k] * (y[i, k] - fitted[i, k])
        out[i] = acc
    return out


@njit(cache=True)
def _cluster_terms(x, z, cl, rows, beta, U, off, sd, lo, hi, J):
    """Per cluster, over the rows with an observed category: Σ log P_i, Σ z_i d1_i and
    −Σ z_i z_i' d2_i at effects U (J × q)."""
    f = x.shape[1]
    q = z.shape[1]
    lp = np.zeros(J)
    g = np.zeros((J, q))
    H = np.zeros((J, q, q))
    for i in rows:
        j = cl[i]
        mu = off[i]
        for k in range(f):
            mu += x[i, k] * beta[k]
        for r in range(q):
            mu += z[i, r] * U[j, r]
        l, d1, d2 = interval_terms(mu, sd, lo[i], hi[i])
        lp[j] += l
        for r in range(q):
            g[j, r] += z[i, r] * d1
            for s in range(q):
                H[j, r, s] -= z[i, r] * z[i, s] * d2
    return lp, g, H


@njit(cache=True)
def _fixed_terms(x, z, cl, rows, beta, U, off, sd, lo, hi, derivatives):
    """Σ log P_i over the rows with an observed category and, if ``derivatives``, Σ x_i d1_i
    and −Σ x_i x_i' d2_i at fixed effects ``beta``."""
    f = x.shape[1]
    q = z.shape[1]
    lp = 0.0
    g = np.zeros(f)
    H = np.zeros((f, f))
    for i in rows:
        j = cl[i]
        mu = off[i]
        for k in range(f):
            mu += x[i, k] * beta[k]
        for r in range(q):
            mu += z[i, r] * U[j, r]
        l, d1, d2 = interval_terms(mu, sd, lo[i], hi[i])
        lp += l
        if derivatives:
            for k in range(f):
                g[k] += x[i, k] * d1
                for s in range(f):
                    H[k, s] -= x[i, k] * x[i, s] * d2
    return lp, g, H


@njit(cache=True)
def _langevin(theta, grad, H, h, eps):
    """Mean θ + (h²/2)H⁻¹∇ and θ' = mean + h L⁻ᵀ eps ~ N(mean, h²H⁻¹) (H = LL'), L and
    whether H was positive definite."""
    L, ok = chol(H)
    d = theta.size
    if not ok:
        return theta.copy(), theta.copy(), L, False
    w = np.empty(d)                # H⁻¹ grad by two triangular solves
    for r in range(d):
        s = grad[r]
        for k in range(r):
            s -= L[r, k] * w[k]
        w[r] = s / L[r, r]
    v = np.empty(d)
    for r in range(d - 1, -1, -1):
        s = w[r]
        for k in range(r + 1, d):
            s -= L[k, r] * v[k]
        v[r] = s / L[r, r]
    mean = theta + 0.5 * h * h * v
    e = np.empty(d)                # L' e = eps  ->  e ~ N(0, H⁻¹)
    for r in range(d - 1, -1, -1):
        s = eps[r]
        for k in range(r + 1, d):
            s -= L[k, r] * e[k]
        e[r] = s / L[r, r]
    return mean, mean + h * e, L, True


@njit(cache=True)
def _log_q(x, mean, L, h):
    """log N(x; mean, h²(LL')⁻¹) up to a constant shared by both directions."""
    d = x.size
    out = 0.0
    for r in range(d):
        s = 0.0
        for k in range(r, d):
            s += L[k, r] * (x[k] - mean[k])     # (L'(x − mean))_r
        out -= 0.5 * s * s / (h * h)
        out += math.log(L[r, r])
    return out


@njit(cache=True)
def _quad(V, a, b):
    """a' V b."""
    out = 0.0
    for r in range(a.size):
        for s in range(b.size):
            out += a[r] * V[r, s] * b[s]
    return out


@njit(cache=True)
def _effects_step(x, z, cl, rows, beta, U, off, sd, lo, hi, M, Vinv, h, eps, logu):
    """Step 1: each cluster's effects by Newton-preconditioned Langevin MH on its collapsed
    conditional (prior N(M_j, V)); all clusters' current and proposed terms from two passes."""
    J, q = U.shape
    lp0, g0, H0 = _cluster_terms(x, z, cl, rows, beta, U, off, sd, lo, hi, J)
    means0 = np.empty((J, q))
    prop = U.copy()
    Ls0 = np.empty((J, q, q))
    ok0 = np.zeros(J, np.bool_)
    for j in range(J):
        d = U[j] - M[j]
        grad = g0[j] - Vinv @ d
        mean, pr, L, ok = _langevin(U[j].copy(), grad, H0[j] + Vinv, h, eps[j])
        means0[j], prop[j], Ls0[j], ok0[j] = mean, pr, L, ok
    lp1, g1, H1 = _cluster_terms(x, z, cl, rows, beta, prop, off, sd, lo, hi, J)
    out = U.copy()
    for j in range(J):
        if not ok0[j]:
            continue
        d1 = prop[j] - M[j]
        mean1, _, L1, ok1 = _langevin(prop[j].copy(), g1[j] - Vinv @ d1, H1[j] + Vinv, h, eps[j])
        if not ok1:
            continue
        d0 = U[j] - M[j]
        log_r = (lp1[j] - 0.5 * _quad(Vinv, d1, d1)) - (lp0[j] - 0.5 * _quad(Vinv, d0, d0)) \
            + _log_q(U[j], mean1, L1, h) - _log_q(prop[j], means0[j], Ls0[j], h)
        if logu[j] < log_r:
            out[j] = prop[j]
    return out


@njit(cache=True)
def _fixed_step(x, z, cl, rows, beta, U, off, sd, lo, hi, prec, h, eps, logu):
    """Step 2: B_a by Newton-preconditioned Langevin MH; returns it and Σ log P_i there."""
    f = beta.size
    w0, g0, H0 = _fixed_terms(x, z, cl, rows, beta, U, off, sd, lo, hi, True)
    P = np.diag(prec)
    mean0, prop, L0, ok0 = _langevin(beta, g0 - prec * beta, H0 + P, h, eps)
    if not ok0:
        return beta, w0
    w1, g1, H1 = _fixed_terms(x, z, cl, rows, prop, U, off, sd, lo, hi, True)
    mean1, _, L1, ok1 = _langevin(prop, g1 - prec * prop, H1 + P, h, np.zeros(f))
    if not ok1:
        return beta, w0
    log_r = (w1 - 0.5 * np.sum(prec * prop * prop)) - (w0 - 0.5 * np.sum(prec * beta * beta)) \
        + _log_q(beta, mean1, L1, h) - _log_q(prop, mean0, L0, h)
    if logu < log_r:
        return prop, w1
    return beta, w0


@njit(cache=True)
def _conditional(omega, c):
    """qc = Q[:, c]/Q[c, c] (qc[c] = 0), the conditional SD of column c given the others, and
    log|Ω| and tr(ΨΩ⁻¹)'s inverse Q (Q = Ω⁻¹); ok False if Ω is not positive definite."""
    Q, ok = spd_inv(omega)
    p = omega.shape[0]
    qc = np.zeros(p)
    if not ok:
        return qc, 1.0, Q, False
    for k in range(p):
        qc[k] = Q[k, c] / Q[c, c]
    qc[c] = 0.0
    return qc, 1.0 / math.sqrt(Q[c, c]), Q, True


@njit(cache=True)
def _log_prior1(omega, Q, psi, nu):
    """log of Ω1's (restricted) inverse-Wishart prior up to a constant, given Q = Ω⁻¹."""
    L, ok = chol(omega)
    p = omega.shape[0]
    logdet = 0.0
    for k in range(p):
        logdet += 2.0 * math.log(L[k, k])
    tr = 0.0
    for k in range(p):
        for m in range(p):
            tr += psi[k, m] * Q[m, k]
    return -0.5 * (nu + p + 1) * logdet - 0.5 * tr


@njit(cache=True)
def _block(x, z, cl, rows, c, kind, codes, cols, m, cuts, y1, fitted, beta, U, omega1, psi1, nu1, free,
           n_obs, omega2, rest, prec, step, h, eps_u, logu_u, eps_b, logu_b, eps_g, logu_g, unif, fixed_step):
    """The four steps of the module notes for column c (y1 and fitted in place); returns B_a,
    U_a, Ω1 and the Ω1 step's acceptance rate."""
    J, q = U.shape
    lo, hi = _bounds(y1, kind, codes, cols, m, cuts)
    qc, sd, Q, _ = _conditional(omega1, c)
    off = _offsets(y1, fitted, qc)
    # 1. effects, with their prior given the cluster's other level-2 coordinates under Ω2
    P = omega2.shape[0]
    A0 = c * q
    Rn = P - q
    R = np.empty(Rn, np.int64)
    t = 0
    for k in range(P):
        if k < A0 or k >= A0 + q:
            R[t] = k
            t += 1
    oRR = np.empty((Rn, Rn))
    oRA = np.empty((Rn, q))
    for a in range(Rn):
        for b in range(Rn):
            oRR[a, b] = omega2[R[a], R[b]]
        for b in range(q):
            oRA[a, b] = omega2[R[a], A0 + b]
    K2 = np.zeros((Rn, q))
    if Rn:
        iRR, _ = spd_inv(oRR)
        K2 = iRR @ oRA
    V = np.empty((q, q))
    for a in range(q):
        for b in range(q):
            v = omega2[A0 + a, A0 + b]
            for k in range(Rn):
                v -= oRA[k, a] * K2[k, b]
            V[a, b] = v
    Vinv, _ = spd_inv(V)
    M = np.zeros((J, q))
    for j in range(J):
        for k in range(Rn):
            for b in range(q):
                M[j, b] += rest[j, k] * K2[k, b]
    U = _effects_step(x, z, cl, rows, beta, U, off, sd, lo, hi, M, Vinv, h, eps_u, logu_u)
    # 2. fixed effects
    if fixed_step:
        beta, current = _fixed_step(x, z, cl, rows, beta, U, off, sd, lo, hi, prec, h, eps_b, logu_b)
    else:
        current = _fixed_terms(x, z, cl, rows, beta, U, off, sd, lo, hi, False)[0]
    # 3. Ω1's free elements of row c
    taken = 0.0
    G = logu_g.size
    if free.size:
        cur_prior = _log_prior1(omega1, Q, psi1, nu1)
        nf = free.size
        sub = np.empty((nf, nf))
        for a in range(nf):
            for b in range(nf):
                sub[a, b] = omega1[free[a], free[b]]
        Lf, _ = chol(sub)
        scale = step * sd / math.sqrt(n_obs)
        for g in range(G):
            om = omega1.copy()
            for a in range(nf):
                v = omega1[c, free[a]]
                for b in range(a + 1):
                    v += scale * Lf[a, b] * eps_g[g, b]
                om[c, free[a]] = v
                om[free[a], c] = v
            qc_n, sd_n, Q_n, ok = _conditional(om, c)
            if not ok:
                continue
            pri = _log_prior1(om, Q_n, psi1, nu1)
            off_n = _offsets(y1, fitted, qc_n)
            w, _, _ = _fixed_terms(x, z, cl, rows, beta, U, off_n, sd_n, lo, hi, False)
            if logu_g[g] < w + pri - current - cur_prior:
                omega1, current, cur_prior, off, sd = om, w, pri, off_n, sd_n
                taken += 1.0 / G
    # 4. the column's latents given the new block; its fitted values
    base = _own_fitted(x, z, cl, beta, U)
    _redraw(y1, c, base, off, sd, kind, codes, cols, m, cuts, unif)
    for i in range(base.size):
        fitted[i, c] = base[i]
    return beta, U, omega1, taken


@njit(cache=True)
def _redraw(y, c, base, off, sd, kind, codes, cols, m, cuts, u):
    """Column c's latents from their conditional N(base + off, sd²): restricted to the observed
    category's region, unrestricted where the category is missing."""
    n = y.shape[0]
    K = cols.size + 1 if kind == kern.NOMINAL else cuts.size - 1
    for i in range(n):
        cm = base[i] + off[i]
        if codes[i] < 0:
            y[i, c] = cm + sd * kern.ndtri(u[i])
        else:
            y[i, c] = kern.draw_category_latent(y, i, cm, sd, kind, codes[i], cols, m, K, cuts, u[i])


@njit(cache=True)
def _own_fitted(x, z, cl, beta, U):
    n, f = x.shape
    q = z.shape[1]
    out = np.empty(n)
    for i in range(n):
        s = 0.0
        for k in range(f):
            s += x[i, k] * beta[k]
        for r in range(q):
            s += z[i, r] * U[cl[i], r]
        out[i] = s
    return out


def column_block(rng: np.random.Generator, st, col: Column, y1: np.ndarray, fitted: np.ndarray,
                 b1: np.ndarray, u1: np.ndarray, omega1: np.ndarray, omega2: np.ndarray,
                 level2_rest: np.ndarray, cuts1: tuple, step: float) -> tuple:
    """One column's collapsed moves (module notes), compiled in one call. ``fitted`` (X1B1 +
    ZU1, N × p1) and ``y1`` are updated in place; ``level2_rest``: the clusters' level-2
    coordinates other than the column's effects (u1's other columns, then Y2 − X2B2), in Ω2's
    order. Returns (B1, U1, Ω1, acceptance rate of the Ω1 step)."""
    data = st.data
    q, c, f = st.q, col.c, data.x1.shape[1]
    J, N = data.n_clusters, y1.shape[0]
    cuts = cuts1[col.cuts] if col.cuts >= 0 else np.zeros(2)
    prec = np.zeros(f) if st.fixed_prior is None else np.ascontiguousarray(st.fixed_prior[c * f:(c + 1) * f])
    psi1, nu1 = st.prior1
    beta, U, omega1, taken = _block(
        data.x1, data.z, data.cluster, col.rows, c, col.kind, col.codes, col.cols, col.m, cuts, y1, fitted,
        np.ascontiguousarray(b1[:, c]), np.ascontiguousarray(u1[:, c * q:(c + 1) * q]), omega1, psi1,
        float(nu1), col.free, float(col.rows.size), omega2, np.ascontiguousarray(level2_rest), prec, step,
        H_STEP, rng.standard_normal((J, q)), np.log(rng.random(J)), rng.standard_normal(f),
        math.log(rng.random()), rng.standard_normal((GAMMA_PROPOSALS, col.free.size)),
        np.log(rng.random(GAMMA_PROPOSALS)), 1.0 - rng.random(N), FIXED_STEP)
    b1 = b1.copy()
    b1[:, c] = beta
    u1 = u1.copy()
    u1[:, c * q:(c + 1) * q] = U
    return b1, u1, omega1, taken
