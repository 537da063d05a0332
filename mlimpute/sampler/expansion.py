"""The scale of categorical latents: marginal data augmentation for binary and ordinal
variables, a group move for nominal ones. The two-level sampler runs them at both levels, the
general sampler (``multi``) for level-1 variables and for each classification's own variables;
the random effects that move with a variable are passed as a list of ``Effects``, one per
classification (one: Ω2's, in the two-level model; for a classification's own variables, those
of the classifications nesting it). Not for level-1 variables with ``covariance="cluster"`` or
variance functions (Ω1 is not one inverse-Wishart there).

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

(with several classifications, one IW term and one q(P + 1) per classification: ``effects_term``)

(the last three terms are p_r(Ω1) q(α | Ω1) / IW(Ω̃1; ν1, Ψ1) with the α^{p1} of the
(Ω1, α) ↔ Ω̃1 Jacobian; the exponent of α collects the Jacobians of B, Ω2 and the thresholds —
those of z and u cancel with their normal densities). ``tests/test_expansion.py`` checks the
ratio against the expanded density written out with scipy and a numerical Jacobian.

What the move buys: the latents, effects, thresholds and random-effect scale of a variable
move together by a factor whose spread is set by the residuals' sum of squares, where a Gibbs
scan moves each only within the room the others leave it.

At level 2 the same move runs for a binary/ordinal level-2 variable with Ω2 in Ω1's place: the
clusters' rows u = (u1, y2 − X2B2) are its data and there are no random effects below it
(q = 0 in the ratio). In the general sampler a classification's own variable moves likewise
with Ω^(c) in Ω1's place and its units' rows u = (effects, y^(c) − X^(c)B^(c) − nesting offsets)
as the data; the effects on it of each classification nesting it move along (q = 1 there).

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

import functools
import math
from typing import NamedTuple

import numpy as np
from numba import njit

from ._small import chol, log_iw_rescaled, spd_inv

__all__ = ["ENABLED", "Effects", "scale_moves", "expand_column", "effects_term",
           "block_scale_target", "block_statistics"]

ENABLED = True   # switched off only to measure what the move buys (benchmarks)
BLOCK_STEPS = 3   # random-walk steps on log s per nominal variable and sweep


def _draws(rng: np.random.Generator, n: int, nu: float, n_rows: int, p: int):
    """The random numbers of n moves: Gamma(ν/2), χ²(ν + rows), normals, log uniforms."""
    return (rng.standard_gamma(0.5 * nu, n), rng.chisquare(nu + n_rows, n),
            rng.standard_normal((n, max(p - 1, 1))), np.log(rng.random(n)))


class Effects(NamedTuple):
    """One classification's random effects that move with the latents of a level: its units'
    effects ``u`` (units × d), its covariance ``omega`` (the first d coordinates are u's), prior
    (``psi``, ``nu``) and ``masks``: a row per moved variable marking its coordinates (the
    compiled loops do not check bounds: ``scale_moves`` checks the rows)."""

    u: np.ndarray
    omega: np.ndarray
    psi: np.ndarray
    nu: float
    masks: np.ndarray


def _prior_ss(fixed_prior, b: np.ndarray, c0: int, c1: int, offset: int, cuts) -> float:
    """Σ B_c² / sd² (+ Σ γ² / sd²) over columns c0:c1 under ``categorical_prior_sd`` (0 with
    flat priors); ``offset`` of B's block in ``fixed_prior``."""
    if fixed_prior is None:
        return 0.0
    f = b.shape[0]
    prec = fixed_prior[offset + c0 * f:offset + c1 * f]
    out = float(prec @ b[:, c0:c1].T.ravel() ** 2)
    if cuts is not None:
        out += float(np.sum(cuts[2:-1] ** 2)) * prec[0]
    return out


def _groups(effects: list, n_moved: int) -> tuple:
    """The effects as the compiled loops take them: new arrays for u and Ω (moved in place),
    Ψ∘Λ, masks (variables × coordinates) and ν of each classification; without effects one
    dummy group whose masks (one row per moved variable) are all False."""
    if not effects:
        none = np.zeros((1, 1))
        return (none,), (none.copy(),), (none.copy(),), (np.zeros((n_moved, 1), np.bool_),), np.zeros(1)
    return (tuple(e.u.copy() for e in effects), tuple(e.omega.copy() for e in effects),
            tuple(e.psi * spd_inv(e.omega)[0] for e in effects), tuple(e.masks for e in effects),
            np.array([float(e.nu) for e in effects]))


_NO_DRAWS = (np.zeros(0), np.zeros(0), np.zeros((0, 1)), np.zeros(0))
_NO_BLOCK = (np.zeros((0, BLOCK_STEPS)), np.zeros((0, BLOCK_STEPS)))


@functools.lru_cache(maxsize=64)
def _layout(cols: tuple, blocks: tuple, cut_sizes: tuple) -> tuple:
    """The moved variables as the compiled loop takes them (a model's, so computed once):
    binary/ordinal columns and their numbers of free thresholds, nominal blocks' first and
    one-past-last columns. The arrays are shared: the loop only reads them."""
    a = np.array([c for c, _ in cols], np.int64)
    n_cuts = np.array([0 if o is None else cut_sizes[o] - 3 for _, o in cols], np.int64)
    c0 = np.array([c[0] for c in blocks], np.int64)
    c1 = np.array([c[-1] + 1 for c in blocks], np.int64)
    return a, n_cuts, c0, c1


def _moved(effects: list, us: tuple, omegas: tuple) -> list:
    return [e._replace(u=u, omega=o) for e, u, o in zip(effects, us, omegas)]


def scale_moves(rng: np.random.Generator, cols: tuple, blocks: tuple, off: int, prior: tuple, fixed_prior,
                b_off: int, y: np.ndarray, fitted: np.ndarray, S: np.ndarray, b: np.ndarray,
                omega: np.ndarray, cuts: tuple, effects: list) -> tuple:
    """A level's scale moves in one compiled call: marginal data augmentation for each
    binary/ordinal variable (``cols``), then the group move of each nominal one (``blocks``).

    ``cols``: (column of ``y``, index of its thresholds in ``cuts`` or None) of each binary or
    ordinal variable; ``blocks``: each nominal variable's (adjacent) latent columns; a column's
    coordinate in ``S``, ``omega`` and ``fitted`` is column + ``off``. Level 1: ``y`` = Y1,
    ``fitted`` its fitted values, ``S`` the residuals' cross-product, ``omega`` = Ω1 with
    ``prior`` = (Ψ1, ν1), ``effects`` each classification's random effects on the level-1
    variables (``Effects.masks``: a row per variable of ``cols`` then of ``blocks``). Level 2 of
    the two-level model: ``y`` = Y2, ``fitted`` the clusters' rows u = (u1, Y2 − X2B2), ``S`` =
    u'u, ``omega`` = Ω2 with its prior, no effects below. ``y``, ``fitted`` and ``S`` are updated
    in place (the sweep owns them); B, Ω and the effects' arrays are new. Returns (y, B, Ω, cuts,
    S, effects, taken per binary/ordinal variable, acceptance rate per nominal variable)."""
    psi, nu = prior
    n, m = len(cols), len(blocks)
    a, n_cuts, c0, c1 = _layout(cols, blocks, tuple(c.size for c in cuts))
    # (a level without binary/ordinal or without nominal variables draws nothing for them:
    # a draw of size 0 leaves the generator where it was, so skipping it changes no stream)
    gam, chi, z, logu = _draws(rng, n, nu, y.shape[0], omega.shape[0]) if n else _NO_DRAWS
    zn, logun = (rng.standard_normal((m, BLOCK_STEPS)), np.log(rng.random((m, BLOCK_STEPS)))) if m else _NO_BLOCK
    if fixed_prior is None:
        prior_ss, prior_nom = np.zeros(n), np.zeros(m)
    else:
        prior_ss = np.array([_prior_ss(fixed_prior, b, c, c + 1, b_off, None if o is None else cuts[o])
                             for c, o in cols])
        prior_nom = np.array([_prior_ss(fixed_prior, b, lo, hi, b_off, None) for lo, hi in zip(c0, c1)])
    us, omegas, pls, masks, nus = _groups(effects, n + m)
    if any(mk.shape[0] != n + m for mk in masks):
        raise ValueError(f"each classification's masks need {n + m} rows, one per moved variable")
    b = b.copy()
    omega, s, accepted, rates = _moves_loop(a, off, n_cuts, prior_ss, c0, c1, prior_nom, S, omega, psi,
                                            float(nu), y, fitted, b, us, omegas, pls, masks, nus,
                                            gam, chi, z, logu, zn, logun)
    cuts = list(cuts)
    for t, (_, o) in enumerate(cols):
        if o is not None and accepted[t]:
            cuts[o] = cuts[o] * s[t]
    return y, b, omega, tuple(cuts), S, _moved(effects, us, omegas), accepted, rates


@njit(cache=True)
def _moves_loop(a, off, n_cuts, prior_ss, c0, c1, prior_nom, S, omega, psi, nu, y, fitted, b, us, omegas,
                pls, masks, nus, gam, chi, z, logu, zn, logun):
    """``scale_moves``' moves, one variable after the other (B, the effects and their
    covariances moved in place): returns Ω, each binary/ordinal variable's s and whether its move
    was taken, and each nominal variable's acceptance rate (random-walk MH on log s from s = 1,
    step 1.7 / √(2A), about the target's spread)."""
    n = a.size
    s_all = np.ones(n)
    accepted = np.zeros(n)
    scratch = np.zeros_like(S)
    f = b.shape[0]
    for t in range(n):
        k = a[t] + off
        _, _, omega_new, log_acc = expand_column(S, omega, psi, nu, k, f, n_cuts[t], prior_ss[t],
                                                 gam[t], chi[t], z[t], False)
        s = math.sqrt(omega_new[k, k])   # expand_column returns s² there (see its docstring)
        for g in range(len(us)):
            log_acc += effects_term(s, pls[g], masks[g][t], nus[g])
        if not (logu[t] < log_acc):
            continue
        omega_new[k, k] = 1.0
        accepted[t] = 1.0
        s_all[t] = s
        _scale_rows(s, a[t], a[t] + 1, k, k + 1, y, fitted, b, S, scratch)
        for g in range(len(us)):
            _scale_effects(s, masks[g][t], us[g], omegas[g], pls[g])
        omega = omega_new
    rates = np.zeros(c0.size)
    lam, ok = spd_inv(omega)
    for t in range(c0.size):
        F = np.arange(c0[t] + off, c1[t] + off)
        kexp = float((c1[t] - c0[t]) * (y.shape[0] + f))
        A, m = block_statistics(S, lam, F)
        step = 1.7 / math.sqrt(2.0 * A)
        sc, cur = 1.0, 0.0
        for r in range(zn.shape[1]):
            prop = sc * math.exp(step * zn[t, r])
            new = block_scale_target(prop, A, m, kexp, prior_nom[t])
            for g in range(len(us)):
                new += effects_term(prop, pls[g], masks[g][n + t], nus[g])
            if logun[t, r] < new - cur:
                sc, cur = prop, new
                rates[t] += 1.0 / zn.shape[1]
        if sc == 1.0:
            continue
        _scale_rows(sc, c0[t], c1[t], c0[t] + off, c1[t] + off, y, fitted, b, S, lam)
        for g in range(len(us)):
            _scale_effects(sc, masks[g][n + t], us[g], omegas[g], pls[g])
    return omega, s_all, accepted, rates


@njit(cache=True)
def expand_column(S1, omega1, psi1, nu1, a, f1, n_cuts, prior_ss, gam, chi, z, expanded):
    """One move for latent column ``a`` given its random draws: ``gam`` ~ Gamma(ν1/2),
    ``chi`` ~ χ²(ν1 + N), ``z`` p1 − 1 standard normals (module notes).

    The proposal: with r the other columns and S̃ = Ψ1 + D S1 D, Ω̃_aa·r ~ S̃_aa·r / χ²(ν1 + N)
    and Ω̃_rr⁻¹Ω̃_ra | Ω̃_aa·r ~ N(S̃_rr⁻¹S̃_ra, Ω̃_aa·r S̃_rr⁻¹), independent of Ω̃_rr = Ω1_rr
    (the partition of the inverse Wishart in ``covariance``'s notes).

    Returns (α_old, α_new, Ω1', log acceptance ratio without the random effects' part, which
    ``effects_term`` adds for each classification). Ω1' is the proposed identified Ω1 with
    s² = (α_old / α_new)² in place of its (a, a) element (1 on acceptance), or with
    ``expanded`` the proposed Ω̃1 itself (for tests)."""
    p = S1.shape[0]
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
    log_acc = (f1 + n_cuts) * math.log(s)      # the Jacobians of B and the thresholds
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


@njit(cache=True)
def _scale_rows(s, c0, c1, F0, F1, y, fitted, b, S, lam):
    """Multiply y's columns c0:c1, the fitted values' and the cross-product's coordinates
    F0:F1 and B's columns c0:c1 by s, in place; Λ's coordinates are divided by s."""
    scale_columns(y, c0, c1, s)
    scale_columns(fitted, F0, F1, s)
    scale_columns(b, c0, c1, s)
    for i in range(S.shape[0]):
        for k in range(F0, F1):
            S[i, k] *= s
            S[k, i] *= s
            lam[i, k] /= s
            lam[k, i] /= s


@njit(cache=True)
def _scale_effects(s, mask, u, omega, pl):
    """Multiply the effects' and the covariance's coordinates in ``mask`` by s, in place;
    Ψ∘Λ's are divided by s."""
    for i in range(u.shape[0]):
        for k in range(u.shape[1]):
            if mask[k]:
                u[i, k] *= s
    for i in range(omega.shape[0]):
        for k in range(omega.shape[0]):
            if mask[k]:
                omega[i, k] *= s
                omega[k, i] *= s
                pl[i, k] /= s
                pl[k, i] /= s


@njit(cache=True)
def effects_term(s, pl, mask, nu):
    """The part of log π(g_s θ) + log |J| − log π(θ) that a classification's random effects and
    covariance give when their coordinates ``mask`` are multiplied by s: ``_small.
    log_iw_rescaled`` at those factors against all factors 1 (the inverse-Wishart prior at SΩS
    with Ω's Jacobian; the effects' normal density and their Jacobian cancel)."""
    f = np.ones(pl.shape[0])
    for i in range(f.size):
        if mask[i]:
            f[i] = s
    return log_iw_rescaled(pl, nu, f) + 0.5 * np.sum(pl)


@njit(cache=True)
def scale_columns(a, c0, c1, s):
    """a[:, c0:c1] *= s in place (numpy's strided in-place product of a few columns of a tall
    array costs ~5 ns an element)."""
    for i in range(a.shape[0]):
        for c in range(c0, c1):
            a[i, c] *= s


@njit(cache=True)
def block_scale_target(s, A, m, k, prior_ss):
    """The rows' part of log π(g_s θ) + log |J_{g_s}(θ)| − log π(θ) for the common scale s of a
    nominal block: k log s − ½(s² − 1)(A + prior_ss) − (s − 1)m with k = W(N + f) (module
    notes); ``effects_term`` adds each classification's random effects."""
    return k * math.log(s) - 0.5 * (s * s - 1.0) * (A + prior_ss) - (s - 1.0) * m


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
