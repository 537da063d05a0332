"""Tables in (Parquet, CSV, a Parquet dataset folder); atomic files out.

Every writer here writes to a temporary name in the destination's directory and renames it
into place only when the content is whole, so an interrupted run never leaves a half-written
file behind (``os.replace`` is atomic on POSIX when source and target share a filesystem).
The temporary names come from :mod:`tempfile`, which creates them private (0600 / 0700); they
are given the modes the process's umask asks for before they are renamed, so a team's shared
output folder gets the same permissions as any other file its members write.
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
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from .errors import DataError

__all__ = ["read_table", "read_parquet", "write_parquet", "write_imputations", "atomic_path",
           "atomic_dir", "file_sha256", "CSV_SUFFIXES"]

#: File names read as CSV (anything else is read as Parquet).
CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a CSV file, a Parquet file or a folder of Parquet files (hive-partitioned or not).

    A folder is read as one dataset; the keys of hive folder names (``school=12/``) become
    columns typed by their values (integers, not categories). ``columns`` projects.

    Raises
    ------
    DataError
        If the path does not exist, cannot be read as such a table, or lacks a requested
        column.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {str(p)!r} does not exist; check the path")
    if p.is_file() and p.name.lower().endswith(CSV_SUFFIXES):
        try:
            df = pd.read_csv(p)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise DataError(f"{str(p)!r} is not a readable CSV file: {str(exc).strip()}{_separator_hint(p)}") from None
        if df.shape[1] == 1 and any(sep in str(df.columns[0]) for sep in ";\t|"):
            raise DataError(f"{str(p)!r} was read as a single column {str(df.columns[0])[:60]!r}"
                            f"{_separator_hint(p) or '; mlimpute reads comma-separated CSV files'}")
        return df if columns is None else df[_known(columns, [str(c) for c in df.columns], p)]
    if p.is_dir():
        try:
            dataset = pads.dataset(p, format="parquet",
                                   partitioning=pads.HivePartitioning.discover(infer_dictionary=False))
        except Exception as exc:  # pyarrow raises several types for "not parquet"
            raise DataError(f"{str(p)!r} is not a readable Parquet dataset: {exc}") from None
        dataset = _consistent(dataset, p, columns)
        cols = None if columns is None else _known(columns, dataset.schema.names, p)
        return dataset.to_table(columns=cols).to_pandas()
    return read_parquet(p, columns)


def _separator_hint(p: Path) -> str:
    """What to do when a CSV file's first line is separated by something other than commas
    (European spreadsheets write ';'): "" if it is not."""
    try:
        with open(p, "rb") as fh:
            first = fh.readline(1 << 16)
        if p.name.lower().endswith(".gz"):
            import gzip
            with gzip.open(p, "rb") as fh:
                first = fh.readline(1 << 16)
        line = first.decode("utf-8", "replace")
    except OSError:
        return ""
    counts = {sep: line.count(sep) for sep in (";", "\t", "|")}
    sep, n = max(counts.items(), key=lambda kv: kv[1])
    if n <= line.count(","):
        return ""
    shown = {"\t": "tabs"}.get(sep, repr(sep))
    return (f"; its first line is separated by {shown}, and mlimpute reads comma-separated CSV files: "
            f"convert it, e.g. pandas.read_csv(path, sep={sep!r}).to_parquet('data.parquet') (with decimal=',' "
            "where decimals are written with commas), and point [data] path at the result")


def _kind(t: pa.DataType) -> str:
    """What a column holds, as far as reading it into one table goes (units, widths and
    encodings of the same kind unify)."""
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numbers"
    if (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t)
            or pa.types.is_large_binary(t)):
        return "text"
    if pa.types.is_boolean(t):
        return "booleans"
    if pa.types.is_temporal(t):
        return "dates or times"
    return str(t)


def _consistent(dataset: pads.Dataset, p: Path, columns: Sequence[str] | None) -> pads.Dataset:
    """The folder's dataset with one schema for all its files, after checking that they agree:
    pyarrow takes the first file's schema, so a column that is text in one file and numbers in
    another failed later with a bare ArrowInvalid, a 0/1 column beside 'boy'/'girl' became four
    categories, and a column missing from the first file was "not in the data". A column that
    is entirely missing in a file (a site that never recorded it, stored as nulls of any type)
    takes the other files' type."""
    files = dataset.files
    if not files:
        raise DataError(f"folder {str(p)!r} holds no Parquet files; point [data] path at the folder "
                        "(or file) that holds the data")
    schemas = []
    for f, frag in zip(files, dataset.get_fragments()):
        try:
            schemas.append((f, frag.physical_schema))
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{f!r} in the data folder {str(p)!r} is not a Parquet file ({exc}); move it out "
                            "of the folder") from None
    keys = set(dataset.schema.names) - {n for _, sch in schemas for n in sch.names}   # hive folder keys
    wanted = [c for c in (columns if columns is not None else dict.fromkeys(
        n for _, sch in schemas for n in sch.names)) if c not in keys]
    retype: dict[str, pa.DataType] = {}
    for c in wanted:
        where = [(f, sch.field(c).type) for f, sch in schemas if c in sch.names]
        if where and len(where) < len(schemas):
            lacking = [f for f, sch in schemas if c not in sch.names]
            raise DataError(
                f"column {c!r} is in {len(where)} of the {len(schemas)} files of {str(p)!r} but not in "
                f"{lacking[0]!r}{f' (and {len(lacking) - 1} more)' if len(lacking) > 1 else ''}; every "
                "file of a folder must have the same columns"
            )
        if len({_kind(t) for _, t in where}) == 1:
            continue
        given = [(f, t) for f, t in where if not _all_null(f, c, t)]
        kinds: dict[str, str] = {}
        for f, t in given:
            kinds.setdefault(_kind(t), f)
        if len(kinds) > 1:
            (k1, f1), (k2, f2) = list(kinds.items())[:2]
            raise DataError(
                f"column {c!r} holds {k1} in {f1!r} but {k2} in {f2!r}; every file of a folder must "
                "store a column the same way: fix the file that differs (a text code for a missing "
                "value, such as 'n/a', should be left empty)"
            )
        if given:
            retype[c] = given[0][1]

    def retyped(sch: pa.Schema) -> pa.Schema:
        for c, t in retype.items():
            if c in sch.names:
                sch = sch.set(sch.get_field_index(c), pa.field(c, t))
        return sch

    try:
        schema = pa.unify_schemas([retyped(dataset.schema), *(retyped(sch) for _, sch in schemas)],
                                  promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
        return dataset
    if schema.remove_metadata().equals(dataset.schema.remove_metadata()):
        return dataset   # the files agree as they are
    # a type changed (Int64 in the first file, decimals in another): the files are read anew with
    # the unified schema (which casts them), without the first file's pandas metadata, which would
    # turn the column back into its dtype and fail
    return pads.dataset(p, schema=schema.remove_metadata(), format="parquet",
                        partitioning=pads.HivePartitioning.discover(infer_dictionary=False))


def _all_null(path: str, column: str, t: pa.DataType) -> bool:
    """Whether ``column`` of the Parquet file is missing on every row (read only on a conflict)."""
    if pa.types.is_null(t):
        return True
    col = pq.read_table(path, columns=[column]).column(column)
    return col.null_count == len(col)


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
        raise DataError(f"{str(p)!r} is not a readable Parquet file or dataset: {exc}; a CSV file is read "
                        f"as CSV when its name ends in {', '.join(CSV_SUFFIXES)}") from exc
    if columns is not None:
        columns = _known(columns, schema_names, p)
    return pd.read_parquet(p, columns=columns)


def _known(columns: Sequence[str], names: Sequence[str], p: Path) -> list[str]:
    columns = list(dict.fromkeys(columns))
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise DataError(f"column(s) {unknown} are not in {str(p)!r}; it has {list(names)}. "
                        "Fix the column names in the model or the data")
    return columns


def _umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it, a race in threads)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc (macOS): the set-and-restore dance
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The file gets mode ``0666 & ~umask`` (0644 under umask 022), as ``open()`` would give it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; swap it into place if the block succeeds.

    An existing ``path`` is replaced only after the new content is complete. The directory gets
    mode ``0777 & ~umask`` (0755 under umask 022), as ``mkdir`` would give it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
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


def write_imputations(df: pd.DataFrame, path: str | os.PathLike,
                      by: str = "imputation") -> dict[int, Path]:
    """Write a long table as a folder of one Parquet file per imputation, atomically.

    File ``path/imputation-K.parquet`` holds imputation K's rows *with* the ``imputation``
    column (int64), K zero-padded to the width of the largest, so the folder reads back as one
    table with integer imputations in numeric order whatever the reader: ``pd.read_parquet``,
    ``pyarrow.dataset``, polars and duckdb (``read_parquet('path/*.parquet')``). Hive folders
    (``imputation=K/``) would not: pandas reads a hive key as a Categorical in text order (1,
    10, 2, …) however the files are typed. Returns K → file.
    """
    if by not in df.columns:
        raise DataError(f"cannot split by {by!r}: not a column of the table")
    keys = pd.to_numeric(df[by], errors="raise").astype("int64")
    width = len(str(int(keys.max()))) if len(keys) else 1
    names = {}
    with atomic_dir(path) as tmp:
        for key, part in df.assign(**{by: keys}).groupby(by, sort=True):
            name = f"{by}-{int(key):0{width}d}.parquet"
            part.to_parquet(tmp / name, index=False)  # open(): mode from the umask
            names[int(key)] = Path(path) / name
    return names


def dataset_files(path: str | os.PathLike) -> list[Path]:
    """The files a path's table is read from: the file itself, or a folder's files in sorted
    order without those pyarrow's dataset reader skips (a name in the path below the folder that
    starts with "." or "_": ``_SUCCESS`` markers, ``.crc`` files of Spark and Hadoop writers)."""
    p = Path(path)
    if p.is_file():
        return [p]
    return sorted(f for f in p.rglob("*") if f.is_file()
                  and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts))


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Content hash of a file (or of the data files under a folder, ``dataset_files``: a marker
    file written beside them changed the hash, and with it every cache key; helper 37).

    Raises
    ------
    DataError
        If the path does not exist (it hashed as an empty folder)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {str(p)!r} does not exist (it was moved or deleted); check the path")
    h = hashlib.sha256()
    files = dataset_files(p)
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()
