"""Data + parsed formula -> response, fixed-effect matrix, random-term matrices and grouping codes.

All checks that need the data live here: unknown columns, missing values (grouping factors must
be complete; other columns follow ``na_action``), non-finite values made by transforms, rank
deficient fixed effects, grouping factors with one level, and the response's type for the family.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from formulaic import Formula
from formulaic.errors import FormulaicError

from ..errors import DataError, SpecError
from ..identification import dependent_column, exact_combination
from ._membership import membership_codes
from .formula import ParsedFormula, RandomTerm

__all__ = ["TermDesign", "FactorDesign", "Design", "build_design"]

ResponseKind = Literal["gaussian", "binomial", "poisson"]


@dataclass(frozen=True)
class TermDesign:
    """One random term: its grouping factor, column names and raw model matrix ``(N, q)``."""

    group: str
    names: tuple[str, ...]
    Z: np.ndarray
    text: str


@dataclass(frozen=True)
class FactorDesign:
    """One grouping factor: integer level codes ``0..levels-1`` per row.

    For multiple membership (``mm( … )``) ``codes`` and ``weights`` are ``(N, K)``: row i belongs
    to level ``codes[i, k]`` with weight ``weights[i, k]`` (0 for an unused membership); an
    ordinary factor has ``(N,)`` codes and ``weights`` None (weight 1).
    """

    label: str
    codes: np.ndarray
    levels: int
    weights: np.ndarray | None = None


@dataclass(frozen=True)
class Design:
    """Everything a mixed-model fit needs from the data, as arrays."""

    response: str
    y: np.ndarray
    X: np.ndarray
    x_names: tuple[str, ...]
    terms: tuple[TermDesign, ...]
    factors: tuple[FactorDesign, ...]
    rows: np.ndarray

    @property
    def nobs(self) -> int:
        return int(self.y.shape[0])

    def take(self, order: np.ndarray) -> "Design":
        """The same design with its rows in ``order``."""
        return Design(
            response=self.response, y=self.y[order], X=np.ascontiguousarray(self.X[order]), x_names=self.x_names,
            terms=tuple(TermDesign(t.group, t.names, np.ascontiguousarray(t.Z[order]), t.text) for t in self.terms),
            factors=tuple(FactorDesign(f.label, f.codes[order], f.levels, None if f.weights is None else f.weights[order])
                          for f in self.factors),
            rows=self.rows[order],
        )


def _formula(rhs: str, what: str) -> Formula:
    try:
        return Formula(rhs)
    except FormulaicError as exc:
        raise SpecError(f"cannot read the {what} {rhs!r}: {exc}; fix the formula") from exc


def formula_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` as formulaic reads it: pandas' nullable string columns (``convert_dtypes()``,
    ``string[pyarrow]``) as object columns, which formulaic codes as categories (it tried to
    read the nullable ones as numbers: "could not convert string to float")."""
    strings = {c: object for c, t in df.dtypes.items() if isinstance(t, pd.StringDtype)}
    return df.astype(strings) if strings else df


class NonFiniteDesign(DataError):
    """A transform in the formula is undefined at some row's values (log of 0, 1/0)."""


def _matrix(rhs: str, df: pd.DataFrame, what: str, labels: pd.Index, data: pd.DataFrame | None = None) -> pd.DataFrame:
    """``rhs``'s model matrix on ``df``; ``data``, the whole frame ``df`` was cut from, for the
    backtick hint of a failure (a column ``df`` lacks because formulaic misread its name)."""
    try:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):   # non-finite values: refused below
            mm = _formula(rhs, what).get_model_matrix(formula_frame(df), na_action="ignore")
    except FormulaicError as exc:
        hint = power_hint(rhs) + _backticks(rhs, df if data is None else data)
        raise SpecError(f"cannot build the {what} {rhs!r}: {exc}; fix the formula{hint}") from exc
    values = np.asarray(mm, dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        col = mm.columns[np.flatnonzero(bad.any(axis=0))[0]]
        row = labels[int(np.flatnonzero(bad.any(axis=1))[0])]
        raise NonFiniteDesign(
            f"the {what} {rhs!r} gives a non-finite value in column {col!r} (first at index label {row}); "
            "a transform is undefined there (log of 0 or a negative?): transform the data first"
        )
    return mm


# R's functions in a formula, read here as a column of that name, with what to write instead
R_CALLS = {
    **dict.fromkeys(("factor", "as.factor"),
                    "R's factor(x) is C(x) here (treatment contrasts; C(x, Sum) and others as in formulaic)."),
    "ordered": "R's ordered(x) is C(x, contr.poly) here (polynomial contrasts, as R's default for an "
               "ordered factor; C(x) gives treatment contrasts).",
    "ns": "R's splines::ns(x, df) has no exact match here: formulaic's cr(x, df) is a natural cubic "
          "regression spline basis, bs(x, df) a B-spline basis as splines::bs.",
    "cbind": "a binomial outcome is one 0/1 (or two-level) column per trial here, not cbind(successes, "
             "failures): give each trial its own row.",
}


UNSUPPORTED = "{}() terms are not supported: fit without it, or add its column as a predictor."


def r_call_hint(name: str, formula: str) -> str:
    """What to write instead when ``name``, not a column, is called as a function in ``formula``
    ('' if it is not called): R's functions of ``R_CALLS``, numpy's under ``np.``, else a
    transform of the data."""
    if not re.search(rf"(?<![\w.]){re.escape(name)}\s*\(", formula):
        return ""
    if name in ("offset", "weights"):
        return UNSUPPORTED.format(name)
    if name in R_CALLS:
        return R_CALLS[name]
    if callable(getattr(np, name, None)):
        return f"R's {name}(x) is np.{name}(x) here."
    return (f"{name}() is not a function formulaic knows (it has np.*, log, exp, scale, center, poly, bs, cr, "
            "C and I): transform the column in the data first.")


def _check_columns(names: set[str], data: pd.DataFrame, formula: str) -> None:
    columns = [str(c) for c in data.columns]
    for name in sorted(names):
        if name not in data.columns:
            close = difflib.get_close_matches(name, columns, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"the data have {', '.join(columns[:12])}{' ...' if len(columns) > 12 else ''}"
            if name in ("offset", "weights"):
                hint = UNSUPPORTED.format(name)
            hint = r_call_hint(name, formula) or hint
            raise DataError(f"column {name!r} in formula {formula!r} is not in the data; {hint} Fix the formula or the "
                            f"data.{_backticks(formula, data)}")


def formula_columns(rhs: str, what: str, columns=()) -> set[str]:
    """The columns ``rhs`` reads: formulaic's ``required_variables``, a backticked name whole
    (``quoted_whole``) and, among ``columns``, the arguments of stateful transforms
    (``stateful_arguments``)."""
    try:
        required = _formula(rhs, what).required_variables
    except SyntaxError as exc:   # formulaic parses each term as Python: R's as.factor(x) is not
        calls = [h for c in R_CALLS if (h := r_call_hint(c, rhs))]
        hint = (" " + calls[0]) if calls else " A name with a dot or other symbol is written in backticks (`my.var`)."
        raise SpecError(f"cannot read the {what} {rhs!r}: a term is not valid Python ({exc.msg});{hint} "
                        "Fix the formula") from None
    names = quoted_whole({str(v) for v in required}, rhs)
    return names | stateful_arguments(rhs, columns)


_TOKEN = re.compile(r"`([^`]+)`|(?<![\w.])([^\W\d][\w.]*)(?![\w.])(?!\s*\()")


def stateful_arguments(rhs: str, columns) -> set[str]:
    """Columns named in ``rhs`` that formulaic's ``required_variables`` misses: it reports
    nothing for the arguments of stateful transforms (scale(z), center(z), poly(z, 2)), so the
    column was dropped from the frame the formula is evaluated on ('name z is not defined')."""
    cols = {str(c) for c in columns}
    return {a or b for a, b in _TOKEN.findall(rhs)} & cols


def quoted_whole(names: set[str], rhs: str) -> set[str]:
    """``names`` with each backticked name of ``rhs`` whole: formulaic reports `x.v` as x
    (attribute access), so x is dropped unless the formula reads it elsewhere."""
    names = set(names)
    rest = re.sub(r"`[^`]+`", " ", rhs)   # the formula outside its backticks
    for quoted in re.findall(r"`([^`]+)`", rhs):
        names.add(quoted)
        head = quoted.split(".")[0]
        if head != quoted and not re.search(rf"(?<![\w.]){re.escape(head)}(?![\w])", rest):
            names.discard(head)
    return names


def power_hint(formula: str) -> str:
    """A hint for R's power inside ``I()``: Python reads ``x^2`` as exclusive or."""
    return (" (inside I() the formula is Python, where ^ is exclusive or: write a power as **, e.g. I(x**2))"
            if re.search(r"I\([^)]*\^", formula) else "")


def _backticks(formula: str, data: pd.DataFrame) -> str:
    """A hint for column names the formula language reads as something else (``x.v``, ``a-b``)."""
    odd = [str(c) for c in data.columns if not str(c).isidentifier() and str(c) in formula
           and f"`{c}`" not in formula]
    return (f" (column names that are not identifiers go in backticks: {', '.join(f'`{c}`' for c in odd)})"
            if odd else "")


def _missing_rows(data: pd.DataFrame, parsed: ParsedFormula, used: set[str], na_action: str) -> np.ndarray:
    """Boolean mask of the rows to keep; raises on missing grouping values."""
    structural = {c for term in parsed.random if term.membership is not None for c in term.columns}
    groups = sorted({c for term in parsed.random if term.membership is None for c in term.group})
    for col in groups:
        miss = data[col].isna().to_numpy()
        if miss.any():
            rows = ", ".join(str(r) for r in data.index[miss][:5])  # the data's labels, not positions
            raise DataError(
                f"grouping factor {col!r} has {int(miss.sum())} missing values (index labels {rows}{', ...' if miss.sum() > 5 else ''}); "
                "a row without a group cannot be placed in the multilevel structure: drop those rows or fill in their group"
            )
    keep = np.ones(len(data), dtype=bool)
    report = []
    for col in sorted(used - set(groups) - structural):  # mm() ids and weights may be missing by design
        miss = data[col].isna().to_numpy()
        if miss.any():
            keep &= ~miss
            report.append(f"{col!r} ({int(miss.sum())})")
    if report and na_action == "raise":
        raise DataError(
            f"columns {', '.join(report)} have missing values (counts in brackets); a mixed model needs complete data: "
            "impute first (mlimpute.impute), or pass na_action='drop' to fit the complete cases like lme4's na.omit"
        )
    if not keep.any():
        raise DataError("no row is complete in the columns the formula uses; there is nothing to fit")
    return keep


def _response(series: pd.Series, kind: ResponseKind, name: str, labels: pd.Index) -> np.ndarray:
    values = series.to_numpy()
    if kind == "binomial":
        if isinstance(series.dtype, pd.CategoricalDtype) or not (
            pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)
        ):
            cats = list(series.cat.categories) if isinstance(series.dtype, pd.CategoricalDtype) else sorted(series.unique())
            if len(cats) != 2:
                raise DataError(
                    f"response {name!r} has {len(cats)} categories ({', '.join(map(str, cats[:6]))}); family='binomial' needs "
                    "two (the second is coded 1, as R factors): recode it to two categories or 0/1"
                )
            return (series == cats[1]).to_numpy(dtype=float)
        y = values.astype(float)
        bad = (y != 0) & (y != 1)
        if bad.any():
            found = ", ".join(map(str, np.unique(y[bad])[:5]))
            raise DataError(
                f"response {name!r} has values other than 0 and 1 ({found}; first at index label {labels[int(np.flatnonzero(bad)[0])]}); "
                "family='binomial' needs a 0/1, bool or two-level outcome: recode it, or use family='poisson' for counts"
            )
        return y
    if not (pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)):
        raise DataError(
            f"response {name!r} is not numeric (dtype {series.dtype}); a {kind} model needs numbers: "
            "convert it, or use glmm(family='binomial') for a two-category outcome (family = \"binomial\" in a config's [[analysis]], --family binomial in the CLI)"
        )
    y = values.astype(float)
    inf = np.isinf(y)
    if inf.any():
        raise DataError(
            f"response {name!r} holds infinite values (first at index label {labels[int(np.flatnonzero(inf)[0])]}); "
            "replace them with finite values or missing"
        )
    if kind == "poisson":
        bad = (y < 0) | (y != np.round(y))
        if bad.any():
            raise DataError(
                f"response {name!r} has values that are not non-negative integers ({y[bad][0]:g} at index label "
                f"{labels[int(np.flatnonzero(bad)[0])]}); family='poisson' models counts: fix the data or use lmm"
            )
    return y


def _check_response(y: np.ndarray, X: np.ndarray, names: tuple[str, ...], name: str, kind: str) -> None:
    """A response without variation, or (gaussian) one the fixed effects fit exactly, leaves
    nothing for the model's variances: numpy failed in the middle of the fit."""
    if y.size and np.ptp(y) == 0:
        raise DataError(
            f"response {name!r} takes the single value {y[0]:g} in the rows used: there is nothing to model "
            f"(glmer: 'Response is constant'){'; a binary outcome needs both categories' if kind == 'binomial' else ''}"
        )
    if kind != "gaussian" or X.shape[1] == 0 or y.size <= X.shape[1]:
        return
    coef = exact_combination(X, y)
    if coef is not None:
        used = [n for n, c in zip(names, coef) if abs(c) > 1e-8 * np.abs(coef).max() and n != "Intercept"]
        raise DataError(
            f"response {name!r} is a linear combination of its fixed effects ({', '.join(map(repr, used)) or 'the intercept'}) "
            "in the rows used: its residual variance is 0 and the model cannot be fitted; remove those terms, "
            "or check that the response is not one of its predictors"
        )


def _check_rank(X: np.ndarray, names: tuple[str, ...], what: str = "fixed-effect columns") -> None:
    """Refuse a design whose column is a linear combination of the columns before it (lme4
    would drop it: its ``rankMatrix`` tolerance is 1e-7 too). On columns scaled to unit root
    mean square, so that units (a time stamp in nanoseconds) do not matter."""
    k = dependent_column(X)
    if k is not None:
        zero = not np.any(X[:, k])
        raise DataError(
            f"the {what} are linearly dependent: {names[k]!r} is "
            f"{'zero' if zero else 'a combination of ' + ', '.join(map(repr, names[:k]))} "
            "in these data (to within 1e-7 of the columns' scale); "
            + ("a category no row has? drop it with .cat.remove_unused_categories(), or remove the term"
               if zero and "[" in names[k] else "remove it from the formula")
        )


def _factor(df: pd.DataFrame, term: RandomTerm, labels: pd.Index) -> FactorDesign:
    label = term.group_label
    weights = None
    if term.membership is not None:
        codes, weights, levels = membership_codes(df, term.membership, label, labels)
    else:
        codes = df.groupby(list(term.group), sort=True, observed=True).ngroup().to_numpy(dtype=np.int64)
        levels = int(codes.max()) + 1
    if levels < 2:
        raise DataError(
            f"grouping factor {label!r} has only one level in the data used; a random effect needs at least two "
            "groups: drop the term or check the column"
        )
    return FactorDesign(label=label, codes=codes, levels=levels, weights=weights)


def _random_terms(df: pd.DataFrame, term: RandomTerm, labels: pd.Index) -> list[TermDesign]:
    mm = _matrix(term.expr, df, f"random term {term.text}", labels)
    if mm.shape[1] == 0:
        raise SpecError(f"random term {term.text!r} has no columns; write at least (1 | {term.group_label})")
    names = tuple(str(c) for c in mm.columns)
    Z = np.asarray(mm, dtype=float)
    if term.correlated:
        return [TermDesign(group=term.group_label, names=names, Z=Z, text=term.text)]
    return [TermDesign(group=term.group_label, names=(n,), Z=Z[:, [k]], text=term.text) for k, n in enumerate(names)]


def build_design(parsed: ParsedFormula, data: pd.DataFrame, *, kind: ResponseKind, na_action: str = "raise",
                 extra_columns: frozenset[str] = frozenset()) -> Design:
    """Build the arrays of a mixed model from a data frame.

    Parameters
    ----------
    parsed : ParsedFormula
    data : pandas.DataFrame
    kind : {"gaussian", "binomial", "poisson"}
        Decides how the response is checked and coded (binomial: 0/1, bool, or two categories
        with the second coded 1, as R's factors).
    na_action : {"raise", "drop"}
        What to do with missing values outside the grouping factors (those always raise).
    extra_columns : frozenset of str
        Columns that another part of the model reads (a dispersion formula): their missing
        values follow ``na_action`` too, so that every part sees the same rows.
    """
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}")
    if na_action not in ("raise", "drop"):
        raise SpecError(f"na_action={na_action!r} is not 'raise' or 'drop'")
    if not parsed.random:
        raise SpecError(f"formula {parsed.text!r} has no random term; add one like '+ (1 | school)'")
    bare = parsed.response.strip("` ")
    response_vars = {bare} if bare in data.columns else formula_columns(parsed.response, "response", data.columns)
    used = set(response_vars) | formula_columns(parsed.fixed, "fixed part", data.columns)
    for term in parsed.random:
        used |= formula_columns(term.expr, f"random term {term.text}", data.columns) | set(term.columns)
    used = {str(v) for v in used} | set(extra_columns)
    _check_columns(used, data, parsed.text)
    timed = [c for c in sorted(used) if c in data.columns and (pd.api.types.is_datetime64_any_dtype(data[c].dtype)
                                                              or pd.api.types.is_timedelta64_dtype(data[c].dtype))]
    if timed:
        raise DataError(f"column {timed[0]!r} in formula {parsed.text!r} holds dates or durations; convert it to a "
                        "number first (e.g. days since a reference date: (t - t0).dt.days)")
    if "Intercept" in used:
        raise DataError(f"formula {parsed.text!r} reads a column named 'Intercept', the name of the intercept "
                        "term: the two would be confused (the model lost its intercept); rename the column")
    keep = _missing_rows(data, parsed, used, na_action)
    rows = np.flatnonzero(keep)
    df = data.iloc[rows][sorted(used)].reset_index(drop=True)
    labels = data.index[rows]  # messages name rows by the caller's index labels

    if bare in data.columns:
        y = _response(df[bare], kind, bare, labels)
    else:
        lhs = _matrix(f"0 + {parsed.response}", df, "response", labels)
        if lhs.shape[1] != 1:
            raise SpecError(f"response {parsed.response!r} makes {lhs.shape[1]} columns; it must be one numeric column")
        y = _response(pd.Series(np.asarray(lhs, dtype=float)[:, 0]), kind, parsed.response, labels)

    xm = _matrix(parsed.fixed, df, "fixed part", labels, data)
    x_names = tuple(str(c) for c in xm.columns)
    X = np.ascontiguousarray(np.asarray(xm, dtype=float))
    _check_rank(X, x_names)
    if X.shape[1] >= len(y):
        texty = [c for c in sorted(used) if c in df.columns and (df[c].dtype == object or pd.api.types.is_string_dtype(
                 df[c].dtype)) and df[c].nunique() > len(df) // 2]
        raise DataError(
            f"the fixed part of {parsed.text!r} has {X.shape[1]} columns for {len(y)} rows: nothing is left for "
            "the residual and the random effects; use fewer terms"
            + (f" (column(s) {texty} hold text, so each distinct value became a factor level: convert "
               "numbers stored as text with pandas.to_numeric)" if texty else "")
        )
    _check_response(y, X, x_names, parsed.response, kind)

    terms: list[TermDesign] = []
    factors: dict[str, FactorDesign] = {}
    membership: dict[str, object] = {}
    for term in parsed.random:
        label = term.group_label
        if label not in factors:
            factors[label] = _factor(df, term, labels)
            membership[label] = term.membership
        elif membership[label] != term.membership:
            raise SpecError(
                f"grouping factor {label!r} has other weights in {term.text!r} than in an earlier term; "
                "give the terms of one multiple-membership factor the same weights"
            )
        for t in _random_terms(df, term, labels):
            seen = {n for other in terms if other.group == label for n in other.names}
            dup = seen.intersection(t.names)
            if dup:
                raise SpecError(
                    f"random effect {sorted(dup)[0]!r} for group {label!r} is declared twice (again in {term.text!r}); "
                    "declare each random coefficient once per grouping factor"
                )
            terms.append(t)
    n = len(y)
    if kind == "gaussian":   # per term, as lme4's check.nobs.vs.nRE (a split (1 + x || g) is two terms)
        for t in terms:
            f, q = factors[t.group], len(t.names)
            if q * f.levels >= n:
                raise DataError(
                    f"grouping factor {t.group!r} has {f.levels} levels x {q} random effects = {q * f.levels} >= {n} "
                    "observations; they cannot be told apart from the residual: use fewer random coefficients"
                )
    return Design(
        response=parsed.response, y=y, X=X, x_names=x_names, terms=tuple(terms),
        factors=tuple(factors.values()), rows=rows,
    )
