"""Bad multiple-membership data are refused with messages that name the column, the row and the value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi

MM = "mm(s1, s2, weights = (w1, w2))"


@pytest.fixture()
def df():
    rng = np.random.default_rng(2)
    n = 60
    s1 = rng.integers(1, 8, n).astype(float)
    s2 = np.where(np.arange(n) % 3 == 0, np.nan, (s1 % 7) + 1)
    w1 = np.where(np.isnan(s2), 1.0, 0.6)
    w2 = np.where(np.isnan(s2), np.nan, 0.4)
    y = rng.normal(size=n) + rng.normal(0, 1, 9)[s1.astype(int)]
    return pd.DataFrame({"y": y, "x": rng.normal(size=n), "s1": s1, "s2": s2, "w1": w1, "w2": w2},
                        index=pd.RangeIndex(100, 100 + n))


def fit(data, formula=f"y ~ x + (1 | {MM})", **kw):
    return mi.lmm(formula, data, **kw)


def test_the_data_fit(df):
    assert fit(df).ngroups == {"mm(s1, s2)": 7}


def test_unknown_columns(df):
    with pytest.raises(mi.DataError, match="column 'w3' in formula .* is not in the data"):
        fit(df, "y ~ x + (1 | mm(s1, s2, weights = (w1, w3)))")
    with pytest.raises(mi.DataError, match="column 'school2' in formula .* is not in the data"):
        fit(df, "y ~ x + (1 | mm(s1, school2, weights = (w1, w2)))")


def test_negative_weight(df):
    df.loc[105, ["w1", "w2"]] = [1.2, -0.2]
    with pytest.raises(mi.DataError, match=r"weight column 'w2' of mm\(s1, s2\) has the negative weight -0.2 at "
                                           r"index label 105; membership weights must be >= 0"):
        fit(df)


def test_id_without_weight(df):
    df.loc[[104, 107], "w2"] = np.nan
    with pytest.raises(mi.DataError, match=r"weight column 'w2' of mm\(s1, s2\) is missing at index label 104 "
                                           r"\(and 1 more rows\), where 's2' gives the unit .*; give a weight"):
        fit(df)
    df["s2"] = df["s2"].astype("Int64")    # the unit as the column holds it: 6, not np.float64(6.0) (helper 39)
    unit = int(df.loc[104, "s2"])
    with pytest.raises(mi.DataError, match=rf"where 's2' gives the unit {unit}; give a weight"):
        fit(df)


def test_weight_without_id(df):
    df.loc[103, "w2"] = 0.3  # row 103 has no second school
    with pytest.raises(mi.DataError, match=r"'w2' of mm\(s1, s2\) gives the weight 0.3 at index label 103, "
                                           r"where 's2' has no unit; .* weight 0 or missing"):
        fit(df)


def test_weights_not_summing_to_one(df):
    df.loc[101, "w2"] = 0.3
    with pytest.raises(mi.DataError, match=r"the weights of mm\(s1, s2\) sum to 0.9 at index label 101 "
                                           r"\(w1=0.6, w2=0.3\), not 1 \(tolerance 1e-06\); rescale them"):
        fit(df)
    df.loc[101, "w2"] = 0.4 + 1e-7  # within the tolerance (float32 storage, rounded decimals)
    assert fit(df).nobs == 60


def test_not_finite_or_not_numeric_weight(df):
    df.loc[102, "w1"] = np.inf
    with pytest.raises(mi.DataError, match="weight column 'w1' .* has the value inf at index label 102"):
        fit(df)
    with pytest.raises(mi.DataError, match="weight column 'w1' of mm\\(s1, s2\\) is not numeric \\(dtype \\w+\\)"):
        fit(df.assign(w1=df["w1"].astype(str)))


def test_row_without_any_unit(df):
    df.loc[103, "s1"] = np.nan
    with pytest.raises(mi.DataError, match=r"mm\(s1, s2\): the row at index label 103 has no unit \(all of s1, s2 "
                                           r"missing\); every row must belong to at least one unit"):
        fit(df)
    with pytest.raises(mi.DataError, match="has no unit"):
        fit(df, na_action="drop")  # never dropped silently


def test_ids_of_different_types(df):
    with pytest.raises(mi.DataError, match=r"id columns of mm\(s1, s2\) hold ids of different types .*"
                                           r"convert them to one type"):
        fit(df.assign(s1=df["s1"].map(lambda v: f"school {v:g}")))


def test_one_factor_two_sets_of_weights(df):
    with pytest.raises(mi.SpecError, match=r"grouping factor 'mm\(s1, s2\)' has other weights in .* than in an earlier term"):
        fit(df.assign(v1=df["w1"], v2=df["w2"]),
            "y ~ x + (1 | mm(s1, s2, weights = (w1, w2))) + (0 + x | mm(s1, s2, weights = (v1, v2)))")


def test_missing_values_elsewhere_still_follow_na_action(df):
    df.loc[[101, 102], "x"] = np.nan
    with pytest.raises(mi.DataError, match=r"columns 'x' \(2\) have missing values"):
        fit(df)  # the structural gaps of s2 and w2 are not reported as missing data
    assert fit(df, na_action="drop").nobs == 58
