"""What the simulation studies share: per-replication rows of pooled estimates, their summary
(bias, RMSE, coverage with Monte Carlo SEs), the markdown table, and the resumable driver.

A study module gives ``FORMULA`` and ``TRUTH`` per design and ``replicate((design, rep,
methods)) -> rows``; rows are ``(design, method, rep, parameter, estimate, conf_low,
conf_high)``, parameters starting with "_" are bookkeeping (seconds, largest R-hat).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["design", "method", "rep", "parameter", "estimate", "conf_low", "conf_high"]


def expit(x):
    """The logistic function, as the studies' data were drawn with (1 / (1 + e^-x))."""
    return 1.0 / (1.0 + np.exp(-x))


def cells(r) -> tuple[str, str]:
    """A summary row's relative bias and coverage, each ± its Monte Carlo SE ("–" if undefined)."""
    rb = "–" if not np.isfinite(r.rel_bias_pct) else f"{r.rel_bias_pct:+.1f} ± {r.rel_bias_mcse:.1f}"
    cov = "–" if not np.isfinite(r.coverage) else f"{100 * r.coverage:.1f} ± {100 * r.coverage_mcse:.1f}"
    return rb, cov


def _given(value) -> bool:
    return value is not None and not (isinstance(value, float) and np.isnan(value))


def vc_name(row) -> str:
    """A variance component's row name: var(term), cov(term,with), Residual, or gamma(term)
    for a variance function's coefficient (group Residual with a term)."""
    if row["group"] == "Residual":
        return f"gamma({row['term1']})" if _given(row["term1"]) else "Residual"
    if not _given(row["term2"]):
        return f"var({row['term1']})"
    return f"cov({row['term1']},{row['term2']})"


def grouped_vc_name(row) -> str:
    """As ``vc_name`` with the grouping factor: var(school:Intercept)."""
    if row["group"] == "Residual":
        return vc_name(row)
    name = vc_name(row)
    return f"{name[:4]}{row['group']}:{name[4:]}"


def rows_single(fit, design, method, rep, name=vc_name, varcomp_intervals=False):
    """One fit (no imputation): fixed effects with Wald intervals, variance components (with
    ``varcomp_intervals``: Wald intervals from ``fit.varcomp_cov()`` on the scales of the
    pooling, log for variances, identity for covariances and variance-function coefficients;
    else none)."""
    out = []
    for _, r in fit.tidy().iterrows():
        out.append((design, method, rep, r["term"], r["estimate"], r["estimate"] - 1.96 * r["std_error"],
                    r["estimate"] + 1.96 * r["std_error"]))
    cov = fit.varcomp_cov().to_numpy() if varcomp_intervals else None
    for k, (group, term1, term2) in enumerate(fit.varcomp_labels):
        row = {"group": group, "term1": term1, "term2": term2}
        est, lo, hi = float(fit.psi[k]), np.nan, np.nan
        if cov is not None and np.isfinite(cov[k, k]):
            se = np.sqrt(cov[k, k])
            if group != "Residual" and term2 is None or group == "Residual" and term1 is None:
                lo, hi = est * np.exp(-1.96 * se / est), est * np.exp(1.96 * se / est)
            else:
                lo, hi = est - 1.96 * se, est + 1.96 * se
        out.append((design, method, rep, name(row), est, lo, hi))
    return out


def rows_pooled(pooled, design, method, rep, name=vc_name):
    """Pooled fixed effects (Rubin, Barnard–Rubin df) and variance components (the average over
    imputations as the estimate, Rubin's rules on the log scale for the interval)."""
    out = []
    for _, r in pooled.tidy().iterrows():
        out.append((design, method, rep, r["term"], r["estimate"], r["conf_low"], r["conf_high"]))
    vc = pooled.varcomp()
    for _, r in vc[vc["term1"] != "ICC"].iterrows():
        out.append((design, method, rep, name(r), r["mean"], r["conf_low"], r["conf_high"]))
    return out


def summarise(reps: pd.DataFrame, truth: dict) -> pd.DataFrame:
    out = []
    for (design, method, par), d in reps.groupby(["design", "method", "parameter"], sort=False):
        if par.startswith("_") or par not in truth.get(design, {}):
            continue
        value = truth[design][par]
        est = d["estimate"].to_numpy(float)
        R = est.size
        bias = est.mean() - value
        se_bias = est.std(ddof=1) / np.sqrt(R)
        rel = 100 * bias / value if value else np.nan
        rel_se = 100 * se_bias / abs(value) if value else np.nan
        lo, hi = d["conf_low"].to_numpy(float), d["conf_high"].to_numpy(float)
        ok = np.isfinite(lo) & np.isfinite(hi)
        cover = np.mean((lo[ok] <= value) & (value <= hi[ok])) if ok.any() else np.nan
        cover_se = np.sqrt(cover * (1 - cover) / ok.sum()) if ok.any() else np.nan
        out.append(dict(design=design, method=method, parameter=par, truth=value, reps=R,
                        mean=est.mean(), bias=bias, rel_bias_pct=rel, rel_bias_mcse=rel_se,
                        rmse=np.sqrt(np.mean((est - value) ** 2)), coverage=cover,
                        coverage_mcse=cover_se))
    return pd.DataFrame(out)


def markdown(summary: pd.DataFrame, reps: pd.DataFrame, title: str, intro: str, formula: dict,
             truth: dict, methods: list[str]) -> str:
    lines = [f"# {title}", "", intro, ""]
    for design in summary["design"].unique():
        d = summary[summary["design"] == design]
        counts = d.groupby("method")["reps"].max().astype(int)
        n = int(counts.max())
        fewer = ", ".join(f"{m} {c}" for m, c in counts.items() if c < n)   # e.g. the slower anchor tool's rows
        lines += [f"## {design}: `{formula[design]}` ({n} replications{f'; {fewer}' if fewer else ''})", "",
                  "| parameter | truth | method | mean | rel. bias % | RMSE | coverage |",
                  "|---|---|---|---|---|---|---|"]
        for par in truth[design]:
            for method in methods:
                r = d[(d["parameter"] == par) & (d["method"] == method)]
                if r.empty:
                    continue
                r = r.iloc[0]
                rb, cov = cells(r)
                lines.append(f"| {par} | {r.truth:g} | {method} | {r['mean']:.4f} | {rb} | {r.rmse:.4f} | {cov} |")
        book = reps[reps["design"] == design]
        sec = book[book["parameter"] == "_seconds"].groupby("method")["estimate"].mean()
        rh = book[book["parameter"] == "_max_rhat"].groupby("method")["estimate"].max()
        lines += ["", "Seconds per replication (imputation + analysis): "
                  + ", ".join(f"{m} {s:.1f}" for m, s in sec.items())
                  + "; largest R-hat over all parameters and replications: "
                  + ", ".join(f"{m} {v:.3f}" for m, v in rh.items()), ""]
    return "\n".join(lines) + "\n"


def compact(reps: pd.DataFrame, csv: Path) -> None:
    """Rewrite the per-replication file in one piece (appending leaves one gzip member per
    replication) with 8 significant digits, far below the Monte Carlo error of every summary."""
    tmp = csv.with_name(csv.name + ".tmp")
    reps.to_csv(tmp, index=False, float_format="%.8g",
                compression={"method": "gzip", "compresslevel": 9} if csv.suffix == ".gz" else None)
    tmp.replace(csv)


def markdown_render(title: str, intro: str, formula: dict, truth: dict, methods: list[str]):
    """The ``render`` of ``run`` for a study whose table is ``markdown``'s."""
    def render(done: pd.DataFrame):
        summary = summarise(done, truth)
        return markdown(summary, done, title, intro, formula, truth, methods), summary
    return render


def run(replicate, designs: list[str], methods: list[str], csv: Path, md: Path, render, argv=None,
        extra_csvs: tuple[Path, ...] = ()) -> pd.DataFrame:
    """The resumable driver: runs the replications not yet in ``csv``, then writes ``md``
    (``render(summary_rows)`` gives its text) from ``csv`` and any ``extra_csvs``."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=500)
    ap.add_argument("--designs", nargs="*", default=designs)
    ap.add_argument("--methods", nargs="*", default=methods)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--summary-only", action="store_true")
    ap.add_argument("--csv", type=Path, default=csv, help="per-replication results (resumed)")
    ap.add_argument("--md", type=Path, default=md, help="the summary table")
    a = ap.parse_args(argv)
    csv = a.csv
    csv.parent.mkdir(parents=True, exist_ok=True)
    done = pd.read_csv(csv) if csv.exists() else pd.DataFrame(columns=COLUMNS)
    if not a.summary_only:
        have = set(map(tuple, done[["design", "rep", "method"]].drop_duplicates().to_numpy().tolist()))
        todo = []
        for design in a.designs:
            for rep in range(a.reps):
                missing = [m for m in a.methods if (design, rep, m) not in have]
                if missing:
                    todo.append((design, rep, missing))
        print(f"{len(todo)} replications to run", flush=True)

        def save(rows):
            pd.DataFrame(rows, columns=COLUMNS).to_csv(csv, mode="a", header=not csv.exists(), index=False)

        if a.jobs > 1:
            from multiprocessing import Pool

            with Pool(a.jobs) as pool:
                for k, rows in enumerate(pool.imap_unordered(replicate, todo)):
                    save(rows)
                    if (k + 1) % 10 == 0:
                        print(f"{k + 1}/{len(todo)}", flush=True)
        else:
            for k, job in enumerate(todo):
                save(replicate(job))
                if (k + 1) % 10 == 0:
                    print(f"{k + 1}/{len(todo)}", flush=True)
        done = pd.read_csv(csv)
        compact(done, csv)
    for extra in extra_csvs:
        if extra.exists():
            done = pd.concat([done, pd.read_csv(extra)], ignore_index=True)
    text, summary = render(done)
    a.md.write_text(text)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return summary
