import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

import mlimpute as mi
from mlimpute.io import atomic_path, file_sha256, read_parquet, write_parquet, write_partitioned


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


def test_partitioned_round_trip_and_replace(tmp_path):
    long = pd.DataFrame({"imputation": np.repeat([1, 2, 10], 3), "v": np.arange(9.0), "s": list("abcabcabc")})
    out = write_partitioned(long, tmp_path / "imps")
    assert sorted(p.name for p in out.iterdir()) == ["imputation=1", "imputation=10", "imputation=2"]
    back = ds.dataset(out, format="parquet", partitioning="hive").to_table().to_pandas()
    back = back.sort_values(["imputation", "v"]).reset_index(drop=True)
    assert back["imputation"].astype(int).tolist() == long["imputation"].tolist()
    assert back["v"].tolist() == long["v"].tolist()
    h1 = file_sha256(out)
    write_partitioned(long.assign(v=long.v + 1), tmp_path / "imps")   # replaces atomically
    assert file_sha256(out) != h1
    assert [p.name for p in tmp_path.iterdir()] == ["imps"]            # no temp leftovers
    with pytest.raises(mi.DataError, match="cannot partition by 'k'"):
        write_partitioned(long, tmp_path / "x", by="k")
