"""lme4 bar syntax: the outer layer of the right-hand side is split off, the rest is formulaic's."""

from __future__ import annotations

import pytest

from mlimpute import SpecError
from mlimpute.analysis.formula import Membership, RandomTerm, parse_formula


def test_fixed_and_random_parts():
    p = parse_formula("y ~ x + C(g) + x:z + (1 + x | school) + (1 | class)")
    assert p.response == "y"
    assert p.fixed == "x + C(g) + x:z"
    assert p.random == (
        RandomTerm("1 + x", ("school",), True, "(1 + x | school)"),
        RandomTerm("1", ("class",), True, "(1 | class)"),
    )


@pytest.mark.parametrize(
    ("formula", "fixed"),
    [
        ("y ~ (1 | g)", "1"),
        ("y ~ 0 + x + (1 | g)", "0 + x"),
        ("y ~ x - 1 + (1|g)", "x - 1"),
        ("y ~ (1|g) - 1", "1 - 1"),
        ("y ~ I(a | b) + (1 | g)", "I(a | b)"),
        ("y ~ np.log(x) + (x + 1e-3) + (1 | g)", "np.log(x) + (x + 1e-3)"),
    ],
)
def test_fixed_part_is_left_to_formulaic(formula, fixed):
    assert parse_formula(formula).fixed == fixed


def test_uncorrelated_slope_only_interaction_and_nesting():
    p = parse_formula("y ~ x + (1 + x || g) + (0 + x | h) + (1 | a:b) + (1 | s/c)")
    assert [(t.expr, t.group, t.correlated) for t in p.random] == [
        ("1 + x", ("g",), False),
        ("0 + x", ("h",), True),
        ("1", ("a", "b"), True),
        ("1", ("s",), True),
        ("1", ("s", "c"), True),
    ]
    assert p.random[2].group_label == "a:b"


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("x + (1 | g)", "exactly one '~'"),
        ("y ~ x ~ z + (1|g)", "exactly one '~'"),
        ("~ x + (1 | g)", "no response"),
        ("y ~ ", "empty right-hand side"),
        ("y ~ x + 1 | g", "not inside parentheses"),
        ("y ~ x * (1 | g)", "random terms must stand alone"),
        ("y ~ x - (1 | g)", "subtracts the random term"),
        ("y ~ x + ( | g)", "needs an expression and a grouping factor"),
        ("y ~ x + (1 | )", "needs an expression and a grouping factor"),
        ("y ~ x + (1 | log(g))", "grouping factor 'log\\(g\\)' .* is not a column name"),
        ('y ~ x + (1 | Q("Schule id"))', "is not a column name; .* with spaces or symbols goes in backticks there: "
                                         "`Schule id`"),   # (helper 37: formulaic's Q() is not one here)
        ("y ~ x + (1 | g | h)", "more than one bar"),
        ("y ~ x + (1 | g", "unclosed '\\('"),
        ("y ~ x) + (1 | g)", "unmatched"),
        ("y ~ x + + (1 | g)", "empty term"),
    ],
)
def test_malformed_formulas(formula, message):
    with pytest.raises(SpecError, match=message):
        parse_formula(formula)


def test_not_a_string():
    with pytest.raises(SpecError, match="formula must be a string"):
        parse_formula(None)


def test_multiple_membership():
    p = parse_formula("y ~ x + (1 + x | mm(school1, school2, school3, weights = (w1, w2, w3))) + (1 | g)")
    mm = p.random[0]
    assert (mm.expr, mm.group, mm.correlated) == ("1 + x", ("school1", "school2", "school3"), True)
    assert mm.membership == Membership(("school1", "school2", "school3"), ("w1", "w2", "w3"))
    assert mm.group_label == "mm(school1, school2, school3)"
    assert mm.columns == ("school1", "school2", "school3", "w1", "w2", "w3")
    assert p.random[1].membership is None and p.random[1].columns == ("g",)
    # R's c(...) spelling; no weights: equal weights over the ids present
    assert parse_formula("y ~ (1 | mm(a, b, weights = c(u, v)))").random[0].membership == Membership(("a", "b"), ("u", "v"))
    bare = parse_formula("y ~ (1 || mm(a,b))").random[0]
    assert bare.membership == Membership(("a", "b"), None) and not bare.correlated and bare.columns == ("a", "b")


@pytest.mark.parametrize(
    ("formula", "message"),
    [
        ("y ~ (1 | mm(a, b, weights = (w1)))", "2 id columns but 1 weight columns"),
        ("y ~ (1 | mm(a, a))", "names an id column twice"),
        ("y ~ (1 | mm(a, b, weights = (b, w)))", "uses b both as ids and as weights"),
        ("y ~ (1 | mm(a, b, weights = w1))", "must be a parenthesised list of columns"),
        ("y ~ (1 | mm(a, b, scale = 1))", "unknown argument 'scale = 1'"),
        ("y ~ (1 | mm(a, b)/c)", "combines mm\\(\\) with other grouping factors"),
        ("y ~ (1 | mm(log(a), b))", "membership id column 'log\\(a\\)' .* is not a column name"),
        ("y ~ (1 | mm(a, b, weights = (w1, 2)))", "weight column '2' .* is not a column name"),
        ("y ~ (1 | mm(weights = (w1, w2), a, b))", "id columns of mm\\(\\) come before weights"),
        ("y ~ (1 | mm(weights = (w1, w2)))", "names no id column"),
    ],
)
def test_malformed_membership(formula, message):
    with pytest.raises(SpecError, match=message):
        parse_formula(formula)
