"""DataFrame + ImputationModel → numeric arrays sorted by cluster, and back.

Everything the sampler needs is built here once, after every check on the data has passed, so
bad input fails before any sampling starts. Rows are sorted into a *canonical* order (cluster
label, then a hash of the whole row), which makes the imputations independent of the order of
the input rows: a shuffled input gets the same imputations, in its own order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import DataError
from .spec import ImputationModel

__all__ = ["ModelData", "ColumnCodec", "build", "MAX_NOMINAL_CATEGORIES"]

MAX_NOMINAL_CATEGORIES = 50


@dataclass(frozen=True, eq=False)
class ColumnCodec:
    """How one imputed variable maps between its DataFrame column and the model's columns.

    ``cols`` are the indices of its columns in ``y1`` (level 1) or ``y2`` (level 2); a
    continuous variable has one. ``dtype`` is the dtype the output column gets back.
    """

    name: str
    kind: str
    level: int
    cols: tuple[int, ...]
    dtype: object


@dataclass(frozen=True, eq=False)
class ModelData:
    """The model's arrays, rows sorted by cluster (see module docstring for the order).

    Attributes
    ----------
    order : (N,) int
        ``order[s]`` is the input row position of sorted row ``s``.
    cluster : (N,) int
        Cluster index (0..J-1) of each sorted row; non-decreasing.
    starts, sizes : (J,) int
        First sorted row and number of rows of each cluster (for ``np.add.reduceat``).
    y1 : (N, p1) float
        Level-1 variables, NaN where missing.
    y2 : (J, p2) float
        Level-2 variables, one row per cluster, NaN where missing.
    x1 : (N, f1), x2 : (J, f2), z : (N, q) float
        Fixed-effect designs of the level-1 and level-2 variables and the random-effect design
        of the level-1 variables (first column of each is the intercept).
    """

    model: ImputationModel
    order: np.ndarray
    cluster: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray
    cluster_labels: np.ndarray
    y1: np.ndarray
    y2: np.ndarray
    y1_names: tuple[str, ...]
    y2_names: tuple[str, ...]
    x1: np.ndarray
    x1_names: tuple[str, ...]
    x2: np.ndarray
    x2_names: tuple[str, ...]
    z: np.ndarray
    z_names: tuple[str, ...]
    codecs: tuple[ColumnCodec, ...]

    @property
    def n_rows(self) -> int:
        return int(self.y1.shape[0])

    @property
    def n_clusters(self) -> int:
        return int(self.sizes.shape[0])

    def describe_cluster(self, j: int) -> str:
        return f"{self.model.cluster!r}={_py(self.cluster_labels[j])!r}"


# --------------------------------------------------------------------------------------------
# Checks and conversions of single columns
# --------------------------------------------------------------------------------------------
def _example_rows(mask: np.ndarray, index: pd.Index, k: int = 3) -> str:
    rows = index[np.flatnonzero(mask)[:k]].tolist()
    more = int(mask.sum()) - len(rows)
    return ", ".join(map(repr, rows)) + (f" and {more} more" if more > 0 else "")


def _continuous(df: pd.DataFrame, name: str) -> np.ndarray:
    s = df[name]
    if pd.api.types.is_bool_dtype(s.dtype):
        raise DataError(
            f"column {name!r} is declared continuous but is boolean; declare it 'binary'"
        )
    if not pd.api.types.is_numeric_dtype(s.dtype):
        conv = pd.to_numeric(s, errors="coerce")
        bad = conv.isna() & s.notna()
        example = s[bad].iloc[0] if bad.any() else None
        raise DataError(
            f"column {name!r} is declared continuous but holds non-numeric values "
            f"(e.g. {example!r} in row {s.index[bad.to_numpy()].tolist()[0]!r}, dtype {s.dtype}); convert it "
            "to numbers or declare it binary/ordinal/nominal"
        )
    v = s.to_numpy(dtype=float, na_value=np.nan)
    inf = np.isinf(v)
    if inf.any():
        raise DataError(
            f"column {name!r} holds infinite values (rows {_example_rows(inf, df.index)}); "
            "replace them with finite values or missing"
        )
    return v


def _require_complete(df: pd.DataFrame, name: str, what: str, fix: str) -> pd.Series:
    s = df[name]
    miss = s.isna().to_numpy()
    if miss.any():
        raise DataError(
            f"{what} {name!r} has {int(miss.sum())} missing value(s) (rows "
            f"{_example_rows(miss, df.index)}); {fix}"
        )
    return s


def _covariate_block(df: pd.DataFrame, name: str) -> tuple[np.ndarray, list[str]]:
    """Numeric covariate → one column; categorical → treatment dummies (first level dropped)."""
    s = _require_complete(df, name, "covariate", "covariates must be fully observed: impute it "
                          "by declaring it under variables=, or drop those rows")
    if pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=float)[:, None], [name]
    if pd.api.types.is_numeric_dtype(s.dtype):
        v = s.to_numpy(dtype=float)
        if not np.isfinite(v).all():
            bad = ~np.isfinite(v)
            raise DataError(
                f"covariate {name!r} holds infinite values (rows {_example_rows(bad, df.index)})"
            )
        return v[:, None], [name]
    if isinstance(s.dtype, pd.CategoricalDtype):
        levels = [c for c in s.cat.categories if (s == c).any()]
    else:
        levels = sorted(pd.unique(s.to_numpy(dtype=object)), key=lambda x: (str(type(x)), x))
    if len(levels) < 2:
        raise DataError(
            f"covariate {name!r} takes a single value ({levels[0]!r}) and is collinear with the "
            "intercept; drop it from covariates"
        )
    vals = s.to_numpy(dtype=object)
    cols = np.stack([(vals == lev).astype(float) for lev in levels[1:]], axis=1)
    return cols, [f"{name}[T.{lev}]" for lev in levels[1:]]


def _py(value: object) -> object:
    """numpy scalar → Python scalar, so messages read 3 and not np.int64(3)."""
    return value.item() if isinstance(value, np.generic) else value


def _check_full_rank(x: np.ndarray, names: list[str], what: str) -> None:
    if np.linalg.matrix_rank(x) == x.shape[1]:
        return
    for k in range(1, x.shape[1] + 1):
        if np.linalg.matrix_rank(x[:, :k]) < k:
            raise DataError(
                f"{what} column {names[k - 1]!r} is a linear combination of {names[: k - 1]} "
                "(perfect collinearity); drop it or one of those"
            )


def _cluster_codes(df: pd.DataFrame, cluster: str) -> tuple[np.ndarray, np.ndarray]:
    s = _require_complete(df, cluster, "cluster id column",
                          "every row needs a cluster: fill or drop those rows")
    try:
        codes, labels = pd.factorize(s, sort=True)
    except TypeError:  # mixed, unorderable labels: order clusters by a hash of their label
        codes, labels = pd.factorize(s, sort=False)
        h = pd.util.hash_array(np.asarray(labels, dtype=object))
        perm = np.argsort(h, kind="stable")
        rank = np.empty_like(perm)
        rank[perm] = np.arange(perm.size)
        codes, labels = rank[codes], np.asarray(labels, dtype=object)[perm]
    return codes.astype(np.int64), np.asarray(labels)


def _level2_reduce(
    v: np.ndarray, starts: np.ndarray, labels: np.ndarray, name: str, cluster: str, what: str
) -> np.ndarray:
    """One value per cluster from a sorted column; error if observed values differ in a cluster."""
    with np.errstate(invalid="ignore"):
        lo = np.fmin.reduceat(v, starts)
        hi = np.fmax.reduceat(v, starts)
    bad = np.flatnonzero(~(np.isnan(lo) | (lo == hi)))
    if bad.size:
        j = bad[0]
        stop = starts[j + 1] if j + 1 < starts.size else v.size
        vals = pd.unique(v[starts[j]:stop][~np.isnan(v[starts[j]:stop])])[:5]
        raise DataError(
            f"column {name!r} is declared level-2 ({what}) but varies within cluster "
            f"{cluster!r}={_py(labels[j])!r} (values {', '.join(f'{x:g}' for x in vals)}); declare it "
            f"level 1 or fix the data ({bad.size} cluster(s) affected)"
        )
    return lo


# --------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------
def build(df: pd.DataFrame, model: ImputationModel) -> ModelData:
    """Check ``df`` against ``model`` and build the sampler's arrays.

    Raises
    ------
    DataError
        Naming the column, the offending value or rows, and a fix, for every problem found
        before sampling: unknown columns, wrong types, missing cluster ids or covariates,
        level-2 variables that vary within a cluster, variables without observed values,
        fewer than two clusters, collinear covariates.
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(df).__name__}")
    if df.columns.duplicated().any():
        dup = df.columns[df.columns.duplicated()].tolist()
        raise DataError(f"data has duplicated column names {dup}; make column names unique")
    roles = {model.cluster: "cluster"}
    roles.update({n: "variables" for n in model.variables})
    roles.update({n: "covariates" for n in model.covariates})
    roles.update({n: "level2_covariates" for n in model.level2_covariates})
    unknown = [f"{c!r} (in {r})" for c, r in roles.items() if c not in df.columns]
    if unknown:
        raise DataError(
            f"column(s) {', '.join(unknown)} not found in the data; available columns: "
            f"{list(df.columns)}. Fix the spelling in the model or add the column"
        )
    if len(df) == 0:
        raise DataError("data has no rows")
    for name, var in model.variables.items():
        if var.kind != "continuous":
            raise DataError(
                f"variable {name!r} is declared {var.kind!r}; this version imputes continuous "
                "variables only (categorical variables arrive with the latent-normal extension)"
            )

    codes, labels = _cluster_codes(df, model.cluster)
    n_clusters = labels.shape[0]
    if n_clusters < 2:
        raise DataError(
            f"cluster column {model.cluster!r} has {n_clusters} distinct value(s); a two-level "
            "model needs at least 2 clusters (use a single-level imputation instead)"
        )

    # Canonical row order: cluster, then a content hash of the whole row (ties: identical rows).
    row_hash = pd.util.hash_pandas_object(df, index=False).to_numpy()
    order = np.lexsort((row_hash, codes))
    cluster = codes[order]
    starts = np.flatnonzero(np.r_[True, cluster[1:] != cluster[:-1]])
    sizes = np.diff(np.r_[starts, cluster.size])
    sdf = df.iloc[order]

    y1_names = model.level1_variables
    y2_names = model.level2_variables
    y1 = np.column_stack([_continuous(sdf, n) for n in y1_names]) if y1_names else np.empty((len(df), 0))
    y2_cols = []
    for n in y2_names:
        y2_cols.append(_level2_reduce(_continuous(sdf, n), starts, labels, n, model.cluster, "variable"))
    y2 = np.column_stack(y2_cols) if y2_cols else np.empty((n_clusters, 0))

    for names, arr in ((y1_names, y1), (y2_names, y2)):
        for k, n in enumerate(names):
            n_obs = int(np.isfinite(arr[:, k]).sum())
            if n_obs == 0:
                raise DataError(
                    f"variable {n!r} has no observed value; nothing to learn its distribution "
                    "from: drop it from variables"
                )

    # Fixed-effect designs: X1 = [1, covariates, level-2 covariates], X2 = [1, level-2 covariates].
    x1_blocks, x1_names = [np.ones((len(df), 1))], ["Intercept"]
    slope_cols: list[int] = []
    for c in model.covariates:
        block, names = _covariate_block(sdf, c)
        if c in model.random_slopes:
            slope_cols.extend(range(len(x1_names), len(x1_names) + len(names)))
        x1_blocks.append(block)
        x1_names.extend(names)
    x2_blocks, x2_names = [np.ones((n_clusters, 1))], ["Intercept"]
    for c in model.level2_covariates:
        block, names = _covariate_block(sdf, c)
        reduced = np.column_stack([
            _level2_reduce(block[:, k], starts, labels, c, model.cluster, "covariate")
            for k in range(block.shape[1])
        ])
        x1_blocks.append(block)
        x1_names.extend(names)
        x2_blocks.append(reduced)
        x2_names.extend(names)
    x1 = np.column_stack(x1_blocks)
    x2 = np.column_stack(x2_blocks)
    if y1_names:
        _check_full_rank(x1, x1_names, "level-1 design")
    if y2_names:
        _check_full_rank(x2, x2_names, "level-2 design")
        if n_clusters <= x2.shape[1]:
            raise DataError(
                f"{n_clusters} clusters cannot support {x2.shape[1]} level-2 fixed effects; "
                "use fewer level2_covariates"
            )
    z_idx = [0, *slope_cols]
    z = np.ascontiguousarray(x1[:, z_idx])
    z_names = tuple(x1_names[k] for k in z_idx)

    codecs = []
    for k, n in enumerate(y1_names):
        codecs.append(ColumnCodec(n, "continuous", 1, (k,), _float_dtype(df[n].dtype)))
    for k, n in enumerate(y2_names):
        codecs.append(ColumnCodec(n, "continuous", 2, (k,), _float_dtype(df[n].dtype)))

    return ModelData(
        model=model, order=order, cluster=cluster, starts=starts, sizes=sizes,
        cluster_labels=labels, y1=np.ascontiguousarray(y1), y2=np.ascontiguousarray(y2),
        y1_names=tuple(y1_names), y2_names=tuple(y2_names),
        x1=x1, x1_names=tuple(x1_names), x2=x2, x2_names=tuple(x2_names), z=z, z_names=z_names,
        codecs=tuple(codecs),
    )


def _float_dtype(dtype: object) -> object:
    """Imputed continuous values are not integers: keep float32/float64, else use float64."""
    if dtype == np.float32:
        return np.dtype(np.float32)
    return np.dtype(np.float64)
