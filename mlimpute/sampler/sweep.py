"""One Gibbs sweep of the joint model, composed from the full conditionals.

Order: latents of observed categorical cells (with ordinal thresholds) → the collapsed block
of each rare category's latent column, level 1 then level 2 (``collapsed``) → (B1, B2, U1) as one block (with the
scale move of U1) → the level-2 categorical latents' scales (``expansion``) →
Ω2 → the level-1 categorical latents' scales → Ω1 → missing cells. The textbook scan draws
B1 | rest, B2 | rest and U | rest as separate steps; drawing (B1, B2) with U1 integrated out
and then U1 | B1, B2 is an exact draw from the same joint conditional and mixes far better (see
``random``). Any fixed scan order of exact (block) conditionals and MH steps that leave them
invariant keeps the joint posterior of parameters, latents and missing cells invariant. Imputations are the missing cells of states taken
``between`` sweeps apart.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import collapsed, expansion
from .adapt import adapt_steps
from .clustercov import draw_cluster_omegas, draw_hyper
from .covariance import draw_covariance, free_lower
from .fixed import draw_b2, level2_given_u1
from .latent import update_latents
from .linalg import inv_spd
from .missing import draw_missing
from .multi import initial_multi, multi_trace_names, multi_trace_vector, prepare_multi, sweep_multi
from .outcome import draw_cells, draw_parameters, effective_codes, outcome_trace, outcome_trace_names
from ._kernels import fitted_crossprod, fitted_rows, residual_crossprod
from .random import draw_fixed_u1
from ..design import ModelData
from ..errors import ConvergenceError
from ..priors import class_coordinate_names, class_prior, level2_prior
from ..spec import CovariancePrior
from .state import State, Static, constraints, initial_two_level, prepare_two_level

__all__ = ["prepare_static", "initial_state", "sweep", "trace_vector", "trace_names", "variance_priors",
           "VariancePrior"]

def prepare_static(data: ModelData):
    """What the sweeps need that does not change: the two-level sampler's ``Static``, or with
    several classifications or a variance function the general sampler's (``multi``)."""
    return prepare_multi(data) if data.classes else prepare_two_level(data)


def initial_state(st, rng: np.random.Generator):
    """Starting values for either sampler (``state.initial_two_level``, ``multi.initial_multi``)."""
    return initial_two_level(st, rng) if isinstance(st, Static) else initial_multi(st, rng)


def _fitted(st: Static, b1: np.ndarray, u1: np.ndarray, work: dict | None) -> np.ndarray:
    """X1 B1 + Z U1 into a buffer kept across sweeps: on large data a fresh N×p array each
    time costs more in page faults (glibc maps blocks over 32 MB afresh) than computing it.

    The buffer remembers the (B1, U1) arrays it was computed from: a sweep's first call gets
    the previous sweep's last result back for free, as nothing changes B1 or U1 in between
    (the sampler never modifies them in place; a new draw is a new array).
    """
    data = st.data
    work = {} if work is None else work
    out, src = _fitted_buffer(st, work), work.get("fitted1_of", (None, None))
    if src[0] is b1 and src[1] is u1:
        return out
    fitted_rows(data.x1, np.ascontiguousarray(b1), u1, data.cluster, data.z, st.q, out)
    work["fitted1_of"] = (b1, u1)
    return out


def _fitted_buffer(st: Static, work: dict) -> np.ndarray:
    """The N×p1 buffer of the fitted rows kept in ``work`` (allocated on first use)."""
    shape = (st.data.n_rows, st.p1)
    out = work.get("fitted1")
    if out is None or out.shape != shape:
        out = work["fitted1"] = np.empty(shape)
        work.pop("fitted1_of", None)
    return out


def _fitted_and_crossprod(st: Static, b1: np.ndarray, u1: np.ndarray, y1: np.ndarray,
                          work: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """``_fitted`` and the residuals' cross-product Σ (y − f)(y − f)' in one pass (the Ω1 step
    needs both right after the block draw, when the fitted rows are always new)."""
    data = st.data
    work = {} if work is None else work
    out = _fitted_buffer(st, work)
    S = fitted_crossprod(data.x1, np.ascontiguousarray(b1), u1, data.cluster, data.z, st.q, out, y1)
    work["fitted1_of"] = (b1, u1)
    return out, S


def _level2_moments(st: Static, b2, u1, omega2):
    K, C = level2_given_u1(st, omega2)
    mean2 = st.data.x2 @ b2 + (u1 @ K.T if K.shape[1] else 0.0)
    return mean2, C @ C.T


def sweep(
    rng: np.random.Generator, st: Static, s: State, adapt_at: int | None = None,
    work: dict | None = None,
) -> State:
    """One sweep; ``adapt_at`` = the burn-in iteration number to tune MH steps, else None.

    The returned state reuses (and has updated) the incoming state's ``y1`` and ``y2`` arrays
    (and the substantive component's sources, design rows and linear predictors): callers keep
    the new state, not the old one. ``work``: an optional dict of scratch buffers the caller
    keeps across sweeps (contents are not state).
    """
    if not isinstance(st, Static):
        return sweep_multi(rng, st, s, adapt_at, work)
    data = st.data
    y1, y2, b1, b2, u1, omega1, omega2, cuts1, cuts2, steps, l1_df, l1_scale, out = s
    sl1, sl2, slc1, slc2, sla, slx, slk = st.step_slices
    ost = st.outcome
    steps = steps.copy()
    # y1 and y2 are updated in place: the sweep owns the incoming state's data arrays (the chain
    # keeps only the newest state), which saves a copy of the N×p matrix per sweep
    if st.p1:  # Ω1 does not change before the block draw: one inverse serves both steps
        omega1_inv = inv_spd(omega1)
    if st.cat1:
        fitted1 = _fitted(st, b1, u1, work)
        codes = effective_codes(ost, out, st.cat1, 1, data.starts) if ost else None
        y1, cuts1, acc = update_latents(rng, y1, fitted1, omega1_inv, st.cat1,
                                        cuts1, steps[slc1], codes, prior_sd=data.model.categorical_prior_sd)
        if adapt_at is not None and acc.size:
            steps[slc1] = adapt_steps(steps[slc1], acc, adapt_at)
    if st.cat2:
        mean2, cov2 = _level2_moments(st, b2, u1, omega2)
        codes = effective_codes(ost, out, st.cat2, 2, data.starts) if ost else None
        y2, cuts2, acc = update_latents(rng, y2, mean2, np.linalg.inv(cov2), st.cat2,
                                        cuts2, steps[slc2], codes, prior_sd=data.model.categorical_prior_sd)
        if adapt_at is not None and acc.size:
            steps[slc2] = adapt_steps(steps[slc2], acc, adapt_at)
    if (st.rare1 or st.rare2) and collapsed.ENABLED:   # rare categories' columns: collapsed moves
        acc = np.zeros(steps[slk].size)
        if st.rare1:
            k = 2 * len(st.rare1)
            b1, u1, omega1, omega2, acc[:k] = _collapsed_level1(rng, st, y1, fitted1, y2, b1, b2, u1, omega1,
                                                                omega2, cuts1, steps[slk][:k])
            if work is not None:
                work["fitted1_of"] = (b1, u1)
            omega1_inv = inv_spd(omega1)
        for t, col in enumerate(st.rare2, start=2 * len(st.rare1)):
            b2, omega2, acc[t] = collapsed.level2_block(rng, st, col, y2, _level2_rows(st, u1, y2, b2), b2, omega2,
                                                        cuts2, steps[slk][t])
        if adapt_at is not None:
            steps[slk] = adapt_steps(steps[slk], acc, adapt_at)
    if st.p1:
        b1, b2_new, u1, omega2, acc = draw_fixed_u1(rng, st, y1, y2, omega1_inv, omega2, steps[slx])
        if adapt_at is not None and acc.size:
            steps[slx] = adapt_steps(steps[slx], acc, adapt_at)
        if st.p2:
            b2 = b2_new
    elif st.p2:  # level-2 variables only: B2 from its own conditional
        b2 = draw_b2(rng, st, y2, u1, omega2)
    if st.d:
        u = _level2_rows(st, u1, y2, b2)
        scale2, df2 = st.prior2
        S2 = u.T @ u
        if expansion.ENABLED and (st.expand2[0] or st.nominal_blocks[1][0]):
            y2, b2, omega2, cuts2, S2 = _expand_level2(rng, st, y2, u, S2, b2, omega2, cuts2)
        omega2, acc = draw_covariance(rng, df2 + u.shape[0], scale2 + S2, st.con2, omega2, steps[sl2])
        if adapt_at is not None and acc.size:
            steps[sl2] = adapt_steps(steps[sl2], acc, adapt_at)
    fitted1 = prec1 = mean2 = prec2 = None
    if st.p1:
        scale1, df1 = st.prior1
        if st.cluster_cov:
            fitted1 = _fitted(st, b1, u1, work)
            S1 = residual_crossprod(y1, fitted1, data.cluster, data.n_clusters)
            omega1 = draw_cluster_omegas(rng, S1, data.sizes, l1_df, l1_scale)
            _check_collapse(data, omega1)
            l1_df, l1_scale, acc = draw_hyper(rng, omega1, l1_df, np.linalg.inv(scale1), df1 + 1.0,
                                              float(st.p1), steps[sla][0])
            if adapt_at is not None:
                steps[sla] = adapt_steps(steps[sla], np.array([float(acc)]), adapt_at)
        else:
            fitted1, S1 = _fitted_and_crossprod(st, b1, u1, y1, work)
            if expansion.ENABLED and (st.expand1[0] or st.nominal_blocks[0][0]):
                y1, b1, u1, omega1, omega2, cuts1, S1 = _expand_level1(rng, st, y1, fitted1, S1, b1, u1,
                                                                       omega1, omega2, cuts1)
                if work is not None:
                    work["fitted1_of"] = (b1, u1)
            omega1, acc = draw_covariance(rng, df1 + y1.shape[0], scale1 + S1, st.con1, omega1, steps[sl1])
            if adapt_at is not None and acc.size:
                steps[sl1] = adapt_steps(steps[sl1], acc, adapt_at)
        if st.patterns1.n_patterns:  # (omega1 is a (J, p1, p1) stack with covariance="cluster")
            y1 = draw_missing(rng, y1, fitted1, omega1, st.patterns1, data.cluster)
        if ost is not None and ost.rows1.size:
            prec1 = inv_spd(omega1)
    if st.p2 and (st.patterns2.n_patterns or (ost is not None and ost.clusters2.size)):
        mean2, cov2 = _level2_moments(st, b2, u1, omega2)
        if st.patterns2.n_patterns:
            y2 = draw_missing(rng, y2, mean2, cov2, st.patterns2)
        prec2 = inv_spd(cov2)
    if ost is not None:
        mh = draw_cells(rng, ost, out, data, y1, fitted1, prec1, y2, mean2, prec2, cuts1, cuts2)
        out = draw_parameters(rng, ost, out, data, adapt_at, mh)
    return State(y1, y2, b1, b2, u1, omega1, omega2, cuts1, cuts2, steps, l1_df, l1_scale, out)


COLLAPSE = 1e-10   # a cluster's level-1 variance below this times the clusters' median: collapsed


def _check_collapse(data, omegas: np.ndarray) -> None:
    """Cluster-specific covariances (covariance="cluster") of a variable that some clusters fit
    exactly (constant in them, say) can fall towards 0 together with the common scale A, a
    degenerate ridge of the posterior that the chain follows until numpy fails; stop with the
    reason instead (measured: constant in 5 of 20 clusters collapses, in 1–3 not)."""
    var = np.diagonal(omegas, axis1=1, axis2=2)
    low = var < COLLAPSE * np.median(var, axis=0)
    if low.any():
        k = int(np.flatnonzero(low.any(axis=0))[0])
        where = ", ".join(data.describe_cluster(int(j)) for j in np.flatnonzero(low[:, k])[:5])
        raise ConvergenceError(
            f"with covariance='cluster' the level-1 variance of {data.y1_names[k]!r} collapsed towards 0 "
            f"in {int(low[:, k].sum())} cluster(s) ({where}{', ...' if low[:, k].sum() > 5 else ''}): the "
            "model fits it exactly there (is it constant in those clusters?), and cluster-specific "
            "covariances then have no proper posterior; use covariance='common', or leave those "
            "clusters' values of it out"
        )


def _level2_rows(st: Static, u1, y2, b2) -> np.ndarray:
    """The clusters' rows under Ω2: u = (u1, y2 − X2B2)."""
    return np.concatenate([u1, y2 - st.data.x2 @ b2], axis=1) if st.p2 else u1


def _collapsed_level1(rng, st: Static, y1, fitted1, y2, b1, b2, u1, omega1, omega2, cuts1, steps):
    """``collapsed.column_block`` for each rare category's latent column in turn (y1 and the
    fitted rows in place); returns B1, U1, Ω1, Ω2 and the acceptance rates of each column's two
    random-walk steps (``steps``: two per column)."""
    acc = np.zeros(2 * len(st.rare1))
    q = st.q
    for t, col in enumerate(st.rare1):
        rest = np.delete(_level2_rows(st, u1, y2, b2), np.arange(col.c * q, (col.c + 1) * q), axis=1)
        b1, u1, omega1, omega2, acc[2 * t:2 * t + 2] = collapsed.column_block(
            rng, st, col, y1, fitted1, b1, u1, omega1, omega2, rest, cuts1, steps[2 * t:2 * t + 2])
    return b1, u1, omega1, omega2, acc


def _expand_level1(rng, st: Static, y1, fitted1, S1, b1, u1, omega1, omega2, cuts1):
    """The scale moves of the level-1 categorical latents (``expansion.scale_moves``): binary
    and ordinal, then nominal; u1 and Ω2 move with them. y1, fitted1, S1 are updated in place."""
    eff = [expansion.Effects(u1, omega2, *st.prior2, st.moves_masks1)]
    y1, b1, omega1, cuts1, S1, eff, _, _ = expansion.scale_moves(
        rng, st.expand1[0], st.nominal_blocks[0][0], 0, st.prior1, st.fixed_prior, 0, y1, fitted1, S1, b1,
        omega1, cuts1, eff)
    return y1, b1, eff[0].u, omega1, eff[0].omega, cuts1, S1


def _expand_level2(rng, st: Static, y2, u, S2, b2, omega2, cuts2):
    """The same for the level-2 latents: coordinates p1·q + column of the clusters' rows
    u = (u1, y2 − X2B2) (updated in place with y2 and S2 = u'u); no effects below them."""
    y2, b2, omega2, cuts2, S2, _, _, _ = expansion.scale_moves(
        rng, st.expand2[0], st.nominal_blocks[1][0], st.p1 * st.q, st.prior2, st.fixed_prior,
        st.p1 * st.data.x1.shape[1], y2, u, S2, b2, omega2, cuts2, [])
    return y2, b2, omega2, cuts2, S2


def trace_vector(st: Static, s: State) -> np.ndarray:
    """The monitored parameters on the data's scale: B1, B2, free elements of Ω1 and Ω2, free
    thresholds, then the substantive model's β, random-effect covariances and residual variance."""
    if not isinstance(st, Static):
        return multi_trace_vector(st, s)
    (i1, j1), (i2, j2) = st.free1, st.free2
    cuts = [c[2:-1] for c in (*s.cuts1, *s.cuts2)]
    level1 = [s.l1_scale[i1, j1], [s.l1_df]] if st.cluster_cov else [s.omega1[i1, j1]]
    sub = [outcome_trace(st.data.outcome, s.outcome)] if st.outcome is not None else []
    out = np.concatenate([s.b1.T.ravel(), s.b2.T.ravel(), *level1, s.omega2[i2, j2], *cuts, *sub])
    if st.trace_map is not None:   # on the data's scale (mlimpute.scaling)
        out = st.trace_map[0] + st.trace_map[1] * out
    return out


class VariancePrior(NamedTuple):
    """The inverse-Wishart prior of one random-effect covariance, for the check of how much of
    a variance's posterior it makes (``diagnostics.warn_prior``): the monitored names of its
    diagonal, the prior scale's diagonal on the sampler's scale, its df, the number of units
    and the dimension (the user states it with ``prior_l2`` or ``priors``); for a level-1
    variable's effect, the name of its level-1 variance and each unit's information about the
    effect per unit of that variance (Σ z² over the unit's rows where the variable is observed,
    multiple membership: Σ w² z²), from which the effects' own posterior spread in S is judged;
    for the effect of a variable measured on a nested classification (a class-level variable's
    school effect), its variance there and the count of the unit's inner units observing it. That
    count leaves out what the inner units where it is missing say through the variables they
    share (y's class effects): enough for the effects' spread, not for ``warn_prior``'s second
    reading (the variance the data say), which read 0.04–0.12 for a true 0.5 on 30 schools × 3
    classes (helper 41), so those coordinates are ``share_only``. A level-1 variable's effect at a
    classification that nests another (schools of classes) reaches the rows through the inner
    units' effects: ``inner`` holds the name of the variable's variance there, each inner unit's
    outer unit and its count of rows observing the variable, and ``warn_prior`` takes the unit's
    information as Σ_k n_k / (σ² + n_k τ²) (τ² that variance; the innermost nested
    classification only), where Σ n_k / σ² overstated it and made the check lenient."""

    matrix: str
    names: tuple[str | None, ...]   # None: a complete variable's coordinate (not checked)
    psi: np.ndarray
    df: float
    units: int
    dim: int
    level1: tuple[str | None, ...] = ()             # per coordinate: "omega1[v,v]" or None
    info: tuple[np.ndarray | None, ...] = ()        # per coordinate: (units,) or None
    stated: bool = False                            # the user stated this prior (then not checked)
    share_only: tuple[bool, ...] = ()               # per coordinate: no second reading (see above)
    inner: tuple = ()                               # per coordinate: (variance name, unit map, counts) or None


def _unit_sums(rows: np.ndarray, unit: np.ndarray | None, ids, weights, n_units: int,
               z2: np.ndarray) -> np.ndarray:
    """Σ of z2 over each unit's ``rows`` (a boolean mask of all rows), a multiple membership's
    rows counted for each unit with their weight squared."""
    if unit is not None:
        return np.bincount(unit[rows], weights=z2[rows], minlength=n_units)
    out = np.zeros(n_units)
    for k in range(ids.shape[1]):
        ok = rows & (ids[:, k] >= 0)
        out += np.bincount(ids[ok, k], weights=weights[ok, k] ** 2 * z2[ok], minlength=n_units)
    return out


def _unit_information(data: ModelData, unit: np.ndarray | None, ids, weights, n_units: int,
                      col: int, z: np.ndarray) -> np.ndarray:
    """Σ over each unit's rows where level-1 column ``col`` is observed of z² (weights² for a
    multiple membership)."""
    return _unit_sums(~data.miss1[:, col], unit, ids, weights, n_units, z ** 2)


def substantive_priors(data: ModelData) -> list[VariancePrior]:
    """The substantive model's random-effect covariance blocks (``outcome_trace_names``' cov
    entries): Σ_b | b ~ IW(ν_b + J, Ψ_b + S_b) per block of width w, ν_b its df (w unless
    stated), Ψ_b its default scale centred on the complete-case fit
    (``substantive._complete_case_start``), J the units of the block's classification; on the
    data's scale, as the trace. Each unit's information about an effect is Σ ω z² over its rows
    with an observed outcome, z the effect's column at the starting completion (``S0``) and ω
    1 for a gaussian outcome (its σ² monitored as ``y~sigma2``), p̄(1 − p̄) for logit and
    φ(Φ⁻¹(p̄))² / (p̄(1 − p̄)) for probit (the Fisher information per row at the observed share
    p̄; σ² taken as 1). Not checked when ``prior_substantive`` states a scale."""
    od = data.outcome
    if od is None or not od.blocks:
        return []
    from scipy.special import ndtri
    from scipy.stats import norm

    Z0 = np.nan_to_num(od.program.evaluate(od.S0)[:, od.n_fixed:], nan=0.0, posinf=0.0, neginf=0.0)
    if od.family == "gaussian":
        omega, level1 = 1.0, f"{od.name}~sigma2"
    else:
        pbar = float(np.clip(np.mean(od.y[od.observed]), 1e-3, 1 - 1e-3))
        omega = pbar * (1 - pbar) if od.link == "logit" else norm.pdf(ndtri(pbar)) ** 2 / (pbar * (1 - pbar))
        level1 = f"{od.name}~latent"   # not monitored: warn_prior takes 1
    classes = {cd.name: cd for cd in data.classes}
    stated = data.model.prior_substantive.scale is not None
    out = []
    for start, width in od.blocks:
        cls = classes.get(od.z_class[start]) if data.classes else None
        if cls is None:
            unit, ids, weights, n_units = data.cluster, None, None, data.n_clusters
        else:
            unit, ids, weights, n_units = cls.unit, cls.ids, cls.weights, cls.n_units
        info = [_unit_sums(od.observed, unit, ids, weights, n_units, omega * Z0[:, k] ** 2)
                for k in range(start, start + width)]
        diag = [f"{od.name}~cov[{od.z_names[k]},{od.z_names[k]}]" for k in range(start, start + width)]
        df = float(width if od.prior_df is None else od.prior_df)
        out.append(VariancePrior("substantive", tuple(diag), np.diag(od.prior_scale)[start:start + width].copy(),
                                 df, int(n_units), width, (level1,) * width, tuple(info), stated))
    return out


def variance_priors(data: ModelData) -> list[VariancePrior]:
    """The random-effect covariances whose draw given the effects is inverse-Wishart, so that
    E[Ω_kk] = (Ψ_kk + E[S_kk]) / (ν + J − d − 1) and Ψ_kk's share of it can be read off the
    posterior mean: Ω2 of the two-level model, each classification's Ω^(c); not those with
    categorical variables of their own level (fixed blocks: their draw is not that conditional).
    Only the coordinates of variables with missing values are named (``names`` holds None for
    the others): a complete variable's variance, held up, does not change its values (on the
    validation grid the complete outcome's was the one most often named, with no bias in the
    analysis: ``benchmarks/prior_warning_check.py``)."""
    con2 = constraints(data)[1] if not data.classes else None
    miss1 = data.miss1.any(axis=0)
    if data.classes:
        out = []
        p1, ones = data.y1.shape[1], np.ones(data.n_rows)   # (classifications have random intercepts only)
        for ci, cd in enumerate(data.classes):
            if any(c.kind != "continuous" for c in cd.codecs):
                continue
            coords = class_coordinate_names(data, ci)
            incomplete = [*miss1, *(m for b in cd.parent for m in data.classes[b].miss.any(axis=0)),
                          *(bool(miss1[v.col]) for v in data.variances if v.re == ci),
                          *cd.miss.any(axis=0)]
            scale, df = class_prior(data, ci)
            level1 = [f"omega1[{v},{v}]" for v in data.y1_names]
            info = [_unit_information(data, cd.unit, cd.ids, cd.weights, cd.n_units, c, ones) for c in range(p1)]
            through = []
            nested = [b for b in cd.parent if not data.classes[b].membership]
            if nested:   # the innermost: the level-1 variables' effects here reach the rows through its
                b = max(nested, key=lambda b: data.classes[b].n_units)
                ic = data.classes[b]
                through = [(f"omega[{ic.name}][{v},{v}]", cd.parent[b],
                            _unit_information(data, ic.unit, None, None, ic.n_units, c, ones))
                           for c, v in enumerate(data.y1_names)]
            for b, up in cd.parent.items():   # a nested classification's variable: its effect here is
                inner = data.classes[b]       # seen through the inner units where it is observed
                level1 += [f"omega[{inner.name}][{v},{v}]" for v in inner.y_names]
                info += [np.bincount(up[~inner.miss[:, k]], minlength=cd.n_units).astype(float)
                         for k in range(len(inner.y_names))]
            share_only = (False,) * p1 + (True,) * (len(level1) - p1) + (False,) * (len(coords) - len(level1))
            level1 = tuple(level1) + (None,) * (len(coords) - len(level1))
            info = tuple(info) + (None,) * (len(coords) - len(info))
            through = tuple(through) + (None,) * (len(coords) - len(through))
            out.append(VariancePrior(f"omega[{cd.name}]", tuple(f"omega[{cd.name}][{c},{c}]" if m else None
                                                                for c, m in zip(coords, incomplete)),
                                     np.diag(scale).copy(), df, int(cd.n_units), len(coords), level1, info,
                                     data.model.priors.get(cd.name, CovariancePrior()) != CovariancePrior(),
                                     share_only, through))
        return out + substantive_priors(data)
    d = data.y1.shape[1] * data.z.shape[1] + data.y2.shape[1]
    if not d or con2 is not None:
        return substantive_priors(data)
    scale, df = level2_prior(data)
    coords = [(f"{v}:{z}", m) for v, m in zip(data.y1_names, miss1) for z in data.z_names]
    coords += list(zip(data.y2_names, data.miss2.any(axis=0)))
    q, p2 = data.z.shape[1], data.y2.shape[1]
    common = data.model.covariance != "cluster"
    level1 = tuple(f"omega1[{v},{v}]" if common else None for v in data.y1_names for _ in range(q)) + (None,) * p2
    info = tuple(_unit_information(data, data.cluster, None, None, data.n_clusters, c, data.z[:, k])
                 for c in range(data.y1.shape[1]) for k in range(q)) + (None,) * p2
    return [VariancePrior("omega2", tuple(f"omega2[{c},{c}]" if m else None for c, m in coords),
                          np.diag(scale).copy(), df, int(data.n_clusters), d, level1, info,
                          data.model.prior_l2 != CovariancePrior())] + substantive_priors(data)


def trace_names(data: ModelData) -> list[str]:
    """Names of the monitored parameters, in ``trace_vector``'s order (needs only the model's
    arrays, not the sampler's precomputed statistics)."""
    if data.classes:
        return multi_trace_names(data)
    p1, p2, q = data.y1.shape[1], data.y2.shape[1], data.z.shape[1]
    con1, con2 = constraints(data)
    names = [f"beta1[{v}:{x}]" for v in data.y1_names for x in data.x1_names]
    names += [f"beta2[{v}:{x}]" for v in data.y2_names for x in data.x2_names]
    i1, j1 = free_lower(p1, con1)
    if data.model.covariance == "cluster":  # Ω1_j ~ IW(df, scale): monitor the scale and df
        names += [f"omega1_scale[{data.y1_names[a]},{data.y1_names[b]}]" for a, b in zip(i1, j1)]
        names.append("omega1_df")
    else:
        names += [f"omega1[{data.y1_names[a]},{data.y1_names[b]}]" for a, b in zip(i1, j1)]
    u_names = [f"{v}:{z}" for v in data.y1_names for z in data.z_names] + list(data.y2_names)
    i2, j2 = free_lower(p1 * q + p2, con2)
    names += [f"omega2[{u_names[a]},{u_names[b]}]" for a, b in zip(i2, j2)]
    for c in (*data.categorical1, *data.categorical2):
        if c.kind != "ordinal":
            continue
        names += [f"cut[{c.name}:{k}]" for k in range(2, c.n_categories)]
    if data.outcome is not None:
        names += outcome_trace_names(data.outcome)
    return names
