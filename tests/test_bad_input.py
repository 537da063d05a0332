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
