"""The binomial substantive outcome's collapsed block: (b, β, the effects' scales) with the
augmentation (probit y*, logit ω) integrated out.

Why: given y* (or ω) the outcome is a Gaussian pseudo-response that pins the linear predictor,
and the exact (β, b) block and Σ_b | b move only by what the augmentation leaves room for: a
random slope's variance, pinned by the slopes, which y* pins in turn, had a bulk ESS of 28–45
per 1,000 sweeps (probit; logit about twice) on a design where the random effects are weakly
identified (80 clusters of 5–30 rows), and with a rare outcome the intercepts are pinned most
(Johndrow et al. 2019). With y* integrated out each step moves its parameters by their
posterior spread given the binary outcome itself. ``benchmarks/binomial_moves_ab.py``: the
smallest ESS 3.0 times (probit) and 1.9 times (logit) as large, with a rare outcome 9.8 and 3.3
times; per second even (logit) to 3.8 times (docs/sampler-quality.md).

One compiled call (``block``), before the augmentation is redrawn (``outcome.draw_parameters``;
a partially collapsed Gibbs sampler: a move on the marginal of (β, b, Σ_b) followed at once by
y* or ω from its conditional, so that nothing conditions on the augmentation it replaced):

1. every cluster's effects b_j by a Newton-preconditioned Langevin proposal on its collapsed
   conditional Π_i F(s_i η_ij) · N(b_j; 0, Σ_b), accepted cluster by cluster (F = Φ or the
   logistic function, s_i = ±1 the observed outcome); all clusters from two passes over the rows;
2. β likewise (flat prior), one pass;
3. for each random-effect coordinate k, the group move b_·k → α b_·k, Σ_b → AΣ_bA (A = diag
   with α at k; Liu & Sabatti 2000): log α by a one-dimensional Newton-preconditioned Langevin
   proposal on its target Σ_i log F(s_i η_i(α)) − ν_k log α − ½ tr(Ψ (AΣ_bA)⁻¹) (the
   effects' normal density and the Jacobians cancel but for ν_k, the df of k's block:
   ``_small.log_iw_rescaled``), one pass each.

Each pass evaluates log F and its first two derivatives at every row with an observed outcome;
the rows' terms at the current state are carried from step to step, so the block costs 3 + q
such passes (and 1 + q that only add up the carried terms). The rows whose outcome is missing
do not enter (their outcome integrates out).

References
----------
Johndrow, J. E., Smith, A., Pillai, N., & Dunson, D. B. (2019). MCMC for imbalanced categorical
data. JASA, 114(527), 1394-1403.
Liu, J. S., & Sabatti, C. (2000). Generalised Gibbs sampler and multigrid Monte Carlo for
Bayesian computation. Biometrika, 87(2), 353-369.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._kernels import log_ndtr
from ._small import chol_into, spd_inv
from .collapsed import H_STEP, _log_q, _quad

__all__ = ["ENABLED", "block", "link_code", "random_numbers"]

ENABLED = True    # (switched off only to measure what the block buys)
PROBIT, LOGIT = 0, 1
_LOG_SQRT_2PI = 0.9189385332046728
_INV_SQRT2 = 0.7071067811865476


def random_numbers(rng: np.random.Generator, J: int, q: int, nf: int) -> tuple:
    """``block``'s normals and log-uniforms (eps_u, logu_u, eps_b, logu_b, eps_s, logu_s) from
    two draws of the generator."""
    z = rng.standard_normal(J * q + nf + q)
    lu = np.log(rng.random(J + 1 + q))
    return (z[:J * q].reshape(J, q), lu[:J], z[J * q:J * q + nf], float(lu[J]), z[J * q + nf:], lu[J + 1:])


def link_code(link: str) -> int:
    return PROBIT if link == "probit" else LOGIT


@njit(cache=True, inline="always")
def _terms(link, s, eta):
    """log F(s η) and its first two derivatives in η (s = ±1)."""
    t = s * eta
    if link == PROBIT:
        if t > 0.0:          # log Φ(t) = log1p(−Φ(−t)): accurate where Φ(t) rounds to 1
            Q = 0.5 * math.erfc(t * _INV_SQRT2)
            lam = math.exp(-0.5 * t * t - _LOG_SQRT_2PI) / (1.0 - Q)
            lp = math.log1p(-Q)
        elif t > -30.0:
            P = 0.5 * math.erfc(-t * _INV_SQRT2)
            lam = math.exp(-0.5 * t * t - _LOG_SQRT_2PI) / P
            lp = math.log(P)
        else:
            lp = log_ndtr(t)
            lam = math.exp(-0.5 * t * t - _LOG_SQRT_2PI - lp)
        return lp, s * lam, -lam * (t + lam)
    if t >= 0.0:       # logit: log σ(t), σ(t) = 1/(1 + e^−t)
        e = math.exp(-t)
        p = 1.0 / (1.0 + e)
        lp = -math.log1p(e)
    else:
        e = math.exp(t)
        p = e / (1.0 + e)
        lp = t - math.log1p(e)
    return lp, s * (1.0 - p), -p * (1.0 - p)


@njit(cache=True)
def _newton(theta, grad, H, Vinv, h, eps, L, t, mean, prop):
    """A Newton-preconditioned Langevin proposal without allocating: with P = H + V⁻¹ = LL' and
    ∇ = grad − V⁻¹θ, mean = θ + (h²/2)P⁻¹∇ and prop = mean + hL⁻ᵀeps (L, mean and prop written
    in place, t scratch); False if P is not positive definite."""
    q = theta.size
    for a in range(q):
        for c in range(a + 1):
            L[a, c] = H[a, c] + Vinv[a, c]
    if not chol_into(L, q):
        return False
    for a in range(q):               # t = L⁻¹∇ h²/2
        v = grad[a]
        for c in range(q):
            v -= Vinv[a, c] * theta[c]
        v *= 0.5 * h * h
        for c in range(a):
            v -= L[a, c] * t[c]
        t[a] = v / L[a, a]
    for a in range(q - 1, -1, -1):   # mean − θ = L⁻ᵀt, prop − θ = L⁻ᵀ(t + h eps)
        v = t[a]
        w = t[a] + h * eps[a]
        for c in range(a + 1, q):
            v -= L[c, a] * mean[c]
            w -= L[c, a] * prop[c]
        mean[a] = v / L[a, a]
        prop[a] = w / L[a, a]
    for a in range(q):
        mean[a] += theta[a]
        prop[a] += theta[a]
    return True


@njit(cache=True)
def _scale_prior(u, nu, p2, p1):
    """−ν u − ½(p2 e^−2u + p1 e^−u) and its first two derivatives in u."""
    a, c = math.exp(-2.0 * u), math.exp(-u)
    return (-nu * u - 0.5 * (p2 * a + p1 * c), -nu + p2 * a + 0.5 * p1 * c, -2.0 * p2 * a - 0.5 * p1 * c)


@njit(cache=True)
def effects_terms(link, D, nf, cols, cl, rows, sgn, base, b, rl, r1, r2):
    """Per unit, over ``rows``: Σ log F(s_i η_i), its gradient Σ z_i d1_i and minus its Hessian
    −Σ z_i z_i' d2_i in the unit's effects, at η_i = base_i + z_i'b_unit (z_i: D's ``cols`` after
    the ``nf`` fixed columns); each row's (log F, d1, d2) into rl, r1, r2."""
    J, q = b.shape
    lp = np.zeros(J)
    g = np.zeros((J, q))
    H = np.zeros((J, q, q))
    for i in rows:
        j = cl[i]
        e = base[i]
        for a in range(q):
            e += D[i, nf + cols[a]] * b[j, a]
        rl[i], r1[i], r2[i] = _terms(link, sgn[i], e)
        lp[j] += rl[i]
        for a in range(q):
            za = D[i, nf + cols[a]]
            g[j, a] += za * r1[i]
            for c in range(a + 1):
                H[j, a, c] -= za * D[i, nf + cols[c]] * r2[i]
    for j in range(J):
        _mirror(H[j])
    return lp, g, H


@njit(cache=True, inline="always")
def _add_row(D, i, nf, d1, d2, g, H):
    """Row i's part of the fixed effects' gradient and minus Hessian: g += x_i d1, lower
    triangle of H −= x_i x_i' d2 (``_mirror`` fills the upper)."""
    for a in range(nf):
        g[a] += D[i, a] * d1
        for c in range(a + 1):
            H[a, c] -= D[i, a] * D[i, c] * d2


@njit(cache=True, inline="always")
def _mirror(H):
    for a in range(H.shape[0]):
        for c in range(a):
            H[c, a] = H[a, c]


@njit(cache=True)
def fixed_terms(link, D, nf, rows, sgn, beta, add, fx, rl, r1, r2):
    """Σ log F(s_i η_i), its gradient and minus its Hessian in β at η_i = x_i'β + add_i; each
    row's x_i'β + (the offset part of add, left to the caller) into fx, its terms into rl, r1, r2."""
    lp = 0.0
    g = np.zeros(nf)
    H = np.zeros((nf, nf))
    for i in rows:
        f = 0.0
        for a in range(nf):
            f += D[i, a] * beta[a]
        fx[i] = f
        rl[i], r1[i], r2[i] = _terms(link, sgn[i], f + add[i])
        lp += rl[i]
        _add_row(D, i, nf, r1[i], r2[i], g, H)
    _mirror(H)
    return lp, g, H


@njit(cache=True)
def scale_terms(link, D, nf, cols, cl, rows, sgn, fx, rz, b, k, u, nu, p2, p1, pz, rl, r1, r2):
    """The log target of u = log α for the group move b_·k → α b_·k, Σ → AΣA (module notes,
    step 3) up to a constant, with its first derivative and minus its second in u: the rows'
    Σ log F(s_i η_i(α)), η_i(α) = fx_i + rz_i + (α − 1) z_ik b_unit,k, plus ``_scale_prior``
    (p2 = Ψ_kk Σ⁻¹_kk, p1 = 2 Σ_{m≠k} Ψ_km Σ⁻¹_mk, ν the block's df). Each row's new effects'
    part into pz, its terms into rl, r1, r2."""
    al = math.exp(u)
    w, G, Hn = _scale_prior(u, nu, p2, p1)
    Hn = -Hn
    for i in rows:
        c = D[i, nf + cols[k]] * b[cl[i], k]
        pz[i] = rz[i] + (al - 1.0) * c
        rl[i], r1[i], r2[i] = _terms(link, sgn[i], fx[i] + pz[i])
        w += rl[i]
        G += r1[i] * al * c
        Hn -= r2[i] * al * al * c * c + r1[i] * al * c
    return w, G, Hn


@njit(cache=True)
def block(link, D, nf, cols, cl, rows, sgn, off, beta, b, cov, psi, nus, eps_u, logu_u, eps_b, logu_b, eps_s, logu_s,
          eta):
    """The module notes' steps 1–3 for one classification's effects ``b`` (units × q) and
    covariance ``cov``. ``D``: the design rows (fixed columns first), ``cols`` the effects'
    columns after them; ``cl`` each row's unit; ``rows`` the rows with an observed outcome;
    ``sgn`` ±1 by outcome; ``off`` the rest of each row's linear predictor (the other
    classifications' effects; zeros in the two-level model); ``psi``, ``nus``: ``cov``'s prior
    scale and each coordinate's block df. Returns β, b, Σ_b (new arrays; unchanged if Σ_b is
    not positive definite) and writes the linear predictors of ``rows`` into ``eta``."""
    n = D.shape[0]
    J, q = b.shape
    h = H_STEP
    hh = h * h
    beta, b, cov = beta.copy(), b.copy(), cov.copy()
    Vinv, good = spd_inv(cov)
    if not good:
        return beta, b, cov
    # the current state: η = fx + rz (fx: x'β + offset; rz: the effects' part), rows' terms
    fx, rz, add = np.zeros(n), np.zeros(n), np.zeros(n)
    rl, r1, r2 = np.zeros(n), np.zeros(n), np.zeros(n)
    pz, pl, p1, p2 = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    for i in rows:
        f = off[i]
        for a in range(nf):
            f += D[i, a] * beta[a]
        fx[i] = f
    # 1. the effects, unit by unit
    lp0, g0, H0 = effects_terms(link, D, nf, cols, cl, rows, sgn, fx, b, rl, r1, r2)
    prop = b.copy()
    means0 = np.empty((J, q))
    Ls0 = np.zeros((J, q, q))
    ok0 = np.zeros(J, np.bool_)
    t = np.empty(max(q, nf))
    for j in range(J):
        ok0[j] = _newton(b[j], g0[j], H0[j], Vinv, h, eps_u[j], Ls0[j], t, means0[j], prop[j])
    lp1, g1, H1 = effects_terms(link, D, nf, cols, cl, rows, sgn, fx, prop, pl, p1, p2)
    taken = np.zeros(J, np.bool_)
    L1 = np.zeros((q, q))
    mean1, back = np.empty(q), np.empty(q)
    for j in range(J):
        if not ok0[j] or not _newton(prop[j], g1[j], H1[j], Vinv, h, eps_u[j], L1, t, mean1, back):
            continue
        log_r = (lp1[j] - 0.5 * _quad(Vinv, prop[j], prop[j])) - (lp0[j] - 0.5 * _quad(Vinv, b[j], b[j])) \
            + _log_q(b[j], mean1, L1, h) - _log_q(prop[j], means0[j], Ls0[j], h)
        if logu_u[j] < log_r:
            b[j] = prop[j]
            taken[j] = True
    # 2. the fixed effects (flat prior), from the rows' terms at the current state
    w0 = 0.0
    gb = np.zeros(nf)
    Hb = np.zeros((nf, nf))
    for i in rows:
        j = cl[i]
        if taken[j]:
            rl[i], r1[i], r2[i] = pl[i], p1[i], p2[i]
        r = 0.0
        for a in range(q):
            r += D[i, nf + cols[a]] * b[j, a]
        rz[i] = r
        add[i] = off[i] + r
        w0 += rl[i]
        _add_row(D, i, nf, r1[i], r2[i], gb, Hb)
    _mirror(Hb)
    zero = np.zeros((nf, nf))
    Lb0, Lb1 = np.zeros((nf, nf)), np.zeros((nf, nf))
    mb0, mb1, pb, back_b = np.empty(nf), np.empty(nf), np.empty(nf), np.empty(nf)
    if _newton(beta, gb, Hb, zero, h, eps_b, Lb0, t, mb0, pb):
        w1, gb1, Hb1 = fixed_terms(link, D, nf, rows, sgn, pb, add, pz, pl, p1, p2)
        if _newton(pb, gb1, Hb1, zero, h, eps_b, Lb1, t, mb1, back_b) and \
                logu_b < w1 - w0 + _log_q(beta, mb1, Lb1, h) - _log_q(pb, mb0, Lb0, h):
            beta = pb.copy()
            for i in rows:
                fx[i] = pz[i] + off[i]
                rl[i], r1[i], r2[i] = pl[i], p1[i], p2[i]
    # 3. each coordinate's scale with Σ_b's row and column (u = log α)
    for k in range(q):
        inv, good = spd_inv(cov)
        if not good:
            break
        c2 = psi[k, k] * inv[k, k]
        c1 = 0.0
        for m in range(q):
            if m != k:
                c1 += 2.0 * psi[k, m] * inv[m, k]
        wl, G0, Hn0 = _scale_prior(0.0, nus[k], c2, c1)
        Hn0 = -Hn0
        for i in rows:          # u = 0: the current state's terms
            c = D[i, nf + cols[k]] * b[cl[i], k]
            wl += rl[i]
            G0 += r1[i] * c
            Hn0 -= r2[i] * c * c + r1[i] * c
        if Hn0 <= 0.0:
            continue
        mu0 = 0.5 * hh * G0 / Hn0
        u = mu0 + h * eps_s[k] / math.sqrt(Hn0)
        wl1, G1, Hn1 = scale_terms(link, D, nf, cols, cl, rows, sgn, fx, rz, b, k, u, nus[k], c2, c1, pz, pl, p1, p2)
        if Hn1 <= 0.0:
            continue
        mu1 = u + 0.5 * hh * G1 / Hn1
        log_r = wl1 - wl - 0.5 * Hn1 * mu1 * mu1 / hh + 0.5 * math.log(Hn1) \
            + 0.5 * Hn0 * (u - mu0) ** 2 / hh - 0.5 * math.log(Hn0)
        if logu_s[k] < log_r:
            al = math.exp(u)
            for j in range(J):
                b[j, k] *= al
            for m in range(q):
                cov[k, m] *= al
                cov[m, k] *= al
            for i in rows:
                rz[i], rl[i], r1[i], r2[i] = pz[i], pl[i], p1[i], p2[i]
    for i in rows:
        eta[i] = fx[i] + rz[i]
    return beta, b, cov
