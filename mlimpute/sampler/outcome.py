"""The substantive-model component: the analysis model of the outcome inside the sampler.

Model (Goldstein, Carpenter & Browne 2014)::

    y_ij = D_ij(x) β + D^Z_ij(x) b_j + e_ij,   e_ij ~ N(0, σ²),  b_j ~ N(0, Σ_b)   (gaussian)
    P(y_ij = 1) = F(D_ij(x) β + D^Z_ij(x) b_j),  F = Φ (probit) or logistic (logit) (binomial)

times model (6) of the incomplete covariates x given the complete ones. The design rows D(x)
are re-evaluated from the current covariates by the compiled program of
``mlimpute.substantive``. Flat prior on β; Σ_b ~ IW(df, Ψ) per covariance block (jomo's
default df = its dimension, Ψ centred on the complete-case estimate: ``substantive``);
σ² ~ IW(1, σ̂²_cc) as jomo.lmer.

Steps (each leaves the joint posterior invariant; the component meets the rest of the sampler
only through the completed covariates and the linear predictor):

0. Binomial outcomes: the collapsed block (``outcome_collapsed``): each cluster's effects, β
   and each random-effect coordinate's scale with Σ_b's row and column, by Newton-preconditioned
   Metropolis–Hastings with the augmentation integrated out (the rows' Φ(±η) or logistic
   likelihood), step 1 following at once.
1. Augmentation: probit, y* ~ N(η, 1) truncated by y (Albert & Chib 1993); logit,
   ω ~ PG(1, η) (Polson, Scott & Windle 2013). Given it every outcome is a Gaussian
   pseudo-response ``ytil`` with row precisions ``w``.
2. (β, b) as one exact block (β with b integrated out, then b | β), as the joint model's
   (B, U) block: no see-saw between the fixed and random intercepts.
3. Σ_b | b: inverse-Wishart per block; then a parameter-expansion move rescaling (b, Σ_b)
   together (``expand_random_effects``); σ² | residuals: inverse-gamma (gaussian).
4. Missing covariate cells of rows with an observed outcome (``cells``): exact or MH (with a
   square of the covariate, also a reflection about the parabola's vertex that moves between
   the conditional's two modes), see ``_outcome_kernels.cells``. Rows whose outcome is missing get the joint model's block
   draw: their outcome integrates out of the likelihood.
5. Missing outcomes are drawn from the analysis model when an imputation is taken.

For ordinal covariates of the formula the imputed category of a row with an observed outcome
is held fixed during the threshold update and the latent is redrawn inside its interval (a
partially collapsed move: given the category the outcome's likelihood does not depend on the
thresholds), so the Cowles step of ``latent`` stays exact.

References
----------
Albert, J. H., & Chib, S. (1993). Bayesian analysis of binary and polychotomous response data.
JASA, 88(422), 669-679.
Goldstein, H., Carpenter, J. R., & Browne, W. J. (2014). Fitting multilevel multivariate models
with missing data in responses and covariates that may include interactions and non-linear
terms. JRSS A, 177(2), 553-564.
Polson, N. G., Scott, J. G., & Windle, J. (2013). Bayesian inference for logistic models using
Pólya-Gamma latent variables. JASA, 108(504), 1339-1349.
Liu, J. S., & Sabatti, C. (2000). Generalised Gibbs sampler and multigrid Monte Carlo for
Bayesian computation. Biometrika, 87(2), 353-369.
Liu, J. S., & Wu, Y. N. (1999). Parameter expansion for data augmentation. JASA, 94(448),
1264-1274.
van Dyk, D. A., & Meng, X.-L. (2001). The art of data augmentation. JCGS, 10(1), 1-50.
Gelman, A., van Dyk, D. A., Huang, Z., & Boscardin, W. J. (2008). Using redundant
parameterizations to fit hierarchical models. JCGS, 17(1), 95-122.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.special import expit, ndtr

from ..design import ModelData
from ..substantive import OutcomeData
from . import _outcome_kernels as ok
from . import outcome_collapsed as oc
from .latent import latents_to_codes

__all__ = ["OutcomeState", "OutcomeStatic", "prepare_outcome", "initial_outcome", "draw_cells",
           "draw_parameters", "effective_codes", "impute_outcome", "outcome_trace",
           "outcome_trace_names", "substantive_units"]

MH_TARGET = 0.44  # one-dimensional random-walk Metropolis


class OutcomeState(NamedTuple):
    """The substantive model's unknowns (rows sorted by cluster).

    beta (f,), b (J, q), cov (q, q) block-diagonal Σ_b, sigma2 (gaussian; 1 otherwise), aux
    (N,) the probit latent y* or the Pólya-Gamma ω (empty for gaussian); S, D, eta the sources,
    design rows and linear predictors (updated in place by the covariate draws); steps: MH step
    multipliers per source (non-linear terms), tuned in burn-in only.
    """

    beta: np.ndarray
    b: np.ndarray
    cov: np.ndarray
    sigma2: float
    aux: np.ndarray
    S: np.ndarray
    D: np.ndarray
    eta: np.ndarray
    steps: np.ndarray


class _Columns(NamedTuple):
    """Per latent column of y1 or y2: its variable's kind, first column, width, source index
    (−1 if the formula does not read it) and ordinal index (−1 if not ordinal)."""

    kind: np.ndarray
    first: np.ndarray
    width: np.ndarray
    src: np.ndarray
    cut: np.ndarray


@dataclass(frozen=True, eq=False)
class OutcomeStatic:
    """What the component needs that does not change between sweeps."""

    od: OutcomeData
    prog: tuple
    obs_rows: np.ndarray        # rows with an observed outcome
    miss_rows: np.ndarray       # rows whose outcome is imputed
    rows1: np.ndarray           # rows with an observed outcome and a missing formula covariate
    rows1_end: np.ndarray       # rows1 + 1 (each unit of rows1 is one row)
    uniforms1: bool             # a cell of rows1 needs uniforms (MH or categorical)
    clusters2: np.ndarray       # clusters with an observed outcome and a missing level-2 one
    cols1: _Columns
    cols2: _Columns
    n_cells1: int
    n_cells2: int
    src_level: np.ndarray       # per source: 0 complete, 1 or 2 the level of its variable
    src_col: np.ndarray         # first latent column of its variable in y1 / y2
    cen1: np.ndarray            # per column of y1 / y2: a continuous value = cen + sc · internal
    sc1: np.ndarray             # (``mlimpute.scaling``; 0 and 1 without internal scaling)
    cen2: np.ndarray
    sc2: np.ndarray
    src_codec: tuple            # its codec (None for complete sources)
    override1: tuple            # (ordinal index, rows) of ordinal formula covariates, level 1
    override2: tuple            # (ordinal index, clusters), level 2
    kappa: np.ndarray           # logit: y − ½ at every row (0 where missing)
    quad_rows: np.ndarray       # rows whose (β, b) cross-products are formed every sweep
    lin_rows: np.ndarray        # the same for the linear terms
    stat: tuple                 # cross-products of the other rows (see outcome_block)
    zeros1: np.ndarray          # index 0 of the common Ω1⁻¹ for every unit (rows1)
    zeros2: np.ndarray          # the same for clusters2
    bstart: np.ndarray          # covariance blocks of Σ_b: first column, width,
    bwidth: np.ndarray
    bdf: np.ndarray             # and prior df (the prior's for one block, else the width)
    chi_df: np.ndarray          # df − i of each Bartlett χ² of the blocks' draws, before adding J
    chi_df_list: tuple          # the same as floats
    sign: np.ndarray            # binomial: 2y − 1 at every row (0 where missing)
    coord_df: np.ndarray        # each random-effect coordinate's block df
    yy: float                   # gaussian: Σ y² over the rows with an observed outcome
    n_lower: int                # normals below the Bartlett diagonals

    @property
    def family(self) -> str:
        return self.od.family

    @property
    def link(self) -> str:
        return self.od.link


def _columns(codecs, p: int, src_of: dict, ordinals: list) -> _Columns:
    kinds = {"continuous": ok.CONT, "binary": ok.BIN, "ordinal": ok.ORD, "nominal": ok.NOM}
    out = _Columns(*(np.full(p, -1, np.int64) for _ in range(5)))
    for c in codecs:
        for col in c.cols:
            out.kind[col] = kinds[c.kind]
            out.first[col] = c.cols[0]
            out.width[col] = len(c.cols)
            out.src[col] = src_of.get(c.name, -1)
            out.cut[col] = ordinals.index(c.name) if c.name in ordinals else -1
    return out


def substantive_units(data: ModelData) -> tuple[np.ndarray, np.ndarray]:
    """Rows (level 1) and clusters (level 2) whose missing cells are drawn given the outcome:
    an observed outcome and a missing covariate that the formula reads."""
    od = data.outcome
    n1, n2 = data.miss1.shape[0], data.miss2.shape[0]
    if od is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    used = {s.codec for s in od.sources if s.codec is not None}
    m1 = np.zeros(n1, bool)
    m2 = np.zeros(n2, bool)
    for c in data.codecs:
        if c.name in used:
            if c.level == 1:
                m1 |= data.miss1[:, c.cols[0]]
            else:
                m2 |= data.miss2[:, c.cols[0]]
    rows1 = np.flatnonzero(m1 & od.observed)
    has_obs = np.add.reduceat(od.observed.astype(np.int64), data.starts) > 0
    clusters2 = np.flatnonzero(m2 & has_obs)
    return rows1, clusters2


def _scales(data: ModelData) -> dict:
    """The columns' (centre, scale) of each level: the formula reads the data's values."""
    sc = data.scaling
    y1 = sc.y1 if sc is not None else (np.zeros(data.y1.shape[1]), np.ones(data.y1.shape[1]))
    y2 = sc.y2 if sc is not None else (np.zeros(data.y2.shape[1]), np.ones(data.y2.shape[1]))
    return dict(cen1=np.ascontiguousarray(y1[0], dtype=float), sc1=np.ascontiguousarray(y1[1], dtype=float),
                cen2=np.ascontiguousarray(y2[0], dtype=float), sc2=np.ascontiguousarray(y2[1], dtype=float))


def prepare_outcome(data: ModelData) -> OutcomeStatic:
    od = data.outcome
    p = od.program
    prog = (p.const, p.col_ptr, p.src, p.kind, p.par, np.ascontiguousarray(p.tables), p.dep_ptr, p.dep_cols)
    rows1, clusters2 = substantive_units(data)
    codec_of = {c.name: c for c in data.codecs}
    src_of = {s.codec: k for k, s in enumerate(od.sources) if s.codec is not None}
    ord1 = [c.name for c in data.categorical1 if c.kind == "ordinal"]
    ord2 = [c.name for c in data.categorical2 if c.kind == "ordinal"]
    cols1 = _columns([c for c in data.codecs if c.level == 1], data.y1.shape[1], src_of, ord1)
    cols2 = _columns([c for c in data.codecs if c.level == 2], data.y2.shape[1], src_of, ord2)
    src_level = np.array([0 if s.codec is None else codec_of[s.codec].level for s in od.sources], np.int64)
    src_col = np.array([0 if s.codec is None else codec_of[s.codec].cols[0] for s in od.sources], np.int64)
    override1 = tuple((ord1.index(n), rows1[data.miss1[rows1, codec_of[n].cols[0]]])
                      for n in ord1 if n in src_of)
    override2 = tuple((ord2.index(n), clusters2[data.miss2[clusters2, codec_of[n].cols[0]]])
                      for n in ord2 if n in src_of)
    obs = np.flatnonzero(od.observed)
    kappa = np.where(od.observed, np.nan_to_num(od.y) - 0.5, 0.0)
    # Rows with an observed outcome whose design never changes (no missing covariate of the
    # formula, at either level) keep their cross-products: with a common weight (gaussian
    # 1/σ², probit 1) they are formed once, not every sweep.
    changing = np.zeros(od.y.size, bool)
    changing[rows1] = True
    for j in clusters2:
        changing[data.starts[j]:data.starts[j] + data.sizes[j]] = True
    dyn = np.flatnonzero(changing & od.observed)
    fixed = np.flatnonzero(~changing & od.observed)
    D0 = od.program.evaluate(od.S0)
    ylin = np.nan_to_num(od.y) if od.family == "gaussian" else np.zeros(od.y.size)
    if od.family == "binomial" and od.link == "logit":   # weights ω change every sweep
        fixed = np.zeros(0, np.int64)
        quad_rows = lin_rows = obs
    else:
        quad_rows, lin_rows = dyn, (dyn if od.family == "gaussian" else obs)
    stat = ok.cross_products(D0, od.n_fixed, fixed, ylin, data.cluster, data.n_clusters)
    bstart = np.array([s for s, _ in od.blocks], np.int64)
    bwidth = np.array([w for _, w in od.blocks], np.int64)
    bdf = block_dfs(od, bwidth)
    return OutcomeStatic(
        od=od, prog=prog, obs_rows=obs, miss_rows=np.flatnonzero(~od.observed), rows1=rows1,
        rows1_end=rows1 + 1, uniforms1=_needs_uniforms(cols1, od.program.linear),
        clusters2=clusters2, cols1=cols1, cols2=cols2,
        n_cells1=int(data.miss1[rows1].sum()), n_cells2=int(data.miss2[clusters2].sum()),
        src_level=src_level, src_col=src_col, **_scales(data),
        src_codec=tuple(None if s.codec is None else codec_of[s.codec] for s in od.sources),
        override1=override1, override2=override2, kappa=kappa, quad_rows=quad_rows,
        lin_rows=lin_rows, stat=stat, zeros1=np.zeros(rows1.size, np.int64),
        zeros2=np.zeros(clusters2.size, np.int64), bstart=bstart, bwidth=bwidth, bdf=bdf,
        chi_df=np.concatenate([d - np.arange(w) for d, w in zip(bdf, bwidth)]),
        chi_df_list=tuple(float(v) for d, w in zip(bdf, bwidth) for v in d - np.arange(w)),
        sign=np.where(od.observed, 2.0 * np.nan_to_num(od.y) - 1.0, 0.0) if od.family == "binomial" else np.zeros(0),
        coord_df=np.repeat(bdf.astype(float), bwidth),
        yy=float(np.sum(od.y[obs] ** 2)) if od.family == "gaussian" else 0.0,
        n_lower=int(sum(w * (w - 1) // 2 for w in bwidth)),
    )


def singular_outcome(od: OutcomeData, D: np.ndarray, rows: np.ndarray) -> Exception:
    """The error for a (β, b) precision that is not positive definite in a sweep: where the
    completed data make the formula's fixed part rank-deficient (imputed categories of a
    unit-level covariate that leave one dummy equal to another, say), name the column; the
    flat prior on β has no posterior there."""
    from ..errors import ConvergenceError
    from ..identification import dependent_column

    k = dependent_column(D[rows][:, :od.n_fixed], tol=1e-10)
    if k is None:
        return np.linalg.LinAlgError("the substantive model's precision is not positive definite")
    return ConvergenceError(
        f"in a completed dataset the column {od.x_names[k]!r} of substantive= is a linear combination of "
        "the columns before it (the imputed values of its incomplete variables made the fixed part "
        "singular, e.g. a category observed in few units whose imputed units all fall with another "
        "term's): its coefficient has no posterior under the flat prior. Merge rare categories, drop "
        "or simplify that term, or impute without it"
    )


def block_dfs(od, bwidth: np.ndarray) -> np.ndarray:
    """The inverse-Wishart df of each covariance block: the stated ``prior_substantive`` df, else
    the block's width (the scale is then centred on it: ``substantive._complete_case_start``)."""
    return bwidth.astype(float) if od.prior_df is None else np.full(bwidth.size, float(od.prior_df))


def refresh_sources(ost: OutcomeStatic, S: np.ndarray, rows: np.ndarray, y1: np.ndarray,
                    y2: np.ndarray, cluster: np.ndarray, cuts: dict) -> None:
    """Set the incomplete sources of ``rows`` from the joint model's completed data."""
    if not rows.size:
        return
    for s, codec in enumerate(ost.src_codec):
        if codec is None:
            continue
        if codec.level == 1:
            at, y, cen, sc = rows, y1, ost.cen1, ost.sc1
        else:
            at, y, cen, sc = cluster[rows], y2, ost.cen2, ost.sc2
        S[rows, s] = source_values(codec, y[at][:, list(codec.cols)], at, cen, sc, cuts)


def source_values(codec, block: np.ndarray, at: np.ndarray, cen: np.ndarray, sc: np.ndarray,
                  cuts: dict) -> np.ndarray:
    """What the formula reads of a variable at the units ``at`` (rows or clusters) whose latent
    columns are ``block``: a continuous value on the data's scale (``cen + sc · internal``), or
    the category code (the observed one where there is one)."""
    if codec.kind == "continuous":
        k = codec.cols[0]
        return cen[k] + sc[k] * block[:, 0]
    known = codec.codes[at]
    return np.where(known >= 0, known, latents_to_codes(codec, block, cuts.get(codec.name)))


_NO_CUTS = np.full((1, 2), np.inf)


def _needs_uniforms(cols: _Columns, linear: np.ndarray) -> bool:
    """Whether some latent column read by the formula is categorical or enters non-linearly
    (the cells kernel then draws by Metropolis–Hastings or among intervals)."""
    read = cols.src >= 0
    if not read.any():   # the formula reads no incomplete variable (y ~ 1 + (1 | g))
        return False
    return bool(np.any(read & ((cols.kind != ok.CONT) | ~linear[np.maximum(cols.src, 0)])))


def _padded_cuts(cuts: tuple) -> np.ndarray:
    if not cuts:
        return _NO_CUTS
    width = max(c.size for c in cuts)
    out = np.full((len(cuts), width), np.inf)
    for k, c in enumerate(cuts):
        out[k, :c.size] = c
    return out


_NO_WEIGHTS = np.zeros(1)
_NO_UNIFORMS = np.zeros(0)


def _pseudo(ost: OutcomeStatic, o: OutcomeState) -> tuple[np.ndarray, np.ndarray, float]:
    """The pseudo-response, its row precisions and their common value (0 if they differ):
    gaussian (y, 1/σ²), probit (y*, 1), logit ((y − ½)/ω, ω). Only rows with an observed
    outcome are read."""
    if ost.family == "gaussian":
        return ost.od.y, _NO_WEIGHTS, 1.0 / o.sigma2
    if ost.link == "probit":
        return o.aux, _NO_WEIGHTS, 1.0
    ytil = np.zeros(o.aux.size)
    ytil[ost.obs_rows] = ost.kappa[ost.obs_rows] / o.aux[ost.obs_rows]
    return ytil, o.aux, 0.0


def initial_outcome(ost: OutcomeStatic, data: ModelData, y1, y2, cuts: dict,
                    rng: np.random.Generator) -> OutcomeState:
    od = ost.od
    n = od.y.size
    S = od.S0.copy()
    refresh_sources(ost, S, np.arange(n), y1, y2, data.cluster, cuts)
    D = np.empty((n, od.program.n_cols))
    ok.design_rows(S, np.arange(n), D, ost.prog)
    b = np.zeros((data.n_clusters, od.q))
    eta = np.empty(n)
    ok.linear_predictor(D, od.n_fixed, od.beta0, b, data.cluster, np.arange(n), eta)
    aux = np.zeros(0)
    if ost.family == "binomial":
        aux = np.zeros(n)
        aux = _augment(rng, ost, eta, aux)
    steps = np.full(len(od.sources), 2.4)
    return OutcomeState(beta=od.beta0.copy(), b=b, cov=od.cov0.copy(), sigma2=float(od.sigma2_0),
                        aux=aux, S=S, D=D, eta=eta, steps=steps)


def _augment(rng, ost: OutcomeStatic, eta: np.ndarray, aux: np.ndarray) -> np.ndarray:
    rows = ost.obs_rows
    if ost.link == "probit":
        u = 1.0 - rng.random(rows.size)
        ok.probit_latents(eta, ost.od.y, rows, u, aux)
        return aux
    from polyagamma import random_polyagamma

    aux[rows] = random_polyagamma(1.0, eta[rows], random_state=rng)
    return aux


def effective_codes(ost: OutcomeStatic, o: OutcomeState, codecs, level: int, starts) -> tuple | None:
    """Category codes for the latent step in which the current categories of ordinal formula
    covariates at ``ost.rows1`` (``clusters2``) count as observed (see the module notes)."""
    overrides = ost.override1 if level == 1 else ost.override2
    return held_codes(ost.src_codec, o.S, codecs,
                      [(o_idx, units, units if level == 1 else starts[units]) for o_idx, units in overrides])


def held_codes(src_codec: tuple, S: np.ndarray, codecs, held: list) -> tuple | None:
    """The codecs' category codes with the current categories of held units as observed:
    ``held`` lists (ordinal index among ``codecs``' ordinals, units, a row of each unit), the
    category read from the sources S at that row; None if nothing is held."""
    if not any(units.size for _, units, _ in held):
        return None
    ordinals = [c for c in codecs if c.kind == "ordinal"]
    out = [c.codes for c in codecs]
    for o_idx, units, rows in held:
        codec = ordinals[o_idx]
        s = next(k for k, c in enumerate(src_codec) if c is codec)
        codes = codec.codes.copy()
        codes[units] = S[rows, s].astype(codes.dtype)
        out[[k for k, c in enumerate(codecs) if c is codec][0]] = codes
    return tuple(out)


def draw_cells(rng, ost: OutcomeStatic, o: OutcomeState, data: ModelData, y1, fitted1, prec1, y2,
               mean2, prec2, cuts1: tuple, cuts2: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Missing covariate cells of the substantive rows/clusters given both models (in place).
    Returns the MH acceptances and tries per source (non-linear terms)."""
    ytil, w, wconst = _pseudo(ost, o)
    nsrc = o.steps.size
    accepted = np.zeros(nsrc, np.int64)
    tried = np.zeros(nsrc, np.int64)
    od = ost.od
    common = (od.program.linear, od.program.quadratic, od.observed, data.cluster, o.S, o.D, ost.prog, od.n_fixed, o.beta,
              o.b, o.eta, ytil, w, wconst, o.steps, accepted, tried)
    if ost.rows1.size:
        n = ost.n_cells1
        per_cluster = prec1.ndim == 3
        Q = prec1 if per_cluster else prec1[None]
        qidx = data.cluster[ost.rows1] if per_cluster else ost.zeros1
        c = ost.cols1
        ok.cells(y1, fitted1, Q, qidx, ost.rows1, ost.rows1, ost.rows1_end, data.miss1, c.kind, c.first,
                 c.width, c.src, c.cut, ost.cen1, ost.sc1, _padded_cuts(cuts1), *common, rng.standard_normal(n),
                 1.0 - rng.random(2 * n) if ost.uniforms1 else _NO_UNIFORMS)
    if ost.clusters2.size:
        n = ost.n_cells2
        c = ost.cols2
        ok.cells(y2, np.ascontiguousarray(mean2), prec2[None], ost.zeros2, ost.clusters2,
                 data.starts[ost.clusters2], data.starts[ost.clusters2] + data.sizes[ost.clusters2],
                 data.miss2, c.kind, c.first, c.width, c.src, c.cut, ost.cen2, ost.sc2, _padded_cuts(cuts2), *common,
                 rng.standard_normal(n), 1.0 - rng.random(2 * n))
    return accepted, tried


def draw_parameters(rng, ost: OutcomeStatic, o: OutcomeState, data: ModelData,
                    adapt_at: int | None = None, mh: tuple | None = None) -> OutcomeState:
    """Steps 1–3 of the module notes, then the linear predictors of the new (β, b)."""
    od = ost.od
    aux = o.aux
    if ost.family == "binomial":
        if oc.ENABLED:
            o = collapsed_block(rng, ost, o, data)
        aux = _augment(rng, ost, o.eta, aux)
        o = o._replace(aux=aux)
    ytil, w, wconst = _pseudo(ost, o)
    J, nf = data.n_clusters, od.n_fixed
    z = rng.standard_normal(nf + J * od.q)
    beta, b, WW, Wr, good, stats = ok.outcome_block(o.D, nf, ytil, w, wconst, ost.quad_rows, ost.lin_rows,
                                                    ost.stat, data.cluster, o.cov, ost.bstart, ost.bwidth, z)
    if not good:
        raise singular_outcome(od, o.D, ost.obs_rows)
    b, cov = expand_random_effects(rng, ost, b, WW, Wr)
    eta = o.eta
    sigma2 = o.sigma2
    if ost.family == "gaussian":
        # the linear predictors only where the covariate draws read them (rows whose design
        # changes: the others' are never read, and the imputed outcomes recompute theirs); the
        # residual sum of squares from the cross-products
        ok.linear_predictor(o.D, nf, beta, b, data.cluster, ost.quad_rows, eta)
        sse = ok.gaussian_sse(beta, b, stats, wconst * ost.yy, wconst)
        sigma2 = float((od.sigma2_prior + sse) / rng.chisquare(1.0 + ost.obs_rows.size))
    else:
        ok.linear_predictor(o.D, nf, beta, b, data.cluster, ost.obs_rows, eta)
        if ost.link == "probit" and PROBIT_SCALE:
            rows = ost.obs_rows
            alpha = probit_scale(rng, aux[rows] - eta[rows], nf, [(od.prior_scale, cov, ost.bstart, ost.bwidth, ost.bdf)])
            beta, b, cov = beta * alpha, b * alpha, cov * alpha ** 2
            aux *= alpha
            eta *= alpha
    return OutcomeState(beta, b, cov, sigma2, o.aux, o.S, o.D, eta,   # (_replace: 3× slower)
                        tuned_steps(o.steps, adapt_at, mh))


def collapsed_block(rng, ost: OutcomeStatic, o: OutcomeState, data: ModelData) -> OutcomeState:
    """A binomial outcome's (b, β, effects' scales) with the augmentation integrated out
    (``outcome_collapsed``); the augmentation must be redrawn next."""
    od = ost.od
    J, q, nf = data.n_clusters, od.q, od.n_fixed
    beta, b, cov = oc.block(oc.link_code(ost.link), o.D, nf, np.arange(q), data.cluster, ost.obs_rows, ost.sign,
                            np.zeros(o.D.shape[0]), o.beta, o.b, o.cov, od.prior_scale, ost.coord_df,
                            *oc.random_numbers(rng, J, q, nf), o.eta)
    return o._replace(beta=beta, b=b, cov=cov)


PROBIT_SCALE = True   # switched off only to measure what the move gives (benchmarks)


def probit_scale(rng, resid: np.ndarray, n_fixed: int, blocks) -> float:
    """The probit outcome's scale move: y* → αy*, β → αβ, b → αb, Σ_b → α²Σ_b together, α
    drawn by Metropolis–Hastings from the posterior along that group (Liu & Sabatti 2000; the
    parameter-expanded data augmentation of probit regression, Liu & Wu 1999, with the model's
    own priors kept).

    Why: y* | η has variance 1 and pins η, and (β, b) | y* pins them in turn, so the overall
    scale of the linear predictor, and with it Σ_b, moves by small steps of a Gibbs scan. In long
    runs the move raised the smallest ESS of the outcome's parameters (``python
    benchmarks/binomial_moves_ab.py --move scale``, before the collapsed block: median 181
    against 133 of 4,000 draws, lowest 112 against 43), at 5–13 % more CPU; the collapsed block
    (``outcome_collapsed``), which integrates y* out, does more.

    The sign of α y* is y*'s, so every truncation holds. With n the rows with an observed
    outcome, f the fixed effects (flat prior) and blocks of width w, df ν and scale Ψ, the target
    at the moved point times the move's Jacobian is α^(n + f − Σ wν) exp(−½ α² R − ½ α⁻² T),
    R = Σ (y* − η)², T = Σ tr(Ψ_b Σ_b⁻¹), a density on the group's Haar measure dα/α: s = α² is
    generalized inverse Gaussian with λ = (n + f − Σ wν)/2, χ = T, ψ = R
    (``tests/test_sampler_math.py`` checks it against the density written out), taken by one
    step of ``gig_log_step``. The general sampler's component (``outcome_multi``) takes the same
    move with every classification's effects and blocks.

    ``resid``: y* − η on the observed rows; ``blocks``: per random-effect covariance, (Ψ, Σ_b,
    block starts, widths, dfs) as ``prior_trace`` reads them (one entry in the two-level sampler,
    one per formula term in the general one). Returns α."""
    T, wnu = 0.0, 0.0
    for psi, cov, bstart, bwidth, bdf in blocks:
        t, w = prior_trace(psi, cov, bstart, bwidth, bdf)
        T, wnu = T + t, wnu + w
    lam = 0.5 * (resid.size + n_fixed - wnu)
    return float(np.exp(0.5 * gig_log_step(rng, lam, T, float(resid @ resid))))


def prior_trace(psi: np.ndarray, cov: np.ndarray, bstart, bwidth, bdf) -> tuple[float, float]:
    """Σ over covariance blocks of tr(Ψ_b Σ_b⁻¹), and Σ w_b ν_b."""
    T, wnu = 0.0, 0.0
    for start, width, df in zip(bstart, bwidth, bdf):
        s, w = int(start), int(width)
        if w == 1:
            T += psi[s, s] / cov[s, s]
        elif w == 2:   # tr(Ψ Σ⁻¹) of a 2 × 2 block written out (a sweep's call: solve costs 5 µs)
            a, b, d = cov[s, s], cov[s, s + 1], cov[s + 1, s + 1]
            T += (psi[s, s] * d - 2.0 * psi[s, s + 1] * b + psi[s + 1, s + 1] * a) / (a * d - b * b)
        else:
            blk = slice(s, s + w)
            T += float(np.trace(np.linalg.solve(cov[blk, blk], psi[blk, blk])))
        wnu += w * float(df)
    return float(T), wnu


def gig_log_step(rng, lam: float, chi: float, psi: float, u: float = 0.0) -> float:
    """One Metropolis–Hastings step, from u, on u = log s for s generalized inverse Gaussian
    (density ∝ s^(λ−1) exp(−(ψ s + χ/s)/2), so u's is ∝ exp(λu − (ψ e^u + χ e^−u)/2), log-concave):
    an independence proposal from the normal at u's mode with 1.25 times its curvature's SD.
    With hundreds of rows the target is that normal to within a few percent and nearly every
    proposal is taken; scipy's exact sampler costs about 150 µs a call, a sweep's worth."""
    mode = np.log((lam + np.hypot(lam, np.sqrt(chi * psi))) / psi) if lam >= 0 else \
        np.log(chi / (np.hypot(lam, np.sqrt(chi * psi)) - lam))
    sd = 1.25 / np.sqrt(0.5 * (psi * np.exp(mode) + chi * np.exp(-mode)))
    prop = mode + sd * rng.standard_normal()

    def log_target(v: float) -> float:
        return lam * v - 0.5 * (psi * np.exp(v) + chi * np.exp(-v))

    def log_q(v: float) -> float:
        return -0.5 * ((v - mode) / sd) ** 2

    log_ratio = log_target(prop) - log_target(u) + log_q(u) - log_q(prop)
    return float(prop) if np.log(rng.random()) < log_ratio else float(u)


def tuned_steps(steps: np.ndarray, adapt_at: int | None, mh: tuple | None) -> np.ndarray:
    """The cells' MH step multipliers after a burn-in sweep's acceptances (``mh``: accepted and
    tried per source), towards ``MH_TARGET``; unchanged after burn-in."""
    if adapt_at is not None and mh is not None:
        accepted, tried = mh
        moved = tried > 0
        if moved.any():
            gain = min(0.5, 3.0 / np.sqrt(adapt_at + 1.0))
            steps = steps.copy()
            steps[moved] *= np.exp(gain * (accepted[moved] / tried[moved] - MH_TARGET))
    return steps


def expand_random_effects(rng, ost: OutcomeStatic, b: np.ndarray, WW: np.ndarray,
                          Wr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Σ_b | b (inverse-Wishart per covariance block), then a parameter-expansion move on
    (b, Σ_b): every random-effect column k is rescaled, b_jk → a_k b_jk and Σ_b → A Σ_b A with
    A = diag(a), a drawn by Metropolis–Hastings (compiled: ``covariance_and_expansion``).

    Why: given b, Σ_b is pinned (its inverse-Wishart has J + df degrees of freedom), and given
    Σ_b near 0 the b are pinned near 0, so a Gibbs sampler crawls between the two (and a
    variance can sit at 0 for thousands of sweeps). Rescaling both at once moves along that
    ridge in one step (Liu & Wu 1999; van Dyk & Meng 2001; Gelman et al. 2008).

    The move is a Metropolis–Hastings step of the transformation group (Liu & Sabatti 2000):
    the outcome's pseudo-likelihood is Gaussian in a, N(â, V) with V = (W'ΩW)⁻¹, â = V W'Ω r,
    w_ik = z_ik b_jk and r the fixed part's residual; a is proposed from it, and the ratio of
    target × Jacobian × reverse proposal (densities on the group's Haar measure) reduces to::

        α = min{1, Π_blocks |A_b|^{-ν_b} · |A|^{-1} · exp(½ Σ_b tr(Ψ_b Σ_b⁻¹) − ½ Σ_b tr(Ψ_b (A_bΣ_bA_b)⁻¹))}

    with ν_b, Ψ_b the inverse-Wishart prior of block b (a proposal with some a_k ≤ 0 is
    rejected). The prior stays the target: nothing about Σ_b's prior changes.
    """
    J = b.shape[0]
    chi = np.empty(ost.chi_df.size)   # = rng.chisquare(chi_df + J), element by element (cheaper)
    for k, d in enumerate(ost.chi_df_list):
        chi[k] = rng.chisquare(d + J)
    z = rng.standard_normal(ost.n_lower + b.shape[1])
    logu = np.log(rng.random())
    b, cov, _, good = ok.covariance_and_expansion(b, ost.od.prior_scale, ost.bstart, ost.bwidth, ost.bdf,
                                                  WW, Wr, chi, z[:ost.n_lower], z[ost.n_lower:], logu)
    if not good:
        raise np.linalg.LinAlgError("the substantive model's random-effect covariance is not positive definite")
    return b, cov


def impute_outcome(rng, ost: OutcomeStatic, o: OutcomeState, data: ModelData, y1, y2,
                   cuts: dict) -> np.ndarray:
    """Draw the missing outcomes from the analysis model at the current covariates: values
    (gaussian) or category codes (binomial) at ``ost.miss_rows``."""
    rows = ost.miss_rows
    if not rows.size:
        return np.zeros(0)
    od = ost.od
    refresh_sources(ost, o.S, rows, y1, y2, data.cluster, cuts)
    ok.design_rows(o.S, rows, o.D, ost.prog)
    ok.linear_predictor(o.D, od.n_fixed, o.beta, o.b, data.cluster, rows, o.eta)
    eta = o.eta[rows]
    if ost.family == "gaussian":
        return eta + np.sqrt(o.sigma2) * rng.standard_normal(rows.size)
    p = ndtr(eta) if ost.link == "probit" else expit(eta)
    return (rng.random(rows.size) < p).astype(np.int64)


def outcome_trace_names(od: OutcomeData) -> list[str]:
    y = od.name
    names = [f"{y}~beta[{n}]" for n in od.x_names]
    for start, width in od.blocks:
        for a in range(width):
            for c in range(a + 1):
                names.append(f"{y}~cov[{od.z_names[start + a]},{od.z_names[start + c]}]")
    if od.family == "gaussian":
        names.append(f"{y}~sigma2")
    return names


def outcome_trace(od: OutcomeData, o: OutcomeState) -> np.ndarray:
    parts = [o.beta]
    for start, width in od.blocks:
        i, j = np.tril_indices(width)
        parts.append(o.cov[start + i, start + j])
    if od.family == "gaussian":
        parts.append([o.sigma2])
    return np.concatenate(parts)
