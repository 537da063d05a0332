"""Substantive-model-compatible imputation end to end: recovery of known parameters, mixed
covariate types at both levels, binary outcomes, and the invariants of every imputation."""

import warnings

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi


def _run(df, model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        return mi.impute(df, model, **{**dict(n_imputations=4, burn=300, between=50, chains=2, seed=1), **kw})


def _slopes(rng, J=150, n=10, missing_y=0.0):
    """y = 0.5 x + 0.3 z + 0.3 x z + u0 + u1 x + e; x missing more often when y is high."""
    g = np.repeat(np.arange(J), n)
    z = rng.normal(size=J)[g]
    x = rng.normal(size=J * n)
    u0 = rng.normal(0, np.sqrt(0.3), J)[g]
    u1 = rng.normal(0, np.sqrt(0.15), J)[g]
    y = 0.5 * x + 0.3 * z + 0.3 * x * z + u0 + u1 * x + rng.normal(size=J * n)
    p = 1 / (1 + np.exp(-(-1.2 + 0.8 * (y - y.mean()) / y.std())))
    df = pd.DataFrame({"g": g, "x": np.where(rng.random(J * n) < p, np.nan, x), "z": z, "y": y})
    if missing_y:
        df.loc[rng.random(J * n) < missing_y, "y"] = np.nan
    return df


SLOPES = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, covariates=["z"],
                            substantive="y ~ x * z + (1 + x | g)")


@pytest.fixture(scope="module")
def slopes_run():
    df = _slopes(np.random.default_rng(21), missing_y=0.1)
    return df, _run(df, SLOPES, n_imputations=6, burn=600, between=100)


def test_recovers_the_analysis_model(slopes_run):
    """The posterior of the substantive model's parameters covers the truth (|z| < 4 with z
    the distance in posterior SDs), the interaction and the slope variance included -- the
    two that the joint model (6) biases toward zero."""
    _, res = slopes_run
    s = res.summary().set_index("parameter")
    truth = {"y~beta[x]": 0.5, "y~beta[z]": 0.3, "y~beta[x:z]": 0.3, "y~cov[Intercept,Intercept]": 0.3,
             "y~cov[x,x]": 0.15, "y~cov[x,Intercept]": 0.0, "y~sigma2": 1.0}
    for name, value in truth.items():
        assert abs(s.loc[name, "mean"] - value) < 4 * s.loc[name, "sd"], (name, s.loc[name, "mean"])
    assert res.diagnostics().set_index("parameter").loc[list(truth), "rhat"].max() < 1.1


def test_invariants(slopes_run):
    df, res = slopes_run
    obs_x, obs_y = df["x"].notna().to_numpy(), df["y"].notna().to_numpy()
    for k in (1, res.n_imputations):
        comp = res.completed(k)
        assert not comp[["x", "y"]].isna().any().any()
        assert np.array_equal(comp["x"].to_numpy()[obs_x], df["x"].to_numpy()[obs_x])
        assert np.array_equal(comp["y"].to_numpy()[obs_y], df["y"].to_numpy()[obs_y])
    # imputed outcomes vary across imputations and look like the observed ones
    ymiss = ~obs_y
    draws = np.stack([res.completed(k)["y"].to_numpy()[ymiss] for k in (1, 2)])
    assert not np.allclose(draws[0], draws[1])
    assert abs(draws.std() - df["y"].std()) < 0.3 * df["y"].std()


def test_seed_and_row_order(slopes_run):
    df, _ = slopes_run
    small = df.iloc[:400]
    a = _run(small, SLOPES, n_imputations=2, burn=30, between=5, chains=1)
    perm = np.random.default_rng(5).permutation(len(small))
    b = _run(small.iloc[perm], SLOPES, n_imputations=2, burn=30, between=5, chains=1)
    pd.testing.assert_frame_equal(b.completed(2), a.completed(2).iloc[perm])
    c = _run(small, SLOPES, n_imputations=2, burn=30, between=5, chains=1, seed=2)
    assert not c.data.equals(a.data)


def _mixed(rng, J=120, n=12):
    """Covariates of every kind, incomplete at both levels, with a probit outcome."""
    g = np.repeat(np.arange(J), n)
    N = J * n
    x = rng.normal(size=N)
    lat_b = 0.5 * x + rng.normal(size=N)
    xb = (lat_b > 0).astype(float)
    lat_o = 0.4 * x + rng.normal(size=N)
    xo = np.searchsorted([0.0, 0.8], lat_o) + 1                   # 1, 2, 3
    f = np.array(["A", "B", "C"])[rng.integers(0, 3, N)]
    w = rng.normal(size=J)                                        # level-2 covariate
    u0 = rng.normal(0, 0.5, J)
    eta = -0.3 + 0.6 * x + 0.5 * xb + 0.4 * (xo == 2) + 0.8 * (xo == 3) - 0.5 * (f == "B") + 0.4 * w[g] + u0[g]
    y = np.where(rng.random(N) < 1 / (1 + np.exp(-1.7 * eta)), "yes", "no")     # ~ probit(eta)
    df = pd.DataFrame({"g": g, "x": x, "xb": xb, "xo": pd.Categorical(xo, categories=[1, 2, 3], ordered=True),
                       "f": f, "w": w[g], "y": pd.Categorical(y, categories=["no", "yes"])})
    for c, p in [("x", 0.15), ("xb", 0.15), ("xo", 0.15), ("f", 0.15)]:
        df.loc[rng.random(N) < p, c] = np.nan
    df.loc[np.isin(g, rng.choice(J, 20, replace=False)), "w"] = np.nan
    df.loc[rng.random(N) < 0.05, "y"] = np.nan
    return df


def test_mixed_covariates_at_both_levels_and_a_binary_outcome():
    df = _mixed(np.random.default_rng(8))
    model = mi.ImputationModel(
        cluster="g",
        variables={"x": "continuous", "xb": "binary", "xo": "ordinal", "f": "nominal",
                   "w": mi.Variable("continuous", level=2)},
        substantive="y ~ x + xb + C(xo) + f + w + (1 | g)", family="binomial", link="probit")
    res = _run(df, model, n_imputations=4, burn=500, between=100)
    d = res.data
    assert not d[["x", "xb", "xo", "f", "w", "y"]].isna().any().any()
    assert set(d["xb"].unique()) <= {0.0, 1.0}
    assert set(d["xo"].unique()) <= {1, 2, 3} and d["xo"].cat.ordered
    assert set(d["f"].unique()) <= {"A", "B", "C"}
    assert list(d["y"].cat.categories) == ["no", "yes"]
    assert (d.groupby(["imputation", "g"])["w"].nunique() == 1).all()
    for c in ["x", "xb", "xo", "f", "w", "y"]:
        obs = df[c].notna().to_numpy()
        assert (res.completed(2)[c].to_numpy()[obs] == df[c].to_numpy()[obs]).all(), c
    # probit coefficients ≈ the logistic ones / 1.7 (the generating model), posterior SD scale
    s = res.summary().set_index("parameter")
    for name, value in {"y~beta[x]": 0.6, "y~beta[xb]": 0.5, "y~beta[C(xo)[T.3]]": 0.8,
                        "y~beta[f[T.B]]": -0.5, "y~beta[w]": 0.4}.items():
        assert abs(s.loc[name, "mean"] - value) < 4 * s.loc[name, "sd"] + 0.1, (name, s.loc[name, "mean"])
    # the ordinal covariate's threshold: its observed shares fix it; the imputation holds it
    assert "cut[xo:2]" in s.index and 0.3 < s.loc["cut[xo:2]", "mean"] < 1.3


def test_logit_outcome_with_random_slope_recovers_parameters():
    rng = np.random.default_rng(12)
    J, n = 150, 16
    g = np.repeat(np.arange(J), n)
    x = rng.normal(size=J * n)
    z = rng.normal(size=J)[g]
    eta = -0.5 + 0.5 * x + 0.3 * z + rng.normal(0, np.sqrt(0.5), J)[g] + rng.normal(0, 0.5, J)[g] * x
    y = (rng.random(J * n) < 1 / (1 + np.exp(-eta))).astype(int)
    xm = np.where(rng.random(J * n) < 1 / (1 + np.exp(-(-1.45 + y))), np.nan, x)
    df = pd.DataFrame({"g": g, "x": xm, "z": z, "y": y})
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, covariates=["z"],
                               substantive="y ~ x + z + (1 + x | g)", family="binomial")
    res = _run(df, model, n_imputations=4, burn=500, between=100)
    s = res.summary().set_index("parameter")
    for name, value in {"y~beta[Intercept]": -0.5, "y~beta[x]": 0.5, "y~beta[z]": 0.3,
                        "y~cov[Intercept,Intercept]": 0.5, "y~cov[x,x]": 0.25}.items():
        assert abs(s.loc[name, "mean"] - value) < 4 * s.loc[name, "sd"], (name, s.loc[name, "mean"])
    assert res.data["y"].dtype == df["y"].dtype and set(res.data["y"].unique()) <= {0, 1}


def test_outcome_only_model_without_incomplete_covariates():
    """Complete covariates, incomplete outcome: the analysis model alone imputes y."""
    df = _slopes(np.random.default_rng(3), J=60, n=8, missing_y=0.2)
    df["x"] = df["x"].fillna(0.0)
    model = mi.ImputationModel(cluster="g", variables={}, substantive="y ~ x * z + (1 + x | g)")
    res = _run(df, model, n_imputations=2, burn=100, between=20)
    assert not res.data["y"].isna().any()
    assert all(n.startswith("y~") for n in res.parameter_names)


@pytest.mark.filterwarnings("ignore::mlimpute.PriorWarning")   # x: no cluster variance, as drawn
def test_intercept_only_analysis_model():
    """y ~ 1 + (1 | g) beside an incomplete auxiliary variable: the sampler's check of which
    formula columns read latent variables indexed an empty array (IndexError, helper 26). The
    outcome model's posterior is held to the REML fit of the observed y (MCAR)."""
    rng = np.random.default_rng(0)
    J, n = 60, 10
    g = np.repeat(np.arange(J), n)
    df = pd.DataFrame({"g": g, "x": rng.normal(size=J * n)})
    df["y"] = 1 + rng.normal(0, 0.7, J)[g] + rng.normal(size=J * n)
    df.loc[rng.random(J * n) < 0.2, "x"] = np.nan
    df.loc[rng.random(J * n) < 0.3, "y"] = np.nan
    for formula in ("y ~ 1 + (1 | g)", "y ~ (1 | g)"):
        model = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive=formula)
        res = _run(df, model, n_imputations=20, burn=300, between=10)
        post = res.summary().set_index("parameter")
        fit = mi.lmm("y ~ 1 + (1 | g)", df.dropna(subset=["y"]))
        # posterior SDs here: 0.10 (intercept), 0.08 (σ²); the prior lifts τ² a little (0.48 against 0.44)
        assert post.loc["y~beta[Intercept]", "mean"] == pytest.approx(fit.beta[0], abs=0.05)
        assert post.loc["y~sigma2", "mean"] == pytest.approx(fit.sigma2, abs=0.05)
        assert post.loc["y~cov[Intercept,Intercept]", "mean"] == pytest.approx(fit.psi[0], abs=0.1)
        observed = df["y"].notna().to_numpy()
        np.testing.assert_array_equal(res.completed(1)["y"].to_numpy()[observed], df["y"].to_numpy()[observed])


@pytest.mark.filterwarnings("ignore::mlimpute.PriorWarning")   # a short run on small data
def test_analysing_the_outcome_with_a_variance_function_warns():
    """The substantive model's outcome has a constant residual variance, so an analysis that
    gives it a variance function finds it attenuated (helper 27: γ 0.67–0.81 for a truth of 1.39);
    the joint model with variance= is the fix, and the warning says so."""
    from mlimpute.pooling import PoolingWarning

    df = _slopes(np.random.default_rng(6), J=40, n=8, missing_y=0.2)
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, covariates=["z"],
                               substantive="y ~ x + z + (1 | g)")
    res = _run(df, model, n_imputations=2, burn=50, between=10)
    with pytest.warns(PoolingWarning, match=r"gives 'y' the variance function '~ z', but 'y' was imputed from "
                                            r"substantive=.*listed in variables= with variance='~ z'"):
        mi.analyse(res, "y ~ x + z + (1 | g)", dispersion="~ z")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PoolingWarning)
        mi.analyse(res, "x ~ z + (1 | g)", dispersion="~ z")     # another response: nothing to say


def test_cluster_specific_covariance_with_a_substantive_model():
    df = _slopes(np.random.default_rng(4), J=60, n=10)
    df["a"] = df["z"] + np.random.default_rng(1).normal(size=len(df))     # an auxiliary variable
    df.loc[np.random.default_rng(2).random(len(df)) < 0.2, "a"] = np.nan
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous", "a": "continuous"},
                               covariates=["z"], covariance="cluster",
                               substantive="y ~ x * z + (1 + x | g)")
    res = _run(df, model, n_imputations=2, burn=100, between=20)
    assert not res.data[["x", "a"]].isna().any().any()
    assert "omega1_df" in res.parameter_names and "y~beta[x:z]" in res.parameter_names


def test_probit_scale_move_keeps_the_state_consistent(monkeypatch):
    """The two-level sampler's probit scale move, forced to α = 1.3 every sweep: after each
    parameter draw η = Dβ + D_z·b_j on the observed rows, y* on y's side of 0 and Σ (y* − η)²
    grown by α² (y*, η, β and b all moved; ``test_sampler_math`` checks the move's target)."""
    import importlib

    from mlimpute.sampler import outcome

    sweep = importlib.import_module("mlimpute.sampler.sweep")   # (the package exports a function of that name)
    rng = np.random.default_rng(8)
    N, J = 400, 30
    g = rng.integers(0, J, N)
    x = rng.normal(size=N)
    eta = 0.3 + 0.6 * x + rng.normal(0, 0.6, J)[g] + rng.normal(0, 0.4, J)[g] * x
    df = pd.DataFrame({"g": g, "x": x, "y": (eta + rng.normal(size=N) > 0).astype(int)})
    df.loc[rng.random(N) < 0.3, "x"] = np.nan
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive="y ~ x + (1 + x | g)",
                               family="binomial", link="probit")
    before, checked = [], []

    def forced(rng, lam, chi, psi):
        before.append(psi)
        return 2 * np.log(1.3)

    original = sweep.draw_parameters

    def checking(rng, ost, o, data, *args):
        out = original(rng, ost, o, data, *args)
        obs, nf = ost.obs_rows, ost.od.n_fixed
        D = out.D[obs]
        np.testing.assert_allclose(out.eta[obs], D[:, :nf] @ out.beta
                                   + np.sum(D[:, nf:] * out.b[data.cluster[obs]], axis=1), rtol=1e-9, atol=1e-9)
        assert np.all((out.aux[obs] > 0) == (ost.od.y[obs] == 1))
        r = out.aux[obs] - out.eta[obs]
        assert r @ r == pytest.approx(1.3 ** 2 * before[-1], rel=1e-9)
        checked.append(1)
        return out

    monkeypatch.setattr(outcome, "gig_log_step", forced)
    monkeypatch.setattr(sweep, "draw_parameters", checking)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mi.impute(df, model, n_imputations=1, burn=10, between=5, chains=1, seed=2)
    assert len(checked) >= 15
