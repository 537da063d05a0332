"""Mixed-type variables: invariants, outputs in the input's dtypes and labels, and bad input."""

import warnings

import numpy as np
import pandas as pd
import pytest
from _sim import NOM_LABELS, ORD_LABELS, simulate_mixed

import mlimpute as mi

MODEL = mi.ImputationModel(
    cluster="g",
    variables={"y": "continuous", "b": "binary", "o": "ordinal", "f": "nominal",
               "w": mi.Variable("continuous", level=2), "v": mi.Variable("binary", level=2)},
    covariates=["x"],
)


def run(df, seed=1, model=MODEL, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        return mi.impute(df, model, seed=seed, **{**dict(n_imputations=3, burn=20, between=5, chains=1), **kw})


@pytest.fixture(scope="module")
def small():
    data, _, _ = simulate_mixed(np.random.default_rng(4), J=25, n=8)
    data["s"] = np.where(np.arange(len(data)) % 2, "p", "q")   # a string column outside the model
    return data


@pytest.fixture(scope="module")
def result(small):
    return run(small)


def test_dtypes_and_labels_preserved(small, result):
    for c in small.columns:
        assert result.data[c].dtype == small[c].dtype, c
    d = result.data
    assert set(d["o"].unique()) <= set(ORD_LABELS) and d["o"].cat.ordered
    assert set(d["f"].unique()) <= set(NOM_LABELS)
    assert set(d["b"].unique()) <= {0, 1}
    assert set(d["v"].unique()) <= {True, False}
    assert not d[["y", "b", "o", "f", "w", "v"]].isna().any().any()


def test_observed_cells_never_change(small, result):
    for k in (1, 3):
        comp = result.completed(k)
        for c in small.columns:
            obs = small[c].notna().to_numpy()
            assert (comp[c].to_numpy()[obs] == small[c].to_numpy()[obs]).all(), c


def test_level2_categorical_constant_within_cluster(result):
    assert (result.data.groupby(["imputation", "g"])["v"].nunique() == 1).all()
    assert (result.data.groupby(["imputation", "g"])["w"].nunique() == 1).all()


def test_shuffle_and_seed_invariance(small, result):
    perm = np.random.default_rng(9).permutation(len(small))
    res2 = run(small.iloc[perm])
    pd.testing.assert_frame_equal(res2.completed(2), result.completed(2).iloc[perm])
    other = run(small, seed=2)
    assert not other.data.equals(result.data)


def test_trace_has_thresholds_and_no_fixed_elements(result):
    names = result.parameter_names
    assert "cut[o:2]" in names and "cut[o:3]" in names
    assert "omega1[b,b]" not in names and "omega1[o,o]" not in names    # fixed to 1
    assert "omega1[f[B],f[A]]" not in names                           # nominal block fixed
    assert "omega1[f[A],b]" in names                                  # free
    assert "omega2[v,v]" not in names and "omega2[w,w]" in names
    assert np.isfinite(result.diagnostics()["rhat"]).all()


def test_categories_never_observed_can_be_declared():
    df = pd.DataFrame({"g": np.repeat([1, 2, 3], 4), "y": np.arange(12.0),
                       "b": ["no"] * 11 + [None]})
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous",
                                                  "b": mi.Variable("binary", categories=("no", "yes"))})
    res = run(df, model=m)
    assert set(res.data["b"]) <= {"no", "yes"}


# --- bad input -------------------------------------------------------------------------------
def _base():
    rng = np.random.default_rng(0)
    return pd.DataFrame({"g": np.repeat(np.arange(5), 6), "y": rng.normal(size=30),
                         "c": rng.choice(["a", "b", "c"], size=30)})


def test_binary_with_three_values():
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "c": "binary"})
    with pytest.raises(mi.DataError, match=r"column 'c' is declared binary but has 3 distinct value\(s\) \('a', 'b', 'c'\); declare it ordinal or nominal"):
        run(_base(), model=m)


def test_ordinal_with_a_single_observed_category():
    df = _base().assign(c="a")
    df.loc[3, "c"] = None
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "c": "ordinal"})
    with pytest.raises(mi.DataError, match=r"column 'c' is declared ordinal but only one category \('a'\) is observed"):
        run(df, model=m)


def test_nominal_with_too_many_categories():
    df = pd.DataFrame({"g": np.repeat(np.arange(6), 10), "y": np.arange(60.0), "c": [f"k{i}" for i in range(60)]})
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "c": "nominal"})
    with pytest.raises(mi.DataError, match=r"column 'c' is declared nominal with 60 categories; .* at most 50"):
        run(df, model=m)


def test_categorical_level2_varying_within_cluster():
    df = _base()
    df["v"] = np.repeat(["x", "y", "x", "y", "x"], 6)
    df.loc[7, "v"] = "x"  # cluster 1 is 'y' elsewhere
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "v": mi.Variable("binary", level=2)})
    with pytest.raises(mi.DataError, match=r"column 'v' is declared level-2 \(variable\) but varies within cluster 'g'=1 \(values 'x', 'y'\)"):
        run(df, model=m)


def test_value_outside_declared_categories():
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous",
                                                  "c": mi.Variable("nominal", categories=("a", "b"))})
    with pytest.raises(mi.DataError, match=r"column 'c' holds value 'c', which is not among its declared categories"):
        run(_base(), model=m)


def test_categorical_without_observed_values():
    df = _base().assign(c=None)
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "c": "nominal"})
    with pytest.raises(mi.DataError, match="variable 'c' has no observed value"):
        run(df, model=m)
