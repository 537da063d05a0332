"""Parquet in, atomic files out.

Every writer here writes to a temporary name in the destination's directory and renames it
into place only when the content is whole, so an interrupted run never leaves a half-written
file behind (``os.replace`` is atomic on POSIX when source and target share a filesystem).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from .errors import DataError

__all__ = ["read_parquet", "write_parquet", "write_partitioned", "atomic_path", "atomic_dir", "file_sha256"]


def read_parquet(path: str | os.PathLike, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file (or a directory of Parquet files), projecting to ``columns``.

    Raises
    ------
    DataError
        If the file does not exist or a requested column is not in its schema.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {str(p)!r} does not exist; check the path")
    try:
        schema_names = pq.read_schema(p).names if p.is_file() else pq.ParquetDataset(p).schema.names
    except Exception as exc:  # pyarrow raises several types for "not parquet"
        raise DataError(f"{str(p)!r} is not a readable Parquet file or dataset: {exc}") from exc
    if columns is not None:
        columns = list(dict.fromkeys(columns))
        unknown = [c for c in columns if c not in schema_names]
        if unknown:
            raise DataError(
                f"column(s) {unknown} are not in {str(p)!r}; it has {schema_names}. "
                "Fix the column names in the model or the data"
            )
    return pd.read_parquet(p, columns=columns)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; swap it into place if the block succeeds.

    An existing ``path`` is replaced only after the new content is complete.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` to ``path`` atomically (no index unless it carries information)."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def write_partitioned(df: pd.DataFrame, path: str | os.PathLike, by: str = "imputation") -> Path:
    """Write a long table as a hive-partitioned dataset ``path/<by>=K/part-0.parquet``, atomically.

    The partition column is dropped from the files (it lives in the directory names) and is
    restored by any hive-aware reader (pandas, pyarrow.dataset, duckdb, polars).
    """
    if by not in df.columns:
        raise DataError(f"cannot partition by {by!r}: not a column of the table")
    with atomic_dir(path) as tmp:
        for key, part in df.groupby(by, sort=True):
            sub = tmp / f"{by}={key}"
            sub.mkdir()
            part.drop(columns=[by]).to_parquet(sub / "part-0.parquet", index=False)
    return Path(path)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Content hash of a file (or of every file under a directory, in sorted order)."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()
