"""Bad input is refused with messages that name the column, the value and the fix;
singular fits and non-convergence are reported through ``singular``/``converged`` and a warning."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi


@pytest.fixture(scope="module")
def df():
    rng = np.random.default_rng(3)
    J, n = 20, 10
    g = np.repeat(np.arange(J), n)
    x = rng.normal(size=J * n)
    y = 1 + 0.5 * x + rng.normal(0, 0.7, J)[g] + rng.normal(size=J * n)
    yb = (y > 1).astype(int)
    return pd.DataFrame({"y": y, "x": x, "g": g, "yb": yb, "h": g % 4, "label": np.where(yb == 1, "yes", "no")})


def test_unknown_column(df):
    with pytest.raises(mi.DataError, match="column 'xx' in formula .* is not in the data; did you mean 'x'"):
        mi.lmm("y ~ xx + (1 | g)", df)
    with pytest.raises(mi.DataError, match="column 'school' .* not in the data"):
        mi.glmm("yb ~ x + (1 | school)", df)


def test_grouping_factor_with_missing_values(df):
    bad = df.assign(g=df["g"].astype(float).where(df.index % 50 != 7))
    with pytest.raises(mi.DataError, match=r"grouping factor 'g' has 4 missing values \(index labels 7, 57, 107, 157\).*drop those rows"):
        mi.lmm("y ~ x + (1 | g)", bad)
    with pytest.raises(mi.DataError, match="grouping factor 'g' has 4 missing values"):
        mi.lmm("y ~ x + (1 | g)", bad, na_action="drop")  # never dropped silently
    # rows are named by the data's own index, not by position
    with pytest.raises(mi.DataError, match=r"\(index labels 1007, 1057, 1107, 1157\)"):
        mi.lmm("y ~ x + (1 | g)", bad.set_axis(bad.index + 1000))
    with pytest.raises(mi.DataError, match=r"first at index label r5\)"):
        mi.glmm("yb ~ x + (1 | g)", df.assign(yb=np.where(df.index == 5, 2, df["yb"]))
                .set_axis([f"r{i}" for i in df.index]))


def test_missing_values_elsewhere(df):
    bad = df.assign(x=df["x"].where(df.index % 10 != 0))
    with pytest.raises(mi.DataError, match=r"columns 'x' \(20\) have missing values.*na_action='drop'"):
        mi.lmm("y ~ x + (1 | g)", bad)
    fit = mi.lmm("y ~ x + (1 | g)", bad, na_action="drop")
    assert fit.nobs == 180


def test_binary_outcome_not_0_1(df):
    bad = df.assign(yb=np.where(df.index == 5, 2, df["yb"]))
    with pytest.raises(mi.DataError, match=r"response 'yb' has values other than 0 and 1 \(2\.0; first at index label 5\)"):
        mi.glmm("yb ~ x + (1 | g)", bad)
    three = df.assign(label=np.where(df.index % 3 == 0, "maybe", df["label"]))
    with pytest.raises(mi.DataError, match=r"response 'label' has 3 categories \(maybe, no, yes\).*needs two"):
        mi.glmm("label ~ x + (1 | g)", three)


def test_count_outcome_not_a_count(df):
    with pytest.raises(mi.DataError, match="response 'y' has values that are not non-negative integers"):
        mi.glmm("y ~ x + (1 | g)", df, family="poisson")


def test_non_numeric_lmm_response(df):
    with pytest.raises(mi.DataError, match="response 'label' is not numeric.*glmm\\(family='binomial'\\)"):
        mi.lmm("label ~ x + (1 | g)", df)


def test_dependent_fixed_effects(df):
    # x2 = 2x: either column may be named as the one that depends on the other, but only one
    with pytest.raises(mi.DataError, match=r"linearly dependent \(rank 2 of 3\): 'x2?' are "
                                           r"combinations of the others in these data; remove"):
        mi.lmm("y ~ x + x2 + (1 | g)", df.assign(x2=2 * df["x"]))


def test_grouping_factor_with_one_level(df):
    with pytest.raises(mi.DataError, match="grouping factor 'one' has only one level"):
        mi.lmm("y ~ x + (1 | one)", df.assign(one=1))


def test_random_effects_confounded_with_residual(df):
    with pytest.raises(mi.DataError, match="'row' has 200 levels x 1 random effects = 200 >= 200 observations"):
        mi.lmm("y ~ x + (1 | row)", df.assign(row=np.arange(len(df))))


def test_transform_that_is_undefined(df):
    with pytest.raises(mi.DataError, match="non-finite value in column 'np.log\\(x\\)'"):
        mi.lmm("y ~ np.log(x) + (1 | g)", df)


def test_specification_errors(df):
    with pytest.raises(mi.SpecError, match="has no random term"):
        mi.lmm("y ~ x", df)
    with pytest.raises(mi.SpecError, match="unknown option 'reml_'"):
        mi.lmm("y ~ x + (1 | g)", df, reml_=True)
    with pytest.raises(mi.SpecError, match="family='gaussian' is not supported"):
        mi.glmm("yb ~ x + (1 | g)", df, family="gaussian")
    with pytest.raises(mi.SpecError, match="link='log' is not available for family='binomial'"):
        mi.glmm("yb ~ x + (1 | g)", df, link="log")
    with pytest.raises(mi.SpecError, match="nagq=0 must be an integer from 1"):
        mi.glmm("yb ~ x + (1 | g)", df, nagq=0)
    with pytest.raises(mi.SpecError, match="nagq=5 .* needs a single scalar random term.*use nagq=1"):
        mi.glmm("yb ~ x + (1 + x | g)", df, nagq=5)
    with pytest.raises(mi.SpecError, match="random effect 'Intercept' for group 'g' is declared twice"):
        mi.lmm("y ~ x + (1 | g) + (1 | g)", df)
    with pytest.raises(mi.SpecError, match="algebra='nested' needs grouping factors nested"):
        mi.lmm("y ~ x + (1 | g) + (1 | k)", df.assign(k=np.tile(np.arange(10), 20)), algebra="nested")
    with pytest.raises(mi.SpecError, match="REML is not defined for a GLMM"):
        mi.glmm("yb ~ x + (1 | g)", df).refit(reml=True)


def test_singular_fit_is_reported(df):
    # no between-group variation at all: every group has the same mean
    e = np.random.default_rng(5).normal(size=len(df))
    flat = df.assign(y=e - pd.Series(e).groupby(df["g"]).transform("mean").to_numpy())
    with pytest.warns(mi.ConvergenceWarning, match=r"boundary \(singular\) fit"):
        fit = mi.lmm("y ~ 1 + (1 | g)", flat)
    assert fit.singular and fit.converged  # a boundary maximum is still a maximum
    assert fit.varcomp().estimate[0] == 0.0 and fit.icc == 0.0
    with pytest.warns(mi.ConvergenceWarning, match="boundary"):
        cov = fit.varcomp_cov()
    assert np.isnan(cov.to_numpy()).all()


def test_regular_fit_does_not_warn(df):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = mi.lmm("y ~ x + (1 | g)", df)
    assert fit.converged and not fit.singular


def test_non_convergence_is_reported(df):
    with pytest.warns(mi.ConvergenceWarning, match="did not converge.*raise maxiter"):
        fit = mi.glmm("yb ~ x + (1 + x | g)", df, maxiter=1)
    assert not fit.converged
    with pytest.warns(mi.ConvergenceWarning, match="did not converge"):
        fit = mi.lmm("y ~ x + (1 + x | g) + (1 | h)", df, maxiter=1)
    assert not fit.converged
