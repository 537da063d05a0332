"""Mixing on the data's scale against the internal standardised scale (issue 13, "scale"), on
studentratings (mitml's example data, ``benchmarks/data/studentratings.csv``, exported by
``../shared/reference/make_reference.R``: 750 pupils in 50 classes, MathAchiev ≈ 500 with SD 92, SES ≈ 47 with SD 18).

    python benchmarks/scale_invariance.py            # seeds 1 2 3

Model: MathAchiev, MathDis, SES, ReadDis, SchClimate (continuous, 18-62% missing) given
ReadAchiev and CognAbility, clustered by class (ID); 4 chains, burn 1,000, 8 imputations 100
sweeps apart. Prints, per seed, the largest R-hat and the smallest bulk ESS over all monitored
parameters with ``standardize=False`` (the identity prior on the raw scale, jomo's convention)
and with the default ``standardize=True``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pandas as pd

import mlimpute as mi

DATA = Path(__file__).resolve().parent / "data" / "studentratings.csv"
VARIABLES = ["MathAchiev", "MathDis", "SES", "ReadDis", "SchClimate"]


def run(standardize: bool, seed: int) -> tuple[float, float, str]:
    d = pd.read_csv(DATA)
    model = mi.ImputationModel(cluster="ID", variables={c: "continuous" for c in VARIABLES},
                               covariates=["ReadAchiev", "CognAbility"], standardize=standardize)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        res = mi.impute(d, model, n_imputations=8, burn=1000, between=100, chains=4, seed=seed)
    dg = res.diagnostics()
    worst = dg.loc[dg["rhat"].idxmax()]
    return float(dg["rhat"].max()), float(dg["ess_bulk"].min()), str(worst["parameter"])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    a = ap.parse_args(argv)
    print(f"{'seed':>4} {'standardize':>11} {'max R-hat':>9} {'min ESS':>8}  worst parameter")
    for seed in a.seeds:
        for std in (False, True):
            rhat, ess, name = run(std, seed)
            print(f"{seed:>4} {str(std):>11} {rhat:>9.3f} {ess:>8.1f}  {name}", flush=True)


if __name__ == "__main__":
    main()
