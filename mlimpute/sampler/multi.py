"""The Gibbs sampler for several classifications: nested hierarchies, cross-classifications and
multiple membership (model (6) generalised; the two-level model keeps its own sampler).

Model (classification notation; rows i, classifications c with units k)::

    y1_i   = X1_i B1 + Σ_c Σ_{k∈c(i)} w_ik a^(c)_k + e_i,              e_i ~ N(0, Ω1)
    y^(c)_k = X^(c)_k B^(c) + Σ_{c' ⊃ c} e^(c')_{k'}[c] + d^(c)_k      (variables measured at c)
    u^(c)_k = (a^(c)_k, e^(c)_k, d^(c)_k) ~ N(0, Ω^(c))

``a`` are classification c's random effects on the level-1 variables, ``e`` its effects on the
variables of the classifications nested in it (classes' variables vary across schools too),
``d`` the residuals of its own variables (``d`` is determined by the completed y^(c) and the
other effects; ``(a, e)`` is the *free* part). Single membership: one unit per row and
classification, w = 1; multiple membership: several, weights summing to 1. Flat priors on the
B's; inverse-Wishart priors (scale I, df = dimension) on Ω1 and every Ω^(c).

One sweep:

1. latents of the observed categorical cells, at level 1 and at each classification;
2. B1 | rest and each B^(c) | rest (exact, given the effects);
3. for each classification, every unit's free effects at once given the rest: batched
   ``(K, r, r)`` exact draws (single membership), or a sparse exact draw for multiple
   membership (the units share rows; see ``draw_membership``);
4. a *shift* move for each classification: every unit's free effects move by −δ and the
   intercepts they compete with by +δ, δ from its exact conditional (the likelihood does not
   change along that line: weights sum to 1), removing the see-saw between random-effect means
   and intercepts that a scan of B | u, u | B suffers;
5. Ω^(c) | u^(c) (inverse-Wishart, restricted where the classification's own categorical
   variables fix blocks, as ``covariance``), Ω1 | residuals;
6. missing cells at every level from their conditional normal.

Every step is an exact conditional draw, an exact draw along a line, or (restricted covariance
blocks) Metropolis–Hastings leaving its conditional invariant, so the scan keeps the joint
posterior invariant. Level-1 costs O(N·p1·(f1 + C)) per sweep, never O(N·units).

References
----------
Browne, W. J., Goldstein, H., & Rasbash, J. (2001). Multiple membership multiple classification
(MMMC) models. Statistical Modelling, 1(2), 103-124.
Goldstein, H. (2011). Multilevel Statistical Models (4th ed.), chapters 13-14. Wiley.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from ..design import ColumnCodec, ModelData
from . import _class_kernels as ck
from ._kernels import residual_crossprod
from .covariance import Constraint, draw_covariance, free_lower
from .latent import update_latents
from .linalg import invwishart
from .missing import conditionals, draw_missing

__all__ = ["MultiState", "MultiStatic", "prepare_multi", "initial_multi", "sweep_multi",
           "multi_trace_names", "multi_trace_vector"]


class MultiState(NamedTuple):
    """One draw of every unknown (rows sorted as ModelData.order).

    ``ys[c]``, ``bs[c]``, ``us[c]``, ``omegas[c]``, ``cuts[c]``: classification c's completed
    variables, fixed effects, free random effects (units × r_c, columns as ``layout``),
    covariance ``Ω^(c)`` over (free, own) and ordinal thresholds; ``steps``: MH step sizes
    (tuned in burn-in only; slices in ``MultiStatic.step_slices``).
    """

    y1: np.ndarray
    b1: np.ndarray
    omega1: np.ndarray
    cuts1: tuple
    ys: tuple
    bs: tuple
    us: tuple
    omegas: tuple
    cuts: tuple
    steps: np.ndarray


@dataclass(frozen=True, eq=False)
class ClassStatic:
    """What a sweep needs of one classification.

    ``below``: the classifications nested in it (it explains their variables: the e-part),
    ``above``: those nesting it; ``free``: (start, stop) of the a-part and of each e-part in
    the free vector (keyed "a" and by classification index); ``blk``/``counts``: the block of
    each free coordinate and, per unit, the rows/units of each block (for ``draw_units``).
    """

    index: int
    cd: object
    below: tuple[int, ...]
    above: tuple[int, ...]
    free: dict
    r: int
    p: int
    con: Constraint | None
    prior: tuple[np.ndarray, float]
    blk: np.ndarray
    counts: np.ndarray
    xtx_factor: np.ndarray       # F with F F' = (X'X)⁻¹ of its own variables' design
    x_pinv: np.ndarray
    patterns: object
    cat: tuple
    ww: object = None            # multiple membership: W'W (sparse, units × units)

    @property
    def dim(self) -> int:
        return self.r + self.p


@dataclass(frozen=True, eq=False)
class MultiStatic:
    data: ModelData
    p1: int
    classes: tuple
    xtx1_inv: np.ndarray
    xtx1_factor: np.ndarray
    prior1: tuple
    con1: Constraint | None
    patterns1: object
    cat1: tuple
    step_slices: dict
    free1: tuple
    free_c: tuple                 # free lower-triangle positions of each Ω^(c)


def _fixed_block(codec: ColumnCodec) -> np.ndarray:
    w = len(codec.cols)
    return 0.5 * (np.eye(w) + np.ones((w, w)))


def _factor(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xtx = x.T @ x
    return np.linalg.inv(np.linalg.cholesky(xtx)).T, np.linalg.solve(xtx, x.T)


def prepare_multi(data: ModelData) -> MultiStatic:
    from .state import Patterns

    model = data.model
    p1 = data.y1.shape[1]
    classes = data.classes
    statics = []
    n_steps: dict[str, int] = {}
    cat1 = data.categorical1
    con1 = Constraint.build(p1, [(list(c.cols), _fixed_block(c)) for c in cat1])
    for ci, cd in enumerate(classes):
        below = tuple(b for b in cd.parent)                       # nested in it
        above = tuple(a for a, other in enumerate(classes) if ci in other.parent)
        free = {"a": (0, p1)}
        at = p1
        for b in below:
            pb = classes[b].y.shape[1]
            free[b] = (at, at + pb)
            at += pb
        r = at
        p = cd.y.shape[1]
        cat = tuple(c for c in cd.codecs if c.kind != "continuous")
        con = Constraint.build(r + p, [([r + k for k in c.cols], _fixed_block(c)) for c in cat])
        prior = (np.eye(r + p), float(r + p))
        blk = np.zeros(r, np.int64)
        counts = np.zeros((cd.n_units, 1 + len(below)))
        if cd.unit is not None:
            counts[:, 0] = np.bincount(cd.unit, minlength=cd.n_units)
        for j, b in enumerate(below):
            s0, s1 = free[b]
            blk[s0:s1] = j + 1
            counts[:, j + 1] = np.bincount(cd.parent[b], minlength=cd.n_units)
        ww = None
        if cd.unit is None:   # multiple membership: W (rows × units) and W'W
            n, m = cd.ids.shape
            rows = np.repeat(np.arange(n), m)
            keep = cd.ids.ravel() >= 0
            W = sparse.csr_matrix((cd.weights.ravel()[keep], (rows[keep], cd.ids.ravel()[keep])),
                                  shape=(n, cd.n_units))
            ww = (W.T @ W).tocsc()
        f, pinv = _factor(cd.x)
        statics.append(ClassStatic(
            index=ci, cd=cd, below=below, above=above, free=free, r=r, p=p, con=con, prior=prior,
            blk=blk, counts=counts, xtx_factor=f, x_pinv=pinv,
            patterns=Patterns.of(cd.miss), cat=cat, ww=ww))
        n_steps[f"omega{ci}"] = 0 if con is None else con.n_free
        n_steps[f"cuts{ci}"] = sum(c.n_categories - 2 for c in cat if c.kind == "ordinal")
    n_steps = {"omega1": 0 if con1 is None else con1.n_free,
               "cuts1": sum(c.n_categories - 2 for c in cat1 if c.kind == "ordinal"), **n_steps}
    bounds = np.cumsum([0, *n_steps.values()])
    step_slices = {k: slice(int(bounds[i]), int(bounds[i + 1])) for i, k in enumerate(n_steps)}
    xtx1 = data.x1.T @ data.x1
    return MultiStatic(
        data=data, p1=p1, classes=tuple(statics), xtx1_inv=np.linalg.inv(xtx1),
        xtx1_factor=np.linalg.inv(np.linalg.cholesky(xtx1)).T,
        prior1=model.prior_l1.resolve(p1, "level-1") if p1 else (np.zeros((0, 0)), 0.0),
        con1=con1, patterns1=Patterns.of(data.miss1), cat1=cat1, step_slices=step_slices,
        free1=free_lower(p1, con1), free_c=tuple(free_lower(c.dim, c.con) for c in statics),
    )


# ------------------------------------------------------------------------------------------
# Means and residuals
# ------------------------------------------------------------------------------------------
def _add_effects(out: np.ndarray, cd, A: np.ndarray, sign: float) -> None:
    A = np.ascontiguousarray(A)
    if cd.unit is not None:
        ck.add_unit_effects(out, cd.unit, A, sign)
    else:
        ck.add_membership_effects(out, cd.ids, cd.weights, A, sign)


def level1_mean(st: MultiStatic, b1: np.ndarray, us: tuple) -> np.ndarray:
    """μ1 = X1 B1 + Σ_c (membership-weighted) a^(c)."""
    out = np.empty((st.data.n_rows, st.p1))
    ck.fixed_part(st.data.x1, np.ascontiguousarray(b1), out)
    for cs, u in zip(st.classes, us):
        if st.p1:
            _add_effects(out, cs.cd, u[:, :st.p1], 1.0)
    return out


def _nesting_offsets(st: MultiStatic, ci: int, us: tuple) -> np.ndarray:
    """Σ over the classifications nesting c of their effects on c's variables (K_c × p_c)."""
    cs = st.classes[ci]
    out = np.zeros((cs.cd.n_units, cs.p))
    for a in cs.above:
        s0, s1 = st.classes[a].free[ci]
        out += us[a][st.classes[a].cd.parent[ci], s0:s1]
    return out


def _own_residuals(st: MultiStatic, ci: int, ys, bs, us) -> np.ndarray:
    """d^(c) = y^(c) − X^(c) B^(c) − nesting offsets."""
    cs = st.classes[ci]
    return ys[ci] - cs.cd.x @ bs[ci] - _nesting_offsets(st, ci, us)


def _given_free(omega: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """K (p × r) and chol(S) of the own part d given the free part f under Ω^(c)."""
    dim = omega.shape[0]
    miss = np.zeros((1, dim), bool)
    miss[0, r:] = True
    K, C = conditionals(omega[None], miss)
    return K[0, 0, r:, :r], C[0, 0, r:, r:]


def _free_given_own(omega: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """M (r × p) and R = Ω_ff − Ω_fd Ω_dd⁻¹ Ω_df: the free part's prior given the own part."""
    if omega.shape[0] == r:
        return np.zeros((r, 0)), omega
    dim = omega.shape[0]
    miss = np.zeros((1, dim), bool)
    miss[0, :r] = True
    M, C = conditionals(omega[None], miss)
    Cf = C[0, 0, :r, :r]
    return M[0, 0, :r, r:], Cf @ Cf.T


def class_moments(st: MultiStatic, ci: int, s_b, ys, us, omegas) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of classification c's own variables given everything else."""
    cs = st.classes[ci]
    K, C = _given_free(omegas[ci], cs.r)
    mean = cs.cd.x @ s_b + _nesting_offsets(st, ci, us) + (us[ci] @ K.T if cs.r else 0.0)
    return np.ascontiguousarray(mean), C @ C.T


# ------------------------------------------------------------------------------------------
# Random effects of one classification
# ------------------------------------------------------------------------------------------
def draw_effects(rng, st: MultiStatic, ci: int, e1: np.ndarray, omega1_inv: np.ndarray, ys, bs,
                 us, omegas) -> np.ndarray:
    """All units' free effects of classification c given the rest (``e1`` = y1 − μ1, μ1 with
    the current effects of c included). Returns the new (K × r) effects."""
    cs = st.classes[ci]
    cd = cs.cd
    K_u, r, p1 = cd.n_units, cs.r, st.p1
    old = us[ci]
    M, R = _free_given_own(omegas[ci], r)
    Rinv = np.linalg.inv(R)
    Rinv = 0.5 * (Rinv + Rinv.T)
    d = _own_residuals(st, ci, ys, bs, us)
    h = (d @ M.T) @ Rinv if cs.p else np.zeros((K_u, r))
    Q = np.zeros((r, r))
    if p1:
        # level-1 rows: y1_i − μ1_i + (its effect of c) ~ N(effect of c, Ω1)
        if cd.unit is not None:
            sums = ck.unit_sums(e1, cd.unit, K_u) + cs.counts[:, :1] * old[:, :p1]
        else:
            sums = ck.membership_sums(e1, cd.ids, cd.weights, K_u) + cs.ww @ old[:, :p1]
        h[:, :p1] += sums @ omega1_inv
        Q[:p1, :p1] = omega1_inv
    for j, b in enumerate(cs.below):
        # variables of a nested classification b: d^(b) − K_b f^(b) + e^(c) ~ N(e^(c), S_b)
        cb = st.classes[b]
        s0, s1 = cs.free[b]
        Kb, Cb = _given_free(omegas[b], cb.r)
        rho = _own_residuals(st, b, ys, bs, us) - (us[b] @ Kb.T if cb.r else 0.0)
        rho = rho + old[cd.parent[b], s0:s1]
        Sinv = np.linalg.inv(Cb @ Cb.T)
        h[:, s0:s1] += ck.unit_sums(np.ascontiguousarray(rho), cd.parent[b], K_u) @ Sinv
        Q[s0:s1, s0:s1] = Sinv
    if cd.unit is None:
        return draw_membership(rng, cs, Rinv, omega1_inv, h)
    new, ok = ck.draw_units(Rinv, Q, cs.blk, cs.counts, np.ascontiguousarray(h),
                            rng.standard_normal((K_u, r)))
    if not ok:
        raise np.linalg.LinAlgError(f"precision of the {cd.name!r} effects is not positive definite")
    return new


def draw_membership(rng, cs: ClassStatic, Rinv: np.ndarray, omega1_inv: np.ndarray,
                    h: np.ndarray) -> np.ndarray:
    """Multiple membership: the units share rows, so their effects are drawn jointly from
    N(P⁻¹h, P⁻¹) with P = I ⊗ R⁻¹ + W'W ⊗ Ω1⁻¹ (units × level-1 variables).

    With ``R⁻¹ = L L'`` and ``L⁻¹ Ω1⁻¹ L⁻ᵀ = V diag(γ) V'``, ``T = L⁻ᵀ V`` turns P into
    independent sparse systems ``I + γ_m W'W``, one per m (simultaneous diagonalisation); each is
    factorised (SuperLU, symmetric positive definite, no pivoting needed) and sampled by
    perturbation: ``x = (I + γW'W)⁻¹ (h̃ + η + √γ (W'W)^{1/2}ε)`` has the right law with η, ε
    standard normal, and ``(W'W)^{1/2} ε`` has the law of ``W' ε_rows``, so a draw needs rows'
    normals, not a square root (Papandreou & Yuille 2010).
    """
    cd = cs.cd
    K_u, r = h.shape
    L = np.linalg.cholesky(Rinv)
    Li = np.linalg.inv(L)
    gam, V = np.linalg.eigh(Li @ omega1_inv @ Li.T)
    T = Li.T @ V                              # T' R⁻¹ T = I, T' Ω1⁻¹ T = diag(γ)
    ht = h @ T                                # the linear term in the new coordinates
    n = cd.ids.shape[0]
    eps = rng.standard_normal((n, r))
    Weps = ck.membership_sums(eps, cd.ids, cd.weights, K_u)
    x = np.empty((K_u, r))
    eye = sparse.identity(K_u, format="csc")
    for m in range(r):
        g = max(float(gam[m]), 0.0)
        lu = splu((eye + g * cs.ww).tocsc(), permc_spec="MMD_AT_PLUS_A",
                  options={"SymmetricMode": True}, diag_pivot_thresh=0.0)
        x[:, m] = lu.solve(ht[:, m] + rng.standard_normal(K_u) + np.sqrt(g) * Weps[:, m])
    return x @ T.T


def shift(rng, st: MultiStatic, ci: int, b1, bs, us, ys, omegas):
    """The shift move of classification c (module notes, step 4): f_k → f_k − δ for every unit,
    the intercepts of the variables they explain → + δ; δ ~ N(mean_k(f_k − M d_k), R/K)."""
    cs = st.classes[ci]
    if not cs.r:
        return b1, bs, us
    M, R = _free_given_own(omegas[ci], cs.r)
    f = us[ci]
    d = _own_residuals(st, ci, ys, bs, us) if cs.p else None
    centre = (f - d @ M.T).mean(axis=0) if cs.p else f.mean(axis=0)
    delta = centre + np.linalg.cholesky(R / f.shape[0]) @ rng.standard_normal(cs.r)
    us = list(us)
    us[ci] = f - delta
    bs = list(bs)
    if st.p1:
        b1 = b1.copy()
        b1[0] += delta[:st.p1]
    for b in cs.below:
        s0, s1 = cs.free[b]
        bb = bs[b].copy()
        bb[0] += delta[s0:s1]
        bs[b] = bb
    return b1, tuple(bs), tuple(us)


# ------------------------------------------------------------------------------------------
# Starting values
# ------------------------------------------------------------------------------------------
def _constrain(omega: np.ndarray, con: Constraint | None) -> np.ndarray:
    from .state import _constrain_start

    return _constrain_start(omega, con)


def initial_multi(st: MultiStatic, rng: np.random.Generator) -> MultiState:
    """Hot-deck fills, least-squares fixed effects, zero random effects, moment covariances."""
    from .state import _fill_categorical, _hot_deck, _initial_cuts

    data = st.data
    cuts1 = tuple(_initial_cuts(c) for c in st.cat1 if c.kind == "ordinal")
    y1 = _fill_categorical(rng, _hot_deck(rng, data.y1, data.miss1), st.cat1, cuts1)
    b1 = st.xtx1_inv @ (data.x1.T @ y1)
    resid = y1 - data.x1 @ b1
    ys, bs, us, omegas, cuts = [], [], [], [], []
    for cs in st.classes:
        cd = cs.cd
        cc = tuple(_initial_cuts(c) for c in cs.cat if c.kind == "ordinal")
        y = _fill_categorical(rng, _hot_deck(rng, cd.y, cd.miss), cs.cat, cc)
        b = cs.x_pinv @ y
        ys.append(y)
        bs.append(b)
        cuts.append(cc)
        us.append(np.zeros((cd.n_units, cs.r)))
        # the variance of the units' mean level-1 residuals: a moment start of the a-part
        if cd.unit is not None and st.p1:
            means = ck.unit_sums(resid, cd.unit, cd.n_units) / np.maximum(cs.counts[:, :1], 1)
            a_var = means.var(axis=0)
        else:
            a_var = np.full(st.p1, 0.1) * resid.var(axis=0) if st.p1 else np.zeros(0)
        e_var = np.concatenate([0.1 * np.ones(st.classes[b].p) for b in cs.below]) if cs.below else np.zeros(0)
        d_var = (y - cd.x @ b).var(axis=0) if cs.p else np.zeros(0)
        omega = np.diag(np.concatenate([a_var, e_var, d_var]) + 1e-3)
        omegas.append(_constrain(omega, cs.con))
    if st.p1:
        omega1 = resid.T @ resid / max(data.n_rows - 1, 1)
        omega1 = omega1 + 1e-6 * np.trace(omega1) / st.p1 * np.eye(st.p1)
    else:
        omega1 = np.zeros((0, 0))
    omega1 = _constrain(omega1, st.con1)
    n_steps = max(s.stop for s in st.step_slices.values())
    steps = np.full(n_steps, 0.1)
    for key, sl in st.step_slices.items():
        if key.startswith("cuts"):
            steps[sl] = 0.05
    return MultiState(y1=y1, b1=b1, omega1=omega1, cuts1=cuts1, ys=tuple(ys), bs=tuple(bs),
                      us=tuple(us), omegas=tuple(omegas), cuts=tuple(cuts), steps=steps)


# ------------------------------------------------------------------------------------------
# One sweep
# ------------------------------------------------------------------------------------------
def _adapt(steps, sl, acc, adapt_at):
    if adapt_at is not None and acc.size:
        from .sweep import _adapt as adapt

        steps[sl] = adapt(steps[sl], acc, adapt_at)


def _draw_fixed(rng, st: MultiStatic, e1: np.ndarray, b1: np.ndarray, omega1: np.ndarray) -> np.ndarray:
    """B1 | rest: vec(B1) ~ N(vec(B1 + (X'X)⁻¹X'(y1 − μ1)), Ω1 ⊗ (X'X)⁻¹) (flat prior)."""
    mean = b1 + st.xtx1_inv @ (st.data.x1.T @ e1)
    z = rng.standard_normal(b1.shape)
    return mean + st.xtx1_factor @ z @ np.linalg.cholesky(omega1).T


def _draw_class_fixed(rng, st: MultiStatic, ci: int, ys, bs, us, omegas) -> np.ndarray:
    """B^(c) | rest: y^(c) − offsets − f K' = X B^(c) + N(0, S) rows."""
    cs = st.classes[ci]
    K, C = _given_free(omegas[ci], cs.r)
    target = ys[ci] - _nesting_offsets(st, ci, us) - (us[ci] @ K.T if cs.r else 0.0)
    z = rng.standard_normal((cs.x_pinv.shape[0], cs.p))
    return cs.x_pinv @ target + cs.xtx_factor @ z @ C.T


def sweep_multi(rng: np.random.Generator, st: MultiStatic, s: MultiState,
                adapt_at: int | None = None) -> MultiState:
    """One sweep (module notes); y1 and every ys[c] are updated in place."""
    data = st.data
    y1, b1, omega1, cuts1, ys, bs, us, omegas, cuts, steps = s
    steps = steps.copy()
    sl = st.step_slices
    ys, bs, us, omegas, cuts = list(ys), list(bs), list(us), list(omegas), list(cuts)
    if st.p1:
        omega1_inv = np.linalg.inv(omega1)
        omega1_inv = 0.5 * (omega1_inv + omega1_inv.T)
        mu1 = level1_mean(st, b1, us)
        if st.cat1:
            y1, cuts1, acc = update_latents(rng, y1, mu1, omega1_inv, st.cat1, cuts1, steps[sl["cuts1"]])
            _adapt(steps, sl["cuts1"], acc, adapt_at)
    for ci, cs in enumerate(st.classes):
        if cs.cat:
            mean, cov = class_moments(st, ci, bs[ci], ys, us, omegas)
            ys[ci], cuts[ci], acc = update_latents(rng, ys[ci], mean, np.linalg.inv(cov), cs.cat, cuts[ci],
                                                   steps[sl[f"cuts{ci}"]])
            _adapt(steps, sl[f"cuts{ci}"], acc, adapt_at)
    if st.p1:
        b1 = _draw_fixed(rng, st, y1 - mu1, b1, omega1)
    for ci, cs in enumerate(st.classes):
        if cs.p:
            bs[ci] = _draw_class_fixed(rng, st, ci, ys, bs, us, omegas)
    for ci, cs in enumerate(st.classes):
        if not cs.r:
            continue
        mu1 = level1_mean(st, b1, us) if st.p1 else None
        us[ci] = draw_effects(rng, st, ci, (y1 - mu1) if st.p1 else None,
                              omega1_inv if st.p1 else None, ys, bs, us, omegas)
        b1, bs_t, us_t = shift(rng, st, ci, b1, bs, us, ys, omegas)
        bs, us = list(bs_t), list(us_t)
    for ci, cs in enumerate(st.classes):
        d = _own_residuals(st, ci, ys, bs, us) if cs.p else np.zeros((cs.cd.n_units, 0))
        u = np.concatenate([us[ci], d], axis=1)
        scale, df = cs.prior
        omegas[ci], acc = draw_covariance(rng, df + u.shape[0], scale + u.T @ u, cs.con, omegas[ci],
                                          steps[sl[f"omega{ci}"]])
        _adapt(steps, sl[f"omega{ci}"], acc, adapt_at)
    if st.p1:
        mu1 = level1_mean(st, b1, us)
        S1 = residual_crossprod(y1, mu1, np.zeros(data.n_rows, np.int64), 1)[0]
        scale1, df1 = st.prior1
        omega1, acc = draw_covariance(rng, df1 + data.n_rows, scale1 + S1, st.con1, omega1, steps[sl["omega1"]])
        _adapt(steps, sl["omega1"], acc, adapt_at)
        if st.patterns1.n_patterns:
            y1 = draw_missing(rng, y1, mu1, omega1, st.patterns1)
    for ci, cs in enumerate(st.classes):
        if cs.patterns.n_patterns:
            mean, cov = class_moments(st, ci, bs[ci], ys, us, omegas)
            ys[ci] = draw_missing(rng, ys[ci], mean, cov, cs.patterns)
    return MultiState(y1, b1, omega1, cuts1, tuple(ys), tuple(bs), tuple(us), tuple(omegas),
                      tuple(cuts), steps)


# ------------------------------------------------------------------------------------------
# Monitored parameters
# ------------------------------------------------------------------------------------------
def _free_names(data: ModelData, ci: int) -> list[str]:
    """Names of classification c's effect coordinates: level-1 variables, then the variables of
    the classifications nested in it, then its own."""
    cd = data.classes[ci]
    names = list(data.y1_names)
    for b in cd.parent:
        names += list(data.classes[b].y_names)
    return names + list(cd.y_names)


def multi_trace_names(data: ModelData) -> list[str]:
    st_like = prepare_names(data)
    names = [f"beta1[{v}:{x}]" for v in data.y1_names for x in data.x1_names]
    for cd in data.classes:
        names += [f"beta[{cd.name}][{v}:{x}]" for v in cd.y_names for x in cd.x_names]
    (i1, j1), free_c = st_like
    names += [f"omega1[{data.y1_names[a]},{data.y1_names[b]}]" for a, b in zip(i1, j1)]
    for ci, cd in enumerate(data.classes):
        fn = _free_names(data, ci)
        i, j = free_c[ci]
        names += [f"omega[{cd.name}][{fn[a]},{fn[b]}]" for a, b in zip(i, j)]
    for c in data.categorical1:
        if c.kind == "ordinal":
            names += [f"cut[{c.name}:{k}]" for k in range(2, c.n_categories)]
    for cd in data.classes:
        for c in cd.codecs:
            if c.kind == "ordinal":
                names += [f"cut[{c.name}:{k}]" for k in range(2, c.n_categories)]
    return names


def prepare_names(data: ModelData):
    """Free lower-triangle positions of Ω1 and each Ω^(c) (without the sweep's statistics)."""
    p1 = data.y1.shape[1]
    con1 = Constraint.build(p1, [(list(c.cols), _fixed_block(c)) for c in data.categorical1])
    free_c = []
    for ci, cd in enumerate(data.classes):
        r = p1 + sum(data.classes[b].y.shape[1] for b in cd.parent)
        cat = [c for c in cd.codecs if c.kind != "continuous"]
        con = Constraint.build(r + cd.y.shape[1], [([r + k for k in c.cols], _fixed_block(c)) for c in cat])
        free_c.append(free_lower(r + cd.y.shape[1], con))
    return free_lower(p1, con1), free_c


def multi_trace_vector(st: MultiStatic, s: MultiState) -> np.ndarray:
    i1, j1 = st.free1
    parts = [s.b1.T.ravel(), *(b.T.ravel() for b in s.bs), s.omega1[i1, j1]]
    for (i, j), om in zip(st.free_c, s.omegas):
        parts.append(om[i, j])
    parts += [c[2:-1] for c in s.cuts1]
    for cc in s.cuts:
        parts += [c[2:-1] for c in cc]
    return np.concatenate(parts)
