"""Variance functions in imputation: the row-scaled kernels against direct computations, the
moves' target ratios against scipy densities, recovery of known parameters, and the errors."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mlimpute as mi
from mlimpute.config import load_config
from mlimpute.design import build
from mlimpute.sampler import _class_kernels as ck
from mlimpute.sampler import _kernels as kern
from mlimpute.sampler.missing import conditionals


def _spd(rng, p):
    a = rng.normal(size=(p, p))
    return a @ a.T + p * np.eye(p)


def test_logvar_statistics_and_changes_equal_the_direct_loglikelihood():
    """Moving row i's log-variance of column v by c_g δ changes Σ_i log N(e_i; 0, D_i^½ Ω D_i^½)
    by the grouped formula of ``logvar_stats`` and by ``logvar_change``."""
    rng = np.random.default_rng(0)
    n, p, col = 60, 3, 1
    y, mu = rng.normal(size=(n, p)), rng.normal(size=(n, p))
    rs = np.exp(rng.normal(0, 0.3, (n, p)))
    om = _spd(rng, p)
    om_inv = np.linalg.inv(om)
    group = rng.integers(0, 4, n).astype(np.int32)
    c = np.array([0.0, 1.0, -0.5, 2.0])

    def loglik(rs_):
        total = 0.0
        for i in range(n):
            s = 1.0 / rs_[i]
            total += stats.multivariate_normal(np.zeros(p), np.outer(s, s) * om).logpdf(y[i] - mu[i])
        return total

    delta = 0.37
    rs2 = rs.copy()
    rs2[:, col] *= np.exp(-0.5 * c[group] * delta)
    direct = loglik(rs2) - loglik(rs)
    cnt, SA, SB = ck.logvar_stats(y, mu, rs, om_inv, col, group, 4)
    grouped = sum(ck._change(delta, c[g], cnt[g], SA[g], SB[g]) for g in range(4))
    row = ck.logvar_change(np.ascontiguousarray(y - mu), rs, om_inv, col, c[group] * delta,
                           np.zeros(n, np.int64), 1)[0]
    assert grouped == pytest.approx(direct, rel=1e-10, abs=1e-10)
    assert row == pytest.approx(direct, rel=1e-10, abs=1e-10)


def test_row_scaled_kernels_against_the_row_covariance():
    """Missing cells and latent conditionals of a row with covariance D^½ Ω D^½ (rs = D^-½),
    and the unit precisions Σ Ω_i⁻¹, against dense formulas."""
    rng = np.random.default_rng(1)
    n, p = 5, 3
    om = _spd(rng, p)
    rs = np.exp(rng.normal(0, 0.4, (n, p)))
    mu = rng.normal(size=(n, p))
    y = rng.normal(size=(n, p))
    mask = np.array([[False, True, False]])
    K, C = conditionals(om[None], mask)
    z = rng.normal(size=n)
    got = y.copy()
    kern.missing_rows(got, mu, np.arange(n, dtype=np.int32), np.zeros(n, np.int16), mask, K, C,
                      np.zeros(1, np.int64), False, z, rs, True)
    for i in range(n):
        s = 1.0 / rs[i]
        cov = np.outer(s, s) * om
        o, m = [0, 2], 1
        mean = mu[i, m] + cov[m, o] @ np.linalg.solve(cov[np.ix_(o, o)], y[i, o] - mu[i, o])
        var = cov[m, m] - cov[m, o] @ np.linalg.solve(cov[np.ix_(o, o)], cov[o, m])
        assert got[i, m] == pytest.approx(mean + np.sqrt(var) * z[i], rel=1e-10)
        assert np.array_equal(got[i, o], y[i, o])
    om_inv = np.linalg.inv(om)
    unit = np.array([0, 1, 0, 1, 1], np.int32)
    A, h = ck.unit_precisions(y, mu, rs, om_inv, unit, 2)
    for k in range(2):
        rows = np.flatnonzero(unit == k)
        Ak = sum(np.diag(rs[i]) @ om_inv @ np.diag(rs[i]) for i in rows)
        hk = sum(np.diag(rs[i]) @ om_inv @ np.diag(rs[i]) @ (y[i] - mu[i]) for i in rows)
        assert np.allclose(A[k], Ak) and np.allclose(h[k], hk)
    x = np.column_stack([np.ones(n), rng.normal(size=n)])
    g = ck.weighted_gradient(x, y, mu, rs, om_inv)
    want = sum(np.kron(np.diag(rs[i]) @ om_inv @ np.diag(rs[i]) @ (y[i] - mu[i]), x[i]) for i in range(n))
    assert np.allclose(g, want)


def test_shift_move_ratio_is_the_prior_ratio_along_its_line():
    """shift_logvar's log ratio against scipy: Σ_k log N(u_k − δe) + log IW(AΩ1A) + log|A|^{p+1}
    minus the same at δ = 0 (the likelihood does not change along the line)."""
    rng = np.random.default_rng(2)
    p, col, K, r = 3, 1, 7, 4
    om1 = stats.invwishart(df=6, scale=np.eye(p)).rvs(random_state=3)
    psi, df1 = np.eye(p) * 0.7, 5.0
    omc = stats.invwishart(df=8, scale=np.eye(r)).rvs(random_state=4)
    u = rng.normal(size=(K, r))
    vcol = 2
    delta = 0.23
    a = np.ones(p)
    a[col] = np.exp(0.5 * delta)
    lam = np.linalg.inv(omc)
    om_inv = np.linalg.inv(om1)
    formula = (delta * lam[vcol] @ u.sum(axis=0) - 0.5 * K * delta ** 2 * lam[vcol, vcol]
               - 0.5 * df1 * delta - 0.5 * np.sum(psi * om_inv * (1.0 / np.outer(a, a) - 1.0)))
    e = np.zeros(r)
    e[vcol] = 1.0
    mvn = stats.multivariate_normal(np.zeros(r), omc)
    iw = stats.invwishart(df=df1, scale=psi)
    direct = (mvn.logpdf(u - delta * e).sum() - mvn.logpdf(u).sum()
              + iw.logpdf(om1 * np.outer(a, a)) - iw.logpdf(om1) + (p + 1) * np.log(a).sum())
    assert formula == pytest.approx(direct, rel=1e-10)


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
    truth = {"gamma[y:sex]": np.log(4), "omega[g][logvar(y),logvar(y)]": 0.2, "omega[g][y,y]": 0.3,
             "beta1[y:x]": 0.5, "omega1[y,y]": 1.0}
    for name, value in truth.items():
        assert abs(s.loc[name, "mean"] - value) < 4 * s.loc[name, "sd"], (name, s.loc[name, "mean"])
    # the imputations carry the variance function: imputed values spread twice as far for sex = 1
    comp = res.data[res.data["imputation"] == 1]
    holes = df["y"].isna().to_numpy()
    resid = (comp["y"] - (1 + 0.5 * comp["x"])).to_numpy()[holes]
    ratio = resid[df["sex"].to_numpy()[holes] == 1].std() / resid[df["sex"].to_numpy()[holes] == 0].std()
    assert 1.5 < ratio < 2.6


@pytest.mark.parametrize("variables, kw, exc, match", [
    ({"y": mi.Variable("continuous", variance="~ sex")}, dict(random_slopes=["x"]), mi.SpecError,
     "variance function of 'y' cannot be combined with random_slopes"),
    ({"y": mi.Variable("continuous", variance="~ sex")}, dict(covariance="cluster"), mi.SpecError,
     "cannot be combined with covariance='cluster'"),
])
def test_spec_errors(variables, kw, exc, match):
    with pytest.raises(exc, match=match):
        mi.ImputationModel(cluster="g", variables=variables, covariates=["x"], **kw)


def test_variable_errors():
    with pytest.raises(mi.SpecError, match="is for continuous level-1 variables"):
        mi.Variable("binary", variance="~ sex")
    with pytest.raises(mi.SpecError, match="must be a one-sided formula"):
        mi.Variable("continuous", variance="sex")


@pytest.mark.parametrize("variance, exc, match", [
    ("~ nope", mi.DataError, "column 'nope' of variance='~ nope' of 'y' is not in the data"),
    ("~ gap", mi.DataError, r"column 'gap' of variance='~ gap' of 'y' has \d+ missing value"),
    ("~ one", mi.DataError, "column 'one' of variance='~ one' of 'y' is constant"),
    ("~ sex + (1 | other)", mi.SpecError, r"random term '\(1 \| other\)' must be one random intercept"),
    ("~ sex + (1 + x | g)", mi.SpecError, "must be one random intercept"),
])
def test_data_errors(variance, exc, match):
    df = _hetero(np.random.default_rng(4), J=10, n=5).assign(one=1.0, gap=np.nan, other=0)
    model = mi.ImputationModel(cluster="g", variables={"y": mi.Variable("continuous", variance=variance)},
                               covariates=["x"])
    with pytest.raises(exc, match=match):
        build(df, model)


def test_variance_in_toml(tmp_path):
    text = Path(__file__).with_name("fixtures").joinpath("pipeline", "exam.toml").read_text()
    text = text.replace('normexam = "continuous"', 'normexam = { kind = "continuous", variance = "~ sex + (1 | school)" }')
    (tmp_path / "c.toml").write_text(text)
    model = load_config(tmp_path / "c.toml").imputation_model()
    assert model.variables["normexam"].variance == "~ sex + (1 | school)" and model.general
