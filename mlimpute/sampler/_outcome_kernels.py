"""Compiled loops of the substantive-model component (numba): the design program, the outcome's
(β, b) block, and the missing covariate cells drawn given both models.

The design program (``mlimpute.substantive``) is passed as one tuple ``prog = (const, col_ptr,
src, kind, par, tables, dep_ptr, dep_cols)``. ``D`` (N, f + q) holds the current design rows,
``S`` (N, sources) their sources and ``eta`` the linear predictors ``D[i, :f] β + D[i, f:] b_j``;
a kernel that changes a source of a row updates the columns that read it and ``eta`` in place.

Every outcome is handled as a Gaussian pseudo-response ``ytil`` with row precision ``w`` given
its augmentation: gaussian y (w = 1/σ²), probit latent y* (w = 1), logit Pólya-Gamma
(ytil = (y − ½)/ω, w = ω). Random numbers come from the chain's Generator in bulk.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import _kernels as kern
from ._small import chol, gaussian_draw, iw_from_parts, spd_inv

__all__ = ["design_rows", "linear_predictor", "outcome_block", "cross_products",
           "probit_latents", "cells", "covariance_and_expansion", "gaussian_sse", "term_inputs",
           "set_coefficients", "CONT", "BIN", "ORD", "NOM"]

CONT, BIN, ORD, NOM = 0, 1, 2, 3
_LOG0 = -1e300


@njit(cache=True, inline="always")
def _column(S, i, c, prog):
    const, col_ptr, src, kind, par, tables = prog[0], prog[1], prog[2], prog[3], prog[4], prog[5]
    v = const[c]
    for k in range(col_ptr[c], col_ptr[c + 1]):
        s = S[i, src[k]]
        if kind[k] == 0:
            p = par[k]
            v *= s if p == 1.0 else s ** p
        else:
            v *= tables[int(par[k]), int(s)]
    return v


@njit(cache=True)
def design_rows(S, rows, D, prog):
    """Recompute every column of ``D`` at ``rows``."""
    for t in range(rows.size):
        i = rows[t]
        for c in range(D.shape[1]):
            D[i, c] = _column(S, i, c, prog)


@njit(cache=True)
def linear_predictor(D, nf, beta, b, cluster, rows, eta):
    """``eta[i] = D[i, :nf] β + D[i, nf:] b_{cluster(i)}`` at ``rows``."""
    q = D.shape[1] - nf
    for t in range(rows.size):
        i = rows[t]
        e = 0.0
        for a in range(nf):
            e += D[i, a] * beta[a]
        j = cluster[i]
        for r in range(q):
            e += D[i, nf + r] * b[j, r]
        eta[i] = e


@njit(cache=True, inline="always")
def _eta_with(S, i, s, v, D, prog, nf, beta, b, j, eta_i):
    """The linear predictor of row i if source s took value v (nothing is changed)."""
    dep_ptr, dep_cols = prog[6], prog[7]
    old = S[i, s]
    S[i, s] = v
    e = eta_i
    for t in range(dep_ptr[s], dep_ptr[s + 1]):
        c = dep_cols[t]
        # the coefficient by an if statement written here: a helper function or a conditional
        # expression made this loop ten times slower (measured)
        if c < nf:
            cf = beta[c]
        else:
            cf = b[j, c - nf]
        e += (_column(S, i, c, prog) - D[i, c]) * cf
    S[i, s] = old
    return e


@njit(cache=True, inline="always")
def _set_source(S, i, s, v, D, prog, nf, beta, b, j, eta):
    """Source s of row i becomes v: its columns of D and eta[i] follow."""
    dep_ptr, dep_cols = prog[6], prog[7]
    S[i, s] = v
    e = eta[i]
    for t in range(dep_ptr[s], dep_ptr[s + 1]):
        c = dep_cols[t]
        new = _column(S, i, c, prog)
        if c < nf:
            cf = beta[c]
        else:
            cf = b[j, c - nf]
        e += (new - D[i, c]) * cf
        D[i, c] = new
    eta[i] = e


# ------------------------------------------------------------------------------------------
# The outcome's parameters
# ------------------------------------------------------------------------------------------
@njit(cache=True)
def outcome_block(D, nf, ytil, w, wconst, quad_rows, lin_rows, stat, cluster, cov, bstart, bwidth, z):
    """Draw (β, b_1..b_J) as one block given the pseudo-response and the random-effect
    precision ``sinv``; β with the b integrated out (flat prior), then each b_j given β.

    With ``P_j = Σ_b⁻¹ + Z_j'W Z_j = L_j L_j'``, ``T_j = Z_j'W X_j``, ``h_j = Z_j'W ỹ_j``:
    ``H = X'WX − Σ_j T_j'P_j⁻¹T_j``, ``g = X'Wỹ − Σ_j T_j'P_j⁻¹h_j``, ``β ~ N(H⁻¹g, H⁻¹)``,
    ``b_j ~ N(P_j⁻¹(h_j − T_j β), P_j⁻¹)``. ``z``: nf + J·q standard normals; ``cov`` is Σ_b,
    block-diagonal with blocks ``bstart``/``bwidth``.

    The cross-products of rows whose design never changes and whose weight is the common
    ``wconst`` are precomputed with unit weight in ``stat = (X'X, X'y, Z'Z, Z'X, Z'y)``
    (scaled by wconst here); ``quad_rows`` / ``lin_rows`` are the rows whose quadratic /
    linear terms are accumulated now (weights ``w[i]`` when wconst is 0). Returns β, b, the
    statistics ``W'ΩW``, ``W'Ω r`` of the parameter-expansion move (rows with an observed
    outcome), whether the precisions were positive definite, and the weighted cross-products
    ``(X'WX, X'Wỹ, Z_j'WZ_j, Z_j'WX_j, Z_j'Wỹ_j)`` (``gaussian_sse`` forms the residual sum of
    squares from them).
    """
    XX0, Xy0, ZZ0, ZX0, Zy0 = stat
    J = ZZ0.shape[0]
    q = D.shape[1] - nf
    H = XX0 * wconst
    g = Xy0 * wconst
    ZZ = ZZ0 * wconst
    ZX = ZX0 * wconst
    Zy = Zy0 * wconst
    sinv, good = _block_inverse(cov, bstart, bwidth)
    if not good:
        return np.zeros(nf), np.zeros((J, q)), np.zeros((q, q)), np.zeros(q), False, (H, g, ZZ, ZX, Zy)
    for t in range(quad_rows.size):
        i = quad_rows[t]
        if wconst > 0.0:
            wi = wconst
        else:
            wi = w[i]
        j = cluster[i]
        for a in range(nf):
            xa = D[i, a] * wi
            for c in range(a + 1):
                H[a, c] += xa * D[i, c]
        for r in range(q):
            zr = D[i, nf + r] * wi
            for a in range(nf):
                ZX[j, r, a] += zr * D[i, a]
            for s in range(r + 1):
                ZZ[j, r, s] += zr * D[i, nf + s]
    for t in range(lin_rows.size):
        i = lin_rows[t]
        if wconst > 0.0:
            wy = wconst * ytil[i]
        else:
            wy = w[i] * ytil[i]
        j = cluster[i]
        for a in range(nf):
            g[a] += D[i, a] * wy
        for r in range(q):
            Zy[j, r] += D[i, nf + r] * wy
    for a in range(nf):
        for c in range(a):
            H[c, a] = H[a, c]
    stats = (H.copy(), g.copy(), ZZ, ZX, Zy)
    Ls = np.zeros((J, q, q))
    LT = np.zeros((J, q, nf))
    Lh = np.zeros((J, q))
    b = np.zeros((J, q))
    beta = np.zeros(nf)  # (returned as is if a precision is not positive definite)
    for j in range(J):
        L = Ls[j]
        for r in range(q):  # Cholesky of P_j = Σ_b⁻¹ + Z_j'W Z_j, in place
            for s in range(r + 1):
                v = sinv[r, s] + ZZ[j, r, s]
                for k in range(s):
                    v -= L[r, k] * L[s, k]
                if r == s:
                    if not v > 0.0:
                        return beta, b, np.zeros((q, q)), np.zeros(q), False, stats
                    L[r, r] = math.sqrt(v)
                else:
                    L[r, s] = v / L[s, s]
        for r in range(q):  # forward substitution for L⁻¹ T_j and L⁻¹ h_j
            for a in range(nf):
                v = ZX[j, r, a]
                for s in range(r):
                    v -= L[r, s] * LT[j, s, a]
                LT[j, r, a] = v / L[r, r]
            v = Zy[j, r]
            for s in range(r):
                v -= L[r, s] * Lh[j, s]
            Lh[j, r] = v / L[r, r]
        for a in range(nf):
            for r in range(q):
                la = LT[j, r, a]
                g[a] -= la * Lh[j, r]
                for c in range(a + 1):
                    H[a, c] -= la * LT[j, r, c]
    for a in range(nf):
        for c in range(a):
            H[c, a] = H[a, c]
    LH, ok = chol(H)
    if not ok:
        return beta, b, np.zeros((q, q)), np.zeros(q), False, stats
    beta = gaussian_draw(LH, g, z[:nf])
    rhs = np.empty(q)
    for j in range(J):
        for r in range(q):
            v = Lh[j, r] + z[nf + j * q + r]
            for a in range(nf):
                v -= LT[j, r, a] * beta[a]
            rhs[r] = v
        L = Ls[j]
        for r in range(q - 1, -1, -1):
            v = rhs[r]
            for s in range(r + 1, q):
                v -= L[s, r] * b[j, s]
            b[j, r] = v / L[r, r]
    # the statistics of the parameter-expansion move (see outcome.expand_random_effects): the
    # regression of the fixed part's residual r_i = ỹ_i − x_i'β on w_ik = z_ik b_jk with the rows'
    # precisions, from the clusters' cross-products already formed (no pass over the rows):
    # W'ΩW = Σ_j (b_j b_j') ∘ Z_j'WZ_j,  W'Ωr = Σ_j b_j ∘ (Z_j'Wỹ_j − Z_j'WX_j β)
    WW = np.zeros((q, q))
    Wr = np.zeros(q)
    for j in range(J):
        for k in range(q):
            v = Zy[j, k]
            for a in range(nf):
                v -= ZX[j, k, a] * beta[a]
            Wr[k] += b[j, k] * v
            for m in range(k + 1):
                WW[k, m] += b[j, k] * b[j, m] * ZZ[j, k, m]
    for k in range(q):
        for m in range(k):
            WW[m, k] = WW[k, m]
    return beta, b, WW, Wr, True, stats


@njit(cache=True)
def gaussian_sse(beta, b, stats, wyy, wconst):
    """Σ (y − η)² over the rows with an observed outcome, η = x'β + z'b_j, from their weighted
    cross-products (``outcome_block``'s ``stats``; ``wyy`` = wconst · Σ y²):
    Σ w(y − η)² = wyy − 2(β'X'Wy + Σ_j b_j'Z_j'Wy_j) + β'X'WXβ + 2Σ_j b_j'Z_j'WX_jβ + Σ_j b_j'Z_j'WZ_j b_j
    (Z_j'WZ_j: lower triangles). No pass over the rows."""
    XX, Xy, ZZ, ZX, Zy = stats
    nf = beta.size
    J, q = b.shape
    total = wyy
    for a in range(nf):
        total -= 2.0 * beta[a] * Xy[a]
        for c in range(nf):
            total += beta[a] * XX[a, c] * beta[c]
    for j in range(J):
        for r in range(q):
            br = b[j, r]
            if br == 0.0:
                continue
            v = -2.0 * Zy[j, r]
            for a in range(nf):
                v += 2.0 * ZX[j, r, a] * beta[a]
            v += ZZ[j, r, r] * br
            for s in range(r):
                v += 2.0 * ZZ[j, r, s] * b[j, s]
            total += br * v
    return max(total, 0.0) / wconst


@njit(cache=True)
def _block_inverse(cov, bstart, bwidth):
    out = np.zeros_like(cov)
    for g in range(bstart.size):
        s0, w = bstart[g], bwidth[g]
        inv, good = spd_inv(cov[s0:s0 + w, s0:s0 + w].copy())
        if not good:
            return out, False
        out[s0:s0 + w, s0:s0 + w] = inv
    return out, True


@njit(cache=True)
def covariance_and_expansion(b, psi, bstart, bwidth, dfs, WW, Wr, chi, zi, za, logu):
    """Σ_b | b (inverse-Wishart per block, from its random parts ``chi``, ``zi``), then the
    parameter-expansion move of ``outcome.expand_random_effects`` (``za``: q normals, ``logu``
    the log-uniform of its acceptance). Returns b, Σ_b, whether the move was taken, and whether
    every matrix was positive definite."""
    J, q = b.shape
    cov = np.zeros((q, q))
    ci = 0
    zo = 0
    for g in range(bstart.size):
        s0, w = bstart[g], bwidth[g]
        S = psi[s0:s0 + w, s0:s0 + w].copy()
        for r in range(w):
            for c in range(w):
                acc = 0.0
                for j in range(J):
                    acc += b[j, s0 + r] * b[j, s0 + c]
                S[r, c] += acc
        draw, good = iw_from_parts(S, chi[ci:ci + w], zi[zo:zo + w * (w - 1) // 2])
        if not good:
            return b, cov, False, False
        cov[s0:s0 + w, s0:s0 + w] = draw
        ci += w
        zo += w * (w - 1) // 2
    L, good = chol(WW)
    if not good:
        return b, cov, False, True
    a = gaussian_draw(L, Wr, za)   # â + L'⁻¹ z with â = WW⁻¹ Wr
    for k in range(q):
        if not a[k] > 0.0:
            return b, cov, False, True
    log_alpha = 0.0
    for k in range(q):
        log_alpha -= math.log(a[k])
    for g in range(bstart.size):
        s0, w = bstart[g], bwidth[g]
        sinv, good = spd_inv(cov[s0:s0 + w, s0:s0 + w].copy())
        if not good:
            return b, cov, False, False
        for r in range(w):
            log_alpha -= dfs[g] * math.log(a[s0 + r])
            for c in range(w):
                pr = psi[s0 + r, s0 + c] * sinv[r, c]
                log_alpha += 0.5 * pr - 0.5 * pr / (a[s0 + r] * a[s0 + c])
    if logu >= log_alpha:
        return b, cov, False, True
    out = b.copy()
    for j in range(J):
        for k in range(q):
            out[j, k] *= a[k]
    for r in range(q):
        for c in range(q):
            cov[r, c] *= a[r] * a[c]
    return out, cov, True, True


@njit(cache=True)
def cross_products(D, nf, rows, ytil, cluster, J):
    """Unit-weight ``(X'X, X'y, Z'Z, Z'X, Z'y)`` of ``rows`` (``ytil`` None: no linear terms)."""
    q = D.shape[1] - nf
    XX = np.zeros((nf, nf))
    Xy = np.zeros(nf)
    ZZ = np.zeros((J, q, q))
    ZX = np.zeros((J, q, nf))
    Zy = np.zeros((J, q))
    for t in range(rows.size):
        i = rows[t]
        j = cluster[i]
        yi = ytil[i]
        for a in range(nf):
            Xy[a] += D[i, a] * yi
            for c in range(a + 1):
                XX[a, c] += D[i, a] * D[i, c]
        for r in range(q):
            Zy[j, r] += D[i, nf + r] * yi
            for a in range(nf):
                ZX[j, r, a] += D[i, nf + r] * D[i, a]
            for s in range(r + 1):
                ZZ[j, r, s] += D[i, nf + r] * D[i, nf + s]
    return XX, Xy, ZZ, ZX, Zy


@njit(cache=True)
def probit_latents(eta, y, rows, u, ystar):
    """y*_i ~ N(η_i, 1) restricted to (0, ∞) if y_i = 1, else (−∞, 0] (exact inverse-CDF draws)."""
    for t in range(rows.size):
        i = rows[t]
        ystar[i] = kern.one_sided(eta[i], 1.0, 0.0, 1.0 if y[i] > 0.5 else -1.0, u[t])


# ------------------------------------------------------------------------------------------
# Missing covariate cells given both models
# ------------------------------------------------------------------------------------------
@njit(cache=True, inline="always")
def _draw_in(cm, sd, lo, hi, u):
    if math.isinf(lo) and math.isinf(hi):
        return kern.one_sided(cm, sd, np.inf, -1.0, u)
    if math.isinf(hi):
        return kern.one_sided(cm, sd, lo, 1.0, u)
    if math.isinf(lo):
        return kern.one_sided(cm, sd, hi, -1.0, u)
    return kern.two_sided(cm, sd, lo, hi, u)


@njit(cache=True, inline="always")
def _intervals(kind, yrow, first, width, k, cuts, lo, hi, cat):
    """The latent column k of a categorical variable splits the line into intervals, each a
    category given the row's other latent columns; returns their number."""
    if kind == BIN:
        lo[0], hi[0], cat[0] = -np.inf, 0.0, 0
        lo[1], hi[1], cat[1] = 0.0, np.inf, 1
        return 2
    if kind == ORD:  # cuts = [-inf, 0, γ_2, …, γ_{K−1}, +inf, (+inf padding)]
        K = 1
        while not (math.isinf(cuts[K]) and cuts[K] > 0):
            K += 1
        for c in range(K):
            lo[c], hi[c], cat[c] = cuts[c], cuts[c + 1], c
        return K
    # nominal component m: category m above max(0, others), else what the others say
    m = k - first
    top = 0.0
    other = width  # reference category (the last)
    for l in range(width):
        if l != m and yrow[first + l] > top:
            top = yrow[first + l]
            other = l
    lo[0], hi[0], cat[0] = -np.inf, top, other
    lo[1], hi[1], cat[1] = top, np.inf, m
    return 2


@njit(cache=True, inline="always")
def _pick(logp, n, u):
    mx = _LOG0
    for t in range(n):
        if logp[t] > mx:
            mx = logp[t]
    tot = 0.0
    for t in range(n):
        tot += math.exp(logp[t] - mx)
    target = u * tot
    acc = 0.0
    for t in range(n):
        acc += math.exp(logp[t] - mx)
        if acc >= target:
            return t
    return n - 1


@njit(cache=True, inline="always")
def _unit_loglik(S, s, v, D, prog, nf, beta, b, cluster, eta, ytil, w, wconst, observed, start, stop):
    """Σ over the unit's design rows with an observed outcome of −½ w (ytil − η(source s = v))²."""
    out = 0.0
    for i in range(start, stop):
        if observed[i]:
            if wconst > 0.0:
                wi = wconst
            else:
                wi = w[i]
            res = ytil[i] - _eta_with(S, i, s, v, D, prog, nf, beta, b, cluster[i], eta[i])
            out -= 0.5 * wi * res * res
    return out


@njit(cache=True)
def _reflect(S, s, v0, m, sd, cen, sc, D, prog, nf, beta, b, cluster, eta, ytil, w, wconst, observed, st, sp, u):
    """One Metropolis–Hastings reflection of a cell whose design is quadratic in its source s:
    each of the unit's linear predictors is η_i(v) = a_i + b_i v + c_i v² in the held value v
    (read off at v = −1, 0, 1, which do not depend on the current value), the proposal is
    v' = 2v* − v0 about v* = −Σ w_i b_i c_i / (2 Σ w_i c_i²) (each row's vertex where the unit
    has one row, or where its rows share one), a deterministic involution with unit Jacobian,
    so the ratio is the target's: the model-(6) normal N(m, sd²) times the outcome's likelihood.
    Where y = β1 x + β2 x² + … the conditional of a missing x given y has a mode on each side of
    the vertex, and the random walk alone crossed between them rarely (a chain held an imputed
    x in the wrong one for hundreds of sweeps, and β2's bulk ESS fell to 35 of 4,000 draws)."""
    num = 0.0
    den = 0.0
    for i in range(st, sp):
        if observed[i]:
            wi = wconst if wconst > 0.0 else w[i]
            j = cluster[i]
            e_lo = _eta_with(S, i, s, cen - sc, D, prog, nf, beta, b, j, eta[i])
            e_0 = _eta_with(S, i, s, cen, D, prog, nf, beta, b, j, eta[i])
            e_hi = _eta_with(S, i, s, cen + sc, D, prog, nf, beta, b, j, eta[i])
            bi = 0.5 * (e_hi - e_lo)
            ci = 0.5 * (e_hi + e_lo) - e_0
            num += wi * bi * ci
            den += wi * ci * ci
    if not den > 0.0:
        return v0
    v = -num / den - v0
    if not math.isfinite(v):
        return v0
    logr = (-0.5 * ((v - m) ** 2 - (v0 - m) ** 2) / (sd * sd)
            + _unit_loglik(S, s, cen + sc * v, D, prog, nf, beta, b, cluster, eta, ytil, w, wconst, observed, st, sp)
            - _unit_loglik(S, s, cen + sc * v0, D, prog, nf, beta, b, cluster, eta, ytil, w, wconst, observed, st,
                           sp))
    if math.log(u) < logr:
        return v
    return v0


@njit(cache=True)
def cells(y, mu, Q, qidx, units, ustart, ustop, miss, colkind, colfirst, colwidth, colsrc, colcut,
          colcen, colsc, cuts, linear, quadratic, observed, cluster, S, D, prog, nf, beta, b, eta, ytil, w,
          wconst, steps, accepted, tried, z, u):
    """Redraw every missing cell of the ``units`` (rows of y, with a missing covariate of the
    formula and an observed outcome among their design rows), one latent column at a time, from

        p(cell | unit's other columns, model (6)) · Π_{design rows i of the unit} p(ytil_i | η_i(cell))

    A level-1 unit is one row whose design row is itself (``ustart = ustop − 1 = row``); a
    level-2 unit is a cluster, whose value enters the design rows of all its units
    (``ustart:ustop``). The model-(6) conditional of cell k is ``N(m, 1/Q_kk)`` with
    ``m = μ_k − Σ_{l≠k} Q_kl (y_l − μ_l) / Q_kk`` (``Q = Q[qidx[unit]]``).

    - continuous covariates entering linearly: the product is normal (exact draw);
    - otherwise: random-walk MH, step ``steps[s]`` × conditional SD (tuned in burn-in); where
      the formula is quadratic in the source (``quadratic[s]``) then a reflection about the
      vertex of the unit's linear predictors, which jumps between the two modes a quadratic
      term gives its conditional (``_reflect``);
    - a categorical latent column: the line splits into intervals, each a category given the
      unit's other latent columns; one is chosen with probability mass × likelihood, then the
      latent is drawn inside it.

    A continuous column k is held as (value − colcen[k]) / colsc[k] (``mlimpute.scaling``; 0 and
    1 without internal scaling), the formula reads its value on the data's scale.

    The outcome's precision is ``wconst`` for every row, or ``w[i]`` where wconst is 0. ``z``,
    ``u``: a normal and two uniforms per cell (the uniforms are read only by Metropolis–Hastings
    and categorical cells: ``u`` may be empty when there are none). S, D and eta follow every
    change.
    """
    p = y.shape[1]
    lo = np.empty(64)
    hi = np.empty(64)
    cat = np.empty(64, np.int64)
    logp = np.empty(64)
    t = 0
    for r in range(units.size):
        j = units[r]
        Qj = Q[qidx[r]]
        st, sp = ustart[r], ustop[r]
        for k in range(p):
            if not miss[j, k]:
                continue
            acc = 0.0
            for l in range(p):
                if l != k:
                    acc += Qj[k, l] * (y[j, l] - mu[j, l])
            qkk = Qj[k, k]
            m = mu[j, k] - acc / qkk
            sd = 1.0 / math.sqrt(qkk)
            s = colsrc[k]
            zz = z[t]
            t += 1
            if s < 0:  # not read by the formula: model (6) alone
                y[j, k] = m + sd * zz
                continue
            cen, sc = colcen[k], colsc[k]
            if colkind[k] == CONT:
                v0 = y[j, k]
                if linear[s]:
                    A = 0.0
                    B = 0.0
                    for i in range(st, sp):
                        if observed[i]:
                            if wconst > 0.0:
                                wi = wconst
                            else:
                                wi = w[i]
                            e0 = eta[i]
                            slope = _eta_with(S, i, s, cen + sc * (v0 + 1.0), D, prog, nf, beta, b, cluster[i],
                                              e0) - e0
                            A += wi * slope * slope
                            B += wi * slope * (ytil[i] - (e0 - slope * v0))
                    prec = 1.0 / (sd * sd) + A
                    v = (m / (sd * sd) + B) / prec + zz / math.sqrt(prec)
                else:
                    if u.size < 2 * t:
                        raise ValueError("cells: uniforms missing for a Metropolis-Hastings cell")
                    u1 = u[2 * t - 2]
                    v = v0 + steps[s] * sd * zz
                    logr = (-0.5 * ((v - m) ** 2 - (v0 - m) ** 2) / (sd * sd)
                            + _unit_loglik(S, s, cen + sc * v, D, prog, nf, beta, b, cluster, eta, ytil, w,
                                           wconst, observed, st, sp)
                            - _unit_loglik(S, s, cen + sc * v0, D, prog, nf, beta, b, cluster, eta, ytil, w,
                                           wconst, observed, st, sp))
                    tried[s] += 1
                    if math.log(u1) < logr:
                        accepted[s] += 1
                    else:
                        v = v0
                    if quadratic[s]:
                        v = _reflect(S, s, v, m, sd, cen, sc, D, prog, nf, beta, b, cluster, eta, ytil, w, wconst,
                                     observed, st, sp, u[2 * t - 1])
                y[j, k] = v
                v = cen + sc * v
            else:
                if u.size < 2 * t:
                    raise ValueError("cells: uniforms missing for a categorical cell")
                u1, u2 = u[2 * t - 2], u[2 * t - 1]
                n = _intervals(colkind[k], y[j], colfirst[k], colwidth[k], k,
                               cuts[max(colcut[k], 0)], lo, hi, cat)
                for c in range(n):
                    logp[c] = (kern._log_interval(m, sd, lo[c], hi[c])
                               + _unit_loglik(S, s, float(cat[c]), D, prog, nf, beta, b, cluster, eta, ytil,
                                              w, wconst, observed, st, sp))
                c = _pick(logp, n, u1)
                y[j, k] = _draw_in(m, sd, lo[c], hi[c], u2)
                v = float(cat[c])
            for i in range(st, sp):
                _set_source(S, i, s, v, D, prog, nf, beta, b, cluster[i], eta)


# ------------------------------------------------------------------------------------------
# Several classifications (``outcome_multi``): rows' random coefficients R (N, q)
# ------------------------------------------------------------------------------------------
@njit(cache=True)
def term_inputs(D, R, rows, nf, cols, ytil, Dc, yc):
    """The block draw's inputs for one classification's effects at ``rows``: ``Dc[t]`` = row
    rows[t]'s fixed columns then the classification's random columns ``cols``, ``yc[t]`` its
    pseudo-response less the other classifications' part of the linear predictor."""
    q = D.shape[1] - nf
    qc = cols.size
    for t in range(rows.size):
        i = rows[t]
        for a in range(nf):
            Dc[t, a] = D[i, a]
        other = 0.0
        for k in range(q):
            other += D[i, nf + k] * R[i, k]
        for r in range(qc):
            c = cols[r]
            v = D[i, nf + c]
            Dc[t, nf + r] = v
            other -= v * R[i, c]
        yc[t] = ytil[i] - other


@njit(cache=True)
def set_coefficients(R, b, unit, cols):
    """R[i, cols] = b[unit[i]] for every row."""
    for i in range(R.shape[0]):
        j = unit[i]
        for r in range(cols.size):
            R[i, cols[r]] = b[j, r]
