"""Multiple-membership grouping factors: ids and weights checked, levels and the weighted rows of ``Z``.

Notes
-----
Unit i belongs to the units ``s_i1, …, s_iK`` of one classification with weights
``w_i1, …, w_iK`` (``Σ_k w_ik = 1``), and its random part is ``Σ_k w_ik z_iᵀ u_{s_ik}``
(Browne, Goldstein & Rasbash 2001). In lme4's notation ``b = Λu`` this is a ``Z`` whose row i
has, for each membership k, the entries ``w_ik z_i`` in the columns of level ``s_ik`` (weights of
repeated ids add up), so the model is an ordinary ``y = Xβ + ZΛu + ε`` with a ``Z`` of several
weighted blocks per row, and it is fitted by the general (sparse) solver.

The levels of the factor are the union of the ids over all id columns, sorted. A row may name
fewer units than there are id columns: its other ids are missing and their weights 0 or missing.

References
----------
Browne, W. J., Goldstein, H. & Rasbash, J. (2001). Multiple membership multiple classification
(MMMC) models. *Statistical Modelling* 1, 103–124.
Bates, D., Mächler, M., Bolker, B. & Walker, S. (2015). Fitting linear mixed-effects models
using lme4. *Journal of Statistical Software* 67(1).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError
from .formula import Membership

__all__ = ["WEIGHT_TOL", "membership_codes", "factor_entries", "factor_rows"]

WEIGHT_TOL = 1e-6  # how far a row's weights may sum from 1 (float32 storage, weights rounded to
                   # 7 decimals: ~1e-7); rows within it are rescaled to sum to 1 exactly


def _ids(df: pd.DataFrame, ids: tuple[str, ...], label: str) -> tuple[np.ndarray, np.ndarray]:
    """Id values ``(N, K)`` on one footing (numbers as float, so 3 and 3.0 are one unit) and their presence."""
    frame = df[list(ids)]
    present = frame.notna().to_numpy()
    numeric = all(pd.api.types.is_numeric_dtype(frame[c].dtype) and not pd.api.types.is_bool_dtype(frame[c].dtype)
                  for c in ids)
    if numeric:
        return frame.astype(float).to_numpy(), present
    values = frame.astype(object).to_numpy()
    kinds = {type(v).__name__ for v in values[present]}
    if len(kinds) > 1:
        dtypes = ", ".join(f"{c} ({frame[c].dtype})" for c in ids)
        raise DataError(
            f"the id columns of {label} hold ids of different types ({', '.join(sorted(kinds))}; columns {dtypes}); "
            "one unit must have the same id in every column: convert them to one type"
        )
    return values, present


def _first(bad: np.ndarray, labels: pd.Index) -> str:
    """'index label L' of the first bad row, and how many more there are."""
    rows = np.flatnonzero(bad.any(axis=1) if bad.ndim == 2 else bad)
    more = f" (and {rows.size - 1} more rows)" if rows.size > 1 else ""
    return f"index label {labels[int(rows[0])]}{more}"


def _weights(df: pd.DataFrame, mm: Membership, present: np.ndarray, label: str, labels: pd.Index) -> np.ndarray:
    """The ``(N, K)`` weights, checked; 0 where a row has no id."""
    if mm.weights is None:  # equal weights over the ids the row has
        return present / present.sum(axis=1, keepdims=True)
    for c in mm.weights:
        if not pd.api.types.is_numeric_dtype(df[c].dtype) or pd.api.types.is_bool_dtype(df[c].dtype):
            raise DataError(f"weight column {c!r} of {label} is not numeric (dtype {df[c].dtype}); "
                            "membership weights are numbers >= 0 that sum to 1 in each row")
    w = df[list(mm.weights)].astype(float).to_numpy()
    given = ~np.isnan(w)
    for k, (idc, wc) in enumerate(zip(mm.ids, mm.weights)):
        col, has = w[:, k], given[:, k]
        bad = has & ~np.isfinite(col)
        if bad.any():
            raise DataError(f"weight column {wc!r} of {label} has the value {col[bad][0]} at {_first(bad, labels)}; "
                            "membership weights must be finite numbers >= 0")
        bad = has & (col < 0)
        if bad.any():
            raise DataError(f"weight column {wc!r} of {label} has the negative weight {col[bad][0]:g} at "
                            f"{_first(bad, labels)}; membership weights must be >= 0")
        bad = present[:, k] & ~has
        if bad.any():
            unit = df[idc][bad].iloc[0]     # as the column holds it (Int64: 6, not np.float64(6.0))
            unit = unit.item() if isinstance(unit, np.generic) else unit
            raise DataError(f"weight column {wc!r} of {label} is missing at {_first(bad, labels)}, where {idc!r} gives "
                            f"the unit {unit!r}; give a weight for every membership (0 to ignore it)")
        bad = ~present[:, k] & has & (col != 0)
        if bad.any():
            raise DataError(f"weight column {wc!r} of {label} gives the weight {col[bad][0]:g} at {_first(bad, labels)}, "
                            f"where {idc!r} has no unit; a membership without a unit must have weight 0 or missing")
    w = np.where(present, w, 0.0)
    total = w.sum(axis=1)
    bad = np.abs(total - 1.0) > WEIGHT_TOL
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        shown = ", ".join(f"{c}={'missing' if np.isnan(v) else f'{v:g}'}"
                          for c, v in zip(mm.weights, df[list(mm.weights)].astype(float).to_numpy()[i]))
        raise DataError(
            f"the weights of {label} sum to {total[i]:.12g} at {_first(bad, labels)} ({shown}), not 1 "
            f"(tolerance {WEIGHT_TOL:g}); rescale them so that each row's weights sum to 1"
        )
    return w / total[:, None]


def membership_codes(df: pd.DataFrame, mm: Membership, label: str, labels: pd.Index) -> tuple[np.ndarray, np.ndarray, int]:
    """Level codes ``(N, K)``, weights ``(N, K)`` and the number of levels of an ``mm( … )`` factor.

    Levels are the sorted union of the ids over all id columns. Where a row has no id in column
    k its code is 0 and its weight 0. ``labels`` are the data's index labels of the rows (messages
    name rows by them).

    Raises
    ------
    DataError
        A row without any id; ids of different types; a weight column that is not numeric; a
        weight that is negative or not finite; an id without a weight; a positive weight without
        an id; a row whose weights do not sum to 1 (within ``WEIGHT_TOL``).
    """
    values, present = _ids(df, mm.ids, label)
    none = ~present.any(axis=1)
    if none.any():
        raise DataError(
            f"{label}: the row at {_first(none, labels)} has no unit (all of {', '.join(mm.ids)} missing); "
            "every row must belong to at least one unit: drop those rows or fill in their ids"
        )
    w = _weights(df, mm, present, label, labels)
    levels = np.unique(values[present])
    codes = np.where(present, np.searchsorted(levels, np.where(present, values, levels[0])), 0)
    return codes.astype(np.int64), w, int(levels.size)


def factor_entries(factor) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(rows, levels, weights)`` of the non-zero memberships of a factor, row by row.

    An ordinary factor has one membership per row with weight 1 (``weights`` None).
    """
    if factor.weights is None:
        return np.arange(factor.codes.shape[0]), factor.codes, None
    keep = factor.weights > 0
    return np.nonzero(keep)[0], factor.codes[keep], factor.weights[keep]


def factor_rows(factor, b: np.ndarray) -> np.ndarray:
    """``(N, q)``: per row the effects of its unit, ``b[s_i]``, or ``Σ_k w_ik b[s_ik]`` for multiple membership."""
    if factor.weights is None:
        return b[factor.codes]
    return np.einsum("nk,nkq->nq", factor.weights, b[factor.codes])
