"""Invariants every imputation run must satisfy, whatever the random draws."""

import warnings

import numpy as np
import pandas as pd
import pytest
from _sim import simulate

import mlimpute as mi
from mlimpute import diagnostics

MODEL = mi.ImputationModel(
    cluster="g",
    variables={"y1": "continuous", "y2": "continuous", "w": mi.Variable("continuous", level=2)},
    covariates=["x"],
)
RUN = dict(n_imputations=4, burn=30, between=5, chains=2)


@pytest.fixture(scope="module")
def small():
    data, _, _ = simulate(np.random.default_rng(11), J=30, n=8)
    data["label"] = [f"r{i}" for i in range(len(data))]  # a column outside the model
    data.index = data.index * 10 + 3                        # a non-default index
    return data


def run(df, seed=1, model=MODEL, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        return mi.impute(df, model, seed=seed, **{**RUN, **kw})


@pytest.fixture(scope="module")
def result(small):
    return run(small)


def test_long_table_shape_and_columns(small, result):
    d = result.data
    assert list(d.columns) == [*small.columns, "imputation"]
    assert len(d) == 4 * len(small)
    assert d["imputation"].tolist() == np.repeat([1, 2, 3, 4], len(small)).tolist()
    for c in small.columns:
        assert d[c].dtype == small[c].dtype, c


def test_observed_cells_never_change(small, result):
    for k in range(1, 5):
        comp = result.completed(k)
        assert comp.index.equals(small.index)
        assert list(comp.columns) == list(small.columns)
        obs = small.notna()
        pd.testing.assert_frame_equal(comp.where(obs), small.where(obs))
        assert not comp[["y1", "y2", "w"]].isna().any().any()


def test_imputations_differ_between_imputations(result, small):
    miss = small["y1"].isna().to_numpy()
    a = result.completed(1)["y1"].to_numpy()[miss]
    b = result.completed(2)["y1"].to_numpy()[miss]
    assert np.all(a != b)


def test_level2_values_constant_within_cluster(result):
    spread = result.data.groupby(["imputation", "g"])["w"].agg(lambda s: s.max() - s.min())
    assert (spread == 0).all()


def test_same_seed_same_imputations_different_seed_different(small, result):
    again = run(small, seed=1)
    pd.testing.assert_frame_equal(again.data, result.data)
    other = run(small, seed=2)
    miss = small["y1"].isna().to_numpy()
    assert not np.allclose(other.completed(1)["y1"].to_numpy()[miss], result.completed(1)["y1"].to_numpy()[miss])


def test_seed_entropy_reproduces_run(small, result):
    assert result.seed_entropy == 1
    gen = run(small, seed=np.random.default_rng(5))
    again = run(small, seed=np.random.SeedSequence(gen.seed_entropy))
    pd.testing.assert_frame_equal(gen.data, again.data)


def test_shuffled_rows_give_same_imputations_in_shuffled_order(small, result):
    perm = np.random.default_rng(3).permutation(len(small))
    shuffled = small.iloc[perm]
    res2 = run(shuffled)
    for k in (1, 4):
        pd.testing.assert_frame_equal(res2.completed(k), result.completed(k).iloc[perm])


def test_chains_split_imputations_and_trace(result):
    assert result.chains == 2 and result.n_imputations == 4
    assert [t.shape[0] for t in result.traces] == [10, 10]  # 2 imputations x between=5 per chain
    tr = result.trace()
    assert set(tr.columns) == {"chain", "iteration", "parameter", "value"}
    assert tr["iteration"].min() == 31
    diag = result.diagnostics()
    assert list(diag.columns) == ["parameter", "rhat", "ess_bulk", "ess_tail"]
    assert diag["parameter"].tolist() == result.parameter_names
    assert "omega2[w,y1:Intercept]" in result.parameter_names


def test_completed_out_of_range(result):
    with pytest.raises(IndexError, match="imputation 5 out of range 1..4"):
        result.completed(5)


def test_convergence_warning_names_parameters(small, monkeypatch):
    # forced, whatever this short run's mixing: the diagnostics report one bad R-hat and ESS
    real = diagnostics.summarise

    def poor(draws, names):
        table = real(draws, names).assign(rhat=1.0, ess_bulk=1000.0, ess_tail=1000.0)
        table.loc[0, "rhat"], table.loc[1, "ess_bulk"] = 1.5, 10.0
        return table

    monkeypatch.setattr(diagnostics, "summarise", poor)
    with pytest.warns(mi.ConvergenceWarning) as caught:
        res = mi.impute(small, MODEL, n_imputations=4, burn=5, between=3, chains=2, seed=0)
    names = res.parameter_names
    message = " ".join(str(w.message) for w in caught)
    assert f"R-hat > 1.05 for 1 parameter(s), worst: {names[0]} (1.500)" in message
    assert f"ESS < 100 for 1 parameter(s), worst: {names[1]} (10)" in message
    monkeypatch.setattr(diagnostics, "summarise", real)
    with pytest.warns(mi.ConvergenceWarning, match="only 3 post-burn-in draws per chain: too few"):
        mi.impute(small, MODEL, n_imputations=2, burn=5, between=3, chains=2, seed=0)


def test_only_level1_and_only_level2_variables(small):
    m1 = mi.ImputationModel(cluster="g", variables={"y1": "continuous"}, covariates=["x"], random_slopes=["x"])
    r1 = run(small, model=m1)
    assert not r1.data["y1"].isna().any()
    assert r1.data["w"].isna().sum() == 4 * small["w"].isna().sum()  # not in the model: untouched
    m2 = mi.ImputationModel(cluster="g", variables={"w": mi.Variable("continuous", level=2)})
    r2 = run(small, model=m2)
    assert not r2.data["w"].isna().any()
    assert (r2.data.groupby(["imputation", "g"])["w"].nunique() == 1).all()


def test_float32_and_nullable_columns_come_back_in_their_dtype(small, result):
    """float32 and pandas' nullable Float64 come back as they went in (helper 32: Float64 came
    back as numpy float64, where Int64, boolean and Categorical columns round-trip)."""
    res = run(small.assign(y1=small["y1"].astype("float32")))
    assert res.data["y1"].dtype == np.float32
    res = run(small.assign(y2=small["y2"].astype("Float64")))
    assert res.data["y2"].dtype == "Float64"
    assert not res.data["y2"].isna().any()
    np.testing.assert_allclose(res.data["y2"].to_numpy(dtype=float), result.data["y2"], rtol=1e-12)


def test_categorical_ids_and_values_leave_the_imputations(small, result):
    """Cluster ids stored as a Categorical (``astype("category")``, an R factor read from
    Parquet) were hashed as text and the clusters ordered by the dtype's category order: the
    same data and seed gave other imputations. They are read by value."""
    ids = small["g"].unique()
    variants = [small.assign(g=small["g"].astype("category")),
                small.assign(g=pd.Categorical(small["g"], categories=ids[::-1]))]
    for df in variants:
        res = run(df)
        for k in (1, 4):
            np.testing.assert_allclose(res.completed(k)["y1"].astype(float), result.completed(k)["y1"], rtol=1e-12)


def test_row_hash_reads_booleans_and_missing_text_by_value():
    """A bool column with holes comes back from Parquet as object True/False/None: it was hashed
    as text ('True') where the same column as 'boolean' was hashed as 1.0, so the two reads of
    one file gave other imputations; and missing text hashed as the empty string (numpy's str
    conversion strips a bare NUL)."""
    from mlimpute.structure import row_hash

    df = pd.DataFrame({"b": pd.array([True, False, None], dtype="boolean"), "t": ["", None, "a"]})
    as_object = df.assign(b=df["b"].astype(object).where(df["b"].notna(), None))
    np.testing.assert_array_equal(row_hash(as_object), row_hash(df))
    h = row_hash(df[["t"]])
    assert h[0] != h[1]


def test_rows_tied_on_the_model_columns_keep_their_own_imputations():
    """Two pupils of a school with the same values in every column the model reads (the same
    sex, both missing the score) tie in the canonical order; their order came from the input,
    so a shuffled input traded their imputations (on ExamScores 304 of 4,059 rows, joined back
    by pupil id). Ties are broken by the other columns; a constant column added changes nothing."""
    rng = np.random.default_rng(8)
    g = np.repeat(np.arange(20), 6)
    df = pd.DataFrame({"g": g, "sex": np.tile([0, 0, 0, 1, 1, 1], 20).astype(float),
                       "y": rng.normal(size=120), "id": rng.permutation(1000)[:120]})
    df.loc[df.index % 3 != 0, "y"] = np.nan          # two tied holes per sex and school
    model = mi.ImputationModel(cluster="g", variables={"y": "continuous"}, covariates=["sex"])
    perm = np.random.default_rng(1).permutation(len(df))
    for frame, idc in ((df, "id"), (df.rename(columns={"id": 0}), 0)):   # an id column named 0 (a helper's case)
        base = run(frame, model=model).data.set_index(["imputation", idc]).sort_index()["y"]
        for variant in (frame.iloc[perm], frame.iloc[perm].assign(const=1.0)):
            other = run(variant, model=model).data.set_index(["imputation", idc]).sort_index()["y"]
            pd.testing.assert_series_equal(other, base)


def test_column_order_unused_columns_and_dtype_flavours_leave_the_imputations(small, result):
    """The canonical row order hashed the whole row, so reordering the columns, adding one the
    model does not read, or reading the file as Float64 (convert_dtypes(), a hive folder) gave
    other imputations for the same seed. It hashes the model's columns, normalised."""
    variants = [small[small.columns[::-1]], small.assign(extra=np.arange(len(small)), label="x"),
                small.astype({"y1": "Float64", "x": "Float64"})]
    for df in variants:
        res = run(df)
        for k in (1, 4):
            np.testing.assert_allclose(res.completed(k)["y1"].astype(float), result.completed(k)["y1"], rtol=1e-12)
            np.testing.assert_allclose(res.completed(k)["w"].astype(float), result.completed(k)["w"], rtol=1e-12)
