"""The collapsed block moves of rare categories' latent columns (``sampler.collapsed``).

Checked against references that do not reuse the code under test: the interval probability and
its derivatives against scipy and finite differences; a column's conditional given the others
against the partitioned Gaussian; the Ω1 prior against scipy's inverse Wishart; a taken block
leaves a consistent state; and the sampler with the moves against the sampler without them (the
same posterior, within Monte Carlo error), random slopes included.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from _designs import classes_in_schools, pupils_in_classes
from _stats import assert_same_means

import mlimpute as mi
from mlimpute.impute import prepare, run_chain
from mlimpute.sampler import collapsed
from mlimpute.sampler.collapsed import interval_terms


@pytest.mark.parametrize("m, sd, lo, hi", [
    (0.3, 0.8, 0.0, np.inf), (-1.7, 0.77, -np.inf, 0.0), (2.0, 1.0, -np.inf, 0.4), (-0.2, 0.6, -0.5, 0.9),
    (9.0, 1.0, -np.inf, 0.0), (-12.0, 0.5, 1.0, np.inf), (0.4, 1.3, 1.0, 1.2), (5.0, 1.0, 1.0, 1.5)])
def test_interval_terms_match_scipy_and_finite_differences(m, sd, lo, hi):
    """log P(lo < N(m, sd²) < hi) against scipy (log CDFs, in the tail where the mass is), and its
    first and second derivatives in m against central differences of scipy's value."""
    def ref(mm):
        a, b = (lo - mm) / sd, (hi - mm) / sd
        if a + b > 0:      # upper half: use the survival function
            return stats.norm.logsf(a) + np.log1p(-np.exp(stats.norm.logsf(b) - stats.norm.logsf(a)))
        return stats.norm.logcdf(b) + np.log1p(-np.exp(stats.norm.logcdf(a) - stats.norm.logcdf(b)))
    lp, d1, d2 = interval_terms(m, sd, lo, hi)
    assert lp == pytest.approx(ref(m), rel=1e-9, abs=1e-12)
    e = 1e-4
    assert d1 == pytest.approx((ref(m + e) - ref(m - e)) / (2 * e), rel=1e-5, abs=1e-7)
    assert d2 == pytest.approx((ref(m + e) - 2 * ref(m) + ref(m - e)) / e ** 2, rel=1e-3, abs=1e-5)
    assert interval_terms(m, sd, -np.inf, np.inf) == (0.0, 0.0, 0.0)


def test_conditional_and_prior_match_their_references():
    """qc and the SD give the partitioned-Gaussian conditional of column c given the others;
    the Ω1 prior's differences equal scipy's inverse-Wishart log-density differences."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((5, 5))
    om = A @ A.T + 5 * np.eye(5)
    c = 2
    qc, sd, Q, ok = collapsed._conditional(om, c)
    o = [k for k in range(5) if k != c]
    K = np.linalg.solve(om[np.ix_(o, o)], om[o, c])
    assert ok and sd == pytest.approx(np.sqrt(om[c, c] - om[c, o] @ K))
    assert np.allclose(-qc[o], K) and qc[c] == 0.0
    y, fitted = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    assert np.allclose(collapsed._offsets(y, fitted, qc), (y - fitted)[:, o] @ K)
    psi, nu = np.eye(5) + 0.3, 7.0
    om2 = om.copy()
    om2[c, o] += 0.4
    om2[o, c] += 0.4
    mine = (collapsed._log_prior1(om2, np.linalg.inv(om2), psi, nu)
            - collapsed._log_prior1(om, np.linalg.inv(om), psi, nu))
    theirs = stats.invwishart(nu, psi).logpdf(om2) - stats.invwishart(nu, psi).logpdf(om)
    assert mine == pytest.approx(theirs, rel=1e-10)


def _burnt(st, seed: int, sweeps: int = 60) -> tuple:
    """A generator and the state after ``sweeps`` sweeps with adaptation (the moves' steps
    tuned), for the tests of single blocks."""
    from mlimpute.sampler.sweep import initial_state, sweep

    rng = np.random.default_rng(seed)
    s = initial_state(st, rng)
    for i in range(sweeps):
        s = sweep(rng, st, s, adapt_at=i)
    return rng, s


def _pupils(rng, J: int, n: int, b0: float) -> tuple:
    """n pupils in each of J clusters: cluster index, x, three cluster effects (SD 0.6, 0.5,
    0.5), y continuous and b binary with intercept b0 (rare for b0 ≲ −2)."""
    g = np.repeat(np.arange(J), n)
    x = rng.standard_normal(J * n)
    u = rng.standard_normal((J, 3)) * [0.6, 0.5, 0.5]
    y = 1 + 0.5 * x + u[g, 0] + rng.standard_normal(J * n)
    b = (b0 + 0.4 * x + 0.3 * y + u[g, 1] + rng.standard_normal(J * n) > 0).astype(float)
    return g, x, u, y, b


def _rare(seed=0, J=50, n=12):
    """y continuous; b binary, o ordinal and h nominal with rare categories; w per cluster."""
    rng = np.random.default_rng(seed)
    g, x, u, y, b = _pupils(rng, J, n, -2.3)
    N = J * n
    o = np.digitize(0.3 * x + u[g, 2] + rng.standard_normal(N), [-1.7, 1.7]).astype(float)
    h = np.argmax(np.column_stack([-1.8 + 0.3 * x + u[g, 1] + rng.standard_normal(N),
                                   -1.9 + u[g, 2] + rng.standard_normal(N), np.zeros(N)]), axis=1).astype(float)
    w = 0.5 * u[:, 0] + rng.standard_normal(J)
    df = pd.DataFrame({"g": g, "x": x, "y": y, "b": b, "o": o, "h": h, "w": w[g]})
    for c in ("y", "b", "o", "h"):
        df.loc[rng.random(N) < 0.2, c] = np.nan
    return df


RARE = dict(cluster="g", covariates=["x"], variables={"y": "continuous", "b": "binary", "o": "ordinal",
                                                     "h": "nominal", "w": mi.Variable("continuous", level=2)})


def test_omega_row_step_keeps_its_target():
    """Step 3 alone (one binary latent beside one continuous column; only ρ = Ω1[0, 1] moves) run
    long, against its target on a grid: Σ log P_i(ρ) + log IW(Ω1) from scipy's densities. Its
    random walk was scaled by the latent's conditional SD, which ρ moves, without a Hastings
    term: the chain's mean sat 0.013 (0.14 posterior SDs) below the target's at a large step
    (z −20 in 200,000 steps; helper 28's check)."""
    import math

    rng = np.random.default_rng(5)
    n = 25
    e0 = rng.standard_normal(n)
    z = 0.8 * e0 + 0.6 * rng.standard_normal(n)
    cat = (z > -0.3).astype(np.int64)
    base = np.full(n, 0.3)
    y1 = np.column_stack([e0, z + 0.3])
    fitted = np.column_stack([np.zeros(n), base])
    lo, hi = np.where(cat == 1, 0.0, -np.inf), np.where(cat == 1, np.inf, 0.0)
    rows, psi, nu, free = np.arange(n, dtype=np.int64), np.eye(2), 3.0, np.array([0], np.int64)

    grid = np.linspace(-0.999, 0.999, 4001)
    sd_g = np.sqrt(1 - grid**2)
    mu = base[None, :] + grid[:, None] * e0[None, :]
    logp = np.where(cat == 1, stats.norm.logcdf(mu / sd_g[:, None]), stats.norm.logcdf(-mu / sd_g[:, None])).sum(1)
    logp += np.array([stats.invwishart(nu, psi).logpdf(np.array([[1.0, r], [r, 1.0]])) for r in grid])
    w = np.exp(logp - logp.max())
    w /= w.sum()
    exact = float((grid * w).sum())

    r = np.random.default_rng(1)
    om = np.array([[1.0, 0.5], [0.5, 1.0]])
    qc, sd, _, _ = collapsed._conditional(om, 1)
    off = collapsed._offsets(y1, fitted, qc)
    cur = collapsed._sum_log_p(base, off, rows, sd, lo, hi)
    T = 40_000
    eps, logu = r.standard_normal((T, 2, 1)), np.log(r.random((T, 2)))
    out = np.empty(T)
    for t in range(T):
        om, off, sd, cur, _ = collapsed._omega1_step(base, rows, y1, fitted, lo, hi, 1, om, psi, nu, free, float(n),
                                                     6.0, eps[t], logu[t], cur, off, sd)
        out[t] = om[0, 1]
    x = out[T // 100:]
    batches = x[: len(x) // 50 * 50].reshape(50, -1).mean(1)
    se = batches.std(ddof=1) / math.sqrt(50)
    assert abs(x.mean() - exact) < 4 * se, (x.mean(), exact, se)


def test_rare_columns_are_the_rare_categories():
    data = prepare(_rare(1), mi.ImputationModel(**RARE))
    from mlimpute.sampler.sweep import prepare_static
    st = prepare_static(data)
    names = {data.y1_names[c.c] for c in st.rare1}
    assert names == set(data.y1_names) - {"y"}, names
    assert all(c.share < collapsed.RARE for c in st.rare1)
    common = prepare(_rare(1).assign(b=lambda d: (d.y > 1).astype(float).where(d.b.notna() & d.y.notna())),
                     mi.ImputationModel(**RARE))
    assert "b" not in {common.y1_names[c.c] for c in prepare_static(common).rare1}


def test_a_block_leaves_a_consistent_state():
    """After ``column_block`` the fitted column is X1B1 + ZU1 of the new state, every observed
    category is unchanged, Ω1 keeps its fixed elements and stays positive definite, Ω2 is the
    old one with the column's coordinates times one α, and the moves are taken."""
    from mlimpute.sampler.latent import latents_to_codes
    from mlimpute.sampler.sweep import prepare_static

    data = prepare(_rare(2), mi.ImputationModel(**RARE, random_slopes=["x"]))
    st = prepare_static(data)
    q = st.q
    assert q == 2 and st.rare1
    rng, s = _burnt(st, 2)
    moved_u = moved_b = moved_om = moved_scale = 0
    for _ in range(8):
        for col in st.rare1:
            y1 = s.y1.copy()
            fitted = data.x1 @ s.b1 + np.einsum("nr,nkr->nk", data.z, s.u1[data.cluster].reshape(-1, st.p1, q))
            v = np.concatenate([s.u1, s.y2 - data.x2 @ s.b2], axis=1)
            rest = np.delete(v, np.arange(col.c * q, (col.c + 1) * q), axis=1)
            b1, u1, om1, om2, _ = collapsed.column_block(rng, st, col, y1, fitted, s.b1, s.u1, s.omega1,
                                                         s.omega2, rest, s.cuts1, np.array([1.0, 0.2]))
            want = data.x1 @ b1 + np.einsum("nr,nkr->nk", data.z, u1[data.cluster].reshape(-1, st.p1, q))
            assert np.allclose(fitted, want)
            for codec in st.cat1:
                k = list(codec.cols)
                cuts = s.cuts1[[c.name for c in st.cat1 if c.kind == "ordinal"].index(codec.name)] \
                    if codec.kind == "ordinal" else None
                obs = codec.codes >= 0
                assert np.array_equal(latents_to_codes(codec, y1[:, k], cuts)[obs], codec.codes[obs])
            con = st.con1
            fixed = ~np.isnan(con.target)
            assert np.allclose(om1[np.ix_(con.cat, con.cat)][fixed], con.target[fixed])
            assert np.all(np.linalg.eigvalsh(om1) > 0)
            others = [k for k in range(st.p1) if k != col.c]
            assert np.array_equal(b1[:, others], s.b1[:, others])
            mine = np.arange(col.c * q, (col.c + 1) * q)     # Ω2: the column's coordinates times one α
            rest2 = np.setdiff1d(np.arange(om2.shape[0]), mine)
            alpha = np.sqrt(om2[mine[0], mine[0]] / s.omega2[mine[0], mine[0]])
            d = np.ones(om2.shape[0])
            d[mine] = alpha
            assert np.allclose(om2, d[:, None] * s.omega2 * d)
            assert np.array_equal(u1[:, rest2[rest2 < u1.shape[1]]], s.u1[:, rest2[rest2 < u1.shape[1]]])
            moved_scale += alpha != 1.0
            moved_b += not np.array_equal(b1, s.b1)
            moved_u += not np.array_equal(u1, s.u1)
            moved_om += not np.array_equal(om1, s.omega1)
            s = s._replace(y1=y1, b1=b1, u1=u1, omega1=om1, omega2=om2)
    n = 8 * len(st.rare1)
    assert moved_u == n and min(moved_b, moved_om, moved_scale) > n / 4, (moved_u, moved_b, moved_om, moved_scale)


@pytest.mark.parametrize("slopes", [(), ("x",)])
def test_sampler_with_the_moves_keeps_the_posterior(slopes, monkeypatch):
    """Every monitored parameter's posterior mean with the collapsed moves equals its mean
    without them within 4.5 Monte Carlo SEs (each run's SE from its bulk ESS)."""
    data = prepare(_rare(5), mi.ImputationModel(**RARE, random_slopes=list(slopes)))
    assert_same_means(_with_and_without(data, [5, len(slopes)], monkeypatch))


def _with_and_without(data, seed: list, monkeypatch) -> dict:
    """Two chains of 300 + 2,500 sweeps with the collapsed moves (True) and without (False)."""
    runs = {}
    for on in (True, False):
        monkeypatch.setattr(collapsed, "ENABLED", on)
        runs[on] = np.stack([run_chain(data, c, 1, 300, 2500, np.random.SeedSequence([*seed, c, on])).trace
                             for c in range(2)])
    return runs


def _three_rare(seed=0, S=30, C=3, n=6):
    """Pupils in classes in schools: y continuous, b binary and h nominal with rare categories."""
    def categorical(rng, x, y, us, uc, school, cls):
        N = x.size
        b = (-2.0 + 0.3 * x + 0.3 * y + us[school, 1] + uc[cls, 1] + rng.standard_normal(N) > 0).astype(float)
        h = np.argmax(np.column_stack([-1.7 + 0.3 * x + us[school, 2] + rng.standard_normal(N),
                                       -1.8 + uc[cls, 2] + rng.standard_normal(N), np.zeros(N)]), axis=1).astype(float)
        return {"b": b, "h": h}
    return pupils_in_classes(seed, S, C, n, 3, categorical)


THREE_RARE = dict(cluster=["school", "class"], covariates=["x"],
                  variables={"y": "continuous", "b": "binary", "h": "nominal"})


def test_general_sampler_block_leaves_a_consistent_state():
    """The general sampler's block (two classifications): μ1 is X1B1 + Σ_c effects of the new
    state, observed categories and the other columns' effects are unchanged, each
    classification's Ω is the old one with the column's coordinate times one α, Ω1 keeps its
    fixed elements."""
    from mlimpute.sampler import multi
    from mlimpute.sampler.latent import latents_to_codes
    from mlimpute.sampler.sweep import prepare_static

    data = prepare(_three_rare(3), mi.ImputationModel(**THREE_RARE))
    st = prepare_static(data)
    assert isinstance(st, multi.MultiStatic) and len(st.rare1) == 3
    rng, s = _burnt(st, 3)
    moved = 0
    for _ in range(6):
        y1, us, omegas = s.y1.copy(), list(s.us), list(s.omegas)
        mu1 = multi.level1_mean(st, s.b1, s.us)
        b1, om1, acc = multi._collapsed_level1(rng, st, y1, mu1, s.b1, us, omegas, s.omega1, s.cuts1, s.ys,
                                               s.bs, s.vs, np.tile([2.0, 0.2, 0.2], 3))
        assert np.allclose(mu1, multi.level1_mean(st, b1, tuple(us)))
        for codec in st.cat1:
            obs = codec.codes >= 0
            assert np.array_equal(latents_to_codes(codec, y1[:, list(codec.cols)], None)[obs], codec.codes[obs])
        moved_cols = [c.c for c in st.rare1]
        for ci in range(len(st.classes)):
            keep = [k for k in range(us[ci].shape[1]) if k not in moved_cols]
            assert np.array_equal(us[ci][:, keep], s.us[ci][:, keep])
            d = np.sqrt(np.diag(omegas[ci]) / np.diag(s.omegas[ci]))
            assert np.allclose(omegas[ci], d[:, None] * s.omegas[ci] * d)
            moved += np.any(np.abs(d - 1) > 1e-12)
        con = st.con1
        fixed = ~np.isnan(con.target)
        assert np.allclose(om1[np.ix_(con.cat, con.cat)][fixed], con.target[fixed])
        assert acc.shape == (9,)
        s = s._replace(y1=y1, b1=b1, omega1=om1, us=tuple(us), omegas=tuple(omegas))
    assert moved >= 6


def test_general_sampler_with_the_moves_keeps_the_posterior(monkeypatch):
    """Three levels, rare binary and nominal pupil variables: every monitored parameter's
    posterior mean with the collapsed moves equals its mean without them within 4.5 Monte
    Carlo SEs."""
    data = prepare(_three_rare(6), mi.ImputationModel(**THREE_RARE))
    assert_same_means(_with_and_without(data, [6], monkeypatch))


# ``_rare`` with y as the outcome (20 % of each column missing: rows with an observed outcome
# hold imputed categories)
SUBSTANTIVE = dict(cluster="g", covariates=["x"], variables={"b": "binary", "o": "ordinal", "h": "nominal"},
                   substantive="y ~ x + b + C(o) + C(h) + (1 | g)")


def test_block_with_a_substantive_model_keeps_the_categories_the_outcome_sees():
    """With a substantive model the block runs with the imputed categories of the rows with an
    observed outcome held: after it, those categories and the observed ones are unchanged and
    the fitted column is X1B1 + ZU1 of the new state; the rows held are exactly the missing
    cells of rows with an observed outcome; the moves are taken."""
    from mlimpute.sampler.latent import latents_to_codes
    from mlimpute.sampler.sweep import prepare_static

    data = prepare(_rare(7), mi.ImputationModel(**SUBSTANTIVE))
    st = prepare_static(data)
    assert {data.y1_names[c.c] for c in st.rare1} == set(data.y1_names), st.rare1
    seen = data.outcome.observed
    for col in st.rare1:
        miss = data.miss1[:, col.c]
        assert np.array_equal(col.held, np.flatnonzero(miss & seen)) and col.held.size > 20
    rng, s = _burnt(st, 7)
    ordinal = [c.name for c in st.cat1 if c.kind == "ordinal"]

    def categories(y1, cuts1):
        return {c.name: latents_to_codes(c, y1[:, list(c.cols)], cuts1[ordinal.index(c.name)] if c.name in ordinal
                                         else None) for c in st.cat1}

    moved = 0
    for _ in range(6):
        for col in st.rare1:
            y1 = s.y1.copy()
            before = categories(y1, s.cuts1)
            fitted = data.x1 @ s.b1 + s.u1[data.cluster]
            v = np.concatenate([s.u1, s.y2 - data.x2 @ s.b2], axis=1)
            b1, u1, om1, om2, _ = collapsed.column_block(rng, st, col, y1, fitted, s.b1, s.u1, s.omega1, s.omega2,
                                                         np.delete(v, col.c, axis=1), s.cuts1, np.array([1.0, 0.2]))
            assert np.allclose(fitted, data.x1 @ b1 + u1[data.cluster])
            after = categories(y1, s.cuts1)
            for codec in st.cat1:
                keep = (codec.codes >= 0) | (data.miss1[:, codec.cols[0]] & seen)
                assert np.array_equal(after[codec.name][keep], before[codec.name][keep])
            moved += not np.array_equal(y1[col.held, col.c], s.y1[col.held, col.c])
            s = s._replace(y1=y1, b1=b1, u1=u1, omega1=om1, omega2=om2)
    assert moved == 6 * len(st.rare1)


def test_sampler_with_the_moves_and_a_substantive_model_keeps_the_posterior(monkeypatch):
    """The same posterior with and without the block when a substantive model holds imputed
    categories (its parameters included), within 4.5 Monte Carlo SEs."""
    data = prepare(_rare(8), mi.ImputationModel(**SUBSTANTIVE))
    assert_same_means(_with_and_without(data, [8], monkeypatch))


def _rare2(seed=0, J=80, n=8):
    """y continuous and b binary (rare) per pupil; wb binary and wo ordinal with rare categories
    and w continuous per cluster; 20 % of each column missing."""
    rng = np.random.default_rng(seed)
    g, x, u, y, b = _pupils(rng, J, n, -2.0)
    N = J * n
    wb = (-1.4 + 0.8 * u[:, 0] + 0.6 * rng.standard_normal(J) > 0).astype(float)
    wo = np.digitize(0.5 * u[:, 2] + 0.8 * rng.standard_normal(J), [-1.1, 1.3]).astype(float)
    w = 0.5 * u[:, 0] + rng.standard_normal(J)
    df = pd.DataFrame({"g": g, "x": x, "y": y, "b": b, "wb": wb[g], "wo": wo[g], "w": w[g]})
    for c in ("y", "b"):
        df.loc[rng.random(N) < 0.2, c] = np.nan
    for c in ("wb", "wo", "w"):
        df.loc[(rng.random(J) < 0.2)[g], c] = np.nan
    return df


RARE2 = dict(cluster="g", covariates=["x"],
             variables={"y": "continuous", "b": "binary", "wb": mi.Variable("binary", level=2),
                        "wo": mi.Variable("ordinal", level=2), "w": mi.Variable("continuous", level=2)})


def test_level2_block_leaves_a_consistent_state():
    """The level-2 columns of rare categories get the block, with their free coordinates among
    Ω2's; after ``level2_block`` the observed categories are unchanged, Ω2 keeps its fixed
    elements and stays positive definite, only the column's B2 and Ω2 row move, and they do."""
    from mlimpute.sampler.latent import latents_to_codes
    from mlimpute.sampler.sweep import _level2_rows, prepare_static

    data = prepare(_rare2(9), mi.ImputationModel(**RARE2))
    st = prepare_static(data)
    assert {data.y2_names[c.c] for c in st.rare2} == {"wb", "wo"}, st.rare2
    P = st.p1 * st.q + st.p2
    for col in st.rare2:
        assert np.array_equal(col.free, np.setdiff1d(np.arange(P), st.p1 * st.q + col.cols))
    rng, s = _burnt(st, 9)
    moved_b = moved_om = 0
    for _ in range(8):
        for col in st.rare2:
            y2 = s.y2.copy()
            b2, om2, _ = collapsed.level2_block(rng, st, col, y2, _level2_rows(st, s.u1, y2, s.b2), s.b2, s.omega2,
                                            s.cuts2, 1.0)
            for codec in st.cat2:
                cuts = s.cuts2[0] if codec.kind == "ordinal" else None
                obs = codec.codes >= 0
                assert np.array_equal(latents_to_codes(codec, y2[:, list(codec.cols)], cuts)[obs], codec.codes[obs])
            others = [k for k in range(st.p2) if k != col.c]
            assert np.array_equal(b2[:, others], s.b2[:, others]) and np.array_equal(y2[:, others], s.y2[:, others])
            a = st.p1 * st.q + col.c
            rest = [k for k in range(P) if k != a]
            assert np.array_equal(om2[np.ix_(rest, rest)], s.omega2[np.ix_(rest, rest)])
            assert om2[a, a] == s.omega2[a, a] and np.all(np.linalg.eigvalsh(om2) > 0)
            moved_b += not np.array_equal(b2, s.b2)
            moved_om += not np.array_equal(om2, s.omega2)
            s = s._replace(y2=y2, b2=b2, omega2=om2)
    n = 8 * len(st.rare2)
    assert min(moved_b, moved_om) > n / 4, (moved_b, moved_om)


@pytest.mark.parametrize("covariance", ["common", "cluster"])
def test_sampler_with_level2_moves_keeps_the_posterior(covariance, monkeypatch):
    """Rare categories at both levels: the same posterior with and without the blocks; with
    cluster-specific level-1 covariances (which refuse categorical level-1 variables) the
    level-2 block alone."""
    if covariance == "common":
        data = prepare(_rare2(10), mi.ImputationModel(**RARE2))
    else:
        df = _rare2(31, J=100, n=8).drop(columns=["b"])
        # (noise from a stream of its own: _rare2(31)'s first draws are x, and y2 = 0.5y + x
        # would be an exact linear function of y and a covariate)
        df["y2"] = 0.5 * df["y"] + np.random.default_rng([31, 2]).standard_normal(len(df))
        variables = {k: v for k, v in RARE2["variables"].items() if k != "b"}
        data = prepare(df, mi.ImputationModel(**{**RARE2, "variables": {**variables, "y2": "continuous"}},
                                              covariance="cluster"))
    assert_same_means(_with_and_without(data, [10 if covariance == "common" else 31], monkeypatch))


def test_level2_block_with_a_substantive_model_keeps_the_categories_the_outcome_sees():
    """A level-2 covariate of the analysis model: the clusters whose imputed category the
    outcome sees are held, and keep their categories through the block."""
    from mlimpute.sampler.latent import latents_to_codes
    from mlimpute.sampler.sweep import _level2_rows, prepare_static

    model = mi.ImputationModel(cluster="g", covariates=["x"], variables={"wb": mi.Variable("binary", level=2)},
                               substantive="y ~ x + wb + (1 | g)")
    data = prepare(_rare2(11).drop(columns=["b", "wo", "w"]), model)
    st = prepare_static(data)
    (col,) = st.rare2
    seen = np.add.reduceat(data.outcome.observed.astype(int), data.starts) > 0
    assert np.array_equal(col.held, np.flatnonzero(data.miss2[:, 0] & seen)) and col.held.size > 5
    rng, s = _burnt(st, 11, 40)
    codec = st.cat2[0]
    for _ in range(10):
        y2 = s.y2.copy()
        b2, om2, _ = collapsed.level2_block(rng, st, col, y2, _level2_rows(st, s.u1, y2, s.b2), s.b2, s.omega2,
                                            s.cuts2, 1.0)
        keep = (codec.codes >= 0) | np.isin(np.arange(y2.shape[0]), col.held)
        assert np.array_equal(latents_to_codes(codec, y2[:, [0]], None)[keep],
                              latents_to_codes(codec, s.y2[:, [0]], None)[keep])
        assert not np.array_equal(y2[col.held], s.y2[col.held])
        s = s._replace(y2=y2, b2=b2, omega2=om2)


def _class_rare(seed=0, S=60, C=4, n=5):
    """Pupils (y continuous) in classes with a rare binary cb and an ordinal co with rare end
    categories, in schools with a rare binary sb; 20 % of y and of each class variable missing."""
    rng = np.random.default_rng(seed)
    school, cls, csch, us, uc, x, y = classes_in_schools(rng, S, C, n)
    N, K = S * C * n, S * C
    cb = (-1.5 + uc[:, 0] + us[csch, 1] + 0.6 * rng.standard_normal(K) > 0).astype(float)
    co = np.digitize(uc[:, 1] + us[csch, 2] + 0.7 * rng.standard_normal(K), [-1.6, 1.6]).astype(float)
    sb = (-1.3 + us[:, 0] + 0.5 * rng.standard_normal(S) > 0).astype(float)
    df = pd.DataFrame({"school": school, "class": cls % C, "x": x, "y": y, "cb": cb[cls], "co": co[cls],
                       "sb": sb[school]})
    df.loc[rng.random(N) < 0.2, "y"] = np.nan
    for c in ("cb", "co"):
        df.loc[(rng.random(K) < 0.2)[cls], c] = np.nan
    return df


CLASS_RARE = dict(cluster=["school", "class"], covariates=["x"],
                  variables={"y": "continuous", "cb": mi.Variable("binary", level="class"),
                             "co": mi.Variable("ordinal", level="class"),
                             "sb": mi.Variable("binary", level="school")})


def test_classification_level_block_leaves_a_consistent_state():
    """The general sampler's block for a classification's own variables: the rare columns of
    classes and schools get it; observed categories stay, only the column's B^(c) and Ω^(c) row
    move (fixed elements kept, positive definite), and they do."""
    from mlimpute.sampler import multi
    from mlimpute.sampler.latent import latents_to_codes
    from mlimpute.sampler.sweep import prepare_static

    data = prepare(_class_rare(12), mi.ImputationModel(**CLASS_RARE))
    st = prepare_static(data)
    assert isinstance(st, multi.MultiStatic)
    names = {data.classes[ci].y_names[col.c] for ci, cs in enumerate(st.classes) for col in cs.rare}
    assert names == {"cb", "co", "sb"}, names
    rng, s = _burnt(st, 12)
    moved = 0
    for _ in range(6):
        for ci, cs in enumerate(st.classes):
            if not cs.rare:
                continue
            ys, bs, omegas = [y.copy() for y in s.ys], list(s.bs), list(s.omegas)
            acc = multi._collapsed_class(rng, st, ci, ys, bs, list(s.us), omegas, list(s.cuts), s.vs,
                                         np.full(len(cs.rare), 1.0))
            assert acc.shape == (len(cs.rare),)
            for codec in cs.cat:
                obs = codec.codes >= 0
                cuts = s.cuts[ci][0] if codec.kind == "ordinal" else None
                assert np.array_equal(latents_to_codes(codec, ys[ci][:, list(codec.cols)], cuts)[obs],
                                      codec.codes[obs])
            rows = [cs.r + cs.nv + col.c for col in cs.rare]
            rest = [k for k in range(cs.dim) if k not in rows]
            assert np.array_equal(omegas[ci][np.ix_(rest, rest)], s.omegas[ci][np.ix_(rest, rest)])
            assert np.allclose(np.diag(omegas[ci]), np.diag(s.omegas[ci]))
            assert np.all(np.linalg.eigvalsh(omegas[ci]) > 0)
            keep = [k for k in range(cs.p) if k not in {col.c for col in cs.rare}]
            assert np.array_equal(bs[ci][:, keep], s.bs[ci][:, keep])
            moved += not np.array_equal(omegas[ci], s.omegas[ci]) and not np.array_equal(bs[ci], s.bs[ci])
            s = s._replace(ys=tuple(ys), bs=tuple(bs), omegas=tuple(omegas))
    assert moved >= 6


@pytest.mark.parametrize("variance", [None, "~ x"])
def test_general_sampler_with_classification_level_moves_keeps_the_posterior(variance, monkeypatch):
    """Rare categories of classes and schools: the same posterior with and without the blocks,
    also with a variance function of y (the level-1 block does not run then, the unit-level
    ones do)."""
    variables = dict(CLASS_RARE["variables"])
    if variance:
        variables["y"] = mi.Variable("continuous", variance=variance)
    data = prepare(_class_rare(13), mi.ImputationModel(**{**CLASS_RARE, "variables": variables}))
    assert_same_means(_with_and_without(data, [13, variance is None], monkeypatch))
