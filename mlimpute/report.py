"""A self-contained HTML report of an imputation run, and its plots.

One file, no external resources (plots are inline PNG), in the order analysts read it:

1. the run (input and its hash, model, run length, seed, timings) and every warning;
2. the pooled estimates of each analysis with intervals, RIV and FMI, and the pooled variance
   components;
3. convergence: R-hat and bulk/tail ESS of every monitored parameter, rows past the limits
   highlighted (R-hat > 1.05, ESS < 100: the limits of :func:`mlimpute.impute`'s warning),
   and trace plots of the main parameters, one line per chain;
4. observed against imputed values of every imputed variable: densities for continuous
   variables (observed thick, each imputation thin, as mice's ``densityplot``), proportions for
   categorical ones; level-2 variables one value per cluster.

The module knows nothing of Prefect or files: the pipeline reads its outputs and calls
:func:`render_report`.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .impute import ESS_LIMIT, RHAT_LIMIT
from .spec import ImputationModel

__all__ = ["PooledTable", "render_report", "observed_vs_imputed", "main_parameters",
           "flag_diagnostics"]

MAX_TRACES = 16  # trace panels; past that, the flagged parameters, intercepts and variances
MAX_IMPUTATION_LINES = 20  # thin density lines; more add ink, not information


@dataclass(frozen=True)
class PooledTable:
    """One analysis as the report shows it."""

    name: str
    formula: str
    family: str
    m: int
    tidy: pd.DataFrame
    varcomp: pd.DataFrame | None = None
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImputedVariable:
    """Observed and imputed values of one variable (level-2: one value per cluster)."""

    name: str
    kind: str
    level: int
    observed: pd.Series
    imputed: pd.DataFrame = field(repr=False)  # columns imputation, value


# ------------------------------------------------------------------------------------------
# Data for the plots
# ------------------------------------------------------------------------------------------
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
    for name, var in model.variables.items():
        holes = df[name].isna().to_numpy()
        if not holes.any():
            continue
        mask = np.tile(holes, len(long) // n)
        values = long[name].to_numpy()[mask]
        imputed = pd.DataFrame({"imputation": imp[mask], "value": values})
        observed = df.loc[~holes, name]
        if var.level == 2:
            cl = df[model.cluster].to_numpy()
            observed = pd.Series(observed.to_numpy(), index=cl[~holes]).groupby(level=0).first()
            imputed["cluster"] = np.tile(cl, len(long) // n)[mask]
            imputed = imputed.groupby(["imputation", "cluster"], sort=True,
                                      as_index=False)["value"].first()
        out.append(ImputedVariable(name=name, kind=var.kind, level=var.level,
                                   observed=observed.reset_index(drop=True), imputed=imputed))
    return out


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


# ------------------------------------------------------------------------------------------
# Plots (matplotlib, imported only when a report is drawn)
# ------------------------------------------------------------------------------------------
def _figure(nplots: int, ncols: int, size: tuple[float, float] = (3.2, 2.3)):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, nplots))
    nrows = int(np.ceil(nplots / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.ravel()[nplots:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # fixed margins: tight_layout cost ~1 s on a 16-panel figure here
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.92, wspace=0.3, hspace=0.5)
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="plot" src="data:image/png;base64,{data}">'


def trace_plot(traces: Sequence[np.ndarray], names: Sequence[str], show: Sequence[str],
               burn: int, flagged: Sequence[str] = ()) -> str:
    """Trace panels for ``show``, one line per chain, flagged panels titled in red."""
    idx = [list(names).index(p) for p in show]
    fig, axes = _figure(len(idx), 4)
    for ax, k, p in zip(axes, idx, show):
        for c, t in enumerate(traces):
            it = np.arange(burn + 1, burn + t.shape[0] + 1)
            ax.plot(it, t[:, k], lw=0.6, alpha=0.8, label=f"chain {c + 1}")
        ax.set_title(p, fontsize=7, color="#b00020" if p in set(flagged) else "black")
        ax.tick_params(labelsize=6)
    if len(traces) > 1 and idx:
        axes[0].legend(fontsize=6, loc="best")
    return _png(fig)


def density_plot(variables: Sequence[ImputedVariable]) -> str:
    """Observed vs imputed: densities (continuous) or proportions (categorical)."""
    from scipy.stats import gaussian_kde

    fig, axes = _figure(len(variables), 3, size=(3.6, 2.6))
    for ax, v in zip(axes, variables):
        title = v.name + (" (per cluster)" if v.level == 2 else "")
        if v.kind == "continuous":
            obs = v.observed.to_numpy(dtype=float)
            imp = v.imputed["value"].to_numpy(dtype=float)
            lo, hi = np.nanmin(np.r_[obs, imp]), np.nanmax(np.r_[obs, imp])
            pad = 0.05 * (hi - lo or 1.0)
            grid = np.linspace(lo - pad, hi + pad, 200)
            groups = list(v.imputed.groupby("imputation", sort=True)["value"])
            for j, (_, vals) in enumerate(groups[:MAX_IMPUTATION_LINES]):
                x = vals.to_numpy(dtype=float)
                if x.size > 1 and np.ptp(x) > 0:
                    ax.plot(grid, gaussian_kde(x)(grid), color="#d62728", lw=0.5, alpha=0.6,
                            label="imputed" if j == 0 else None)
            if obs.size > 1 and np.ptp(obs) > 0:
                ax.plot(grid, gaussian_kde(obs)(grid), color="#1f77b4", lw=2, label="observed")
            ax.set_ylabel("density", fontsize=7)
        else:
            obs = v.observed.astype(str).value_counts(normalize=True)
            imp = v.imputed["value"].astype(str).value_counts(normalize=True)
            cats = sorted(set(obs.index) | set(imp.index))
            x = np.arange(len(cats))
            ax.bar(x - 0.2, [obs.get(c, 0.0) for c in cats], 0.4, color="#1f77b4", label="observed")
            ax.bar(x + 0.2, [imp.get(c, 0.0) for c in cats], 0.4, color="#d62728", label="imputed")
            ax.set_xticks(x, cats, fontsize=6, rotation=30 if len(cats) > 4 else 0)
            ax.set_ylabel("proportion", fontsize=7)
        m = max(v.imputed["imputation"].nunique(), 1)
        ax.set_title(f"{title}: {len(v.observed)} observed, {len(v.imputed) // m} imputed × {m}",
                     fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
    return _png(fig)


# ------------------------------------------------------------------------------------------
# HTML
# ------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:72em;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}
th,td{padding:.25em .6em;border-bottom:1px solid #e5e5e5;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
tr.warn td{background:#fde2e1;color:#8a0010;font-weight:600}
.warnings li{color:#8a0010}.ok{color:#17633a}code{font-size:.95em}
img{max-width:100%}
"""


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        a = abs(float(v))
        if a != 0 and (a < 1e-3 or a >= 1e5):
            return f"{float(v):.3e}"
        return f"{float(v):.4f}"
    return html.escape(str(v))


def _table(df: pd.DataFrame, flags: np.ndarray | None = None, text_cols: Sequence[str] = ()) -> str:
    head = "".join(f'<th class="{"l" if c in text_cols else ""}">{html.escape(str(c))}</th>'
                   for c in df.columns)
    rows = []
    for i, row in enumerate(df.itertuples(index=False)):
        cls = ' class="warn"' if flags is not None and flags[i] else ""
        cells = "".join(f'<td class="{"l" if c in text_cols else ""}">{_fmt(v)}</td>'
                        for c, v in zip(df.columns, row))
        rows.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _info(rows: Mapping[str, Any]) -> str:
    body = "".join(f'<tr><th class="l">{html.escape(str(k))}</th><td class="l">{_fmt(v)}</td></tr>'
                   for k, v in rows.items())
    return f"<table>{body}</table>"


def _list(items: Sequence[str]) -> str:
    return '<ul class="warnings">' + "".join(f"<li>{html.escape(w)}</li>" for w in items) + "</ul>"


def _pooled_section(p: PooledTable) -> str:
    cols = ["term", "estimate", "std_error", "conf_low", "conf_high", "df", "p_value", "riv", "fmi"]
    parts = [f"<h3>{html.escape(p.name)}</h3>",
             f"<p><code>{html.escape(p.formula)}</code> ({html.escape(p.family)}), pooled over "
             f"m = {p.m} imputations by Rubin's rules (Barnard–Rubin df).</p>",
             _table(p.tidy[[c for c in cols if c in p.tidy.columns]], text_cols=("term",))]
    if p.varcomp is not None and len(p.varcomp):
        vc = p.varcomp[[c for c in ["group", "term1", "term2", "estimate", "conf_low", "conf_high",
                                    "riv", "fmi", "method"] if c in p.varcomp.columns]]
        parts += ["<p>Variance components and ICC:</p>",
                  _table(vc, text_cols=("group", "term1", "term2", "method"))]
    if p.warnings:  # listed once, at the top with the run's other warnings
        parts.append(f'<p class="warnings">{len(p.warnings)} warning(s): see Warnings above.</p>')
    return "\n".join(parts)


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
        Run-level warnings (convergence, pooling), listed at the top.
    """
    flags = flag_diagnostics(diagnostics)
    flagged = list(diagnostics["parameter"][flags])
    show = main_parameters(parameter_names, flagged)
    conv = (f'<p class="ok">All {len(diagnostics)} parameters within the limits (R-hat ≤ '
            f'{RHAT_LIMIT}, bulk and tail ESS ≥ {ESS_LIMIT}).</p>' if not flags.any() else
            f'<p class="warnings">{int(flags.sum())} of {len(diagnostics)} parameters past the '
            f'limits (R-hat > {RHAT_LIMIT} or ESS < {ESS_LIMIT}) or not assessable, highlighted: '
            "run longer (burn, between) or more chains before trusting the imputations.</p>")
    body = [
        f"<h1>{html.escape(title)}</h1>",
        _info(run),
        "<h2>Warnings</h2>" + _list(warnings) if warnings else '<p class="ok">No warnings.</p>',
        "<h2>Pooled estimates</h2>",
        *([_pooled_section(p) for p in pooled] or ["<p>No analyses configured.</p>"]),
        "<h2>Convergence</h2>", conv,
        _table(diagnostics, flags=flags, text_cols=("parameter",)),
        f"<h3>Traces after burn-in ({len(show)} of {len(parameter_names)} parameters)</h3>",
        trace_plot(traces, parameter_names, show, burn, flagged) if show else "",
        "<h2>Observed and imputed values</h2>",
        density_plot(imputed) if imputed else "<p>No variable had missing values.</p>",
    ]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            + "\n".join(body) + "</body></html>")
