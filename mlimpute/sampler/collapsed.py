"""Collapsed block moves for the latent column of a rare category (both samplers).

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
2b. the scale of u_a together with Ω2's a-coordinates (u_a → αu_a, Ω2 → DΩ2D; a group move, as
   ``random.scale_move`` but with z_a integrated out: random-walk MH on log α, target the
   collapsed likelihood plus ``expansion.effects_term``, step tuned in burn-in) — what moves
   Ω2's variance of a rare category's effects, which the effects' own step leaves pinned to
   their spread;
3. the free elements of row a of Ω1 (covariances with continuous variables and other
   categorical variables' latents; a nominal variable's own block stays fixed) by random-walk
   MH on the collapsed target with the restricted inverse-Wishart prior, its step tuned in
   burn-in;
4. z_a of every row from its conditional (observed category: truncated normal; missing: normal),
   which also replaces the missing-cell step's draw of that latent for this sweep.

Each proposal is one pass over the rows with an observed category (a normal CDF, density and
logarithm per row); with the effects' two passes feeding the fixed effects' current point, a
column costs seven passes a sweep (about 0.35 ms on JSPmiss' 880 such rows). The moves run for
columns whose category has fewer than ``RARE`` of the observed values: there data augmentation
is slow and the passes pay; with common categories the latents are nearly as informative as
the categories and the Gibbs steps alone do (measured in ``docs/sampler-quality.md``). With a
substantive model the imputed categories of rows with an observed outcome count as observed
(``column_block``). Not with ``covariance="cluster"`` (nor, in the general sampler, with
variance functions). In the general sampler (``multi._collapsed_level1``) steps 1 and 2b run for each
classification of single membership in turn, the other classifications' effects on the column
(and those of multiple-membership classifications, which the block leaves alone) in the offset
c_i, with the unit's prior under that classification's Ω.

Variables measured on clusters (``level2_block``, two-level model) or on a classification's
units (``unit_block`` through ``multi._collapsed_class``): the same moves with the units as the
rows. A unit's coordinates (its effects, then its variables' values minus their means: u1_j and
y2_j − X2_j B2 in the two-level model) are N(0, Ω), so a latent column's conditional given the
unit's other coordinates is the partitioned Gaussian of Ω (Ω2, Ω^(c)), its mean including the
effects on it of the classifications nesting the units; steps 2–4 run on it (the column's
fixed effects, Ω's free row elements, the latents), and there are no effects below the units
to move. The other coordinates' density does not involve the row (its variance is fixed), so
step 3's target is the same as at level 1. These run with ``covariance="cluster"`` and with
variance functions too: those change level 1's covariance, and a unit's log-variance effects
are among the coordinates the block conditions on.

``tests/test_collapsed.py`` checks the derivatives and targets against scipy and the samplers
with and without the moves against each other; ``tests/test_jomo_mixed.py`` the posterior
against jomo's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from . import _kernels as kern
from ._small import chol, gaussian_draw, spd_inv
from .expansion import effects_term
from .latent import latents_to_codes

__all__ = ["RARE", "ENABLED", "Column", "rare_columns", "interval_terms", "categories", "column_block",
           "level2_block", "unit_block", "column_prior"]

RARE = 0.10      # a column's category below this share of the observed values gets the moves
ENABLED = True   # (switched off only to measure what the moves buy)
H_STEP = 1.4     # Langevin step of the u and B proposals (in units of the Newton scale)
GAMMA_PROPOSALS = 2
SCALE_PROPOSALS = 2
_LOG_SQRT_2PI = 0.9189385332046728
_INV_SQRT2 = 0.7071067811865476


@dataclass(frozen=True, eq=False)
class Column:
    """One latent column that gets the collapsed moves."""

    c: int              # its column of Y1
    codec: object       # its variable's ``ColumnCodec``
    kind: int           # _kernels.BINARY, ORDINAL or NOMINAL
    codes: np.ndarray   # its variable's observed category per row (−1: missing)
    cols: np.ndarray    # its variable's latent columns
    m: int              # position of c among them
    cuts: int           # ordinal: index of its thresholds among the ordinal variables' (else −1)
    free: np.ndarray    # the free coordinates of Ω1's row c
    share: float        # the category's share of the observed values
    rows: np.ndarray    # the rows with an observed category (the others' P_i = 1)
    held: np.ndarray    # rows of a missing category the substantive model holds (see column_block)


def rare_columns(cat1: tuple, p1: int, rare: float | None = None, held: dict | None = None,
                 first: int = 0, size: int | None = None) -> tuple[Column, ...]:
    """The latent columns whose category is rarer than ``rare``: a binary variable's column if
    either category is, an ordinal's if an end category is, a nominal component if its own
    category is (the reference category's rarity shows in every component); ``rare`` defaults
    to ``RARE`` (read when called). ``held``: variable name → the rows whose missing category a
    substantive model holds (``outcome.substantive_units``' rows or clusters where it is
    missing). ``p1`` columns (level 1); for level-2 variables ``first`` = p1·q, where their
    columns start among Ω2's ``size`` coordinates (``free`` is in those coordinates)."""
    rare = RARE if rare is None else rare
    held = held or {}
    none = np.zeros(0, np.int64)
    size = p1 if size is None else size
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
                free = np.array([k for k in range(size) if k - first not in codec.cols], np.int64)
                out.append(Column(c=c, codec=codec, kind=kinds[codec.kind], codes=codes, cols=cols, m=m,
                                  cuts=o if codec.kind == "ordinal" else -1, free=free, share=float(share),
                                  rows=np.flatnonzero(codes >= 0).astype(np.int64),
                                  held=np.asarray(held.get(codec.name, none), np.int64)))
        o += codec.kind == "ordinal"
    return tuple(out)


@njit(cache=True, inline="always")
def interval_terms(m, sd, lo, hi):
    """log P(lo < N(m, sd²) < hi) and its first two derivatives in m (0, 0, 0 for an open
    interval), accurate in both tails. One-sided intervals (binary and nominal latents, an
    ordinal's end categories) by Φ and the inverse Mills ratio λ = φ/Φ directly; two-sided ones
    reflected into the lower half first."""
    if lo == -np.inf:
        if hi == np.inf:
            return 0.0, 0.0, 0.0
        t = (hi - m) / sd
        sign = -1.0
    elif hi == np.inf:
        t = (m - lo) / sd
        sign = 1.0
    else:
        return _two_sided_terms(m, sd, lo, hi)
    if t > -30.0:
        P = 0.5 * math.erfc(-t * _INV_SQRT2)
        lam = math.exp(-0.5 * t * t - _LOG_SQRT_2PI) / P
        lp = math.log(P)
    else:
        lp = kern.log_ndtr(t)
        lam = math.exp(-0.5 * t * t - _LOG_SQRT_2PI - lp)
    return lp, sign * lam / sd, -lam * (t + lam) / (sd * sd)


@njit(cache=True)
def _two_sided_terms(m, sd, lo, hi):
    """``interval_terms`` for finite lo < hi: with a = (lo − m)/sd, b = (hi − m)/sd and
    P = Φ(b) − Φ(a), d/dm log P = (φ(a) − φ(b))/(sd P) and d²/dm² log P = (aφ(a) − bφ(b))/(sd² P)
    − (d/dm log P)², the interval reflected into the lower half where Φ is accurate."""
    a = (lo - m) / sd
    b = (hi - m) / sd
    flip = a + b > 0.0
    if flip:
        a, b = -b, -a
    lb = kern.log_ndtr(b)
    lp = lb + math.log1p(-math.exp(kern.log_ndtr(a) - lb))
    ra = math.exp(-0.5 * a * a - _LOG_SQRT_2PI - lp)
    rb = math.exp(-0.5 * b * b - _LOG_SQRT_2PI - lp)
    d1 = (ra - rb) / sd
    d2 = (a * ra - b * rb) / (sd * sd) - d1 * d1
    return lp, -d1 if flip else d1, d2


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


@njit(cache=True, inline="always")
def _row_mean(x, z, cl, i, beta, U, off):
    """μ_i = x_i'B_a + z_i'u_{j(i),a} + c_i."""
    mu = off[i]
    for k in range(x.shape[1]):
        mu += x[i, k] * beta[k]
    for r in range(z.shape[1]):
        mu += z[i, r] * U[cl[i], r]
    return mu


@njit(cache=True)
def _cluster_terms(x, z, cl, rows, beta, U, off, sd, lo, hi, J, rl, r1, r2):
    """Per cluster, over the rows with an observed category: Σ log P_i, Σ z_i d1_i and
    −Σ z_i z_i' d2_i at effects U (J × q); each row's (log P_i, d1_i, d2_i) into rl, r1, r2."""
    q = z.shape[1]
    lp = np.zeros(J)
    g = np.zeros((J, q))
    H = np.zeros((J, q, q))
    for i in rows:
        j = cl[i]
        l, d1, d2 = interval_terms(_row_mean(x, z, cl, i, beta, U, off), sd, lo[i], hi[i])
        rl[i], r1[i], r2[i] = l, d1, d2
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
    lp = 0.0
    g = np.zeros(f)
    H = np.zeros((f, f))
    for i in rows:
        l, d1, d2 = interval_terms(_row_mean(x, z, cl, i, beta, U, off), sd, lo[i], hi[i])
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
    if not ok:
        return theta.copy(), theta.copy(), L, False
    mean = theta + gaussian_draw(L, 0.5 * h * h * grad, np.zeros(theta.size))
    return mean, mean + gaussian_draw(L, np.zeros(theta.size), h * eps), L, True


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
    conditional (prior N(M_j, V)); all clusters' current and proposed terms from two passes.
    Returns the new U and Σ log P_i, Σ x_i d1_i, −Σ x_i x_i' d2_i there (the fixed effects'
    step starts from them)."""
    J, q = U.shape
    n, f = x.shape
    rows0 = np.empty((3, n))
    rows1 = np.empty((3, n))
    lp0, g0, H0 = _cluster_terms(x, z, cl, rows, beta, U, off, sd, lo, hi, J, rows0[0], rows0[1], rows0[2])
    means0 = np.empty((J, q))
    prop = U.copy()
    Ls0 = np.empty((J, q, q))
    ok0 = np.ones(J, np.bool_)
    hh = h * h
    for j in range(J):
        if q == 1:     # scalar: no small arrays
            hn = H0[j, 0, 0] + Vinv[0, 0]
            means0[j, 0] = U[j, 0] + 0.5 * hh * (g0[j, 0] - Vinv[0, 0] * (U[j, 0] - M[j, 0])) / hn
            prop[j, 0] = means0[j, 0] + h * eps[j, 0] / math.sqrt(hn)
            Ls0[j, 0, 0] = math.sqrt(hn)
            continue
        mean, pr, L, ok = _langevin(U[j].copy(), g0[j] - Vinv @ (U[j] - M[j]), H0[j] + Vinv, h, eps[j])
        means0[j], prop[j], Ls0[j], ok0[j] = mean, pr, L, ok
    lp1, g1, H1 = _cluster_terms(x, z, cl, rows, beta, prop, off, sd, lo, hi, J, rows1[0], rows1[1], rows1[2])
    out = U.copy()
    taken = np.zeros(J, np.bool_)
    for j in range(J):
        take = False
        if ok0[j] and q == 1:     # scalar: the same ratio without small arrays
            v = Vinv[0, 0]
            d0, d1 = U[j, 0] - M[j, 0], prop[j, 0] - M[j, 0]
            hn = H1[j, 0, 0] + v
            mean1 = prop[j, 0] + 0.5 * hh * (g1[j, 0] - v * d1) / hn
            back = math.sqrt(hn) * (U[j, 0] - mean1) / h
            fwd = Ls0[j, 0, 0] * (prop[j, 0] - means0[j, 0]) / h
            log_r = (lp1[j] - 0.5 * v * d1 * d1) - (lp0[j] - 0.5 * v * d0 * d0) \
                - 0.5 * back * back + 0.5 * math.log(hn) + 0.5 * fwd * fwd - math.log(Ls0[j, 0, 0])
            take = logu[j] < log_r
        elif ok0[j]:
            d0 = U[j] - M[j]
            d1 = prop[j] - M[j]
            mean1, _, L1, ok1 = _langevin(prop[j].copy(), g1[j] - Vinv @ d1, H1[j] + Vinv, h, eps[j])
            if ok1:
                log_r = (lp1[j] - 0.5 * _quad(Vinv, d1, d1)) - (lp0[j] - 0.5 * _quad(Vinv, d0, d0)) \
                    + _log_q(U[j], mean1, L1, h) - _log_q(prop[j], means0[j], Ls0[j], h)
                take = logu[j] < log_r
        if take:
            out[j] = prop[j]
            taken[j] = True
    w = 0.0                   # the terms at the new effects, row by row from either pass
    gb = np.zeros(f)
    Hb = np.zeros((f, f))
    for i in rows:
        t = rows1 if taken[cl[i]] else rows0
        w += t[0, i]
        for k in range(f):
            gb[k] += x[i, k] * t[1, i]
            for s in range(f):
                Hb[k, s] -= x[i, k] * x[i, s] * t[2, i]
    return out, w, gb, Hb


@njit(cache=True)
def _fixed_step(x, z, cl, rows, beta, U, off, sd, lo, hi, prec, h, eps, logu, w0, g0, H0):
    """Step 2: B_a by Newton-preconditioned Langevin MH from the current terms (w0, g0, H0);
    returns it and Σ log P_i there."""
    f = beta.size
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
    """qc = Q[:, c]/Q[c, c] (qc[c] = 0) and the conditional SD of column c given the others,
    with Q = Ω⁻¹ (the prior needs it) and whether Ω was positive definite."""
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
def _effects_prior(omega, A0, q, rest):
    """Each unit's prior of the column's effects (coordinates A0 … A0+q−1 of Ω) given its other
    coordinates ``rest`` (units × the others, in Ω's order): means M (units × q) and V⁻¹."""
    P = omega.shape[0]
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
            oRR[a, b] = omega[R[a], R[b]]
        for b in range(q):
            oRA[a, b] = omega[R[a], A0 + b]
    K2 = np.zeros((Rn, q))
    if Rn:
        iRR, _ = spd_inv(oRR)
        K2 = iRR @ oRA
    V = np.empty((q, q))
    for a in range(q):
        for b in range(q):
            v = omega[A0 + a, A0 + b]
            for k in range(Rn):
                v -= oRA[k, a] * K2[k, b]
            V[a, b] = v
    Vinv, _ = spd_inv(V)
    J = rest.shape[0]
    M = np.zeros((J, q))
    for j in range(J):
        for k in range(Rn):
            for b in range(q):
                M[j, b] += rest[j, k] * K2[k, b]
    return M, Vinv


@njit(cache=True)
def _scale_step(x, z, cl, rows, beta, U, off, sd, lo, hi, omega, psi, nu, A0, step, eps, logu, current):
    """Step 2b: the scale of the effects U together with Ω's coordinates A0 … (group move,
    random walk on log α, the latents integrated out). Returns U, Ω, Σ log P_i and the
    acceptance rate."""
    q = U.shape[1]
    P = omega.shape[0]
    mask = np.zeros(P, np.bool_)
    mask[A0:A0 + q] = True
    inv, _ = spd_inv(omega)
    pl = psi * inv
    alpha, cur, rate = 1.0, current, 0.0
    for t in range(logu.size):
        prop = alpha * math.exp(step * eps[t])
        w, _, _ = _fixed_terms(x, z, cl, rows, beta, U * prop, off, sd, lo, hi, False)
        if logu[t] < w + effects_term(prop, pl, mask, nu) - cur - effects_term(alpha, pl, mask, nu):
            alpha, cur = prop, w
            rate += 1.0 / logu.size
    if alpha == 1.0:
        return U, omega, current, rate
    omega = omega.copy()
    for k in range(P):
        for r in range(A0, A0 + q):
            omega[r, k] *= alpha
            omega[k, r] *= alpha
    return U * alpha, omega, cur, rate


@njit(cache=True)
def _sum_log_p(base, off, rows, sd, lo, hi):
    """Σ log P_i over the rows with an observed category, μ_i = base_i + off_i."""
    out = 0.0
    for i in rows:
        out += interval_terms(base[i] + off[i], sd, lo[i], hi[i])[0]
    return out


@njit(cache=True)
def _omega1_step(base, rows, y1, fitted, lo, hi, c, omega1, psi1, nu1, free, n_obs, step, eps, logu, current,
                 off, sd):
    """Step 3: the free elements of Ω1's row c by random-walk MH on the collapsed target with
    the restricted inverse-Wishart prior (``base``: the column's fixed and random effects per
    row). Returns Ω1, the offsets and SD of the column's conditional under it, Σ log P_i and
    the acceptance rate."""
    taken = 0.0
    G = logu.size
    nf = free.size
    if nf == 0:
        return omega1, off, sd, current, taken
    _, _, Q, _ = _conditional(omega1, c)
    cur_prior = _log_prior1(omega1, Q, psi1, nu1)
    sub = np.empty((nf, nf))
    for a in range(nf):
        for b in range(nf):
            sub[a, b] = omega1[free[a], free[b]]
    Lf, _ = chol(sub)
    # the proposal's scale must not depend on the row being moved (the latent's conditional SD
    # does: a random walk scaled by it is not symmetric, and without a Hastings term the step
    # left its target biased, by 0.04 posterior SDs at the tuned step in a one-element check);
    # Ω1[c, c] is fixed (a categorical latent's variance) and Ω1[free, free] is not moved
    scale = step * math.sqrt(omega1[c, c]) / math.sqrt(n_obs)
    for g in range(G):
        om = omega1.copy()
        for a in range(nf):
            v = omega1[c, free[a]]
            for b in range(a + 1):
                v += scale * Lf[a, b] * eps[g, b]
            om[c, free[a]] = v
            om[free[a], c] = v
        qc_n, sd_n, Q_n, ok = _conditional(om, c)
        if not ok:
            continue
        pri = _log_prior1(om, Q_n, psi1, nu1)
        off_n = _offsets(y1, fitted, qc_n)
        w = _sum_log_p(base, off_n, rows, sd_n, lo, hi)
        if logu[g] < w + pri - current - cur_prior:
            omega1, current, cur_prior, off, sd = om, w, pri, off_n, sd_n
            taken += 1.0 / G
    return omega1, off, sd, current, taken


@njit(cache=True)
def _block(x, z, cl, rows, c, kind, codes, cols, m, cuts, y1, fitted, beta, U, omega1, psi1, nu1, free,
           n_obs, omega2, psi2, nu2, rest, prec, step, scale_step, h, eps_u, logu_u, eps_b, logu_b, eps_s, logu_s,
           eps_g, logu_g, unif):
    """The steps of the module notes for column c of the two-level model (y1 and fitted in
    place); returns B_a, U_a, Ω1, Ω2 and the acceptance rates of the Ω1 step and of the scale
    step."""
    q = U.shape[1]
    lo, hi = _bounds(y1, kind, codes, cols, m, cuts)
    qc, sd, _, _ = _conditional(omega1, c)
    off = _offsets(y1, fitted, qc)
    M, Vinv = _effects_prior(omega2, c * q, q, rest)
    U, current, gb, Hb = _effects_step(x, z, cl, rows, beta, U, off, sd, lo, hi, M, Vinv, h, eps_u, logu_u)
    beta, current = _fixed_step(x, z, cl, rows, beta, U, off, sd, lo, hi, prec, h, eps_b, logu_b, current, gb, Hb)
    U, omega2, current, scaled = _scale_step(x, z, cl, rows, beta, U, off, sd, lo, hi, omega2, psi2, nu2, c * q,
                                             scale_step, eps_s, logu_s, current)
    base = _own_fitted(x, z, cl, beta, U)
    omega1, off, sd, current, taken = _omega1_step(base, rows, y1, fitted, lo, hi, c, omega1, psi1, nu1, free,
                                                   n_obs, step, eps_g, logu_g, current, off, sd)
    _redraw(y1, c, base, off, sd, kind, codes, cols, m, cuts, unif)
    for i in range(base.size):
        fitted[i, c] = base[i]
    return beta, U, omega1, omega2, taken, scaled


@njit(cache=True)
def _level2_block(x, rows, c, a, kind, codes, cols, m, cuts, y, R, extra, beta, omega, psi, nu, free, n_obs,
                  prec, step, h, eps_b, logu_b, eps_g, logu_g, unif):
    """Steps 2–4 of the module notes for a latent column c of variables measured on units
    (clusters, or a classification's units): the units are the rows, coordinate a of their
    vectors R ~ N(0, Ω) (residuals: effects, then the variables' values minus their means) is
    the column's; its mean is x'β + ``extra`` (the effects on it of classifications nesting the
    units; zeros in the two-level model). y (units × the variables' columns) in place; returns
    β, Ω and the Ω step's acceptance."""
    n = x.shape[0]
    z0 = np.zeros((n, 0))
    cl0 = np.zeros(n, np.int64)
    U0 = np.zeros((1, 0))
    lo, hi = _bounds(y, kind, codes, cols, m, cuts)
    qc, sd, _, _ = _conditional(omega, a)
    zero = np.zeros_like(R)
    off = _offsets(R, zero, qc)
    off_x = off + extra
    w0, g0, H0 = _fixed_terms(x, z0, cl0, rows, beta, U0, off_x, sd, lo, hi, True)
    beta, current = _fixed_step(x, z0, cl0, rows, beta, U0, off_x, sd, lo, hi, prec, h, eps_b, logu_b, w0, g0, H0)
    base = _own_fitted(x, z0, cl0, beta, U0) + extra
    omega, off, sd, current, taken = _omega1_step(base, rows, R, zero, lo, hi, a, omega, psi, nu, free, n_obs,
                                                  step, eps_g, logu_g, current, off, sd)
    _redraw(y, c, base, off, sd, kind, codes, cols, m, cuts, unif)
    return beta, omega, taken


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


def column_prior(fixed_prior: np.ndarray | None, start: int, f: int) -> np.ndarray:
    """The prior precisions of one latent column's ``f`` fixed effects, which start at ``start``
    of the sampler's ``fixed_prior`` (zeros: flat; see ``categorical_prior_sd``)."""
    if fixed_prior is None:
        return np.zeros(f)
    return np.ascontiguousarray(fixed_prior[start:start + f])


def categories(col: Column, y: np.ndarray, cuts: tuple) -> tuple:
    """The column's thresholds (an ordinal's, from the level's ``cuts``; else unused zeros), its
    variable's category per row and the rows with one. The rows a substantive model holds
    (``col.held``) count as observed with their current categories, those of their latents in
    ``y`` (see ``column_block``)."""
    cut = cuts[col.cuts] if col.cuts >= 0 else np.zeros(2)
    if not col.held.size:
        return cut, col.codes, col.rows
    codes = col.codes.copy()
    codes[col.held] = latents_to_codes(col.codec, y[np.ix_(col.held, col.cols)], cut)
    return cut, codes, np.flatnonzero(codes >= 0)


def column_block(rng: np.random.Generator, st, col: Column, y1: np.ndarray, fitted: np.ndarray,
                 b1: np.ndarray, u1: np.ndarray, omega1: np.ndarray, omega2: np.ndarray,
                 level2_rest: np.ndarray, cuts1: tuple, steps: np.ndarray) -> tuple:
    """One column's collapsed moves (module notes), compiled in one call. ``fitted`` (X1B1 +
    ZU1, N × p1) and ``y1`` are updated in place; ``level2_rest``: the clusters' level-2
    coordinates other than the column's effects (u1's other columns, then Y2 − X2B2), in Ω2's
    order; ``steps``: the random-walk steps of the Ω1 row and of log α. Returns (B1, U1, Ω1, Ω2,
    acceptance rates of those two steps).

    With a substantive model the imputed categories of the rows it holds (``col.held``: rows
    with an observed outcome) enter the outcome's likelihood; the block takes them as observed
    (their current categories, read off the latents), so that it moves the parameters and
    redraws the latents given every category the outcome sees and leaves those categories as
    they are: a move on (θ_a, z_a) given a function of the state it does not change."""
    data = st.data
    q, c, f = st.q, col.c, data.x1.shape[1]
    J, N = data.n_clusters, y1.shape[0]
    cuts, codes, rows = categories(col, y1, cuts1)
    prec = column_prior(st.fixed_prior, c * f, f)
    psi1, nu1 = st.prior1
    psi2, nu2 = st.prior2
    beta, U, omega1, omega2, taken, scaled = _block(
        data.x1, data.z, data.cluster, rows, c, col.kind, codes, col.cols, col.m, cuts, y1, fitted,
        np.ascontiguousarray(b1[:, c]), np.ascontiguousarray(u1[:, c * q:(c + 1) * q]), omega1, psi1,
        float(nu1), col.free, float(rows.size), omega2, psi2, float(nu2), np.ascontiguousarray(level2_rest),
        prec, steps[0], steps[1], H_STEP, rng.standard_normal((J, q)), np.log(rng.random(J)),
        rng.standard_normal(f), math.log(rng.random()), rng.standard_normal(SCALE_PROPOSALS),
        np.log(rng.random(SCALE_PROPOSALS)), rng.standard_normal((GAMMA_PROPOSALS, col.free.size)),
        np.log(rng.random(GAMMA_PROPOSALS)), 1.0 - rng.random(N))
    b1 = b1.copy()
    b1[:, c] = beta
    u1 = u1.copy()
    u1[:, c * q:(c + 1) * q] = U
    return b1, u1, omega1, omega2, np.array([taken, scaled])


def level2_block(rng: np.random.Generator, st, col: Column, y2: np.ndarray, rows2: np.ndarray, b2: np.ndarray,
                 omega2: np.ndarray, cuts2: tuple, step: float) -> tuple:
    """The collapsed moves of level-2 latent column ``col.c`` of the two-level model (its B2
    column and Ω2's row, then its latents: the cluster-level version of ``column_block``, with
    no effects below the clusters to move). ``rows2``: the clusters' rows (u1, Y2 − X2B2) in
    Ω2's order. ``y2`` in place; returns (B2, Ω2, acceptance of the Ω2 step). Held clusters
    (substantive model) as in ``column_block``."""
    data = st.data
    c, f2 = col.c, data.x2.shape[1]
    J = y2.shape[0]
    k0 = st.p1 * data.x1.shape[1] + c * f2
    prec = column_prior(st.fixed_prior, k0, f2)
    beta, omega2, taken = unit_block(rng, col, data.x2, y2, cuts2, rows2, np.zeros(J), b2[:, c], omega2,
                                     st.prior2, prec, st.p1 * st.q + c, step)
    b2 = b2.copy()
    b2[:, c] = beta
    return b2, omega2, taken


def unit_block(rng: np.random.Generator, col: Column, x, y, cuts: tuple, R, extra, beta, omega, prior,
               prec, a: int, step: float) -> tuple:
    """``_level2_block`` with its random numbers: column ``col.c`` of units' variables ``y``
    (design ``x``, coefficients ``beta``, the level's thresholds ``cuts``), coordinate ``a`` of
    the units' residual vectors ``R`` under ``omega`` with inverse-Wishart ``prior``; the
    general sampler calls it for each classification's own variables. Returns (β, Ω, acceptance
    of the Ω step)."""
    f, n = x.shape[1], x.shape[0]
    cuts, codes, rows = categories(col, y, cuts)
    return _level2_block(
        x, rows, col.c, a, col.kind, codes, col.cols, col.m, cuts, y, np.ascontiguousarray(R),
        np.ascontiguousarray(extra, dtype=float), np.ascontiguousarray(beta), omega, prior[0], float(prior[1]),
        col.free, float(rows.size), prec, step, H_STEP, rng.standard_normal(f), math.log(rng.random()),
        rng.standard_normal((GAMMA_PROPOSALS, col.free.size)), np.log(rng.random(GAMMA_PROPOSALS)),
        1.0 - rng.random(n))
