import pytest

import mlimpute as mi


def test_kind_strings_become_variables():
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous", "w": mi.Variable("continuous", level=2)})
    assert m.variables["y"] == mi.Variable("continuous", level=1)
    assert m.level1_variables == ("y",)
    assert m.level2_variables == ("w",)
    assert m.columns == ("g", "y", "w")


def test_model_is_frozen():
    m = mi.ImputationModel(cluster="g", variables={"y": "continuous"})
    with pytest.raises(AttributeError):
        m.cluster = "h"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(variables={"y": "numeric"}), r"variable kind 'numeric' is not one of"),
        (dict(variables={}), r"non-empty mapping"),
        (dict(variables={"y": "continuous"}, covariance="random"), r"covariance='random' is not one of"),
        (dict(variables={"y": "continuous"}, random_slopes=["x"]), r"random slope 'x' is not among the level-1 covariates"),
        (dict(variables={"y": "continuous", "x": "continuous"}, covariates=["x"]), r"column 'x' appears both as variables and as covariates"),
        (dict(variables={"g": "continuous"}), r"column 'g' appears both as cluster and as variables"),
        (dict(variables={"y": "continuous"}, covariates=["x", "x"]), r"covariates lists \['x'\] more than once"),
        (dict(variables={"y": 3}), r"expected a kind string or mlimpute.Variable"),
    ],
)
def test_bad_specs(kwargs, match):
    with pytest.raises(mi.SpecError, match=match):
        mi.ImputationModel(cluster="g", **kwargs)


def test_variable_checks():
    with pytest.raises(mi.SpecError, match=r"variable level 3 must be 1"):
        mi.Variable("continuous", level=3)
    with pytest.raises(mi.SpecError, match="only meaningful for categorical"):
        mi.Variable("continuous", categories=[1, 2])


def test_prior_validation_and_resolution():
    p = mi.CovariancePrior(scale=[[2.0, 0.5], [0.5, 1.0]], df=5)
    scale, df = p.resolve(2, "level-1")
    assert scale[0, 0] == 2.0 and df == 5
    with pytest.raises(mi.SpecError, match="level-1 prior scale is 2x2 but the level-1 covariance is 3x3"):
        p.resolve(3, "level-1")
    with pytest.raises(mi.SpecError, match="positive definite"):
        mi.CovariancePrior(scale=[[1.0, 2.0], [2.0, 1.0]])
    with pytest.raises(mi.SpecError, match="prior df must be a positive number"):
        mi.CovariancePrior(df=-1)
    # default: identity scale, df = dimension (jomo's default)
    scale, df = mi.CovariancePrior().resolve(3, "level-2")
    assert (scale == __import__("numpy").eye(3)).all() and df == 3


def test_prior_inputs_and_an_ignored_level2_prior_are_refused():
    """df given as text or a scale with NaN got numpy's TypeError or 'must be symmetric'; a
    prior_l2 with several classifications (or variance functions) was silently ignored."""
    with pytest.raises(mi.SpecError, match=r"prior df must be a number, got '3'"):
        mi.CovariancePrior(df="3")
    with pytest.raises(mi.SpecError, match=r"prior scale must hold finite numbers"):
        mi.CovariancePrior(scale=[[float("nan")]])
    with pytest.raises(mi.SpecError, match=r"prior scale must be a square matrix of numbers"):
        mi.CovariancePrior(scale=[["a"]])
    with pytest.raises(mi.SpecError, match=r"prior_l2 is the prior of the two-level model's level-2 covariance"):
        mi.ImputationModel(cluster=mi.Crossed("a", "b"), variables={"y": "continuous"},
                           prior_l2=mi.CovariancePrior(df=3))
