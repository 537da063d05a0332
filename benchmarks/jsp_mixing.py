"""Convergence on JSPmiss (jomo's example data, ``benchmarks/data/JSPmiss.csv``: 1,119 pupils in
47 schools) with ``fluent`` as a nominal and as an ordinal variable (issue 13's target: R-hat
≤ 1.01 and bulk ESS ≥ 100 per 1,000 sweeps after 2,000 sweeps with 2 chains).

    python benchmarks/jsp_mixing.py [--seed S] [--draws N] [--off expansion scale-move collapsed] [--substantive]

Model: ravens, english (continuous) and fluent given sex and behaviour, clustered by school;
``--substantive``: english is instead the outcome of the analysis model
``english ~ ravens + C(fluent) + sex + (1 | school)`` (jomo.lmer's kind of model) and ravens
and fluent its incomplete covariates, given sex and behaviour;
2 chains of 1,000 burn-in sweeps and ``--draws`` (default 1,000) monitored sweeps each (an
imputation every 100). Prints the largest R-hat and the smallest bulk ESS over all monitored
parameters, naming them. (The issue's "after 2,000 sweeps" read as 1,000 + 1,000 is the
default; ``--draws 2000`` is the other reading, 2,000 monitored sweeps a chain.) ``--off`` switches moves off to measure what they buy.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import pandas as pd

import mlimpute as mi
from _moves import add_off_option, switch_off

DATA = Path(__file__).resolve().parent / "data" / "JSPmiss.csv"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--draws", type=int, default=1000, help="monitored sweeps per chain (a multiple of 100)")
    ap.add_argument("--substantive", action="store_true", help="english the outcome of a substantive model")
    add_off_option(ap)
    a = ap.parse_args(argv)
    switch_off(a.off)
    d = pd.read_csv(DATA)
    for kind in ("nominal", "ordinal"):
        english = {} if a.substantive else {"english": "continuous"}   # the outcome, or a variable
        model = mi.ImputationModel(cluster="school", covariates=["sex", "behaviour"],
                                   variables={"ravens": "continuous", **english, "fluent": kind},
                                   substantive="english ~ ravens + C(fluent) + sex + (1 | school)"
                                   if a.substantive else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", mi.ConvergenceWarning)
            c0 = time.process_time()
            res = mi.impute(d, model, n_imputations=2 * a.draws // 100, burn=1000, between=100, chains=2, seed=a.seed)
            seconds = time.process_time() - c0
        dg = res.diagnostics()
        worst = dg.loc[dg["rhat"].idxmax()]
        slow = dg.loc[dg["ess_bulk"].idxmin()]
        print(f"fluent {kind}: largest R-hat {worst['rhat']:.3f} ({worst['parameter']}); smallest bulk ESS "
              f"{slow['ess_bulk']:.0f} of 2 x {a.draws:,} draws ({slow['parameter']}); {seconds:.1f} s CPU", flush=True)


if __name__ == "__main__":
    main()
