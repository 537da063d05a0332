"""Internal centring and scaling (mlimpute.scaling): the imputations and the monitored parameters
of data measured in other units are the same draws, transformed; priors the user states are on
the data's scale; ``standardize=False`` keeps the data's scale."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi


@pytest.fixture(autouse=True)
def _row_order_by_position(monkeypatch):
    """Rows within a cluster are ordered by a hash of their values (so that the imputations do
    not depend on the input's row order); data in other units hash differently, so here rows
    keep their input order, which makes the two runs the same chain."""
    monkeypatch.setattr(pd.util, "hash_pandas_object",
                        lambda df, index=False: pd.Series(np.arange(len(df), dtype=np.uint64)))


def _two_level(rng, J=40, n=8):
    g = np.repeat(np.arange(J), n)
    N = J * n
    x = rng.normal(size=N)
    u = rng.normal(0, 0.5, (J, 3))
    y = 1 + 0.5 * x + u[g, 0] + (0.3 * u[g, 1]) * x + rng.normal(size=N)
    b = (0.4 * x + u[g, 2] + rng.normal(size=N) > 0).astype(float)
    w = np.repeat(rng.normal(size=J) + u[:, 0], n)
    o = np.digitize(y + rng.normal(size=N), [0.0, 1.0, 2.0]) + 1
    df = pd.DataFrame({"g": g, "x": x, "y": y, "b": b, "w": w, "o": o})
    for c in ("y", "b", "o"):
        df.loc[rng.random(N) < 0.2, c] = np.nan
    df.loc[np.isin(g, rng.choice(J, 8, replace=False)), "w"] = np.nan
    return df


def _run(df, model, seed=3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        return mi.impute(df, model, n_imputations=2, burn=60, between=20, chains=2, seed=seed)


def test_imputations_and_parameters_are_equivariant_to_units():
    """y → 3 + 100 y, w → −5 + 0.01 w, x → 50 x: the same chain on the internal scale, so the
    imputations are the transformed ones and every monitored parameter is its transform (a
    random slope's variance by (100/50)², a coefficient of x by 100/50, intercepts shifted)."""
    df = _two_level(np.random.default_rng(1))
    df2 = df.assign(y=3 + 100 * df["y"], w=-5 + 0.01 * df["w"], x=50 * df["x"])
    kinds = {"y": "continuous", "b": "binary", "o": "ordinal", "w": mi.Variable("continuous", level=2)}
    model = mi.ImputationModel(cluster="g", variables=kinds, covariates=["x"], random_slopes=["x"])
    r1, r2 = _run(df, model), _run(df2, model)
    for k in (1, 2):
        a = r1.data[r1.data["imputation"] == k].reset_index(drop=True)
        c = r2.data[r2.data["imputation"] == k].reset_index(drop=True)
        np.testing.assert_allclose(c["y"], 3 + 100 * a["y"], rtol=1e-7)
        np.testing.assert_allclose(c["w"], -5 + 0.01 * a["w"], rtol=1e-7)
        assert np.array_equal(c["b"].to_numpy(float), a["b"].to_numpy(float))
        assert np.array_equal(c["o"].to_numpy(float), a["o"].to_numpy(float))
    s1 = r1.summary().set_index("parameter")["mean"]
    s2 = r2.summary().set_index("parameter")["mean"]
    expect = {
        "beta1[y:Intercept]": 3 + 100 * s1["beta1[y:Intercept]"],
        "beta1[y:x]": 100 / 50 * s1["beta1[y:x]"],
        "beta1[b:x]": s1["beta1[b:x]"] / 50,
        "beta2[w:Intercept]": -5 + 0.01 * s1["beta2[w:Intercept]"],
        "omega1[y,y]": 1e4 * s1["omega1[y,y]"],
        "omega1[b,y]": 100 * s1["omega1[b,y]"],
        "omega2[y:x,y:x]": (100 / 50) ** 2 * s1["omega2[y:x,y:x]"],
        "omega2[w,y:Intercept]": 0.01 * 100 * s1["omega2[w,y:Intercept]"],
        "cut[o:2]": s1["cut[o:2]"],
    }
    for name, value in expect.items():
        assert s2[name] == pytest.approx(value, rel=1e-6, abs=1e-9), name
    # the same chains: every monitored parameter's draws are an affine map of the other run's
    for t1, t2 in zip(r1.traces, r2.traces):
        for k in range(t1.shape[1]):
            if np.ptp(t1[:, k]) == 0:
                continue
            fit = np.polyfit(t1[:, k], t2[:, k], 1)
            assert np.abs(t2[:, k] - np.polyval(fit, t1[:, k])).max() <= 1e-9 * np.abs(t2[:, k]).max()
    # and so their diagnostics (rank-based, on the draws and on their distances from the median:
    # rounding can order near-equal distances, or a Metropolis-Hastings parameter's repeated
    # values, differently)
    d1 = r1.diagnostics().set_index("parameter")["rhat"]
    d2 = r2.diagnostics().set_index("parameter")["rhat"]
    np.testing.assert_allclose(d2.loc[d1.index], d1, rtol=2e-2)


def test_substantive_model_is_equivariant_to_units():
    """With a substantive model the joint part works on the internal scale too (before, it kept
    the data's, and an incomplete covariate with SD 0.01 was imputed with 6.8× its SD): x → 7 +
    0.01 x gives the same chain, the imputations transformed, the outcome's coefficient of x
    times 100 and its intercept shifted by −7 times that; the imputed outcomes are the same."""
    df = _two_level(np.random.default_rng(2)).rename(columns={"x": "z", "y": "x"})
    rng = np.random.default_rng(5)
    df["y"] = 0.5 * df["x"].fillna(0) + 0.3 * df["z"] + rng.normal(0, 0.5, 40)[df["g"]] + rng.normal(size=len(df))
    df.loc[rng.random(len(df)) < 0.1, "y"] = np.nan
    df2 = df.assign(x=7 + 0.01 * df["x"])
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous", "b": "binary"}, covariates=["z"],
                               substantive="y ~ x + z + b + (1 | g)")
    r1, r2 = _run(df, model), _run(df2, model)
    for k in (1, 2):
        a = r1.data[r1.data["imputation"] == k].reset_index(drop=True)
        c = r2.data[r2.data["imputation"] == k].reset_index(drop=True)
        np.testing.assert_allclose(c["x"], 7 + 0.01 * a["x"], rtol=1e-7)
        np.testing.assert_allclose(c["y"], a["y"], rtol=1e-6, atol=1e-8)
        assert np.array_equal(c["b"].to_numpy(float), a["b"].to_numpy(float))
    s1 = r1.summary().set_index("parameter")["mean"]
    s2 = r2.summary().set_index("parameter")["mean"]
    assert s2["y~beta[x]"] == pytest.approx(100 * s1["y~beta[x]"], rel=1e-6)
    assert s2["y~beta[Intercept]"] == pytest.approx(s1["y~beta[Intercept]"] - 700 * s1["y~beta[x]"], rel=1e-6)
    assert s2["beta1[x:z]"] == pytest.approx(0.01 * s1["beta1[x:z]"], rel=1e-6)


def test_user_prior_is_stated_on_the_data_scale():
    """A prior scale Ψ for y and C Ψ C for 100·y give the same chain (transformed)."""
    df = _two_level(np.random.default_rng(2))[["g", "x", "y", "b"]]
    df2 = df.assign(y=100 * df["y"])
    psi = np.array([[2.0, 0.3], [0.3, 1.0]])                 # (y, b latent)
    c = np.array([100.0, 1.0])
    m1 = mi.ImputationModel(cluster="g", variables={"y": "continuous", "b": "binary"}, covariates=["x"],
                            prior_l1=mi.CovariancePrior(scale=psi), prior_l2=mi.CovariancePrior(scale=psi))
    m2 = mi.ImputationModel(cluster="g", variables={"y": "continuous", "b": "binary"}, covariates=["x"],
                            prior_l1=mi.CovariancePrior(scale=psi * np.outer(c, c)),
                            prior_l2=mi.CovariancePrior(scale=psi * np.outer(c, c)))
    r1, r2 = _run(df, m1), _run(df2, m2)
    a, b = r1.data, r2.data
    np.testing.assert_allclose(b["y"], 100 * a["y"], rtol=1e-7)


def test_classifications_and_variance_functions_are_equivariant():
    """The general sampler (nested classifications and a variance function) likewise."""
    rng = np.random.default_rng(4)
    S, C, n = 12, 3, 6
    N = S * C * n
    school = np.repeat(np.arange(S), C * n)
    cls = np.repeat(np.arange(S * C), n)
    sex = rng.integers(0, 2, N)
    x = rng.normal(size=N)
    y = (0.5 * x + rng.normal(0, 0.5, S)[school] + rng.normal(0, 0.4, S * C)[cls]
         + np.exp(0.5 * np.log(4) * sex) * rng.normal(size=N))
    size = (20 + 3 * rng.normal(size=S * C))[cls]
    df = pd.DataFrame({"school": school, "class": cls % C, "x": x, "sex": sex, "y": y, "size": size})
    df.loc[rng.random(N) < 0.2, "y"] = np.nan
    df.loc[np.isin(cls, rng.choice(S * C, 6, replace=False)), "size"] = np.nan
    df2 = df.assign(y=10 + 7 * df["y"], size=0.1 * df["size"])
    model = mi.ImputationModel(cluster=["school", "class"],
                               variables={"y": mi.Variable("continuous", variance="~ sex"),
                                          "size": mi.Variable("continuous", level="class")},
                               covariates=["x", "sex"])
    r1, r2 = _run(df, model), _run(df2, model)
    np.testing.assert_allclose(r2.data["y"], 10 + 7 * r1.data["y"], rtol=1e-7)
    np.testing.assert_allclose(r2.data["size"], 0.1 * r1.data["size"], rtol=1e-7)
    s1 = r1.summary().set_index("parameter")["mean"]
    s2 = r2.summary().set_index("parameter")["mean"]
    expect = {"beta1[y:Intercept]": (10, 7), "beta1[y:x]": (0, 7), "beta1[y:sex]": (0, 7), "beta[class][size:Intercept]": (0, 0.1),
              "omega1[y,y]": (0, 49), "gamma[y:sex]": (0, 1), "omega[class][y,y]": (0, 49),
              "omega[class][size,y]": (0, 0.7), "omega[class][size,size]": (0, 0.01),
              "omega[school][y,y]": (0, 49), "omega[school][size,y]": (0, 0.7),
              "omega[school][size,size]": (0, 0.01)}
    assert set(expect) == set(s1.index)
    for name, (a, b) in expect.items():
        assert s2[name] == pytest.approx(a + b * s1[name], rel=1e-6, abs=1e-12), name


def test_standardize_false_keeps_the_data_scale():
    """The sampler's arrays: the data's scale with standardize=False, standardised by default."""
    from mlimpute.impute import prepare

    df = _two_level(np.random.default_rng(5))
    df2 = df.assign(y=500 + 90 * df["y"])
    model = mi.ImputationModel(cluster="g", variables={"y": "continuous"}, covariates=["x"], standardize=False)
    data = prepare(df2, model)
    assert data.scaling is None and np.nanmax(data.y1) > 100
    data = prepare(df2, mi.ImputationModel(cluster="g", variables={"y": "continuous"}, covariates=["x"]))
    assert data.scaling is not None and np.nanmax(np.abs(data.y1)) < 10
    with pytest.raises(mi.SpecError, match="standardize"):
        mi.ImputationModel(cluster="g", variables={"y": "continuous"}, standardize="yes")
