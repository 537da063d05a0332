import os
import stat

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

import mlimpute as mi
from mlimpute.io import (atomic_path, file_sha256, read_parquet, read_table, write_imputations,
                         write_parquet)


def test_read_parquet_projection_and_errors(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": [0.5, np.nan], "c": ["x", "y"]})
    p = write_parquet(df, tmp_path / "d.parquet")
    assert list(read_parquet(p, ["c", "a"]).columns) == ["c", "a"]
    with pytest.raises(mi.DataError, match=r"column\(s\) \['zz'\] are not in"):
        read_parquet(p, ["a", "zz"])
    with pytest.raises(mi.DataError, match="does not exist; check the path"):
        read_parquet(tmp_path / "nope.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(mi.DataError, match="is not a readable Parquet"):
        read_parquet(tmp_path / "bad.parquet")


def test_folder_files_must_agree(tmp_path):
    """pyarrow reads a folder with its first file's schema: 'n/a' text in a numeric column of
    another file failed with a bare ArrowInvalid (exit 1), sex coded 0/1 beside 'boy'/'girl'
    became four categories, a column missing from the first file was 'not in the data' and an
    empty folder had 'columns []'. Each is now a DataError naming the column and the files;
    integers in one file and decimals in another are read as one numeric column."""
    a = pd.DataFrame({"g": [1, 1], "x": [0.5, 1.5], "sex": ["boy", "girl"]})

    def folder(name, b):
        d = tmp_path / name
        d.mkdir()
        write_parquet(a, d / "a.parquet")
        write_parquet(b, d / "b.parquet")
        return d

    with pytest.raises(mi.DataError, match=r"column 'x' holds numbers in .*a\.parquet' but text in .*b\.parquet'"):
        read_table(folder("na", a.assign(x=["n/a", "2.0"])))
    with pytest.raises(mi.DataError, match=r"column 'sex' holds text in .* but numbers in"):
        read_table(folder("sex", a.assign(sex=[0, 1])), ["g", "sex"])
    with pytest.raises(mi.DataError, match=r"column 'w' is in 1 of the 2 files of .* but not in .*a\.parquet'"):
        read_table(folder("w", a.assign(w=[1.0, 2.0])), ["g", "w"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(mi.DataError, match="holds no Parquet files"):
        read_table(tmp_path / "empty")
    mixed = read_table(folder("num", a.assign(x=[3, 4], g=[2, 2])))
    assert mixed["x"].dtype == np.float64 and sorted(mixed["x"]) == [0.5, 1.5, 3.0, 4.0]
    # a site that never recorded sex (all missing: stored as doubles or as the null type) is
    # not a conflict: its rows read as missing (a helper's case)
    for name, never in (("nan", [np.nan, np.nan]), ("null", pd.Series([None, None], dtype=object))):
        got = read_table(folder(name, a.assign(g=[2, 2], sex=never)))
        assert got["sex"].isna().sum() == 2 and set(got["sex"].dropna()) == {"boy", "girl"}
    # units and encodings of one kind unify (timestamps in us and ms: a helper's case); an Int64
    # first file beside decimals reads as float (its pandas metadata had turned it back to Int64)
    t1 = tmp_path / "t1"
    t1.mkdir()
    write_parquet(pd.DataFrame({"t": pd.to_datetime(["2024-01-01"]).astype("datetime64[us]")}), t1 / "a.parquet")
    write_parquet(pd.DataFrame({"t": pd.to_datetime(["2024-02-01"]).astype("datetime64[ms]")}), t1 / "b.parquet")
    assert len(read_table(t1)) == 2
    i1 = tmp_path / "i1"
    i1.mkdir()
    write_parquet(pd.DataFrame({"v": pd.array([1, None], dtype="Int64")}), i1 / "a.parquet")
    write_parquet(pd.DataFrame({"v": [1.5, 2.0]}), i1 / "b.parquet")
    assert sorted(read_table(i1)["v"].dropna()) == [1.0, 1.5, 2.0]
    d = folder("stray", a.assign(g=[2, 2]))
    (d / "zz_notes.csv").write_text("g,x\n1,2\n")
    with pytest.raises(mi.DataError, match=r"zz_notes.csv' in the data folder .* is not a Parquet file"):
        read_table(d)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole" and len(list(tmp_path.iterdir())) == 1


def test_imputations_folder_reads_as_integers_in_numeric_order_by_four_readers(tmp_path):
    import duckdb
    import polars as pl

    m = 12  # past 9, where text order (1, 10, 11, 2, ...) and numeric order part
    long = pd.DataFrame({"imputation": np.repeat(np.arange(1, m + 1), 3), "v": np.arange(3.0 * m),
                         "s": list("abc") * m})
    files = write_imputations(long, tmp_path / "imps")
    assert sorted(files) == list(range(1, m + 1)) and files[1].name == "imputation-01.parquet"
    folder = tmp_path / "imps"
    want = list(np.repeat(np.arange(1, m + 1), 3))
    by_pandas = pd.read_parquet(folder)
    assert by_pandas["imputation"].dtype == "int64" and by_pandas["imputation"].tolist() == want
    assert by_pandas["v"].tolist() == long["v"].tolist()
    by_arrow = ds.dataset(folder, format="parquet").to_table()
    assert str(by_arrow.schema.field("imputation").type) == "int64"
    assert by_arrow.column("imputation").to_pylist() == want
    by_polars = pl.read_parquet(folder)
    assert by_polars.schema["imputation"] == pl.Int64 and by_polars["imputation"].to_list() == want
    by_duck = duckdb.sql(f"SELECT imputation FROM read_parquet('{folder}/*.parquet') "
                         "ORDER BY imputation, v").df()
    assert str(by_duck["imputation"].dtype) == "int64" and by_duck["imputation"].tolist() == want
    # and the input reader reads it back as the same table
    pd.testing.assert_frame_equal(read_table(folder), long)


def test_imputations_folder_replaced_atomically(tmp_path):
    long = pd.DataFrame({"imputation": np.repeat([1, 2], 3), "v": np.arange(6.0)})
    out = tmp_path / "imps"
    write_imputations(long, out)
    h1 = file_sha256(out)
    write_imputations(long.assign(v=long.v + 1), out)   # replaces atomically
    assert file_sha256(out) != h1
    assert [p.name for p in tmp_path.iterdir()] == ["imps"]            # no temp leftovers
    with pytest.raises(mi.DataError, match="cannot split by 'k'"):
        write_imputations(long, tmp_path / "x", by="k")


def test_read_table_csv_parquet_and_hive_folder(tmp_path):
    df = pd.DataFrame({"school": [1, 1, 2, 12], "y": [0.5, np.nan, 1.5, 2.0]})
    df.to_csv(tmp_path / "d.csv", index=False)
    pd.testing.assert_frame_equal(read_table(tmp_path / "d.csv"), df)
    write_parquet(df, tmp_path / "d.parquet")
    pd.testing.assert_frame_equal(read_table(tmp_path / "d.parquet", ["y"]), df[["y"]])
    for school, part in df.groupby("school"):
        (tmp_path / "hive" / f"school={school}").mkdir(parents=True)
        part.drop(columns="school").to_parquet(tmp_path / "hive" / f"school={school}" / "p.parquet")
    back = read_table(tmp_path / "hive").sort_values(["school", "y"]).reset_index(drop=True)
    assert back["school"].dtype.kind == "i"  # a hive key typed by its values, not a category
    assert back["school"].tolist() == [1, 1, 2, 12]
    (tmp_path / "bad.csv").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(mi.DataError, match="is not a readable CSV file"):
        read_table(tmp_path / "bad.csv")
    with pytest.raises(mi.DataError, match=r"column\(s\) \['zz'\] are not in"):
        read_table(tmp_path / "d.csv", ["zz"])


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_path(tmp_path / "a" / "f.csv") as tmp:
            tmp.write_text("x")
        write_parquet(pd.DataFrame({"v": [1]}), tmp_path / "a" / "t.parquet")
        write_imputations(pd.DataFrame({"imputation": [1, 2], "v": [1.0, 2.0]}), tmp_path / "imps")
    finally:
        os.umask(old)
    files = [tmp_path / "a" / "f.csv", tmp_path / "a" / "t.parquet",
             tmp_path / "imps" / "imputation-1.parquet"]
    assert {oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {oct(0o666 & ~umask)}
    assert oct(stat.S_IMODE((tmp_path / "imps").stat().st_mode)) == oct(0o777 & ~umask)


def test_a_folders_hash_is_that_of_the_files_read(tmp_path):
    """A marker written beside a Parquet folder's data (``_SUCCESS``, ``.part.crc``) changed its
    hash, the key of every cache (helper 37); the reader skips such files, and so does the hash.
    A path that is gone raises instead of hashing as an empty folder."""
    long = pd.DataFrame({"imputation": np.repeat([1, 2], 3), "v": np.arange(6.0)})
    folder = tmp_path / "data"
    write_imputations(long, folder)
    h = file_sha256(folder)
    (folder / "_SUCCESS").write_text("")
    (folder / ".imputation-1.parquet.crc").write_text("x")
    assert file_sha256(folder) == h
    pd.testing.assert_frame_equal(read_table(folder), long)
    write_imputations(long.assign(v=long.v + 1), folder)
    assert file_sha256(folder) != h
    with pytest.raises(mi.DataError, match=r"data file '.*gone' does not exist \(it was moved or deleted\)"):
        file_sha256(tmp_path / "gone")


def test_a_csv_separated_by_semicolons_says_so(tmp_path):
    """A ';'-separated file (a European spreadsheet's CSV) failed with pandas' "Expected 3 fields
    in line 23, saw 4", or was read as one column, without a word about the separator (helper 37)."""
    one = tmp_path / "one.csv"
    one.write_text("g;y;x\n1;1,5;2\n1;2,5;3\n")
    with pytest.raises(mi.DataError, match=r"read as a single column 'g;y;x'; its first line is separated by ';', "
                                           r"and mlimpute reads comma-separated CSV files: convert it, e.g. "
                                           r"pandas.read_csv\(path, sep=';'\)"):
        read_table(one)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("g;y;x\n1;1,5;2\n1;2;3,4,5\n")
    with pytest.raises(mi.DataError, match=r"not a readable CSV file: .*Expected 2 fields in line 3, saw 3; its "
                                           r"first line is separated by ';'"):
        read_table(ragged)
