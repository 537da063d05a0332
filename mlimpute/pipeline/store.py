"""Files the pipeline's tasks hand each other, and the input read once per process (no Prefect).

Tasks pass paths and small records, never arrays or DataFrames: a chain task saves its
:class:`~mlimpute.impute.ChainResult` to an ``.npz`` file, an analysis task saves its fit to a
pickle, and the next task reads them by path. Every file is written to a temporary name and
renamed when whole (:func:`mlimpute.io.atomic_path`), so an interrupted run leaves either the
old file or the new one, never half of one.

The work files live under ``<output>/.cache/``; their names carry a digest of everything that
decides their content (input hash, configuration, package version), which is also the Prefect
cache key of the task that writes them. :func:`prune_cache` removes the ones a run no longer
uses.

The input table and its model arrays are read and built once per process
(:func:`read_input`, :func:`model_data`) and shared by the tasks that run there: the flow's own
steps, the chains of a thread-pool runner, or every task a Dask worker runs.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlimpute.config import ModelConfig, PipelineConfig
from mlimpute.design import ModelData
from mlimpute.impute import ChainResult, prepare
from mlimpute.errors import DataError, SpecError
from mlimpute.io import atomic_path, dataset_files, file_sha256, read_table

__all__ = ["digest", "save_chain", "load_chain", "cache_entry", "save_pickle", "load_pickle", "cache_dir",
           "read_input", "model_data", "prune_cache", "stage_dir", "publish", "OUTPUTS"]

CACHE = ".cache"


def cache_dir(output_dir: str | Path) -> Path:
    """Where the chain and fit files and Prefect's cache records of a run are kept."""
    return Path(output_dir) / CACHE


# what a run shows in its output folder besides the manifest: written into the staging folder
# (``stage_dir``) and moved into place together at its end (``publish``)
OUTPUTS = ("imputations", "diagnostics.csv", "fits", "pooled", "report.html")


def stage_dir(output_dir: str | Path) -> Path:
    """An empty ``.cache/staging`` (what an interrupted run left there, and in ``replaced``,
    removed): the run writes its outputs there, on the output folder's file system, so that
    moving them is a rename."""
    stage = cache_dir(output_dir) / "staging"
    shutil.rmtree(stage, ignore_errors=True)
    shutil.rmtree(cache_dir(output_dir) / "replaced", ignore_errors=True)   # a run killed while publishing
    stage.mkdir(parents=True)
    return stage


def publish(stage: Path, output_dir: str | Path, manifest: str) -> None:
    """Move the run's outputs from ``stage`` into the output folder, in place of the last run's.

    Until here the folder holds the last complete run as it was (its manifest included): a run
    that fails or is stopped before changes nothing a reader sees. The manifest is moved aside first, the
    last run's outputs are moved aside (an output this run did not make, such as the tables of an
    analysis no longer configured, goes with them), this run's renamed into place, and its
    manifest (staged with them) last: a folder with a manifest holds every file it lists.
    Renames on one file system: milliseconds for any size. A run killed inside them leaves a
    folder without a manifest (and ``.cache/replaced``, ``.cache/staging``, cleared by the next
    run, which finds its chains and fits in the cache).

    A rename that fails (an output the run may not move: permissions, an immutable folder)
    undoes the ones before it, in reverse, and raises an OSError saying so: the folder is the
    last complete run's again, manifest included (helper 37: it was left half old, half new)."""
    out = Path(output_dir)
    aside = cache_dir(out) / "replaced"
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir()
    done: list[tuple[Path, Path]] = []

    def move(src: Path, dst: Path) -> None:
        if src.exists():
            os.replace(src, dst)
            done.append((src, dst))

    try:
        move(out / manifest, aside / manifest)
        for name in OUTPUTS:
            move(out / name, aside / name)
            move(stage / name, out / name)
        move(stage / manifest, out / manifest)
    except OSError as exc:
        left = []
        for src, dst in reversed(done):
            try:
                os.replace(dst, src)
            except OSError:
                left.append(str(src))
        state = ("the output folder is as it was before this run" if not left else
                 f"these could not be moved back, and the folder has no complete run: {left}")
        raise OSError(f"could not move this run's outputs into {str(out)!r} ({exc}); {state}. Make "
                      f"every output in the folder movable by this user (write permission on the folder and its "
                      f"subfolders) and run again: finished chains and fits are in the cache") from exc
    shutil.rmtree(aside, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)


def digest(record: Any) -> str:
    """sha256 of a JSON-able record in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


# ------------------------------------------------------------------------------------------
# The input, once per process
# ------------------------------------------------------------------------------------------
def _stamp(path: Path) -> tuple[int, int]:
    """Size and modification time of a file, or of the newest file of a dataset folder."""
    stats = [f.stat() for f in dataset_files(path)]
    return sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0)


@functools.lru_cache(maxsize=2)
def _read(path: str, stamp: tuple[int, int]) -> pd.DataFrame:
    return read_table(path)


def read_input(path: str | os.PathLike) -> pd.DataFrame:
    """The input table, read once per process while the file is unchanged (shared: read-only)."""
    p = Path(path)
    if not p.exists():
        return read_table(p)  # raises the DataError that names the path
    df = _read(str(p), _stamp(p))
    if not len(df):
        raise DataError(f"[data] path = {str(path)!r} has no rows; check the file (or the query that wrote it)")
    return df


@functools.lru_cache(maxsize=2)
def _model_data(path: str, stamp: tuple[int, int], model_json: str) -> ModelData:
    return prepare(_read(path, stamp), ModelConfig.model_validate_json(model_json).to_model())


def model_data(cfg: PipelineConfig) -> ModelData:
    """The sampler's arrays for the configuration's input and model, built once per process."""
    p = Path(cfg.data.path)
    return _model_data(str(p), _stamp(p), cfg.model.model_dump_json())


# ------------------------------------------------------------------------------------------
# Work files
# ------------------------------------------------------------------------------------------
def save_chain(path: str | Path, result: ChainResult) -> Path:
    """Write one chain's imputations and trace to ``path`` (an ``.npz`` file), atomically."""
    names = list(result.imputed)
    meta = {"chain": result.chain, "seconds": result.seconds, "variables": names}
    arrays = {f"imputed_{i}": result.imputed[n] for i, n in enumerate(names)}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # a file object, so numpy does not append ".npz" to the temporary name
        np.savez(fh, trace=result.trace, meta=np.array(json.dumps(meta)), **arrays)
    return Path(path)


def load_chain(path: str | Path) -> ChainResult:
    """Read a file written by :func:`save_chain`."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        imputed = {n: z[f"imputed_{i}"] for i, n in enumerate(meta["variables"])}
        return ChainResult(chain=int(meta["chain"]), imputed=imputed, trace=z["trace"],
                           seconds=float(meta["seconds"]))


def cache_entry(path: str | Path) -> str:
    """"absent", "usable", or "damaged" (then deleted) for a work file of the cache: a chain file
    whose archive does not open (truncated by a copy or a full disk) or a fit that does not
    unpickle. A damaged file made every later run fail ("File is not a zip file", naming no file;
    helper 37); deleted, its job runs again."""
    p = Path(path)
    if not p.exists():
        return "absent"
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:   # the archive's directory, then its small members
                json.loads(str(z["meta"]))
                z["trace"]
        else:
            load_pickle(p)
    except Exception:  # noqa: BLE001 - whatever a damaged file raises, the remedy is to redo it
        p.unlink(missing_ok=True)
        return "damaged"
    return "usable"


def save_pickle(path: str | Path, obj: Any) -> Path:
    """Pickle ``obj`` to ``path`` atomically (fit results, read back only by this pipeline)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return Path(path)


def load_pickle(path: str | Path) -> Any:
    with open(path, "rb") as fh:
        return pickle.load(fh)


def prune_cache(output_dir: str | Path, keep: Iterable[str | Path]) -> list[Path]:
    """Delete the work files under ``.cache/chains`` and ``.cache/fits`` that are not in ``keep``.

    Their names carry the digest of input, configuration and version, so a file that the
    current run does not use was made for another input, configuration or version: it would
    never be read again. Prefect's cache records (``.cache/prefect``) of deleted files go too:
    a record is kept only if it names a kept key. Returns what was deleted.
    """
    root = cache_dir(output_dir)
    kept = {Path(p).resolve() for p in keep}
    keys = {Path(p).stem.rsplit("-", 1)[-1] for p in kept}
    gone = []
    for sub in ("chains", "fits"):
        for f in sorted((root / sub).rglob("*")) if (root / sub).is_dir() else []:
            if f.is_file() and f.resolve() not in kept:
                f.unlink()
                gone.append(f)
    records = root / "prefect"
    if records.is_dir():
        for f in sorted(records.iterdir()):
            if f.is_file() and not any(f.name.startswith(k) for k in keys):
                f.unlink()
                gone.append(f)
    for d in sorted(root.rglob("*"), reverse=True):  # folders left empty
        if d.is_dir() and not any(d.iterdir()):
            shutil.rmtree(d, ignore_errors=True)
    return gone


def same_input(cfg: PipelineConfig, sha256: str | None) -> None:
    """Raise unless the input file still has the content the run started with (its sha256 at
    ingest): a file replaced during a run was read by later tasks, whose chains were then cached
    under the old file's hash, and every later run on the old file failed (helper 31). Called
    before a task saves what it read."""
    if sha256 is None:
        return
    if not Path(cfg.data.path).exists():
        raise DataError(f"the input {str(cfg.data.path)!r} was moved or deleted during the run; nothing read from "
                        "it since was kept: put it back and run again")
    now = file_sha256(cfg.data.path)
    if now != sha256:
        raise DataError(
            f"the input {str(cfg.data.path)!r} changed during the run (sha256 {sha256[:12]}… at the start, "
            f"{now[:12]}… now); nothing read from it since was kept: run again once it is settled"
        )


LOCK = ".lock"


def lock_output(out: Path):
    """An exclusive lock on the output folder, held while the returned file is open: a second
    run into the folder is refused instead of pruning the first one's cache and leaving a
    manifest beside another run's imputations (helper 31). The lock is the kernel's
    (``flock``): it goes with the process, so a killed run leaves none behind."""
    import fcntl

    path = cache_dir(out) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return fh   # a file system without locks (NFS without lockd: ENOLCK): run unguarded
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise SpecError(
            f"[output] dir = {str(out)!r} is in use by another run ({holder}); wait for it to finish, or "
            "give this run another output folder"
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh
