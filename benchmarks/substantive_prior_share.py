"""The default prior's share of the substantive model's random-effect variances (the quantity
the PriorWarning reads, ``mlimpute.diagnostics.warn_prior`` with ``sampler.sweep.substantive_priors``)
on the designs of ``study_substantive.py``, and whether a run warns.

    python benchmarks/substantive_prior_share.py                    # 3 replications per design
    python benchmarks/substantive_prior_share.py --reps 10 --designs binary

Each replication: the study's data and substantive model, M = 4 from 2 chains, burn 1,000,
100 sweeps apart; printed: each variance's share (the warning fires above 0.20), and the
PriorWarnings the run raised (those about the joint model's own variances included).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlimpute as mi  # noqa: E402
import mlimpute.diagnostics as dg  # noqa: E402
import study_substantive as study  # noqa: E402
from mlimpute.design import build  # noqa: E402
from mlimpute.impute import _affine  # noqa: E402
from mlimpute.sampler import variance_priors  # noqa: E402


def shares(data, model, res) -> list[tuple[str, float]]:
    """(name, share) of every substantive variance, whatever its size."""
    md = build(data, model)
    n = min(t.shape[0] for t in res.traces)
    draws = np.stack([t[:n] for t in res.traces])
    limit, dg.PRIOR_SHARE = dg.PRIOR_SHARE, 0.0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dg.warn_prior(draws, res.parameter_names, _affine(md),
                                 [v for v in variance_priors(md) if v.matrix == "substantive"])
    finally:
        dg.PRIOR_SHARE = limit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--designs", nargs="*", default=list(study.FORMULA))
    args = ap.parse_args()
    for design in args.designs:
        for rep in range(args.reps):
            data, _ = study.simulate(design, np.random.default_rng([20261201, rep, list(study.FORMULA).index(design)]))
            model = study._models(design)["smc"]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = mi.impute(data, model, n_imputations=4, burn=1000, between=100, chains=2, seed=rep)
            fired = [str(w.message).split(", worst: ")[1].split(" = ")[0] for w in caught
                     if w.category is mi.PriorWarning]
            shown = ", ".join(f"{name} {share:.3f}" for name, share in shares(data, model, res))
            print(f"{design} rep {rep}: {shown}; PriorWarning: {fired or 'none'}", flush=True)


if __name__ == "__main__":
    main()
