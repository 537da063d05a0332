"""DataFrame + ImputationModel → numeric arrays sorted by cluster, and back.

Everything the sampler needs is built here once, after every check on the data has passed, so
bad input fails before any sampling starts. Rows are sorted into a *canonical* order (cluster
label, then a hash of the whole row), which makes the imputations independent of the order of
the input rows: a shuffled input gets the same imputations, in its own order.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .errors import DataError
from .spec import ImputationModel
from .identification import check_identified, dependent_column
from .priors import class_prior
from .substantive import OutcomeData, build_outcome

if TYPE_CHECKING:
    from .scaling import Scaling

__all__ = ["ModelData", "ColumnCodec", "build", "MAX_NOMINAL_CATEGORIES", "latent_names", "missing_units",
           "long_table"]

MAX_NOMINAL_CATEGORIES = 50


@dataclass(frozen=True, eq=False)
class ColumnCodec:
    """How one imputed variable maps between its DataFrame column and the model's columns.

    ``cols`` are the indices of its (latent) columns in ``y1`` (level 1) or ``y2`` (level 2):
    one for continuous, binary and ordinal variables, K−1 for a nominal variable with K
    categories. ``dtype`` is the dtype the output column gets back. Categorical variables also
    carry their ``categories`` (in model order: the binary "1" and the ordinal order last) and
    ``codes``, the observed category index of each sorted row (level 1) or cluster (level 2),
    −1 where missing. The nominal reference category (all latents < 0) is the last, as in jomo.
    """

    name: str
    kind: str
    level: int
    cols: tuple[int, ...]
    dtype: object
    categories: tuple | None = None
    codes: np.ndarray | None = None

    @property
    def n_categories(self) -> int:
        return 0 if self.categories is None else len(self.categories)


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
        Level-1 (latent) columns: observed continuous values, NaN elsewhere (missing cells and
        the latent columns of categorical variables, which the sampler fills).
    y2 : (J, p2) float
        Level-2 (latent) columns, one row per cluster, likewise.
    miss1, miss2 : bool arrays shaped like y1, y2
        The cells to impute (all latent columns of a categorical variable whose value is
        missing).
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
    miss1: np.ndarray
    miss2: np.ndarray
    y1_names: tuple[str, ...]
    y2_names: tuple[str, ...]
    x1: np.ndarray
    x1_names: tuple[str, ...]
    x2: np.ndarray
    x2_names: tuple[str, ...]
    z: np.ndarray
    z_names: tuple[str, ...]
    codecs: tuple[ColumnCodec, ...]
    outcome: "OutcomeData | None" = None   # the substantive model (see mlimpute.substantive)
    classes: tuple = ()   # several classifications (structure.ClassData each, sampler order)
    variances: tuple = ()  # variance functions (structure.VarianceData each)
    scaling: "Scaling | None" = None   # internal centres and scales (mlimpute.scaling), if any

    @property
    def output_codecs(self) -> tuple[ColumnCodec, ...]:
        """Every column the imputations fill: the model's variables, then the outcome."""
        return self.codecs + ((self.outcome.codec,) if self.outcome is not None else ())

    @property
    def n_rows(self) -> int:
        return int(self.y1.shape[0])

    @property
    def n_clusters(self) -> int:
        return int(self.sizes.shape[0])

    @property
    def categorical1(self) -> tuple[ColumnCodec, ...]:
        return tuple(c for c in self.codecs if c.level == 1 and c.kind != "continuous")

    @property
    def categorical2(self) -> tuple[ColumnCodec, ...]:
        return tuple(c for c in self.codecs if c.level == 2 and c.kind != "continuous")

    def unit_arrays(self, codec: ColumnCodec) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The completed columns, missing mask and unit of each row (None for level 1) of the
        level at which ``codec``'s variable is measured."""
        if codec.level == 1:
            return self.y1, self.miss1, None
        if codec.level == 2:
            return self.y2, self.miss2, self.cluster
        c = next(c for c in self.classes if c.name == codec.level)
        return c.y, c.miss, c.unit

    def level_design(self, level) -> tuple[np.ndarray, tuple[str, ...]]:
        """The fixed-effect design and its column names of the variables measured at ``level``."""
        if level == 1:
            return self.x1, self.x1_names
        if level == 2:
            return self.x2, self.x2_names
        c = next(c for c in self.classes if c.name == level)
        return c.x, c.x_names

    def describe_cluster(self, j: int) -> str:
        return f"{self.model.cluster!r}={_py(self.cluster_labels[j])!r}"


# --------------------------------------------------------------------------------------------
# Checks and conversions of single columns
# --------------------------------------------------------------------------------------------
def _example_rows(mask: np.ndarray, index: pd.Index, k: int = 3) -> str:
    rows = index[np.flatnonzero(mask)].tolist()
    try:   # the first rows in the data's own order, whatever order the rows were sorted into
        rows = sorted(rows)[:k]
    except TypeError:
        rows = rows[:k]
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
        bad = (conv.isna() & s.notna()).to_numpy()
        if bad.any():
            raise DataError(
                f"column {name!r} is declared continuous but holds non-numeric values "
                f"(e.g. {s[bad].iloc[0]!r} in row {s.index[bad].tolist()[0]!r}, dtype {s.dtype}); "
                "convert it to numbers or declare it binary/ordinal/nominal"
            )
        first = s[s.notna()].iloc[0] if s.notna().any() else None
        raise DataError(
            f"column {name!r} is declared continuous but its numbers are stored as text (dtype "
            f"{s.dtype}, e.g. {first!r}); convert it with pandas.to_numeric (or fix the Parquet "
            "schema) so that it is not read as categories"
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
        _numbers_as_text(s, name, len(levels))
    if len(levels) < 2:
        raise DataError(
            f"covariate {name!r} takes a single value ({levels[0]!r}) and is collinear with the "
            "intercept; drop it from covariates"
        )
    vals = s.to_numpy(dtype=object)
    cols = np.stack([(vals == lev).astype(float) for lev in levels[1:]], axis=1)
    return cols, [f"{name}[T.{lev}]" for lev in levels[1:]]


def _numbers_as_text(s: pd.Series, name: str, n_levels: int) -> None:
    """Refuse a text covariate of more than ``TEXT_LEVELS`` distinct values that (nearly all)
    read as numbers: numbers stored as text, which would otherwise become one dummy per value."""
    if n_levels <= TEXT_LEVELS:
        return
    conv = pd.to_numeric(s, errors="coerce")
    bad = (conv.isna() & s.notna()).to_numpy()
    if bad.mean() > 0.05:   # text, not numbers
        return
    first = s[~bad].iloc[0]
    where = (f" except {s[bad].iloc[0]!r} in row {_py(s.index[bad][0])!r}, which does not" if bad.any() else "")
    raise DataError(
        f"covariate {name!r} is text (dtype {s.dtype}) with {n_levels} distinct values that read as numbers "
        f"(e.g. {first!r}){where}: it would become {n_levels - 1} dummy columns. Convert it with "
        f"pandas.to_numeric(df[{name!r}]) (fixing any value that is not a number), or make it a pandas "
        "Categorical if its values are categories"
    )


TEXT_LEVELS = 20


def _py(value: object) -> object:
    """numpy scalar → Python scalar, so messages read 3 and not np.int64(3)."""
    return value.item() if isinstance(value, np.generic) else value


def _check_full_rank(x: np.ndarray, names: list[str], what: str) -> None:
    k = dependent_column(x)
    if k is None:
        return
    how = ("(perfect collinearity)" if dependent_column(x, 1e-12) == k else
           "up to less than 1e-7 of the columns' scale (near collinearity: the sampler's precisions "
           "would be singular)")
    raise DataError(f"{what} column {names[k]!r} is a linear combination of {names[:k]} {how}; "
                    "drop it or one of those")


def _check_priors(model: ImputationModel, p1: int, q: int = 0, p2: int = 0) -> None:
    """The stated priors' shapes against the covariances they are for (before sampling, so that
    a pipeline's check finds them; the sampler resolves them again)."""
    if p1:
        model.prior_l1.resolve(p1, "level-1")
    if not model.general:
        model.prior_l2.resolve(p1 * q + p2, "level-2")


def _single_rows(name: str) -> None:
    raise DataError(
        f"every unit of {name!r} has a single row: its random effects and the level-1 residuals "
        "cannot be told apart, and the sampler's covariances would be singular; check that "
        f"{name!r} is the grouping column (not a row id), or impute without that level"
    )


def _cluster_codes(df: pd.DataFrame, cluster: str) -> tuple[np.ndarray, np.ndarray]:
    from .structure import plain_values

    s = plain_values(_require_complete(df, cluster, "cluster id column",
                                       "every row needs a cluster: fill or drop those rows"))
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
    v: np.ndarray, starts: np.ndarray, labels: np.ndarray, name: str, cluster: str, what: str,
    show=lambda x: f"{x:g}",
) -> np.ndarray:
    """One value per cluster from a sorted column; error if observed values differ in a cluster."""
    with np.errstate(invalid="ignore"):
        lo = np.fmin.reduceat(v, starts)
        hi = np.fmax.reduceat(v, starts)
    bad = np.flatnonzero(~(np.isnan(lo) | (lo == hi)))
    if bad.size:
        j = bad[0]
        stop = starts[j + 1] if j + 1 < starts.size else v.size
        vals = np.unique(v[starts[j]:stop][~np.isnan(v[starts[j]:stop])])[:5]
        raise DataError(
            f"column {name!r} is declared level-2 ({what}) but varies within cluster "
            f"{cluster!r}={_py(labels[j])!r} (values {', '.join(show(x) for x in vals)}); declare it "
            f"level 1 or fix the data ({bad.size} cluster(s) affected)"
        )
    return lo


# --------------------------------------------------------------------------------------------
# The builder
# --------------------------------------------------------------------------------------------
def with_formula_covariates(df: pd.DataFrame, model: ImputationModel) -> ImputationModel:
    """``model`` with the complete columns that its substantive formula reads, and that it does
    not list, added to the covariates of the incomplete variables' model — as level-2
    covariates where they are constant within clusters (then both levels use them; with several
    classifications, within the units of one of them, whose variables then use it).

    The imputation model is p(y | x, z) p(x | covariates): a complete z of the formula left out
    of the covariates makes p(x | ·) assume x independent of z. Where they are related, the
    imputations were incompatible with the analysis (one simulation: x's coefficient −25 %,
    z's +54 %, coverage 57 % and 2 %, worse than complete cases). jomo.lmer conditions the
    covariates' model on every complete variable of the formula; so does this. Columns with
    missing values are left to ``build_outcome``, which refuses them (they belong in
    ``variables``)."""
    from .substantive import parse_substantive, substantive_variables

    known = {*model.cluster_columns, *model.variables, *model.covariates, *model.level2_covariates, model.outcome}
    extra = sorted(c for c in substantive_variables(parse_substantive(model), df.columns) - known
                   if c in df.columns and not df[c].isna().any() and df[c].nunique() > 1)   # (constant: no information)
    if not extra:
        return model
    within = None   # per column: the least of its largest numbers of values within a unit of each classification
    for c in model.classifications:
        if c.kind == "membership":
            continue
        keys = [df[k].to_numpy() for k in c.columns]
        most = df.groupby(keys, sort=False)[extra].nunique(dropna=False).max()
        within = most if within is None else np.minimum(within, most)
    level1 = tuple(c for c in extra if within is None or within[c] > 1)
    level2 = tuple(c for c in extra if within is not None and within[c] <= 1)
    return replace(model, covariates=(*model.covariates, *level1),
                   level2_covariates=(*model.level2_covariates, *level2))


def declared_levels(model: ImputationModel | None) -> dict[str, list]:
    """The categories declared for the model's ordinal variables (``Variable("ordinal",
    categories=)``), by variable: the order formula terms such as ``C(ses)`` take them in
    (``with_declared_levels``). Only an ordinal's categories have an order; a binary or nominal
    variable's declared categories are a set (a binary response's coding stays the data's)."""
    if model is None:
        return {}
    return {name: list(v.categories) for name, v in model.variables.items()
            if v.kind == "ordinal" and v.categories is not None}


def with_declared_levels(df: pd.DataFrame, levels: dict[str, list]) -> pd.DataFrame:
    """``df`` with each non-numeric column of ``levels`` (text, or a Categorical in another order)
    as a pandas Categorical of the declared levels that it holds, in the declared order, so that
    a formula's ``C(ses)`` takes that order (its first level the reference). Text levels are
    otherwise sorted alphabetically, and a Categorical keeps its own order: the same data from a
    CSV (text) and from Parquet (a Categorical) gave other reference levels, term names and
    imputations (helper 37). A declared level that no row holds is left out (an all-zero dummy
    would stop the fit; helper 40), and numeric columns are left alone (a term ``o`` reads their
    values as numbers)."""
    cast = {}
    for name, cats in levels.items():
        if name not in df.columns:
            continue
        s = df[name]
        if pd.api.types.is_numeric_dtype(s.dtype) and not isinstance(s.dtype, pd.CategoricalDtype):
            continue
        if not (isinstance(s.dtype, pd.CategoricalDtype) or pd.api.types.is_object_dtype(s.dtype)
                or pd.api.types.is_string_dtype(s.dtype)):
            continue
        values = s.to_numpy(dtype=object)
        present = set(pd.unique(values[pd.notna(values)]))
        order = [c for c in cats if c in present]
        if isinstance(s.dtype, pd.CategoricalDtype) and list(s.cat.categories) == order:
            continue
        cast[name] = pd.Categorical(values, categories=order)
    return df.assign(**cast) if cast else df


def formula_unit_means(df: pd.DataFrame, model: ImputationModel) -> tuple[str, ...]:
    """The complete columns that a substantive formula reads (listed as covariates or not),
    whose unit means join the fixed part of the variables measured on clusters (or on a
    classification's units) wherever the columns vary within those units.

    A cluster-level variable w is modelled given the cluster-level covariates only: a complete
    unit-level x of the formula, related to w, would leave p(w | ·) assuming w independent of
    it, just as ``with_formula_covariates`` says for unit-level variables. Given the cluster's
    values of x, w depends on them through their mean (exactly so for jointly normal x with a
    cluster effect). Without it, one simulation (``y ~ x*w + (1 + x | g)``, x = 0.5w + e, w
    missing for 35 % of the clusters, depending on y) gave x:w 10 % low and the slope variance
    10 % high; with it, both within their Monte Carlo error (``docs/substantive.md``)."""
    if model.substantive is None:
        return ()
    from .substantive import parse_substantive, substantive_variables

    skip = {*model.cluster_columns, *model.variables, model.outcome}
    return tuple(sorted(c for c in substantive_variables(parse_substantive(model), df.columns) - skip
                        if c in df.columns and not df[c].isna().any() and df[c].nunique() > 1))


def _with_unit_means(x: np.ndarray, names: list[str], sdf: "_SortedColumns", means: tuple[str, ...],
                     unit: np.ndarray, n_units: int, level: str) -> tuple[np.ndarray, list[str]]:
    """Design ``x`` (units × columns) with the unit means of ``means``' columns (their dummies'
    shares for a categorical one) appended, named ``mean(x|level)``; a mean that is constant, or
    a linear combination of the columns before it (the column is constant within the units, or
    its means repeat another's), adds nothing and is left out. Stops while the units number more
    than twice the columns, so that a design the units can carry stays so."""
    counts = np.bincount(unit, minlength=n_units).astype(float)
    for c in means:
        block, bnames = _covariate_block(sdf, c)
        for k, bn in enumerate(bnames):
            if n_units <= 2 * (x.shape[1] + 1):
                return x, names
            col = np.bincount(unit, weights=block[:, k], minlength=n_units) / counts
            trial = np.column_stack([x, col])
            if dependent_column(trial) is None:
                x, names = trial, [*names, f"mean({bn}|{level})"]
    return x, names


def build(df: pd.DataFrame, model: ImputationModel) -> ModelData:
    """Check ``df`` against ``model`` and build the sampler's arrays.

    Raises
    ------
    DataError
        Naming the column, the offending value or rows, and a fix, for every problem found
        before sampling: unknown columns, wrong types, missing cluster ids or covariates,
        level-2 variables that vary within a cluster, variables without observed values,
        fewer than two clusters, clusters all of a single row, (nearly) collinear covariates,
        and the posteriors that would be improper or covariances singular
        (``identification.check_identified``).
    """
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(df).__name__}")
    if df.columns.duplicated().any():
        dup = df.columns[df.columns.duplicated()].tolist()
        raise DataError(f"data has duplicated column names {dup}; make column names unique")
    roles = {c: "cluster" for c in model.cluster_columns}
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
    if "Intercept" in (*model.covariates, *model.level2_covariates):
        raise DataError("covariate 'Intercept' has the name of the intercept term (the parameters' names "
                        "would be duplicated, beta1[y:Intercept] twice); rename the column")
    # several classifications or variance functions: the general sampler
    build_with = _build_classified if model.general else _build_two_level
    if model.substantive is None:
        return build_with(df, model)
    widened = with_formula_covariates(df, model)
    listed = {*model.covariates, *model.level2_covariates}
    added = [c for c in (*widened.covariates, *widened.level2_covariates) if c not in listed]
    try:
        return _build_with_means(build_with, df, widened, formula_unit_means(df, model))
    except DataError as exc:
        text = str(exc).split("available columns:")[0]   # a name in the list of columns is not the culprit
        at = {c: min((i for i in (text.find(f"'{c}'"), text.find(f"'{c}[")) if i >= 0), default=-1) for c in added}
        named = sorted((c for c in added if at[c] >= 0), key=at.get)   # the one the message names first
        if not named:
            raise
        raise DataError(
            f"{exc} ({named[0]!r} is read by substantive= and so is a covariate of the incomplete "
            "variables' model too, as in jomo.lmer: remove it from the formula, or fix it in the data)"
        ) from None


def _build_with_means(build_with, df: pd.DataFrame, model: ImputationModel, means: tuple[str, ...]) -> ModelData:
    """``build_with(df, model, means)``; if a check refuses a model because of the unit means it
    added (a cluster-level binary separated by ``mean(x|g)``: with flat priors its posterior
    would be improper), the model without them, with a warning that says so and how to keep
    them (helper 40: a model that ran before was refused over columns the user never wrote)."""
    try:
        return build_with(df, model, means)
    except DataError as exc:
        if not means or not re.search(r"mean\([^()]*\|[^()]*\)", str(exc)):
            raise
        first = str(exc).split(";")[0]
        warnings.warn(
            f"the cluster means of the analysis formula's complete columns ({', '.join(means)}) were left out of "
            f"the model of the variables measured on clusters, which then ignores how those columns relate to "
            f"them: with the means, {first}. Weakly informative priors keep them: ImputationModel(..., "
            "categorical_prior_sd=5) (in a TOML config: categorical_prior_sd = 5 under [model])",
            UserWarning, stacklevel=5)
        return build_with(df, model, ())


def _slope_varies(block: np.ndarray, names: list[str], starts: np.ndarray, name: str, cluster: str) -> None:
    """Refuse a random slope on a covariate (or a dummy of one) that is constant within every
    cluster: its coefficient's cluster deviations are then the random intercept's over again, and
    its variance has no data (only the prior holds it)."""
    for k, n in enumerate(names):
        v = block[:, k]
        lo = np.minimum.reduceat(v, starts)
        hi = np.maximum.reduceat(v, starts)
        if np.all(hi - lo <= 1e-12 * max(1.0, float(np.abs(v).max()))):
            label = repr(name) if n == name else f"{name!r} (its column {n!r})"
            raise DataError(
                f"random slope {label} is constant within every cluster of {cluster!r}: a random slope of a "
                "cluster-level covariate cannot be told from the random intercept, and its variance would "
                f"come from the prior alone; remove {name!r} from random_slopes (keep it in covariates, or move it "
                "to level2_covariates)"
            )


def _build_two_level(df: pd.DataFrame, model: ImputationModel, means: tuple[str, ...] = ()) -> ModelData:
    """``build`` for the two-level model (6), with a substantive model's formula covariates
    already added (``with_formula_covariates``) and ``means`` the columns whose cluster means
    join the level-2 variables' design (``formula_unit_means``)."""
    codes, labels = _cluster_codes(df, model.cluster)
    n_clusters = labels.shape[0]
    if n_clusters < 2:
        raise DataError(
            f"cluster column {model.cluster!r} has {n_clusters} distinct value(s); a two-level "
            "model needs at least 2 clusters (use a single-level imputation instead)"
        )

    # Canonical row order: cluster, then a hash of the row's values in the model's columns
    # (ties: rows identical there, which the model cannot tell apart).
    from .structure import canonical_order
    order = canonical_order(df, codes, model)
    cluster = codes[order]
    starts = np.flatnonzero(np.r_[True, cluster[1:] != cluster[:-1]])
    sizes = np.diff(np.r_[starts, cluster.size])
    sdf = _SortedColumns(df, order)

    blocks1, codecs1 = _variable_columns(df, sdf, model, 1)
    blocks2, codecs2 = _variable_columns(
        df, sdf, model, 2,
        lambda v, name, show: _level2_reduce(v, starts, labels, name, model.cluster, "variable", show=show))
    y1 = np.column_stack(blocks1) if blocks1 else np.empty((len(df), 0))
    y2 = np.column_stack(blocks2) if blocks2 else np.empty((n_clusters, 0))
    miss1 = _missing_mask(y1, codecs1)
    miss2 = _missing_mask(y2, codecs2)
    y1_names = latent_names(codecs1)
    y2_names = latent_names(codecs2)

    # Fixed-effect designs: X1 = [1, covariates, level-2 covariates], X2 = [1, level-2 covariates].
    x1_blocks, x1_names = [np.ones((len(df), 1))], ["Intercept"]
    slope_cols: list[int] = []
    for c in model.covariates:
        block, names = _covariate_block(sdf, c)
        if c in model.random_slopes:
            _slope_varies(block, names, starts, c, model.cluster)
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
    if y1.shape[1]:
        _check_full_rank(x1, x1_names, "level-1 design")
    if y2.shape[1]:
        _check_full_rank(x2, x2_names, "level-2 design")
        x2, x2_names = _with_unit_means(x2, x2_names, sdf, means, cluster, n_clusters, model.cluster)
        if n_clusters <= x2.shape[1]:
            raise DataError(
                f"{n_clusters} clusters cannot support {x2.shape[1]} level-2 fixed effects; "
                "use fewer level2_covariates"
            )
    if y1.shape[1] and sizes.max() == 1:
        _single_rows(model.cluster)
    z_idx = [0, *slope_cols]
    z = np.ascontiguousarray(x1[:, z_idx])
    z_names = tuple(x1_names[k] for k in z_idx)

    codecs = [*codecs1, *codecs2]
    identified = ModelData(
        model=model, order=order, cluster=cluster, starts=starts, sizes=sizes, cluster_labels=labels,
        y1=y1, y2=y2, miss1=miss1, miss2=miss2, y1_names=tuple(y1_names), y2_names=tuple(y2_names),
        x1=x1, x1_names=tuple(x1_names), x2=x2, x2_names=tuple(x2_names), z=z, z_names=z_names,
        codecs=tuple(codecs))
    check_identified(identified)
    _check_priors(model, y1.shape[1], z.shape[1], y2.shape[1])
    outcome = None
    if model.substantive is not None:
        outcome = build_outcome(df, sdf, model, tuple(codecs), lambda name, kind: _outcome_codec(df, sdf, name, kind),
                                starts, cluster)
    return ModelData(
        model=model, order=order, cluster=cluster, starts=starts, sizes=sizes,
        cluster_labels=labels, y1=np.ascontiguousarray(y1), y2=np.ascontiguousarray(y2),
        miss1=miss1, miss2=miss2,
        y1_names=tuple(y1_names), y2_names=tuple(y2_names),
        x1=x1, x1_names=tuple(x1_names), x2=x2, x2_names=tuple(x2_names), z=z, z_names=z_names,
        codecs=tuple(codecs), outcome=outcome,
    )


def _outcome_codec(df: pd.DataFrame, sdf: "_SortedColumns", name: str, kind: str) -> ColumnCodec:
    """The substantive model's outcome as a codec (its imputations are filled like a variable's)."""
    if kind == "continuous":
        return ColumnCodec(name, "continuous", 1, (0,), _float_dtype(df[name].dtype))
    from .spec import Variable

    s = sdf[name]
    if s.notna().any() and pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        bad = s.dropna()[~s.dropna().isin([0, 1])]
        if len(bad):
            raise DataError(
                f"outcome {name!r} of substantive= has values other than 0 and 1 ({_py(bad.iloc[0])!r} "
                f"in row {_py(bad.index[0])!r}); family='binomial' needs a 0/1, bool or two-category outcome"
            )
    codes, cats = _categorical(sdf, name, Variable("binary", categories=(0, 1))
                               if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)
                               else Variable("binary"))
    return ColumnCodec(name, "binary", 1, (0,), df[name].dtype, cats, codes)


def _float_dtype(dtype: object) -> object:
    """Imputed continuous values are not integers: keep float32/float64, else use float64."""
    if dtype == np.float32:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


class _SortedColumns:
    """The frame's columns in the canonical row order, each permuted only when it is read
    (sorting the whole frame would copy every column, including those the model never uses)."""

    def __init__(self, df: pd.DataFrame, order: np.ndarray):
        self._df, self._order = df, order
        self.index = df.index[order]

    def __getitem__(self, name: str) -> pd.Series:
        return self._df[name].iloc[self._order]


def latent_names(codecs: list[ColumnCodec] | tuple[ColumnCodec, ...]) -> tuple[str, ...]:
    """Names of the latent columns: the variable's name, or ``name[category]`` for nominal."""
    out: list[str] = []
    for c in codecs:
        if c.kind == "nominal":
            out.extend(f"{c.name}[{_py(k)}]" for k in c.categories[:-1])
        else:
            out.append(c.name)
    return tuple(out)


def _missing_mask(y: np.ndarray, codecs: list[ColumnCodec]) -> np.ndarray:
    miss = np.zeros(y.shape, dtype=bool)
    for c in codecs:
        rows = np.isnan(y[:, c.cols[0]]) if c.codes is None else c.codes < 0
        miss[:, list(c.cols)] = rows[:, None]
    return miss


def _variable_columns(
    df: pd.DataFrame, sdf: "_SortedColumns", model: ImputationModel, level: int | str,
    reduce=None, aliases: tuple = (),
) -> tuple[list[np.ndarray], list[ColumnCodec]]:
    """The (latent) columns and codecs of the variables at ``level`` (or at one of ``aliases``:
    codecs get ``level``), in declaration order.

    ``reduce(values, name, show)`` turns a sorted row column into one value per cluster or unit
    (checking constancy); None for level 1.
    """
    blocks: list[np.ndarray] = []
    codecs: list[ColumnCodec] = []
    col = 0
    for name, var in model.variables.items():
        if var.level != level and var.level not in aliases:
            continue
        if var.kind == "continuous":
            v = _continuous(sdf, name)
            if reduce is not None:
                v = reduce(v, name, lambda x: f"{x:g}")
            n_obs = int(np.isfinite(v).sum())
            blocks.append(v[:, None])
            codecs.append(ColumnCodec(name, "continuous", level, (col,), _float_dtype(df[name].dtype)))
            col += 1
        else:
            codes, cats = _categorical(sdf, name, var)
            if reduce is not None:
                fcodes = np.where(codes < 0, np.nan, codes.astype(float))
                fcodes = reduce(fcodes, name, lambda x, cats=cats: repr(_py(cats[int(x)])))
                codes = np.where(np.isnan(fcodes), -1, fcodes).astype(np.int16)
            n_obs = int((codes >= 0).sum())
            width = len(cats) - 1 if var.kind == "nominal" else 1
            blocks.append(np.full((codes.size, width), np.nan))
            codecs.append(ColumnCodec(name, var.kind, level, tuple(range(col, col + width)),
                                      df[name].dtype, cats, codes))
            col += width
        if n_obs == 0:
            raise DataError(
                f"variable {name!r} has no observed value; nothing to learn its distribution "
                "from: drop it from variables"
            )
    return blocks, codecs


def _categorical(sdf: "_SortedColumns", name: str, var) -> tuple[np.ndarray, tuple]:
    """Category codes (−1 missing) and the categories of a categorical variable."""
    s = sdf[name]
    observed = s.dropna()
    if observed.empty:
        raise DataError(
            f"variable {name!r} has no observed value; nothing to learn its distribution "
            "from: drop it from variables"
        )
    if var.categories is not None:
        cats = tuple(var.categories)
        unknown = [v for v in pd.unique(observed).tolist() if v not in set(cats)]
        if unknown:
            raise DataError(
                f"column {name!r} holds value {_py(unknown[0])!r}, which is not among its declared "
                f"categories {list(cats)}; add it to categories= or fix the data"
            )
    elif isinstance(s.dtype, pd.CategoricalDtype):
        cats = tuple(s.cat.categories)
    else:  # the distinct values first: no Python object per row
        uniq = pd.unique(observed).tolist()
        try:
            cats = tuple(sorted(uniq))
        except TypeError:
            cats = tuple(sorted(uniq, key=lambda v: (type(v).__name__, str(v))))
        if var.kind == "ordinal" and len(uniq) > 1 and not all(isinstance(v, (int, float, bool, np.number, np.bool_))
                                                               for v in uniq):
            shown = ", ".join(repr(_py(c)) for c in cats[:6])
            raise DataError(
                f"ordinal variable {name!r} holds text ({shown}): the order of its categories cannot be "
                f"read from the data (sorted alphabetically it would be {shown}); give it: "
                f"mi.Variable('ordinal', categories=[...]) (TOML: categories = [...]), or make the "
                "column an ordered pandas Categorical"
            )
    seen = [c for c in cats if (observed == c).any()] if len(cats) <= 1000 else list(cats)
    if var.kind == "binary" and len(cats) != 2:
        shown = ", ".join(repr(_py(c)) for c in cats[:5])
        raise DataError(
            f"column {name!r} is declared binary but has {len(cats)} distinct value(s) ({shown}); "
            + ("declare it ordinal or nominal, or recode it to two values" if len(cats) > 2 else
               "a binary variable needs both categories: pass categories=(a, b) if one is never "
               "observed, or drop it")
        )
    if var.kind in ("ordinal", "nominal") and len(seen) < 2:
        raise DataError(
            f"column {name!r} is declared {var.kind} but only one category "
            f"({_py(seen[0]) if seen else None!r}) is observed; there is nothing to model: drop it "
            "from variables or treat it as a covariate"
        )
    if var.kind == "nominal" and len(cats) > MAX_NOMINAL_CATEGORIES:
        raise DataError(
            f"column {name!r} is declared nominal with {len(cats)} categories; the latent-normal "
            f"model supports at most {MAX_NOMINAL_CATEGORIES} (it needs K−1 latent columns): "
            "group rare categories, or declare it continuous/ordinal if that fits"
        )
    # int16: at most MAX_NOMINAL_CATEGORIES (or a declared ordinal's levels, checked below)
    if len(cats) > 32000:
        raise DataError(f"column {name!r} has {len(cats)} categories; that is not a categorical variable")
    try:  # pandas' hash table maps values to codes without a Python loop over the rows
        codes = pd.Categorical(s, categories=pd.Index(list(cats), dtype=object)).codes
        if ((codes < 0) == s.isna().to_numpy()).all():
            return codes.astype(np.int16), cats
    except (TypeError, ValueError):  # labels pandas cannot hash together: the loop below
        pass
    lookup = {c: k for k, c in enumerate(cats)}
    vals = s.to_numpy(dtype=object)
    isna = s.isna().to_numpy()
    codes = np.fromiter((-1 if m else lookup[v] for v, m in zip(vals, isna)), dtype=np.int16,
                        count=len(vals))
    return codes, cats


# --------------------------------------------------------------------------------------------
# Arrays back to a table
# --------------------------------------------------------------------------------------------
def missing_units(data: ModelData) -> dict[str, np.ndarray]:
    """Per variable (and the substantive model's outcome): the sorted rows (level 1) or
    clusters (level 2) where it is missing."""
    out = {}
    for c in data.codecs:
        _, miss, _ = data.unit_arrays(c)
        out[c.name] = np.flatnonzero(miss[:, c.cols[0]])
    if data.outcome is not None:
        out[data.outcome.name] = np.flatnonzero(~data.outcome.observed)
    return out


def long_table(df: pd.DataFrame, data: ModelData, imputed: dict[str, np.ndarray], m: int) -> pd.DataFrame:
    """The M completed datasets as one long table: ``df``'s columns (imputed continuous columns
    in their input float dtype, categorical ones in their input dtype and labels) in the input's row order, then
    ``imputation`` = 1..m. ``imputed[name]`` is (m, units) as listed by :func:`missing_units`:
    values, or category codes."""
    n = len(df)
    inv = np.empty_like(data.order)
    inv[data.order] = np.arange(n)
    units = missing_units(data)
    long = pd.concat([df] * m, ignore_index=True)
    offsets = (np.arange(m) * n)[:, None]
    for codec in data.output_codecs:
        base = df[codec.name]
        holes = np.flatnonzero(base.isna().to_numpy())
        if not holes.size:
            continue  # nothing imputed: keep the column exactly as it came
        imp = imputed[codec.name] if units[codec.name].size else np.empty((m, 0))
        if codec.level == 1:
            target = data.order[units[codec.name]]
            fill = imp
        else:
            # cluster (unit) values per imputation, observed or imputed, then spread to the rows;
            # an observed unit's value is copied from its rows as it came (the model's internal
            # scale does not round-trip it to the last bit)
            y, _, unit = data.unit_arrays(codec)
            if codec.kind == "continuous":
                raw = base.to_numpy(dtype=float, na_value=np.nan)
                seen = ~np.isnan(raw)
                given = np.full(y.shape[0], np.nan)
                given[unit[inv][seen]] = raw[seen]
            else:
                given = codec.codes
            per_cluster = np.repeat(given[None, :], m, axis=0)
            per_cluster = per_cluster.astype(imp.dtype)
            per_cluster[:, units[codec.name]] = imp
            target = holes
            fill = per_cluster[:, unit[inv][holes]]
        pos = (offsets + target[None, :]).ravel()
        if codec.kind == "continuous":
            values = np.tile(base.to_numpy(dtype=float, na_value=np.nan), m).astype(codec.dtype)
            values[pos] = fill.ravel()
            long[codec.name] = _restore_float(values, base.dtype, long.index)
        else:
            values = np.tile(base.to_numpy(dtype=object), m)
            cats = np.empty(len(codec.categories), dtype=object)
            cats[:] = list(codec.categories)
            values[pos] = cats[fill.ravel()]
            long[codec.name] = _restore_dtype(values, base.dtype, long.index)
    long["imputation"] = np.repeat(np.arange(1, m + 1), n)
    return long


def _restore_float(values: np.ndarray, dtype, index: pd.Index) -> object:
    """A continuous output in the input's float dtype: numpy's (float32 held as such), or a
    pandas extension dtype (nullable ``Float64``, ``double[pyarrow]``), now without holes."""
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and dtype.kind == "f":
        return pd.Series(values, index=index).astype(dtype)
    return values


def _restore_dtype(values: np.ndarray, dtype, index: pd.Index) -> object:
    """Categorical outputs in the input's dtype (Categorical, strings, integers, bool)."""
    if isinstance(dtype, pd.CategoricalDtype):
        return pd.Series(pd.Categorical(values, dtype=dtype), index=index)
    try:  # a Series keeps object dtype (pandas 3 would otherwise infer its string dtype)
        return pd.Series(values, dtype=dtype, index=index)
    except (TypeError, ValueError):
        return pd.Series(values, dtype=object, index=index)


# --------------------------------------------------------------------------------------------
# Several classifications (nested, crossed, multiple membership)
# --------------------------------------------------------------------------------------------
def _build_classified(df: pd.DataFrame, model: ImputationModel, means: tuple[str, ...] = ()) -> ModelData:
    """``build`` for a model with several classifications (or a multiple membership); ``means``
    as for ``_build_two_level``, per classification with variables of its own."""
    from .structure import (ClassData, canonical_order, membership_arrays, model_classifications,
                            nesting_parents, reduce_to_units, unit_codes, variance_data)

    specs = model_classifications(model)
    raw = []
    for c in specs:
        if c.kind == "membership":
            raw.append((None, *membership_arrays(df, c.columns, c.weights)))
        else:
            codes, labels = unit_codes(df, c.columns, "cluster")
            raw.append((codes, None, None, labels))
    first = raw[0]
    order = canonical_order(df, first[0] if first[0] is not None else first[1][:, 0], model)
    sdf = _SortedColumns(df, order)
    blocks1, codecs1 = _variable_columns(df, sdf, model, 1)
    y1 = np.column_stack(blocks1) if blocks1 else np.empty((len(df), 0))
    miss1 = _missing_mask(y1, codecs1)
    y1_names = latent_names(codecs1)

    x1_blocks, x1_names = [np.ones((len(df), 1))], ["Intercept"]
    cov2_blocks = []
    for c in (*model.covariates, *model.level2_covariates):
        block, names = _covariate_block(sdf, c)
        x1_blocks.append(block)
        x1_names.extend(names)
        if c in model.level2_covariates:
            cov2_blocks.append((c, block, names))
    x1 = np.column_stack(x1_blocks)
    if y1.shape[1]:
        _check_full_rank(x1, x1_names, "level-1 design")

    classes = []
    units_sorted = []
    for spec, (codes, ids, weights, labels) in zip(specs, raw):
        K = len(labels)
        unit = None if codes is None else codes[order].astype(np.int32)  # int32: half the memory
        if unit is not None and y1.shape[1] and K == unit.size:
            _single_rows(spec.name)
        for other, prev in zip(specs, units_sorted):
            if unit is not None and prev is not None and K == int(prev.max()) + 1 and \
                    np.unique(np.stack([unit, prev]), axis=1).shape[1] == K:
                raise DataError(
                    f"classifications {other.name!r} and {spec.name!r} group the rows identically (each unit of "
                    "one is a unit of the other): their effects cannot be told apart; drop one"
                )
        units_sorted.append(unit)
        if unit is None:
            y, miss, codecs_c = np.empty((K, 0)), np.zeros((K, 0), bool), []
            xc, xc_names = np.ones((K, 1)), ["Intercept"]
        else:
            reduce = (lambda v, name, show, unit=unit, K=K, spec=spec, labels=labels:
                      reduce_to_units(v, unit, K, name, spec.name, labels, show))
            # (a two-level model's level-2 variables when the test suite runs it through here)
            blocks, codecs_c = _variable_columns(df, sdf, model, spec.name, reduce,
                                                 aliases=(2,) if model.two_level else ())
            y = np.column_stack(blocks) if blocks else np.empty((K, 0))
            miss = _missing_mask(y, codecs_c)
            xc_blocks, xc_names = [np.ones((K, 1))], ["Intercept"]
            for cname, block, names in cov2_blocks:  # the level-2 covariates constant in its units
                try:
                    red = np.column_stack([reduce_to_units(block[:, k], unit, K, cname, spec.name, labels)
                                           for k in range(block.shape[1])])
                except DataError:
                    continue
                xc_blocks.append(red)
                xc_names.extend(names)
            xc = np.column_stack(xc_blocks)
            if y.shape[1]:
                _check_full_rank(xc, xc_names, f"{spec.name!r}-level design")
                xc, xc_names = _with_unit_means(xc, xc_names, sdf, means, unit, K, spec.name)
                if K <= xc.shape[1]:
                    raise DataError(
                        f"{K} units of {spec.name!r} cannot support {xc.shape[1]} fixed effects; "
                        "use fewer level2_covariates"
                    )
        classes.append(ClassData(
            spec=spec, unit=unit, ids=None if ids is None else ids[order].astype(np.int32),
            weights=None if weights is None else weights[order], labels=labels,
            y=np.ascontiguousarray(y), miss=miss, x=xc, x_names=tuple(xc_names),
            y_names=latent_names(codecs_c), codecs=tuple(codecs_c), parent={}))
    # nested classifications: the outer unit of each inner unit
    for a in range(len(classes)):
        for b in range(a):
            if classes[a].spec.kind == classes[b].spec.kind == "nested":
                classes[a].parent[b] = nesting_parents(units_sorted[b], units_sorted[a], classes[b].n_units)
    variances = tuple(variance_data(sdf, model, name, y1_names.index(name), specs)
                      for name, v in model.variables.items() if v.variance is not None)
    c0 = classes[0]
    key = c0.unit if c0.unit is not None else c0.ids[:, 0]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    codecs = [*codecs1, *(cc for c in classes for cc in c.codecs)]
    data = ModelData(
        model=model, order=order, cluster=key, starts=starts, sizes=np.diff(np.r_[starts, key.size]),
        cluster_labels=np.asarray(c0.labels, dtype=object), y1=np.ascontiguousarray(y1),
        y2=np.empty((c0.n_units, 0)), miss1=miss1, miss2=np.zeros((c0.n_units, 0), bool),
        y1_names=y1_names, y2_names=(), x1=x1, x1_names=tuple(x1_names),
        x2=np.ones((c0.n_units, 1)), x2_names=("Intercept",), z=np.ones((len(df), 1)),
        z_names=("Intercept",), codecs=tuple(codecs), classes=tuple(classes), variances=variances,
    )
    check_identified(data)
    _check_priors(model, y1.shape[1])
    for ci in range(len(classes)):   # each stated priors= entry's shape, before sampling
        class_prior(data, ci)
    if model.substantive is not None:
        outcome = build_outcome(df, sdf, model, tuple(codecs), lambda name, kind: _outcome_codec(df, sdf, name, kind),
                                starts, key)
        data = replace(data, outcome=outcome)
    return data
