"""A paired check of the validation study's largest imputation bias (docs/validation.md): the
intercept variance of J100-n5-icc0.1-r40-MCAR-cont (truth 0.1) with the default inverse-Wishart
prior of Ω2 (scale I on the standardised scale) and with a scale SCALE times smaller.

    python benchmarks/validation_prior_check.py 1      # the default
    python benchmarks/validation_prior_check.py 0.1    # prior_l2 scale 0.1 x diag(data variances)

120 replications of the study's own datasets, 10 imputations from 2 chains each; prints the mean
pooled var(Intercept) and its relative bias ± Monte Carlo SE.
"""

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import study_validation as sv  # noqa: E402

import mlimpute as mi  # noqa: E402
import argparse  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("scale", type=float, help="the prior_l2 scale as a multiple of the default (1: the default)")
design = "J100-n5-icc0.1-r40-MCAR-cont"
scale = ap.parse_args().scale
est = []
for rep in range(120):
    rng = np.random.default_rng([20261202, rep, sv.GRID.index(design)])
    data, full = sv.simulate(design, rng)
    # a prior scale is stated on the data's scale: SCALE x the variables' variances is SCALE x I
    # on the standardised scale the sampler works on
    prior = (mi.CovariancePrior() if scale == 1 else
             mi.CovariancePrior(scale=tuple(map(tuple, scale * np.diag([data.x.var(), data.y.var()])))))
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous", "y": "continuous"}, covariates=["w"],
                               prior_l2=prior)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mi.impute(data, model, n_imputations=10, burn=500, between=50, chains=2, seed=rep)
        vc = mi.analyse(res, sv.FORMULA_TEXT).varcomp()
    est.append(float(vc[(vc.group == "g") & (vc.term1 == "Intercept")]["mean"].iloc[0]))
est = np.array(est)
print(scale, f"var(Intercept) mean {est.mean():.4f} rel bias {100*(est.mean()/0.1-1):+.1f} +- {100*est.std()/np.sqrt(est.size)/0.1:.1f}")
