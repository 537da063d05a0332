"""Bad input fails before any sampling, with a message naming the column, the value and a fix."""

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi


def _df():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(4), 5)
    return pd.DataFrame({
        "g": g, "y": rng.normal(size=20), "x": rng.normal(size=20),
        "w": np.repeat(rng.normal(size=4), 5), "s": np.where(rng.random(20) < 0.5, "a", "b"),
    })


MODEL = mi.ImputationModel(cluster="g", variables={"y": "continuous", "w": mi.Variable("continuous", level=2)},
                           covariates=["x"])


def run(df, model=MODEL, **kw):
    return mi.impute(df, model, n_imputations=2, burn=2, between=1, chains=1, seed=0, **kw)


def test_unknown_column():
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "zz": "continuous"})
    with pytest.raises(mi.DataError, match=r"column\(s\) 'zz' \(in variables\) not found in the data; available columns"):
        run(_df(), m)


def test_non_numeric_continuous():
    df = _df()
    df["y"] = df["y"].astype(object)
    df.loc[3, "y"] = "n/a"
    with pytest.raises(mi.DataError, match=r"column 'y' is declared continuous but holds non-numeric values \(e.g. 'n/a' in row 3"):
        run(df)


def test_numbers_stored_as_text():
    df = _df()
    df["y"] = df["y"].map(lambda v: f"{v:.3f}").astype(object)
    with pytest.raises(mi.DataError, match=r"column 'y' is declared continuous but its numbers are stored as text .*pandas.to_numeric"):
        run(df)


def test_boolean_declared_continuous():
    df = _df()
    df["y"] = df["y"] > 0
    with pytest.raises(mi.DataError, match="is boolean; declare it 'binary'"):
        run(df)


def test_missing_cluster_id():
    df = _df()
    df["g"] = df["g"].astype(float)
    df.loc[[2, 7], "g"] = np.nan
    with pytest.raises(mi.DataError, match=r"cluster id column 'g' has 2 missing value\(s\) \(rows 2, 7\)"):
        run(df)


def test_level2_variable_varies_within_cluster():
    df = _df()
    df.loc[6, "w"] = df.loc[6, "w"] + 1.0   # row 6 is in cluster 1
    with pytest.raises(mi.DataError, match=r"column 'w' is declared level-2 \(variable\) but varies within cluster 'g'=1"):
        run(df)


def test_level2_missing_in_some_rows_is_not_variation():
    df = _df()
    df.loc[6, "w"] = np.nan  # other rows of cluster 1 hold its value: the hole gets that value
    res = run(df)
    assert np.allclose(res.completed(1).loc[6, "w"], df.loc[5, "w"])


def test_variable_without_observed_values():
    df = _df()
    df["y"] = np.nan
    with pytest.raises(mi.DataError, match="variable 'y' has no observed value"):
        run(df)


def test_covariate_with_missing_values():
    df = _df()
    df.loc[[1, 4, 9, 12], "x"] = np.nan
    with pytest.raises(mi.DataError, match=r"covariate 'x' has 4 missing value\(s\) \(rows 1, 4, 9 and 1 more\).*declaring it under variables="):
        run(df)


def test_fewer_than_two_clusters():
    df = _df()
    df["g"] = 1
    with pytest.raises(mi.DataError, match=r"cluster column 'g' has 1 distinct value\(s\); a two-level model needs at least 2"):
        run(df)


@pytest.mark.parametrize("arg, value", [("burn", 0), ("between", 0), ("n_imputations", 0), ("burn", -5), ("between", 1.5), ("chains", 0)])
def test_non_positive_run_lengths(arg, value):
    kw = dict(n_imputations=2, burn=2, between=1, chains=1)
    kw[arg] = value
    with pytest.raises(mi.SpecError, match=rf"{arg} must be an integer >= 1, got {value}"):
        mi.impute(_df(), MODEL, seed=0, **kw)


def test_more_chains_than_imputations():
    with pytest.raises(mi.SpecError, match="chains=3 exceeds n_imputations=2"):
        mi.impute(_df(), MODEL, n_imputations=2, chains=3, seed=0)


def test_collinear_covariate():
    df = _df()
    df["x2"] = 2 * df["x"]
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous"}, covariates=["x", "x2"])
    with pytest.raises(mi.DataError, match=r"column 'x2' is a linear combination of \['Intercept', 'x'\]"):
        run(df, m)


def _collinear_df(noise=0.0):
    """40 clusters of 5: y and y2 = 0.5 y + x (+ noise) per row, w and w2 = 3 − 2w per cluster."""
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(40), 5)
    df = pd.DataFrame({"g": g, "x": rng.normal(size=200), "y": rng.normal(size=200),
                       "w": np.repeat(rng.normal(size=40), 5)})
    df["y2"] = 0.5 * df["y"] + df["x"] + noise * rng.normal(size=200)
    df["w2"] = 3 - 2 * df["w"]
    df.loc[rng.random(200) < 0.2, "y"] = np.nan
    df.loc[np.repeat(rng.random(40) < 0.2, 5), "w"] = np.nan
    return df


@pytest.mark.parametrize("covariance", ["common", "cluster"])
def test_collinear_variables(covariance):
    """A continuous variable with no residual variance given the others and the covariates makes
    the joint covariance singular (with covariance='cluster' numpy failed deep in a sweep): refused
    before sampling, naming the variables and the fix, whatever their scale; near-collinear data run."""
    df = _collinear_df()
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "y2": "continuous"}, covariates=["x"],
                           covariance=covariance)
    msg = r"variable 'y2' is .*a linear combination of 'x', 'y' on the 1\d\d rows where 'y', 'y2' are observed.*passive imputation"
    with pytest.raises(mi.DataError, match=msg):
        run(df, m)
    with pytest.raises(mi.DataError, match=msg):
        run(df.assign(y=df["y"] * 1e-6, y2=df["y2"] * 1e6), m)
    run(_collinear_df(noise=1e-3), m)


def test_collinear_or_constant_variables_at_level_2_and_with_classifications():
    df = _collinear_df()
    level2 = {"w": mi.Variable("continuous", level=2), "w2": mi.Variable("continuous", level=2)}
    with pytest.raises(mi.DataError, match=r"variable 'w2' is .*a linear combination of 'w' on the \d+ units"):
        run(df, mi.ImputationModel(cluster="g", variables={"y": "continuous", **level2}))
    with pytest.raises(mi.DataError, match=r"variable 'y2' is .*a linear combination of 'x' on the 200 rows.*from the covariates"):
        run(df.assign(y2=2 * df["x"] + 7), mi.ImputationModel(cluster="g", variables={"y2": "continuous"}, covariates=["x"]))
    with pytest.raises(mi.DataError, match=r"variable 'y2' is constant \(every observed value is 4\)"):
        run(df.assign(y2=4.0), mi.ImputationModel(cluster="g", variables={"y": "continuous", "y2": "continuous"}))
    df["h"] = np.arange(200) % 7
    with pytest.raises(mi.DataError, match=r"variable 'y2' is .*a linear combination of 'x', 'y'"):
        run(df, mi.ImputationModel(cluster=mi.Crossed("g", "h"), variables={"y": "continuous", "y2": "continuous"},
                                   covariates=["x"]))


def test_level2_covariate_must_be_constant():
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous"}, level2_covariates=["x"])
    with pytest.raises(mi.DataError, match=r"column 'x' is declared level-2 \(covariate\) but varies within cluster"):
        run(_df(), m)


def test_reserved_imputation_column():
    df = _df().assign(imputation=1)
    with pytest.raises(mi.DataError, match="already has a column named 'imputation'"):
        run(df)


def test_errors_raised_before_sampling(monkeypatch):
    """Validation happens before the first sweep: a sweep that explodes is never reached."""
    import importlib

    imp = importlib.import_module("mlimpute.impute")  # the module, not the function

    def boom(*a, **k):
        raise AssertionError("sampling started")

    monkeypatch.setattr(imp, "run_chain", boom)
    df = _df()
    df.loc[0, "x"] = np.nan
    with pytest.raises(mi.DataError):
        run(df)


def test_categorical_covariate_is_dummy_coded():
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous"}, covariates=["s"])
    from mlimpute.impute import prepare
    data = prepare(_df(), m)
    assert data.x1_names == ("Intercept", "s[T.b]")


def test_numbers_stored_as_text_in_a_covariate():
    """A numeric covariate read as text became one dummy per value, and the error that followed
    named a dummy ('z[T.-0.057976]' is zero on all rows ... merge its category; helper 36)."""
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"g": np.repeat(np.arange(10), 10), "y": rng.normal(size=100),
                       "z": [f"{v:.6f}" for v in rng.normal(size=100)]})
    df.loc[::7, "y"] = np.nan
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous"}, covariates=["z"])
    with pytest.raises(mi.DataError, match=r"covariate 'z' is text \(dtype .*\) with 100 distinct values that "
                                           r"read as numbers \(e.g. '.*'\): it would become 99 dummy columns. "
                                           r"Convert it with pandas.to_numeric\(df\['z'\]\)"):
        run(df, m)
    df.loc[5, "z"] = "n/a"
    with pytest.raises(mi.DataError, match=r"except 'n/a' in row 5, which does not"):
        run(df, m)
    df["z"] = np.array(list("abcdefghijklmnopqrstuvwxy"))[np.arange(100) % 25]   # text with many levels: dummies
    from mlimpute.impute import prepare
    assert len(prepare(df, m).x1_names) == 25


def test_random_slope_of_a_cluster_level_covariate():
    """A random slope of a covariate constant within every cluster was accepted; its variance came
    from the prior alone (posterior mean 0.67 for a true 0) and split the intercept variance
    (helper 36)."""
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous"}, covariates=["w", "s"], random_slopes=["w"])
    with pytest.raises(mi.DataError, match=r"random slope 'w' is constant within every cluster of 'g': .* remove "
                                           r"'w' from random_slopes \(keep it in covariates, or move it to "
                                           r"level2_covariates\)"):
        run(_df(), m)
    df = _df()
    df["s"] = np.where(df["g"] < 2, "a", "b")
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous"}, covariates=["x", "s"], random_slopes=["s"])
    with pytest.raises(mi.DataError, match=r"random slope 's' \(its column 's\[T.b\]'\) is constant within"):
        run(df, m)
    df.loc[0, "s"] = "b"     # varies in one cluster: identified there, accepted
    run(df, m)


def _studies(seed=3):
    """24 clusters of 10 in three studies; study C never measured y."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(24), 10)
    df = pd.DataFrame({"g": g, "study": np.array(["A", "B", "C"])[g % 3], "x": rng.normal(size=240),
                       "y": rng.normal(size=240), "sex": rng.integers(0, 2, 240)})
    df.loc[df.study == "C", "y"] = np.nan
    return df


def test_covariate_unseen_where_the_variable_is_observed():
    """A covariate that is zero wherever a variable is observed leaves its coefficient with no data
    and a flat prior: the chain drifted (imputed means of -10 and +5 for a variable of mean 0.2)."""
    from mlimpute.impute import prepare

    df = _studies()
    with pytest.raises(mi.DataError, match=r"'study\[T.C\]' is zero on all 160 rows where 'y' is observed: its "
                                           r"coefficient for 'y' has no data"):
        run(df, mi.ImputationModel(cluster="g", variables={"y": "continuous"}, covariates=["x", "study"]))
    df["w"] = np.where(df.study == "C", np.nan, np.repeat(np.random.default_rng(1).normal(size=24), 10))
    with pytest.raises(mi.DataError, match=r"'study\[T.C\]' is zero on all 16 units where 'w' is observed"):
        run(df, mi.ImputationModel(cluster="g", variables={"x": "continuous", "w": mi.Variable("continuous", level=2)},
                                   level2_covariates=["study"]))
    with pytest.raises(mi.DataError, match=r"'grp\[T.rare\]' is zero on all 160 rows where 'y' is observed: its "
                                           r"log-variance coefficient"):
        run(df.assign(grp=np.where(df.study == "C", "rare", "common")),
            mi.ImputationModel(cluster="g", variables={"y": mi.Variable("continuous", variance="~ grp")}))
    # a binary variable with weakly informative priors has a proper posterior: it runs
    df["b"] = np.where(df.study == "C", np.nan, df["sex"])
    prepare(df, mi.ImputationModel(cluster="g", variables={"b": "binary"}, covariates=["x", "study"],
                                   categorical_prior_sd=5))
    with pytest.raises(mi.DataError, match=r"'study\[T.C\]' is zero on all 160 rows where 'b' is observed"):
        prepare(df, mi.ImputationModel(cluster="g", variables={"b": "binary"}, covariates=["x", "study"]))


def test_near_collinear_covariates_and_scale():
    """Checks work on columns scaled to unit root mean square: a near-duplicate covariate (the
    sampler's Cholesky failed at 1e-8) is refused, a covariate in tiny units still shows its
    separation, and year with year² (scaled condition 2e-6) runs."""
    from mlimpute.impute import prepare

    df = _studies().assign(y=lambda d: d["x"] + np.random.default_rng(2).normal(size=240))
    df["x2"] = df["x"] + 1e-9 * np.random.default_rng(1).normal(size=240)
    with pytest.raises(mi.DataError, match=r"column 'x2' is a linear combination of \['Intercept', 'x'\] up to "
                                           r"less than 1e-7"):
        prepare(df, mi.ImputationModel(cluster="g", variables={"y": "continuous"}, covariates=["x", "x2"]))
    year = np.random.default_rng(4).integers(2000, 2021, 240).astype(float)
    prepare(df.assign(year=year, year2=year ** 2),
            mi.ImputationModel(cluster="g", variables={"y": "continuous"}, covariates=["year", "year2"]))
    df["bs"] = (df["x"] > 0).astype(float)
    df.loc[:20, "bs"] = np.nan
    with pytest.raises(mi.DataError, match=r"variable 'bs' is separated by its covariates \(x\)"):
        prepare(df.assign(x=df["x"] * 1e-9), mi.ImputationModel(cluster="g", variables={"bs": "binary"},
                                                                 covariates=["x"]))


def test_degenerate_structures():
    """Every cluster a single row (a row id given as the cluster), or a variable seen once: the
    sampler's covariances were singular (LinAlgError); now refused, naming the fix."""
    df = _studies().assign(row=np.arange(240))
    with pytest.raises(mi.DataError, match=r"every unit of 'row' has a single row: .*not a row id"):
        run(df, mi.ImputationModel(cluster="row", variables={"x": "continuous"}))
    with pytest.raises(mi.DataError, match=r"every unit of 'row' has a single row"):
        run(df, mi.ImputationModel(cluster=mi.Crossed("g", "row"), variables={"x": "continuous"}))
    once = df.assign(y=np.where(np.arange(240) == 3, 2.0, np.nan))
    for cov in ("common", "cluster"):
        with pytest.raises(mi.DataError, match=r"variable 'y' is observed in a single row"):
            run(once, mi.ImputationModel(cluster="g", variables={"y": "continuous"}, covariance=cov))


def test_binary_outcome_of_the_substantive_model():
    """A binomial outcome with one observed category, or separated by terms made of complete
    columns (the coefficients drifted to ±100 under a generic warning), is refused; separation
    that involves an incomplete variable is not conclusive and runs."""
    from mlimpute.impute import prepare

    rng = np.random.default_rng(0)
    df = _studies()
    df["x"] = df["x"].where(rng.random(240) > 0.15)
    df["yb"] = df["sex"].astype(float).where(rng.random(240) > 0.1)
    kw = dict(cluster="g", variables={"x": "continuous"}, covariates=["sex"], family="binomial")
    with pytest.raises(mi.DataError, match=r"outcome 'yb' of substantive='yb ~ x \+ sex \+ \(1 \| g\)' is "
                                           r"separated by sex"):
        prepare(df, mi.ImputationModel(substantive="yb ~ x + sex + (1 | g)", **kw))
    with pytest.raises(mi.DataError, match=r"outcome 'y0' .* has only the category 0 among its observed values"):
        prepare(df.assign(y0=0.0), mi.ImputationModel(substantive="y0 ~ x + (1 | g)", **kw))
    df["yx"] = (df["x"] > 0).astype(float).where(df["x"].notna() & (rng.random(240) > 0.1))
    prepare(df, mi.ImputationModel(substantive="yx ~ x + sex + (1 | g)", **kw))


def test_seed_and_completed_arguments():
    with pytest.raises(mi.SpecError, match=r"seed=-1 must be a non-negative integer"):
        mi.impute(_df(), MODEL, n_imputations=2, burn=2, between=1, chains=1, seed=-1)
    with pytest.raises(mi.SpecError, match=r"seed must be an int"):
        mi.impute(_df(), MODEL, n_imputations=2, burn=2, between=1, chains=1, seed=True)
    res = run(_df())
    for k in (1.0, True):
        with pytest.raises(TypeError, match=r"completed\(k\) takes the imputation's number"):
            res.completed(k)
    assert res.completed(np.int64(2)).shape == _df().shape


def test_variance_function_and_substantive_formula_messages():
    from mlimpute.impute import prepare

    d = _collinear_df().assign(sex=lambda t: np.where(np.arange(len(t)) % 2, "a", "b"), p=np.arange(200) % 8)
    with pytest.raises(mi.SpecError, match=r"more than one random term \('\(1\|g\)' is another\)"):
        prepare(d, mi.ImputationModel(cluster="g", variables={"y": mi.Variable("continuous",
                                                                               variance="~ sex + (1|g) + (1|g)")}))
    with pytest.raises(mi.DataError, match=r"column 'abs' .* write np.abs\(…\) for numpy's"):
        prepare(d, mi.ImputationModel(cluster="g", variables={"y": mi.Variable("continuous",
                                                                               variance="~ np.log(abs(x))")}))
    with pytest.raises(mi.SpecError, match=r"offset\(\) and weights terms are not supported"):
        prepare(d, mi.ImputationModel(cluster="g", variables={"y": "continuous"},
                                      substantive="y2 ~ y + offset(x) + (1|g)"))


def test_two_classifications_that_group_the_rows_identically():
    d = _collinear_df().assign(g2=lambda t: "s" + t["g"].astype(str))
    with pytest.raises(mi.DataError, match=r"classifications 'g' and 'g2' group the rows identically"):
        run(d, mi.ImputationModel(cluster=mi.Crossed("g", "g2"), variables={"y": "continuous"}))
