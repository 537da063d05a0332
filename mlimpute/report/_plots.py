"""The report's figures as inline PNG ``<img>`` tags (matplotlib, imported when drawing)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._data import ImputedVariable, PooledTable

__all__ = ["trace_plot", "density_plot", "forest_plot", "pattern_plot"]

MAX_IMPUTATION_LINES = 20  # thin density lines; more add ink, not information
OBSERVED, IMPUTED, GREY = "#1f77b4", "#d62728", "#8c8c8c"


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


def _png(fig, alt: str, margins: dict | None = None) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # fixed margins: tight_layout cost ~1 s on a 16-panel figure here
    fig.subplots_adjust(**(margins or dict(left=0.07, right=0.98, bottom=0.1, top=0.92,
                                           wspace=0.35, hspace=0.7)))
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


def trace_plot(traces: Sequence[np.ndarray], names: Sequence[str], show: Sequence[str],
               burn: int, flagged: Sequence[str] = ()) -> str:
    """Trace panels for ``show``, one line per chain, flagged panels titled in red."""
    idx = [list(names).index(p) for p in show]
    fig, axes = _figure(len(idx), 3, size=(3.4, 2.4))
    for ax, k, p in zip(axes, idx, show):
        for c, t in enumerate(traces):
            it = np.arange(burn + 1, burn + t.shape[0] + 1)
            ax.plot(it, t[:, k], lw=0.6, alpha=0.8, label=f"chain {c + 1}")
        ax.set_title(p, fontsize=7, color="#b00020" if p in set(flagged) else "black")
        ax.set_xlabel("sweep (after burn-in)", fontsize=6)
        ax.set_ylabel("draw", fontsize=6)
        ax.tick_params(labelsize=6)
    if len(traces) > 1 and idx:
        axes[0].legend(fontsize=6, loc="best")
    return _png(fig, "trace plots")


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
                    ax.plot(grid, gaussian_kde(x)(grid), color=IMPUTED, lw=0.5, alpha=0.6,
                            label="imputed" if j == 0 else None)
            if obs.size > 1 and np.ptp(obs) > 0:
                ax.plot(grid, gaussian_kde(obs)(grid), color=OBSERVED, lw=2, label="observed")
            ax.set_ylabel("density", fontsize=7)
            ax.set_xlabel(v.name, fontsize=7)
        else:
            obs = v.observed.astype(str).value_counts(normalize=True)
            imp = v.imputed["value"].astype(str).value_counts(normalize=True)
            cats = sorted(set(obs.index) | set(imp.index))
            x = np.arange(len(cats))
            ax.bar(x - 0.2, [obs.get(c, 0.0) for c in cats], 0.4, color=OBSERVED, label="observed")
            ax.bar(x + 0.2, [imp.get(c, 0.0) for c in cats], 0.4, color=IMPUTED, label="imputed")
            ax.set_xticks(x, cats, fontsize=6, rotation=30 if len(cats) > 4 else 0)
            ax.set_ylabel("proportion", fontsize=7)
        m = max(v.imputed["imputation"].nunique(), 1)
        ax.set_title(f"{title}: {len(v.observed)} observed, {len(v.imputed) // m} imputed × {m}",
                     fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6)
    return _png(fig, "observed and imputed values")


def forest_plot(p: PooledTable) -> str:
    """Pooled estimates with their intervals (black) beside the complete-case fit's (grey),
    and each term's fraction of missing information."""
    import matplotlib.pyplot as plt

    tidy = p.tidy
    terms = list(tidy["term"])
    n = len(terms)
    fig, (ax, fx) = plt.subplots(1, 2, figsize=(7.6, 0.42 * n + 1.3), sharey=True,
                                 gridspec_kw={"width_ratios": [3.2, 1]})
    y = np.arange(n)[::-1].astype(float)
    cc = p.complete_case.set_index("term") if p.complete_case is not None else None
    off = 0.17 if cc is not None else 0.0
    ax.errorbar(tidy["estimate"], y + off,
                xerr=[tidy["estimate"] - tidy["conf_low"], tidy["conf_high"] - tidy["estimate"]],
                fmt="o", color="black", ms=4, capsize=2, lw=1.2, label=f"pooled (m = {p.m})")
    if cc is not None:
        c = cc.reindex(terms)
        ax.errorbar(c["estimate"], y - off,
                    xerr=[c["estimate"] - c["conf_low"], c["conf_high"] - c["estimate"]],
                    fmt="s", color=GREY, ms=3.5, capsize=2, lw=1.0,
                    label=f"complete cases ({p.complete_case_rows:,} rows)")
    ax.axvline(0.0, color="#bbbbbb", lw=0.8, zorder=0)
    ax.set_yticks(y, terms, fontsize=8)
    ax.set_xlabel("estimate with 95% interval", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=7, loc="best", frameon=False)
    fx.barh(y, tidy["fmi"], color=IMPUTED, height=0.5)
    fx.set_xlim(0, 1)
    fx.set_xlabel("fraction of missing\ninformation (FMI)", fontsize=8)
    fx.tick_params(labelsize=7)
    fx.axvline(0.5, color="#bbbbbb", lw=0.8, ls="--", zorder=0)
    return _png(fig, f"forest plot of {p.name}",
                dict(left=0.24, right=0.97, bottom=1.0 / (0.42 * n + 1.3), top=0.97, wspace=0.08))


def pattern_plot(patterns: pd.DataFrame) -> str:
    """Missing-data patterns as mice's ``md.pattern``: a row per pattern (blue observed, red
    missing), its number of rows on the right, each variable's missing count below."""
    import matplotlib.pyplot as plt

    cols = [c for c in patterns.columns if c != "rows"]
    cells = patterns[cols].to_numpy(dtype=float)  # 1 observed, 0 missing, NaN pooled rare rows
    npat, nvar = cells.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.55 * nvar + 2.2), 0.3 * npat + 1.6))
    rgb = np.ones((npat, nvar, 3)) * 0.85
    rgb[cells == 1] = (0.58, 0.74, 0.87)
    rgb[cells == 0] = (0.91, 0.45, 0.45)
    ax.imshow(rgb, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(nvar), cols, rotation=40, ha="right", fontsize=7)
    ax.set_yticks(range(npat), [f"{int(r):,}" for r in patterns["rows"]], fontsize=7)
    ax.set_ylabel("rows with the pattern", fontsize=7)
    missing_per_var = ((cells == 0) * patterns["rows"].to_numpy()[:, None]).sum(axis=0)
    top = ax.secondary_xaxis("top")
    top.set_xticks(range(nvar), [f"{int(v):,}" for v in missing_per_var], fontsize=7)
    top.set_xlabel("missing values per variable", fontsize=7)
    right = ax.secondary_yaxis("right")
    right.set_yticks(range(npat), ["" if np.isnan(r).any() else str(int((r == 0).sum()))
                                   for r in cells], fontsize=7)
    right.set_ylabel("variables missing", fontsize=7)
    ax.set_xticks(np.arange(-0.5, nvar), minor=True)
    ax.set_yticks(np.arange(-0.5, npat), minor=True)
    ax.grid(which="minor", color="white", lw=1.5)
    ax.tick_params(which="minor", length=0)
    return _png(fig, "missing-data patterns",
                dict(left=0.16, right=0.88, bottom=0.3, top=0.8))
