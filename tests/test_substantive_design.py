"""The substantive model's compiled design program against formulaic, and the checks before
sampling (spec and data errors name the thing and the fix)."""

import warnings
from dataclasses import replace as replace_model

import numpy as np
import pandas as pd
import pytest
from formulaic import model_matrix

import mlimpute as mi
from mlimpute.design import build
from mlimpute.substantive import POWER, TABLE


def _frame(rng, J=30, n=6):
    N = J * n
    g = np.repeat(np.arange(J), n)
    df = pd.DataFrame({
        "g": g,
        "x": rng.normal(size=N),
        "w": rng.normal(size=N),
        "z": rng.normal(size=J)[g],
        "s": pd.Categorical(rng.choice(["a", "b", "c"], N)),
        "o": rng.integers(1, 4, N).astype(float),            # ordinal coded 1..3 as numbers
        "b": rng.integers(0, 2, N).astype(float),
        "f": rng.choice(["p", "q", "r"], N).astype(object),
        "h": rng.choice(["u", "v"], J)[g].astype(object),      # level-2 nominal
        "y": rng.normal(size=N),
    })
    for c in ["x", "s", "o", "b", "f"]:
        df.loc[rng.random(N) < 0.2, c] = np.nan
    df.loc[np.isin(g, rng.choice(J, 6, replace=False)), "h"] = np.nan
    df.loc[rng.random(N) < 0.1, "y"] = np.nan
    return df


VARIABLES = {"x": "continuous", "s": "nominal", "o": "ordinal", "b": "binary", "f": "nominal",
             "h": mi.Variable("nominal", level=2)}

FORMULAS = [
    "y ~ x * z + (1 + x | g)",
    "y ~ x + I(x**2) + I(x**2 * z / 2) + z + (1 | g)",
    "y ~ C(s) * x + w + (1 + x | g)",
    "y ~ o + I(o**2) + b + x:b + (1 | g)",                  # numeric-coded categoricals as numbers
    "y ~ C(o) + C(f, contr.sum) + (1 + C(b) | g)",          # as categories, other contrasts
    "y ~ x:s + (1 | g)",                                    # full coding without the main effect
    "y ~ f:h + x:z:w + np.log(np.abs(w) + 1) + (0 + x | g) + (1 | g)",
    "y ~ x + z + (1 + x || g)",
]


@pytest.mark.parametrize("formula", FORMULAS)
def test_program_reproduces_formulaic_on_completed_data(formula):
    """The program's columns equal formulaic's model matrix (names, order, coding) on completed
    data -- checked at build time too, here on a second completion with other values."""
    rng = np.random.default_rng(1)
    df = _frame(rng)
    model = mi.ImputationModel(cluster="g", variables=VARIABLES, substantive=formula)
    data = build(df, model)
    od = data.outcome
    # another completion: every missing value replaced by a random observed value
    comp = df.copy()
    for c in ["x", "s", "o", "b", "f"]:
        miss = comp[c].isna().to_numpy()
        comp.loc[miss, c] = rng.choice(comp.loc[~miss, c].to_numpy(), miss.sum())
    hv = comp.groupby("g")["h"].first()
    fill = pd.Series(rng.choice(["u", "v"], hv.size), index=hv.index)
    comp["h"] = comp["g"].map(hv.fillna(fill))
    sorted_comp = comp.iloc[data.order].reset_index(drop=True)
    S = od.S0.copy()
    for s, src in enumerate(od.sources):
        if src.codec is None:
            continue
        codec = next(c for c in data.codecs if c.name == src.codec)
        col = sorted_comp[src.codec]
        S[:, s] = col.to_numpy(float) if codec.kind == "continuous" else \
            [list(codec.categories).index(v) for v in col]
    D = od.program.evaluate(S)
    parsed_fixed = formula.split("~")[1]
    ref_x = model_matrix(_fixed_part(parsed_fixed), sorted_comp)
    assert list(ref_x.columns) == list(od.x_names)
    assert np.allclose(D[:, :od.n_fixed], np.asarray(ref_x), atol=1e-12)


def _fixed_part(rhs: str) -> str:
    from mlimpute.analysis.formula import parse_formula

    return parse_formula("y ~" + rhs).fixed


def test_linearity_and_dependencies():
    df = _frame(np.random.default_rng(2))
    model = mi.ImputationModel(cluster="g", variables=VARIABLES,
                               substantive="y ~ x + I(x**2) + C(s) + w:x + (1 + x | g)")
    od = build(df, model).outcome
    names = [s.name for s in od.sources]
    x = names.index("x")
    assert not od.program.linear[x]               # x**2
    s = names.index("s")
    assert od.program.linear[s] and od.sources[s].categorical
    dep = od.program.dep_cols[od.program.dep_ptr[x]:od.program.dep_ptr[x + 1]]
    cols = [*od.x_names, *od.z_names]
    assert sorted(cols[c] for c in dep) == sorted(["x", "I(x ** 2)", "w:x", "x"])
    assert set(od.program.kind) <= {POWER, TABLE}


def test_complete_formula_variable_need_not_be_listed():
    """w is complete and in the formula only: the outcome model uses it, and so does model (6)
    of the incomplete variables (it was left out of it: x was imputed as if independent of w,
    a helper's simulation gave x's coefficient −25 % and w's +54 %, coverage 57 % and 2 %). A
    column constant within clusters becomes a level-2 covariate; the imputations are those of
    the model that lists the columns itself."""
    rng = np.random.default_rng(3)
    df = _frame(rng)
    df["s"] = rng.normal(size=df["g"].max() + 1)[df["g"]]          # constant within clusters
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive="y ~ x + w + s + (1 | g)")
    data = build(df, model)
    assert "w" in data.outcome.x_names and "w" in data.x1_names and "s" in data.x2_names
    assert data.model.covariates == ("w",) and data.model.level2_covariates == ("s",)
    assert model.outcome == "y" and "w" in model.columns and "y" in model.columns
    listed = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, covariates=["w"],
                                level2_covariates=["s"], substantive="y ~ x + w + s + (1 | g)")
    kw = dict(n_imputations=2, burn=20, between=5, chains=1, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        a, b = mi.impute(df, model, **kw), mi.impute(df, listed, **kw)
    pd.testing.assert_frame_equal(a.data, b.data)


@pytest.mark.parametrize("kw, match", [
    (dict(variables={"x": "continuous", "y": "continuous"}), "outcome 'y' of substantive= is also listed in variables"),
    (dict(substantive="np.log(y) ~ x + (1 | g)"), "must be a column name"),
    (dict(substantive="y ~ x"), "has no random term"),
    (dict(substantive="y ~ x + (1 | h)"), "grouped by 'h'.*cluster is 'g'; the two must name the same column: fix whichever is misspelt"),
    (dict(family="poisson"), "family='poisson' is not 'gaussian' or 'binomial'"),
    (dict(family="binomial", link="identity"), "link='identity' is not available for family='binomial'"),
    (dict(substantive=None, family="binomial"), "give substantive= too"),
    (dict(substantive="y ~ x + g + (1 | g)"), "reads the cluster column 'g' outside its random terms"),
    # the outcome on the right: with y complete it ran, imputing x as unrelated to y (helper 26)
    (dict(substantive="y ~ x + y + (1 | g)"), "outcome 'y' of substantive=.*also appears on its right-hand side"),
    (dict(substantive="y ~ x + I(y * x) + (1 | g)"), "also appears on its right-hand side"),
    (dict(substantive="y ~ x + (1 + y | g)"), "also appears on its right-hand side"),
])
def test_spec_errors(kw, match):
    base = dict(cluster="g", variables={"x": "continuous"}, substantive="y ~ x + (1 | g)")
    base.update(kw)
    with pytest.raises(mi.SpecError, match=match):
        mi.ImputationModel(**base)


@pytest.mark.parametrize("formula, exc, match", [
    ("y ~ np.log(x + 5) + (1 | g)", mi.SpecError, r"term 'np.log\(x \+ 5\)'.*transforms the incomplete variable\(s\) 'x'"),
    ("y ~ x + I((x - 1)**2) + (1 | g)", mi.SpecError, r"I\(\(x - 1\) \*\* 2\)"),
    ("y ~ x + nope + (1 | g)", mi.DataError, r"column\(s\) 'nope' of substantive=.*not found"),
    ("y ~ x + o + (1 | g)", mi.DataError, r"column 'o' of substantive= has \d+ missing value\(s\) but is not listed in variables="),
    ("y ~ x + I(x^2) + (1 | g)", mi.SpecError, r"\^ is exclusive or: write a power as \*\*, e.g. I\(x\*\*2\)"),
])
def test_data_errors_before_sampling(formula, exc, match):
    df = _frame(np.random.default_rng(4))
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive=formula)
    with pytest.raises(exc, match=match):
        build(df, model)


def test_outcome_type_errors():
    df = _frame(np.random.default_rng(5))
    df["yb"] = np.where(df["y"] > 0, 2.0, 0.0)
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive="yb ~ x + (1 | g)",
                               family="binomial")
    with pytest.raises(mi.DataError, match=r"outcome 'yb' of substantive= has values other than 0 and 1 \(2.0 in row \d+\)"):
        build(df, model)
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive="f ~ x + (1 | g)")
    with pytest.raises(mi.DataError, match="outcome 'f' of substantive= is not numeric"):
        build(df.assign(f=df["f"].fillna("p")), model)
    # three categories with family='binomial': the advice was "declare it ordinal or nominal",
    # which an analysis model's outcome cannot be
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive="f ~ x + (1 | g)",
                               family="binomial")
    with pytest.raises(mi.DataError, match=r"outcome 'f' of substantive= \(family='binomial'\) has 3 distinct "
                                           r"values \('p', 'q', 'r'\); a binomial analysis model needs two"):
        build(df, model)


def test_separation_by_an_incomplete_term_among_complete_cases_warns():
    """b = 1 ⇒ yb = 1 wherever b is observed: the imputations can follow it, leaving b's
    coefficient without a proper posterior (helper 28: it drifted to −50 unnoticed). The check
    of complete terms cannot see it; a warning names the term before sampling."""
    rng = np.random.default_rng(3)
    J, n = 30, 8
    g = np.repeat(np.arange(J), n)
    x = rng.normal(size=J * n)
    b = (rng.random(J * n) < 0.15).astype(float)
    yb = np.where(b == 1, 1.0, (x + rng.normal(size=J * n) > 0).astype(float))
    df = pd.DataFrame({"g": g, "x": x, "b": b, "yb": yb})
    df.loc[rng.random(J * n) < 0.25, "b"] = np.nan
    model = mi.ImputationModel(cluster="g", covariates=["x"], variables={"b": "binary"},
                               substantive="yb ~ x + b + (1 | g)", family="binomial")
    with pytest.warns(mi.ConvergenceWarning, match=r"outcome 'yb' .* is separated by b in the \d+ rows where "
                                                    r"the formula's variables are all observed"):
        build(df, model)
    flipped = df.assign(yb=np.where(np.arange(J * n) == int(np.flatnonzero(df["b"] == 1)[0]), 0.0, df["yb"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", mi.ConvergenceWarning)
        build(flipped, model)


def test_formula_covariates_named_in_refusals_and_constant_ones_left_out():
    """Complete columns the formula reads join the covariates; a check that refuses one says it
    came from substantive= (it said "drop it from covariates", a list the user never wrote), and
    a column constant in the data (one site) is not added (it ran before, and still does). A
    complete column whose name needs backticks (`my z`) is read (it failed in formulaic)."""
    rng = np.random.default_rng(7)
    df = _frame(rng)
    df["s3"] = 2 * df["z"] + 1
    df["site"] = "A"
    df["my z"] = rng.normal(size=len(df))
    for formula, match in (("y ~ x + z + s3 + (1 | g)", r"'(z|s3)' is read by substantive= and so is a covariate"),):
        with pytest.raises(mi.DataError, match=match):
            build(df, mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive=formula))
    data = build(df, mi.ImputationModel(cluster="g", variables={"x": "continuous"},
                                        substantive="y ~ x + w + site + `my z` + (1 | g)"))
    assert "site" not in data.model.covariates and "my z" in data.model.covariates


def test_cluster_level_variables_see_the_unit_means_of_the_formulas_complete_columns():
    """A cluster-level w was modelled given the level-2 covariates only, so a complete unit-level
    x of the formula related to w was ignored (helper 36: x:w 10 % low, the slope variance 10 %
    high). The cluster means of such columns now join the design of the variables measured on
    clusters (or a classification's units). Here y says nothing about w (its coefficient is 0),
    so without the means the imputed w would not follow x̄ at all (slope about 0); the observed
    clusters' slope of w on x̄ is about 0.9."""
    rng = np.random.default_rng(11)
    J, n = 120, 10
    g = np.repeat(np.arange(J), n)
    w = rng.normal(size=J)
    x = w[g] + rng.normal(size=J * n)
    df = pd.DataFrame({"g": g, "x": x, "w": w[g], "y": 0.3 * x + rng.normal(size=J * n),
                       "k": rng.choice(["a", "b"], J * n)})
    hole = rng.random(J) < 0.4
    df.loc[hole[g], "w"] = np.nan
    model = mi.ImputationModel(cluster="g", variables={"w": mi.Variable("continuous", level=2)},
                               substantive="y ~ x + w + k + (1 | g)")
    data = build(df, model)
    assert data.x2_names == ("Intercept", "mean(k[T.b]|g)", "mean(x|g)") and "mean(x|g)" not in data.x1_names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mi.impute(df, model, n_imputations=5, burn=300, between=30, chains=1, seed=2)
    xbar = df.groupby("g")["x"].mean().to_numpy()
    slopes = []
    for m in range(1, 6):
        wm = res.completed(m).groupby("g")["w"].first().to_numpy()
        slopes.append(np.polyfit(xbar[hole], wm[hole], 1)[0])
    observed = np.polyfit(xbar[~hole], w[~hole], 1)[0]
    # SE of a slope from 47 clusters with residual SD 0.3: about 0.05, plus the parameters' spread
    assert abs(np.mean(slopes) - observed) < 0.2, (slopes, observed)
    # a variable of one classification among several gets its own units' means; a column
    # constant within the units (z, a cluster-level covariate) adds none
    df["c"] = rng.integers(0, 15, J * n)
    df["z"] = rng.normal(size=J)[g]
    crossed = mi.ImputationModel(cluster=mi.Crossed("g", "c"),
                                 variables={"w": mi.Variable("continuous", level="g")},
                                 substantive="y ~ x + w + z + (1 | g) + (1 | c)")
    data = build(df, crossed)
    assert next(cd for cd in data.classes if cd.name == "g").x_names == ("Intercept", "z", "mean(x|g)")


def test_declared_categories_order_formula_terms_of_text_columns():
    """``C(ses)`` of a text column took its levels alphabetically ("high" the reference) where
    the same values as a Categorical took the declared order: a CSV and a Parquet copy of the
    data gave other term names and other imputations for the same seed (helper 37). The
    declared ``categories`` now order text columns, in the substantive model and in analyse()."""
    rng = np.random.default_rng(5)
    J, n = 30, 8
    g = np.repeat(np.arange(J), n)
    ses = np.array(["low", "mid", "high"])[rng.integers(0, 3, J * n)]
    x = rng.normal(size=J * n)
    df = pd.DataFrame({"g": g, "x": x, "ses": ses, "y": x + (ses == "high") + rng.normal(size=J * n)})
    df.loc[rng.random(J * n) < 0.25, "ses"] = None
    df.loc[rng.random(J * n) < 0.2, "x"] = np.nan
    cats = pd.Categorical(df["ses"], categories=["low", "mid", "high"], ordered=True)
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous",
                                                       "ses": mi.Variable("ordinal", categories=("low", "mid", "high"))},
                               substantive="y ~ x + C(ses) + (1 | g)")
    assert build(df, model).outcome.x_names == ("Intercept", "x", "C(ses)[T.mid]", "C(ses)[T.high]")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = mi.impute(df, model, n_imputations=2, burn=30, between=5, chains=1, seed=4)
        cat = mi.impute(df.assign(ses=cats), model, n_imputations=2, burn=30, between=5, chains=1, seed=4)
        np.testing.assert_array_equal(text.completed(1)["x"], cat.completed(1)["x"])
        assert (text.completed(2)["ses"].astype(str) == cat.completed(2)["ses"].astype(str)).all()
        assert text.completed(1)["ses"].dtype == df["ses"].dtype      # the output keeps the input's dtype
        terms = mi.analyse(text, "y ~ x + C(ses) + (1 | g)").tidy()["term"].tolist()
    assert terms == ["Intercept", "x", "C(ses)[T.mid]", "C(ses)[T.high]"]
    # (helper 40) a Categorical in another order takes the declared one too; a declared level no row
    # holds is left out (an all-zero dummy stopped the fit); a binary's categories are a set, not an
    # order: a text binary response keeps the data's coding
    from mlimpute.design import declared_levels, with_declared_levels
    other = df.assign(ses=pd.Categorical(df["ses"]))                       # alphabetical categories
    levels = declared_levels(model)
    assert list(with_declared_levels(other, levels)["ses"].cat.categories) == ["low", "mid", "high"]
    assert list(with_declared_levels(df[df["ses"] != "high"], levels)["ses"].cat.categories) == ["low", "mid"]
    binary = mi.ImputationModel(cluster="g", variables={"smoke": mi.Variable("binary", categories=("yes", "no"))})
    assert declared_levels(binary) == {}


def test_cluster_means_that_separate_a_cluster_level_binary_are_left_out_with_a_warning():
    """mean(x|g) that separates a cluster-level binary made a model that ran before refused over a
    column the user never wrote (helper 40); it is left out, with a warning naming the remedy."""
    rng = np.random.default_rng(4)
    J = 40
    g = np.repeat(np.arange(J), 8)
    wj = rng.integers(0, 2, J)
    x = 3.0 * wj[g] + rng.normal(0, 0.3, g.size)
    df = pd.DataFrame({"g": g, "x": x, "w": wj[g].astype(float),
                       "y": x + wj[g] + rng.normal(0, 0.5, J)[g] + rng.normal(size=g.size)})
    df.loc[np.isin(g, rng.choice(J, 10, replace=False)), "w"] = np.nan
    model = mi.ImputationModel(cluster="g", variables={"w": mi.Variable("binary", level=2)},
                               substantive="y ~ x + w + (1 | g)")
    with pytest.warns(UserWarning, match=r"the cluster means of the analysis formula's complete columns \(x\) were "
                                         r"left out .*separated by its covariates \(mean\(x\|g\)\).* "
                                         r"categorical_prior_sd=5"):
        data = build(df, model)
    assert data.x2_names == ("Intercept",)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = build(df, replace_model(model, categorical_prior_sd=5.0))
    assert kept.x2_names == ("Intercept", "mean(x|g)")


def test_backticked_outcome_name():
    """An outcome whose name needs backticks (`my y`) was refused as "not a column name",
    though backticked covariates and mi.lmm take such names."""
    df = _frame(np.random.default_rng(6)).rename(columns={"y": "my y"})
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive="`my y` ~ x + (1 | g)")
    data = build(df, model)
    assert data.outcome.name == "my y"


def test_a_singular_complete_case_fit_gives_a_proper_prior_scale(monkeypatch):
    """The random-effect covariance's prior scale is centred on the complete-case fit. A
    singular fit (a random slope of a factor: eigenvalue 1e-16, correlations inside ±0.95)
    passed the old check (eigenvalue <= 0) and made the inverse-Wishart prior improper; the
    sampler then failed with numpy's LinAlgError on every seed. Such a fit now gives way to the
    diagonal scale."""
    import mlimpute.analysis as analysis

    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(30), 10)
    df = pd.DataFrame(dict(g=g, x=rng.normal(size=300), f=rng.choice(["a", "b", "c"], 300)))
    df["y"] = df["x"] + rng.normal(size=300)
    df.loc[rng.random(300) < 0.2, "x"] = np.nan
    v, w = np.array([1.0, 0.8, 0.5]), np.array([0.2, -0.6, 0.9])   # variances above the floor
    singular = np.outer(v, v) + np.outer(w, w) + 1e-13 * np.eye(3)   # rank 2 up to rounding
    real = analysis.lmm

    def fake(formula, data, **kw):
        fit = real(formula, data, **kw)
        return type("Fit", (), dict(term_names=fit.term_names, beta=fit.beta, term_covs=(singular,),
                                    sigma2=fit.sigma2))()

    monkeypatch.setattr(analysis, "lmm", fake)
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous", "f": "nominal"},
                               substantive="y ~ x + C(f) + (1 + C(f) | g)")
    ev = np.linalg.eigvalsh(build(df, model).outcome.prior_scale)
    assert ev.min() > 1e-3 * ev.max(), ev


def test_nullable_string_covariates_in_formulas():
    """A complete covariate of pandas' nullable string dtype in a substantive formula or a
    variance function: formulaic read it as numbers ('could not convert string to float')."""
    rng = np.random.default_rng(1)
    g = np.repeat(np.arange(20), 10)
    df = pd.DataFrame(dict(g=g, x=rng.normal(size=200), sex=rng.choice(["boy", "girl"], 200)))
    df["y"] = df["x"] + (df["sex"] == "girl") + rng.normal(size=200)
    df.loc[rng.random(200) < 0.2, "x"] = np.nan
    df = df.astype({"sex": "string"})
    out = build(df, mi.ImputationModel(cluster="g", variables={"x": "continuous"},
                                       substantive="y ~ x + sex + (1 | g)")).outcome
    assert "sex[T.girl]" in out.x_names
    vf = build(df, mi.ImputationModel(cluster="g", variables={"x": mi.Variable("continuous", variance="~ sex")}))
    assert vf.variances[0].w_names == ("sex[T.girl]",)


@pytest.mark.parametrize("dtype", ["float32", "Float32"])
def test_single_precision_covariates_with_a_square(dtype):
    """A float32 covariate with a square term: formulaic squared it in single precision and the
    build-time check (rtol 1e-9) refused the formula as coded in a way not reproduced (helper 34)."""
    rng = np.random.default_rng(2)
    df = _frame(rng)
    df["x"] = df["x"].astype(dtype)
    df["w"] = (df["w"] * 37.3).astype(dtype)   # complete, away from 1: float32's rounding shows
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"},
                               substantive="y ~ x + I(x**2) + w + I(w**2) + (1 | g)")
    out = build(df, model).outcome
    assert out.x_names == ("Intercept", "x", "I(x ** 2)", "w", "I(w ** 2)")
