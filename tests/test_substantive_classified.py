"""Substantive models in the general sampler (``sampler/outcome_multi``): random terms of several
classifications, and a substantive model beside variance functions.

Checks: the general component against the two-level one on two-level data (one posterior, two
samplers), a crossed classification against the same data written as nested (the crossed
units' rows are gathered, the nested ones are contiguous), recovery of known parameters on a
three-level design with an incomplete class-level covariate, the invariants of every
imputation, and the refusals."""

import warnings

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi
from mlimpute.design import _build_classified, build
from mlimpute.impute import run_chain
from mlimpute.sampler import trace_names
from mlimpute.scaling import standardize


def _chains(data, n_chains=3, seed=5, burn=300, draws=1500):
    """Post-burn-in draws of the outcome's parameters, (chains × draws) per name, and the chains'
    mean imputations."""
    names = trace_names(data)
    out, imputed = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c in range(n_chains):
            ch = run_chain(data, c, draws // 50, burn, 50, np.random.SeedSequence([seed, c]))
            out.append(pd.DataFrame(ch.trace, columns=names))
            imputed.append({k: v.mean(axis=0) for k, v in ch.imputed.items()})
    return out, imputed


def _batch_z(a: list, b: list, name: str, batches: int = 10) -> float:
    """z of the difference of two samplers' posterior means, Monte Carlo SEs by batch means."""
    def mean_se(chains):
        v = np.concatenate([c[name].to_numpy().reshape(batches, -1).mean(axis=1) for c in chains])
        return v.mean(), v.std(ddof=1) / np.sqrt(v.size)
    (ma, sa), (mb, sb) = mean_se(a), mean_se(b)
    return (ma - mb) / np.hypot(sa, sb)


def _two_level(rng, J=40, n=10, family="gaussian"):
    g = np.repeat(np.arange(J), n)
    w = rng.normal(size=J)[g]
    x = 0.5 * w + rng.normal(size=J * n)
    b = (rng.random(J * n) < 0.4).astype(float)
    o = rng.integers(0, 3, J * n).astype(float)
    eta = 0.5 + 0.6 * x + 0.4 * w + 0.5 * b + rng.normal(0, 0.6, J)[g] + rng.normal(0, 0.4, J)[g] * x
    y = eta + rng.normal(size=J * n) if family == "gaussian" else (rng.random(J * n) < 1 / (1 + np.exp(-eta))) * 1.0
    df = pd.DataFrame(dict(g=g, x=x, w=w, b=b, o=o, y=y))
    for col, share in (("x", 0.3), ("b", 0.2), ("o", 0.2), ("y", 0.1)):
        df.loc[rng.random(J * n) < share, col] = np.nan
    df.loc[df.g.isin(np.flatnonzero(rng.random(J) < 0.25)), "w"] = np.nan
    return df


@pytest.mark.parametrize("family", ["gaussian", "binomial"])
def test_general_component_agrees_with_the_two_level_one(family):
    """Two-level data, a random slope, incomplete continuous, binary and ordinal level-1 and a
    continuous level-2 covariate, a missing outcome: the general sampler's component and the
    two-level sampler's draw from one posterior (every outcome parameter within 4 Monte Carlo
    SEs; measured |z| ≤ 1.4 gaussian, ≤ 2.9 logit over two seeds of 4 × 2,000 draws), and their
    mean imputations agree cell by cell."""
    df = _two_level(np.random.default_rng(3), family=family)
    model = mi.ImputationModel(
        variables={"x": "continuous", "b": "binary", "o": "ordinal", "w": mi.Variable("continuous", level=2)},
        cluster="g", substantive="y ~ x + w + b + C(o) + (1 + x | g)", family=family)
    two = standardize(build(df, model))
    general = standardize(_build_classified(df, model))
    assert not two.classes and general.classes and general.outcome is not None
    a, ia = _chains(two)
    b, ib = _chains(general)
    outcome = [n for n in a[0].columns if n.startswith("y~")]
    assert outcome and set(outcome) <= set(b[0].columns)
    z = {n: _batch_z(a, b, n) for n in outcome}
    assert max(abs(v) for v in z.values()) < 4.0, z
    for name in ("x", "w", "y"):
        ma = np.mean([d[name] for d in ia], axis=0)
        mb = np.mean([d[name] for d in ib], axis=0)
        assert np.corrcoef(ma, mb)[0, 1] > 0.9, name


def _nested_as_crossed(rng, H=24, per=4, n=8):
    """Classes (g) inside schools (h), the class ids scrambled so that sorted by class the
    schools' rows are not contiguous; x level-1 and w school-level incomplete."""
    G = H * per
    h_of_g = np.repeat(np.arange(H), per)
    g = np.repeat(np.arange(G), n)
    h = h_of_g[g]
    w = rng.normal(size=H)[h]
    x = 0.4 * w + rng.normal(size=G * n)
    y = 1 + 0.5 * x + 0.5 * w + rng.normal(0, 0.5, H)[h] + rng.normal(0, 0.4, G)[g] + rng.normal(size=G * n)
    label = rng.permutation(G)[g]
    df = pd.DataFrame(dict(h=h, g=label, x=x, w=w, y=y))
    df.loc[rng.random(G * n) < 0.3, "x"] = np.nan
    df.loc[df.h.isin(np.flatnonzero(rng.random(H) < 0.3)), "w"] = np.nan
    return df


def test_crossed_units_gathered_agree_with_nested_contiguous():
    """The same data and model written as nested (schools' rows contiguous) and as crossed
    (class ids scrambled: each school's rows gathered from across the data): one posterior."""
    df = _nested_as_crossed(np.random.default_rng(8))
    kw = dict(variables={"x": "continuous", "w": mi.Variable("continuous", level="h")},
              substantive="y ~ x + w + (1 | h) + (1 | g)")
    nested = standardize(build(df, mi.ImputationModel(cluster=["h", "g"], **kw)))
    crossed = standardize(build(df, mi.ImputationModel(cluster=mi.Crossed("g", "h"), **kw)))
    h = crossed.classes[1]
    assert h.name == "h" and np.any(np.diff(h.unit) < 0)   # the schools' rows are not contiguous
    a, ia = _chains(nested)
    b, ib = _chains(crossed)
    outcome = [n for n in a[0].columns if n.startswith("y~")]
    assert "y~cov[Intercept|h,Intercept|h]" in outcome
    z = {n: _batch_z(a, b, n) for n in outcome}
    assert max(abs(v) for v in z.values()) < 4.0, z


def _three_level(rng, S=40, C=4, n=8):
    s = np.repeat(np.arange(S), C * n)
    c = np.repeat(np.arange(S * C), n)
    w = (rng.normal(size=S * C) + 0.5 * rng.normal(size=S)[np.arange(S * C) // C])[c]
    x = 0.5 * w + rng.normal(size=S * C * n)
    slope = rng.normal(0, 0.4, S * C)[c]
    y = (1 + 0.5 * x + 0.4 * w + rng.normal(0, 0.5, S)[s] + rng.normal(0, 0.5, S * C)[c] + slope * x
         + rng.normal(size=S * C * n))
    full = pd.DataFrame(dict(school=s, cls=c % C, x=x, w=w, y=y))
    df = full.copy()
    p = 1 / (1 + np.exp(-(-0.8 + 1.0 * (y - y.mean()) / y.std())))   # x missing more where y is high
    df.loc[rng.random(len(df)) < p, "x"] = np.nan
    df.loc[(df.school * C + df.cls).isin(np.flatnonzero(rng.random(S * C) < 0.2)), "w"] = np.nan
    return full, df


THREE = mi.ImputationModel(variables={"x": "continuous", "w": mi.Variable("continuous", level="cls")},
                           cluster=["school", "cls"],
                           substantive="y ~ x + w + (1 | school) + (1 + x | school:cls)")


@pytest.fixture(scope="module")
def three_level_run():
    full, df = _three_level(np.random.default_rng(11))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mi.impute(df, THREE, n_imputations=10, burn=500, between=50, chains=2, seed=3)
    return full, df, res


def test_three_level_recovers_the_full_data_estimates(three_level_run):
    """x missing more often where y is high (complete cases' x slope biased): the pooled fixed
    effects sit within 2 pooled SEs of the full data's, the class slope variance within 0.1 of
    it (full data 0.17 here), and complete cases are further off for x."""
    full, df, res = three_level_run
    formula = "y ~ x + w + (1 | school) + (1 + x | school:cls)"
    ref = mi.lmm(formula, full, reml=False)
    pooled = mi.pool([mi.lmm(formula, res.completed(k), reml=False) for k in range(1, res.n_imputations + 1)])
    est, se = pooled.params, pooled.std_errors
    for term in ("Intercept", "x", "w"):
        assert abs(est[term] - ref.params[term]) < 2 * se[term], (term, est[term], ref.params[term])
    cc = mi.lmm(formula, df.dropna(), reml=False)
    assert abs(cc.params["x"] - ref.params["x"]) > abs(est["x"] - ref.params["x"])
    vc = pooled.varcomp()
    slope = vc[(vc.group == "school:cls") & (vc.term1 == "x") & vc.term2.isna()].estimate.iloc[0]
    ref_vc = ref.varcomp()
    ref_slope = ref_vc[(ref_vc.group == "school:cls") & (ref_vc.term1 == "x") & ref_vc.term2.isna()].estimate.iloc[0]
    assert abs(slope - ref_slope) < 0.1, (slope, ref_slope)


def test_three_level_invariants(three_level_run):
    """Observed values never change, the class-level w is constant within each class, the
    outcome's parameters are monitored under names that say their classification."""
    _, df, res = three_level_run
    for k in (1, res.n_imputations):
        out = res.completed(k)
        assert not out[["x", "w", "y"]].isna().any().any()
        for col in ("x", "w", "y"):
            seen = df[col].notna()
            assert np.array_equal(out.loc[seen, col], df.loc[seen, col])
        assert (out.groupby(["school", "cls"]).w.nunique() == 1).all()
    assert "y~cov[x|school:cls,Intercept|school:cls]" in res.parameter_names
    assert "y~cov[Intercept|school,Intercept|school]" in res.parameter_names


def _crossed_categorical(rng, A=25, B=20, N=900):
    a, b = rng.integers(0, A, N), rng.integers(0, B, N)
    za = rng.normal(size=A)
    ca = (rng.random(A) < 0.5).astype(float)
    oa = rng.integers(0, 3, A).astype(float)
    sex = rng.integers(0, 2, N)
    x = 0.4 * za[a] + rng.normal(size=N)
    f = rng.integers(0, 3, N).astype(float)
    y = (1 + 0.5 * x + 0.3 * za[a] + 0.4 * ca[a] + 0.3 * oa[a] + 0.3 * (f == 1) + rng.normal(0, 0.5, A)[a]
         + rng.normal(0, 0.4, B)[b] + rng.normal(size=N))
    df = pd.DataFrame(dict(a=a, b=b, sex=sex, x=x, f=f, za=za[a], ca=ca[a], oa=oa[a], y=y))
    df.loc[rng.random(N) < 0.3, "x"] = np.nan
    df.loc[rng.random(N) < 0.2, "f"] = np.nan
    for col in ("za", "ca", "oa"):
        df.loc[df.a.isin(rng.choice(A, 5, replace=False)), col] = np.nan
    df.loc[rng.random(N) < 0.1, "y"] = np.nan
    return df


def test_crossed_with_categorical_covariates_at_both_levels():
    """Crossed classifications, incomplete nominal level-1 and continuous, binary and ordinal
    covariates of one classification in the formula: valid categories, unit values constant
    within units, observed values kept, the same seed the same imputations."""
    df = _crossed_categorical(np.random.default_rng(4))
    model = mi.ImputationModel(
        variables={"x": "continuous", "f": "nominal", "za": mi.Variable("continuous", level="a"),
                   "ca": mi.Variable("binary", level="a"), "oa": mi.Variable("ordinal", level="a")},
        cluster=mi.Crossed("a", "b"), covariates=["sex"],
        substantive="y ~ x + C(f) + za + ca + C(oa) + x:ca + sex + (1 | a) + (1 | b)")
    kw = dict(n_imputations=3, burn=200, between=20, chains=2, seed=9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mi.impute(df, model, **kw)
        again = mi.impute(df, model, **kw)
    assert res.data.equals(again.data)
    for k in range(1, 4):
        out = res.completed(k)
        assert set(out.f.unique()) <= {0.0, 1.0, 2.0} and set(out.oa.unique()) <= {0.0, 1.0, 2.0}
        assert set(out.ca.unique()) <= {0.0, 1.0}
        assert (out.groupby("a")[["za", "ca", "oa"]].nunique() == 1).all().all()
        for col in ("x", "f", "za", "ca", "oa", "y"):
            seen = df[col].notna()
            assert np.array_equal(out.loc[seen, col], df.loc[seen, col])
        assert not out.isna().any().any()


def test_variance_function_with_a_substantive_model():
    """A variance function of the incomplete covariate (residual SD 0.6 for one sex, 1.5 for the
    other) beside a random-slope analysis model: the general sampler with the component; the
    imputed x keep the two sexes' spreads (within 25 %) and the pooled slope of x is close to
    the full data's."""
    rng = np.random.default_rng(6)
    J, n = 80, 10
    g = np.repeat(np.arange(J), n)
    sex = rng.integers(0, 2, J * n)
    x = rng.normal(size=J * n) * np.where(sex == 1, 1.5, 0.6)
    y = 0.5 * x + 0.3 * sex + rng.normal(0, 0.5, J)[g] + rng.normal(0, 0.3, J)[g] * x + rng.normal(size=J * n)
    full = pd.DataFrame(dict(g=g, sex=sex, x=x, y=y))
    df = full.copy()
    df.loc[rng.random(J * n) < 0.3, "x"] = np.nan
    model = mi.ImputationModel(variables={"x": mi.Variable("continuous", variance="~ sex")}, cluster="g",
                               covariates=["sex"], substantive="y ~ x * sex + (1 + x | g)")
    assert model.general
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mi.impute(df, model, n_imputations=5, burn=300, between=40, chains=2, seed=2)
    miss = df.x.isna()
    imputed = pd.concat([res.completed(k).loc[miss] for k in range(1, 6)])
    for s, sd in ((0, 0.6), (1, 1.5)):
        resid = imputed[imputed.sex == s]
        # the imputed x given y: less spread than the marginal, but the sexes' ratio kept
        assert resid.x.std() == pytest.approx(full.loc[miss & (full.sex == s), "x"].std(), rel=0.25), s
    formula = "y ~ x * sex + (1 + x | g)"
    pooled = mi.pool([mi.lmm(formula, res.completed(k)) for k in range(1, 6)])
    ref = mi.lmm(formula, full)
    assert abs(pooled.params["x"] - ref.params["x"]) < 2 * pooled.std_errors["x"]


def test_nested_inner_grouping_by_its_own_column_needs_unique_ids():
    """(1 | cls) groups the analysis by the cls values: refused while class 0 of one school and
    class 0 of another would be pooled, with the fix; (1 | school:cls) is the same model."""
    _, df = _three_level(np.random.default_rng(1), S=6, C=3, n=5)
    model = mi.ImputationModel(variables={"x": "continuous"}, cluster=["school", "cls"],
                               substantive="y ~ x + (1 | school) + (1 | cls)")
    with pytest.raises(mi.DataError, match=r"occurs in several units of 'school'.*\(1 \| school:cls\)"):
        build(df, model)
    unique = df.assign(cls=df.school * 10 + df.cls)
    data = build(unique, model)
    assert data.outcome.z_class == ("school", "cls")


def test_membership_term_with_one_unit_per_row_is_the_two_level_model():
    """A multiple membership whose rows each have one unit of weight 1 is the two-level model:
    the sparse (β, b) draw of an ``mm()`` term and the two-level component give one posterior."""
    df = _two_level(np.random.default_rng(3)).drop(columns=["o", "w"]).assign(wg=1.0)
    variables = {"x": "continuous", "b": "binary"}
    two = mi.ImputationModel(variables=variables, cluster="g", substantive="y ~ x + b + (1 + x | g)")
    mm = mi.ImputationModel(variables=variables, cluster=mi.Membership(["g"], ["wg"], name="gm"),
                            substantive="y ~ x + b + (1 + x | mm(g, weights = (wg)))")
    a, _ = _chains(standardize(build(df, two)))
    b, _ = _chains(standardize(build(df, mm)))
    rename = {n.replace("Intercept|mm(g)", "Intercept").replace("x|mm(g)", "x"): n for n in b[0].columns}
    outcome = [n for n in a[0].columns if n.startswith("y~")]
    assert "y~cov[x,Intercept]" in outcome and rename["y~cov[x,Intercept]"] == "y~cov[x|mm(g),Intercept|mm(g)]"
    b = [c.rename(columns={v: k for k, v in rename.items()}) for c in b]
    z = {n: _batch_z(a, b, n) for n in outcome}
    assert max(abs(v) for v in z.values()) < 4.0, z


def _membership(rng, K=60, N=1200):
    s1, s2, two = rng.integers(0, K, N), rng.integers(0, K, N), rng.random(N) < 0.5
    w1, w2 = np.where(two, 0.6, 1.0), np.where(two, 0.4, 0.0)
    u, v = rng.normal(0, 0.6, K), rng.normal(0, 0.4, K)
    x = rng.normal(size=N) + 0.5 * (w1 * u[s1] + w2 * u[s2])
    y = 0.5 + 0.5 * x + w1 * (u[s1] + v[s1] * x) + w2 * (u[s2] + v[s2] * x) + rng.normal(size=N)
    full = pd.DataFrame(dict(s1=s1, s2=np.where(two, s2, np.nan), w1=w1, w2=np.where(two, w2, np.nan), x=x, y=y))
    df = full.copy()
    p = 1 / (1 + np.exp(-(-0.8 + 1.0 * (y - y.mean()) / y.std())))
    df.loc[rng.random(N) < p, "x"] = np.nan
    return full, df


def test_membership_term_recovers_the_full_data_estimates():
    """Rows in one or two schools (weights 0.6/0.4), a random slope of x by membership, x missing
    more often where y is high: the pooled slope of x within 2 pooled SEs of the full data's,
    the observed values kept."""
    full, df = _membership(np.random.default_rng(1))
    formula = "y ~ x + (1 + x | mm(s1, s2, weights = (w1, w2)))"
    model = mi.ImputationModel(variables={"x": "continuous"}, substantive=formula,
                               cluster=mi.Membership(["s1", "s2"], ["w1", "w2"], name="school"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mi.impute(df, model, n_imputations=8, burn=400, between=40, chains=2, seed=1)
    assert "y~cov[x|mm(s1, s2),Intercept|mm(s1, s2)]" in res.parameter_names
    pooled = mi.pool([mi.lmm(formula, res.completed(k), reml=False) for k in range(1, 9)])
    ref = mi.lmm(formula, full, reml=False)
    assert abs(pooled.params["x"] - ref.params["x"]) < 2 * pooled.std_errors["x"]
    out = res.completed(3)
    seen = df.x.notna()
    assert np.array_equal(out.loc[seen, "x"], df.loc[seen, "x"]) and not out.x.isna().any()


@pytest.mark.parametrize("formula, match", [
    ("y ~ x + (1 | mm(s1, s2))", r"gives no weights for the multiple membership 'school'.*weights = \(w1, w2\)"),
    ("y ~ x + (1 | mm(s1, s2, weights = (w2, w1)))", "gives weights w2, w1"),
    ("y ~ x + (1 | mm(s1, s3, weights = (w1, w2)))", "multiple membership of s1, s3, which is not a classification"),
])
def test_membership_term_must_match_the_classification(formula, match):
    with pytest.raises(mi.SpecError, match=match):
        mi.ImputationModel(variables={"x": "continuous"}, substantive=formula,
                           cluster=mi.Membership(["s1", "s2"], ["w1", "w2"], name="school"))


# ------------------------------------------------------------------------------------------
# A tester's findings (each failed before its fix)
# ------------------------------------------------------------------------------------------
def _small_three_level(rng, S=30, C=3, n=8):
    school, cid = np.repeat(np.arange(S), C * n), np.repeat(np.arange(S * C), n)
    x = rng.normal(size=S * C * n)
    y = 1 + 0.5 * x + rng.normal(0, 0.5, S)[school] + rng.normal(0, 0.5, S * C)[cid] + rng.normal(size=x.size)
    df = pd.DataFrame(dict(school=school, cls=cid % C, x=x, y=y))
    df.loc[rng.random(len(df)) < 0.25, "x"] = np.nan
    return df


def test_stated_prior_df_holds_for_every_block():
    """A stated prior_substantive df is every covariance block's (it was replaced by each block's
    width whenever the formula had several blocks, while the stated scale was kept); a scale
    that couples effects the formula keeps independent is refused."""
    from mlimpute.sampler.outcome_multi import prepare_general_outcome

    df = _small_three_level(np.random.default_rng(0))
    formula = "y ~ x + (1 | school) + (1 | school:cls)"
    model = mi.ImputationModel(cluster=["school", "cls"], variables={"x": "continuous"}, substantive=formula,
                               prior_substantive=mi.CovariancePrior(scale=(2.0 * np.eye(2)).tolist(), df=2000))
    ost = prepare_general_outcome(standardize(build(df, model)))
    assert [float(t.bdf[0]) for t in ost.terms] == [2000.0, 2000.0]
    default = prepare_general_outcome(standardize(build(df, mi.ImputationModel(
        cluster=["school", "cls"], variables={"x": "continuous"}, substantive=formula))))
    assert [float(t.bdf[0]) for t in default.terms] == [1.0, 1.0]
    coupled = mi.ImputationModel(cluster=["school", "cls"], variables={"x": "continuous"}, substantive=formula,
                                 prior_substantive=mi.CovariancePrior(scale=[[1.0, 0.2], [0.2, 1.0]]))
    with pytest.raises(mi.SpecError, match="couples 'Intercept\\|school' and 'Intercept\\|school:cls'"):
        build(df, coupled)


def test_shuffled_rows_same_prior_and_imputations():
    """The complete-case fit behind the prior runs on the rows in the canonical order: a
    shuffled input gives the same prior and imputations (a boundary fit flipped the prior's
    correlation from 0.81 to 0 with the input's order)."""
    rng = np.random.default_rng(29)
    A, B, N = 15, 10, 450
    a, b = rng.integers(0, A, N), rng.integers(0, B, N)
    x = rng.normal(size=N)
    eta = -0.3 + 0.5 * x + rng.normal(0, 0.5, A)[a] + rng.normal(0, 0.3, B)[b]
    df = pd.DataFrame(dict(id=np.arange(N), a=a, b=b, x=x, y=(rng.random(N) < 1 / (1 + np.exp(-eta))) * 1.0))
    df.loc[rng.random(N) < 0.25, "x"] = np.nan
    model = mi.ImputationModel(cluster=mi.Crossed("a", "b"), variables={"x": "continuous"},
                               substantive="y ~ x + (1 | a) + (1 + x | b)", family="binomial")
    shuffled = df.iloc[np.random.default_rng(1).permutation(N)]
    assert np.array_equal(build(df, model).outcome.prior_scale, build(shuffled, model).outcome.prior_scale)
    kw = dict(n_imputations=2, burn=30, between=10, chains=1, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one, two = mi.impute(df, model, **kw), mi.impute(shuffled, model, **kw)
    assert np.array_equal(one.completed(2).sort_values("id").x.to_numpy(), two.completed(2).sort_values("id").x.to_numpy())


def test_singular_completed_design_is_a_clear_error():
    """Imputed categories of two school-level ordinals that make C(v1) and C(v2) collinear in a
    completed dataset: a ConvergenceError naming the column and the fixes (was numpy's
    LinAlgError 'not positive definite' mid-run)."""
    rng = np.random.default_rng(186)
    S, C, n = 15, 4, 11
    s, cid = np.repeat(np.arange(S), C * n), np.repeat(np.arange(S * C), n)
    v1s = np.array([1, 1, 1, 1, 1, 3, 3, 3, 2, 0, 1, 1, 2, 3, 0], float)
    v2s = np.array([1, 1, 1, 1, 1, 0, 0, 2, 2, 3, 1, 0, 3, 2, 1], float)
    x = rng.normal(size=s.size)
    eta = 0.3 * x + 0.3 * v1s[s] - 0.2 * v2s[s] + rng.normal(0, 0.5, S)[s] + rng.normal(0, 0.5, S * C)[cid]
    df = pd.DataFrame(dict(s=s, c=cid % C, x=x, v1=v1s[s], v2=v2s[s],
                           y=(rng.random(s.size) < 1 / (1 + np.exp(-eta))).astype(float)))
    df.loc[df.s >= 10, ["v1", "v2"]] = np.nan
    df.loc[rng.random(len(df)) < 0.25, "x"] = np.nan
    model = mi.ImputationModel(cluster=["s", "c"],
                               variables={"x": "continuous", "v1": mi.Variable("ordinal", level="s"),
                                          "v2": mi.Variable("ordinal", level="s")},
                               substantive="y ~ x + C(v1) + C(v2) + (1 | s) + (1 | s:c)", family="binomial")
    with warnings.catch_warnings(), pytest.raises(mi.ConvergenceError, match=r"column 'C\(v2\)\[T\.\d\.0\]'.*Merge rare"):
        warnings.simplefilter("ignore")
        mi.impute(df, model, n_imputations=2, burn=200, between=10, chains=1, seed=0)


@pytest.mark.parametrize("formula, error, match", [
    ("y ~ x + np.log(z) + (1 | school) + (1 | school:cls)", mi.SpecError,
     r"`np.log\(z\)` contains null values.*np.log of values <= 0\); fix the formula or the data"),
    ("y ~ np.log(x) + (1 | school) + (1 | school:cls)", mi.SpecError,
     "a transform of the incomplete variable\\(s\\) 'x' is refused anyway"),
    ("y ~ x + (1 | cls:school) + (1 | cls)", mi.SpecError, "both group by the classification 'cls'"),
    ("y ~ x + (1 | school) + (1 | c)", mi.SpecError, r"its groupings are school, school:cls \(or cls if its ids"),
])
def test_formula_refusals_name_the_fix(formula, error, match):
    df = _small_three_level(np.random.default_rng(2)).assign(z=lambda d: d.y - d.y.max())   # z <= 0
    with warnings.catch_warnings(), pytest.raises(error, match=match):
        warnings.simplefilter("error")   # the refusal alone: no numpy RuntimeWarning before it
        build(df, mi.ImputationModel(cluster=["school", "cls"], variables={"x": "continuous"}, substantive=formula))


def test_constant_outcome_refused():
    df = _small_three_level(np.random.default_rng(3)).assign(y=2.0)
    df.loc[::9, "y"] = np.nan
    with pytest.raises(mi.DataError, match=r"outcome 'y' of substantive= is constant \(2.0\)"):
        build(df, mi.ImputationModel(cluster=["school", "cls"], variables={"x": "continuous"},
                                     substantive="y ~ x + (1 | school) + (1 | school:cls)"))


def test_backquoted_power_of_an_incomplete_variable():
    """I(`my x`**2): a power through I() of a name that needs back-quotes (was refused as a
    transform the sampler cannot re-evaluate)."""
    df = _small_three_level(np.random.default_rng(4)).rename(columns={"x": "my x"})
    data = build(df, mi.ImputationModel(cluster=["school", "cls"], variables={"my x": "continuous"},
                                        substantive="y ~ `my x` + I(`my x`**2) + (1 | school) + (1 | school:cls)"))
    assert data.outcome.x_names == ("Intercept", "my x", "I(`my x` ** 2)")


def test_report_names_added_covariates_and_stated_priors():
    from mlimpute.report._data import describe_model

    text = describe_model(mi.ImputationModel(
        cluster=["school", "cls"], variables={"x": "continuous"}, covariates=["sex"],
        substantive="y ~ x + stype + (1 | school) + (1 | school:cls)",
        prior_substantive=mi.CovariancePrior(df=7)))
    assert "given <code>sex</code> and <code>stype</code> (read by the analysis model)" in text
    assert "<code>prior_substantive</code> df 7" in text
    assert "cluster means" not in text   # no variable measured on clusters
    text = describe_model(mi.ImputationModel(
        cluster="school", variables={"w": mi.Variable("continuous", level=2)}, substantive="y ~ x * w + (1 | school)"))
    assert ("given <code>x</code> (read by the analysis model), and the variables measured on clusters also given "
            "the cluster means" in text)
    model = mi.ImputationModel(cluster="school", variables={"w": mi.Variable("continuous", level=2)},
                               substantive="y ~ x * w + (1 | school)")
    held = describe_model(model, ["beta2[w:Intercept]", "beta2[w:mean(x|school)]", "omega2[w,w]"])
    assert "also given <code>mean(x|school)</code> (cluster means of the analysis model's complete columns)" in held
    assert "cluster means" not in describe_model(model, ["beta2[w:Intercept]", "omega2[w,w]"])   # none were added


def test_membership_block_dense_and_sparse_draw_alike(monkeypatch):
    """The membership block's system solved densely (up to DENSE_MAX unknowns) and by SuperLU
    gives the same draw for the same normals, and that draw's mean is the exact conditional
    mean (normals set to 0: the perturbation terms vanish) computed from the dense design."""
    from mlimpute.sampler import outcome_multi as om

    full, df = _membership(np.random.default_rng(5), K=12, N=150)
    model = mi.ImputationModel(variables={"x": "continuous"}, substantive="y ~ x + (1 + x | mm(s1, s2, weights = (w1, w2)))",
                               cluster=mi.Membership(["s1", "s2"], ["w1", "w2"], name="school"))
    data = standardize(build(full, model))
    ost = om.prepare_general_outcome(data)
    term = ost.terms[0]
    obs = ost.obs_rows
    D = data.outcome.program.evaluate(data.outcome.S0)[obs]
    yc = data.outcome.y[obs]
    cov = np.array([[0.3, 0.05], [0.05, 0.2]])
    draws = {}
    for dense_max in (10**6, 0):
        monkeypatch.setattr(om, "DENSE_MAX", dense_max)
        draws[dense_max] = om._membership_block(np.random.default_rng(1), term, D, yc, np.zeros(1), 2.0, cov)
    (b1, u1, *_), (b2, u2, *_) = draws[10**6], draws[0]
    assert np.allclose(b1, b2, atol=1e-9) and np.allclose(u1, u2, atol=1e-9)

    class Zeros:   # no perturbation: the draw is the conditional mean
        def standard_normal(self, size):
            return np.zeros(size)
    beta, b, *_ = om._membership_block(Zeros(), term, D, yc, np.zeros(1), 2.0, cov)
    K, nf = term.n_units, 2
    A = np.zeros((obs.size, nf + 2 * K))
    A[:, :nf] = D[:, :nf]
    for m in range(2):
        for i in range(obs.size):
            if term.obs_ids[i, m] >= 0:
                A[i, nf + 2 * term.obs_ids[i, m]:nf + 2 * term.obs_ids[i, m] + 2] += term.obs_weights[i, m] * D[i, nf:]
    P = 2.0 * A.T @ A
    P[nf:, nf:] += np.kron(np.eye(K), np.linalg.inv(cov))
    mean = np.linalg.solve(P, 2.0 * A.T @ yc)
    assert np.allclose(np.concatenate([beta, b.ravel()]), mean, atol=1e-9)


def test_membership_prior_fit_keeps_rows_with_fewer_units():
    """The complete-case fit behind the default prior keeps rows whose second membership is
    absent (its id and weight missing by design): an absent membership written as missing or as
    an id of weight 0 gives the same prior and start (it kept only the two-school rows)."""
    full, df = _membership(np.random.default_rng(7))
    zero = df.assign(s2=df.s2.fillna(df.s1), w2=df.w2.fillna(0.0))
    model = mi.ImputationModel(variables={"x": "continuous"}, substantive="y ~ x + (1 | mm(s1, s2, weights = (w1, w2)))",
                               cluster=mi.Membership(["s1", "s2"], ["w1", "w2"], name="school"))
    a, b = build(df, model).outcome, build(zero, model).outcome
    assert np.allclose(a.prior_scale, b.prior_scale) and np.allclose(a.beta0, b.beta0)


@pytest.mark.parametrize("change, error, match", [
    (lambda d: d.assign(s2=d.s2.map(lambda v: str(int(v)), na_action="ignore").astype(object)), mi.DataError,
     r"hold ids of different types \(int, str"),
    (lambda d: d.assign(w2=d.w2.where(d.w2.isna() | (d.index != d.w2.first_valid_index()), np.inf)), mi.DataError,
     "weight column 'w2' is infinite where its id 's2' is given"),
])
def test_membership_data_refusals(change, error, match):
    _, df = _membership(np.random.default_rng(8), K=20, N=200)
    model = mi.ImputationModel(variables={"x": "continuous"}, substantive="y ~ x + (1 | mm(s1, s2, weights = (w1, w2)))",
                               cluster=mi.Membership(["s1", "s2"], ["w1", "w2"], name="school"))
    with pytest.raises(error, match=match):
        build(change(df), model)


@pytest.mark.parametrize("formula, match", [
    ("y ~ x", r"needs one, e.g. '\+ \(1 \| mm\(s1, s2, weights = \(w1, w2\)\)\)'"),
    ("y ~ x + w1 + (1 | mm(s1, s2, weights = (w1, w2)))", "reads 'w1', a weight column of the multiple membership"),
])
def test_membership_formula_advice(formula, match):
    with pytest.raises(mi.SpecError, match=match):
        mi.ImputationModel(variables={"x": "continuous"}, substantive=formula,
                           cluster=mi.Membership(["s1", "s2"], ["w1", "w2"], name="school"))


@pytest.mark.parametrize("kind", ["crossed", "membership"])
def test_probit_scale_move_keeps_the_general_state_consistent(monkeypatch, kind):
    """The probit outcome's scale move in the general sampler, forced to α = 1.3 every sweep:
    after each parameter draw the linear predictors, the rows' random coefficients R, every
    term's effects and the latents still agree (η = Dβ + D_z·R on the observed rows, R read
    off the effects, y* on y's side of 0, Σ (y* − η)² grown by α²), so no array was left on the
    old scale."""
    from mlimpute.sampler import multi, outcome
    from mlimpute.sampler import outcome_multi as om

    rng = np.random.default_rng(8)
    if kind == "crossed":
        N = 400
        g, h = rng.integers(0, 25, N), rng.integers(0, 12, N)
        x = rng.normal(size=N)
        eta = 0.3 + 0.6 * x + rng.normal(0, 0.6, 25)[g] + rng.normal(0, 0.4, 25)[g] * x + rng.normal(0, 0.5, 12)[h]
        df = pd.DataFrame({"g": g, "h": h, "x": x, "y": (eta + rng.normal(size=N) > 0).astype(int)})
        formula, cluster = "y ~ x + (1 + x | g) + (1 | h)", mi.Crossed("g", "h")
    else:
        full, df = _membership(rng, K=20, N=300)
        df = df.assign(y=(full.y > full.y.median()).astype(int))
        formula = "y ~ x + (1 + x | mm(s1, s2, weights = (w1, w2)))"
        cluster = mi.Membership(["s1", "s2"], ["w1", "w2"], name="school")
    df.loc[rng.random(len(df)) < 0.3, "x"] = np.nan
    model = mi.ImputationModel(cluster=cluster, variables={"x": "continuous"}, substantive=formula,
                               family="binomial", link="probit")
    before = []   # Σ (y* − η)² over the observed rows as the move found it

    def forced(rng, lam, chi, psi):
        before.append(psi)
        return 2 * np.log(1.3)

    monkeypatch.setattr(outcome, "gig_log_step", forced)
    original, checked = multi.draw_general_parameters, []

    def checking(rng, ost, o, *args):
        out = original(rng, ost, o, *args)
        obs, nf = ost.obs_rows, ost.od.n_fixed
        D = out.D[obs]
        np.testing.assert_allclose(out.eta[obs], D[:, :nf] @ out.beta + np.sum(D[:, nf:] * out.R[obs], axis=1),
                                   rtol=1e-9, atol=1e-9)
        for term, b in zip(ost.terms, out.b):
            R = om._membership_sums(b, term.ids, term.weights) if term.unit is None else b[term.unit]
            np.testing.assert_allclose(out.R[:, term.cols], R, rtol=1e-9, atol=1e-12)
        assert np.all((out.aux[obs] > 0) == (ost.od.y[obs] == 1))
        r = out.aux[obs] - out.eta[obs]
        assert r @ r == pytest.approx(1.3 ** 2 * before[-1], rel=1e-9)   # y* and η both moved
        checked.append(float(out.cov[0, 0]))
        return out

    monkeypatch.setattr(multi, "draw_general_parameters", checking)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mi.impute(df, model, n_imputations=1, burn=10, between=5, chains=1, seed=2)
    assert len(checked) >= 15 and checked[-1] > 0
