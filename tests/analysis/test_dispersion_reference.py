"""Variance-function LMMs (``lmm(..., dispersion=...)``) against nlme 3.1-162 and glmmTMB 1.1.5.

Fixtures: tests/fixtures/dispersion (``make_dispersion.R`` and PROVENANCE.md), all in our
parameterisation ``log σ²_i = log σ² + w_iᵀγ``. Tolerance 1e-4 relative for fixed effects, their
SEs, variance components (covariances relative to their group's variances), γ and its SE; the
log-likelihood to 1e-6 absolute (both optima are exact to ~1e-8 relative; 1e-4 relative would
be 0.28 log-likelihood units here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import mlimpute as mi

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FIX = FIXTURES / "dispersion"
EXAM = "normexam ~ standlrt + sex + (1 | school)"
SLEEP = "Reaction ~ Days + (Days | Subject)"
RTOL = 1e-4
PEN = "diameter ~ 1 + (1 | plate) + (1 | sample)"
#: reference -> (formula, data, dispersion, reml); shared with benchmarks/accuracy_dispersion.py
CASES = {
    **{f"nlme_exam_varident_{m}": (EXAM, "exam", "~ sex", m == "reml") for m in ("reml", "ml")},
    **{f"nlme_sleep_varexp_{m}": (SLEEP, "sleepstudy", "~ Days", m == "reml") for m in ("reml", "ml")},
    **{f"glmmtmb_exam_disp_{m}": (EXAM, "exam", "~ sex + standlrt", m == "reml") for m in ("reml", "ml")},
    "glmmtmb_penicillin_disp_reml": (PEN, "Penicillin", "~ sample", True),  # crossed: the sparse solver
    "glmmtmb_year_disp_reml": ("y ~ x + (1 | g)", "year", "~ yc", True),   # yc = year - 2010
}


def load(data: str) -> pd.DataFrame:
    """ExamScores' complete cases in the model's columns (as in make_dispersion.R), or lme4's data."""
    if data == "exam":
        ex = pd.read_csv(FIXTURES / "data" / "ExamScores.csv")
        return ex[["normexam", "standlrt", "sex", "school"]].dropna().reset_index(drop=True)
    if data == "year":
        return pd.read_csv(FIX / "year.csv")
    return pd.read_csv(FIXTURES / "lme4" / "data" / f"{data}.csv")


def fit_case(stem: str):
    formula, data, dispersion, reml = CASES[stem]
    return mi.lmm(formula, load(data), reml=reml, dispersion=dispersion)


def _key(g, a, b):
    return (g, None if pd.isna(a) else a, None if pd.isna(b) else b)


def compare(fit, stem: str) -> dict:
    """Assert fit ≈ the reference ``stem`` and return the largest relative differences."""
    coef = pd.read_csv(FIX / f"{stem}_coef.csv").set_index("term")
    vc = pd.read_csv(FIX / f"{stem}_vc.csv")
    info = pd.read_csv(FIX / f"{stem}_fit.csv").iloc[0]
    assert list(fit.params.index) == list(coef.index)
    assert fit.nobs == info["nobs"] and fit.reml == bool(info["REML"])
    tidy = fit.tidy().set_index("term")
    ours = {_key(g, a, b): e for g, a, b, e in zip(fit.varcomp().group, fit.varcomp().term1, fit.varcomp().term2,
                                                   fit.varcomp().estimate)}
    theirs = {_key(g, a, b): e for g, a, b, e in zip(vc.group, vc.term1, vc.term2, vc.estimate)}
    assert set(ours) == set(theirs)
    # covariances can be near 0: compare them relative to their group's variances
    def scale(k):
        if k[2] is None:
            return abs(theirs[k])
        return max(abs(theirs[j]) for j in theirs if j[0] == k[0] and j[2] is None)

    se_vc = np.sqrt(np.diag(fit.varcomp_cov().to_numpy()))
    labels = list(zip(fit.varcomp().group, fit.varcomp().term1, fit.varcomp().term2))
    disp = vc[vc.std_error.notna()]
    err = {
        "beta": float(np.max(np.abs(fit.params - coef.estimate) / np.abs(coef.estimate))),
        "se_beta": float(np.max(np.abs(tidy.std_error - coef.std_error) / coef.std_error)),
        "varcomp": max(abs(ours[k] - theirs[k]) / scale(k) for k in theirs),
        "gamma": max(abs(ours[_key(*r)] - e) / abs(e) for r, e in zip(disp[["group", "term1", "term2"]].itertuples(index=False), disp.estimate)),
        "se_gamma": max(abs(se_vc[labels.index(_key(*r))] - s) / s
                        for r, s in zip(disp[["group", "term1", "term2"]].itertuples(index=False), disp.std_error)),
        "loglik_abs": abs(fit.loglik - info["logLik"]),
    }
    for name in ("beta", "se_beta", "varcomp", "gamma", "se_gamma"):
        assert err[name] <= RTOL, err
    assert err["loglik_abs"] <= 1e-6, err
    assert fit.converged and not fit.singular
    return err


@pytest.fixture(scope="module")
def exam():
    return load("exam")


@pytest.mark.parametrize("stem", list(CASES))
def test_against_nlme_and_glmmtmb(stem):
    fit = fit_case(stem)
    compare(fit, stem)
    assert fit.dispersion == CASES[stem][2]


def test_a_predictor_far_from_zero_reaches_the_same_optimum():
    """``~ year`` is ``~ yc`` (yc = year − 2010) with σ² taken at year 0: the same optimum, β,
    τ, γ and SEs (helper 27: the fit stopped 12.5 log-likelihood units short, γ 0.013 against
    0.111, and varcomp_cov was NaN, because θ is relative to σ², which moved by e^{2010 dγ})."""
    with pytest.warns(mi.ConvergenceWarning, match=r"σ², the residual variance where the covariates of "
                                                    r"dispersion '~ year' are 0, is e\^-222.* centre them"):
        fit = mi.lmm("y ~ x + (1 | g)", load("year"), reml=True, dispersion="~ year")
    ref = fit_case("glmmtmb_year_disp_reml")
    compare(ref, "glmmtmb_year_disp_reml")
    assert fit.converged and fit.loglik == pytest.approx(ref.loglik, abs=1e-6)
    np.testing.assert_allclose(fit.params, ref.params, rtol=1e-5)
    np.testing.assert_allclose(fit.tidy().std_error, ref.tidy().std_error, rtol=1e-5)
    gamma = float(fit.dispersion_params.iloc[0])
    assert gamma == pytest.approx(float(ref.dispersion_params.iloc[0]), rel=1e-5)
    assert fit.sigma2 == pytest.approx(ref.sigma2 * np.exp(-2010 * gamma), rel=1e-4)
    V, Vc = fit.varcomp_cov().to_numpy(), ref.varcomp_cov().to_numpy()
    assert np.isfinite(V).all()
    np.testing.assert_allclose(np.sqrt(V[[0, 2], [0, 2]]), np.sqrt(Vc[[0, 2], [0, 2]]), rtol=1e-3)
    # σ² at year 0 by the delta method from the centred fit's covariance
    J = np.array([np.exp(-2010 * gamma), -fit.sigma2 * 2010])
    assert V[1, 1] == pytest.approx(J @ Vc[1:, 1:] @ J, rel=1e-3)


def test_a_singular_slope_reaches_the_correlated_optimum():
    """var(Intercept) at 0 beside a random slope: the optimum has the intercept's SD 0.0005 and a
    correlation of 1.000, 0.0034 log-likelihood units higher (glmmTMB, nlme); the boundary
    restarts tried moves of the zero diagonal and the entries below it only, and the fit stopped
    at var(Intercept) = 0, flagged not converged (helper 27)."""
    with pytest.warns(mi.ConvergenceWarning, match="boundary"):   # a correlation of 1
        fit = mi.lmm("y ~ x + h + (1 + x | g)", pd.read_csv(FIX / "boundary_slope.csv"), reml=True,
                     dispersion="~ u + h")
    ref = pd.read_csv(FIX / "glmmtmb_boundary_slope_reml_fit.csv").iloc[0]
    assert fit.converged and abs(fit.loglik - ref["logLik"]) < 1e-5   # (ours 1.1e-6 higher)
    vc = fit.varcomp().set_index(["group", "term1", "term2"]).estimate
    assert 0 < vc[("g", "Intercept", None)] < 1e-5 and vc[("g", "Intercept", "x")] > 0


def test_a_variance_at_zero_out_of_range_is_refused():
    """γ = 0.4 per year: σ² at year 0 is e^{-804} times the one at the data's mean, beyond floating
    point; the fit crashed with OverflowError (helper 30). Now a DataError with the fix."""
    data = load("year")
    rng = np.random.default_rng(1)
    u = rng.normal(0, 0.7, data["g"].max() + 1)[data["g"]]
    data = data.assign(y=data["x"] + u + rng.normal(size=len(data)) * np.exp(0.2 * data["yc"]))
    with pytest.raises(mi.DataError, match=r"cannot report σ².* is e\^-8\d\d.* centre them"):
        mi.lmm("y ~ x + (1 | g)", data, reml=True, dispersion="~ year")
    assert mi.lmm("y ~ x + (1 | g)", data, reml=True, dispersion="~ yc").dispersion_params["yc"] > 0.3


def test_dispersion_terms_are_formulaic_names():
    assert list(fit_case("nlme_exam_varident_reml").dispersion_params.index) == ["sex[T.girl]"]
    assert list(fit_case("glmmtmb_exam_disp_ml").dispersion_params.index) == ["sex[T.girl]", "standlrt"]
    assert list(fit_case("glmmtmb_penicillin_disp_reml").dispersion_params.index) == [
        f"sample[T.{s}]" for s in "BCDEF"]


def test_reml_loglik_convention():
    # nlme's REML logLik is lme4's REML criterion: no ½ log|XᵀX| between them (that would be 10.96 here)
    conv = pd.read_csv(FIX / "reml_convention_exam.csv").iloc[0]
    assert abs(conv.nlme_reml_loglik - conv.lme4_reml_loglik) < 1e-8
    assert conv.half_logdet_XtX > 10


def test_homoscedastic_when_gamma_is_zero(exam):
    # γ = 0 is the homoscedastic model: the log-likelihood there is the plain LMM's at its estimates
    fit = mi.lmm(EXAM, exam, reml=False, dispersion="~ sex")
    plain = mi.lmm(EXAM, exam, reml=False)
    p = plain.covariance_parameters()
    assert fit.loglik_at(p["beta"], p["tau"], p["sigma2"], gamma=[0.0]) == pytest.approx(plain.loglik, abs=1e-8)
    assert fit.loglik > plain.loglik  # one more parameter


def test_loglik_at_the_estimates_is_the_ml_loglik(exam):
    fit = mi.lmm(EXAM, exam, reml=False, dispersion="~ sex + standlrt")
    p = fit.covariance_parameters()
    assert set(p) == {"beta", "tau", "sigma2", "gamma"}
    np.testing.assert_allclose(p["gamma"], fit.dispersion_params.to_numpy())
    assert fit.loglik_at(p["beta"], p["tau"], p["sigma2"], p["gamma"]) == pytest.approx(fit.loglik, abs=1e-7)
    with pytest.raises(mi.SpecError, match="gamma must have 2 entries .*sex\\[T.girl\\], standlrt"):
        fit.loglik_at(p["beta"], p["tau"], p["sigma2"])


def test_refit_keeps_the_variance_function():
    ml = fit_case("nlme_exam_varident_reml").refit(reml=False)
    assert ml.dispersion == "~ sex" and not ml.reml
    compare(ml, "nlme_exam_varident_ml")
    # rows out of cluster order: the engine sorts them, and a refit starts from the sorted design
    shuffled = load("sleepstudy").sample(frac=1.0, random_state=3)
    fit = mi.lmm(SLEEP, shuffled, reml=True, dispersion="~ Days")
    compare(fit.refit(reml=False), "nlme_sleep_varexp_ml")
    compare(fit.refit(reml=False).refit(reml=True), "nlme_sleep_varexp_reml")


def test_rows_order_and_labels():
    data = load("sleepstudy")
    fit = mi.lmm(SLEEP, data, dispersion="~ Days")
    # the likelihood does not depend on the row order (the solver sorts rows by cluster)
    shuffled = mi.lmm(SLEEP, data.sample(frac=1.0, random_state=3), dispersion="~ Days")
    assert shuffled.loglik == pytest.approx(fit.loglik, abs=1e-8)
    assert fit.varcomp_index()[-2:] == ["Residual~~Residual", "log-variance:Days|Residual"]
    assert "log σ²_i = log σ² + w_iᵀγ" in fit.summary()
