"""Turn what the user hands to :func:`pool` into arrays: estimates ``(m, p)`` and their
covariance matrices ``(m, p, p)``, aligned by term name.

Three input forms are accepted (pooling consumes estimates and their covariances, not model objects):

* a sequence of fit results (anything with ``params`` and ``cov_params()``, such as the
  results of :func:`mlimpute.lmm` / :func:`mlimpute.glmm`);
* a sequence of ``(estimates, covariance)`` pairs: a Series (or 1-D array) and a DataFrame /
  2-D array (full covariance) or a Series / 1-D array (variances only);
* a long DataFrame with columns ``imputation, term, estimate`` and ``std_error`` (or
  ``variance``), optionally ``df_resid``: variances only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, SpecError

__all__ = ["Estimates", "extract", "is_fit"]


@dataclass(frozen=True)
class Estimates:
    """Per-imputation estimates aligned by term (the narrow pooling contract)."""

    terms: tuple[str, ...]
    q: np.ndarray  # (m, p) estimates
    u: np.ndarray  # (m, p, p) covariance matrices (only the diagonal is known if not full_cov)
    full_cov: bool
    imputations: tuple[Any, ...]  # labels of the m analyses, for messages and tables
    df_resid: np.ndarray | None  # (m,) complete-data residual df of each analysis, if known
    fits: tuple[Any, ...] | None  # the fit objects, when fits were given

    @property
    def m(self) -> int:
        return self.q.shape[0]

    def per_imputation(self) -> pd.DataFrame:
        """Long table: imputation, term, estimate, std_error."""
        m, p = self.q.shape
        se = np.sqrt(np.diagonal(self.u, axis1=1, axis2=2))
        return pd.DataFrame(
            {
                "imputation": np.repeat(np.asarray(self.imputations, dtype=object), p),
                "term": np.tile(np.asarray(self.terms, dtype=object), m),
                "estimate": self.q.ravel(),
                "std_error": se.ravel(),
            }
        )


def is_fit(obj: Any) -> bool:
    """Whether ``obj`` looks like a fit result of the analysis contract."""
    return hasattr(obj, "params") and callable(getattr(obj, "cov_params", None))


def extract(source: Any) -> Estimates:
    """Dispatch on the input form (see the module docstring)."""
    if isinstance(source, pd.DataFrame):
        return _from_table(source)
    if isinstance(source, (str, bytes)) or not isinstance(source, Sequence):
        raise SpecError(
            f"pool() got a {type(source).__name__}; pass a list of fit results, a list of "
            "(estimates, covariance) pairs, or a long DataFrame with columns imputation, term, "
            "estimate, std_error"
        )
    items = list(source)
    if len(items) < 2:
        raise SpecError(
            f"pooling needs at least m = 2 analyses, got {len(items)}; fit the model on every "
            "imputed dataset and pass all the results"
        )
    if all(is_fit(f) for f in items):
        pairs = [(_as_series(f.params, i), f.cov_params()) for i, f in enumerate(items, 1)]
        df_resid = _df_resid(items)
        fits: tuple[Any, ...] | None = tuple(items)
    elif all(isinstance(f, tuple) and len(f) == 2 for f in items):
        pairs = [(_as_series(e, i), c) for i, (e, c) in enumerate(items, 1)]
        df_resid, fits = None, None
    else:
        kinds = sorted({type(f).__name__ for f in items})
        raise SpecError(
            f"pool() got a list of {', '.join(kinds)}; every element must be a fit result "
            "(with .params and .cov_params()) or an (estimates, covariance) pair"
        )
    labels = tuple(range(1, len(items) + 1))
    terms = _common_terms([p[0].index for p in pairs], labels)
    q = np.stack([p[0].reindex(terms).to_numpy(dtype=float) for p in pairs])
    covs = [_as_cov(c, s.index, terms, k) for (s, c), k in zip(pairs, labels, strict=True)]
    full_cov = all(full for _, full in covs)
    u = np.stack([c for c, _ in covs])
    if not full_cov:  # a mix of full and diagonal input: only the diagonal is trusted
        u = np.stack([np.diag(np.diag(c)) for c in u])
    est = Estimates(terms, q, u, full_cov, labels, df_resid, fits)
    _check_finite(est)
    return est


def _as_series(est: Any, k: Any) -> pd.Series:
    if isinstance(est, pd.Series):
        s = pd.Series(est.to_numpy(dtype=float), index=_str_index(est.index))
    else:
        arr = np.asarray(est, dtype=float)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim != 1:
            raise DataError(
                f"estimates of imputation {k} have shape {arr.shape}; pass a 1-D vector or a "
                "pandas Series indexed by term"
            )
        s = pd.Series(arr, index=[f"Parameter.{j}" for j in range(1, arr.size + 1)])
    if s.index.has_duplicates:
        dup = sorted(set(s.index[s.index.duplicated()]))
        raise DataError(f"imputation {k} lists term(s) {dup} more than once; terms must be unique")
    return s


def _as_cov(
    cov: Any, own_terms: pd.Index, terms: tuple[str, ...], k: Any
) -> tuple[np.ndarray, bool]:
    """Covariance of imputation ``k`` reordered to ``terms``; flag says whether it is full."""
    p = len(own_terms)
    if isinstance(cov, pd.DataFrame):
        rows = _str_index(cov.index).get_indexer(terms)
        cols = _str_index(cov.columns).get_indexer(terms)
        missing = [t for t, i, j in zip(terms, rows, cols, strict=True) if i < 0 or j < 0]
        if missing:
            raise DataError(
                f"the covariance matrix of imputation {k} has no row/column for term(s) "
                f"{missing}; it must be labelled by the same terms as the estimates"
            )
        return cov.to_numpy(dtype=float)[np.ix_(rows, cols)], True
    if isinstance(cov, pd.Series):
        pos = _str_index(cov.index).get_indexer(terms)
        var = np.where(pos >= 0, cov.to_numpy(dtype=float)[pos], np.nan)
        return np.diag(var), False
    arr = np.asarray(cov, dtype=float)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    order = [own_terms.get_loc(t) for t in terms]
    if arr.ndim == 1 and arr.size == p:
        return np.diag(arr[order]), False
    if arr.ndim == 2 and arr.shape == (p, p):
        return arr[np.ix_(order, order)], True
    raise DataError(
        f"the covariance of imputation {k} has shape {arr.shape} for {p} estimates; pass a "
        f"({p}, {p}) matrix or {p} variances"
    )


def _str_index(idx: pd.Index) -> pd.Index:
    """Labels as str (a cheap no-op when they already are)."""
    return idx if all(isinstance(x, str) for x in idx) else idx.map(str)


def _common_terms(indexes: list[pd.Index], labels: tuple[Any, ...]) -> tuple[str, ...]:
    """The terms (in the first analysis' order); every analysis must have all of them."""
    union: list[str] = []
    for idx in indexes:
        union.extend(t for t in idx if t not in union)
    problems = []
    for t in union:
        absent = [lab for lab, idx in zip(labels, indexes, strict=True) if t not in idx]
        if absent:
            problems.append(f"'{t}' is missing in imputation(s) {', '.join(map(str, absent))}")
    if problems:
        raise DataError(
            "the analyses do not estimate the same terms: "
            + "; ".join(problems)
            + ". A factor level absent from some completed datasets has no rows to estimate its "
            "term there (with the level kept as a category its column is all zero, which the fit "
            "refuses); merge the rare level with another before fitting"
        )
    return tuple(union)


def _df_resid(fits: list[Any]) -> np.ndarray | None:
    vals = [getattr(f, "df_resid", None) for f in fits]
    if any(v is None for v in vals):
        return None
    return np.asarray(vals, dtype=float)


def _numbers(table: pd.DataFrame, col: str) -> np.ndarray:
    try:
        return table[col].to_numpy(dtype=float)
    except (TypeError, ValueError):
        bad = pd.to_numeric(table[col], errors="coerce").isna() & table[col].notna()
        raise DataError(f"column {col} holds values that are not numbers (e.g. {table[col][bad].iloc[0]!r}); "
                        "convert it to numbers") from None


def _from_table(table: pd.DataFrame) -> Estimates:
    need = {"imputation", "term", "estimate"}
    missing = sorted(need - set(table.columns))
    if missing or not ({"std_error", "variance"} & set(table.columns)):
        raise DataError(
            f"a per-imputation table needs columns imputation, term, estimate and std_error "
            f"(or variance); it has {list(table.columns)}"
            + (f" (missing {missing})" if missing else "")
        )
    if table["imputation"].isna().any():
        raise DataError(f"column imputation has {int(table['imputation'].isna().sum())} missing label(s); "
                        "every row needs the imputation it comes from")
    spread = "variance" if "variance" in table.columns else "std_error"
    cols = {c: _numbers(table, c) for c in ("estimate", spread, *(["df_resid"] if "df_resid" in table else []))}
    if (cols[spread] < 0).any():
        raise DataError(f"column {spread} holds negative values (e.g. {cols[spread][cols[spread] < 0][0]:g}); "
                        f"a {'variance' if spread == 'variance' else 'standard error'} is not negative")
    var = cols[spread] if spread == "variance" else cols[spread] ** 2
    t = pd.DataFrame(
        {
            "imputation": table["imputation"].to_numpy(),
            "term": table["term"].astype(str).to_numpy(),
            "estimate": cols["estimate"],
            "variance": var,
        }
    )
    if t.duplicated(["imputation", "term"]).any():
        bad = t.loc[t.duplicated(["imputation", "term"]), ["imputation", "term"]].iloc[0]
        raise DataError(
            f"term '{bad['term']}' appears more than once in imputation {bad['imputation']}; "
            "a per-imputation table has one row per (imputation, term)"
        )
    labels = tuple(pd.unique(t["imputation"]))
    if len(labels) < 2:
        raise SpecError(
            f"pooling needs at least m = 2 analyses, the table has {len(labels)} imputation(s)"
        )
    groups = {lab: g.set_index("term") for lab, g in t.groupby("imputation", sort=False)}
    terms = _common_terms([groups[lab].index for lab in labels], labels)
    q = np.stack([groups[lab]["estimate"].reindex(terms).to_numpy() for lab in labels])
    u = np.stack([np.diag(groups[lab]["variance"].reindex(terms).to_numpy()) for lab in labels])
    df_resid = None
    if "df_resid" in table.columns:
        d = cols["df_resid"]
        if not (~np.isnan(d) & (d > 0)).all():
            raise DataError(f"column df_resid must hold positive numbers (the complete-data residual df); "
                            f"found {d[~(~np.isnan(d) & (d > 0))][0]:g}; drop the column if it is not known")
        df_resid = pd.Series(d).groupby(table["imputation"].to_numpy(), sort=False).first().to_numpy(float)
    est = Estimates(terms, q, u, False, labels, df_resid, None)
    _check_finite(est)
    return est


def _check_finite(est: Estimates) -> None:
    for name, arr in (("estimate", est.q), ("variance", np.diagonal(est.u, axis1=1, axis2=2))):
        bad = ~np.isfinite(arr)
        if bad.any():
            i, j = np.argwhere(bad)[0]
            raise DataError(
                f"the {name} of term '{est.terms[j]}' in imputation {est.imputations[i]} is "
                f"{arr[i, j]}; every analysis must give finite estimates and standard errors "
                "(check that model's fit)"
            )
    bad = ~np.isfinite(est.u)
    if bad.any():   # the diagonal is finite (above): a covariance of two terms
        i, j, k = np.argwhere(bad)[0]
        raise DataError(
            f"the covariance of terms '{est.terms[j]}' and '{est.terms[k]}' in imputation {est.imputations[i]} "
            f"is {est.u[i, j, k]}; every analysis must give a finite covariance matrix of its estimates "
            "(check that model's fit, or pass the variances alone)"
        )
    diag = np.diagonal(est.u, axis1=1, axis2=2)
    if (diag < 0).any():
        i, j = np.argwhere(diag < 0)[0]
        raise DataError(
            f"the variance of term '{est.terms[j]}' in imputation {est.imputations[i]} is "
            f"negative ({diag[i, j]}); a covariance matrix must be positive semi-definite"
        )
