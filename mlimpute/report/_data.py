"""What the report shows, computed from the run's tables (no plotting, no HTML)."""

from __future__ import annotations

import html
import re

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..diagnostics import ESS_LIMIT, RHAT_LIMIT
from ..spec import CovariancePrior, ImputationModel, Variable
from ..substantive import parse_substantive, substantive_variables

__all__ = ["PooledTable", "ImputedVariable", "observed_vs_imputed", "flag_diagnostics",
           "main_parameters", "missing_patterns", "MAX_TRACES"]

MAX_TRACES = 16  # trace panels; past that, the flagged parameters, intercepts and variances


@dataclass(frozen=True)
class PooledTable:
    """One analysis as the report shows it.

    ``complete_case``: the same model fitted on the rows without missing values (term,
    estimate, conf_low, conf_high), drawn beside the pooled estimates; None if not fitted.
    ``dispersion``: the analysis's variance function (``lmm(..., dispersion=...)``), if any.
    """

    name: str
    formula: str
    family: str
    m: int
    tidy: pd.DataFrame
    varcomp: pd.DataFrame | None = None
    warnings: tuple[str, ...] = ()
    complete_case: pd.DataFrame | None = None
    complete_case_rows: int | None = None
    dispersion: str | None = None


@dataclass(frozen=True)
class ImputedVariable:
    """Observed and imputed values of one variable (level-2: one value per cluster)."""

    name: str
    kind: str
    level: int
    observed: pd.Series
    imputed: pd.DataFrame = field(repr=False)  # columns imputation, value


def _structure(model: ImputationModel) -> str:
    c = model.classifications
    if model.two_level:
        return f"clustered by <code>{html.escape(model.cluster)}</code>"
    kinds = {x.kind for x in c}
    names = ", ".join(f"<code>{html.escape(x.name)}</code>" for x in c)
    if kinds == {"nested"}:
        return f"with nested classifications {names} (outermost first), random intercepts at each"
    if kinds == {"crossed"}:
        return f"with crossed classifications {names}, random intercepts for each"
    m = c[0]
    return (f"with the multiple-membership classification {names} (ids "
            f"{', '.join(m.columns)}, weights {', '.join(m.weights)})")


def _variance_functions(model: ImputationModel) -> str:
    vf = [(n, v.variance) for n, v in model.variables.items() if v.variance is not None]
    if not vf:
        return ""
    parts = ", ".join(f"<code>{html.escape(n)}</code> <code>{html.escape(f)}</code>" for n, f in vf)
    return (f"; variance functions (the level-1 residual variance given the other level-1 "
            f"variables multiplied by exp(w'γ + v)): {parts}")


def _stated_priors(model: ImputationModel) -> str:
    """The covariance priors the user stated (on the data's scale), as a sentence ('' if none)."""
    def show(p: CovariancePrior) -> str:
        parts = ([f"scale {[list(r) for r in p.scale]}"] if p.scale is not None else []) + (
            [f"df {p.df:g}"] if p.df is not None else [])
        return html.escape(", ".join(parts))

    stated = [(f"<code>{key}</code>", p) for key, p in (("prior_l1", model.prior_l1), ("prior_l2", model.prior_l2),
                                                         ("prior_substantive", model.prior_substantive))
              if p != CovariancePrior()]
    stated += [(f"<code>priors[{html.escape(repr(name))}]</code>", p) for name, p in model.priors.items()]
    if not stated:
        return ""
    return " Stated priors (on the data's scale): " + "; ".join(f"{k} {show(p)}" for k, p in stated) + "."


def describe_model(model: ImputationModel, parameters: list[str] | None = None) -> str:
    """One paragraph (HTML) saying which imputation model ran; ``parameters``, the sampler's
    parameter names, say which cluster means of the formula's columns it holds (else it says
    what it would hold)."""
    def names(cols):
        return ", ".join(f"<code>{html.escape(c)}</code>" for c in cols) or "none"

    cov = names([*model.covariates, *model.level2_covariates])
    if model.substantive is not None:   # complete columns of the formula join the covariates (design.with_formula_covariates)
        known = {*model.cluster_columns, *model.variables, *model.covariates, *model.level2_covariates}
        added = sorted(substantive_variables(parse_substantive(model)) - known)
        if added:
            cov = (cov + " and " if cov != "none" else "") + names(added) + " (read by the analysis model)"
        if parameters is not None:   # design.formula_unit_means: the means the model holds
            means = sorted({m for p in parameters for m in re.findall(r":(mean\([^()]*\|[^()]*\))\]$", p)})
            if means:
                cov += (", and the variables measured on clusters also given " + names(means)
                        + " (cluster means of the analysis model's complete columns)")
        elif any(v.level != 1 for v in model.variables.values()):
            cov += (", and the variables measured on clusters also given the cluster means of the analysis "
                    "model's complete columns that vary within clusters (where the clusters can carry them)")
    joint = (f"the joint latent-normal multilevel model (Goldstein, Carpenter &amp; Browne) of "
             f"{names(model.variables)} given {cov}, {_structure(model)}"
             + (", with cluster-specific level-1 covariances" if model.covariance == "cluster" else "")
             + _variance_functions(model))
    if model.substantive is None:
        scale = (" Fitted to standardised variables and covariates (default priors on that scale), "
                 "reported on the data's scale." if model.standardize else
                 " Fitted on the data's scale (<code>standardize = false</code>).")
        scale += _stated_priors(model)
        return (f"<p>Imputation model: {joint}.{scale} Analyses with random slopes, interactions or "
                "non-linear terms of imputed variables are not compatible with it (their estimates "
                "shrink toward zero); give the analysis model as <code>substantive</code> for "
                "those.</p>")
    link = "" if model.family == "gaussian" else f", {model.resolved_link} link"
    return (f"<p>Imputation model: <b>substantive-model compatible</b> (Goldstein, Carpenter &amp; "
            f"Browne 2014): the analysis model <code>{html.escape(model.substantive)}</code> "
            f"({model.family}{link}) for the outcome <code>{html.escape(model.outcome)}</code>, "
            f"times {joint}" if model.variables else
            f"<p>Imputation model: the analysis model <code>{html.escape(model.substantive)}</code> "
            f"({model.family}{link}) for the outcome <code>{html.escape(model.outcome)}</code>") + (
            ". Its random slopes, interactions and non-linear terms are imputed as the analysis "
            f"has them.{_stated_priors(model)}</p>")


def observed_vs_imputed(df: pd.DataFrame, long: pd.DataFrame,
                        model: ImputationModel) -> list[ImputedVariable]:
    """Observed and imputed values of each imputed variable that had holes.

    ``long`` is the long table of completed datasets (``imputation`` column, each imputation's
    rows in ``df``'s row order).
    """
    out = []
    n = len(df)
    imp = long["imputation"].to_numpy()
    if len(long) % n:
        raise ValueError("the long table's length is not a multiple of the data's")
    variables = dict(model.variables)
    if model.substantive is not None:   # the outcome of the analysis model is imputed too
        variables[model.outcome] = Variable("continuous" if model.family == "gaussian" else "binary")
    for name, var in variables.items():
        holes = df[name].isna().to_numpy()
        if not holes.any():
            continue
        mask = np.tile(holes, len(long) // n)
        values = long[name].to_numpy()[mask]
        imputed = pd.DataFrame({"imputation": imp[mask], "value": values})
        observed = df.loc[~holes, name]
        if var.level != 1:  # one value per cluster (unit of its classification)
            cols = (model.cluster,) if var.level == 2 else model.classification(var.level).columns
            cl = df[list(cols)].astype(str).agg("/".join, axis=1).to_numpy() if len(cols) > 1 \
                else df[cols[0]].to_numpy()
            observed = pd.Series(observed.to_numpy(), index=cl[~holes]).groupby(level=0).first()
            imputed["cluster"] = np.tile(cl, len(long) // n)[mask]
            imputed = imputed.groupby(["imputation", "cluster"], sort=True,
                                      as_index=False)["value"].first()
        out.append(ImputedVariable(name=name, kind=var.kind, level=var.level,
                                   observed=observed.reset_index(drop=True), imputed=imputed))
    return out


def parameter_group(name: str) -> str:
    """The part of the model a monitored parameter belongs to: "level 1", a classification's
    name ("cluster" for the two-level model's level 2), or "analysis model"."""
    if "~" in name.split("[", 1)[0]:
        return "analysis model"
    head = name.split("[", 1)[0]
    if head in ("beta1", "omega1"):
        return "level 1"
    if head in ("beta2", "omega2", "omega1_scale", "omega1_df"):
        return "cluster"
    if head in ("beta", "omega"):
        return name.split("[", 2)[1].split("]", 1)[0]
    return "thresholds"


def diagnostics_by_group(diag: pd.DataFrame) -> pd.DataFrame:
    """Per part of the model (``parameter_group``): parameters, largest R-hat, smallest bulk and
    tail ESS."""
    g = diag.assign(group=[parameter_group(p) for p in diag["parameter"]])
    out = g.groupby("group", sort=False).agg(parameters=("parameter", "size"), max_rhat=("rhat", "max"),
                                             min_ess_bulk=("ess_bulk", "min"), min_ess_tail=("ess_tail", "min"))
    return out.reset_index()


def flag_diagnostics(diag: pd.DataFrame) -> np.ndarray:
    """Rows whose R-hat exceeds 1.05, whose bulk or tail ESS is below 100, or that could not be
    assessed (NaN: too few draws)."""
    r = diag["rhat"].to_numpy(dtype=float)
    ess = np.minimum(diag["ess_bulk"].to_numpy(dtype=float), diag["ess_tail"].to_numpy(dtype=float))
    return ~(r <= RHAT_LIMIT) | ~(ess >= ESS_LIMIT)


def main_parameters(names: Sequence[str], flagged: Sequence[str] = ()) -> list[str]:
    """The parameters whose traces are drawn: all of them up to 16, else the flagged ones,
    then intercepts and variances (diagonal covariance elements), in the sampler's order."""
    names = list(names)
    if len(names) <= MAX_TRACES:
        return names

    def is_main(p: str) -> bool:
        if "Intercept]" in p:
            return True
        if "[" in p and "," in p:
            a, b = p[p.index("[") + 1:-1].split(",", 1)
            return a == b
        return False

    chosen = [p for p in names if p in set(flagged)]
    chosen += [p for p in names if is_main(p) and p not in chosen]
    keep = set(chosen[:MAX_TRACES])
    return [p for p in names if p in keep]


def missing_patterns(df: pd.DataFrame, max_patterns: int = 20) -> pd.DataFrame:
    """Missing-data patterns, as R mice's ``md.pattern``: one row per pattern (True = observed),
    columns ordered from the fewest to the most missing values, patterns from the most to the
    least frequent, with a ``rows`` column (how many rows have the pattern). Past
    ``max_patterns``, the rarest are pooled into one row whose cells are NaN."""
    miss = df.isna()
    order = miss.sum().sort_values(kind="stable").index
    observed = ~miss[order]
    counts = observed.value_counts(sort=True).rename("rows").reset_index()
    counts = counts.sort_values(["rows"], ascending=False, kind="stable").reset_index(drop=True)
    if len(counts) > max_patterns:
        rest = counts.iloc[max_patterns - 1:]
        other = {c: np.nan for c in order} | {"rows": int(rest["rows"].sum())}
        counts = pd.concat([counts.iloc[:max_patterns - 1], pd.DataFrame([other])],
                           ignore_index=True)
    return counts
