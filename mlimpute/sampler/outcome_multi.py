"""The substantive-model component of the general sampler: the analysis model with random
effects of several classifications, beside classifications and variance functions of model (6).

Model (read ``outcome``'s notes first: this is that component with one change)::

    y_i = D_i(x) β + Σ_c D^c_i(x) b^(c)_{unit_c(i)} + e_i,   b^(c)_k ~ N(0, Σ^(c))

— each random term of the formula groups by one classification of the imputation model
(``substantive.term_classification``), its effects independent of the other classifications';
for a multiple membership ``mm(s1, s2, weights = (w1, w2))`` the row's term is
``D^c_i(x) Σ_m w_im b^(c)_{id_im}``.
The joint model of the covariates (classifications, variance functions) is the general
sampler's; the two meet only through the completed covariates and the linear predictor.

Steps, each an exact Gibbs or Metropolis–Hastings step of the joint posterior:

0. Binomial outcomes: the collapsed block of ``outcome_collapsed`` for each classification of
   single membership in turn (the other classifications' effects in the offset). A multiple
   membership's effects get step 2's exact block and expansion move only (a formula with a
   multiple membership has no other random term, so the block does not run there).
1. Augmentation (binomial) as ``outcome``.
2. For each classification c of the formula in turn: (β, b^(c)) as one exact block given the
   other classifications' effects (their part of the linear predictor is an offset), by the
   two-level component's compiled block on the rows with an observed outcome (a multiple
   membership's units share rows: one sparse exact draw, ``_membership_block``); then Σ^(c) per
   covariance block and the parameter-expansion move of (b^(c), Σ^(c)) (``outcome``'s
   ``expand_random_effects``, with that classification's statistics). β is drawn once per
   classification: each draw is from its full conditional, so the scan stays exact.
3. σ² | residuals (gaussian).
4. Missing covariate cells of units with an observed outcome among their rows, given both
   models: level-1 rows, and the units of each classification at which a variable of the
   formula is measured (all rows of the unit read its value), by the two-level component's
   compiled cells kernel (exact normal where linear, MH otherwise, categories among intervals).
   The kernel reads a row's random coefficients as ``b[cluster[i]]``: it is given the rows'
   coefficients R (R[i, k] = b^(c_k)[unit_{c_k}(i), k]) with every row its own "cluster", and
   a unit's rows gathered next to each other (a crossed or inner classification's units are
   not contiguous in the sorted rows), then written back.
5. Missing outcomes from the analysis model when an imputation is taken.

As in the two-level sampler: the joint model's own missing-cell draw leaves those units out;
the current categories of ordinal formula covariates at them count as observed in the
latent step (``effective_codes``), and the collapsed block of a classification's rare columns
holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.special import expit, ndtr

from ..design import ModelData
from . import _outcome_kernels as ok
from . import outcome
from . import outcome_collapsed as oc
from .outcome import (_augment, _columns, _Columns, _needs_uniforms, _padded_cuts, _pseudo, block_dfs, held_codes,
                      singular_outcome, source_values, tuned_steps)

__all__ = ["GeneralOutcomeState", "GeneralOutcomeStatic", "prepare_general_outcome", "initial_general_outcome",
           "draw_general_cells", "draw_general_parameters", "general_effective_codes", "impute_general_outcome",
           "held_units"]

LEVEL1 = -1


class GeneralOutcomeState(NamedTuple):
    """``outcome.OutcomeState`` with the random effects per classification of the formula
    (``b``: one array per term of ``GeneralOutcomeStatic.terms``, units × its columns), ``cov``
    the whole block-diagonal covariance (q × q) and ``R`` the rows' random coefficients."""

    beta: np.ndarray
    b: tuple
    cov: np.ndarray
    sigma2: float
    aux: np.ndarray
    S: np.ndarray
    D: np.ndarray
    eta: np.ndarray
    steps: np.ndarray
    R: np.ndarray


@dataclass(frozen=True, eq=False)
class Term:
    """The formula's random effects of one classification."""

    cls: int                 # the classification (sampler order)
    cols: np.ndarray         # its random-effect columns among the q
    unit: np.ndarray | None  # each row's unit (None: a multiple membership)
    unit_obs: np.ndarray | None   # the same at the rows with an observed outcome
    n_units: int
    bstart: np.ndarray       # its covariance blocks, within cols
    bwidth: np.ndarray
    bdf: np.ndarray
    chi_df_list: tuple
    n_lower: int
    prior_scale: np.ndarray
    coord_df: np.ndarray     # each of its columns' block df (the collapsed block's scale steps)
    stat0: tuple             # zero cross-products (every row's are formed each sweep)
    ids: np.ndarray | None = None       # multiple membership: (N, m) units (−1: none) and weights
    weights: np.ndarray | None = None
    obs_ids: np.ndarray | None = None   # the same at the rows with an observed outcome
    obs_weights: np.ndarray | None = None
    pattern: tuple = ()      # its (β, b) design's sparse pattern at the observed rows (``_membership_block``)


@dataclass(frozen=True, eq=False)
class Part:
    """Units (level-1 rows, or a classification's units) whose missing formula cells are drawn
    given the outcome: unit r's rows are ``ustart[r]:ustop[r]`` of the data, or where a
    classification's units are not contiguous, ``rows[ustart[r]:ustop[r]]`` (gathered)."""

    level: int               # LEVEL1 or the classification (sampler order)
    units: np.ndarray
    rows: np.ndarray | None  # None: the units' rows are contiguous (no gathering)
    ustart: np.ndarray
    ustop: np.ndarray
    first: np.ndarray        # a row of each unit (of the data)
    cols: _Columns
    n_cells: int
    uniforms: bool
    cen: np.ndarray
    sc: np.ndarray
    override: tuple          # (ordinal index, units' positions in ``units``) of ordinal formula covariates


@dataclass(frozen=True, eq=False)
class GeneralOutcomeStatic:
    od: object
    prog: tuple
    obs_rows: np.ndarray
    miss_rows: np.ndarray
    kappa: np.ndarray
    terms: tuple
    parts: tuple
    src_codec: tuple         # per source: its codec (None: complete)
    src_level: tuple         # per source: LEVEL1 or its classification
    scales: dict             # level → (centre, scale) of its latent columns
    identity: np.ndarray     # 0..N−1: every row its own "cluster" of R
    yobs: np.ndarray         # the observed outcomes (gaussian)
    sign: np.ndarray         # binomial: 2y − 1 at every row (0 where missing)

    @property
    def family(self) -> str:
        return self.od.family

    @property
    def link(self) -> str:
        return self.od.link


def _scales(data: ModelData, level: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    sc = data.scaling
    if sc is None:
        return np.zeros(p), np.ones(p)
    cen, s = sc.y1 if level == LEVEL1 else sc.classes[level]
    return np.ascontiguousarray(cen, dtype=float), np.ascontiguousarray(s, dtype=float)


def _gathered(unit: np.ndarray, chosen: np.ndarray, n_units: int) -> tuple:
    """The rows of the ``chosen`` units, each unit's together, and each one's (start, stop)."""
    order = np.argsort(unit, kind="stable")
    starts = np.searchsorted(unit[order], np.arange(n_units + 1))
    sizes = starts[chosen + 1] - starts[chosen]
    rows = np.concatenate([order[starts[k]:starts[k + 1]] for k in chosen]) if chosen.size else np.zeros(0, np.int64)
    ustop = np.cumsum(sizes)
    return rows.astype(np.int64), (ustop - sizes).astype(np.int64), ustop.astype(np.int64)


def _levels(data: ModelData) -> list[tuple[int, tuple, np.ndarray, int]]:
    """(level, codecs, miss, units) of level 1 and of every classification with variables."""
    out = [(LEVEL1, tuple(c for c in data.codecs if c.level == 1), data.miss1, data.n_rows)]
    for ci, cd in enumerate(data.classes):
        if cd.codecs:
            out.append((ci, tuple(cd.codecs), cd.miss, cd.n_units))
    return out


def _ordinals(data: ModelData, level: int) -> list[str]:
    if level == LEVEL1:
        return [c.name for c in data.categorical1 if c.kind == "ordinal"]
    return [c.name for c in data.classes[level].codecs if c.kind == "ordinal"]


def prepare_general_outcome(data: ModelData) -> GeneralOutcomeStatic:
    od = data.outcome
    p = od.program
    prog = (p.const, p.col_ptr, p.src, p.kind, p.par, np.ascontiguousarray(p.tables), p.dep_ptr, p.dep_cols)
    n = od.y.size
    obs = np.flatnonzero(od.observed)
    nf = od.n_fixed
    names = [c.name for c in data.classes]
    terms = []
    for ci, cd in enumerate(data.classes):
        cols = np.array([k for k, g in enumerate(od.z_class) if g == cd.name], np.int64)
        if not cols.size:
            continue
        blocks = [(s, w) for s, w in od.blocks if s in set(cols.tolist())]
        at = {int(c): k for k, c in enumerate(cols)}
        bstart = np.array([at[s] for s, _ in blocks], np.int64)
        bwidth = np.array([w for _, w in blocks], np.int64)
        bdf = block_dfs(od, bwidth)
        unit = None if cd.unit is None else cd.unit.astype(np.int64)
        qc, K = cols.size, cd.n_units
        mm = {} if unit is not None else dict(
            ids=cd.ids.astype(np.int64), weights=np.asarray(cd.weights, float), obs_ids=cd.ids[obs].astype(np.int64),
            obs_weights=np.asarray(cd.weights, float)[obs], pattern=_membership_pattern(cd.ids[obs], nf, qc, K))
        terms.append(Term(
            cls=ci, cols=cols, unit=unit, **mm,
            unit_obs=None if unit is None else np.ascontiguousarray(unit[obs]), n_units=K, bstart=bstart,
            bwidth=bwidth, bdf=bdf,
            chi_df_list=tuple(float(v) for d, w in zip(bdf, bwidth) for v in d - np.arange(w)),
            n_lower=int(sum(w * (w - 1) // 2 for w in bwidth)),
            prior_scale=np.ascontiguousarray(od.prior_scale[np.ix_(cols, cols)]),
            coord_df=np.repeat(bdf.astype(float), bwidth),
            stat0=(np.zeros((nf, nf)), np.zeros(nf), np.zeros((K, qc, qc)), np.zeros((K, qc, nf)),
                   np.zeros((K, qc)))))
    if sum(t.cols.size for t in terms) != od.q:   # (term_classification names only these)
        raise ValueError(f"substantive random effects {od.z_class} of classifications other than {names}")
    codec_of = {c.name: c for c in data.codecs}
    src_of = {s.codec: k for k, s in enumerate(od.sources) if s.codec is not None}
    level_of = {}
    for level, codecs, _, _ in _levels(data):
        for c in codecs:
            level_of[c.name] = level
    scales = {LEVEL1: _scales(data, LEVEL1, data.miss1.shape[1]),
              **{ci: _scales(data, ci, cd.miss.shape[1]) for ci, cd in enumerate(data.classes)}}
    parts = []
    for level, codecs, miss, n_units in _levels(data):
        read = [c for c in codecs if c.name in src_of]
        if not read:
            continue
        m = np.zeros(n_units, bool)
        for c in read:
            m |= miss[:, c.cols[0]]
        if level == LEVEL1:
            units = np.flatnonzero(m & od.observed)
            rows, ustart, ustop = None, units, units + 1
        else:
            unit = data.classes[level].unit.astype(np.int64)
            has_obs = np.bincount(unit[obs], minlength=n_units) > 0
            units = np.flatnonzero(m & has_obs)
            if np.all(np.diff(unit) >= 0):   # sorted by this classification: contiguous
                starts = np.searchsorted(unit, np.arange(n_units + 1))
                rows, ustart, ustop = None, starts[units], starts[units + 1]
            else:
                rows, ustart, ustop = _gathered(unit, units, n_units)
        ords = _ordinals(data, level)
        cols = _columns(codecs, miss.shape[1], src_of, ords)
        override = tuple((ords.index(c.name), np.flatnonzero(miss[units, c.cols[0]]))
                         for c in read if c.kind == "ordinal")
        cen, sc = scales[level]
        parts.append(Part(level=level, units=units.astype(np.int64), rows=rows, ustart=ustart.astype(np.int64),
                          ustop=ustop.astype(np.int64), first=(ustart if rows is None else rows[ustart]).astype(np.int64),
                          cols=cols, n_cells=int(miss[units].sum()),
                          uniforms=_needs_uniforms(cols, od.program.linear), cen=cen, sc=sc,
                          override=override))
    return GeneralOutcomeStatic(
        od=od, prog=prog, obs_rows=obs, miss_rows=np.flatnonzero(~od.observed),
        kappa=np.where(od.observed, np.nan_to_num(od.y) - 0.5, 0.0), terms=tuple(terms),
        parts=tuple(pt for pt in parts if pt.units.size),
        src_codec=tuple(None if s.codec is None else codec_of[s.codec] for s in od.sources),
        src_level=tuple(None if s.codec is None else level_of[s.codec] for s in od.sources),
        scales=scales, identity=np.arange(n, dtype=np.int64),
        yobs=od.y[obs] if od.family == "gaussian" else np.zeros(0),
        sign=np.where(od.observed, 2.0 * np.nan_to_num(od.y) - 1.0, 0.0) if od.family == "binomial" else np.zeros(0),
    )


def held_units(ost: GeneralOutcomeStatic | None, data: ModelData, level: int) -> dict:
    """Variable name → the units (rows at level 1) of ``level`` whose missing category the
    component holds (for ``collapsed.rare_columns``)."""
    if ost is None:
        return {}
    out = {}
    for pt in ost.parts:
        if pt.level != level:
            continue
        codecs = data.codecs if level == LEVEL1 else data.classes[level].codecs
        miss = data.miss1 if level == LEVEL1 else data.classes[level].miss
        read = {c.name for c in ost.src_codec if c is not None}
        for c in codecs:
            if c.name in read and c.kind != "continuous" and (level != LEVEL1 or c.level == 1):
                out[c.name] = pt.units[miss[pt.units, c.cols[0]]]
    return out


def missing_left(ost: GeneralOutcomeStatic | None, level: int, miss: np.ndarray) -> np.ndarray:
    """``miss`` without the units whose cells the component draws (the joint model's
    missing-cell step leaves them out)."""
    if ost is None:
        return miss
    for pt in ost.parts:
        if pt.level == level:
            miss = miss.copy()
            miss[pt.units] = False
    return miss


def refresh_sources(ost: GeneralOutcomeStatic, S: np.ndarray, rows: np.ndarray, y1: np.ndarray, ys,
                    data: ModelData, cuts: dict) -> None:
    """Set the incomplete sources of ``rows`` from the joint model's completed data."""
    if not rows.size:
        return
    for s, codec in enumerate(ost.src_codec):
        if codec is None:
            continue
        level = ost.src_level[s]
        at, y = (rows, y1) if level == LEVEL1 else (data.classes[level].unit[rows], ys[level])
        S[rows, s] = source_values(codec, y[at][:, list(codec.cols)], at, *ost.scales[level], cuts)


def initial_general_outcome(ost: GeneralOutcomeStatic, data: ModelData, y1, ys, cuts: dict,
                            rng: np.random.Generator) -> GeneralOutcomeState:
    od = ost.od
    n = od.y.size
    S = od.S0.copy()
    refresh_sources(ost, S, ost.identity, y1, ys, data, cuts)
    D = np.empty((n, od.program.n_cols))
    ok.design_rows(S, ost.identity, D, ost.prog)
    bs = tuple(np.zeros((t.n_units, t.cols.size)) for t in ost.terms)
    R = np.zeros((n, od.q))
    eta = np.empty(n)
    ok.linear_predictor(D, od.n_fixed, od.beta0, R, ost.identity, ost.identity, eta)
    aux = np.zeros(0)
    if ost.family == "binomial":
        aux = _augment(rng, ost, eta, np.zeros(n))
    return GeneralOutcomeState(beta=od.beta0.copy(), b=bs, cov=od.cov0.copy(), sigma2=float(od.sigma2_0),
                               aux=aux, S=S, D=D, eta=eta, steps=np.full(len(od.sources), 2.4), R=R)


def general_effective_codes(ost: GeneralOutcomeStatic | None, o: GeneralOutcomeState, codecs, level: int) -> tuple | None:
    """Category codes for the latent step of ``level`` in which the current categories of
    ordinal formula covariates at the component's units count as observed."""
    pt = None if ost is None else next((pt for pt in ost.parts if pt.level == level), None)
    if pt is None:
        return None
    return held_codes(ost.src_codec, o.S, codecs, [(o_idx, pt.units[pos], pt.first[pos]) for o_idx, pos in pt.override])


def draw_general_cells(rng, ost: GeneralOutcomeStatic, o: GeneralOutcomeState, y_of, conditional_of,
                       miss_of, cuts_of) -> tuple[np.ndarray, np.ndarray]:
    """Missing covariate cells of the component's units given both models (in place). ``y_of``,
    ``miss_of``, ``cuts_of`` (thresholds tuple): level → the completed array, its missing mask
    and thresholds; ``conditional_of(level, part)`` → (mean (units × p), precisions stack, index
    of each unit's precision) of model (6). Returns the MH acceptances and tries per source."""
    ytil, w, wconst = _pseudo(ost, o)
    nsrc = o.steps.size
    accepted = np.zeros(nsrc, np.int64)
    tried = np.zeros(nsrc, np.int64)
    od = ost.od
    for pt in ost.parts:
        rows = pt.rows
        if rows is None:
            S, D, eta, R, yt, wg, seen = o.S, o.D, o.eta, o.R, ytil, w, od.observed
        else:
            S, D, eta, R, yt, seen = o.S[rows], o.D[rows], o.eta[rows], o.R[rows], ytil[rows], od.observed[rows]
            wg = w[rows] if wconst == 0.0 else w
        mean, Q, qidx = conditional_of(pt.level, pt)
        c = pt.cols
        ok.cells(y_of[pt.level], mean, Q, qidx, pt.units, pt.ustart, pt.ustop, miss_of[pt.level], c.kind, c.first,
                 c.width, c.src, c.cut, pt.cen, pt.sc, _padded_cuts(cuts_of[pt.level]), od.program.linear,
                 od.program.quadratic,
                 seen, ost.identity, S, D, ost.prog, od.n_fixed, o.beta, R, eta, yt, wg,
                 wconst, o.steps, accepted, tried, rng.standard_normal(pt.n_cells),
                 1.0 - rng.random(2 * pt.n_cells) if pt.uniforms else np.zeros(0))
        if rows is not None:
            o.S[rows], o.D[rows], o.eta[rows] = S, D, eta
    return accepted, tried


def draw_general_parameters(rng, ost: GeneralOutcomeStatic, o: GeneralOutcomeState,
                            adapt_at: int | None = None, mh: tuple | None = None) -> GeneralOutcomeState:
    """Steps 1–3 of the module notes, then the linear predictors of the new (β, b)."""
    od = ost.od
    nf = od.n_fixed
    obs = ost.obs_rows
    aux = o.aux
    if ost.family == "binomial":
        if oc.ENABLED:
            o = _collapsed_blocks(rng, ost, o)
        aux = _augment(rng, ost, o.eta, aux)
        o = o._replace(aux=aux)
    ytil, w, wconst = _pseudo(ost, o)
    w_obs = w[obs] if wconst == 0.0 else w
    R = o.R
    rows = np.arange(obs.size, dtype=np.int64)
    beta = o.beta
    bs = list(o.b)
    cov = o.cov.copy()
    for t, term in enumerate(ost.terms):
        qc = term.cols.size
        Dc, yc = np.empty((obs.size, nf + qc)), np.empty(obs.size)
        ok.term_inputs(o.D, R, obs, nf, term.cols, ytil, Dc, yc)
        cov_t = np.ascontiguousarray(cov[np.ix_(term.cols, term.cols)])
        if term.unit is None:
            beta, b, WW, Wr, good = _membership_block(rng, term, Dc, yc, w_obs, wconst, cov_t)
        else:
            z = rng.standard_normal(nf + term.n_units * qc)
            beta, b, WW, Wr, good, _ = ok.outcome_block(Dc, nf, yc, w_obs, wconst, rows, rows, term.stat0,
                                                        term.unit_obs, cov_t, term.bstart, term.bwidth, z)
        if not good:
            raise singular_outcome(od, o.D, obs)
        chi = np.empty(len(term.chi_df_list))
        for k, d in enumerate(term.chi_df_list):
            chi[k] = rng.chisquare(d + term.n_units)
        zz = rng.standard_normal(term.n_lower + qc)
        b, cov_t, _, good = ok.covariance_and_expansion(b, term.prior_scale, term.bstart, term.bwidth, term.bdf,
                                                        WW, Wr, chi, zz[:term.n_lower], zz[term.n_lower:],
                                                        np.log(rng.random()))
        if not good:
            raise np.linalg.LinAlgError("the substantive model's random-effect covariance is not positive definite")
        bs[t] = b
        cov[np.ix_(term.cols, term.cols)] = cov_t
        if term.unit is None:
            R[:, term.cols] = _membership_sums(b, term.ids, term.weights)
        else:
            ok.set_coefficients(R, b, term.unit, term.cols)
    eta = o.eta
    ok.linear_predictor(o.D, nf, beta, R, ost.identity, obs, eta)
    if ost.family == "binomial" and ost.link == "probit" and outcome.PROBIT_SCALE:
        alpha = outcome.probit_scale(rng, aux[obs] - eta[obs], nf,
                                     [(term.prior_scale, cov[np.ix_(term.cols, term.cols)], term.bstart, term.bwidth,
                                       term.bdf) for term in ost.terms])
        beta, bs, cov = beta * alpha, [b * alpha for b in bs], cov * alpha ** 2
        R *= alpha
        aux *= alpha
        eta *= alpha
    sigma2 = o.sigma2
    if ost.family == "gaussian":
        res = ost.yobs - eta[obs]
        sigma2 = float((od.sigma2_prior + res @ res) / rng.chisquare(1.0 + obs.size))
    return GeneralOutcomeState(beta, tuple(bs), cov, sigma2, aux, o.S, o.D, eta, tuned_steps(o.steps, adapt_at, mh), R)


def _collapsed_blocks(rng, ost: GeneralOutcomeStatic, o: GeneralOutcomeState) -> GeneralOutcomeState:
    """``outcome.collapsed_block`` for each classification of single membership in turn, the
    other classifications' effects in the offset (a multiple membership, which a formula takes
    only on its own, gets the exact block and the expansion move only); the augmentation must be
    redrawn next."""
    od = ost.od
    nf, obs, D, R = od.n_fixed, ost.obs_rows, o.D, o.R
    beta, bs, cov = o.beta, list(o.b), o.cov.copy()
    for t, term in enumerate(ost.terms):
        if term.unit is None:
            continue
        qc = term.cols.size
        other = np.ones(od.q, bool)
        other[term.cols] = False
        off = np.einsum("ik,ik->i", D[:, nf:][:, other], R[:, other]) if other.any() else np.zeros(D.shape[0])
        at = np.ix_(term.cols, term.cols)
        beta, b, cov_t = oc.block(oc.link_code(ost.link), D, nf, term.cols, term.unit, obs, ost.sign, off, beta, bs[t],
                                  np.ascontiguousarray(cov[at]), term.prior_scale, term.coord_df,
                                  *oc.random_numbers(rng, term.n_units, qc, nf), o.eta)
        bs[t] = b
        cov[at] = cov_t
        ok.set_coefficients(R, b, term.unit, term.cols)
    return o._replace(beta=beta, b=tuple(bs), cov=cov)


def impute_general_outcome(rng, ost: GeneralOutcomeStatic, o: GeneralOutcomeState, data: ModelData, y1, ys,
                           cuts: dict) -> np.ndarray:
    """The missing outcomes drawn from the analysis model at the current covariates."""
    rows = ost.miss_rows
    if not rows.size:
        return np.zeros(0)
    od = ost.od
    refresh_sources(ost, o.S, rows, y1, ys, data, cuts)
    ok.design_rows(o.S, rows, o.D, ost.prog)
    ok.linear_predictor(o.D, od.n_fixed, o.beta, o.R, ost.identity, rows, o.eta)
    eta = o.eta[rows]
    if ost.family == "gaussian":
        return eta + np.sqrt(o.sigma2) * rng.standard_normal(rows.size)
    p = ndtr(eta) if ost.link == "probit" else expit(eta)
    return (rng.random(rows.size) < p).astype(np.int64)


# ------------------------------------------------------------------------------------------
# A multiple membership of the formula: (β, b) as one sparse exact draw
# ------------------------------------------------------------------------------------------
def _membership_sums(b: np.ndarray, ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each row's Σ_m w_im b[id_im] (rows × columns of b)."""
    out = np.zeros((ids.shape[0], b.shape[1]))
    for m in range(ids.shape[1]):
        present = ids[:, m] >= 0
        out[present] += weights[present, m, None] * b[ids[present, m]]
    return out


DENSE_MAX = 800   # unknowns (nf + units × effects) up to which the membership block is solved densely


def _membership_pattern(ids: np.ndarray, nf: int, qc: int, K: int) -> tuple:
    """The pattern of the design rows [x_i, Σ_m w_im (e_{id_im} ⊗ z_i)] at the observed rows:
    each row's columns (nf fixed, then qc per membership; an absent id's entries get column 0
    and value 0), the flat (row, column) index of each entry of its outer product, and of the
    prior's blocks I_K ⊗ Σ⁻¹, in a ``size × size`` system."""
    n, m = ids.shape
    size = nf + K * qc
    unit_cols = nf + np.maximum(ids, 0)[:, :, None].astype(np.int64) * qc + np.arange(qc)   # (n, m, qc)
    cols = np.concatenate([np.tile(np.arange(nf), (n, 1)), unit_cols.reshape(n, m * qc)], axis=1)
    present = np.concatenate([np.ones((n, nf), bool), np.repeat(ids >= 0, qc, axis=1)], axis=1)
    cols = np.where(present, cols, 0)
    pairs = (cols[:, :, None] * size + cols[:, None, :]).ravel()
    block = nf + np.arange(K)[:, None] * qc + np.arange(qc)                                   # (K, qc)
    prior = (block[:, :, None] * size + block[:, None, :]).ravel()
    return cols, present, pairs, prior, size


def _membership_block(rng, term: Term, Dc: np.ndarray, yc: np.ndarray, w_obs, wconst: float, cov: np.ndarray):
    """(β, b) | rest for a multiple membership of the formula, one exact draw: with the design
    A = [X, Σ_m w_m (e_{id_m} ⊗ z)], row precisions ω and P = A'ΩA + blockdiag(0, I ⊗ Σ⁻¹),
    θ = P⁻¹(A'Ωỹ + A'Ω^½ε + (0, (I ⊗ F)η)), F F' = Σ⁻¹, ε, η standard normal, has the law
    N(P⁻¹A'Ωỹ, P⁻¹) (Papandreou & Yuille 2010), flat prior on β as the other blocks. P is
    summed from the rows' outer products by their flat indices: dense and Cholesky-factored up
    to ``DENSE_MAX`` unknowns, else sparse (SuperLU). Then the expansion move's statistics
    W'ΩW, W'Ωr (w_ik = z_ik R_ik, the rows' random part in column k; r the fixed part's
    residual)."""
    from scipy import sparse
    from scipy.linalg import cho_solve, cholesky, LinAlgError
    from scipy.sparse.linalg import splu

    nf = Dc.shape[1] - term.cols.size
    qc, K = term.cols.size, term.n_units
    cols, present, pairs, prior_idx, size = term.pattern
    n = Dc.shape[0]
    wts = term.obs_weights
    vals = np.concatenate([Dc[:, :nf], (wts[:, :, None] * Dc[:, None, nf:]).reshape(n, -1)], axis=1)
    vals = np.where(present, vals, 0.0)
    omega = np.full(n, wconst) if wconst > 0.0 else w_obs
    sinv = np.linalg.inv(cov)
    outer = (omega[:, None, None] * vals[:, :, None] * vals[:, None, :]).ravel()
    prior_vals = np.tile(sinv.ravel(), K)
    F = np.linalg.cholesky(sinv)
    h = np.bincount(cols.ravel(), weights=(vals * (omega * yc + np.sqrt(omega) * rng.standard_normal(n))[:, None]).ravel(),
                    minlength=size)
    h[nf:] += (rng.standard_normal((K, qc)) @ F.T).ravel()
    try:
        if size <= DENSE_MAX:
            P = np.bincount(np.concatenate([pairs, prior_idx]), weights=np.concatenate([outer, prior_vals]),
                            minlength=size * size).reshape(size, size)
            theta = cho_solve((cholesky(P, lower=True, check_finite=False), True), h, check_finite=False)
        else:
            idx = np.concatenate([pairs, prior_idx])
            P = sparse.csc_matrix((np.concatenate([outer, prior_vals]), (idx // size, idx % size)), shape=(size, size))
            lu = splu(P, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True}, diag_pivot_thresh=0.0)
            theta = lu.solve(h)
    except (LinAlgError, RuntimeError):   # not positive definite / singular
        return np.zeros(nf), np.zeros((K, qc)), np.zeros((qc, qc)), np.zeros(qc), False
    beta, b = theta[:nf], theta[nf:].reshape(K, qc)
    Wmat = Dc[:, nf:] * _membership_sums(b, term.obs_ids, wts)
    r = yc - Dc[:, :nf] @ beta
    WW = Wmat.T @ (omega[:, None] * Wmat)
    Wr = Wmat.T @ (omega * r)
    return beta, b, np.ascontiguousarray(WW), np.ascontiguousarray(Wr), bool(np.all(np.isfinite(theta)))
