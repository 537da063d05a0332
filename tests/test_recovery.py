"""Parameter recovery: simulate from the joint model with known B1, B2, Ω1, Ω2 and check the
posterior.

Tolerance: the posterior mean differs from the truth by the sampling error of the data (about
one posterior SD) plus Monte Carlo error (posterior SD / sqrt(ESS)). We require
|mean − truth| < 4 sqrt(sd² + mcse²) for every parameter: a correct sampler passes (each
comparison fails with probability ~6e-5), while a covariance draw off by a factor, a wrong
conditional of the level-2 variables or a lost level-1/level-2 correlation fails by many SDs
with J = 300 clusters.
"""

import warnings

import numpy as np
import pytest
from _sim import simulate

import mlimpute as mi


def _lower(a):
    return a[np.tril_indices(a.shape[0])]


@pytest.mark.parametrize("slope, seed", [(True, 5), (False, 6)])
def test_posterior_recovers_truth(slope, seed):
    data, _, truth = simulate(np.random.default_rng(seed), J=300, n=20, slope=slope)
    model = mi.ImputationModel(
        cluster="g",
        variables={"y1": "continuous", "y2": "continuous", "w": mi.Variable("continuous", level=2)},
        covariates=["x"], random_slopes=["x"] if slope else [],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        res = mi.impute(data, model, n_imputations=10, burn=500, between=100, chains=2, seed=1)
    summ = res.summary().set_index("parameter")
    diag = res.diagnostics().set_index("parameter")
    true = np.concatenate([truth.b1.T.ravel(), truth.b2.T.ravel(), _lower(truth.omega1), _lower(truth.omega2)])
    mcse = summ["sd"] / np.sqrt(diag["ess_bulk"])
    z = (summ["mean"] - true) / np.hypot(summ["sd"], mcse)
    assert len(z) == len(true)
    assert (z.abs() < 4).all(), z[z.abs() >= 4]
    assert (diag["rhat"] < 1.1).all(), diag[diag["rhat"] >= 1.1]
