"""Files the pipeline's tasks hand each other (no Prefect here).

Tasks pass paths and small records, never arrays or DataFrames (DESIGN §4): a chain task saves
its :class:`~mlimpute.impute.ChainResult` to an ``.npz`` file, an analysis task saves its fit
to a pickle, and the next task reads them by path. Every file is written to a temporary name
and renamed when whole (:func:`mlimpute.io.atomic_path`), so an interrupted run leaves either
the old file or the new one, never half of one.

The work files live under ``<output>/.cache/``; their names carry a digest of everything that
decides their content (input hash, configuration, package version), which is also the Prefect
cache key of the task that writes them.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from mlimpute.impute import ChainResult
from mlimpute.io import atomic_path

__all__ = ["digest", "save_chain", "load_chain", "save_pickle", "load_pickle", "cache_dir"]

CACHE = ".cache"


def cache_dir(output_dir: str | Path) -> Path:
    """Where the chain and fit files and Prefect's cache records of a run are kept."""
    return Path(output_dir) / CACHE


def digest(record: Any) -> str:
    """sha256 of a JSON-able record in canonical form (sorted keys, no whitespace)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


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


def save_pickle(path: str | Path, obj: Any) -> Path:
    """Pickle ``obj`` to ``path`` atomically (fit results, read back only by this pipeline)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return Path(path)


def load_pickle(path: str | Path) -> Any:
    with open(path, "rb") as fh:
        return pickle.load(fh)
