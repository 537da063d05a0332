"""Recovery of the mixed-type model: probit coefficients, ordinal thresholds, correlations of
latent with continuous variables, and Ω2, from data simulated with known values.

Tolerance as in test_recovery.py: |posterior mean − truth| < 4.5 sqrt(sd² + mcse²) with
mcse = sd / sqrt(ESS_bulk): the posterior mean is off the truth by about one posterior SD
(sampling error of the data) plus Monte Carlo error; 4.5 rather than 4 because ~50 parameters
are checked at once (a correct sampler fails one with probability ~3e-4).
"""

import warnings

import numpy as np
from _sim import simulate_mixed

import mlimpute as mi


def test_mixed_posterior_recovers_truth():
    data, _, t = simulate_mixed(np.random.default_rng(21), J=250, n=16)
    model = mi.ImputationModel(
        cluster="g",
        variables={"y": "continuous", "b": "binary", "o": "ordinal", "f": "nominal",
                   "w": mi.Variable("continuous", level=2), "v": mi.Variable("binary", level=2)},
        covariates=["x"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        res = mi.impute(data, model, n_imputations=10, burn=400, between=100, chains=2, seed=3)
    summ = res.summary().set_index("parameter")
    diag = res.diagnostics().set_index("parameter")
    true = t.monitored()
    assert list(summ.index[-2:]) == ["cut[o:2]", "cut[o:3]"]
    assert len(true) == len(summ)
    mcse = summ["sd"] / np.sqrt(diag["ess_bulk"])
    z = (summ["mean"] - true) / np.hypot(summ["sd"], mcse)
    assert (z.abs() < 4.5).all(), z[z.abs() >= 4.5]
    # the correlations of the latent normals with the continuous variable, on their own
    for name in ("omega1[b,y]", "omega1[o,y]", "omega1[f[A],y]"):
        assert abs(z[name]) < 4.5
