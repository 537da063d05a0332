"""The sampler's state, its static inputs, and the starting values of a chain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.special import ndtri

from ..design import ColumnCodec, ModelData
from ..priors import level2_prior
from ..scaling import TraceMap, level2_coordinates, prior_scale
from ._kernels import fitted_rows, residual_crossprod
from .collapsed import rare_columns
from .covariance import Constraint, free_lower
from .latent import initial_latent
from .outcome import OutcomeState, OutcomeStatic, initial_outcome, prepare_outcome, substantive_units

__all__ = ["State", "Static", "Patterns", "constraints", "prepare_two_level", "initial_two_level"]


class State(NamedTuple):
    """One draw of every unknown of the joint model (rows sorted by cluster).

    y1 : (N, p1) completed level-1 variables      b1 : (f1, p1) level-1 fixed effects
    y2 : (J, p2) completed level-2 variables      b2 : (f2, p2) level-2 fixed effects
    u1 : (J, p1*q) level-1 random effects, variable-major: ``u1[j, l*q + k]`` is the
         coefficient of random-effect column k for variable l in cluster j
    omega1 : (p1, p1) level-1 covariance          omega2 : (d, d), d = p1*q + p2, ordered
         (u1 variable-major, then the level-2 variables' random effects u2 = y2 - X2 b2)
    cuts1, cuts2 : thresholds of the level-1 / level-2 ordinal variables, one array
         ``[-inf, 0, γ_2, …, γ_{K-1}, inf]`` per variable
    steps : Metropolis–Hastings step sizes (tuned during burn-in only): free elements of the
         constrained blocks of Ω1 and Ω2, the threshold proposals, then (covariance="cluster")
         the df of the Ω1_j prior (see Static.step_slices)
    omega1 is (J, p1, p1) with covariance="cluster"; l1_df, l1_scale are then the a and A of
         Ω1_j ~ IW(a, A).

    y1 and y2 hold latent values in the columns of categorical variables.
    """

    y1: np.ndarray
    y2: np.ndarray
    b1: np.ndarray
    b2: np.ndarray
    u1: np.ndarray
    omega1: np.ndarray
    omega2: np.ndarray
    cuts1: tuple = ()
    cuts2: tuple = ()
    steps: np.ndarray = np.zeros(0)
    l1_df: float = np.nan                 # covariance="cluster": Ω1_j ~ IW(l1_df, l1_scale)
    l1_scale: np.ndarray = np.zeros((0, 0))
    outcome: OutcomeState | None = None   # the substantive model's unknowns (see ``outcome``)


def _compact(index: np.ndarray) -> np.ndarray:
    """int32 indices where they fit: half the memory of int64 on million-row data."""
    return index.astype(np.int32) if index.size and index.max() < 2**31 - 1 else index


@dataclass(frozen=True, eq=False)
class Patterns:
    """Rows with missing cells and their missingness patterns (computed once per dataset).

    ``rows`` ascending (memory order, so a pass over them streams through the data), ``pid``
    the pattern of each, ``masks[g]`` the missing columns of pattern g; ``n_cells`` the number
    of missing cells in all.
    """

    rows: np.ndarray
    pid: np.ndarray
    masks: np.ndarray
    n_cells: int

    @property
    def n_patterns(self) -> int:
        return int(self.masks.shape[0])

    @staticmethod
    def of(miss: np.ndarray) -> "Patterns":
        rows = np.flatnonzero(miss.any(axis=1))
        if rows.size == 0:
            return Patterns(np.zeros(0, np.int32), np.zeros(0, np.int16),
                            np.zeros((0, miss.shape[1]), bool), 0)
        keys = np.packbits(miss[rows], axis=1, bitorder="little")
        keys = keys.view(np.dtype((np.void, keys.shape[1]))).ravel()
        uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        masks = np.ascontiguousarray(miss[rows[first]])
        pid = inv.astype(np.int16 if uniq.size < 2**15 else np.int32)
        return Patterns(_compact(rows), pid, masks, int(miss.sum()))


@dataclass(frozen=True, eq=False)
class Static:
    """Everything a sweep needs that does not change between sweeps."""

    data: ModelData
    p1: int
    p2: int
    q: int
    x2_factor: np.ndarray      # F with F F' = (X2'X2)⁻¹: L'⁻¹ for X2'X2 = L L'
    x2_pinv: np.ndarray        # (X2'X2)⁻¹ X2' (f2, J)
    ztz: np.ndarray            # (J, q, q) per-cluster Z_j'Z_j
    ztx: np.ndarray            # (J, q, f1) per-cluster Z_j'X1_j
    xtx: np.ndarray            # (f1, f1) X1'X1
    patterns1: Patterns
    patterns2: Patterns
    prior1: tuple[np.ndarray, float]   # (scale, df) of Ω1
    prior2: tuple[np.ndarray, float]   # (scale, df) of Ω2
    cat1: tuple[ColumnCodec, ...]      # categorical variables at level 1 (codecs)
    cat2: tuple[ColumnCodec, ...]
    con1: Constraint | None            # fixed elements of Ω1 (categorical latent columns)
    con2: Constraint | None            # fixed elements of Ω2 (level-2 categorical latents)
    step_slices: tuple[slice, ...]     # of State.steps: Ω1, Ω2, cuts1, cuts2, a (cluster), scales of u1,
    #                                    rare columns' Ω1/Ω2 rows (``collapsed``)
    free1: tuple[np.ndarray, np.ndarray]   # lower-triangle positions of Ω1 not fixed by con1
    free2: tuple[np.ndarray, np.ndarray]   # likewise of Ω2 (both monitored every sweep)
    cluster_cov: bool = False          # covariance="cluster"
    xtx_j: np.ndarray | None = None    # (J, f1, f1) per-cluster X1_j'X1_j (cluster covariance)
    outcome: OutcomeStatic | None = None   # the substantive model (None: model (6) alone)
    fixed_prior: np.ndarray | None = None  # prior precision of vec(B1), vec(B2) (categorical_prior_sd)
    trace_map: tuple | None = None     # (offset, factor): the monitored parameters on the data's scale
    expand1: tuple = ((), None)        # binary/ordinal variables at levels 1 and 2: ((column, thresholds
    expand2: tuple = ((), None)        # index or None), ...) and the masks of their effects in Ω2
    nominal_blocks: tuple = (((), None), ((), None))   # per level: (latent columns, ...), Ω2 masks
    moves_masks1: np.ndarray | None = None   # level 1's masks of both, stacked (``expansion.scale_moves``)
    rare1: tuple = ()                  # level-1 latent columns of rare categories (``collapsed.Column``)
    rare2: tuple = ()                  # the same at level 2

    @property
    def d(self) -> int:
        return self.p1 * self.q + self.p2

    @property
    def ordinal1(self) -> tuple[ColumnCodec, ...]:
        return tuple(c for c in self.cat1 if c.kind == "ordinal")

    @property
    def ordinal2(self) -> tuple[ColumnCodec, ...]:
        return tuple(c for c in self.cat2 if c.kind == "ordinal")


def _fixed_block(codec: ColumnCodec) -> np.ndarray:
    """The fixed latent covariance of one categorical variable: 1, or ½(I + 11') if nominal."""
    w = len(codec.cols)
    return 0.5 * (np.eye(w) + np.ones((w, w)))


def constraints(data: ModelData) -> tuple[Constraint | None, Constraint | None]:
    """Fixed elements of Ω1 and Ω2: the latent blocks of the categorical variables."""
    p1, p2, q = data.y1.shape[1], data.y2.shape[1], data.z.shape[1]
    con1 = Constraint.build(p1, [(list(c.cols), _fixed_block(c)) for c in data.categorical1])
    con2 = Constraint.build(p1 * q + p2, [([p1 * q + k for k in c.cols], _fixed_block(c))
                                          for c in data.categorical2])
    return con1, con2


def prepare_two_level(data: ModelData) -> Static:
    """The two-level sampler's ``Static`` (``sweep.prepare_static`` chooses the sampler)."""
    p1, p2, q = data.y1.shape[1], data.y2.shape[1], data.z.shape[1]
    x1tx1 = data.x1.T @ data.x1
    x2tx2 = data.x2.T @ data.x2
    ztz = np.add.reduceat(data.z[:, :, None] * data.z[:, None, :], data.starts, axis=0)
    ztx = np.add.reduceat(data.z[:, :, None] * data.x1[:, None, :], data.starts, axis=0)
    model = data.model
    prior1 = model.prior_l1.resolve(p1, "level-1") if p1 else (np.zeros((0, 0)), 0.0)
    if data.scaling is not None and p1 and model.prior_l1.scale is not None:   # stated on the data's scale
        prior1 = (prior_scale(prior1[0], data.scaling.y1[1]), prior1[1])
    prior2 = level2_prior(data)
    cat1, cat2 = data.categorical1, data.categorical2
    con1, con2 = constraints(data)
    n_steps = [0 if con is None else con.n_free for con in (con1, con2)]
    n_steps += [sum(c.n_categories - 2 for c in cs if c.kind == "ordinal") for cs in (cat1, cat2)]
    cluster_cov = model.covariance == "cluster"
    n_steps.append(1 if cluster_cov else 0)
    n_steps.append(p1 * q)   # the scale move of the random effects (random.scale_move)
    # rows/clusters whose missing cells the substantive component draws are left out of the
    # joint model's block draw of missing cells
    rows1, clusters2 = substantive_units(data)
    # the collapsed moves of rare categories' latent columns (``collapsed``), holding the
    # categories the substantive model sees; not with cluster-specific Ω1
    used = {s.codec for s in data.outcome.sources} if data.outcome is not None else set()
    held = {c.name: rows1[data.miss1[rows1, c.cols[0]]] for c in cat1 if c.name in used}
    rare1 = () if cluster_cov else rare_columns(cat1, p1, held=held)
    held = {c.name: clusters2[data.miss2[clusters2, c.cols[0]]] for c in cat2 if c.name in used}
    rare2 = rare_columns(cat2, p2, held=held, first=p1 * q, size=p1 * q + p2)
    # per level-1 column: its Ω1 row's random-walk scale, its effects' log-scale step; per
    # level-2 column: its Ω2 row's
    n_steps.append(2 * len(rare1) + len(rare2))
    bounds = np.cumsum([0, *n_steps])
    step_slices = tuple(slice(int(bounds[k]), int(bounds[k + 1])) for k in range(7))
    xtx_j = (np.add.reduceat(data.x1[:, :, None] * data.x1[:, None, :], data.starts, axis=0)
             if cluster_cov else None)
    miss1, miss2 = data.miss1, data.miss2
    if rows1.size:
        miss1 = miss1.copy()
        miss1[rows1] = False
    if clusters2.size:
        miss2 = miss2.copy()
        miss2[clusters2] = False
    # the level-1 latents' scale moves (``expansion``); not with cluster-specific Ω1
    no_moves = ((), np.zeros((0, p1 * q + p2), np.bool_))
    expand1 = no_moves if cluster_cov else expanded_columns(cat1, q, p1 * q + p2)
    nominal1 = no_moves if cluster_cov else nominal_blocks(cat1, q, p1 * q + p2)
    return Static(
        data=data, p1=p1, p2=p2, q=q,
        x2_factor=np.linalg.inv(np.linalg.cholesky(x2tx2)).T,
        x2_pinv=np.linalg.solve(x2tx2, data.x2.T),
        ztz=ztz, ztx=ztx, xtx=x1tx1,
        patterns1=Patterns.of(miss1),
        patterns2=Patterns.of(miss2),
        prior1=prior1, prior2=prior2, cat1=cat1, cat2=cat2,
        con1=con1, con2=con2, step_slices=step_slices,
        free1=free_lower(p1, con1), free2=free_lower(p1 * q + p2, con2),
        cluster_cov=cluster_cov, xtx_j=xtx_j,
        outcome=prepare_outcome(data) if data.outcome is not None else None,
        fixed_prior=fixed_prior(data),
        trace_map=trace_affine(data),
        expand1=expand1, expand2=expanded_columns(cat2, 0, 0), rare1=rare1, rare2=rare2,
        nominal_blocks=(nominal1, nominal_blocks(cat2, 0, 0)),
        moves_masks1=np.vstack([expand1[1], nominal1[1]]),
    )


def expanded_columns(codecs, q: int, dim2: int) -> tuple[tuple, tuple]:
    """((latent column, index of its thresholds among the ordinal variables' or None), ...) of
    the binary and ordinal variables of one level, and the masks of their random effects'
    coordinates among Ω2's ``dim2`` (variables × dim2): what ``expansion.scale_moves`` moves by
    marginal data augmentation."""
    cols, masks, o = [], [], 0
    for c in codecs:
        if c.kind in ("ordinal", "binary"):
            cols.append((c.cols[0], o if c.kind == "ordinal" else None))
            masks.append(effect_mask(c.cols, q, dim2))
            o += c.kind == "ordinal"
    return tuple(cols), np.array(masks, np.bool_).reshape(len(cols), dim2)


def nominal_blocks(codecs, q: int, dim2: int) -> tuple[tuple, tuple]:
    """(latent columns, ...) of the nominal variables of one level and the masks of their random
    effects' coordinates among Ω2's ``dim2`` (``expansion.scale_moves``' group move)."""
    nom = [c for c in codecs if c.kind == "nominal"]
    masks = np.array([effect_mask(c.cols, q, dim2) for c in nom], np.bool_).reshape(len(nom), dim2)
    return tuple(tuple(c.cols) for c in nom), masks


def effect_mask(cols, q: int, dim: int) -> np.ndarray:
    """The coordinates k·q … k·q + q − 1 of each latent column k among ``dim``."""
    mask = np.zeros(dim, np.bool_)
    for k in cols:
        mask[k * q:(k + 1) * q] = True
    return mask


def trace_affine(data: ModelData) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b) with θ = a + b θ* for each monitored parameter of the two-level sampler, in
    ``trace_vector``'s order (``mlimpute.scaling``); None without internal scaling."""
    sc = data.scaling
    if sc is None:
        return None
    tm = TraceMap()
    tm.coefficients(*sc.y1, sc.x1)
    tm.coefficients(*sc.y2, sc.x2)
    con1, con2 = constraints(data)
    s1 = sc.y1[1]
    tm.covariances(s1, *free_lower(s1.size, con1))
    if data.model.covariance == "cluster":            # the scale matrix, then its df
        tm.unchanged(1)
    c = level2_coordinates(data)
    tm.covariances(c, *free_lower(c.size, con2))
    tm.unchanged(sum(k.n_categories - 2 for k in (*data.categorical1, *data.categorical2) if k.kind == "ordinal"))
    if data.outcome is not None:   # the substantive model works on the data's scale
        from .outcome import outcome_trace_names
        tm.unchanged(len(outcome_trace_names(data.outcome)))
    return tm.arrays()


def fixed_prior(data: ModelData) -> np.ndarray | None:
    """Prior precisions of vec(B1) then vec(B2) (variable-major): 1/sd² on the coefficients of
    categorical variables' latent columns when ``categorical_prior_sd`` is given, else None."""
    sd = data.model.categorical_prior_sd
    if sd is None:
        return None
    f1, f2 = data.x1.shape[1], data.x2.shape[1]
    out1 = np.zeros((data.y1.shape[1], f1))
    out2 = np.zeros((data.y2.shape[1], f2))
    for c in data.categorical1:
        out1[list(c.cols)] = 1.0 / sd ** 2
    for c in data.categorical2:
        out2[list(c.cols)] = 1.0 / sd ** 2
    return np.concatenate([out1.ravel(), out2.ravel()])


def _hot_deck(rng: np.random.Generator, y: np.ndarray, miss: np.ndarray) -> np.ndarray:
    """Fill each continuous column's missing cells with random observed values."""
    y = y.copy()
    for k in range(y.shape[1]):
        m = miss[:, k] & np.isnan(y[:, k])
        if m.any() and (~miss[:, k]).any() and not np.isnan(y[~miss[:, k], k]).all():
            pool = y[~miss[:, k], k]
            y[m, k] = pool[rng.integers(pool.size, size=int(m.sum()))]
    return y


def _initial_cuts(codec: ColumnCodec) -> np.ndarray:
    """Thresholds from the observed cumulative proportions, shifted so that γ_1 = 0."""
    K = codec.n_categories
    counts = np.bincount(codec.codes[codec.codes >= 0], minlength=K).astype(float) + 0.5
    q = ndtri(np.cumsum(counts)[:-1] / counts.sum())
    q = np.maximum.accumulate(q - q[0] + np.arange(K - 1) * 1e-3)
    return np.concatenate([[-np.inf], q, [np.inf]])


def _fill_categorical(rng, y, codecs, cuts) -> np.ndarray:
    """Latent starting values: consistent with observed categories, hot-deck for missing ones."""
    o = 0
    for codec in codecs:
        codes = codec.codes.copy()
        miss = codes < 0
        pool = codes[~miss]
        codes[miss] = pool[rng.integers(pool.size, size=int(miss.sum()))]
        c = None
        if codec.kind == "ordinal":
            c, o = cuts[o], o + 1
        y[:, list(codec.cols)] = initial_latent(codec, codes, c)
    return y


def initial_two_level(static: Static, rng: np.random.Generator) -> State:
    """Starting values: hot-deck fills, least-squares B, moment-based covariances.

    Different chains start from different hot-deck fills, which disperses the starts of the
    fixed effects and covariances enough for R-hat to see a chain that has not mixed.
    Constrained covariance elements start at their fixed values.
    """
    data = static.data
    p1, p2, q = static.p1, static.p2, static.q
    cuts1 = tuple(_initial_cuts(c) for c in static.ordinal1)
    cuts2 = tuple(_initial_cuts(c) for c in static.ordinal2)
    y1 = _fill_categorical(rng, _hot_deck(rng, data.y1, data.miss1), static.cat1, cuts1)
    y2 = _fill_categorical(rng, _hot_deck(rng, data.y2, data.miss2), static.cat2, cuts2)
    b1 = np.linalg.solve(static.xtx, data.x1.T @ y1)
    b2 = static.x2_pinv @ y2
    # Cluster means of the residuals: a moment estimate of the random-intercept variances
    # (row loops in compiled kernels: no N×p temporaries on large data).
    sx = static.ztx[:, 0, :]                       # column sums of X1 per cluster
    means = (np.add.reduceat(y1, data.starts, axis=0) - sx @ b1) / data.sizes[:, None]
    u_var = np.concatenate([
        np.concatenate([[means[:, l].var()], np.full(q - 1, 0.1 * means[:, l].var())])
        for l in range(p1)
    ]) if p1 else np.empty(0)
    r2 = y2 - data.x2 @ b2
    d = p1 * q + p2
    omega2 = np.diag(np.concatenate([u_var, r2.var(axis=0)]) + 1e-6 * (1 + np.ones(d)))
    if p1:
        within = fitted_rows(data.x1, b1, means, data.cluster, np.ascontiguousarray(data.z[:, :1]), 1,
                             np.empty(y1.shape))
        omega1 = residual_crossprod(y1, within, data.cluster, 1)[0] / max(data.n_rows - 1, 1)
        del within
    else:
        omega1 = np.zeros((0, 0))
    omega1 = omega1 + 1e-6 * (np.trace(omega1) / max(p1, 1) or 1.0) * np.eye(p1)  # (a variable seen once: 0)
    omega1 = _constrain_start(omega1, static.con1)
    omega2 = _constrain_start(omega2, static.con2)
    u1 = np.zeros((data.n_clusters, p1 * q))
    n_steps = static.step_slices[-1].stop
    steps = np.concatenate([np.full(static.step_slices[1].stop, 0.1),
                            np.full(n_steps - static.step_slices[1].stop, 0.05)])
    l1_df, l1_scale = np.nan, np.zeros((0, 0))
    if static.cluster_cov:
        # jomo's start: a = p1 + 50, every Ω1_j at the pooled estimate, A matching its mean
        l1_df = p1 + 50.0
        l1_scale = (l1_df - p1 - 1) * omega1
        omega1 = np.repeat(omega1[None], data.n_clusters, axis=0)
        steps[static.step_slices[4]] = 0.3
    steps[static.step_slices[5]] = 0.3
    # the collapsed Ω rows' random walks start at 1 (in units of the latent's SD over √rows), the
    # effects' scale steps at 0.2; both are tuned in burn-in
    steps[static.step_slices[6]] = np.concatenate([np.tile([1.0, 0.2], len(static.rare1)),
                                                   np.full(len(static.rare2), 1.0)])
    outcome = None
    if static.outcome is not None:
        cuts = dict(zip([c.name for c in (*static.ordinal1, *static.ordinal2)], (*cuts1, *cuts2)))
        outcome = initial_outcome(static.outcome, data, y1, y2, cuts, rng)
    return State(y1=y1, y2=y2, b1=b1, b2=b2, u1=u1, omega1=omega1, omega2=omega2,
                 cuts1=cuts1, cuts2=cuts2, steps=steps, l1_df=l1_df, l1_scale=l1_scale,
                 outcome=outcome)


def _constrain_start(omega: np.ndarray, con: Constraint | None) -> np.ndarray:
    """Start constrained blocks at their fixed values (free ones at 0), uncorrelated with the rest."""
    if con is None:
        return omega
    out = np.diag(np.diag(omega)).astype(float)
    keep = con.rest
    out[np.ix_(keep, keep)] = omega[np.ix_(keep, keep)]
    out[np.ix_(con.cat, con.cat)] = con.fill(np.zeros((con.cat.size, con.cat.size)))
    return out
