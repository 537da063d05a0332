"""Fixtures for the analysis tests: lme4 reference tables (tests/fixtures/lme4, see PROVENANCE.md)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "lme4"

# lme4 names -> formulaic names
_TERMS = {"(Intercept)": "Intercept", "sexgirl": "sex[T.girl]"}


class Reference:
    """One lme4 fit: coefficients, variance components and logLik."""

    def __init__(self, stem: str):
        self.coef = pd.read_csv(FIXTURES / f"{stem}_coef.csv")
        self.vc = pd.read_csv(FIXTURES / f"{stem}_vc.csv")
        self.info = pd.read_csv(FIXTURES / f"{stem}_fit.csv").iloc[0]

    def estimates(self) -> pd.Series:
        return pd.Series(self.coef["estimate"].to_numpy(), index=[_TERMS.get(t, t) for t in self.coef["term"]])

    def std_errors(self) -> pd.Series:
        return pd.Series(self.coef["std_error"].to_numpy(), index=[_TERMS.get(t, t) for t in self.coef["term"]])

    def varcomp(self, groups: dict | None = None) -> dict:
        """{(group, term1, term2): value}, lme4's group suffixes (".1") dropped for ``||`` terms.

        ``groups`` renames lme4's groups to ours (lme4 writes ``school/class`` as ``class:school``).
        """
        out = {}
        for _, r in self.vc.iterrows():
            group = re.sub(r"\.\d+$", "", r["group"])
            group = (groups or {}).get(group, group)
            t1 = None if pd.isna(r["var1"]) else _TERMS.get(r["var1"], r["var1"])
            t2 = None if pd.isna(r["var2"]) else _TERMS.get(r["var2"], r["var2"])
            out[(group, t1, t2)] = float(r["vcov"])
        return out


def fit_varcomp(fit) -> dict:
    vc = fit.varcomp()
    return {(g, a, b): float(e) for g, a, b, e in zip(vc.group, vc.term1, vc.term2, vc.estimate)}


def max_rel(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.abs(b)))


def compare(fit, ref: Reference, *, rtol_beta=1e-4, rtol_se=1e-4, rtol_vc=1e-3, atol_ll=1e-3,
            groups: dict | None = None) -> dict:
    """Assert fit ≈ lme4 and return the observed maximum errors (for the report)."""
    est, se = ref.estimates(), ref.std_errors()
    assert list(fit.params.index) == list(est.index)
    tidy = fit.tidy().set_index("term")
    err = {
        "beta": max_rel(fit.params[est.index], est),
        "se": max_rel(tidy.loc[se.index, "std_error"], se),
        "loglik": abs(fit.loglik - ref.info["logLik"]),
    }
    ours, theirs = fit_varcomp(fit), ref.varcomp(groups)
    assert set(ours) == set(theirs)
    keys = list(theirs)
    # covariances can be near 0, so compare them relative to the variances of their group
    scale = {k: max(abs(theirs[k]), max(abs(v) for kk, v in theirs.items() if kk[0] == k[0] and kk[2] is None)) for k in keys}
    err["vc"] = max(abs(ours[k] - theirs[k]) / scale[k] for k in keys)
    assert err["beta"] <= rtol_beta, err
    assert err["se"] <= rtol_se, err
    assert err["vc"] <= rtol_vc, err
    assert err["loglik"] <= atol_ll, err
    assert fit.nobs == ref.info["nobs"]
    assert fit.reml == bool(ref.info["REML"])
    return err


@pytest.fixture(scope="session")
def lme4_table():
    """Read one of the extra reference tables (tests/fixtures/lme4/<name>.csv)."""

    def load(name: str) -> pd.DataFrame:
        return pd.read_csv(FIXTURES / f"{name}.csv")

    return load


@pytest.fixture(scope="session")
def lme4_ref():
    return Reference


@pytest.fixture(scope="session")
def lme4_data():
    def load(name: str) -> pd.DataFrame:
        path = FIXTURES / "data" / f"{name}.csv"
        if not path.exists():  # datasets shared with other tests live in fixtures/data
            path = FIXTURES.parent / "data" / f"{name}.csv"
        return pd.read_csv(path)

    return load


@pytest.fixture(scope="session")
def lme4_compare():
    return compare
