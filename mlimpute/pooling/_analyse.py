"""``analyse()``: fit the analysis model on every imputed dataset and pool."""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

from ..errors import DataError, SpecError
from ._pool import pool
from ._result import PooledResult
from ._warnings import PoolingWarning

__all__ = ["analyse", "IMPUTATION_COLUMNS"]

#: Imputation-index columns recognised in long tables: ours, jomo's, mice's.
IMPUTATION_COLUMNS = ("imputation", "Imputation", ".imp")


def analyse(
    res: Any,
    formula: str,
    family: str = "gaussian",
    *,
    imputation_col: str | None = None,
    df_com: Any = None,
    conf_level: float = 0.95,
    **kw: Any,
) -> PooledResult:
    """Fit ``formula`` on every imputed dataset and pool the fits.

    Parameters
    ----------
    res : ImputationResult or DataFrame
        The result of :func:`mlimpute.impute` (its long ``.data``), or any long table of
        completed datasets with an imputation-index column, such as jomo's output
        (``Imputation``) or ``mice::complete(imp, "long", include = TRUE)`` (``.imp``).
        Imputation 0, the original incomplete data in jomo's and mice's long formats, is
        skipped.
    formula : str
        lme4-style model formula, e.g. ``"y ~ x + sex + (1 + x | school)"``.
    family : str, default "gaussian"
        ``"gaussian"`` fits :func:`mlimpute.lmm`; anything else :func:`mlimpute.glmm` with
        ``family=family``.
    imputation_col : str, optional
        Name of the imputation column; by default the one of ``imputation``, ``Imputation``,
        ``.imp`` that the table has.
    df_com, conf_level
        Passed to :func:`mlimpute.pool` (``df_com=None``: each fit's ``df_resid``).
    **kw
        Passed to :func:`mlimpute.lmm` / :func:`mlimpute.glmm` (e.g. ``reml=False``,
        ``dispersion="~ sex"``, ``link="probit"``, ``nagq=10``). With ``dispersion`` the
        variance function's log-variance coefficients are pooled among the variance
        components (see :func:`mlimpute.pool`).

    Returns
    -------
    PooledResult
        As :func:`mlimpute.pool`; its ``fits`` can be handed to :func:`mlimpute.test_models`.

    Raises
    ------
    DataError
        No imputation column, or fewer than two imputations after dropping imputation 0.
    SpecError
        More than one candidate imputation column and no ``imputation_col``.

    Notes
    -----
    Each completed dataset is the subset of rows with one imputation index, in the table's
    row order, without the imputation column. Errors raised while fitting imputation ``k``
    carry a note naming ``k``. Pooling is Rubin's rules with Barnard–Rubin df; see
    :func:`mlimpute.pool` for formulas and references (Rubin 1987; Barnard & Rubin 1999).

    References
    ----------
    Rubin, D. B. (1987). *Multiple Imputation for Nonresponse in Surveys*. Wiley.

    Barnard, J., & Rubin, D. B. (1999). Small-sample degrees of freedom with multiple
    imputation. *Biometrika*, 86(4), 948–955.
    """
    from ..substantive import dispersion_note

    note = dispersion_note(getattr(res, "model", None), formula, kw.get("dispersion"))
    if note:
        warnings.warn(note, PoolingWarning, stacklevel=2)
    data, col = _long_table(res, imputation_col)
    from ..design import declared_levels, with_declared_levels
    data = with_declared_levels(data, declared_levels(getattr(res, "model", None)))   # C(ses) in the declared order
    fit_one = _fitter(family)
    fits = []
    for k, data_k in _completed(data, col):
        try:
            fits.append(fit_one(formula, data_k, **kw))
        except Exception as err:  # re-raised as is, with a note saying which imputation
            err.add_note(f"while fitting {formula!r} on imputation {k} (column {col!r})")
            raise
    return pool(fits, df_com=df_com, conf_level=conf_level)


def _fitter(family: str) -> Any:
    # imported here: mlimpute.analysis is written separately and imports later than pooling
    if family == "gaussian":
        from ..analysis import lmm

        return lmm
    from ..analysis import glmm

    def fit_glmm(formula: str, data: pd.DataFrame, **kw: Any) -> Any:
        return glmm(formula, data, family=family, **kw)

    return fit_glmm


def _long_table(res: Any, imputation_col: str | None) -> tuple[pd.DataFrame, str]:
    if isinstance(res, pd.DataFrame):
        data = res
    elif isinstance(getattr(res, "data", None), pd.DataFrame):
        data = res.data
        if imputation_col is None and "imputation" in data.columns:
            return data, "imputation"
    else:
        raise SpecError(
            f"analyse() needs an ImputationResult or a long DataFrame of completed datasets, "
            f"got {type(res).__name__}"
        )
    if imputation_col is not None:
        if imputation_col not in data.columns:
            raise DataError(
                f"imputation_col {imputation_col!r} is not a column of the table; columns are "
                f"{list(data.columns)}"
            )
        return data, imputation_col
    found = [c for c in IMPUTATION_COLUMNS if c in data.columns]
    if not found:
        raise DataError(
            f"the table has no imputation column (looked for {', '.join(IMPUTATION_COLUMNS)}); "
            f"its columns are {list(data.columns)}. Name it with imputation_col= (the CLI's --imputation-col)"
        )
    if len(found) > 1:
        raise SpecError(
            f"the table has several imputation columns {found}; choose one with imputation_col= (the CLI's --imputation-col)"
        )
    return data, found[0]


def _completed(data: pd.DataFrame, col: str) -> list[tuple[Any, pd.DataFrame]]:
    """The completed datasets ``(k, data_k)``, k = 1..M, skipping imputation 0."""
    idx = data[col]
    if idx.isna().any():
        raise DataError(f"the imputation column {col!r} has missing values; every row needs one")
    labels = [k for k in pd.unique(idx) if not _is_zero(k)]
    try:
        labels = sorted(labels)
    except TypeError:  # mixed label types: keep the table's order
        pass
    if len(labels) < 2:
        raise DataError(
            f"the imputation column {col!r} holds {len(labels)} imputation(s) besides the "
            f"original data (values {sorted(map(str, pd.unique(idx)))}); pooling needs m >= 2"
        )
    rest = data.drop(columns=[col])
    return [(k, rest.loc[(idx == k).to_numpy()].reset_index(drop=True)) for k in labels]


def _is_zero(k: Any) -> bool:
    try:
        return float(k) == 0.0
    except (TypeError, ValueError):
        return False
