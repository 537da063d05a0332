"""Linear mixed models against lme4 1.1-31 (fixtures and their R scripts in tests/fixtures/lme4).

Tolerances (issue #4): fixed effects and SEs rtol 1e-4, variance components rtol 1e-3 (covariances
relative to their group's variances), log-likelihood 1e-3 absolute. The three-level
(``school/class``) and crossed fits below are held to 1e-4 throughout, and agree to ~1e-6.
"""

from __future__ import annotations

import pytest

import mlimpute as mi


def test_sleepstudy_reml(lme4_data, lme4_ref, lme4_compare):
    fit = mi.lmm("Reaction ~ Days + (Days | Subject)", lme4_data("sleepstudy"), reml=True)
    lme4_compare(fit, lme4_ref("lmm_sleepstudy_reml"))
    assert fit.converged and not fit.singular


def test_sleepstudy_ml(lme4_data, lme4_ref, lme4_compare):
    fit = mi.lmm("Reaction ~ Days + (Days | Subject)", lme4_data("sleepstudy"), reml=False)
    lme4_compare(fit, lme4_ref("lmm_sleepstudy_ml"))


def test_exam_scores_complete_cases_reml(lme4_data, lme4_ref, lme4_compare):
    ex = lme4_data("ExamScores")[["normexam", "standlrt", "sex", "avslrt", "school"]].dropna()
    fit = mi.lmm("normexam ~ standlrt + sex + avslrt + (1 + standlrt | school)", ex)
    lme4_compare(fit, lme4_ref("lmm_exam_cc_reml"))
    assert list(fit.params.index) == ["Intercept", "standlrt", "sex[T.girl]", "avslrt"]
    assert fit.ngroups == {"school": 55}  # schools with complete cases


def test_exam_scores_drop_missing_is_complete_cases(lme4_data, lme4_ref, lme4_compare):
    # na_action="drop" keeps the same rows as R's na.omit on the model's columns
    ex = lme4_data("ExamScores")
    fit = mi.lmm("normexam ~ standlrt + sex + avslrt + (1 + standlrt | school)", ex, na_action="drop")
    lme4_compare(fit, lme4_ref("lmm_exam_cc_reml"))


@pytest.mark.parametrize("algebra", ["auto", "sparse"])
def test_penicillin_crossed(lme4_data, lme4_ref, lme4_compare, algebra):
    fit = mi.lmm("diameter ~ 1 + (1 | plate) + (1 | sample)", lme4_data("Penicillin"), algebra=algebra)
    lme4_compare(fit, lme4_ref("lmm_penicillin_crossed"))
    assert fit.ngroups == {"plate": 24, "sample": 6}


def test_crossed_with_covariate(lme4_data, lme4_ref, lme4_compare):
    fit = mi.lmm("y ~ x + (1 | school) + (1 | nbhd)", lme4_data("crossed"))
    lme4_compare(fit, lme4_ref("extra_crossed_reml"))


@pytest.mark.parametrize("reml", [True, False])
def test_nested_three_levels(lme4_data, lme4_ref, lme4_compare, reml):
    data = lme4_data("nested3")
    fit = mi.lmm("y ~ x + z + (1 + x | school) + (1 | class)", data, reml=reml)
    lme4_compare(fit, lme4_ref(f"extra_nested3_{'reml' if reml else 'ml'}"))
    assert fit.ngroups == {"school": 40, "class": 160}
    # the same model written with lme4's nesting operator (class labels are unique here, so
    # class and school:class are the same factor)
    nested = mi.lmm("y ~ x + z + (1 + x | school) + (1 | school:class)", data, reml=reml)
    assert nested.loglik == pytest.approx(fit.loglik, abs=1e-8)


def test_uncorrelated_double_bar(lme4_data, lme4_ref, lme4_compare):
    fit = mi.lmm("Reaction ~ Days + (Days || Subject)", lme4_data("sleepstudy"))
    lme4_compare(fit, lme4_ref("extra_sleep_uncorr_reml"))
    vc = fit.varcomp()
    assert list(zip(vc.group, vc.term1, vc.term2)) == [
        ("Subject", "Intercept", None), ("Subject", "Days", None), ("Residual", None, None)]


def test_random_slope_without_intercept(lme4_data, lme4_ref, lme4_compare):
    fit = mi.lmm("Reaction ~ Days + (0 + Days | Subject)", lme4_data("sleepstudy"))
    lme4_compare(fit, lme4_ref("extra_sleep_slope_reml"))


TIGHT = {"rtol_beta": 1e-4, "rtol_se": 1e-4, "rtol_vc": 1e-4, "atol_ll": 1e-4}


@pytest.mark.parametrize("reml", [True, False])
def test_three_levels_with_nesting_operator(lme4_data, lme4_ref, lme4_compare, reml):
    # class labels 1..4 repeat in every school: (1 | school/class) = (1 | school) + (1 | school:class)
    data = lme4_data("three_level")
    fit = mi.lmm("y ~ x + (1 | school/class)", data, reml=reml)
    # measured: beta 1e-9, SEs 6e-8, variances 1.5e-7, logLik 7e-12
    lme4_compare(fit, lme4_ref(f"three_level_{'reml' if reml else 'ml'}"), groups={"class:school": "school:class"},
                 **TIGHT)
    assert fit.ngroups == {"school": 30, "school:class": 120}
    assert mi.lmm("y ~ x + (1 | class)", data, reml=reml).ngroups == {"class": 4}  # not the same factor


@pytest.mark.parametrize(("stem", "reml"), [("extra_crossed_reml", True), ("crossed_ml", False)])
def test_crossed_tight(lme4_data, lme4_ref, lme4_compare, stem, reml):
    fit = mi.lmm("y ~ x + (1 | school) + (1 | nbhd)", lme4_data("crossed"), reml=reml)
    # measured: beta 7e-10, SEs 1.8e-7, variances 6.3e-7, logLik 5e-12
    lme4_compare(fit, lme4_ref(stem), **TIGHT)
    assert fit.ngroups == {"school": 30, "nbhd": 20}
