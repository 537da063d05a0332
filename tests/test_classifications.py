"""Several classifications: nested hierarchies, cross-classifications and multiple membership.

Specification and data errors; the batched and the multiple-membership effect draws against
dense Gaussian algebra; the whole sampler against the two-level sampler on two-level data;
recovery of known parameters for each structure; invariants of the imputations.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from _sim import simulate_mixed

import mlimpute as mi
from mlimpute import diagnostics as dg
from mlimpute.design import _build_classified, build
from mlimpute.sampler import _class_kernels as ck
from mlimpute.sampler import initial_state, prepare_static, sweep, trace_names, trace_vector
from mlimpute.sampler.multi import draw_membership


def _run(df, model, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        return mi.impute(df, model, **{**dict(n_imputations=4, burn=400, between=100, chains=2, seed=1), **kw})


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------
def three_level(rng, S=60, C=4, n=8):
    """Pupils in classes in schools; y (continuous) and b (binary) per pupil, c per class,
    s per school (continuous); x a complete pupil covariate. Known variance components."""
    school = np.repeat(np.arange(S), C * n)
    cls = np.repeat(np.arange(S * C), n)
    N = S * C * n
    us = rng.multivariate_normal([0, 0, 0], [[0.3, 0.1, 0.12], [0.1, 0.25, 0.05], [0.12, 0.05, 0.4]], S)
    uc = rng.multivariate_normal([0, 0], [[0.2, 0.08], [0.08, 0.3]], S * C)
    x = rng.normal(size=N)
    y = 0.5 + 0.5 * x + us[school, 0] + uc[cls, 0] + rng.normal(size=N)
    b = (-0.2 + 0.4 * x + 0.5 * us[school, 0] + rng.normal(size=N) > 0).astype(float)
    c = 1.0 + us[:, 1][school] + uc[cls, 1]          # class level: school effect + class residual
    s = 2.0 + us[:, 2][school]                        # school level
    df = pd.DataFrame({"school": school, "class": cls % C, "x": x, "y": y, "b": b, "c": c, "s": s})
    df.loc[rng.random(N) < 0.2, "y"] = np.nan
    df.loc[rng.random(N) < 0.15, "b"] = np.nan
    df.loc[np.isin(cls, rng.choice(S * C, S * C // 5, replace=False)), "c"] = np.nan
    df.loc[np.isin(school, rng.choice(S, S // 5, replace=False)), "s"] = np.nan
    return df


THREE = mi.ImputationModel(
    cluster=["school", "class"],
    variables={"y": "continuous", "b": "binary", "c": mi.Variable("continuous", level="class"),
               "s": mi.Variable("continuous", level="school")},
    covariates=["x"])


def crossed(rng, A=80, B=40, N=2400):
    a = rng.integers(0, A, N)
    b = rng.integers(0, B, N)
    ua = rng.multivariate_normal([0, 0], [[0.4, 0.15], [0.15, 0.3]], A)
    ub = rng.normal(0, np.sqrt(0.2), B)
    x = rng.normal(size=N)
    y = 1.0 + 0.5 * x + ua[a, 0] + ub[b] + rng.normal(size=N)
    p = 0.5 + ua[:, 1][a]
    df = pd.DataFrame({"primary": a, "secondary": b, "x": x, "y": y, "p": p})
    df.loc[rng.random(N) < 0.25, "y"] = np.nan
    df.loc[np.isin(a, rng.choice(A, A // 5, replace=False)), "p"] = np.nan
    return df


CROSSED = mi.ImputationModel(cluster=mi.Crossed("primary", "secondary"),
                             variables={"y": "continuous", "p": mi.Variable("continuous", level="primary")},
                             covariates=["x"])


def membership(rng, K=120, N=2400, var=0.4):
    nm = rng.integers(1, 4, N)
    ids = np.full((N, 3), -1)
    w = np.zeros((N, 3))
    for i in range(N):
        ids[i, :nm[i]] = rng.choice(K, nm[i], replace=False)
        w[i, :nm[i]] = rng.dirichlet(np.ones(nm[i]))
    u = rng.normal(0, np.sqrt(var), K)
    x = rng.normal(size=N)
    eff = (w * np.where(ids >= 0, u[np.maximum(ids, 0)], 0.0)).sum(axis=1)
    y = 1.0 + 0.5 * x + eff + rng.normal(size=N)
    df = pd.DataFrame({"x": x, "y": y})
    for k in range(3):
        df[f"s{k + 1}"] = np.where(ids[:, k] >= 0, ids[:, k], np.nan)
        df[f"w{k + 1}"] = np.where(ids[:, k] >= 0, w[:, k], np.nan)
    df.loc[rng.random(N) < 0.3, "y"] = np.nan
    return df


MM = mi.ImputationModel(cluster=mi.Membership(["s1", "s2", "s3"], weights=["w1", "w2", "w3"], name="school"),
                        variables={"y": "continuous"}, covariates=["x"])


# ------------------------------------------------------------------------------------------
# Specification and data errors
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    (dict(cluster=["school", "class"], variables={"c": mi.Variable("continuous", level=2)}),
     "has level=2, but the model has several classifications.*level='class'"),
    (dict(cluster=["school", "class"], variables={"c": mi.Variable("continuous", level="room")}),
     "level='room', which is not a classification of this model"),
    (dict(cluster=["school", "class"], variables={"y": "continuous"}, covariates=["x"], random_slopes=["x"]),
     "random_slopes needs a single cluster column"),
    (dict(cluster=mi.Crossed("a", "b"), variables={"y": "continuous"}, substantive="z ~ y + (1 | c)"),
     "grouped by 'c', which is not a classification of the imputation model; its groupings are a, b:"),
    (dict(cluster=mi.Crossed("a", "b"), variables={"y": "continuous"}, substantive="z ~ y + (1 | mm(a, b))"),
     "is a multiple membership"),
    (dict(cluster=["a", "b"], variables={"y": "continuous"}, substantive="z ~ y + (1 | b) + (0 + y | a:b)"),
     "both group by the classification 'b'"),
    (dict(cluster=mi.Crossed("a", "b"), variables={"y": "continuous"}, substantive="z ~ y + a + (1 | b)"),
     "reads the cluster column 'a'"),
    (dict(cluster=mi.Membership(["s1"], ["w1"], name="school"),
          variables={"v": mi.Variable("continuous", level="school")}),
     "measured at the multiple-membership classification 'school'"),
    (dict(cluster=42, variables={"y": "continuous"}), "cluster must be a column name"),
    (dict(cluster=["school", "class"], variables={"y": "continuous"}, priors={"room": mi.CovariancePrior()}),
     "priors names 'room', which is not a classification of this model"),
    (dict(cluster=["school", "class"], variables={"y": "continuous"}, priors={"class": 1.0}),
     r"priors\['class'\] must be an mlimpute.CovariancePrior"),
    (dict(cluster="school", variables={"y": "continuous"}, priors={"school": mi.CovariancePrior()}),
     "the two-level model's level-2 covariance takes prior_l2"),
    (dict(cluster=["school", "class"], variables={"y": "continuous"}, prior_l2=mi.CovariancePrior(df=3)),
     r"give them as priors=\{'<classification>'"),
])
def test_spec_errors(kw, match):
    with pytest.raises(mi.SpecError, match=match):
        mi.ImputationModel(**kw)


def test_crossed_and_membership_arguments():
    with pytest.raises(mi.SpecError, match="at least two cluster columns"):
        mi.Crossed("a")
    with pytest.raises(mi.SpecError, match="2 id columns .* but 1 weight columns"):
        mi.Membership(["s1", "s2"], weights=["w1"])
    m = mi.Membership(["s1", "s2"], ["w1", "w2"])
    assert m.name == "mm(s1, s2)"
    model = mi.ImputationModel(cluster=["school", "class"], variables={"y": "continuous"})
    assert [c.name for c in model.classifications] == ["school", "class"]
    assert model.classifications[1].columns == ("school", "class")
    assert model.cluster_columns == ("school", "class")
    # a one-column list is the two-level model; naming its column as a level means level 2
    two = mi.ImputationModel(cluster=["g"], variables={"w": mi.Variable("continuous", level="g")})
    assert two.cluster == "g" and two.variables["w"].level == 2


def _mm_frame():
    return pd.DataFrame({"s1": [1, 2, 1, 3], "s2": [2, np.nan, 3, 1], "w1": [0.5, 1.0, 0.3, 0.6],
                         "w2": [0.5, np.nan, 0.7, 0.4], "y": [1.0, np.nan, 0.5, 2.0]})


MM2 = mi.ImputationModel(cluster=mi.Membership(["s1", "s2"], ["w1", "w2"]), variables={"y": "continuous"})


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.assign(w1=[0.5, 1.0, 0.3, 0.7]), r"weights \['w1', 'w2'\] of row 3 sum to 1.1, not 1"),
    (lambda d: d.assign(w2=[0.5, np.nan, np.nan, 0.4]), r"weight column 'w2' is missing where its id 's2' is given \(rows 2\)"),
    (lambda d: d.assign(w1=[1.5, 1.0, 0.3, 0.6], w2=[-0.5, np.nan, 0.7, 0.4]), r"negative weight \(-0.5 in row 0\)"),
    (lambda d: d.assign(w2=[0.5, 0.2, 0.7, 0.4]), r"gives weight 0.2 in row 1 where its id 's2' is missing"),
    (lambda d: d.assign(s1=[1, np.nan, 1, 3]), r"rows 1 have no membership id"),
    (lambda d: d.assign(w1=["a", "b", "c", "d"]), r"weight column 'w1' is not numeric"),
])
def test_membership_data_errors(edit, match):
    with pytest.raises(mi.DataError, match=match):
        build(edit(_mm_frame()), MM2)


def test_classification_priors_are_stated_on_the_data_scale():
    """priors={name: CovariancePrior} sets a classification's Ω^(c) prior (the sampler had the
    identity on the standardised scale and no way to change it): a wrong size is refused naming
    Ω^(c)'s coordinates in order; a stated scale is on the data's scale (so it reaches the
    sampler divided by the coordinates' scales), df as given."""
    from mlimpute.impute import prepare
    from mlimpute.priors import class_prior

    df = three_level(np.random.default_rng(1), S=12, C=3, n=4)
    model = mi.ImputationModel(cluster=["school", "class"], variables={"y": "continuous", "c": mi.Variable(
        "continuous", level="class")}, covariates=["x"], priors={"class": mi.CovariancePrior(scale=np.eye(3))})
    with pytest.raises(mi.SpecError, match=r"classification 'class' prior scale is 3x3 .* 2x2.*its coordinates, "
                                           r"in order: y, c\)"):
        build(df, model)
    scale = np.array([[0.3, 0.1], [0.1, 0.5]])
    stated = mi.ImputationModel(cluster=["school", "class"], variables={"y": "continuous", "c": mi.Variable(
        "continuous", level="class")}, covariates=["x"], priors={"class": mi.CovariancePrior(scale=scale, df=5)})
    data = prepare(df, stated)
    ci = [c.name for c in data.classes].index("class")
    sy, sc = data.scaling.y1[1][0], data.scaling.level(data, "class")[1][0]
    got, df_ = class_prior(data, ci)
    np.testing.assert_allclose(got, scale / np.outer([sy, sc], [sy, sc]))
    assert df_ == 5.0 and sy != 1.0 and sc != 1.0
    school = class_prior(data, 1 - ci)   # the school's: the default, identity and df its dimension
    np.testing.assert_allclose(school[0], np.eye(school[0].shape[0]))
    assert school[1] == school[0].shape[0]


def test_nested_data_errors():
    df = three_level(np.random.default_rng(1), S=6, C=2, n=3)
    bad = df.copy()
    i = int(np.flatnonzero(df["s"].notna())[0])
    bad.loc[i, "s"] = bad.loc[i, "s"] + 1.0       # varies within its school
    with pytest.raises(mi.DataError, match=r"column 's' is declared at 'school' but varies within its unit"):
        build(bad, THREE)
    bad = df.copy()
    bad.loc[3, "class"] = np.nan
    with pytest.raises(mi.DataError, match=r"cluster column 'class' has 1 missing value\(s\)"):
        build(bad, THREE)


# ------------------------------------------------------------------------------------------
# The draws against dense algebra
# ------------------------------------------------------------------------------------------
def test_batched_unit_draw_is_the_exact_conditional():
    """draw_units_full: N(P_k⁻¹ h_k, P_k⁻¹), P_k = prior + Q_k; the draw is affine in its
    normals: mean (z = 0) and covariance (unit vectors) against numpy."""
    rng = np.random.default_rng(0)
    r, K = 3, 4
    a = rng.normal(size=(r, r))
    prior = a @ a.T + r * np.eye(r)
    Qk = np.stack([(lambda b: b @ b.T)(rng.normal(size=(r, r))) for _ in range(K)])
    h = rng.normal(size=(K, r))
    m0, ok = ck.draw_units_full(prior, Qk, h, np.zeros((K, r)))
    assert ok
    for k in range(K):
        P = prior + Qk[k]
        assert np.allclose(m0[k], np.linalg.solve(P, h[k]), atol=1e-12)
        cols = []
        for e in np.eye(r):
            z = np.zeros((K, r))
            z[k] = e
            cols.append(ck.draw_units_full(prior, Qk, h, z)[0][k] - m0[k])
        B = np.column_stack(cols)
        assert np.allclose(B @ B.T, np.linalg.inv(P), atol=1e-12)


def test_membership_draw_has_the_exact_mean_and_covariance():
    """Multiple membership: the effects of all units jointly from N(P⁻¹h, P⁻¹),
    P = I ⊗ R⁻¹ + W'W ⊗ Ω1⁻¹; 40,000 perturbation draws against the dense moments (5 MC SEs)."""
    from scipy import sparse

    rng = np.random.default_rng(1)
    df = membership(rng, K=6, N=20)
    data = build(df, MM.__class__(cluster=MM.cluster, variables={"y": "continuous", "x": "continuous"}))
    st = prepare_static(data)
    cs = st.classes[0]
    R = np.array([[0.5, 0.1], [0.1, 0.3]])
    om = np.array([[1.0, 0.4], [0.4, 0.8]])
    Rinv, om_inv = np.linalg.inv(R), np.linalg.inv(om)
    h = rng.normal(size=(6, 2))
    n = 40_000
    draws = np.stack([draw_membership(rng, cs, Rinv, om_inv, h) for _ in range(n)])
    WW = cs.ww.toarray()
    P = np.kron(np.eye(6), Rinv) + np.kron(WW, om_inv)       # unit-major (k, variable)
    cov = np.linalg.inv(P)
    mean = cov @ h.ravel()
    flat = draws.reshape(n, -1)
    assert np.all(np.abs(flat.mean(axis=0) - mean) < 5 * np.sqrt(np.diag(cov) / n))
    emp = np.cov(flat.T)
    se = np.sqrt((cov ** 2 + np.outer(np.diag(cov), np.diag(cov))) / n)
    assert np.all(np.abs(emp - cov) < 5 * se + 1e-12)
    assert isinstance(cs.ww, sparse.spmatrix) or sparse.issparse(cs.ww)


def test_classifications_sampler_equals_the_two_level_sampler_on_two_level_data():
    """The same posterior by both samplers (one classification, mixed types at both levels):
    posterior means agree within their Monte Carlo error (|z| < 4.5 over 23 parameters)."""
    df, _, _ = simulate_mixed(np.random.default_rng(4), J=60, n=10)
    model = mi.ImputationModel(cluster="g", variables={"y": "continuous", "b": "binary", "o": "ordinal",
                                                       "w": mi.Variable("continuous", level=2)},
                               covariates=["x"])

    def run(data, n=4000, seed=1):
        st = prepare_static(data)
        rng = np.random.default_rng(seed)
        s = initial_state(st, rng)
        out = []
        for it in range(n):
            s = sweep(rng, st, s, adapt_at=it if it < 500 else None)
            if it >= 500:
                out.append(trace_vector(st, s))
        return np.array(out)

    two, multi = build(df, model), _build_classified(df, model)
    assert len(trace_names(two)) == len(trace_names(multi)) == 23
    a, b = run(two), run(multi)
    for k in range(a.shape[1]):
        se = np.sqrt(a[:, k].var() / dg.ess_bulk(a[None, :, k]) + b[:, k].var() / dg.ess_bulk(b[None, :, k]))
        z = (a[:, k].mean() - b[:, k].mean()) / se
        assert abs(z) < 4.5, (trace_names(two)[k], a[:, k].mean(), b[:, k].mean(), z)


# ------------------------------------------------------------------------------------------
# Recovery and invariants
# ------------------------------------------------------------------------------------------
def _covers(res, truth, k=4.0):
    s = res.summary().set_index("parameter")
    for name, value in truth.items():
        assert abs(s.loc[name, "mean"] - value) < k * s.loc[name, "sd"], (name, s.loc[name, "mean"], value)


@pytest.fixture(scope="module")
def three_run():
    df = three_level(np.random.default_rng(7))
    return df, _run(df, THREE, n_imputations=4, burn=600, between=150)


def test_three_level_recovery(three_run):
    _, res = three_run
    _covers(res, {
        "beta1[y:Intercept]": 0.5, "beta1[y:x]": 0.5, "omega1[y,y]": 1.0,
        "omega[class][y,y]": 0.2, "omega[class][c,c]": 0.3, "omega[class][c,y]": 0.08,
        "omega[school][y,y]": 0.3, "omega[school][c,c]": 0.25, "omega[school][s,s]": 0.4,
        "omega[school][c,y]": 0.1, "omega[school][s,y]": 0.12, "beta[class][c:Intercept]": 1.0,
        "beta[school][s:Intercept]": 2.0,
    })


def test_three_level_invariants(three_run):
    df, res = three_run
    d = res.data
    assert not d[["y", "b", "c", "s"]].isna().any().any()
    assert set(d["b"].unique()) <= {0.0, 1.0}
    assert (d.groupby(["imputation", "school", "class"])["c"].nunique() == 1).all()
    assert (d.groupby(["imputation", "school"])["s"].nunique() == 1).all()
    for c in ["y", "b", "c", "s"]:
        obs = df[c].notna().to_numpy()
        assert (res.completed(3)[c].to_numpy()[obs] == df[c].to_numpy()[obs]).all(), c
    assert "omega[school][s,c]" in res.parameter_names and "omega[class][c,b]" in res.parameter_names


def test_crossed_recovery_and_invariants():
    df = crossed(np.random.default_rng(3))
    res = _run(df, CROSSED)
    _covers(res, {"beta1[y:Intercept]": 1.0, "beta1[y:x]": 0.5, "omega1[y,y]": 1.0,
                  "omega[primary][y,y]": 0.4, "omega[primary][p,p]": 0.3, "omega[primary][p,y]": 0.15,
                  "omega[secondary][y,y]": 0.2, "beta[primary][p:Intercept]": 0.5})
    assert (res.data.groupby(["imputation", "primary"])["p"].nunique() == 1).all()


def test_membership_recovery_seed_and_row_order():
    df = membership(np.random.default_rng(5))
    res = _run(df, MM)
    _covers(res, {"beta1[y:Intercept]": 1.0, "beta1[y:x]": 0.5, "omega1[y,y]": 1.0, "omega[school][y,y]": 0.4})
    small = df.iloc[:300]
    a = _run(small, MM, n_imputations=2, burn=20, between=5, chains=1)
    perm = np.random.default_rng(9).permutation(len(small))
    b = _run(small.iloc[perm], MM, n_imputations=2, burn=20, between=5, chains=1)
    pd.testing.assert_frame_equal(b.completed(2), a.completed(2).iloc[perm])


def test_step_sizes_of_level1_and_of_the_second_classification_are_kept_apart():
    """Three levels with two categorical pupil variables (free Ω1 elements) and ordinals of 4
    categories per pupil and of 3 per class: every MH step group has its own slice of the right
    size (level 1's and classification 1's were both keyed "omega1"/"cuts1", so one overwrote
    the other and the sampler crashed on its first sweep), and sweeps run."""
    from mlimpute.sampler.multi import prepare_multi

    rng = np.random.default_rng(3)
    df = three_level(rng, S=20, C=3, n=5)
    df["o"] = rng.integers(0, 4, len(df)).astype(float)
    df["k"] = rng.integers(0, 3, df["school"].max() * 3 + 3)[df["school"] * 3 + df["class"]].astype(float)
    df.loc[rng.random(len(df)) < 0.1, "o"] = np.nan
    model = mi.ImputationModel(
        cluster=["school", "class"], covariates=["x"],
        variables={"y": "continuous", "b": "binary", "o": "ordinal", "c": mi.Variable("continuous", level="class"),
                   "k": mi.Variable("ordinal", level="class"), "s": mi.Variable("continuous", level="school")})
    st = prepare_multi(build(df, model))
    sl = st.step_slices
    sizes = {k: v.stop - v.start for k, v in sl.items()}
    assert sizes["omega1"] == 1 and sizes["cuts1"] == 2
    assert sizes["cuts_class0"] + sizes["cuts_class1"] == 1
    bounds = sorted((v.start, v.stop) for v in sl.values())
    assert all(a[1] <= b[0] for a, b in zip(bounds, bounds[1:]))
    res = _run(df, model, n_imputations=2, burn=20, between=5, chains=1)
    assert res.completed(1)["o"].isin([0, 1, 2, 3]).all() and res.completed(2)["k"].isin([0, 1, 2]).all()


def test_only_classification_level_variables():
    """Every imputed variable measured at a classification, none per pupil: the sweep read the
    variance-function tuple it only set up when there were level-1 variables (UnboundLocalError
    on the first sweep). Now it imputes: c constant within its classes, observed values kept."""
    df = three_level(np.random.default_rng(4), S=15, C=3, n=4)
    model = mi.ImputationModel(cluster=["school", "class"], covariates=["x"],
                               variables={"c": mi.Variable("continuous", level="class"),
                                          "s": mi.Variable("continuous", level="school")})
    res = _run(df, model, n_imputations=2, burn=30, between=5)
    d = res.data
    assert not d[["c", "s"]].isna().any().any()
    assert (d.groupby(["imputation", "school", "class"])["c"].nunique() == 1).all()
    obs = df["c"].notna().to_numpy()
    assert (res.completed(2)["c"].to_numpy()[obs] == df["c"].to_numpy()[obs]).all()


def test_unit_values_missing_on_some_rows_are_filled_with_the_observed_value_exactly():
    """A class- or cluster-level value observed on some rows of its unit and missing on others
    was filled from the internal scale's round trip (m + s·(v − m)/s), 1 ulp off the observed
    value, so the completed data varied within the unit and was refused when fed back."""
    rng = np.random.default_rng(0)
    df = three_level(rng, S=20, C=3, n=4)
    df["c"] = df.groupby(["school", "class"])["c"].transform("first") * np.pi   # every class observed
    df.loc[rng.random(len(df)) < 0.3, "c"] = np.nan                            # some rows lose it
    model = mi.ImputationModel(cluster=["school", "class"], covariates=["x"],
                               variables={"y": "continuous", "c": mi.Variable("continuous", level="class")})
    res = _run(df, model, n_imputations=2, burn=20, between=5)
    two = mi.ImputationModel(cluster="school", covariates=["x"],
                             variables={"y": "continuous", "s": mi.Variable("continuous", level=2)})
    df2 = df.assign(s=df["s"].groupby(df["school"]).transform("first") * np.pi)
    df2.loc[rng.random(len(df2)) < 0.3, "s"] = np.nan
    res2 = _run(df2, two, n_imputations=2, burn=20, between=5)
    for r, keys, col in ((res, ["imputation", "school", "class"], "c"), (res2, ["imputation", "school"], "s")):
        assert (r.data.groupby(keys)[col].nunique() == 1).all(), col
    again = res.completed(1).assign(y=df["y"])   # the completed data is valid input
    _run(again, model, n_imputations=2, burn=2, between=1)


def test_membership_weights_off_by_rounding_are_accepted_and_rescaled():
    """Weights stored as float32 (Parquet) or rounded to 7 decimals sum to 1 only within ~1e-7:
    they were refused ("sum to 1, not 1") by a 1e-8 tolerance, in the sampler and in mi.lmm.
    Within 1e-6 they are taken and rescaled to sum to 1 exactly; beyond, still refused."""
    from mlimpute.structure import membership_arrays

    rng = np.random.default_rng(0)
    n = 200
    w = rng.dirichlet([1, 1, 1], n).astype(np.float32)
    df = pd.DataFrame({"s1": rng.integers(0, 10, n), "s2": rng.integers(0, 10, n), "s3": rng.integers(0, 10, n),
                       "w1": w[:, 0], "w2": w[:, 1], "w3": w[:, 2], "x": rng.normal(size=n)})
    assert np.abs(w.astype(float).sum(axis=1) - 1).max() > 1e-8
    _, weights, _ = membership_arrays(df, ("s1", "s2", "s3"), ("w1", "w2", "w3"))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    df["y"] = df["x"] + rng.normal(size=n)
    exact = df.assign(**{c: df[c].astype(float) / w.astype(float).sum(axis=1) for c in ("w1", "w2", "w3")})
    formula = "y ~ x + (1 | mm(s1, s2, s3, weights = (w1, w2, w3)))"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        np.testing.assert_allclose(mi.lmm(formula, df).loglik, mi.lmm(formula, exact).loglik, rtol=1e-12)
    with pytest.raises(mi.DataError, match=r"sum to 1.0000999\d*, not 1 \(tolerance 1e-06"):
        membership_arrays(df.assign(w1=df["w1"].astype(float) + 1e-4), ("s1", "s2", "s3"), ("w1", "w2", "w3"))
