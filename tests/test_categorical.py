"""Mixed-type variables: invariants, outputs in the input's dtypes and labels, and bad input."""

import warnings

import numpy as np
import pandas as pd
import pytest
from _sim import NOM_LABELS, ORD_LABELS, simulate_mixed

import mlimpute as mi

MODEL = mi.ImputationModel(
    cluster="g",
    variables={"y": "continuous", "b": "binary", "o": "ordinal", "f": "nominal",
               "w": mi.Variable("continuous", level=2), "v": mi.Variable("binary", level=2)},
    covariates=["x"],
)


def run(df, seed=1, model=MODEL, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mi.ConvergenceWarning)
        return mi.impute(df, model, seed=seed, **{**dict(n_imputations=3, burn=20, between=5, chains=1), **kw})


@pytest.fixture(scope="module")
def small():
    data, _, _ = simulate_mixed(np.random.default_rng(4), J=25, n=8)
    data["s"] = np.where(np.arange(len(data)) % 2, "p", "q")   # a string column outside the model
    return data


@pytest.fixture(scope="module")
def result(small):
    return run(small)


def test_dtypes_and_labels_preserved(small, result):
    for c in small.columns:
        assert result.data[c].dtype == small[c].dtype, c
    d = result.data
    assert set(d["o"].unique()) <= set(ORD_LABELS) and d["o"].cat.ordered
    assert set(d["f"].unique()) <= set(NOM_LABELS)
    assert set(d["b"].unique()) <= {0, 1}
    assert set(d["v"].unique()) <= {True, False}
    assert not d[["y", "b", "o", "f", "w", "v"]].isna().any().any()


def test_observed_cells_never_change(small, result):
    for k in (1, 3):
        comp = result.completed(k)
        for c in small.columns:
            obs = small[c].notna().to_numpy()
            assert (comp[c].to_numpy()[obs] == small[c].to_numpy()[obs]).all(), c


def test_level2_categorical_constant_within_cluster(result):
    assert (result.data.groupby(["imputation", "g"])["v"].nunique() == 1).all()
    assert (result.data.groupby(["imputation", "g"])["w"].nunique() == 1).all()


def test_shuffle_and_seed_invariance(small, result):
    perm = np.random.default_rng(9).permutation(len(small))
    res2 = run(small.iloc[perm])
    pd.testing.assert_frame_equal(res2.completed(2), result.completed(2).iloc[perm])
    other = run(small, seed=2)
    assert not other.data.equals(result.data)


def test_trace_has_thresholds_and_no_fixed_elements(result):
    names = result.parameter_names
    assert "cut[o:2]" in names and "cut[o:3]" in names
    assert "omega1[b,b]" not in names and "omega1[o,o]" not in names    # fixed to 1
    assert "omega1[f[B],f[A]]" not in names                           # nominal block fixed
    assert "omega1[f[A],b]" in names                                  # free
    assert "omega2[v,v]" not in names and "omega2[w,w]" in names
    assert np.isfinite(result.diagnostics()["rhat"]).all()


def test_categories_never_observed_need_a_proper_prior():
    """A declared category never observed leaves its latent mean without a proper posterior
    under flat priors: refused, naming the fix; with weakly informative priors it runs."""
    df = pd.DataFrame({"g": np.repeat([1, 2, 3], 4), "y": np.arange(12.0),
                       "b": ["no"] * 11 + [None]})
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous",
                                                  "b": mi.Variable("binary", categories=("no", "yes"))})
    with pytest.raises(mi.DataError, match=r"variable 'b' declares category 'yes', which is never observed.*categorical_prior_sd=5"):
        run(df, model=m)
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous",
                                                  "b": mi.Variable("binary", categories=("no", "yes"))},
                           categorical_prior_sd=5)
    res = run(df, model=m)
    assert set(res.data["b"]) <= {"no", "yes"}


# --- bad input -------------------------------------------------------------------------------
def _base():
    rng = np.random.default_rng(0)
    return pd.DataFrame({"g": np.repeat(np.arange(5), 6), "y": rng.normal(size=30),
                         "c": rng.choice(["a", "b", "c"], size=30)})


def test_binary_with_three_values():
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "c": "binary"})
    with pytest.raises(mi.DataError, match=r"column 'c' is declared binary but has 3 distinct value\(s\) \('a', 'b', 'c'\); declare it ordinal or nominal"):
        run(_base(), model=m)


def test_ordinal_with_a_single_observed_category():
    df = _base().assign(c="a")
    df.loc[3, "c"] = None
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "c": "ordinal"})
    with pytest.raises(mi.DataError, match=r"column 'c' is declared ordinal but only one category \('a'\) is observed"):
        run(df, model=m)


def test_nominal_with_too_many_categories():
    df = pd.DataFrame({"g": np.repeat(np.arange(6), 10), "y": np.arange(60.0), "c": [f"k{i}" for i in range(60)]})
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "c": "nominal"})
    with pytest.raises(mi.DataError, match=r"column 'c' is declared nominal with 60 categories; .* at most 50"):
        run(df, model=m)


def test_categorical_level2_varying_within_cluster():
    df = _base()
    df["v"] = np.repeat(["x", "y", "x", "y", "x"], 6)
    df.loc[7, "v"] = "x"  # cluster 1 is 'y' elsewhere
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "v": mi.Variable("binary", level=2)})
    with pytest.raises(mi.DataError, match=r"column 'v' is declared level-2 \(variable\) but varies within cluster 'g'=1 \(values 'x', 'y'\)"):
        run(df, model=m)


def test_value_outside_declared_categories():
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous",
                                                  "c": mi.Variable("nominal", categories=("a", "b"))})
    with pytest.raises(mi.DataError, match=r"column 'c' holds value 'c', which is not among its declared categories"):
        run(_base(), model=m)


def test_categorical_without_observed_values():
    df = _base().assign(c=None)
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "c": "nominal"})
    with pytest.raises(mi.DataError, match="variable 'c' has no observed value"):
        run(df, model=m)


def _several_ordinals(rng, J=120, n=12):
    """Ordinals with K = 3, 4, 5 at level 1 and K = 3, 4 at level 2, cut from correlated latent
    normals with known thresholds (γ_1 = 0, as the model's identification)."""
    cuts = {"o3": [0.0, 0.7], "o4": [0.0, 0.5, 1.2], "o5": [0.0, 0.4, 0.9, 1.6],
            "l3": [0.0, 0.8], "l4": [0.0, 0.6, 1.3]}
    g = np.repeat(np.arange(J), n)
    u = rng.normal(0, 0.5, J)
    e = rng.multivariate_normal(np.zeros(3), 0.5 * np.eye(3) + 0.5, size=J * n)
    df = pd.DataFrame({"g": g})
    for k, name in enumerate(["o3", "o4", "o5"]):
        df[name] = np.searchsorted(cuts[name], 0.3 + u[g] + e[:, k]) + 1
        df.loc[rng.random(len(df)) < 0.15, name] = np.nan
    for name in ["l3", "l4"]:
        lv = np.searchsorted(cuts[name], 0.3 + 0.8 * u + rng.normal(0, 0.6, J)) + 1
        lv = np.where(rng.random(J) < 0.15, np.nan, lv)
        df[name] = lv[g]
    return df, cuts


def test_several_ordinals_with_different_categories_at_both_levels():
    """Two or more ordinals with different K at one level crashed on the first sweep (one step
    size per free threshold, acceptance counted per variable); each free threshold now has its
    own step size, tuned by its own acceptance."""
    from mlimpute.design import build
    from mlimpute.sampler import initial_state, prepare_static, sweep

    df, cuts = _several_ordinals(np.random.default_rng(3))
    model = mi.ImputationModel(
        cluster="g",
        variables={"o3": "ordinal", "o4": "ordinal", "o5": "ordinal",
                   "l3": mi.Variable("ordinal", level=2), "l4": mi.Variable("ordinal", level=2)})
    st = prepare_static(build(df, model))
    rng = np.random.default_rng(1)
    s = initial_state(st, rng)
    slc1, slc2 = st.step_slices[2], st.step_slices[3]
    assert slc1.stop - slc1.start == 1 + 2 + 3 and slc2.stop - slc2.start == 1 + 2
    for it in range(60):
        s = sweep(rng, st, s, adapt_at=it)
    # every step size was tuned on its own: no two free thresholds share a step size
    tuned = np.concatenate([s.steps[slc1], s.steps[slc2]])
    assert np.unique(tuned).size == tuned.size

    res = run(df, model=model, n_imputations=4, burn=600, between=100, chains=2)
    for name, cut in cuts.items():
        assert set(res.data[name].unique()) <= set(range(1, len(cut) + 2)), name
    assert (res.data.groupby(["imputation", "g"])[["l3", "l4"]].nunique() == 1).all().all()
    # thresholds recovered: posterior mean within 4 posterior SDs of the truth (the latent
    # location is free, so compare the gaps γ_k − γ_1 = γ_k, which the model identifies)
    summ = res.summary().set_index("parameter")
    for name, cut in cuts.items():
        for k in range(2, len(cut) + 1):
            row = summ.loc[f"cut[{name}:{k}]"]
            assert abs(row["mean"] - cut[k - 1]) < 4 * row["sd"] + 0.02, (name, k, row["mean"])


def test_separation_is_refused_before_sampling_and_weak_priors_allow_it():
    """A binary variable that a covariate predicts perfectly (b = 1 exactly where x > 0) has no
    proper posterior under flat priors; with categorical_prior_sd the coefficient stays finite
    (posterior mean within a few prior SDs) in both samplers."""
    rng = np.random.default_rng(5)
    g = np.repeat(np.arange(20), 10)
    x = rng.normal(size=200)
    df = pd.DataFrame({"g": g, "x": x, "y": rng.normal(size=200), "b": (x > 0).astype(float)})
    df.loc[rng.random(200) < 0.2, "b"] = np.nan
    base = dict(cluster="g", variables={"y": "continuous", "b": "binary"}, covariates=["x"])
    with pytest.raises(mi.DataError, match=r"variable 'b' is separated by its covariates \(x\).*categorical_prior_sd=5"):
        run(df, model=mi.ImputationModel(**base))
    general = {**base, "variables": {"y": mi.Variable("continuous", variance="~ x"), "b": "binary"}}
    for spec in (base, general):    # the two-level sampler, and the general one (variance function)
        model = mi.ImputationModel(**spec, categorical_prior_sd=2.5)
        assert model.general == (spec is general)
        res = run(df, model=model, n_imputations=2, burn=300, between=50)
        s = res.summary().set_index("parameter")
        assert 0 < s.loc["beta1[b:x]", "mean"] < 4 * 2.5


def test_two_level_sampler_path_applies_the_prior_through_the_general_builder():
    """The general sampler (via a variance function) refuses and accepts the same data."""
    from mlimpute.design import _build_classified
    from mlimpute.identification import separating_direction

    x = np.array([[1, -1.0], [1, -0.5], [1, 0.5], [1, 2.0]])
    assert separating_direction(x, np.array([False, False, True, True])) is not None
    assert separating_direction(x, np.array([False, True, False, True])) is None
    df = pd.DataFrame({"g": np.repeat([0, 1], 4), "x": [-1, -.5, .5, 2] * 2, "y": np.arange(8.0),
                       "o": [1, 1, 2, 3, 1, 2, 2, 3]})
    model = mi.ImputationModel(cluster="g", variables={"y": "continuous", "o": "ordinal"}, covariates=["x"])
    with pytest.raises(mi.DataError, match="variable 'o' is separated"):
        _build_classified(df, model)


def test_separation_check_on_a_subset_of_large_data_agrees_with_the_full_program():
    """The subset shortcut answers as the linear program on all rows: complete separation, a
    quasi-separation by a rare dummy that the subset misses, and overlapping data."""
    from mlimpute.identification import _separating_lp, separating_direction

    rng = np.random.default_rng(3)
    n = 20_000
    t = rng.normal(size=n)
    d = np.zeros(n)
    d[[17, 5_003, 11_111]] = 1.0                         # off the evenly spaced subset
    x = np.column_stack([np.ones(n), t, d])
    complete = t > 0
    rare = (rng.random(n) < 0.4) | (d == 1)              # d = 1 only on one side: quasi-separated
    overlap = 0.5 * t + rng.logistic(size=n) > 0
    for side, separated in ((complete, True), (rare, True), (overlap, False)):
        got = separating_direction(x, side, subset=500)
        assert (got is not None) == separated
        assert (_separating_lp(x, side) is not None) == separated
    assert separating_direction(x, rare, subset=500)[2] > 0.5


def test_text_ordinal_needs_its_order():
    """Text categories of an ordinal variable were sorted alphabetically without a word (high <
    low < mid): a wrong threshold model. The order must be given (categories= or an ordered
    Categorical); numbers keep their numeric order."""
    df = _base().assign(c=lambda d: np.array(["low", "mid", "high"])[np.arange(len(d)) % 3])
    df.loc[3, "c"] = None
    with pytest.raises(mi.DataError, match=r"ordinal variable 'c' holds text \('high', 'low', 'mid'\): the order .* "
                                           r"categories=\[\.\.\.\]"):
        run(df, model=mi.ImputationModel(cluster="g", variables={"y": "continuous", "c": "ordinal"}))
    ok = mi.ImputationModel(cluster="g", variables={"y": "continuous",
                                                    "c": mi.Variable("ordinal", categories=["low", "mid", "high"])})
    assert set(run(df, model=ok).completed(1)["c"]) == {"low", "mid", "high"}
    ordered = df.assign(c=pd.Categorical(df["c"], categories=["low", "mid", "high"], ordered=True))
    run(ordered, model=mi.ImputationModel(cluster="g", variables={"y": "continuous", "c": "ordinal"}))
