"""The scale of categorical latents: marginal data augmentation for binary and ordinal
variables, a group move for nominal ones (two-level sampler, both levels).

Notes
-----
A binary or ordinal variable a has a latent column z_a whose residual variance Ω1_aa is fixed
at 1: it is what identifies the scale of z_a, its fixed and random effects, its covariances and
its thresholds. A Gibbs scan moves that whole group of quantities only slowly together, each
pinned by the others. Marginal data augmentation (Imai & van Dyk 2005; Lawrence et al. 2008 for
thresholds; Talhouk, Doucet & Murphy 2012) adds a working scale α: in the expanded coordinates

    z̃_a = α z_a,  B̃_a = α B_a,  ũ_a = α u_a,  Ω̃2 = DΩ2D,  γ̃_a = α γ_a,  Ω̃1 = DΩ1D

(D = α at a's coordinates, 1 elsewhere) the scale is free, Ω̃1_aa = α². One move:

1. draw α from q(α | Ω1): α² ~ InvGamma(ν1/2, ψ_aa (Ω1⁻¹)_aa / 2) (Ψ1, ν1 Ω1's prior);
2. map to the expanded coordinates;
3. propose row a of Ω̃1 given the rest of Ω̃1 from the conditional of
   IW(ν1 + N, Ψ1 + Ẽ'Ẽ) (Ẽ = the expanded residuals: likelihood × IW prior), and accept it by
   Metropolis–Hastings for the expanded target π̃ = π(identified) · q(α | Ω1) · |Jacobian|;
4. map back with the new α = √Ω̃1_aa: z_a, B_a, u_a, Ω2's a-rows and columns and γ_a are
   multiplied by s = α_old / α_new, row a of Ω1 is Ω̃1_a· / α_new.

Step 1 is an exact draw of the working parameter given the identified state (π̃ makes it
independent of everything else given Ω1), step 3 leaves π̃ invariant, so the identified
posterior π — with the model's own priors: flat or ``categorical_prior_sd`` on B and the
thresholds, restricted inverse-Wishart on Ω1, inverse-Wishart on Ω2 — stays the target. The
likelihood terms of the proposal and the target are the same, so the acceptance ratio is
r(new) / r(old) with (Λ1 = Ω1⁻¹ identified, β = ψ_aa Λ1_aa / 2, f = the rows of B1, P = the
dimension of Ω2, q = random effects per variable, K = categories)::

    log r = log IW(Ω2; ν2, Ψ2) + log p(B_a) + log p(γ_a) − (f + q(P + 1) + K − 2) log α
            + (ν1/2) log β − β + (1/α − 1) Σ_{k≠a} ψ_ak Λ1_ak

(the last three terms are p_r(Ω1) q(α | Ω1) / IW(Ω̃1; ν1, Ψ1) with the α^{p1} of the
(Ω1, α) ↔ Ω̃1 Jacobian; the exponent of α collects the Jacobians of B, Ω2 and the thresholds —
those of z and u cancel with their normal densities). ``tests/test_expansion.py`` checks the
ratio against the expanded density written out with scipy and a numerical Jacobian.

What the move buys: the latents, effects, thresholds and random-effect scale of a variable
move together by a factor whose spread is set by the residuals' sum of squares, where a Gibbs
scan moves each only within the room the others leave it.

At level 2 the same move runs for a binary/ordinal level-2 variable with Ω2 in Ω1's place: the
clusters' rows u = (u1, y2 − X2B2) are its data and there are no random effects below it
(q = 0 in the ratio).

Nominal
~~~~~~~
A nominal variable's K − 1 latent columns F share one fixed block ½(I + 11') of Ω1, so one
column cannot be rescaled alone, and an inverse-Wishart proposal of the F rows would leave the
constraint set. Its common scale moves instead by a group move in the manner of the random
effects' scale move (Liu & Sabatti 2000): z_F, B_F, u_F and Ω2's F-coordinates are multiplied by
one s > 0 (every category stays where it was: the largest latent and its sign do not change),
Ω1 is kept, and random-walk Metropolis–Hastings on log s targets π(g_s θ)|J_{g_s}| — with W = |F|,
A = Σ_F Λ1∘S1, m = Σ_{F × not F} Λ1∘S1 (S1 the residuals' cross-product)::

    W(N + f − qν2) log s − ½(s² − 1)A − (s − 1)m − ½ Σ_kl Ψ2_kl Λ2_kl (e_k e_l − 1)

(e = 1/s on F's random-effect coordinates; the normal density of u and its Jacobian cancel; a
``categorical_prior_sd`` adds −½(s² − 1)ΣB_F²/sd²). Its spread is about 1/√(2NW); checked
against scipy's densities in ``tests/test_expansion.py``.

References
----------
Imai, K., & van Dyk, D. A. (2005). A Bayesian analysis of the multinomial probit model using
marginal data augmentation. Journal of Econometrics, 124, 311–334.
Lawrence, E., Bingham, D., Liu, C., & Nair, V. N. (2008). Bayesian inference for multivariate
ordinal data using parameter expansion. Technometrics, 50, 182–191.
Liu, J. S., & Sabatti, C. (2000). Generalised Gibbs sampler and multigrid Monte Carlo for
Bayesian computation. Biometrika, 87, 353–369.
Talhouk, A., Doucet, A., & Murphy, K. (2012). Efficient Bayesian inference for multivariate
probit models with sparse inverse correlation matrices. JCGS, 21, 739–757.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._small import chol, spd_inv
from .state import Static

__all__ = ["ENABLED", "expand_scales", "expand_level2", "expand_column", "scale_nominal", "block_scale_target"]

ENABLED = True   # switched off only to measure what the move buys (benchmarks)


def _draws(rng: np.random.Generator, n: int, nu: float, n_rows: int, p: int):
    """The random numbers of n moves: Gamma(ν/2), χ²(ν + rows), normals, log uniforms."""
    return (rng.standard_gamma(0.5 * nu, n), rng.chisquare(nu + n_rows, n),
            rng.standard_normal((n, max(p - 1, 1))), np.log(rng.random(n)))


def _prior_ss(st: Static, b: np.ndarray, a: int, offset: int, cuts) -> float:
    """Σ B_a² / sd² + Σ γ_a² / sd² under ``categorical_prior_sd`` (0 with flat priors)."""
    fp = st.fixed_prior
    if fp is None:
        return 0.0
    f = b.shape[0]
    prec = fp[offset + a * f:offset + (a + 1) * f]
    out = float(prec @ b[:, a] ** 2)
    if cuts is not None:
        out += float(np.sum(cuts[2:-1] ** 2)) * prec[0]
    return out


def expand_scales(rng: np.random.Generator, st: Static, y1: np.ndarray, fitted1: np.ndarray,
                  S1: np.ndarray, b1: np.ndarray, u1: np.ndarray, omega1: np.ndarray,
                  omega2: np.ndarray, cuts1: tuple) -> tuple:
    """One marginal-data-augmentation move per binary/ordinal level-1 variable (module notes).

    ``S1``: the residuals' cross-product Σ (y − f)(y − f)' of the current state, ``fitted1``
    X1B1 + ZU1; both are updated in place with ``y1`` (the sweep owns them). Returns
    (y1, b1, u1, Ω1, Ω2, cuts1, S1, accepted) with new arrays for b1 and u1 when a move is taken.
    """
    psi1, nu1 = st.prior1
    psi2, nu2 = st.prior2
    q, f1 = st.q, b1.shape[0]
    gam, chi, z, logu = _draws(rng, len(st.expand1), nu1, y1.shape[0], st.p1)
    cuts1 = list(cuts1)
    lam2 = spd_inv(omega2)[0]
    scratch = np.zeros_like(S1)
    accepted = np.zeros(len(st.expand1))
    for t, (a, o, mask) in enumerate(st.expand1):
        cuts = None if o is None else cuts1[o]
        _, _, omega1_new, log_acc = expand_column(
            S1, omega1, lam2, psi1, float(nu1), psi2, float(nu2), a, q, f1,
            0 if cuts is None else cuts.size - 3, _prior_ss(st, b1, a, 0, cuts), gam[t], chi[t], z[t], False)
        if not (logu[t] < log_acc):
            continue
        s = math.sqrt(omega1_new[a, a])   # expand_column returns s² there (see its docstring)
        omega1_new[a, a] = 1.0
        if not accepted.any():   # new arrays for what the state holds; y1, fitted1, S1 are the sweep's
            b1, u1, omega2 = b1.copy(), u1.copy(), omega2.copy()
        accepted[t] = 1.0
        _apply_block(s, a, a + 1, a, a + 1, mask, y1, fitted1, b1, u1, omega2, S1, scratch, lam2)
        if o is not None:
            cuts1[o] = cuts1[o] * s
        omega1 = omega1_new
    return y1, b1, u1, omega1, omega2, tuple(cuts1), S1, accepted


def expand_level2(rng: np.random.Generator, st: Static, y2: np.ndarray, u: np.ndarray,
                  S2: np.ndarray, b2: np.ndarray, omega2: np.ndarray, cuts2: tuple) -> tuple:
    """The same move for each binary/ordinal level-2 variable, before Ω2 | u: its latent is the
    coordinate k = p1·q + a of the clusters' rows u = (u1, y2 − X2B2) with Ω2_kk = 1, so the
    move is ``expand_scales``'s with Ω2 in Ω1's place and no random effects below it (q = 0).
    ``u`` and ``S2`` = u'u are updated in place with ``y2``. Returns (y2, b2, u, Ω2, cuts2, S2,
    accepted)."""
    psi2, nu2 = st.prior2
    f2, off = b2.shape[0], st.p1 * st.q
    gam, chi, z, logu = _draws(rng, len(st.expand2), nu2, u.shape[0], omega2.shape[0])
    cuts2 = list(cuts2)
    none = np.zeros((0, 0))
    scratch = np.zeros_like(S2)
    accepted = np.zeros(len(st.expand2))
    b_off = st.p1 * st.data.x1.shape[1]
    for t, (a, o, mask) in enumerate(st.expand2):
        k = off + a
        cuts = None if o is None else cuts2[o]
        _, _, omega2_new, log_acc = expand_column(
            S2, omega2, none, psi2, float(nu2), none, 0.0, k, 0, f2,
            0 if cuts is None else cuts.size - 3, _prior_ss(st, b2, a, b_off, cuts), gam[t], chi[t], z[t], False)
        if not (logu[t] < log_acc):
            continue
        s = math.sqrt(omega2_new[k, k])
        omega2_new[k, k] = 1.0
        if not accepted.any():
            b2 = b2.copy()
        accepted[t] = 1.0
        _apply_block(s, a, a + 1, k, k + 1, mask, y2, u, b2, none, none, S2, scratch, none)
        if o is not None:
            cuts2[o] = cuts2[o] * s
        omega2 = omega2_new
    return y2, b2, u, omega2, tuple(cuts2), S2, accepted


@njit(cache=True)
def expand_column(S1, omega1, lam2, psi1, nu1, psi2, nu2, a, q, f1, n_cuts, prior_ss,
                  gam, chi, z, expanded):
    """One move for latent column ``a`` given its random draws: ``gam`` ~ Gamma(ν1/2),
    ``chi`` ~ χ²(ν1 + N), ``z`` p1 − 1 standard normals (module notes).

    The proposal: with r the other columns and S̃ = Ψ1 + D S1 D, Ω̃_aa·r ~ S̃_aa·r / χ²(ν1 + N)
    and Ω̃_rr⁻¹Ω̃_ra | Ω̃_aa·r ~ N(S̃_rr⁻¹S̃_ra, Ω̃_aa·r S̃_rr⁻¹), independent of Ω̃_rr = Ω1_rr
    (the partition of the inverse Wishart in ``covariance``'s notes).

    Returns (α_old, α_new, Ω1', log acceptance ratio). Ω1' is the proposed identified Ω1 with
    s² = (α_old / α_new)² in place of its (a, a) element (1 on acceptance), or with ``expanded`` the proposed
    Ω̃1 itself (for tests)."""
    p = S1.shape[0]
    P = lam2.shape[0]
    lam1, ok = spd_inv(omega1)
    beta = 0.5 * psi1[a, a] * lam1[a, a]
    alpha_old = math.sqrt(beta / gam)
    St = psi1.copy()                              # Ψ1 + D S1 D
    for i in range(p):
        for j in range(p):
            St[i, j] += S1[i, j] * (alpha_old if i == a else 1.0) * (alpha_old if j == a else 1.0)
    out = omega1.copy()
    if p == 1:
        out[0, 0] = St[0, 0] / chi
    else:
        r = np.empty(p - 1, np.int64)
        k = 0
        for i in range(p):
            if i != a:
                r[k] = i
                k += 1
        Srr = np.empty((p - 1, p - 1))
        Sra = np.empty(p - 1)
        for i in range(p - 1):
            Sra[i] = St[r[i], a]
            for j in range(p - 1):
                Srr[i, j] = St[r[i], r[j]]
        Sinv, ok = spd_inv(Srr)
        m = Sinv @ Sra
        var = (St[a, a] - Sra @ m) / chi
        L, ok = chol(Sinv)
        g = m + (L @ z) * math.sqrt(var)
        aa = var
        for i in range(p - 1):
            c = 0.0
            for j in range(p - 1):
                c += omega1[r[i], r[j]] * g[j]
            out[r[i], a] = c
            out[a, r[i]] = c
            aa += g[i] * c
        out[a, a] = aa
    alpha_new = math.sqrt(out[a, a])
    s = alpha_old / alpha_new
    if expanded:
        return alpha_old, alpha_new, out, 0.0
    for i in range(p):
        if i != a:
            out[i, a] /= alpha_new
            out[a, i] /= alpha_new
    out[a, a] = 1.0
    log_s = math.log(s)
    # Ω2's prior at S Ω2 S (S = s on a's q coordinates) against Ω2
    tr = 0.0
    for i in range(P):
        ei = 1.0 / s if a * q <= i < a * q + q else 1.0
        for j in range(P):
            ej = 1.0 / s if a * q <= j < a * q + q else 1.0
            tr += psi2[i, j] * lam2[i, j] * (ei * ej - 1.0)
    log_acc = -(nu2 + P + 1) * q * log_s - 0.5 * tr
    log_acc += (f1 + q * (P + 1) + n_cuts) * log_s        # α's exponent (module notes)
    lam1_new, ok = spd_inv(out)
    log_acc += _omega1_terms(alpha_new, lam1_new, a, psi1, nu1) - _omega1_terms(alpha_old, lam1, a, psi1, nu1)
    log_acc -= 0.5 * (s * s - 1.0) * prior_ss
    out[a, a] = s * s
    return alpha_old, alpha_new, out, log_acc


@njit(cache=True)
def _omega1_terms(alpha, lam1, a, psi1, nu1):
    """The Ω1 part of log r (module notes): (ν1/2) log β − β + (1/α − 1) Σ_{k≠a} ψ_ak Λ1_ak."""
    beta = 0.5 * psi1[a, a] * lam1[a, a]
    cross = 0.0
    for k in range(lam1.shape[0]):
        if k != a:
            cross += psi1[a, k] * lam1[k, a]
    return 0.5 * nu1 * math.log(beta) - beta + (1.0 / alpha - 1.0) * cross


BLOCK_STEPS = 3   # random-walk steps on log s per nominal variable and sweep


def scale_nominal(rng: np.random.Generator, st: Static, y: np.ndarray, fitted: np.ndarray | None,
                  S: np.ndarray, b: np.ndarray, u1: np.ndarray | None, omega: np.ndarray,
                  omega2: np.ndarray | None, level: int) -> tuple:
    """The common scale of a nominal variable's latent columns F (module notes, "Nominal").

    Level 1: ``y`` = Y1, ``S`` the residuals' cross-product, ``omega`` = Ω1, and the variable's
    random effects u1 and Ω2's coordinates move with it. Level 2: ``y`` = Y2, ``S`` = u'u of the
    clusters' rows u = (u1, Y2 − X2B2) (``fitted`` is u, updated in place), ``omega`` = Ω2, F
    its level-2 coordinates, no effects below. ``y``, ``fitted`` and ``S`` are updated in place.
    Returns (y, b, u1, Ω2 or None, S, acceptance rate per variable).
    """
    blocks = st.nominal_blocks[level - 1]
    psi2, nu2 = st.prior2
    f = b.shape[0]
    q = st.q if level == 1 else 0
    b_off = 0 if level == 1 else st.p1 * st.data.x1.shape[1]
    empty = np.zeros((0, 0))
    pl2 = psi2 * spd_inv(omega2)[0] if level == 1 else empty
    z = rng.standard_normal((len(blocks), BLOCK_STEPS))
    logu = np.log(rng.random((len(blocks), BLOCK_STEPS)))
    rates = np.zeros(len(blocks))
    lam = spd_inv(omega)[0]
    copied = False
    for t, (cols, F, coords) in enumerate(blocks):
        c0, c1 = cols[0], cols[-1] + 1   # a nominal variable's latent columns are adjacent
        prior_ss = 0.0
        if st.fixed_prior is not None:
            prior_ss = float(np.sum(st.fixed_prior[b_off + c0 * f:b_off + c1 * f] * b[:, c0:c1].T.ravel() ** 2))
        s, rates[t] = _block_scale_mh(S, lam, F, block_exponent(F.size, y.shape[0], f, q, nu2), pl2, coords,
                                      prior_ss, z[t], logu[t])
        if s == 1.0:
            continue
        if not copied:   # new arrays for what the state holds; y, fitted and S are the sweep's
            b, copied = b.copy(), True
            if level == 1:
                u1, omega2 = u1.copy(), omega2.copy()
        _apply_block(s, c0, c1, F[0], F[-1] + 1, coords, y, empty if fitted is None else fitted, b,
                     u1 if level == 1 else empty, omega2 if level == 1 else empty, S, lam, pl2)
    return y, b, u1, omega2, S, rates


@njit(cache=True)
def _apply_block(s, c0, c1, F0, F1, coords, y, fitted, b, u1, omega2, S, lam, pl2):
    """Multiply a nominal block's latents (y's columns c0:c1), fitted values and cross-product
    (coordinates F0:F1), fixed effects and — at level 1 — random effects and Ω2's coordinates by
    s, in place; Λ and Ψ2∘Λ2 follow (divided by s)."""
    scale_columns(y, c0, c1, s)
    if fitted.shape[0]:
        scale_columns(fitted, F0, F1, s)
    scale_columns(b, c0, c1, s)
    for i in range(S.shape[0]):
        for k in range(F0, F1):
            S[i, k] *= s
            S[k, i] *= s
            lam[i, k] /= s
            lam[k, i] /= s
    if u1.shape[0]:
        for i in range(u1.shape[0]):
            for k in range(u1.shape[1]):
                if coords[k]:
                    u1[i, k] *= s
        for i in range(omega2.shape[0]):
            for k in range(omega2.shape[0]):
                if coords[k]:
                    omega2[i, k] *= s
                    omega2[k, i] *= s
                    pl2[i, k] /= s
                    pl2[k, i] /= s


@njit(cache=True)
def scale_columns(a, c0, c1, s):
    """a[:, c0:c1] *= s in place (numpy's strided in-place product of a few columns of a tall
    array costs ~5 ns an element)."""
    for i in range(a.shape[0]):
        for c in range(c0, c1):
            a[i, c] *= s


@njit(cache=True)
def block_scale_target(s, A, m, k, pl2, coords, prior_ss):
    """log π(g_s θ) + log |J_{g_s}(θ)| − log π(θ) for the common scale s of a nominal block:
    k log s − ½(s² − 1)A − (s − 1)m − ½ Σ_kl Ψ2_kl Λ2_kl (e_k e_l − 1) − ½(s² − 1)·prior_ss
    (e = 1/s on the block's random-effect coordinates of Ω2, 1 elsewhere; module notes)."""
    tr = 0.0
    for i in range(pl2.shape[0]):
        ei = 1.0 / s if coords[i] else 1.0
        for j in range(pl2.shape[0]):
            ej = 1.0 / s if coords[j] else 1.0
            tr += pl2[i, j] * (ei * ej - 1.0)
    return k * math.log(s) - 0.5 * (s * s - 1.0) * (A + prior_ss) - (s - 1.0) * m - 0.5 * tr


def block_exponent(W: int, n_rows: int, f: int, q: int, nu2: float) -> float:
    """The exponent of s in the nominal block's target: W(N + f − qν2) (module notes)."""
    return float(W * (n_rows + f - q * nu2))


@njit(cache=True)
def block_statistics(S, lam, F):
    """A = Σ_F Λ∘S and m = Σ_{F × not F} Λ∘S: the rows' normal density with the block's
    residuals times s is −½(s²A + 2sm) + const."""
    A = 0.0
    m = 0.0
    inF = np.zeros(S.shape[0], np.bool_)
    for i in F:
        inF[i] = True
    for i in F:
        for j in range(S.shape[0]):
            if inF[j]:
                A += lam[i, j] * S[i, j]
            else:
                m += lam[i, j] * S[i, j]
    return A, m


@njit(cache=True)
def _block_scale_mh(S, lam, F, k, pl2, coords, prior_ss, z, logu):
    """Random-walk MH on log s from s = 1 (step 1.7 / √(2A), about the target's spread);
    returns s and the acceptance rate."""
    A, m = block_statistics(S, lam, F)
    step = 1.7 / math.sqrt(2.0 * A)
    s, cur, acc = 1.0, 0.0, 0.0
    for t in range(z.size):
        prop = s * math.exp(step * z[t])
        new = block_scale_target(prop, A, m, k, pl2, coords, prior_ss)
        if logu[t] < new - cur:
            s, cur = prop, new
            acc += 1.0
    return s, acc / z.size
