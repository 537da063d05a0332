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
B's; inverse-Wishart priors (scale I, df = dimension) on Ω1 and every Ω^(c) (on the
standardised scale of ``mlimpute.scaling``).

One sweep:

1. latents of the observed categorical cells, at level 1 and at each classification;
   then the collapsed block of each rare category's level-1 latent column (``collapsed``; its
   effects at every classification of single membership, fixed effects, scales and Ω1 row with
   its latents integrated out; not with variance functions), and of each rare category's
   latent column of a classification's own variables (its B^(c) column and Ω^(c) row, the
   units as the rows);
2. B1 | rest and each B^(c) | rest (exact, given the effects);
3. for each classification, every unit's free effects at once given the rest: batched
   ``(K, r, r)`` exact draws (single membership), or a sparse exact draw for multiple
   membership (the units share rows; see ``draw_membership``);
4. a *shift* move for each classification: every unit's free effects move by −δ and the
   intercepts they compete with by +δ, δ from its exact conditional (the likelihood does not
   change along that line: weights sum to 1), removing the see-saw between random-effect means
   and intercepts that a scan of B | u, u | B suffers;
5. the scale moves of each classification's own categorical latents (the nesting
   classifications' effects on them moving along; ``expansion``), then Ω^(c) | u^(c)
   (inverse-Wishart, restricted where the classification's own categorical variables fix
   blocks, as ``covariance``); the scale moves of the level-1 categorical latents,
   every classification's effects on them moving with them (``expansion``; not with variance
   functions); Ω1 | residuals;
6. missing cells at every level from their conditional normal.

With variance functions, γ and the log-variance effects come between 4 and 5, and Ω1's draw
is followed by the shift move of the log-variance effects against s².

Variance functions (``Variable(variance="~ sex + (1 | school)")``): the residual of a variable
v that has one is heteroscedastic *given the other level-1 variables* (its lead: those without
a function, then the earlier ones with): ``e_v = b_v'e_lead + √d_iv η``, ``η ~ N(0, s_v²)``,
``log d_iv = w_i'γ_v + v^(c)_k``, so the function scales what the other variables leave of v
and Ω1 is their covariance when every d = 1 (section "Variance functions").
``v^(c)`` is a random effect of classification c, part of u^(c) and so correlated with its
other effects (Leckie et al. 2014). Every level-1 step works with each row's precision
``W_i = A0 + Σ_j g_j g_j' / d_ij`` (``_vf_kernels``); Ω1 is drawn in its (Ω1[O, O], b, s²)
parts, each conjugate; γ (flat prior) and the units' v are drawn by random-walk Metropolis–Hastings (steps
tuned in burn-in only), the v of all units of a classification at once (they are independent
given the rest), the effects (a, e) given v. When a function's covariates have few values,
rows with the same values and unit share their d (``VarianceCells``): its moves then take
their statistics from one pass of per-cell moments and cost O(cells), and the rows' scales are
written once per sweep; B1's pass also collects what the first classification's effects need
(``_vf_kernels.vf_unit_finish``). Scaling the whole residual (``D^½Ω1D^½``) instead
would tie v's variance function to its covariances with the other variables: it biased γ by
−6 % (coverage 79 %) at the simulation's design, where v is correlated with the others.

Every step is an exact conditional draw, an exact draw along a line, or Metropolis–Hastings
leaving its conditional invariant (restricted covariance blocks, variance functions), so the
scan keeps the joint posterior invariant. Level-1 costs O(N·p1·(f1 + C)) per sweep (with
variance functions O(N·p1·(p1 + m·f1²)) more), never O(N·units).

References
----------
Leckie, G., French, R., Charlton, C., & Browne, W. (2014). Modeling heterogeneous variance-
covariance components in two-level models. Journal of Educational and Behavioral Statistics,
39(5), 307-332.
Browne, W. J., Goldstein, H., & Rasbash, J. (2001). Multiple membership multiple classification
(MMMC) models. Statistical Modelling, 1(2), 103-124.
Goldstein, H. (2011). Multilevel Statistical Models (4th ed.), chapters 13-14. Wiley.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import splu

from ..design import ColumnCodec, ModelData
from ..priors import class_coordinate_names, class_coordinates, class_prior
from ..scaling import TraceMap, prior_scale
from . import _class_kernels as ck
from . import _vf_kernels as vfk
from . import collapsed, expansion
from ._kernels import residual_crossprod
from .adapt import adapt_steps
from .collapsed import rare_columns
from .covariance import Constraint, draw_covariance, free_lower
from .latent import update_latents
from .linalg import inv_spd
from .outcome import outcome_trace, outcome_trace_names
from .outcome_multi import (LEVEL1, GeneralOutcomeStatic, draw_general_cells, draw_general_parameters,
                            general_effective_codes, held_units, initial_general_outcome, missing_left,
                            prepare_general_outcome)
from .missing import conditionals, draw_missing
from .state import (Patterns, _constrain_start, _fill_categorical, _hot_deck, _initial_cuts, effect_mask,
                    expanded_columns, nominal_blocks)

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
    gammas: tuple = ()           # variance functions' coefficients, one array per variable
    vs: tuple = ()               # each classification's log-variance effects (units × nv)
    rs: np.ndarray | None = None  # rows' d_iv^-½ (kept in step with gammas and vs; None: no functions)
    outcome: object = None       # the substantive model's unknowns (``outcome_multi``)


@dataclass(frozen=True, eq=False)
class VarStatic:
    """A variance function in the sampler: y1 column, design, and where its random effect is
    (classification index and coordinate among that classification's v's)."""

    col: int
    w: np.ndarray
    re: int | None
    vpos: int
    wgroups: tuple = ()          # per covariate: each row's value index, when it has few values
    wvals: tuple = ()            # and those values (None: a continuous covariate, row by row)
    cells: object = None         # VarianceCells, when the rows fall into few cells of equal d
    moves: np.ndarray = None     # (moves × covariates): the γ increment of each move's unit step;
                                 # ``w`` holds each move's direction in the rows (``factor_moves``)


@dataclass(frozen=True, eq=False)
class VarianceCells:
    """Rows with the same value of every covariate of a variance function and the same unit of
    its random effect share their d: each sweep's statistics of the function's moves and of Ω1
    are sums over these cells (``_vf_kernels.cell_moments``), so the moves cost O(cells) and the
    rows' scales are written once per sweep."""

    of_row: np.ndarray           # each row's cell
    count: np.ndarray            # rows per cell (float)
    first: np.ndarray            # a row of each cell
    groups: np.ndarray           # (covariates × cells): each cell's value index
    unit: np.ndarray             # each cell's unit (empty: no random effect)
    vals: np.ndarray             # (covariates × most values): each covariate's values, padded
    nvals: np.ndarray            # and how many

    @classmethod
    def build(cls, groups: list, unit: np.ndarray | None, n: int, vals: list | None = None) -> VarianceCells | None:
        """None when a covariate is continuous or the cells are not few (more than N / 4);
        ``vals``: each covariate's values (those its group indices index)."""
        if any(g is None for g in groups):
            return None
        key = np.zeros(n, np.int64)
        for col in [*groups, *([] if unit is None else [unit])]:
            _, key = np.unique(key * (int(col.max()) + 1) + col, return_inverse=True)
        C = int(key.max()) + 1 if n else 0
        if C > n // 4:
            return None
        first = np.empty(C, np.int64)
        first[key[::-1]] = np.arange(n)[::-1]
        vals = [np.unique(g).astype(float) for g in groups] if vals is None else vals
        table = np.zeros((len(groups), max([v.size for v in vals], default=0)))
        for j, v in enumerate(vals):
            table[j, :v.size] = v
        return cls(of_row=key.astype(np.int64), count=np.bincount(key, minlength=C).astype(float),
                   first=first, groups=np.array([g[first] for g in groups], np.int64).reshape(len(groups), C),
                   unit=np.zeros(0, np.int64) if unit is None else unit[first].astype(np.int64),
                   vals=table, nvals=np.array([v.size for v in vals], np.int64))


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
    nv: int                      # log-variance effects of variance functions (after the free part)
    con: Constraint | None
    prior: tuple[np.ndarray, float]
    blk: np.ndarray
    counts: np.ndarray
    xtx_factor: np.ndarray       # F with F F' = (X'X)⁻¹ of its own variables' design
    x_pinv: np.ndarray
    patterns: object
    cat: tuple
    ww: object = None            # multiple membership: W'W (sparse, units × units)
    fixed_prior: np.ndarray | None = None   # prior precisions of vec(B^(c)) (categorical_prior_sd)
    expand: tuple = ()           # its binary/ordinal variables: ((column, thresholds index or None), ...)
    nominal: tuple = ()          # its nominal variables' latent columns
    moves_effects: tuple = ()    # (classification nesting it, masks: moved variables × that one's dim)
    rare: tuple = ()             # its latent columns of rare categories (``collapsed.Column``)

    @property
    def dim(self) -> int:
        return self.r + self.nv + self.p


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
    vf: tuple = ()                # VarStatic of each variance function
    vf_cols: frozenset = frozenset()  # y1 columns with a variance function
    fixed_prior1: np.ndarray | None = None   # prior precisions of vec(B1) (categorical_prior_sd)
    xtx1: np.ndarray | None = None
    vf_vcols: np.ndarray | None = None  # y1 columns with a variance function, in order
    vf_other: np.ndarray | None = None  # the others (O)
    vf_leads: tuple = ()          # each function's lead: O and the earlier functions' columns
    vf_grids: tuple = ()          # np.ix_ of Ω1's O block, then of each lead (see vf_layout)
    vf_first: tuple | None = None  # (rows, Σ x1) per unit of classification 0 when its effects'
                                   # statistics come from B1's pass (``_vf_kernels.vf_unit_finish``)
    con1_other: Constraint | None = None   # con1 on Ω1[O, O]
    trace_map: tuple | None = None   # (offset, factor): the monitored parameters on the data's scale
    expand1: tuple = ((), ())     # binary/ordinal level-1 variables: ((column, thresholds index or
    #                               None), ...) and per classification the masks of their effects
    nominal1: tuple = ((), ())    # nominal level-1 variables: (latent columns, ...) and the same masks
    #                               (per classification: variables × coordinates)
    moves_masks: tuple = ()       # per classification, both masks stacked (``expansion.scale_moves``)
    rare1: tuple = ()             # level-1 latent columns of rare categories (``collapsed.Column``)
    outcome: GeneralOutcomeStatic | None = None   # the substantive model (``outcome_multi``)


def _fixed_block(codec: ColumnCodec) -> np.ndarray:
    w = len(codec.cols)
    return 0.5 * (np.eye(w) + np.ones((w, w)))


def _prior(p: int, f: int, cat, sd: float | None) -> np.ndarray | None:
    """Prior precisions of vec(B) (variable-major): 1/sd² for categorical latent columns."""
    if sd is None or not cat:
        return None
    out = np.zeros((p, f))
    for c in cat:
        out[list(c.cols)] = 1.0 / sd ** 2
    return out.ravel()


def _factor(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xtx = x.T @ x
    return np.linalg.inv(np.linalg.cholesky(xtx)).T, np.linalg.solve(xtx, x.T)


def prepare_multi(data: ModelData) -> MultiStatic:
    model = data.model
    p1 = data.y1.shape[1]
    classes = data.classes
    statics = []
    n_steps: dict[str, int] = {}
    cat1 = data.categorical1
    ost = prepare_general_outcome(data) if data.outcome is not None else None
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
        nv = sum(1 for v in data.variances if v.re == ci)
        cat = tuple(c for c in cd.codecs if c.kind != "continuous")
        con = Constraint.build(r + nv + p, [([r + nv + k for k in c.cols], _fixed_block(c)) for c in cat])
        prior = class_prior(data, ci)
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
            index=ci, cd=cd, below=below, above=above, free=free, r=r, p=p, nv=nv, con=con, prior=prior,
            blk=blk, counts=counts, xtx_factor=f, x_pinv=pinv,
            patterns=Patterns.of(missing_left(ost, ci, cd.miss)), cat=cat, ww=ww,
            fixed_prior=_prior(cd.y.shape[1], cd.x.shape[1], cat, model.categorical_prior_sd),
            rare=rare_columns(cat, p, first=r + nv, size=r + nv + p, held=held_units(ost, data, ci))))
        n_steps[f"omega_class{ci}"] = 0 if con is None else con.n_free
        n_steps[f"cuts_class{ci}"] = sum(c.n_categories - 2 for c in cat if c.kind == "ordinal")
        n_steps[f"collapsed_class{ci}"] = len(statics[-1].rare)   # each column's Ω^(c) row
    vf = []
    for k, v in enumerate(data.variances):
        vpos = sum(1 for other in data.variances[:k] if other.re == v.re)
        groups, vals = [], []
        moves, w = factor_moves(v.w, v.w_names, v.w.mean(axis=0))   # d = 1 at the covariates' means (notes above ``vf_layout``)
        for j in range(w.shape[1]):
            values, inverse = np.unique(w[:, j], return_inverse=True)
            few = values.size <= 64
            groups.append(inverse.astype(np.int32) if few else None)
            vals.append(values if few else None)
        unit = None if v.re is None else classes[v.re].unit
        cells = None if v.re is not None and unit is None else VarianceCells.build(groups, unit, data.n_rows, vals)
        vf.append(VarStatic(col=v.col, w=w, re=v.re, vpos=vpos, wgroups=tuple(groups), wvals=tuple(vals),
                            cells=cells, moves=moves))
        n_steps[f"gamma{k}"] = w.shape[1]
        n_steps[f"logvar{k}"] = int(v.re is not None)
    # the rare categories' collapsed block: not with variance functions (Ω1 is drawn in parts)
    rare1 = () if vf else rare_columns(cat1, p1, held=held_units(ost, data, LEVEL1))
    n_steps["collapsed"] = (1 + len(classes)) * len(rare1)   # per column: Ω1 row, then each scale step
    n_steps = {"omega1": 0 if con1 is None else con1.n_free,
               "cuts1": sum(c.n_categories - 2 for c in cat1 if c.kind == "ordinal"), **n_steps}
    bounds = np.cumsum([0, *n_steps.values()])
    step_slices = {k: slice(int(bounds[i]), int(bounds[i + 1])) for i, k in enumerate(n_steps)}
    xtx1 = data.x1.T @ data.x1
    vcols = np.array([v.col for v in vf], np.int64)
    other, leads, grids = vf_layout(p1, vcols)
    first = None
    if vf and p1 and classes and classes[0].unit is not None and statics[0].r:
        cd0 = classes[0]
        first = (statics[0].counts[:, 0].copy(), ck.unit_sums(np.ascontiguousarray(data.x1, dtype=float),
                                                              cd0.unit, cd0.n_units))
    at = {int(c): i for i, c in enumerate(other)}
    con1_other = Constraint.build(other.size, [([at[k] for k in c.cols], _fixed_block(c)) for c in cat1])
    statics = [_class_moves(cs, statics) for cs in statics]
    exp_cols, nom_cols = expanded_columns(cat1, 1, 0)[0], nominal_blocks(cat1, 1, 0)[0]
    expand1 = _moved(exp_cols, tuple((a,) for a, _ in exp_cols), statics, vf)
    nominal1 = _moved(nom_cols, nom_cols, statics, vf)
    return MultiStatic(
        data=data, p1=p1, classes=tuple(statics), xtx1_inv=np.linalg.inv(xtx1),
        xtx1_factor=np.linalg.inv(np.linalg.cholesky(xtx1)).T,
        prior1=_level1_prior(data) if p1 else (np.zeros((0, 0)), 0.0),
        con1=con1, patterns1=Patterns.of(missing_left(ost, LEVEL1, data.miss1)), cat1=cat1, step_slices=step_slices,
        free1=free_lower(p1, con1), free_c=tuple(free_lower(c.dim, c.con) for c in statics),
        vf=tuple(vf), vf_cols=frozenset(v.col for v in vf), xtx1=xtx1,
        vf_vcols=vcols, vf_other=other, vf_leads=leads, vf_grids=grids, vf_first=first,
        con1_other=con1_other, fixed_prior1=_prior(p1, data.x1.shape[1], cat1, model.categorical_prior_sd),
        trace_map=multi_trace_affine(data),
        expand1=expand1, nominal1=nominal1, rare1=rare1,
        moves_masks=tuple(np.vstack(pair) for pair in zip(expand1[1], nominal1[1])), outcome=ost,
    )


def _class_moves(cs: ClassStatic, statics: list) -> ClassStatic:
    """``expansion``'s moves of a classification's own categorical latents: its binary/ordinal
    and nominal variables and, for each classification nesting it, the mask of their effects
    there (coordinate: the start of its variables' block + latent column)."""
    cols, blocks = expanded_columns(cs.cat, 1, 0)[0], nominal_blocks(cs.cat, 1, 0)[0]
    if not (cols or blocks):
        return cs
    effects = []
    for a in cs.above:
        outer = statics[a]
        s0 = outer.free[cs.index][0]
        effects.append((a, np.array([effect_mask([s0 + k for k in lc], 1, outer.dim)
                                     for lc in [(c,) for c, _ in cols] + list(blocks)], np.bool_)))
    return replace(cs, expand=cols, nominal=blocks, moves_effects=tuple(effects))


def _moved(cols: tuple, latent_cols: tuple, statics: list, vf: list) -> tuple:
    """``expansion``'s moves of level-1 latents: the variables (``cols``) and, per classification,
    the mask of each variable's coordinates of its effects (the a-part: coordinate = latent
    column, ``latent_cols``). Not with variance functions (Ω1 is drawn in parts there)."""
    if vf:
        cols = latent_cols = ()
    return cols, tuple(np.array([effect_mask(lc, 1, cs.dim) for lc in latent_cols],
                                np.bool_).reshape(len(latent_cols), cs.dim) for cs in statics)


def _level1_prior(data: ModelData) -> tuple[np.ndarray, float]:
    """Ω1's prior (scale, df); a scale the user states is on the data's scale."""
    scale, df = data.model.prior_l1.resolve(data.y1.shape[1], "level-1")
    if data.scaling is not None and data.model.prior_l1.scale is not None:
        scale = prior_scale(scale, data.scaling.y1[1])
    return scale, df


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
    first = 0
    if st.p1 and st.classes and st.classes[0].cd.unit is not None:   # one pass for the first
        ck.fixed_and_units(st.data.x1, np.ascontiguousarray(b1), st.classes[0].cd.unit,
                           np.ascontiguousarray(us[0][:, :st.p1]), out, False)
        first = 1
    else:
        ck.fixed_part(st.data.x1, np.ascontiguousarray(b1), out, False)
    for cs, u in zip(st.classes[first:], us[first:]):
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


def _column_means(a: np.ndarray) -> np.ndarray:
    """a.mean(axis=0) of a tall, narrow array (a product with ones: numpy's reduction along
    the long axis of such an array costs ten times more)."""
    return np.ones(a.shape[0]) @ a / a.shape[0]


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


def _with_v(us, vs, ci: int) -> np.ndarray:
    """The free effects and log-variance effects of classification c side by side."""
    return np.concatenate([us[ci], vs[ci]], axis=1) if vs and vs[ci].shape[1] else us[ci]


def _unit_rows(st: MultiStatic, ci: int, ys, bs, us, vs) -> np.ndarray:
    """Classification c's units' rows under Ω^(c): free and log-variance effects, then the own
    variables' residuals d^(c)."""
    cs = st.classes[ci]
    d = _own_residuals(st, ci, ys, bs, us) if cs.p else np.zeros((cs.cd.n_units, 0))
    return np.concatenate([_with_v(us, vs, ci), d], axis=1)


def class_moments(st: MultiStatic, ci: int, s_b, ys, us, omegas, vs=()) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of classification c's own variables given everything else."""
    cs = st.classes[ci]
    nf = cs.r + cs.nv
    K, C = _given_free(omegas[ci], nf)
    mean = cs.cd.x @ s_b + _nesting_offsets(st, ci, us) + (_with_v(us, vs, ci) @ K.T if nf else 0.0)
    return np.ascontiguousarray(mean), C @ C.T


# ------------------------------------------------------------------------------------------
# Random effects of one classification
# ------------------------------------------------------------------------------------------
def draw_effects(rng, st: MultiStatic, ci: int, y1: np.ndarray, mu1: np.ndarray, omega1_inv: np.ndarray,
                 ys, bs, us, omegas, vs=(), vf=None, unit_stats=None) -> np.ndarray:
    """All units' free effects of classification c given the rest (μ1 with the current effects
    of c included; ``vf`` the variance functions' (A0, G, rs, vcols), ``_vf_kernels``;
    ``unit_stats``: their per-unit (Σ W_i, Σ W_i e_i) when already known). Returns the new
    (K × r) effects."""
    cs = st.classes[ci]
    cd = cs.cd
    K_u, r, p1 = cd.n_units, cs.r, st.p1
    old = us[ci]
    M, R = _free_given_own(omegas[ci], r)
    Rinv = np.linalg.inv(R)
    Rinv = 0.5 * (Rinv + Rinv.T)
    given = _given_parts(st, ci, ys, bs, us, vs)
    h = (given @ M.T) @ Rinv if given.shape[1] else np.zeros((K_u, r))
    Qk = np.zeros((K_u, r, r))
    if p1:
        # level-1 rows: y1_i − μ1_i + (its effect of c) ~ N(effect of c, Ω_i)
        e1 = y1 - mu1 if vf is None else None
        if cd.unit is None:
            sums = ck.membership_sums(e1, cd.ids, cd.weights, K_u) + cs.ww @ old[:, :p1]
            h[:, :p1] += sums @ omega1_inv
        elif vf is None:
            sums = ck.unit_sums(e1, cd.unit, K_u) + cs.counts[:, :1] * old[:, :p1]
            h[:, :p1] += sums @ omega1_inv
            Qk[:, :p1, :p1] = cs.counts[:, :1, None] * omega1_inv
        else:  # row-specific precisions: Σ_i W_i per unit
            A, hs = unit_stats if unit_stats is not None else vfk.vf_unit_precisions(y1, mu1, *vf, cd.unit, K_u)
            h[:, :p1] += hs + ck.batch_matvec(A, np.ascontiguousarray(old[:, :p1]))
            Qk[:, :p1, :p1] = A
    for j, b in enumerate(cs.below):
        # variables of a nested classification b: d^(b) − K_b f^(b) + e^(c) ~ N(e^(c), S_b)
        cb = st.classes[b]
        s0, s1 = cs.free[b]
        Kb, Cb = _given_free(omegas[b], cb.r + cb.nv)
        rho = _own_residuals(st, b, ys, bs, us) - (_with_v(us, vs, b) @ Kb.T if cb.r + cb.nv else 0.0)
        rho = rho + old[cd.parent[b], s0:s1]
        Sinv = np.linalg.inv(Cb @ Cb.T)
        h[:, s0:s1] += ck.unit_sums(np.ascontiguousarray(rho), cd.parent[b], K_u) @ Sinv
        Qk[:, s0:s1, s0:s1] = cs.counts[:, j + 1, None, None] * Sinv
    if cd.unit is None:
        return draw_membership(rng, cs, Rinv, omega1_inv, h)
    new, ok = ck.draw_units_full(Rinv, Qk, np.ascontiguousarray(h), rng.standard_normal((K_u, r)))
    if not ok:
        raise np.linalg.LinAlgError(f"precision of the {cd.name!r} effects is not positive definite")
    return new


def _given_parts(st: MultiStatic, ci: int, ys, bs, us, vs) -> np.ndarray:
    """What the free effects of c are conditioned on in Ω^(c): its log-variance effects and its
    own variables' residuals (units × (nv + p))."""
    cs = st.classes[ci]
    parts = []
    if cs.nv:
        parts.append(vs[ci])
    if cs.p:
        parts.append(_own_residuals(st, ci, ys, bs, us))
    return np.concatenate(parts, axis=1) if parts else np.zeros((cs.cd.n_units, 0))


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


def shift(rng, st: MultiStatic, ci: int, b1, bs, us, ys, omegas, vs=()):
    """The shift move of classification c (module notes, step 4): f_k → f_k − δ for every unit,
    the intercepts of the variables they explain → + δ; δ ~ N(mean_k(f_k − M g_k), R/K), g_k
    what f is conditioned on (log-variance effects, own variables' residuals)."""
    cs = st.classes[ci]
    if not cs.r:
        return b1, bs, us
    M, R = _free_given_own(omegas[ci], cs.r)
    f = us[ci]
    given = _given_parts(st, ci, ys, bs, us, vs)
    centre = _column_means(f - given @ M.T if given.shape[1] else f)
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
# Variance functions
# ------------------------------------------------------------------------------------------
# A variable v with a function has the residual e_v = b_v'e_lead + √d_iv η_v, η_v ~ N(0, s_v²),
# given its lead (the variables without functions, then the earlier ones with): the function
# scales what is left of v once the other variables are known; Ω1 is the covariance of the
# residuals of a row with every d = 1, (b_v, s_v²) the regression of v on its lead under Ω1
# (with d = 1 the model is model (6)); rows' precisions in ``_vf_kernels``. The covariates w are
# centred, log d_iv = (w_i − w̄)'γ + v_k, so d = 1, and Ω1 (its prior and what is reported), are
# at the covariates' means: with w a calendar year, d = 1 at w = 0 made a move of γ rescale every
# row by e^{2010 Δγ} (γ stalled: R-hat 2.2, posterior 0.07 for a truth of 0.6), the prior spoke of
# the variance at year 0 and held γ near 0, and s² at year 0 (e^{-201} at γ = 0.1) vanished from
# the reported Ω1 or overflowed it. Under Ω1's
# inverse-Wishart prior IW(ν, Ψ), Ω1[O, O] ~ IW(ν − m, Ψ_OO) and, independently, the k-th of the
# m functions has s² ~ IW(ν − (m − 1 − k), Ψ_v·lead) (one-dimensional: an inverse gamma) and
# b | s² ~ N(Ψ_ll⁻¹Ψ_lv, s² Ψ_ll⁻¹) (the usual partition of an inverse Wishart), so each part
# has a conjugate draw given the rows (``draw_level1_covariance``).
def factor_moves(w: np.ndarray, names: tuple[str, ...], centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The directions γ moves in: each covariate on its own, and for each factor with two or
    more treatment-coded dummies (formulaic's ``f[T.b]``, ``f[T.c]``: 0/1 columns, at most one 1
    a row) all of them together. Returns (moves × covariates) and the moves' directions in the
    rows, ``(w − w̄) · move`` (the factor's: 1 − s off its reference level, −s on it, s the share
    off it).

    The joint move shifts the reference level's variance against the others': each dummy's γ is
    a contrast with the reference, so with a rare reference (3 % of rows) they are all as
    uncertain as its variance and move together, which one-at-a-time moves do slowly (R-hat
    1.44-1.48 in 800 + 250 sweeps, against 1.00-1.06 with the common level as reference)."""
    k = w.shape[1]
    families: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        head, sep, _ = name.partition("[T.")
        if sep and ":" not in name and np.isin(w[:, j], (0.0, 1.0)).all():
            families.setdefault(head, []).append(j)
    rows = [np.eye(k)]
    cols = [w - centre]
    for members in families.values():
        off = w[:, members].sum(axis=1)
        if len(members) < 2 or off.max() > 1.0:
            continue
        move = np.zeros(k)
        move[members] = 1.0
        rows.append(move[None])
        cols.append((off - off.mean())[:, None])
    return np.vstack(rows), np.ascontiguousarray(np.hstack(cols))


def vf_layout(p1: int, vcols: np.ndarray) -> tuple[np.ndarray, tuple, tuple]:
    """The columns without a function (O), each function's lead (O and the earlier functions'
    columns) and the index grids of Ω1[O, O] and of each Ω1[lead, lead] (made once: ``np.ix_``
    costs more than the small blocks it takes)."""
    other = np.setdiff1d(np.arange(p1), vcols)
    leads = tuple(np.sort(np.concatenate([other, vcols[:k]])).astype(np.int64) for k in range(vcols.size))
    return other, leads, (np.ix_(other, other), *(np.ix_(lead, lead) for lead in leads))


def vf_params(st: MultiStatic, omega1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(bmat, s²): each function's regression on its lead (rows of bmat, zeros elsewhere) and
    its residual variance, from Ω1."""
    bmat = np.zeros((len(st.vf), st.p1))
    s2 = np.empty(len(st.vf))
    for k, v in enumerate(st.vf):
        lead = st.vf_leads[k]
        if lead.size:
            b = np.linalg.solve(omega1[st.vf_grids[k + 1]], omega1[lead, v.col])
            bmat[k, lead] = b
            s2[k] = omega1[v.col, v.col] - omega1[lead, v.col] @ b
        else:
            s2[k] = omega1[v.col, v.col]
    return bmat, s2


def vf_omega(st: MultiStatic, omega_oo: np.ndarray, bmat: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Ω1 from Ω1[O, O] and each function's (b, s²) (the inverse of ``vf_params``)."""
    om = np.zeros((st.p1, st.p1))
    om[st.vf_grids[0]] = omega_oo
    for k, v in enumerate(st.vf):
        lead = st.vf_leads[k]
        b = bmat[k, lead]
        c = om[st.vf_grids[k + 1]] @ b
        om[lead, v.col] = c
        om[v.col, lead] = c
        om[v.col, v.col] = s2[k] + b @ c
    return om


def vf_precision(st: MultiStatic, omega1: np.ndarray, bmat: np.ndarray, s2: np.ndarray) -> tuple:
    """(A0, G) of the rows' precisions W_i = A0 + Σ_j ρ_ij g_j g_j' (``_vf_kernels``)."""
    return _precision_parts(st, omega1[st.vf_grids[0]], bmat, s2)


def _precision_parts(st: MultiStatic, omega_oo: np.ndarray, bmat: np.ndarray, s2: np.ndarray) -> tuple:
    """``vf_precision`` from Ω1[O, O] (the parts Ω1 is drawn in)."""
    A0 = np.zeros((st.p1, st.p1))
    if st.vf_other.size:
        A0[st.vf_grids[0]] = inv_spd(omega_oo)
    G = -bmat / np.sqrt(s2)[:, None]
    G[np.arange(len(st.vf)), st.vf_vcols] = 1.0 / np.sqrt(s2)
    return A0, G


def _vf_tuple(st: MultiStatic, rs: np.ndarray, omega1: np.ndarray) -> tuple:
    """What the level-1 kernels take: (A0, G, rs, vcols)."""
    return (*vf_precision(st, omega1, *vf_params(st, omega1)), rs, st.vf_vcols)


def draw_level1_covariance(rng, st: MultiStatic, y1, mu1, rs, omega1, steps):
    """Ω1 | rest with variance functions (notes above): Ω1[O, O] from its (constrained)
    inverse Wishart given e_O; then each function's s² ~ IG((ν_k + N)/2, (S − a'A⁻¹a)/2) and
    b | s² ~ N(A⁻¹a, s² A⁻¹), with A, a, S the prior's blocks plus Σ_i e e'/d_iv over the lead
    and v (a weighted regression of e_v on e_lead). Returns Ω1 and the MH acceptances."""
    omega_oo, bmat, s2, acc = _draw_level1_parts(rng, st, y1, mu1, rs, omega1[st.vf_grids[0]], steps)
    return vf_omega(st, omega_oo, bmat, s2), acc


def _draw_level1_parts(rng, st: MultiStatic, y1, mu1, rs, omega_oo, steps, moments=None):
    """``draw_level1_covariance`` in Ω1's parts: (Ω1[O, O], bmat, s², acceptances);
    ``moments``: (M0, Mw) of ``vfk.vf_moments`` when already known."""
    scale1, df1 = st.prior1
    n = st.data.n_rows
    m = len(st.vf)
    M0, Mw = moments if moments is not None else vfk.vf_moments(np.ascontiguousarray(y1), mu1, rs, st.vf_vcols)
    oo = st.vf_grids[0]
    acc = np.zeros(0)
    if st.vf_other.size:
        omega_oo, acc = draw_covariance(rng, df1 - m + n, scale1[oo] + M0[oo], st.con1_other, omega_oo, steps)
    bmat = np.zeros((m, st.p1))
    s2 = np.empty(m)
    for k, v in enumerate(st.vf):
        lead, c = st.vf_leads[k], v.col
        S = scale1[c, c] + Mw[k][c, c]
        nu = df1 - (m - 1 - k)
        if lead.size:
            ll = st.vf_grids[k + 1]
            A = scale1[ll] + Mw[k][ll]
            a = scale1[lead, c] + Mw[k][lead, c]
            L = np.linalg.cholesky(A)
            bh = np.linalg.solve(A, a)
            q = S - a @ bh
        else:
            q = S
        s2[k] = 0.5 * q / rng.gamma(0.5 * (nu + n))
        if lead.size:
            bmat[k, lead] = bh + np.sqrt(s2[k]) * np.linalg.solve(L.T, rng.standard_normal(lead.size))
    return omega_oo, bmat, s2, acc


def draw_variance_functions(rng, st: MultiStatic, y1, mu1, G, rs, gammas, vs, us, ys, bs,
                            omegas, steps, adapt_at):
    """γ of every variance function and the log-variance effects of every unit, by random-walk
    Metropolis–Hastings given the level-1 residuals y1 − μ1 (``rs`` is updated in place; ``G``
    the g_j of ``_vf_kernels``).

    Moving row i's log-variance of v by Δ changes the log-likelihood by −½Δ − ½ η̃_i²/s² (e^{−Δ}
    − 1), η̃ = r_iv (e_v − b'e_lead) (the other factors of the row's density do not change). A proposal moves
    whole groups of rows by the same amount (the rows with one value of a dummy-like covariate,
    for γ; the rows of one unit, for its v), so after one pass collecting each group's count
    and Σ η̃²/s² (``eta_stats``) every proposal costs O(groups) (``mh_shared``, ``mh_units``):
    MH_REPEATS proposals per sweep at the price of about one pass. A covariate with many values
    is proposed row by row (``eta_change``). The units' v are proposed all at once and accepted
    each on its own (they are independent given the rest).

    A function whose rows fall into few cells of equal d (``VarianceCells``) takes every
    statistic from one pass of per-cell moments E_c = Σ_{i∈c} e e' (SA of a group = Σ ρ_c g'E_c g
    over its cells) and moves its cells' ρ_c; its column of ``rs`` is then left to be written
    after the shift move (``write_cells``): the third value returned maps such a function to
    (E, ρ), from which Ω1's moments follow too.
    """
    gammas, vs = list(gammas), list(vs)
    y1 = np.ascontiguousarray(y1)
    pending = {}
    for k, v in enumerate(st.vf):
        slg = st.step_slices[f"gamma{k}"]
        slv = st.step_slices[f"logvar{k}"]
        gvec = np.ascontiguousarray(G[k])
        if v.re is not None:
            ci = v.re
            mean, sd = _logvar_prior(st, ci, st.classes[ci].r + v.vpos, us, vs, ys, bs, omegas)
            start = np.ascontiguousarray(vs[ci][:, v.vpos])
        if v.cells is not None:
            cells = v.cells
            E = vfk.cell_moments(y1, mu1, cells.of_row, cells.count.size)
            rho = rs[cells.first, v.col] ** 2
            J, K = cells.groups.shape[0], 0 if v.re is None else start.size
            z = rng.standard_normal(J * MH_REPEATS + UNIT_REPEATS * K)
            logu = -rng.standard_exponential(z.size)
            totals, acc, cur, rate = ck.cell_moves(
                E @ _packed(np.outer(gvec, gvec), True), rho, cells.count, cells.groups, cells.vals,
                cells.nvals, steps[slg], z[:J * MH_REPEATS].reshape(J, MH_REPEATS),
                logu[:J * MH_REPEATS].reshape(J, MH_REPEATS), cells.unit,
                mean if K else rho[:0], sd if K else 1.0, start if K else rho[:0], float(steps[slv][0]) if K else 0.0,
                z[J * MH_REPEATS:].reshape(UNIT_REPEATS, K), logu[J * MH_REPEATS:].reshape(UNIT_REPEATS, K))
            gammas[k] = gammas[k] + totals @ v.moves
            acc /= MH_REPEATS
            pending[k] = (E, rho)
        else:
            gammas[k], acc = _gamma_moves_by_rows(rng, v, y1, mu1, gvec, rs, gammas[k], steps[slg])
            if v.re is not None:
                ci = v.re
                unit = st.classes[ci].cd.unit
                cnt, SA = vfk.eta_stats(y1, mu1, rs, gvec, v.col, unit, start.size)
                cur, rate = ck.mh_units(cnt, SA, mean, sd, start, float(steps[slv][0]),
                                        rng.standard_normal((UNIT_REPEATS, start.size)),
                                        -rng.standard_exponential((UNIT_REPEATS, start.size)))
                ck.scale_column(rs, v.col, unit, np.exp(-0.5 * (cur - start)))
        if adapt_at is not None and acc.size:
            steps[slg] = adapt_steps(steps[slg], acc, adapt_at)
        if v.re is None:
            continue
        vv = vs[v.re].copy()
        vv[:, v.vpos] = cur
        vs[v.re] = vv
        if adapt_at is not None:
            steps[slv] = adapt_steps(steps[slv], np.array([rate]), adapt_at)
    return tuple(gammas), tuple(vs), pending


def _logvar_prior(st: MultiStatic, ci: int, col: int, us, vs, ys, bs, omegas) -> tuple[np.ndarray, float]:
    """The prior of the units' log-variance effect (coordinate ``col`` of classification c)
    given the classification's other effects and residuals: with Λ = Ω^(c)⁻¹, mean
    −Σ_{l≠v} Λ_vl u_l / Λ_vv and variance 1 / Λ_vv."""
    u = _unit_rows(st, ci, ys, bs, us, vs)
    lam = inv_spd(omegas[ci])[col]
    return u[:, col] - (u @ lam) / lam[col], math.sqrt(1.0 / lam[col])


def _gamma_moves_by_rows(rng, v: VarStatic, y1, mu1, gvec, rs, gamma, steps) -> tuple[np.ndarray, np.ndarray]:
    """γ's moves of a function without cells, from passes over the rows (``eta_stats`` for a
    covariate with few values, ``eta_change`` row by row otherwise); ``rs`` moves in place.
    Returns γ and the acceptance rates."""
    g = gamma.copy()
    acc = np.zeros(v.w.shape[1])
    for j in range(acc.size):
        step = steps[j]
        if v.wgroups[j] is not None:
            c = v.wvals[j]
            cnt, SA = vfk.eta_stats(y1, mu1, rs, gvec, v.col, v.wgroups[j], c.size)
            total, n_acc = ck.mh_shared(c, cnt, SA, step, rng.standard_normal(MH_REPEATS),
                                        -rng.standard_exponential(MH_REPEATS))
            acc[j] = n_acc / MH_REPEATS
            if total:
                ck.scale_column(rs, v.col, v.wgroups[j], np.exp(-0.5 * c * total))
                g += total * v.moves[j]
        else:
            for _ in range(MH_REPEATS):
                dj = step * rng.standard_normal()
                delta = dj * v.w[:, j]
                if np.log(rng.random()) < vfk.eta_change(y1, mu1, rs, gvec, v.col, delta):
                    g += dj * v.moves[j]
                    rs[:, v.col] *= np.exp(-0.5 * delta)
                    acc[j] += 1.0 / MH_REPEATS
    return g, acc


def write_cells(st: MultiStatic, rs: np.ndarray, pending: dict) -> None:
    """Write the rows' scales of the functions whose cells moved (``draw_variance_functions``)."""
    for k, (_, rho) in pending.items():
        v = st.vf[k]
        vfk.set_cell_scales(rs, v.col, v.cells.of_row, np.sqrt(rho))


def cell_level1_moments(pending: dict, m: int):
    """Ω1's (M0, Mw) of ``vfk.vf_moments`` from every function's cell moments, or None if a
    function has no cells."""
    if len(pending) < m or not m:
        return None
    E0 = pending[0][0]
    return _unpacked(np.ones(E0.shape[0]) @ E0), np.stack([_unpacked(pending[k][1] @ pending[k][0])
                                                          for k in range(m)])


@functools.cache
def _tril(p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.tril_indices(p)`` and the weights 1 (diagonal) / 2 (off), made once per p."""
    i, j = np.tril_indices(p)
    return i, j, np.where(i == j, 1.0, 2.0)


def _packed(A: np.ndarray, weights: bool = False) -> np.ndarray:
    """The lower triangle of a symmetric A as ``vfk.cell_moments`` packs it; ``weights``: with
    the off-diagonal doubled (so that packed(A, True) · packed(M) = Σ_ab A_ab M_ab)."""
    i, j, w = _tril(A.shape[0])
    return A[i, j] * w if weights else A[i, j]


def _unpacked(v: np.ndarray) -> np.ndarray:
    """The symmetric matrix of a packed lower triangle."""
    p = (math.isqrt(8 * v.size + 1) - 1) // 2
    out = np.empty((p, p))
    i, j, _ = _tril(p)
    out[i, j] = v
    out[j, i] = v
    return out


SHIFT_REPEATS = 10
MH_REPEATS = 5     # random-walk proposals per sweep for each γ (O(groups) each)
UNIT_REPEATS = 3   # and for the units' log-variance effects (their random numbers cost most)


shift_log_ratio = ck.shift_log_ratio


def shift_logvar(rng, st: MultiStatic, bmat, s2, rs, vs, us, ys, bs, omegas, pending=None):
    """For each variance function with a random effect: v_k → v_k − δ for every unit and
    s_v² → s_v² e^δ (b_v and the rest of Ω1's parts fixed), a move along which the likelihood
    does not change (d_iv s_v² is the same). Without it the mean of the v's and the variable's
    baseline variance see-saw (ESS 28 of 1,600 draws measured).

    Random-walk Metropolis–Hastings on δ (a symmetric proposal on the group), the target being
    the priors along the line: Σ_k log N(u_k − δ e_v; 0, Ω^(c)) and the prior of s² (inverse
    gamma times that of b given s², notes above) with the move's Jacobian e^δ, which reduce to::

        δ e'Λ Σ_k u_k − ½ K δ² e'Λe − (ν_k + |lead|) δ / 2 − Q (e^{−δ} − 1) / (2 s²)

    (Λ = Ω^(c)⁻¹, u_k the unit's effects with its own variables' residuals, Q = (−b, 1)'Ψ(−b, 1)
    over lead and v, Ψ, ν Ω1's prior). Works in Ω1's parts (bmat, s²): returns the new s² and
    v's; ``rs`` moves in place, or, for the functions in ``pending`` (the cells' ρ of
    ``draw_variance_functions`` not yet written to ``rs``), their ρ.
    """
    scale1, df1 = st.prior1
    m = len(st.vf)
    s2 = s2.copy()
    vs = list(vs)
    for k, v in enumerate(st.vf):
        if v.re is None:
            continue
        ci = v.re
        cs = st.classes[ci]
        u = _unit_rows(st, ci, ys, bs, us, vs)
        lam = inv_spd(omegas[ci])
        col = cs.r + v.vpos
        K = u.shape[0]
        lead = st.vf_leads[k]
        b = bmat[k, lead]
        Q = float(b @ scale1[st.vf_grids[k + 1]] @ b - 2.0 * b @ scale1[lead, v.col] + scale1[v.col, v.col])
        shape = 0.5 * (df1 - (m - 1 - k) + lead.size)
        scale = 2.4 * math.sqrt(omegas[ci][col, col] / K)   # about the posterior SD of the v's mean
        # SHIFT_REPEATS proposals, O(1) each: repeated to move as far as a draw would
        total, s2k = ck.shift_line(float((u @ lam[col]).sum()), K * float(lam[col, col]), shape, Q, float(s2[k]),
                                   scale * rng.standard_normal(SHIFT_REPEATS), -rng.standard_exponential(SHIFT_REPEATS))
        if total:
            s2[k] = s2k
            vv = vs[ci].copy()
            vv[:, v.vpos] -= total
            vs[ci] = vv
            if pending and k in pending:
                pending[k][1][:] *= math.exp(total)
            else:
                rs[:, v.col] *= math.exp(0.5 * total)
    return s2, tuple(vs)


# ------------------------------------------------------------------------------------------
# Starting values
# ------------------------------------------------------------------------------------------
def _constrain(omega: np.ndarray, con: Constraint | None) -> np.ndarray:
    return _constrain_start(omega, con)


def initial_multi(st: MultiStatic, rng: np.random.Generator) -> MultiState:
    """Hot-deck fills, least-squares fixed effects, zero random effects, moment covariances."""
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
        omega = np.diag(np.concatenate([a_var, e_var, np.full(cs.nv, 0.1), d_var]) + 1e-3)
        omegas.append(_constrain(omega, cs.con))
    if st.p1:
        omega1 = resid.T @ resid / max(data.n_rows - 1, 1)
        omega1 = omega1 + 1e-6 * (np.trace(omega1) / st.p1 or 1.0) * np.eye(st.p1)  # (a variable seen once: 0)
    else:
        omega1 = np.zeros((0, 0))
    omega1 = _constrain(omega1, st.con1)
    n_steps = max(s.stop for s in st.step_slices.values())
    steps = np.full(n_steps, 0.1)
    for key, sl in st.step_slices.items():
        if key.startswith("cuts"):
            steps[sl] = 0.05
    for key, sl in st.step_slices.items():
        if key.startswith("logvar"):
            steps[sl] = 1.0      # (a multiple of the prior's conditional SD)
    if st.rare1:
        steps[st.step_slices["collapsed"]] = np.tile([1.0] + [0.2] * len(st.classes), len(st.rare1))
    for ci, cs in enumerate(st.classes):
        steps[st.step_slices[f"collapsed_class{ci}"]] = 1.0
    outcome = None
    if st.outcome is not None:
        outcome = initial_general_outcome(st.outcome, data, y1, ys, _thresholds(st, cuts1, cuts), rng)
    return MultiState(y1=y1, b1=b1, omega1=omega1, cuts1=cuts1, ys=tuple(ys), bs=tuple(bs),
                      us=tuple(us), omegas=tuple(omegas), cuts=tuple(cuts), steps=steps,
                      gammas=tuple(np.zeros(v.moves.shape[1]) for v in st.vf),
                      vs=tuple(np.zeros((cs.cd.n_units, cs.nv)) for cs in st.classes),
                      rs=np.ones((data.n_rows, st.p1)) if st.vf else None, outcome=outcome)


def _thresholds(st: MultiStatic, cuts1, cuts) -> dict:
    """Ordinal variable name → its thresholds."""
    out = {c.name: k for c, k in zip((c for c in st.cat1 if c.kind == "ordinal"), cuts1)}
    for cs, cc in zip(st.classes, cuts):
        out.update({c.name: k for c, k in zip((c for c in cs.cat if c.kind == "ordinal"), cc)})
    return out


# ------------------------------------------------------------------------------------------
# One sweep
# ------------------------------------------------------------------------------------------
def _adapt(steps, sl, acc, adapt_at):
    if adapt_at is not None and acc.size:
        steps[sl] = adapt_steps(steps[sl], acc, adapt_at)


def _draw_fixed(rng, st: MultiStatic, y1: np.ndarray, mu1: np.ndarray, b1: np.ndarray,
                omega1: np.ndarray, omega1_inv: np.ndarray, vf: tuple | None, normal=None) -> np.ndarray:
    """B1 | rest: vec(B1) ~ N(vec(B1 + (X'X)⁻¹X'(y1 − μ1)), Ω1 ⊗ (X'X)⁻¹) under flat priors;
    with variance functions (rows' precisions W_i differ: H = Σ_i W_i ⊗ x_i x_i') or prior
    precisions P (``categorical_prior_sd``) in precision form: N((H + P)⁻¹ (g + H b), (H + P)⁻¹)
    with g = Σ_i vec(x_i (W_i e_i)') at the current b (``normal``: (H, g) when already known)."""
    x = st.data.x1
    if vf is None and st.fixed_prior1 is None:
        mean = b1 + st.xtx1_inv @ (x.T @ (y1 - mu1))
        z = rng.standard_normal(b1.shape)
        return mean + st.xtx1_factor @ z @ np.linalg.cholesky(omega1).T
    if vf is None:
        H = np.kron(omega1_inv, st.xtx1)
        g = (omega1_inv @ (x.T @ (y1 - mu1)).T).ravel()
    else:
        H, g = normal if normal is not None else vfk.vf_normal_equations(x, y1, mu1, *vf, st.xtx1)
    return _precision_draw(rng, H, g, b1, st.fixed_prior1)


def _precision_draw(rng, H: np.ndarray, g: np.ndarray, b: np.ndarray, prior: np.ndarray | None) -> np.ndarray:
    """vec(B) ~ N((H + P)⁻¹ (g + H vec b), (H + P)⁻¹), vec variable-major (as ``b.T.ravel()``)."""
    from ._small import chol, gaussian_draw

    vb = b.T.ravel()
    rhs = g + H @ vb
    if prior is not None:
        H = H + np.diag(prior)
    L, ok = chol(np.ascontiguousarray(H))
    if not ok:
        raise np.linalg.LinAlgError("a fixed-effect precision is not positive definite")
    return gaussian_draw(L, rhs, rng.standard_normal(rhs.size)).reshape(b.shape[1], b.shape[0]).T


def _draw_class_fixed(rng, st: MultiStatic, ci: int, ys, bs, us, omegas, vs=()) -> np.ndarray:
    """B^(c) | rest: y^(c) − offsets − f K' = X B^(c) + N(0, S) rows."""
    cs = st.classes[ci]
    nf = cs.r + cs.nv
    K, C = _given_free(omegas[ci], nf)
    target = ys[ci] - _nesting_offsets(st, ci, us) - (_with_v(us, vs, ci) @ K.T if nf else 0.0)
    z = rng.standard_normal((cs.x_pinv.shape[0], cs.p))
    if cs.fixed_prior is None:
        return cs.x_pinv @ target + cs.xtx_factor @ z @ C.T
    s_inv = np.linalg.inv(C @ C.T)
    x = cs.cd.x
    H = np.kron(s_inv, x.T @ x)
    g = (s_inv @ (x.T @ (target - x @ bs[ci])).T).ravel()
    return _precision_draw(rng, H, g, bs[ci], cs.fixed_prior)


def _current_mean(st: MultiStatic, b1: np.ndarray, us: list, work: dict | None) -> np.ndarray:
    """μ1 of (B1, effects): the previous sweep's, kept current through it, when the state is the
    one it ended with (the arrays themselves: a new draw is a new array), else afresh."""
    if work is not None:
        mu1, b1_of, us_of = work.get("mu1", (None, None, ()))
        if (mu1 is not None and b1_of is b1 and len(us_of) == len(us)
                and all(a is b for a, b in zip(us_of, us))):
            return mu1
    return level1_mean(st, b1, us)


def _expand_level1(rng, st: MultiStatic, y1, mu1, S1, b1, omega1, cuts1, us, omegas):
    """The scale moves of the level-1 categorical latents (``expansion.scale_moves``), each
    classification's effects on them moving with them (y1, μ1 and S1 in place). Returns y1, B1,
    Ω1, the thresholds, S1 and the effects and covariances as lists."""
    eff = [expansion.Effects(us[ci], omegas[ci], *cs.prior, st.moves_masks[ci]) for ci, cs in enumerate(st.classes)]
    y1, b1, omega1, cuts1, S1, eff, _, _ = expansion.scale_moves(
        rng, st.expand1[0], st.nominal1[0], 0, st.prior1, st.fixed_prior1, 0, y1, mu1, S1, b1, omega1, cuts1, eff)
    return y1, b1, omega1, cuts1, S1, [e.u for e in eff], [e.omega for e in eff]


def _collapsed_level1(rng, st: MultiStatic, y1, mu1, b1, us: list, omegas: list, omega1, cuts1, ys, bs, vs,
                      steps) -> tuple:
    """``collapsed``'s block for each rare category's latent column, the general sampler's way:
    the effects and the scale step of every classification of single membership in turn (the
    others' effects, and those of multiple-membership classifications, in the offset), then the
    fixed effects and Ω1's row, then the latents. y1 and μ1 in place, us and omegas (lists) get
    new arrays; returns B1, Ω1 and the random walks' acceptance rates (``steps``: per column,
    Ω1's row then each classification's scale)."""
    data = st.data
    x, N, f = data.x1, data.n_rows, data.x1.shape[1]
    psi1, nu1 = st.prior1
    per = 1 + len(st.classes)
    acc = np.zeros(steps.size)
    ones, z0, u0, cl0 = np.ones((N, 1)), np.zeros((N, 0)), np.zeros((1, 0)), np.zeros(N, np.int64)
    single = [ci for ci, cs in enumerate(st.classes) if cs.cd.unit is not None]
    for t, col in enumerate(st.rare1):
        a, base = col.c, t * per
        cuts, codes, rows = collapsed.categories(col, y1, cuts1)
        lo, hi = collapsed._bounds(y1, col.kind, codes, col.cols, col.m, cuts)
        qc, sd, _, _ = collapsed._conditional(omega1, a)
        off = collapsed._offsets(y1, mu1, qc)
        beta = np.ascontiguousarray(b1[:, a])
        current = None

        def others(ci, U):
            """The offset of classification ci's step: all but B_a and its own effects on a."""
            return off + mu1[:, a] - x @ beta - U[st.classes[ci].cd.unit, 0]

        def put(ci, U_new, U_old):
            unit = st.classes[ci].cd.unit
            mu1[:, a] += U_new[unit, 0] - U_old[unit, 0]
            us[ci] = us[ci].copy()
            us[ci][:, a] = U_new[:, 0]

        for ci in single:    # 1. each classification's effects
            cs = st.classes[ci]
            U = np.ascontiguousarray(us[ci][:, a:a + 1])
            rest = np.delete(_unit_rows(st, ci, ys, bs, us, vs), a, axis=1)
            M, Vinv = collapsed._effects_prior(omegas[ci], a, 1, np.ascontiguousarray(rest))
            U_new, current, gb, Hb = collapsed._effects_step(
                x, ones, cs.cd.unit, rows, beta, U, others(ci, U), sd, lo, hi, M, Vinv, collapsed.H_STEP,
                rng.standard_normal((cs.cd.n_units, 1)), np.log(rng.random(cs.cd.n_units)))
            put(ci, U_new, U)
        off_all = off + mu1[:, a] - x @ beta           # 2. the fixed effects
        if current is None:
            current, gb, Hb = collapsed._fixed_terms(x, z0, cl0, rows, beta, u0, off_all, sd, lo, hi, True)
        prec = np.zeros(f) if st.fixed_prior1 is None else np.ascontiguousarray(st.fixed_prior1[a * f:(a + 1) * f])
        new, current = collapsed._fixed_step(x, z0, cl0, rows, beta, u0, off_all, sd, lo, hi, prec,
                                             collapsed.H_STEP, rng.standard_normal(f), math.log(rng.random()),
                                             current, gb, Hb)
        mu1[:, a] += x @ (new - beta)
        beta = new
        b1 = b1.copy()
        b1[:, a] = beta
        for ci in single:    # 2b. each classification's effects' scale, with its Ω's coordinate
            cs = st.classes[ci]
            U = np.ascontiguousarray(us[ci][:, a:a + 1])
            U_new, omegas[ci], current, acc[base + 1 + ci] = collapsed._scale_step(
                x, ones, cs.cd.unit, rows, beta, U, others(ci, U), sd, lo, hi, omegas[ci], cs.prior[0],
                float(cs.prior[1]), a, steps[base + 1 + ci], rng.standard_normal(collapsed.SCALE_PROPOSALS),
                np.log(rng.random(collapsed.SCALE_PROPOSALS)), current)
            put(ci, U_new, U)
        base_a = np.ascontiguousarray(mu1[:, a])          # 3. Ω1's row
        omega1, off, sd, current, acc[base] = collapsed._omega1_step(
            base_a, rows, y1, mu1, lo, hi, a, omega1, psi1, float(nu1), col.free, float(rows.size),
            steps[base], rng.standard_normal((collapsed.GAMMA_PROPOSALS, col.free.size)),
            np.log(rng.random(collapsed.GAMMA_PROPOSALS)), current, off, sd)
        collapsed._redraw(y1, a, base_a, off, sd, col.kind, codes, col.cols, col.m, cuts,
                          1.0 - rng.random(N))   # 4. the latents
    return b1, omega1, acc


def _collapsed_class(rng, st: MultiStatic, ci: int, ys: list, bs: list, us: list, omegas: list, cuts: list, vs,
                     steps) -> np.ndarray:
    """``collapsed.unit_block`` for each of classification c's rare latent columns: its units
    are the rows, their vectors (free effects, then own residuals) the coordinates under Ω^(c),
    the nesting classifications' effects part of the column's mean. ys[c] in place, bs and
    omegas get new arrays; returns the Ω^(c) steps' acceptance rates."""
    cs = st.classes[ci]
    x, f = cs.cd.x, cs.cd.x.shape[1]
    nest = _nesting_offsets(st, ci, us)
    acc = np.zeros(len(cs.rare))
    for t, col in enumerate(cs.rare):
        c = col.c
        R = _unit_rows(st, ci, ys, bs, us, vs)
        prec = collapsed.column_prior(cs.fixed_prior, c * f, f)
        beta, omegas[ci], acc[t] = collapsed.unit_block(rng, col, x, ys[ci], cuts[ci], R, nest[:, c], bs[ci][:, c],
                                                        omegas[ci], cs.prior, prec, cs.r + cs.nv + c, steps[t])
        bs[ci] = bs[ci].copy()
        bs[ci][:, c] = beta
    return acc


def _expand_class(rng, st: MultiStatic, ci: int, u, S, ys: list, bs: list, us: list, omegas: list,
                  cuts: list) -> np.ndarray:
    """The scale moves of classification c's own categorical latents (``expansion.scale_moves``
    with Ω^(c) in Ω1's place: its units' rows u = (effects, d) are the data, u updated in place),
    the effects on them of every classification nesting c moving with them. ys, bs, us, omegas
    and cuts (lists) get the new arrays; returns the new u'u."""
    cs = st.classes[ci]
    eff = [expansion.Effects(us[a], omegas[a], *st.classes[a].prior, masks) for a, masks in cs.moves_effects]
    ys[ci], bs[ci], omegas[ci], cuts[ci], S, eff, _, _ = expansion.scale_moves(
        rng, cs.expand, cs.nominal, cs.r + cs.nv, cs.prior, cs.fixed_prior, 0, ys[ci], u, S, bs[ci],
        omegas[ci], cuts[ci], eff)
    for (a, _), e in zip(cs.moves_effects, eff):
        us[a], omegas[a] = e.u, e.omega
    return S


def sweep_multi(rng: np.random.Generator, st: MultiStatic, s: MultiState,
                adapt_at: int | None = None, work: dict | None = None) -> MultiState:
    """One sweep (module notes); y1, every ys[c] and the row scales are updated in place.
    ``work``: scratch the caller keeps across sweeps (here μ1, which the sweep keeps current
    as B1 and the effects change, so that the next sweep need not recompute it)."""
    data = st.data
    y1, b1, omega1, cuts1, ys, bs, us, omegas, cuts, steps, gammas, vs, rs, _ = s
    steps = steps.copy()
    sl = st.step_slices
    ys, bs, us, omegas, cuts = list(ys), list(bs), list(us), list(omegas), list(cuts)
    vf = None   # (no level-1 variables: no variance functions either)
    if st.p1:
        omega1_inv = inv_spd(omega1)
        mu1 = _current_mean(st, b1, us, work)   # then kept current as B1 and the effects change
        if st.vf:   # the row precisions' (A0, G) of the Ω1 the previous sweep ended with, or afresh
            omega_of, parts = work.get("vf", (None, None)) if work is not None else (None, None)
            vf = (*parts, rs, st.vf_vcols) if omega_of is omega1 else _vf_tuple(st, rs, omega1)
        if st.cat1:
            codes = general_effective_codes(st.outcome, s.outcome, st.cat1, LEVEL1)
            y1, cuts1, acc = update_latents(rng, y1, mu1, omega1_inv, st.cat1, cuts1, steps[sl["cuts1"]], codes,
                                            vf=vf, prior_sd=data.model.categorical_prior_sd)
            _adapt(steps, sl["cuts1"], acc, adapt_at)
        if st.rare1 and collapsed.ENABLED:   # rare categories' columns: collapsed moves
            b1, omega1, acc = _collapsed_level1(rng, st, y1, mu1, b1, us, omegas, omega1, cuts1, ys, bs, vs,
                                                steps[sl["collapsed"]])
            omega1_inv = inv_spd(omega1)
            _adapt(steps, sl["collapsed"], acc, adapt_at)
    for ci, cs in enumerate(st.classes):
        if cs.cat:
            mean, cov = class_moments(st, ci, bs[ci], ys, us, omegas, vs)
            codes = general_effective_codes(st.outcome, s.outcome, cs.cat, ci)
            ys[ci], cuts[ci], acc = update_latents(rng, ys[ci], mean, np.linalg.inv(cov), cs.cat, cuts[ci],
                                                   steps[sl[f"cuts_class{ci}"]], codes,
                                                   prior_sd=data.model.categorical_prior_sd)
            _adapt(steps, sl[f"cuts_class{ci}"], acc, adapt_at)
        if cs.rare and collapsed.ENABLED:   # its rare categories' columns: collapsed moves
            _adapt(steps, sl[f"collapsed_class{ci}"],
                   _collapsed_class(rng, st, ci, ys, bs, us, omegas, cuts, vs, steps[sl[f"collapsed_class{ci}"]]),
                   adapt_at)
    unit_stats = dB = None
    if st.p1:
        # with variance functions and a first classification of single membership, B1's pass
        # also collects what that classification's effects need, and μ1 is brought up to date
        # after both in one pass (``_vf_kernels.vf_unit_finish``)
        normal = None
        if st.vf_first is not None:
            unit0 = st.classes[0].cd.unit
            H, g, stats = vfk.vf_normal_equations_units(data.x1, y1, mu1, *vf, st.xtx1, unit0,
                                                        st.classes[0].cd.n_units)
            normal = (H, g)
        new_b1 = _draw_fixed(rng, st, y1, mu1, b1, omega1, omega1_inv, vf, normal)
        dB = np.ascontiguousarray(new_b1 - b1)
        if normal is not None:
            unit_stats = vfk.vf_unit_finish(stats, *st.vf_first, dB, vf[0], vf[1])
        else:
            ck.fixed_part(data.x1, dB, mu1, True)
        b1 = new_b1
    for ci, cs in enumerate(st.classes):
        if cs.p:
            bs[ci] = _draw_class_fixed(rng, st, ci, ys, bs, us, omegas, vs)
    for ci, cs in enumerate(st.classes):
        if not cs.r:
            continue
        old = us[ci]
        fused = ci == 0 and unit_stats is not None
        us[ci] = draw_effects(rng, st, ci, y1, mu1 if st.p1 else None,
                              omega1_inv if st.p1 else None, ys, bs, us, omegas, vs, vf,
                              unit_stats if fused else None)
        if fused:
            ck.fixed_and_units(data.x1, dB, cs.cd.unit,
                               np.ascontiguousarray(us[ci][:, :st.p1] - old[:, :st.p1]), mu1, True)
        elif st.p1:
            _add_effects(mu1, cs.cd, us[ci][:, :st.p1] - old[:, :st.p1], 1.0)
        b1, bs_t, us_t = shift(rng, st, ci, b1, bs, us, ys, omegas, vs)   # μ1 unchanged
        bs, us = list(bs_t), list(us_t)
    pending = {}
    if st.vf:
        gammas, vs, pending = draw_variance_functions(rng, st, y1, mu1, vf[1], rs, gammas, vs, us, ys, bs,
                                                      omegas, steps, adapt_at)
        moments = cell_level1_moments(pending, len(st.vf))
        if moments is None:
            write_cells(st, rs, pending)
            pending = {}
    for ci, cs in enumerate(st.classes):
        u = _unit_rows(st, ci, ys, bs, us, vs)
        S = u.T @ u
        if expansion.ENABLED and (cs.expand or cs.nominal):   # its own latents' scales
            S = _expand_class(rng, st, ci, u, S, ys, bs, us, omegas, cuts)
        scale, df = cs.prior
        omegas[ci], acc = draw_covariance(rng, df + u.shape[0], scale + S, cs.con, omegas[ci],
                                          steps[sl[f"omega_class{ci}"]])
        _adapt(steps, sl[f"omega_class{ci}"], acc, adapt_at)
    if st.p1:
        if st.vf:
            omega_oo, bmat, s2, acc = _draw_level1_parts(rng, st, y1, mu1, rs, omega1[st.vf_grids[0]],
                                                         steps[sl["omega1"]], moments)
            _adapt(steps, sl["omega1"], acc, adapt_at)
            s2, vs = shift_logvar(rng, st, bmat, s2, rs, vs, us, ys, bs, omegas, pending)
            write_cells(st, rs, pending)
            omega1 = vf_omega(st, omega_oo, bmat, s2)
            vf = (*_precision_parts(st, omega_oo, bmat, s2), rs, st.vf_vcols)
        else:
            S1 = residual_crossprod(y1, mu1, np.zeros(data.n_rows, np.int64), 1)[0]
            if expansion.ENABLED and (st.expand1[0] or st.nominal1[0]):   # the latents' scales
                y1, b1, omega1, cuts1, S1, us, omegas = _expand_level1(rng, st, y1, mu1, S1, b1, omega1, cuts1,
                                                                       us, omegas)
            scale1, df1 = st.prior1
            omega1, acc = draw_covariance(rng, df1 + data.n_rows, scale1 + S1, st.con1, omega1, steps[sl["omega1"]])
            _adapt(steps, sl["omega1"], acc, adapt_at)
        if st.patterns1.n_patterns:
            y1 = draw_missing(rng, y1, mu1, omega1, st.patterns1, vf=vf)
    moments = {}
    for ci, cs in enumerate(st.classes):
        if cs.patterns.n_patterns or (st.outcome is not None and cs.p):
            moments[ci] = class_moments(st, ci, bs[ci], ys, us, omegas, vs)
        if cs.patterns.n_patterns:
            ys[ci] = draw_missing(rng, ys[ci], *moments[ci], cs.patterns)
    us = tuple(us)
    out = s.outcome
    if st.outcome is not None:
        out = _outcome_steps(rng, st, out, y1, mu1 if st.p1 else None, omega1, vf, ys, cuts1, cuts, moments,
                             adapt_at)
    if work is not None and st.p1:
        work["mu1"] = (mu1, b1, us)
        if st.vf:
            work["vf"] = (omega1, vf[:2])
    return MultiState(y1, b1, omega1, cuts1, tuple(ys), tuple(bs), us, tuple(omegas),
                      tuple(cuts), steps, gammas, vs, rs, out)


def _outcome_steps(rng, st: MultiStatic, out, y1, mu1, omega1, vf, ys, cuts1, cuts, moments, adapt_at):
    """The substantive component's cells (given both models) and parameters
    (``outcome_multi``). Model (6)'s conditional of a level-1 unit is N(μ1_i, W_i⁻¹) with W_i
    = Ω1⁻¹, or the row's own precision with variance functions; of a classification's unit
    its ``class_moments``."""
    ost = st.outcome
    data = st.data
    prec1 = inv_spd(omega1) if st.p1 and vf is None else None

    def conditional(level, part):
        if level == LEVEL1:
            if vf is None:
                return mu1, prec1[None], np.zeros(part.units.size, np.int64)
            A0, G, rs, vcols = vf
            rho = rs[part.units][:, vcols] ** 2
            Q = A0[None] + np.einsum("rj,ja,jb->rab", rho, G, G)
            return mu1, Q, np.arange(part.units.size, dtype=np.int64)
        mean, cov = moments[level]
        return mean, inv_spd(cov)[None], np.zeros(part.units.size, np.int64)

    y_of = {LEVEL1: y1, **dict(enumerate(ys))}
    miss_of = {LEVEL1: data.miss1, **{ci: cs.cd.miss for ci, cs in enumerate(st.classes)}}
    cuts_of = {LEVEL1: cuts1, **dict(enumerate(cuts))}
    mh = draw_general_cells(rng, ost, out, y_of, conditional, miss_of, cuts_of)
    return draw_general_parameters(rng, ost, out, adapt_at, mh)


# ------------------------------------------------------------------------------------------
# Monitored parameters
# ------------------------------------------------------------------------------------------
def multi_trace_names(data: ModelData) -> list[str]:
    st_like = prepare_names(data)
    names = [f"beta1[{v}:{x}]" for v in data.y1_names for x in data.x1_names]
    for cd in data.classes:
        names += [f"beta[{cd.name}][{v}:{x}]" for v in cd.y_names for x in cd.x_names]
    (i1, j1), free_c = st_like
    names += [f"omega1[{data.y1_names[a]},{data.y1_names[b]}]" for a, b in zip(i1, j1)]
    for v in data.variances:
        names += [f"gamma[{v.name}:{w}]" for w in v.w_names]
    for ci, cd in enumerate(data.classes):
        fn = class_coordinate_names(data, ci)
        i, j = free_c[ci]
        names += [f"omega[{cd.name}][{fn[a]},{fn[b]}]" for a, b in zip(i, j)]
    for c in data.categorical1:
        if c.kind == "ordinal":
            names += [f"cut[{c.name}:{k}]" for k in range(2, c.n_categories)]
    for cd in data.classes:
        for c in cd.codecs:
            if c.kind == "ordinal":
                names += [f"cut[{c.name}:{k}]" for k in range(2, c.n_categories)]
    if data.outcome is not None:
        names += outcome_trace_names(data.outcome)
    return names


def prepare_names(data: ModelData):
    """Free lower-triangle positions of Ω1 and each Ω^(c) (without the sweep's statistics)."""
    p1 = data.y1.shape[1]
    con1 = Constraint.build(p1, [(list(c.cols), _fixed_block(c)) for c in data.categorical1])
    free_c = []
    for ci, cd in enumerate(data.classes):
        r = p1 + sum(data.classes[b].y.shape[1] for b in cd.parent)
        r += sum(1 for v in data.variances if v.re == ci)
        cat = [c for c in cd.codecs if c.kind != "continuous"]
        con = Constraint.build(r + cd.y.shape[1], [([r + k for k in c.cols], _fixed_block(c)) for c in cat])
        free_c.append(free_lower(r + cd.y.shape[1], con))
    return free_lower(p1, con1), free_c


def multi_trace_vector(st: MultiStatic, s: MultiState) -> np.ndarray:
    i1, j1 = st.free1
    parts = [s.b1.T.ravel(), *(b.T.ravel() for b in s.bs), s.omega1[i1, j1], *s.gammas]
    for (i, j), om in zip(st.free_c, s.omegas):
        parts.append(om[i, j])
    parts += [c[2:-1] for c in s.cuts1]
    for cc in s.cuts:
        parts += [c[2:-1] for c in cc]
    if s.outcome is not None:
        parts.append(outcome_trace(st.data.outcome, s.outcome))
    out = np.concatenate(parts)
    if st.trace_map is not None:   # on the data's scale (mlimpute.scaling)
        out = st.trace_map[0] + st.trace_map[1] * out
    return out


def multi_trace_affine(data: ModelData) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b) with θ = a + b θ* for each monitored parameter, in ``multi_trace_vector``'s order
    (``mlimpute.scaling``); None without internal scaling."""
    sc = data.scaling
    if sc is None:
        return None
    tm = TraceMap()
    tm.coefficients(*sc.y1, sc.x1)
    for cy, cx in zip(sc.classes, sc.class_x):
        tm.coefficients(*cy, cx)
    (i1, j1), free_c = prepare_names(data)
    s1 = sc.y1[1]
    tm.covariances(s1, i1, j1)
    tm.unchanged(sum(len(v.w_names) for v in data.variances))
    for ci, cd in enumerate(data.classes):
        tm.covariances(class_coordinates(data, ci), *free_c[ci])
    tm.unchanged(sum(k.n_categories - 2 for k in data.categorical1 if k.kind == "ordinal")
                 + sum(k.n_categories - 2 for cd in data.classes for k in cd.codecs if k.kind == "ordinal"))
    if data.outcome is not None:   # the substantive model works on the data's scale
        tm.unchanged(len(outcome_trace_names(data.outcome)))
    return tm.arrays()
