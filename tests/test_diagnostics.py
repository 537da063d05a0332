"""R-hat and ESS against ArviZ (reference values with provenance in fixtures/arviz)."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlimpute import diagnostics as d

HERE = Path(__file__).parent / "fixtures" / "arviz"
CHAINS = np.load(HERE / "chains.npz")
REF = pd.read_csv(HERE / "reference.csv").set_index("case")


@pytest.mark.parametrize("case", ["iid", "ar09", "shifted", "skewed", "one_chain"])
def test_matches_arviz(case):
    x = CHAINS[case]
    ref = REF.loc[case]
    # Same algorithm (Vehtari et al. 2021, Geyer's initial monotone sequence): agreement is to
    # floating-point error, not Monte Carlo error.
    if np.isfinite(ref.rhat):
        assert d.rhat(x) == pytest.approx(ref.rhat, rel=1e-9)
    assert d.ess_bulk(x) == pytest.approx(ref.ess_bulk, rel=1e-9)
    assert d.ess_tail(x) == pytest.approx(ref.ess_tail, rel=1e-9)


def test_shifted_chain_is_flagged_and_iid_is_not():
    assert d.rhat(CHAINS["shifted"]) > 1.05
    assert d.rhat(CHAINS["iid"]) < 1.01


def test_constant_parameter_gives_nan_not_error():
    x = np.ones((2, 50))
    assert np.isnan(d.rhat(x)) and np.isnan(d.ess_bulk(x)) and np.isnan(d.ess_tail(x))


def test_autocorrelation_of_ar1():
    rng = np.random.default_rng(0)
    phi, n = 0.8, 200_000
    e = rng.normal(size=n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    ac = d.autocorrelation(x)
    # SE of a lag-k autocorrelation ~ sqrt((1+phi^2)/(1-phi^2)/n) ≈ 0.007: 0.03 is > 4 SE.
    assert ac[:4] == pytest.approx(phi ** np.arange(4), abs=0.03)


def test_summarise_table():
    draws = np.stack([-CHAINS["ar09"], CHAINS["ar09"]], axis=-1)
    t = d.summarise(draws, ["a", "b"])
    assert list(t.columns) == ["parameter", "rhat", "ess_bulk", "ess_tail"]
    assert t["ess_bulk"].to_numpy() == pytest.approx(REF.loc["ar09", "ess_bulk"], rel=1e-9)
