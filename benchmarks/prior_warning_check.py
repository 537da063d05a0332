"""Where the PriorWarning fires on the validation grid, and what the prior does there.

    python benchmarks/prior_warning_check.py                  # 30 replications per cell
    python benchmarks/prior_warning_check.py --reps 10 --rate 20

For the continuous, MCAR cells of ``study_validation.py``'s grid (J in {30, 100} clusters of
n in {5, 25}, ICC in {0.1, 0.3}; x missing at ``--rate`` %), the same data, model and run as
that study (M = 10 from 2 chains, burn 500, 50 sweeps apart): how often a run ends with a
``PriorWarning`` (``mlimpute.diagnostics.warn_prior``, a random-effect variance of which the
inverse-Wishart prior's scale makes up more than 20 % of the posterior mean) and about which
variable's cluster variance, the largest such share (median over the warned runs), the
relative bias of the var(Intercept) of the analysis ``y ~ x + w + (1 | g)`` (average over
imputations, as the study) with its Monte Carlo SE beside the complete data's, and the relative
bias of the imputed variable's own between-cluster variance (``x ~ w + (1 | g)``, truth: the
ICC) in the completed data (all runs, and the warned ones) and before deletion.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import study_validation as sv  # noqa: E402

import mlimpute as mi  # noqa: E402
from mlimpute import diagnostics as dg  # noqa: E402


def one(design: str, rep: int) -> dict:
    rng = np.random.default_rng([20261202, rep, sv.GRID.index(design)])
    data, full = sv.simulate(design, rng)
    shares: list[tuple[str, float]] = []
    real = dg.warn_prior

    def record(*a, **k):
        found = real(*a, **k)
        shares.extend(found)
        return found

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dg.warn_prior = record
        try:
            res = mi.impute(data, sv.model(design), n_imputations=sv.M, burn=sv.BURN, between=sv.BETWEEN,
                            chains=sv.CHAINS, seed=rep)
        finally:
            dg.warn_prior = real
        vc = np.mean([mi.lmm(sv.FORMULA_TEXT, res.completed(k)).varcomp()["estimate"].iloc[0]
                      for k in range(1, sv.M + 1)])
        vfull = mi.lmm(sv.FORMULA_TEXT, full).varcomp()["estimate"].iloc[0]
        # the imputed variable's own between-cluster variance (what the warning is about)
        xc = np.mean([mi.lmm("x ~ w + (1 | g)", res.completed(k)).varcomp()["estimate"].iloc[0]
                      for k in range(1, sv.M + 1)])
        xfull = mi.lmm("x ~ w + (1 | g)", full).varcomp()["estimate"].iloc[0]
    warned = any(w.category is mi.PriorWarning for w in caught)
    worst = max(shares, key=lambda t: t[1], default=("", np.nan))
    return dict(design=design, rep=rep, warned=warned, share=worst[1], which=worst[0], vc=vc, vfull=vfull,
                xc=xc, xfull=xfull)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--rate", type=int, default=40, choices=(20, 40))
    ap.add_argument("--cells", nargs="*", help="only these cells (e.g. J30-n25-icc0.1-r40-MCAR-cont)")
    args = ap.parse_args(argv)
    cells = args.cells or [sv.cell_name(J, n, icc, args.rate, "MCAR", "cont")
                           for J in (30, 100) for n in (5, 25) for icc in (0.1, 0.3)]
    rows = [one(d, r) for d in cells for r in range(args.reps)]
    t = pd.DataFrame(rows)
    out = []
    for d, g in t.groupby("design", sort=False):
        icc = sv.parse(d)["icc"]
        rel, relf = 100 * (g["vc"] - icc) / icc, 100 * (g["vfull"] - icc) / icc
        rx = 100 * (g["xc"] - icc) / icc          # x's between-cluster variance (truth: the ICC), imputed
        rxf = 100 * (g["xfull"] - icc) / icc      # and before deletion
        named = g.loc[g["warned"], "which"].str.extract(r"\[(\w+):")[0].value_counts()
        out.append(dict(cell=d, warned=f"{g['warned'].mean():.0%}",
                        about=", ".join(f"{k} {v}" for k, v in named.items()) or "–",
                        median_share=f"{g['share'].median():.2f}" if g["warned"].any() else "–",
                        bias_imputed=f"{rel.mean():+.1f} ± {rel.std(ddof=1) / np.sqrt(len(g)):.1f} %",
                        bias_complete=f"{relf.mean():+.1f} ± {relf.std(ddof=1) / np.sqrt(len(g)):.1f} %",
                        x_between_imputed=f"{rx.mean():+.1f} ± {rx.std(ddof=1) / np.sqrt(len(g)):.1f} %",
                        x_between_complete=f"{rxf.mean():+.1f} ± {rxf.std(ddof=1) / np.sqrt(len(g)):.1f} %",
                        x_between_warned_runs=(f"{rx[g['warned']].mean():+.1f} %" if g["warned"].any() else "–")))
    cols = list(out[0])
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in out:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main()
