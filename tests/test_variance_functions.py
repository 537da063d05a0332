"""Variance functions in imputation: the row-precision kernels against direct computations, the
moves' target ratios against scipy densities, recovery of known parameters, and the errors."""

import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mlimpute as mi
from mlimpute.config import load_config
from mlimpute.design import build
from mlimpute.sampler import _class_kernels as ck
from mlimpute.sampler import _vf_kernels as vfk
from mlimpute.sampler import multi


def _spd(rng, p):
    a = rng.normal(size=(p, p))
    return a @ a.T + p * np.eye(p)


def _vf_setup(rng, n, p, vcols):
    """Ω1, rows' d and the (b, s²) of each function (lead: the others, then earlier functions)."""
    om = _spd(rng, p)
    other, leads, grids = multi.vf_layout(p, np.array(vcols, np.int64))
    st = SimpleNamespace(p1=p, vf=[SimpleNamespace(col=c) for c in vcols], vf_vcols=np.array(vcols, np.int64),
                         vf_other=other, vf_leads=leads, vf_grids=grids)
    bmat, s2 = multi.vf_params(st, om)
    d = np.ones((n, p))
    d[:, vcols] = np.exp(rng.normal(0, 0.5, (n, len(vcols))))
    return st, om, bmat, s2, d


def _parts(st, om, bmat, s2, d):
    """The kernels' (A0, G, rs, vcols)."""
    return (*multi.vf_precision(st, om, bmat, s2), d ** -0.5, st.vf_vcols)


def _row_cov(st, om, bmat, s2, d_i):
    """A row's covariance from the definition e_v = b'e_lead + √d η, η ~ N(0, s²)."""
    return multi.vf_omega(st, om[np.ix_(st.vf_other, st.vf_other)], bmat, s2 * d_i[st.vf_vcols])


def test_vf_parameters_round_trip_and_define_the_row_covariances():
    """vf_omega inverts vf_params; the kernels' row precisions are the inverses of the
    covariances built from the definition (two functions, the second led by the first)."""
    rng = np.random.default_rng(5)
    n, p = 6, 4
    st, om, bmat, s2, d = _vf_setup(rng, n, p, [1, 3])
    assert np.allclose(multi.vf_omega(st, om[np.ix_(st.vf_other, st.vf_other)], bmat, s2), om)
    parts = _parts(st, om, bmat, s2, d)
    rs = parts[2]
    y, mu = rng.normal(size=(n, p)), rng.normal(size=(n, p))
    unit = np.array([0, 1, 0, 1, 1, 0], np.int32)
    A, h = vfk.vf_unit_precisions(y, mu, *parts, unit, 2)
    W = [np.linalg.inv(_row_cov(st, om, bmat, s2, d[i])) for i in range(n)]
    for k in range(2):
        rows = np.flatnonzero(unit == k)
        assert np.allclose(A[k], sum(W[i] for i in rows))
        assert np.allclose(h[k], sum(W[i] @ (y[i] - mu[i]) for i in rows))
    x = np.column_stack([np.ones(n), rng.normal(size=n)])
    H, g = vfk.vf_normal_equations(x, y, mu, *parts, x.T @ x)
    assert np.allclose(H, sum(np.kron(W[i], np.outer(x[i], x[i])) for i in range(n)))
    assert np.allclose(g, sum(np.kron(W[i] @ (y[i] - mu[i]), x[i]) for i in range(n)))
    M0, Mw = vfk.vf_moments(y, mu, rs, st.vf_vcols)
    e = y - mu
    assert np.allclose(M0, e.T @ e)
    for j, c in enumerate(st.vf_vcols):
        assert np.allclose(Mw[j], (e / d[:, [c]]).T @ e)


def test_unit_statistics_from_the_fixed_effects_pass_follow_a_move_of_b1():
    """The per-unit Σ W_i and Σ W_i e_i that ``vf_unit_finish`` makes from the statistics of B1's
    pass, taken before B1 moved by dB, equal ``vf_unit_precisions`` after the move (units in
    runs and scattered); the pass's normal equations are ``vf_normal_equations``'."""
    rng = np.random.default_rng(8)
    n, p, K = 600, 3, 7
    st, om, bmat, s2, d = _vf_setup(rng, n, p, [1, 2])
    parts = _parts(st, om, bmat, s2, d)
    y, mu = rng.normal(size=(n, p)), rng.normal(size=(n, p))
    x = np.column_stack([np.ones(n), rng.normal(size=n), rng.integers(0, 2, n)])
    dB = rng.normal(size=(x.shape[1], p))
    H0, g0 = vfk.vf_normal_equations(x, y, mu, *parts, x.T @ x)
    for unit in (np.sort(rng.integers(0, K, n)), rng.integers(0, K, n)):
        H, g, stats_ = vfk.vf_normal_equations_units(x, y, mu, *parts, x.T @ x, unit, K)
        assert np.allclose(H, H0) and np.allclose(g, g0)
        count = np.bincount(unit, minlength=K).astype(float)
        A, h = vfk.vf_unit_finish(stats_, count, ck.unit_sums(x, unit, K), dB, parts[0], parts[1])
        A2, h2 = vfk.vf_unit_precisions(y, mu + x @ dB, *parts, unit, K)
        assert np.allclose(A, A2) and np.allclose(h, h2)


def test_cell_statistics_equal_the_row_statistics():
    """With a function on a grouping covariate and a unit effect, the rows of a cell share d:
    the moves' group statistics and Ω1's moments from per-cell moments equal the row-by-row
    ones, and the cells' scales written back are the rows'. A continuous covariate or too many
    cells: no cells."""
    rng = np.random.default_rng(9)
    n, p, K = 400, 3, 20
    st, om, bmat, s2, _ = _vf_setup(rng, n, p, [2])
    sex = rng.integers(0, 2, n).astype(np.int32)
    unit = np.repeat(np.arange(K), n // K)
    cells = multi.VarianceCells.build([sex], unit, n)
    C = cells.count.size
    assert C == len(set(zip(sex, unit)))
    rho = np.exp(rng.normal(size=C))
    d = np.ones((n, p))
    d[:, 2] = 1.0 / rho[cells.of_row]
    _, G, rs, _ = _parts(st, om, bmat, s2, d)
    y, mu = rng.normal(size=(n, p)), rng.normal(size=(n, p))
    E = vfk.cell_moments(y, mu, cells.of_row, C)
    e = y - mu
    for c in (0, 7):
        assert np.allclose(multi._unpacked(E[c]), e[cells.of_row == c].T @ e[cells.of_row == c])
    q = E @ multi._packed(np.outer(G[0], G[0]), True)
    for grp, cgrp, size in ((unit, cells.unit, K), (sex, cells.groups[0], 2)):
        cnt, SA = vfk.eta_stats(y, mu, rs, G[0], 2, grp, size)
        assert np.allclose(np.bincount(cgrp, cells.count, size), cnt)
        assert np.allclose(np.bincount(cgrp, rho * q, size), SA)
    M0, Mw = vfk.vf_moments(y, mu, rs, st.vf_vcols)
    got = multi.cell_level1_moments({0: (E, rho)}, 1)
    assert np.allclose(got[0], M0) and np.allclose(got[1], Mw)
    rs2 = np.ones((n, p))
    vfk.set_cell_scales(rs2, 2, cells.of_row, np.sqrt(rho))
    assert np.allclose(rs2, rs)
    assert multi.VarianceCells.build([sex, None], unit, n) is None
    assert multi.VarianceCells.build([np.arange(n) % 150], None, n) is None


def test_eta_statistics_and_changes_equal_the_direct_loglikelihood():
    """Moving rows' log-variance of one function by c_g δ changes Σ_i log N(e_i; 0, Σ_i) by the
    grouped formula of ``eta_stats`` and by ``eta_change`` (Σ_i from the definition)."""
    rng = np.random.default_rng(0)
    n, p = 60, 3
    st, om, bmat, s2, d = _vf_setup(rng, n, p, [1, 2])
    y, mu = rng.normal(size=(n, p)), rng.normal(size=(n, p))
    group = rng.integers(0, 4, n).astype(np.int32)
    c = np.array([0.0, 1.0, -0.5, 2.0])

    def loglik(d_):
        return sum(stats.multivariate_normal(np.zeros(p), _row_cov(st, om, bmat, s2, d_[i])).logpdf(y[i] - mu[i])
                   for i in range(n))

    for j, col in enumerate(st.vf_vcols):
        delta = 0.37
        d2 = d.copy()
        d2[:, col] *= np.exp(c[group] * delta)
        direct = loglik(d2) - loglik(d)
        _, G, rs, _ = _parts(st, om, bmat, s2, d)
        cnt, SA = vfk.eta_stats(y, mu, rs, G[j], col, group, 4)
        grouped = sum(ck._change(delta, c[g], cnt[g], SA[g]) for g in range(4))
        row = vfk.eta_change(y, mu, rs, G[j], col, c[group] * delta)
        assert grouped == pytest.approx(direct, rel=1e-10, abs=1e-10)
        assert row == pytest.approx(direct, rel=1e-10, abs=1e-10)


def test_row_precision_kernels_against_the_row_covariance():
    """Missing cells and latent conditionals of rows with their own covariance Σ_i against dense
    conditional-normal formulas."""
    rng = np.random.default_rng(1)
    n, p = 5, 3
    st, om, bmat, s2, d = _vf_setup(rng, n, p, [2])
    parts = _parts(st, om, bmat, s2, d)
    mu = rng.normal(size=(n, p))
    y = rng.normal(size=(n, p))
    mask = np.array([[False, True, True], [True, False, False], [True, True, True]])   # 2, 1, 3 holes
    pid = np.array([0, 1, 2, 0, 1], np.int16)
    z = rng.normal(size=9)
    got = y.copy()
    assert vfk.vf_missing_rows(got, mu, np.arange(n, dtype=np.int32), pid, mask, *parts, z)
    pos = 0
    for i in range(n):
        cov = _row_cov(st, om, bmat, s2, d[i])
        m = np.flatnonzero(mask[pid[i]])
        o = np.flatnonzero(~mask[pid[i]])
        if o.size:
            mean = mu[i, m] + cov[np.ix_(m, o)] @ np.linalg.solve(cov[np.ix_(o, o)], y[i, o] - mu[i, o])
            var = cov[np.ix_(m, m)] - cov[np.ix_(m, o)] @ np.linalg.solve(cov[np.ix_(o, o)], cov[np.ix_(o, m)])
        else:
            mean, var = mu[i], cov
        # the kernel's draw: mean + L'⁻¹ z with L L' = Var⁻¹
        L = np.linalg.cholesky(np.linalg.inv(var))
        assert np.allclose(got[i, m], mean + np.linalg.solve(L.T, z[pos:pos + m.size]))
        assert np.array_equal(got[i, o], y[i, o])
        pos += m.size
    # ordinal threshold ratio: the conditional of column 0 given the others, row by row
    codes = np.array([0, 1, 2, 1, 0], np.int8)
    old = np.array([-np.inf, 0.0, 0.5, np.inf])
    new = np.array([-np.inf, 0.0, 0.8, np.inf])
    got = vfk.vf_ordinal_ratio(y, mu, *parts, 0, codes, new, old, 2)
    want = 0.0
    for i in range(n):
        if codes[i] not in (1, 2):
            continue
        cov = _row_cov(st, om, bmat, s2, d[i])
        o = [1, 2]
        cm = mu[i, 0] + cov[0, o] @ np.linalg.solve(cov[np.ix_(o, o)], y[i, o] - mu[i, o])
        sd = np.sqrt(cov[0, 0] - cov[0, o] @ np.linalg.solve(cov[np.ix_(o, o)], cov[o, 0]))
        k = codes[i]
        want += (np.log(stats.norm.cdf(new[k + 1], cm, sd) - stats.norm.cdf(new[k], cm, sd))
                 - np.log(stats.norm.cdf(old[k + 1], cm, sd) - stats.norm.cdf(old[k], cm, sd)))
    assert got == pytest.approx(want, rel=1e-9)


def test_latent_column_uses_each_rows_conditional():
    """With given uniforms, vf_latent_column's draw of an ordinal column equals the inverse-CDF
    draw from the row's conditional (covariance from the definition) restricted to its category."""
    from mlimpute.sampler import _kernels as kern
    from mlimpute.sampler.latent import truncated_normal

    rng = np.random.default_rng(8)
    n, p = 50, 3
    st, om, bmat, s2, d = _vf_setup(rng, n, p, [1, 2])
    y, mean = rng.normal(size=(n, p)), rng.normal(size=(n, p))
    cuts = np.array([-np.inf, 0.0, 0.7, np.inf])
    codes = rng.integers(-1, 3, n).astype(np.int16)
    u = 1.0 - rng.random(n)
    got = y.copy()
    vfk.vf_latent_column(got, mean, *_parts(st, om, bmat, s2, d), 0, kern.ORDINAL, codes, np.array([0]), 0,
                         cuts, u)
    obs = codes >= 0
    for i in np.flatnonzero(obs):
        cov = _row_cov(st, om, bmat, s2, d[i])
        o = [1, 2]
        cm = mean[i, 0] + cov[0, o] @ np.linalg.solve(cov[np.ix_(o, o)], y[i, o] - mean[i, o])
        sd = np.sqrt(cov[0, 0] - cov[0, o] @ np.linalg.solve(cov[np.ix_(o, o)], cov[o, 0]))

        class Fixed:
            def random(self, size):
                return 1.0 - u[i:i + size]

        want = truncated_normal(Fixed(), np.array([cm]), sd, cuts[[codes[i]]], cuts[[codes[i] + 1]])[0]
        assert got[i, 0] == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert np.array_equal(got[~obs], y[~obs])
    assert np.array_equal(got[:, 1:], y[:, 1:])


def test_shift_move_ratio_is_the_prior_ratio_along_its_line():
    """shift_log_ratio against scipy: Σ_k log N(u_k − δe) + log IW(Ω1') + δ (the Jacobian of
    s² → s² e^δ) minus the same at δ = 0, Ω1' having the function's s² times e^δ (the
    likelihood does not change along the line)."""
    rng = np.random.default_rng(2)
    p, K, r = 3, 7, 4
    st, om1, bmat, s2, _ = _vf_setup(rng, 1, p, [2])
    psi, df1 = np.eye(p) * 0.7 + 0.1, 5.0
    omc = stats.invwishart(df=8, scale=np.eye(r)).rvs(random_state=4)
    u = rng.normal(size=(K, r))
    vcol = 2
    delta = 0.23
    lam = np.linalg.inv(omc)
    lead = st.vf_leads[0]
    h = np.append(-bmat[0, lead], 1.0)
    idx = np.append(lead, 2)
    Q = h @ psi[np.ix_(idx, idx)] @ h
    formula = multi.shift_log_ratio(delta, lam[vcol] @ u.sum(axis=0), K * lam[vcol, vcol],
                                    0.5 * (df1 + lead.size), Q, s2[0])
    om2 = multi.vf_omega(st, om1[np.ix_(st.vf_other, st.vf_other)], bmat, s2 * np.exp(delta))
    e = np.zeros(r)
    e[vcol] = 1.0
    mvn = stats.multivariate_normal(np.zeros(r), omc)
    iw = stats.invwishart(df=df1, scale=psi)
    direct = (mvn.logpdf(u - delta * e).sum() - mvn.logpdf(u).sum()
              + iw.logpdf(om2) - iw.logpdf(om1) + delta)
    assert formula == pytest.approx(direct, rel=1e-10)


def test_level1_covariance_draw_has_the_conjugate_law():
    """With d = 1 (no function active), the parts-wise draw of Ω1 has the law of the plain
    inverse Wishart IW(ν + N, Ψ + S): compare Monte Carlo means of Ω1 and Ω1⁻¹ (4 SEs)."""
    rng = np.random.default_rng(7)
    n, p = 30, 3
    st, _, _, _, _ = _vf_setup(rng, n, p, [1, 2])
    st.prior1 = (np.eye(p), float(p))
    st.data = SimpleNamespace(n_rows=n)
    st.con1_other = None
    e = rng.normal(size=(n, p)) @ np.linalg.cholesky(_spd(rng, p)).T
    mu = np.zeros((n, p))
    rs = np.ones((n, p))
    draws = np.array([multi.draw_level1_covariance(rng, st, e, mu, rs, np.eye(p), np.zeros(0))[0]
                      for _ in range(4000)])
    scale, df = np.eye(p) + e.T @ e, p + n
    want = scale / (df - p - 1)
    se = draws.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(draws.mean(axis=0) - want) < 4 * se + 1e-12)
    inv = np.linalg.inv(draws)
    want_inv = df * np.linalg.inv(scale)
    se_inv = inv.std(axis=0) / np.sqrt(len(draws))
    assert np.all(np.abs(inv.mean(axis=0) - want_inv) < 4 * se_inv + 1e-12)


def _hetero(rng, J=120, n=20, missing=0.3):
    g = np.repeat(np.arange(J), n)
    N = J * n
    sex = rng.integers(0, 2, N)
    x = rng.normal(size=N)
    u = rng.normal(0, np.sqrt(0.3), J)
    v = rng.normal(0, np.sqrt(0.2), J)
    y = 1 + 0.5 * x + u[g] + np.exp(0.5 * (np.log(4) * sex + v[g])) * rng.normal(size=N)
    df = pd.DataFrame({"g": g, "sex": sex, "x": x, "y": y})
    df.loc[rng.random(N) < missing, "y"] = np.nan
    return df


def test_recovers_a_location_scale_model():
    """Residual SD twice as large for sex = 1, a cluster effect on the log-variance (Var 0.2):
    posterior means within 4 posterior SDs of the truth."""
    df = _hetero(np.random.default_rng(3))
    model = mi.ImputationModel(cluster="g", variables={"y": mi.Variable("continuous", variance="~ sex + (1 | g)")},
                               covariates=["x", "sex"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        res = mi.impute(df, model, n_imputations=4, burn=800, between=200, chains=2, seed=1)
    s = res.summary().set_index("parameter")
    # Ω1 at the covariates' means: the residual variance where sex is its mean share, 4^mean(sex)
    truth = {"gamma[y:sex]": np.log(4), "omega[g][logvar(y),logvar(y)]": 0.2, "omega[g][y,y]": 0.3,
             "beta1[y:x]": 0.5, "omega1[y,y]": 4.0 ** df["sex"].mean()}
    for name, value in truth.items():
        assert abs(s.loc[name, "mean"] - value) < 4 * s.loc[name, "sd"], (name, s.loc[name, "mean"])
    # the imputations carry the variance function: imputed values spread twice as far for sex = 1
    comp = res.data[res.data["imputation"] == 1]
    holes = df["y"].isna().to_numpy()
    resid = (comp["y"] - (1 + 0.5 * comp["x"])).to_numpy()[holes]
    ratio = resid[df["sex"].to_numpy()[holes] == 1].std() / resid[df["sex"].to_numpy()[holes] == 0].std()
    assert 1.5 < ratio < 2.6


def test_a_covariate_far_from_zero_mixes_and_recovers():
    """w and w + 30 are the same model (σ² at w = 0 moves by e^{-30γ}): the sampler centres w, so
    both recover γ. Before, a move of γ rescaled every row's variance by e^{30Δγ} and the IW
    prior spoke of the variance at w = 0 (helper 27: posterior γ 0.07, R-hat 2.35, truth 0.6)."""
    rng = np.random.default_rng(11)
    J, n = 60, 15
    g = np.repeat(np.arange(J), n)
    u, x = rng.normal(size=J * n), rng.normal(size=J * n)
    y = 1 + 0.5 * x + rng.normal(0, np.sqrt(0.3), J)[g] + np.exp(0.3 * u) * rng.normal(size=J * n)
    df = pd.DataFrame(dict(g=g, x=x, y=y, u=u))
    df.loc[rng.random(J * n) < 0.3, "y"] = np.nan
    post = {}
    for c in (0.0, 30.0):
        model = mi.ImputationModel(cluster="g", variables={"y": mi.Variable("continuous", variance="~ w")},
                                   covariates=["x", "w"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mi.ConvergenceWarning)
            res = mi.impute(df.assign(w=u + c), model, n_imputations=4, burn=600, between=100, chains=2, seed=2)
        s = res.summary().set_index("parameter")
        post[c] = (s.loc["gamma[y:w]", "mean"], s.loc["gamma[y:w]", "sd"], s.loc["omega1[y,y]", "mean"])
        assert res.diagnostics().set_index("parameter").loc["gamma[y:w]", "rhat"] < 1.1
        assert abs(post[c][0] - 0.6) < 4 * post[c][1]
    assert abs(post[0.0][0] - post[30.0][0]) < 2 * post[0.0][1]
    # Ω1[y, y] is reported at the covariates' means: the same for both (at w = 0, 30 units from the
    # data, it was e^{-30γ} times smaller, and e^{-201} for a calendar year at γ = 0.1)
    assert post[30.0][2] == pytest.approx(post[0.0][2], rel=0.1)


def test_a_rare_reference_level_mixes_and_agrees_with_a_common_one():
    """A factor whose reference level (first sorted) holds 3 % of the rows: each dummy's γ is a
    contrast with it, so they all move with its variance; one-at-a-time moves left R-hat at
    1.44-1.48 (helper 27). With the factor's joint move both codings mix and agree (γ_c − γ_b of
    one coding is γ_c of the other)."""
    from mlimpute.sampler.multi import factor_moves

    w = np.array([[0, 0], [1, 0], [0, 1], [0, 1.0]])
    moves, dirs = factor_moves(w, ("f[T.b]", "f[T.c]"), w.mean(axis=0))
    np.testing.assert_array_equal(moves, [[1, 0], [0, 1], [1, 1]])
    np.testing.assert_allclose(dirs[:, 2], [-0.75, 0.25, 0.25, 0.25])
    assert factor_moves(w, ("f[T.b]:x", "g[T.c]"), w.mean(axis=0))[0].shape == (2, 2)   # no factor of 2+ dummies

    rng = np.random.default_rng(12)
    J, n = 60, 15
    g = np.repeat(np.arange(J), n)
    f = rng.choice(["a", "b", "c"], J * n, p=[0.03, 0.5, 0.47])
    x = rng.normal(size=J * n)
    y = 1 + 0.5 * x + rng.normal(0, np.sqrt(0.3), J)[g] + np.exp(0.5 * np.log(4) * (f == "c")) * rng.normal(size=J * n)
    df = pd.DataFrame(dict(g=g, f=f, f2=pd.Series(f).map({"a": "z_a", "b": "b", "c": "c"}), x=x, y=y))
    df.loc[rng.random(J * n) < 0.3, "y"] = np.nan
    post = {}
    for v in ("f", "f2"):
        model = mi.ImputationModel(cluster="g", variables={"y": mi.Variable("continuous", variance=f"~ {v}")},
                                   covariates=["x", v])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mi.ConvergenceWarning)
            res = mi.impute(df, model, n_imputations=5, burn=800, between=50, chains=2, seed=3)
        d = res.diagnostics().set_index("parameter")
        gam = [p for p in d.index if p.startswith("gamma")]
        assert d.loc[gam, "rhat"].max() < 1.1, d.loc[gam]
        post[v] = res.summary().set_index("parameter")
    c_vs_b = post["f"].loc["gamma[y:f[T.c]]", "mean"] - post["f"].loc["gamma[y:f[T.b]]", "mean"]
    assert c_vs_b == pytest.approx(post["f2"].loc["gamma[y:f2[T.c]]", "mean"], abs=0.1)
    assert abs(post["f2"].loc["gamma[y:f2[T.c]]", "mean"] - np.log(4)) < 4 * post["f2"].loc["gamma[y:f2[T.c]]", "sd"]


def test_kept_level1_mean_is_the_recomputed_one():
    """The general sampler keeps μ1 across sweeps (``work``): the chain is the one that
    recomputes it every sweep, to rounding, and μ1 equals X1 B1 + effects of the state."""
    from mlimpute.impute import prepare
    from mlimpute.sampler import initial_state, prepare_static, sweep
    from mlimpute.sampler.multi import level1_mean

    df = _hetero(np.random.default_rng(4))
    df.loc[np.random.default_rng(5).random(len(df)) < 0.2, "x"] = np.nan
    model = mi.ImputationModel(cluster="g", variables={"y": mi.Variable("continuous", variance="~ sex + (1 | g)"),
                                                       "x": "continuous"}, covariates=["sex"])
    st = prepare_static(prepare(df, model))
    states = []
    for work in ({}, None):
        rng = np.random.default_rng(9)
        s = initial_state(st, rng)
        for it in range(60):
            s = sweep(rng, st, s, adapt_at=it if it < 30 else None, work=work)
        states.append(s)
    kept, fresh = states
    work = {}
    rng = np.random.default_rng(9)
    s = initial_state(st, rng)
    for it in range(60):
        s = sweep(rng, st, s, adapt_at=it if it < 30 else None, work=work)
    assert np.allclose(work["mu1"][0], level1_mean(st, s.b1, s.us), rtol=1e-12, atol=1e-12)
    assert np.allclose(kept.b1, fresh.b1, rtol=1e-9, atol=1e-12)
    assert np.allclose(kept.y1, fresh.y1, rtol=1e-9, atol=1e-12)
    assert np.allclose(kept.omega1, fresh.omega1, rtol=1e-9, atol=1e-12)


def test_mixed_types_with_a_variance_function():
    """y heteroscedastic given x (y = 1 + 0.8x + u + √d η), x and a binary c incomplete: γ is
    recovered (within 4 posterior SDs) although y and x are strongly correlated, the imputed y
    spread twice as far for sex = 1 given x, observed cells never change and imputed c are 0/1."""
    rng = np.random.default_rng(12)
    J, n = 100, 20
    g = np.repeat(np.arange(J), n)
    N = J * n
    sex = rng.integers(0, 2, N)
    x = rng.normal(size=N) + rng.normal(0, 0.5, J)[g]
    c = (0.7 * x + rng.normal(size=N) > 0).astype(float)
    y = 1 + 0.8 * x + rng.normal(0, np.sqrt(0.3), J)[g] + np.exp(0.5 * np.log(4) * sex) * rng.normal(size=N)
    df = pd.DataFrame({"g": g, "sex": sex, "x": x, "y": y, "c": c})
    for col in ("x", "y", "c"):
        df.loc[rng.random(N) < 0.2, col] = np.nan
    model = mi.ImputationModel(cluster="g", variables={"y": mi.Variable("continuous", variance="~ sex"),
                                                       "x": "continuous", "c": "binary"}, covariates=["sex"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        res = mi.impute(df, model, n_imputations=3, burn=600, between=150, chains=2, seed=2)
    s = res.summary().set_index("parameter")
    assert abs(s.loc["gamma[y:sex]", "mean"] - np.log(4)) < 4 * s.loc["gamma[y:sex]", "sd"]
    for k in (1, 2, 3):
        comp = res.data[res.data["imputation"] == k].reset_index(drop=True)
        for col in ("x", "y", "c"):
            obs = df[col].notna().to_numpy()
            assert np.array_equal(comp[col].to_numpy(float)[obs], df[col].to_numpy()[obs])
        assert set(np.unique(comp["c"].to_numpy(float))) <= {0.0, 1.0}
    comp = res.data[res.data["imputation"] == 1].reset_index(drop=True)
    holes = (df["y"].isna() & df["x"].notna()).to_numpy()
    resid = (comp["y"] - (1 + 0.8 * comp["x"])).to_numpy()[holes]
    ratio = resid[sex[holes] == 1].std() / resid[sex[holes] == 0].std()
    assert 1.5 < ratio < 2.6


@pytest.mark.parametrize("variables, kw, exc, match", [
    ({"y": mi.Variable("continuous", variance="~ sex")}, dict(random_slopes=["x"]), mi.SpecError,
     "variance function of 'y' cannot be combined with random_slopes"),
    ({"y": mi.Variable("continuous", variance="~ sex")}, dict(covariance="cluster"), mi.SpecError,
     "cannot be combined with covariance='cluster'"),
    # with the model's other refusals (a TOML file's name in front), not when the data are read
    ({"y": mi.Variable("continuous", variance="~ sex + (1 | other)")}, {}, mi.SpecError,
     r"variance='~ sex \+ \(1 \| other\)' of 'y': its random term '\(1 \| other\)' must be one random intercept"),
    ({"y": mi.Variable("continuous", variance="~ sex + (1 + x | g)")}, {}, mi.SpecError, "must be one random intercept"),
])
def test_spec_errors(variables, kw, exc, match):
    with pytest.raises(exc, match=match):
        mi.ImputationModel(cluster="g", variables=variables, covariates=["x"], **kw)


def test_variable_errors():
    with pytest.raises(mi.SpecError, match="is for continuous level-1 variables"):
        mi.Variable("binary", variance="~ sex")
    with pytest.raises(mi.SpecError, match="must be a one-sided formula"):
        mi.Variable("continuous", variance="sex")
    with pytest.raises(mi.SpecError, match=r"must be a one-sided formula .*\(it is empty\)"):   # was '__lhs__ ~'
        mi.Variable("continuous", variance="~ ")


@pytest.mark.parametrize("variance, exc, match", [
    ("~ nope", mi.DataError, "column 'nope' of variance='~ nope' of 'y' is not in the data"),
    ("~ gap", mi.DataError, r"column 'gap' of variance='~ gap' of 'y' has \d+ missing value"),
    ("~ one", mi.DataError, "column 'one' of variance='~ one' of 'y' is constant"),
    # a transform's missing (was numpy's ValueError of mismatched rows) or infinite values
    ("~ np.log(x)", mi.DataError, r"a transform in variance='~ np.log\(x\)' of 'y' gives missing or infinite"),
    ("~ np.log(one - 1)", mi.DataError, r"column 'np.log\(one - 1\)' has 50 infinite value"),
])
def test_data_errors(variance, exc, match):
    df = _hetero(np.random.default_rng(4), J=10, n=5).assign(one=1.0, gap=np.nan, other=0)
    model = mi.ImputationModel(cluster="g", variables={"y": mi.Variable("continuous", variance=variance)},
                               covariates=["x"])
    with warnings.catch_warnings(), pytest.raises(exc, match=match):
        warnings.simplefilter("error")   # the refusal alone: no numpy RuntimeWarning before it
        build(df, model)


def test_variance_in_toml(tmp_path):
    text = Path(__file__).with_name("fixtures").joinpath("pipeline", "exam.toml").read_text()
    text = text.replace('normexam = "continuous"', 'normexam = { kind = "continuous", variance = "~ sex + (1 | school)" }')
    (tmp_path / "c.toml").write_text(text)
    model = load_config(tmp_path / "c.toml").imputation_model()
    assert model.variables["normexam"].variance == "~ sex + (1 | school)" and model.general


def test_two_variance_functions_with_cells_recover_their_parameters():
    """Two variables with functions (one with a cluster effect on its log-variance, one
    without), both on cells: Ω1's moments then come from the cells of both (the second given
    the first); each γ within 4 posterior SDs, the log-variance effects' variance too."""
    rng = np.random.default_rng(21)
    J, n = 150, 16
    g = np.repeat(np.arange(J), n)
    N = J * n
    sex = rng.integers(0, 2, N)
    v = rng.normal(0, np.sqrt(0.2), J)
    y1 = 1 + rng.normal(0, 0.5, J)[g] + np.exp(0.5 * (np.log(4) * sex + v[g])) * rng.normal(size=N)
    y2 = 0.5 * y1 + rng.normal(0, 0.4, J)[g] + np.exp(0.5 * np.log(0.5) * sex) * rng.normal(size=N)
    df = pd.DataFrame({"g": g, "sex": sex, "y1": y1, "y2": y2})
    for col in ("y1", "y2"):
        df.loc[rng.random(N) < 0.2, col] = np.nan
    model = mi.ImputationModel(cluster="g", covariates=["sex"], variables={
        "y1": mi.Variable("continuous", variance="~ sex + (1 | g)"),
        "y2": mi.Variable("continuous", variance="~ sex")})
    st = multi.prepare_multi(__import__("mlimpute.impute", fromlist=["prepare"]).prepare(df, model))
    assert all(f.cells is not None for f in st.vf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        res = mi.impute(df, model, n_imputations=4, burn=600, between=150, chains=2, seed=3)
    s = res.summary().set_index("parameter")
    for name, value in {"gamma[y1:sex]": np.log(4), "gamma[y2:sex]": np.log(0.5),
                        "omega[g][logvar(y1),logvar(y1)]": 0.2}.items():
        assert abs(s.loc[name, "mean"] - value) < 4 * s.loc[name, "sd"], (name, s.loc[name, "mean"])
