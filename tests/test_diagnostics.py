"""R-hat and ESS against ArviZ (reference values with provenance in fixtures/arviz)."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlimpute import diagnostics as d

HERE = Path(__file__).parent / "fixtures" / "arviz"
CHAINS = np.load(HERE / "chains.npz")
REF = pd.read_csv(HERE / "reference.csv").set_index("case")


@pytest.mark.parametrize("case", ["iid", "ar09", "shifted", "skewed", "one_chain"])
def test_matches_arviz(case):
    x = CHAINS[case]
    ref = REF.loc[case]
    # Same algorithm (Vehtari et al. 2021, Geyer's initial monotone sequence): agreement is to
    # floating-point error, not Monte Carlo error.
    if np.isfinite(ref.rhat):
        assert d.rhat(x) == pytest.approx(ref.rhat, rel=1e-9)
    assert d.ess_bulk(x) == pytest.approx(ref.ess_bulk, rel=1e-9)
    assert d.ess_tail(x) == pytest.approx(ref.ess_tail, rel=1e-9)


def test_shifted_chain_is_flagged_and_iid_is_not():
    assert d.rhat(CHAINS["shifted"]) > 1.05
    assert d.rhat(CHAINS["iid"]) < 1.01


def test_constant_parameter_gives_nan_not_error():
    x = np.ones((2, 50))
    assert np.isnan(d.rhat(x)) and np.isnan(d.ess_bulk(x)) and np.isnan(d.ess_tail(x))


def test_autocorrelation_of_ar1():
    rng = np.random.default_rng(0)
    phi, n = 0.8, 200_000
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    ac = d.autocorrelation(x)
    # SE of a lag-k autocorrelation ~ sqrt((1+phi^2)/(1-phi^2)/n) ≈ 0.007: 0.03 is > 4 SE.
    assert ac[:4] == pytest.approx(phi ** np.arange(4), abs=0.03)


def test_summarise_table():
    draws = np.stack([-CHAINS["ar09"], CHAINS["ar09"]], axis=-1)
    t = d.summarise(draws, ["a", "b"])
    assert list(t.columns) == ["parameter", "rhat", "ess_bulk", "ess_tail"]
    assert t["ess_bulk"].to_numpy() == pytest.approx(REF.loc["ar09", "ess_bulk"], rel=1e-9)


def test_prior_share_formula():
    """Given the effects, Ω_kk | u ~ IW(ν + J, Ψ + S) has mean (Ψ_kk + S_kk)/(ν + J − d − 1): the
    prior's share is Ψ_kk / (E[Ω_kk](ν + J − d − 1)), on the sampler's scale (monitored values
    divided by their affine factor)."""
    import warnings

    from mlimpute.errors import PriorWarning
    from mlimpute.sampler.sweep import VariancePrior

    vp = VariancePrior("omega2", ("omega2[a,a]", "omega2[b,b]"), np.array([1.0, 1.0]), 2.0, 40, 2)
    names = ["beta", "omega2[a,a]", "omega2[b,b]"]
    # internal means 0.05 (share 1/(0.05·39) = 0.51) and 0.5 (0.05); a's monitored value is 4× internal
    draws = np.broadcast_to(np.array([0.0, 0.2, 0.5]), (2, 10, 3))
    affine = (np.zeros(3), np.array([1.0, 4.0, 1.0]))
    with pytest.warns(PriorWarning, match=r"omega2\[a,a\] = 0.2 \(about 51% from the prior\).*prior_l2="):
        found = d.warn_prior(draws, names, affine, [vp])
    assert [n for n, _ in found] == ["omega2[a,a]"] and found[0][1] == pytest.approx(1 / (0.05 * 39))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert d.warn_prior(draws, names, (np.zeros(3), np.ones(3)), [vp]) == []   # 1/(0.2·39) = 0.13
        assert d.warn_prior(draws, names, affine, [vp._replace(stated=True)]) == []   # the user's own prior
        assert d.warn_prior(draws[:, :9], names, affine, [vp]) == []   # 18 draws: too few to read a posterior mean
    # the effects' own spread taken out of S: 40 units with information 4 each about a's effect
    # and a level-1 variance 2 (monitored as omega1[a,a] = 2): V_j = 1/(1/0.2 + 4/2) = 1/7
    names1 = [*names, "omega1[a,a]"]
    draws1 = np.broadcast_to(np.array([0.0, 0.8, 0.5, 2.0]), (2, 10, 4))
    aff1 = (np.zeros(4), np.array([1.0, 4.0, 1.0, 1.0]))
    vp1 = vp._replace(level1=("omega1[a,a]", None), info=(np.full(40, 4.0), None))
    with pytest.warns(PriorWarning):
        found = d.warn_prior(draws1, names1, aff1, [vp1])
    assert found[0][1] >= 1 / (0.2 * 39 - 40 / 7)   # the first reading; the second (below) says 1 here
    # the second reading: the variance T the units' data say, solved from E[S] at the posterior
    # mean. Built forward here: units of unequal information I_j (per unit of σ²), effects whose
    # posterior means are r_j ȳ_j with E[ȳ_j²] = T + 1/I_j, so E[S] = Σ r_j²(T + 1/I_j) + Σ V_j;
    # Ψ set so that the posterior mean is Ω: the warning reads T back, share 1 − T/Ω
    info = np.linspace(0.5, 12.0, 40)
    omega, T, df, J = 0.2, 0.08, 2.0, 40
    r, V = omega * info / (omega * info + 1), omega / (omega * info + 1)
    S = float(np.sum(r ** 2 * (T + 1 / info)) + np.sum(V))
    psi = omega * (df + J - 2 - 1) - S
    vp2 = VariancePrior("omega2", ("omega2[a,a]",), np.array([psi]), df, J, 2, ("omega1[a,a]",), (2.0 * info,))
    draws2 = np.broadcast_to(np.array([0.0, 0.8, 0.5, 2.0]), (2, 10, 4))   # Ω internal 0.8/4, σ² = 2
    with pytest.warns(PriorWarning, match=r"omega2\[a,a\] = 0.8 \(about 60% from the prior; the data alone say about 0.32\)"):
        found = d.warn_prior(draws2, names1, aff1, [vp2])
    assert found == [("omega2[a,a]", pytest.approx(1 - T / omega))]
    assert psi / (omega * (df + J - 3) - np.sum(V)) == pytest.approx(0.304, abs=1e-3)   # the first reading: less
    # a pull of 0.4 (T = 0.12): under PRIOR_PULL, and the first reading under 0.2: silent
    S = float(np.sum(r ** 2 * (0.12 + 1 / info)) + np.sum(V))
    vp3 = vp2._replace(psi=np.array([omega * (df + J - 3) - S]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert d.warn_prior(draws2, names1, aff1, [vp3]) == []
    # two classifications' variances: the fix names both, a name that needs quoting quoted in TOML
    vq = [vp._replace(matrix="omega[school]", names=("omega2[a,a]", None)),
          vp._replace(matrix="omega[mm(s1, s2)]", names=(None, "omega2[b,b]"), psi=np.array([1.0, 20.0]))]
    with pytest.warns(PriorWarning, match=r"priors=\{'mm\(s1, s2\)': .*'school': .*\[model.priors.\"mm\(s1, s2\)\"\], "
                                          r"\[model.priors.school\] in a TOML config"):
        d.warn_prior(draws, names, affine, vq)


def _prior_warnings(df, model) -> list[str]:
    """The PriorWarnings of a short run (2 chains of 300 + 50 sweeps)."""
    import warnings

    import mlimpute as mi

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mi.impute(df, model, n_imputations=2, burn=300, between=50, chains=2, seed=1)
    return [str(x.message) for x in w if x.category is mi.PriorWarning]


def test_prior_warning_of_a_small_cluster_variance():
    """ICC 0.0025, 40 clusters of 15: the default prior holds Ω2's variance far above the
    truth; the run says so (PriorWarning naming it and prior_l2), and not once a smaller scale
    is stated; with a variance function (the general sampler) it names the classification's
    covariance and priors=, which then takes a smaller scale likewise."""
    import mlimpute as mi

    rng = np.random.default_rng(7)
    J, n = 40, 15
    g = np.repeat(np.arange(J), n)
    x = rng.normal(size=J * n)
    df = pd.DataFrame({"g": g, "x": x, "y": 1 + 0.5 * x + rng.normal(0, 0.05, J)[g] + rng.normal(size=J * n),
                       "s": rng.integers(0, 2, J * n).astype(float)})
    df.loc[rng.random(J * n) < 0.3, "y"] = np.nan

    base = dict(cluster="g", variables={"y": "continuous"}, covariates=["x"])
    got = _prior_warnings(df, mi.ImputationModel(**base))
    assert len(got) == 1 and "omega2[y:Intercept,y:Intercept]" in got[0] and "prior_l2=" in got[0]
    assert _prior_warnings(df, mi.ImputationModel(**base, prior_l2=mi.CovariancePrior(scale=[[0.002]]))) == []
    vf = dict(cluster="g", variables={"y": mi.Variable("continuous", variance="~ s")}, covariates=["x", "s"])
    got = _prior_warnings(df, mi.ImputationModel(**vf))
    assert len(got) == 1 and "omega[g][y,y]" in got[0] and "priors={'g': mi.CovariancePrior(scale=...)}" in got[0]
    assert _prior_warnings(df, mi.ImputationModel(**vf, priors={"g": mi.CovariancePrior(scale=[[0.002]])})) == []
    assert len(_prior_warnings(df, mi.ImputationModel(**vf, priors={"g": mi.CovariancePrior()}))) == 1   # the default, stated


def test_prior_warning_of_the_substantive_models_variances():
    """The substantive model's random-effect covariance has an inverse-Wishart prior centred on
    the complete-case fit, with a floor (``substantive.PRIOR_FLOOR``): a cluster variance far
    below that floor is held up by it, and the run says so, naming the analysis model's
    variance and prior_substantive (helper 33: the substantive Σ_b was not checked), in the
    two-level sampler and per classification in the general one; not once a scale is stated.
    The units' information: (1 | g)'s column is 1 on each row with an observed outcome."""
    import mlimpute as mi
    from mlimpute.design import build
    from mlimpute.sampler import variance_priors

    rng = np.random.default_rng(3)
    J, n = 40, 15
    g, h = np.repeat(np.arange(J), n), rng.integers(0, 25, J * n)
    x = rng.normal(0, 0.7, J)[g] + rng.normal(0, 0.7, 25)[h] + rng.normal(size=J * n)   # x's own variances large
    df = pd.DataFrame({"g": g, "h": h, "x": x,
                       "y": 1 + 0.5 * x + rng.normal(0, 0.03, J)[g] + rng.normal(0, 0.5, 25)[h] + rng.normal(size=J * n)})
    df.loc[rng.random(J * n) < 0.3, "x"] = np.nan
    df.loc[rng.random(J * n) < 0.1, "y"] = np.nan

    two = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive="y ~ x + (1 | g)")
    vp = [v for v in variance_priors(build(df, two)) if v.matrix == "substantive"]
    assert [v.names for v in vp] == [("y~cov[Intercept,Intercept]",)] and vp[0].units == J
    assert vp[0].level1 == ("y~sigma2",)
    np.testing.assert_allclose(vp[0].info[0], np.bincount(g[df["y"].notna().to_numpy()], minlength=J))
    got = _prior_warnings(df, two)
    assert len(got) == 1 and "y~cov[Intercept,Intercept]" in got[0] and "of the substantive model" in got[0]
    assert "prior_substantive=mi.CovariancePrior(scale=...)" in got[0]
    assert re.search(r"the default's diagonal, in that order: Intercept \d", got[0])
    assert _prior_warnings(df, mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive="y ~ x + (1 | g)",
                                             prior_substantive=mi.CovariancePrior(scale=[[0.001]]))) == []
    crossed = mi.ImputationModel(cluster=mi.Crossed("g", "h"), variables={"x": "continuous"},
                                 substantive="y ~ x + (1 | g) + (1 | h)")
    vp = [v for v in variance_priors(build(df, crossed)) if v.matrix == "substantive"]
    assert [(v.names, v.units) for v in vp] == [(("y~cov[Intercept|g,Intercept|g]",), J),
                                                 (("y~cov[Intercept|h,Intercept|h]",), 25)]
    got = _prior_warnings(df, crossed)
    named = got[0].split("worst: ")[1].split(": the data")[0]
    assert len(got) == 1 and "y~cov[Intercept|g,Intercept|g]" in named and "Intercept|h" not in named
    assert re.search(r"in that order: Intercept\|g [\d.]+, Intercept\|h [\d.]+\)", got[0])


def test_prior_warning_of_a_nested_classifications_variable():
    """A class-level variable's school effect (three levels): its units see it through their
    classes where it is observed (``VariancePrior.info``: the count of those classes, per unit of
    its class-level variance). With no school variance in c and 3 classes a school, the default
    prior holds omega[school][c,c] near 0.26 (helper 38: no warning, its info was None); the
    run names it and priors={'school': ...}, and is silent on it once a small scale is stated."""
    import mlimpute as mi
    from mlimpute.design import build
    from mlimpute.sampler import variance_priors

    rng = np.random.default_rng(7000)
    S, C, n = 30, 3, 8
    sch, cls = np.repeat(np.arange(S), C * n), np.tile(np.repeat(np.arange(C), n), S)
    key = sch * C + cls
    c = rng.normal(size=S * C)[key]
    y = 0.5 * c + rng.normal(0, 0.55, S)[sch] + rng.normal(0, 0.45, S * C)[key] + rng.normal(size=len(sch))
    df = pd.DataFrame({"school": sch, "klass": cls, "y": y, "c": c})
    df.loc[np.isin(key, rng.choice(S * C, 31, replace=False)), "c"] = np.nan
    base = dict(cluster=["school", "klass"], variables={"y": "continuous", "c": mi.Variable("continuous", level="klass")})

    vp = {v.matrix: v for v in variance_priors(build(df, mi.ImputationModel(**base)))}["omega[school]"]
    k = vp.names.index("omega[school][c,c]")
    assert vp.level1[k] == "omega[klass][c,c]"
    observed = df.groupby(["school", "klass"])["c"].first().notna().groupby(level=0).sum().to_numpy()
    np.testing.assert_array_equal(vp.info[k], observed)
    # y's school effect reaches the rows through its class effects: each class's count of rows
    name, up, counts = vp.inner[0]
    assert name == "omega[klass][y,y]" and vp.inner[k] is None
    np.testing.assert_array_equal(np.bincount(up, weights=counts), np.full(S, C * n))
    got = _prior_warnings(df, mi.ImputationModel(**base))
    assert len(got) == 1 and "omega[school][c,c]" in got[0] and "priors={'school': mi.CovariancePrior(scale=...)}" in got[0]
    # the share reading only: the variance "the data alone say" would leave out what the classes
    # missing c say through y (helper 41: 0.04-0.12 for a true 0.5)
    assert re.search(r"omega\[school\]\[c,c\] = [\d.]+ \(about \d+% from the prior\)", got[0])
    small = mi.ImputationModel(**base, priors={"school": mi.CovariancePrior(scale=np.diag([0.05, 0.05]))})
    assert not any("omega[school][c,c]" in m for m in _prior_warnings(df, small))


def test_prior_share_through_inner_units():
    """A level-1 variable's effect at a classification nesting another: each unit's
    information is Σ_k n_k / (σ² + n_k τ²) over its inner units k (τ² the variable's variance
    there), not Σ n_k / σ²; the share is Ψ / (E[Ω](ν + J − d − 1) − Σ_j V_j) with
    V_j = 1 / (1/Ω + I_j), computed here by hand."""
    from mlimpute.errors import PriorWarning
    from mlimpute.sampler.sweep import VariancePrior

    J, K = 30, 3
    up = np.repeat(np.arange(J), K)
    counts = np.tile([8.0, 6.0, 4.0], J)
    names = ["omega[school][y,y]", "omega1[y,y]", "omega[klass][y,y]"]
    omega, sigma2, tau2, psi, df = 0.25, 1.0, 0.3, 1.0, 2.0
    draws = np.broadcast_to(np.array([omega, sigma2, tau2]), (2, 10, 3))
    vp = VariancePrior("omega[school]", ("omega[school][y,y]",), np.array([psi]), df, J, 1, ("omega1[y,y]",),
                       (np.bincount(up, weights=counts),), share_only=(True,),   # (the first reading alone)
                       inner=(("omega[klass][y,y]", up, counts),))
    info = np.bincount(up, weights=counts / (sigma2 + counts * tau2))
    want = psi / (omega * (df + J - 2) - np.sum(1 / (1 / omega + info)))
    with pytest.warns(PriorWarning):
        found = d.warn_prior(draws, names, None, [vp])
    assert found[0][1] == pytest.approx(want)
    plain = psi / (omega * (df + J - 2) - np.sum(1 / (1 / omega + np.bincount(up, weights=counts) / sigma2)))
    assert want > 0.2 > plain   # the rows alone would have said the data were ample
