"""A self-contained HTML report of an imputation run, and its plots.

One file, no external resources (plots are inline PNG), in the order analysts read it:

1. every warning of the run, once each with its count;
2. the pooled results of each analysis: a forest plot of the pooled estimates and their
   intervals beside the complete-case estimates, with each term's fraction of missing
   information; the pooled table; the pooled variance components and ICCs, with what their
   rows and columns mean and how they were pooled;
3. the data: missing-data patterns (variables × patterns with counts, as R mice's
   ``md.pattern``) and observed against imputed values of every imputed variable (densities
   for continuous variables, observed thick and each imputation thin as mice's
   ``densityplot``; proportions for categorical ones; level-2 variables one value per cluster);
4. convergence: the parameters past the limits (R-hat > 1.05, bulk or tail ESS < 100: the
   limits of :func:`mlimpute.impute`'s warning), all of them on request, and trace plots of
   the main parameters, one line per chain;
5. the run's record (input and its hash, model, run length, seed, timings).

The layout works from a phone-sized 700 px window up: tables scroll inside their box, figures
shrink to the page. The module knows nothing of Prefect or files: the pipeline reads its
outputs and calls :func:`render_report`.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..diagnostics import ESS_LIMIT, RHAT_LIMIT
from ._data import (ImputedVariable, PooledTable, describe_model, diagnostics_by_group, flag_diagnostics,
                    main_parameters, missing_patterns, observed_vs_imputed)
from ._html import CSS, bullets, info, table
from ._plots import density_plot, forest_plot, pattern_plot, trace_plot

__all__ = ["PooledTable", "ImputedVariable", "render_report", "observed_vs_imputed",
           "main_parameters", "flag_diagnostics", "missing_patterns", "describe_model"]

_TIDY = ["term", "estimate", "std_error", "conf_low", "conf_high", "df", "p_value", "riv", "fmi"]
_HEADERS = {"std_error": "SE", "conf_low": "95% low", "conf_high": "95% high", "p_value": "p",
            "riv": "RIV", "fmi": "FMI", "ess_bulk": "ESS bulk", "ess_tail": "ESS tail",
            "rhat": "R-hat", "term1": "term", "term2": "with", "mean": "mean of m",
            "max_rhat": "largest R-hat", "min_ess_bulk": "smallest ESS bulk",
            "min_ess_tail": "smallest ESS tail"}

_VARCOMP_NOTE = (
    "Rows: the variance of each random effect of a grouping factor (<i>term</i>), the "
    "covariance between two random effects of the same factor (<i>term</i>, <i>with</i>), the "
    "residual variance (group Residual), and each factor's intraclass correlation (ICC: its "
    "random-intercept variance over the total). <i>estimate</i> and its interval come from "
    "Rubin's rules applied on a scale where the estimate is closer to normal (<i>method</i>: "
    "log for variances, identity for covariances, logit for ICCs) and transformed back; "
    "<i>mean of m</i> is the plain average over the imputations, which is what mitml reports. "
    "A component estimated as 0 in some imputation has no interval (method mean_only); the "
    "other rows keep theirs.")

_DISPERSION_NOTE = (
    "Residual rows with a <i>term</i>: the coefficients γ of the variance function, "
    "log σ²<sub>i</sub> = log σ² + w<sub>i</sub>′γ with w<sub>i</sub> the columns of the dispersion "
    "formula without intercept, so exp(γ) is the ratio of residual variances for that level, or per "
    "unit of that predictor; the Residual row without a term is σ², the residual variance where w = 0 "
    "(reference levels, predictors at 0), which is also the level-1 variance of the ICC. γ is "
    "pooled as it is, by Rubin's rules on the log-variance scale (method rubin_identity).")


def _pooled_section(p: PooledTable) -> str:
    cc = (f" Grey: the same model on the {p.complete_case_rows:,} complete cases (rows without a "
          "missing value in its variables), for comparison." if p.complete_case is not None
          else "")
    disp = ("" if p.dispersion is None else
            f"; residual variance log σ²<sub>i</sub> = log σ² + w<sub>i</sub>′γ, w from "
            f"<code>{html.escape(p.dispersion)}</code>")
    parts = [f"<h3>{html.escape(p.name)}</h3>",
             f"<p><code>{html.escape(p.formula)}</code> ({html.escape(p.family)}{disp}). Pooled over "
             f"m = {p.m} imputations by Rubin's rules: the estimate is the average of the m "
             "estimates; its variance adds the between-imputation variance to the average "
             "within-imputation variance; t-intervals on Barnard–Rubin degrees of freedom. "
             f"RIV: relative increase in variance due to missing data; FMI: fraction of missing "
             f"information.{cc}</p>",
             forest_plot(p),
             table(p.tidy[[c for c in _TIDY if c in p.tidy.columns]], text_cols=("term",),
                   headers=_HEADERS)]
    if p.varcomp is not None and len(p.varcomp):
        vc = p.varcomp[[c for c in ["group", "term1", "term2", "estimate", "conf_low", "conf_high",
                                    "mean", "fmi", "method"] if c in p.varcomp.columns]]
        parts += ["<p><b>Variance components and ICC</b></p>",
                  table(vc, text_cols=("group", "term1", "term2", "method"), headers=_HEADERS),
                  f'<p class="note">{_VARCOMP_NOTE}</p>']
        if p.dispersion is not None:
            parts.append(f'<p class="note">{_DISPERSION_NOTE}</p>')
    if p.warnings:  # listed once, at the top with the run's other warnings
        parts.append(f'<p class="warnings">{len(p.warnings)} warning(s): see Warnings above.</p>')
    return "\n".join(parts)


def _convergence(diagnostics: pd.DataFrame, traces: Sequence[np.ndarray],
                 parameter_names: Sequence[str], burn: int) -> list[str]:
    flags = flag_diagnostics(diagnostics)
    flagged = list(diagnostics["parameter"][flags])
    show = main_parameters(parameter_names, flagged)
    if flags.any():
        head = (f'<p class="warnings">{int(flags.sum())} of {len(diagnostics)} parameters past the '
                f"limits (R-hat > {RHAT_LIMIT} or ESS < {ESS_LIMIT}) or not assessable: run "
                "longer (burn, between) or more chains before trusting the imputations.</p>"
                + table(diagnostics[flags], flags=np.ones(int(flags.sum()), bool),
                        text_cols=("parameter",), headers=_HEADERS))
    else:
        head = (f'<p class="ok">All {len(diagnostics)} parameters within the limits (R-hat ≤ '
                f"{RHAT_LIMIT}, bulk and tail ESS ≥ {ESS_LIMIT}).</p>")
    groups = diagnostics_by_group(diagnostics)
    by_group = ("<p>By part of the model (level 1, each classification, the analysis model):</p>"
                + table(groups, flags=(groups["max_rhat"] > RHAT_LIMIT).to_numpy()
                        | (np.fmin(groups["min_ess_bulk"], groups["min_ess_tail"]) < ESS_LIMIT).to_numpy(),
                        text_cols=("group",), headers=_HEADERS)) if len(groups) > 1 else ""
    return [
        "<h2>Convergence of the imputation model</h2>", head, by_group,
        f"<details><summary>R-hat and ESS of all {len(diagnostics)} parameters</summary>"
        + table(diagnostics, flags=flags, text_cols=("parameter",), headers=_HEADERS) + "</details>",
        f"<h3>Traces after burn-in ({len(show)} of {len(parameter_names)} parameters)</h3>",
        trace_plot(traces, parameter_names, show, burn, flagged) if show else "",
    ]


def render_report(
    *,
    title: str,
    run: Mapping[str, Any],
    pooled: Sequence[PooledTable],
    diagnostics: pd.DataFrame,
    traces: Sequence[np.ndarray],
    parameter_names: Sequence[str],
    burn: int,
    imputed: Sequence[ImputedVariable],
    warnings: Sequence[str] = (),
    patterns: pd.DataFrame | None = None,
    model_html: str = "",
) -> str:
    """The report as one HTML string (see the module docstring for its sections).

    Parameters
    ----------
    title : str
    run : mapping
        Label → value rows describing the run (input, hash, run length, seed, timings).
    pooled : sequence of PooledTable
    diagnostics : DataFrame
        parameter, rhat, ess_bulk, ess_tail.
    traces : sequence of (draws, parameters) arrays, one per chain
    parameter_names : sequence of str
    burn : int
        Burn-in length, to number the iterations of the traces.
    imputed : sequence of ImputedVariable
        From :func:`observed_vs_imputed`.
    warnings : sequence of str
        Every warning of the run, once each, listed at the top.
    patterns : DataFrame, optional
        From :func:`missing_patterns` of the input.
    model_html : str
        A paragraph naming the imputation model (:func:`describe_model`).
    """
    body = [
        f"<h1>{html.escape(title)}</h1>",
        ("<h2>Warnings</h2>" + bullets(warnings)) if warnings else '<p class="ok">No warnings.</p>',
        "<h2>Pooled estimates</h2>",
        *([_pooled_section(p) for p in pooled] or ["<p>No analyses configured.</p>"]),
        "<h2>The data: what was missing, what was imputed</h2>",
        model_html,
    ]
    if patterns is not None and len(patterns):
        body += ['<p class="note">Missing-data patterns (as mice\'s md.pattern): each row a '
                 "pattern of observed (blue) and missing (red) variables, with the number of rows "
                 "that have it on the left; above, each variable's number of missing values.</p>",
                 pattern_plot(patterns)]
    body.append(density_plot(imputed) if imputed else "<p>No variable had missing values.</p>")
    body += _convergence(diagnostics, traces, parameter_names, burn)
    body += ["<h2>The run</h2>", info(run)]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>")
