"""Classifications beyond one cluster column: nested, crossed and multiple-membership structures
as arrays (rows sorted), with the variables measured at each classification.

A *classification* (the notation of Browne, Goldstein & Rasbash 2001) assigns every unit (row)
to one unit of it (nested, crossed) or to several with weights (multiple membership). Unit i's
random effects are ``Σ_c Σ_{k ∈ c(i)} w_ik u^(c)_k``; variables measured at a classification
are constant within its units and have random effects at the classifications that nest it.

The checks here run before any sampling and name the column, the row and the fix.

References
----------
Browne, W. J., Goldstein, H., & Rasbash, J. (2001). Multiple membership multiple classification
(MMMC) models. Statistical Modelling, 1(2), 103-124.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .analysis._membership import WEIGHT_TOL, _ids
from .errors import DataError
from .spec import Classification, ImputationModel

__all__ = ["ClassData", "VarianceData", "plain_values", "unit_codes", "membership_arrays", "reduce_to_units",
           "nesting_parents", "canonical_order", "variance_data"]


@dataclass(frozen=True, eq=False)
class ClassData:
    """One classification's arrays (rows in the model's sorted order).

    ``unit`` (N,): the unit of each row (single membership), or None; ``ids``/``weights``
    (N, m): a multiple membership's units and weights (id −1 where absent, weight 0);
    ``labels``: the unit labels (tuples for nested ones). ``y``/``miss`` (K, p): the
    (latent) columns of the variables measured at it, one row per unit, and the cells to impute;
    ``x`` (K, f): their fixed-effect design (intercept, then the level-2 covariates constant
    within its units); ``codecs``: their codecs (``level`` = this classification's name).
    ``parent``: for each classification it nests (by index), the unit of this classification
    that contains each of that classification's units.
    """

    spec: Classification
    unit: np.ndarray | None
    ids: np.ndarray | None
    weights: np.ndarray | None
    labels: list
    y: np.ndarray
    miss: np.ndarray
    x: np.ndarray
    x_names: tuple[str, ...]
    y_names: tuple[str, ...]
    codecs: tuple
    parent: dict

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def n_units(self) -> int:
        return len(self.labels)

    @property
    def membership(self) -> bool:
        return self.unit is None

    def describe_unit(self, k: int) -> str:
        return f"{self.name!r}={_py(self.labels[k])!r}"


def _py(value: object) -> object:
    if isinstance(value, tuple):
        return tuple(_py(v) for v in value)
    return value.item() if isinstance(value, np.generic) else value


def _rows(mask: np.ndarray, index: pd.Index, k: int = 3) -> str:
    rows = index[np.flatnonzero(mask)[:k]].tolist()
    more = int(mask.sum()) - len(rows)
    return ", ".join(map(repr, rows)) + (f" and {more} more" if more > 0 else "")


def plain_values(s: pd.Series) -> pd.Series:
    """A categorical column as the values it holds (numbers as numbers), so that units are
    ordered and rows hashed by value, not by the dtype's category order: ``astype("category")``
    of the same ids or values gives the same imputations. Other columns are returned as they are."""
    if not isinstance(s.dtype, pd.CategoricalDtype):
        return s
    codes = s.cat.codes.to_numpy()
    cats = s.cat.categories
    numeric = pd.api.types.is_numeric_dtype(cats.dtype) or pd.api.types.is_bool_dtype(cats.dtype)
    if (codes >= 0).all():
        return pd.Series(np.asarray(cats)[codes], index=s.index, name=s.name)
    vals = np.asarray(cats, dtype=float if numeric else object)
    out = vals[np.maximum(codes, 0)]
    out[codes < 0] = np.nan if numeric else None
    return pd.Series(out, index=s.index, name=s.name)


def unit_codes(df: pd.DataFrame, columns: tuple[str, ...], what: str) -> tuple[np.ndarray, list]:
    """Unit index of each row (input order) for the combinations of ``columns``, sorted."""
    for c in columns:
        miss = df[c].isna().to_numpy()
        if miss.any():
            raise DataError(
                f"{what} column {c!r} has {int(miss.sum())} missing value(s) (rows "
                f"{_rows(miss, df.index)}); every row needs its unit: fill or drop those rows"
            )
    frame = pd.DataFrame({c: plain_values(df[c]) for c in columns}, index=df.index)
    codes = frame.groupby(list(columns), sort=True, observed=True).ngroup().to_numpy(np.int64)
    first = np.unique(codes, return_index=True)[1]
    labels = [tuple(frame.iloc[i]) if len(columns) > 1 else frame.iloc[i, 0] for i in first]
    if len(labels) < 2:
        raise DataError(
            f"{what} {'/'.join(columns)!r} has {len(labels)} unit(s); a random effect needs at "
            "least two: drop the classification"
        )
    return codes, labels


def membership_arrays(df: pd.DataFrame, ids: tuple[str, ...], weights: tuple[str, ...]
                      ) -> tuple[np.ndarray, np.ndarray, list]:
    """(N, m) unit indices (−1 where absent) and weights of a multiple membership, input order,
    after checking the ids and weights row by row."""
    n, m = len(df), len(ids)
    present = np.column_stack([df[c].notna().to_numpy() for c in ids])
    none = ~present.any(axis=1)
    if none.any():
        raise DataError(
            f"rows {_rows(none, df.index)} have no membership id in {list(ids)}; every row needs at "
            "least one unit: fill one or drop those rows"
        )
    _ids(df, ids, f"the multiple membership {list(ids)}")   # ids of different types refused, as mm() does
    w = np.zeros((n, m))
    for k, (c, wc) in enumerate(zip(ids, weights)):
        s = df[wc]
        if not (pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)):
            raise DataError(f"weight column {wc!r} is not numeric (dtype {s.dtype}); give weights as numbers")
        v = s.to_numpy(dtype=float, na_value=np.nan)
        bad = present[:, k] & ~np.isfinite(v)
        if bad.any():
            what = "infinite" if np.isinf(v[bad]).any() else "missing"
            raise DataError(
                f"weight column {wc!r} is {what} where its id {c!r} is given (rows "
                f"{_rows(bad, df.index)}); give the weight of every membership as a finite number"
            )
        neg = np.isfinite(v) & (v < 0)
        if neg.any():
            i = np.flatnonzero(neg)[0]
            raise DataError(
                f"weight column {wc!r} has a negative weight ({v[i]:g} in row {df.index[i]!r}); "
                "membership weights are shares of a unit's time in each cluster, ≥ 0"
            )
        stray = ~present[:, k] & np.isfinite(v) & (v != 0)
        if stray.any():
            i = np.flatnonzero(stray)[0]
            raise DataError(
                f"weight column {wc!r} gives weight {v[i]:g} in row {df.index[i]!r} where its id "
                f"{c!r} is missing; set the weight to 0 or missing, or give the id"
            )
        w[:, k] = np.where(present[:, k], v, 0.0)
    total = w.sum(axis=1)
    off = np.abs(total - 1.0) > WEIGHT_TOL
    if off.any():
        i = np.flatnonzero(off)[0]
        raise DataError(
            f"the membership weights {list(weights)} of row {df.index[i]!r} sum to {total[i]:.12g}, "
            f"not 1 (tolerance {WEIGHT_TOL:g}; {int(off.sum())} row(s) affected); rescale each row's "
            "weights to sum to 1"
        )
    w /= total[:, None]   # exactly 1 (weights stored as float32 or rounded decimals are off by ~1e-7)
    values = pd.concat([df[c][present[:, k]] for k, c in enumerate(ids)], ignore_index=True)
    try:
        labels = sorted(pd.unique(values))
    except TypeError:
        labels = sorted(pd.unique(values), key=lambda v: (type(v).__name__, str(v)))
    lookup = {lab: k for k, lab in enumerate(labels)}
    out = np.full((n, m), -1, np.int64)
    for k, c in enumerate(ids):
        col = df[c].to_numpy(dtype=object)
        rows = np.flatnonzero(present[:, k])
        out[rows, k] = [lookup[v] for v in col[rows]]
    if len(labels) < 2:
        raise DataError(f"the membership ids {list(ids)} name {len(labels)} unit(s); a random effect needs at least two")
    return out, w, labels


def canonical_order(df: pd.DataFrame, key: np.ndarray, model=None) -> np.ndarray:
    """Rows sorted by ``key`` (an integer unit index), then by ``row_hash``, so that the
    imputations do not depend on the order of the input rows.

    Rows that tie (the same values in every column the model reads: two pupils of a school
    with the same sex and the same holes) are then ordered by the other columns, one at a time
    in name order (each by a hash of its values), so that each such row keeps its own
    imputations when the input is shuffled — joined back by a pupil id they would otherwise
    trade them. A constant column, reordered columns and dtype flavours leave that order as it
    is; only rows identical in every column still tie, and those cannot be told apart."""
    h = row_hash(df, model)
    order = np.lexsort((h, key))
    ks, hs = key[order], h[order]
    same = (ks[1:] == ks[:-1]) & (hs[1:] == hs[:-1])
    if model is None or not same.any():
        return order
    tied = np.zeros(order.size, bool)
    tied[1:] |= same
    tied[:-1] |= same
    rows = order[tied]                      # runs of tied rows, the runs in canonical order
    read = model_columns(model, df)
    others = sorted((c for c in df.columns if str(c) not in read), key=str, reverse=True)   # names of any type
    sub = df.iloc[rows]
    keys = [_hashed(sub[c]) for c in others]
    order[tied] = rows[np.lexsort((*keys, h[rows], key[rows]))]
    return order


_MISSING_TEXT = "\x01<NA>"   # (not a bare NUL: numpy's str conversion strips it, and '' hashed alike)


def _normalised(s: pd.Series) -> np.ndarray:
    """A column's values for hashing: numbers and booleans as float64 (a bool column with holes
    comes back from Parquet as object True/False/None), everything else as text."""
    s = plain_values(s)
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        return s.to_numpy(dtype=float, na_value=np.nan)
    missing = s.isna().to_numpy()
    if s.dtype == object and not missing.all() and all(isinstance(v, (bool, np.bool_)) for v in s[~missing]):
        return np.where(missing, np.nan, s.to_numpy(dtype=object)).astype(float)
    out = s.astype(str).to_numpy(dtype=object)
    out[missing] = _MISSING_TEXT
    return out


def _hashed(s: pd.Series) -> np.ndarray:
    return pd.util.hash_array(_normalised(s))


def row_hash(df: pd.DataFrame, model=None) -> np.ndarray:
    """A hash of each row's values in the columns the model reads (all columns without a
    model), in name order, numbers as float64 and everything else as text: the order of the
    columns, columns the model does not read and dtype flavours (Float64, Int64, string,
    category) leave the canonical order, and so the imputations, unchanged."""
    cols = sorted(map(str, df.columns)) if model is None else sorted(model_columns(model, df))
    frame = {c: _normalised(df[c]) for c in cols}
    return pd.util.hash_pandas_object(pd.DataFrame(frame), index=False).to_numpy()


def model_columns(model, df: pd.DataFrame) -> set[str]:
    """The data columns ``model`` reads: structure, variables, covariates, and those its
    substantive and variance formulas name."""
    from .analysis._design import stateful_arguments

    cols = {*model.cluster_columns, *model.variables, *model.covariates, *model.level2_covariates}
    texts = [v.variance for v in model.variables.values() if v.variance is not None]
    if model.substantive is not None:
        texts.append(model.substantive)
    for text in texts:
        cols |= stateful_arguments(text, df.columns)
    return {c for c in cols if c in df.columns}


def reduce_to_units(v: np.ndarray, unit: np.ndarray, n_units: int, name: str, where: str,
                    labels: list, show=lambda x: f"{x:g}") -> np.ndarray:
    """One value per unit from a row column; a DataError if observed values differ in a unit."""
    order = np.argsort(unit, kind="stable")
    u = unit[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    with np.errstate(invalid="ignore"):
        lo = np.fmin.reduceat(v[order], starts)
        hi = np.fmax.reduceat(v[order], starts)
    out = np.full(n_units, np.nan)
    out[u[starts]] = lo
    bad = np.flatnonzero(~(np.isnan(lo) | (lo == hi)))
    if bad.size:
        k = u[starts[bad[0]]]
        vals = np.unique(v[unit == k][~np.isnan(v[unit == k])])[:5]
        raise DataError(
            f"column {name!r} is declared at {where!r} but varies within its unit "
            f"{_py(labels[k])!r} (values {', '.join(show(x) for x in vals)}); declare it at a lower "
            f"level or fix the data ({bad.size} unit(s) affected)"
        )
    return out


def nesting_parents(inner: np.ndarray, outer: np.ndarray, n_inner: int) -> np.ndarray:
    """For nested classifications: the outer unit of each inner unit (rows give both)."""
    parent = np.full(n_inner, -1, np.int64)
    parent[inner] = outer
    return parent


def model_classifications(model: ImputationModel) -> tuple[Classification, ...]:
    """The classifications in the sampler's order: innermost nested first (its units are the
    clusters of the rows), then outward; crossed and membership ones as given."""
    cls = model.classifications
    if all(c.kind == "nested" for c in cls):
        return tuple(reversed(cls))
    return cls


@dataclass(frozen=True, eq=False)
class VarianceData:
    """A variance function of a continuous level-1 variable (rows sorted).

    ``col``: its column in y1; ``w`` (N, g): the log-variance design (complete covariates,
    treatment-coded, no intercept); ``re``: the index (sampler order) of the classification
    whose random effect shifts the log-variance, or None.
    """

    name: str
    col: int
    w: np.ndarray
    w_names: tuple[str, ...]
    re: int | None


def variance_data(sdf, model: ImputationModel, name: str, col: int, specs) -> VarianceData:
    """Check and build the variance function of variable ``name`` (``specs``: the
    classifications in sampler order)."""
    from formulaic import model_matrix
    from formulaic.errors import FormulaicError

    from .analysis.formula import parse_formula
    from .errors import SpecError

    text = model.variables[name].variance
    where = f"variance={text!r} of {name!r}"
    parsed = parse_formula(f"__lhs__ {text.strip()}")
    re = None
    names = [c.name for c in specs]
    for term in parsed.random:   # one random intercept of a classification (ImputationModel checks it)
        group = term.group_label
        re = names.index(specs[0].name if model.two_level and group == model.cluster else group)
    from formulaic import Formula

    try:
        cols = sorted({str(v) for v in Formula(parsed.fixed).required_variables})
    except FormulaicError as exc:
        raise SpecError(f"cannot read {where}: {exc}") from None
    frame = {}
    for c in cols:
        if c not in sdf._df.columns:
            call = f"{c}(" in parsed.fixed.replace(" ", "")
            raise DataError(f"column {c!r} of {where} is not in the data; fix the formula or the data"
                            + (f" ({c}() is not a function the formula knows: write np.{c}(…) for numpy's)"
                               if call else ""))
        s = sdf[c].reset_index(drop=True)
        if s.isna().any():
            raise DataError(
                f"column {c!r} of {where} has {int(s.isna().sum())} missing value(s); a variance "
                "function needs complete covariates: impute them first or drop those rows"
            )
        frame[c] = s
    n = len(sdf.index)
    from .analysis._design import formula_frame
    transform = (f"a transform in {where} gives missing or infinite values (e.g. np.log of values <= 0); "
                 "fix the formula or the data")
    try:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            mm = model_matrix(parsed.fixed, formula_frame(pd.DataFrame(frame, index=range(n))) if frame
                              else pd.DataFrame(index=range(n)), na_action="raise")
    except FormulaicError as exc:
        raise SpecError(f"cannot read {where}: {exc}") from None
    except ValueError as exc:   # na_action="raise": a transform gave missing values
        raise DataError(f"{transform} ({exc})") from None
    names = [c for c in mm.columns if c != "Intercept"]
    w = np.ascontiguousarray(np.asarray(mm[names], dtype=float)) if names else np.zeros((n, 0))
    if not np.isfinite(w).all():
        k = int(np.flatnonzero(~np.isfinite(w).all(axis=0))[0])
        raise DataError(f"{transform} (column {names[k]!r} has {int((~np.isfinite(w[:, k])).sum())} infinite value(s))")
    if not names and re is None:
        raise SpecError(f"{where} has no term; give covariates (~ sex) or a random effect (~ (1 | school))")
    for k, c in enumerate(names):
        if np.ptp(w[:, k]) == 0:
            raise DataError(f"column {c!r} of {where} is constant; it would duplicate the baseline variance: drop it")
    if names and np.linalg.matrix_rank(np.column_stack([np.ones(n), w])) < len(names) + 1:
        raise DataError(f"the columns of {where} are linearly dependent (with the intercept); drop one")
    return VarianceData(name=name, col=col, w=w, w_names=tuple(names), re=re)
