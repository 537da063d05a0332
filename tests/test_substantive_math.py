"""The substantive-model component's conditionals against closed forms and brute force.

Each test builds a dataset whose rows (or clusters) are identical copies of one case, sets the
parameters, and runs a compiled step once over all of them: the rows are then independent
draws from the same conditional, whose moments or category shares are compared with the exact
ones (tolerances: 5 Monte Carlo standard errors unless said otherwise).
"""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

import mlimpute as mi
from mlimpute.design import build
from mlimpute.sampler import _outcome_kernels as ok
from mlimpute.sampler.outcome import _padded_cuts, initial_outcome, prepare_outcome

N = 20_000


def _setup(df, model, beta, b_row, cuts=None, scales=None):
    """Model arrays, the component's static part and a state with β, every b_j = b_row;
    ``scales``: the level-1 columns' (centre, scale), the sampler's y1 then internal values."""
    # every row's outcome is one value here, which build refuses for data (a constant outcome):
    # build from a copy whose last row differs, then put the value back
    varied = df.copy()
    last = float(varied["y"].iloc[-1])
    varied.loc[varied.index[-1], "y"] = last + 1.0
    data = build(varied, model)
    y = data.outcome.y.copy()
    y[y == last + 1.0] = last
    data = replace(data, outcome=replace(data.outcome, y=y))
    ost = prepare_outcome(data)
    if scales is not None:
        ost = replace(ost, cen1=np.asarray(scales[0], float), sc1=np.asarray(scales[1], float))
    rng = np.random.default_rng(0)
    y1 = np.nan_to_num(data.y1.copy())
    y2 = np.nan_to_num(data.y2.copy())
    o = initial_outcome(ost, data, y1, y2, cuts or {}, rng)
    b = np.tile(np.asarray(b_row, float), (data.n_clusters, 1))
    o = o._replace(beta=np.asarray(beta, float), b=b)
    rows = np.arange(data.n_rows)
    ok.design_rows(o.S, rows, o.D, ost.prog)
    ok.linear_predictor(o.D, data.outcome.n_fixed, o.beta, o.b, data.cluster, rows, o.eta)
    return data, ost, o, y1, y2


def _cells(data, ost, o, y, mu, Q, wconst, level=1, w=None, cuts=(), seed=1):
    """One pass of the compiled cell draws over the component's level-1 rows or level-2 clusters."""
    rng = np.random.default_rng(seed)
    od = data.outcome
    if level == 1:
        units, start, stop, c, n, miss = ost.rows1, ost.rows1, ost.rows1 + 1, ost.cols1, ost.n_cells1, data.miss1
    else:
        units, c, n, miss = ost.clusters2, ost.cols2, ost.n_cells2, data.miss2
        start, stop = data.starts[units], data.starts[units] + data.sizes[units]
    acc = np.zeros(o.steps.size, np.int64)
    tried = np.zeros(o.steps.size, np.int64)
    ok.cells(y, mu, Q[None], np.zeros(units.size, np.int64), units, start, stop, miss, c.kind, c.first,
             c.width, c.src, c.cut, *((ost.cen1, ost.sc1) if level == 1 else (ost.cen2, ost.sc2)),
             _padded_cuts(cuts), od.program.linear, od.program.quadratic, od.observed, data.cluster,
             o.S, o.D, ost.prog, od.n_fixed, o.beta, o.b, o.eta, od.y,
             np.zeros(1) if w is None else w, wconst, o.steps, acc, tried,
             rng.standard_normal(n), 1.0 - rng.random(2 * n))
    return acc, tried


def _copies(**cols):
    J = N // 2
    g = np.repeat(np.arange(J), 2)
    return pd.DataFrame({"g": g, **{k: np.full(N, v) if np.ndim(v) == 0 else v for k, v in cols.items()}})


@pytest.mark.parametrize("weights", ["common", "per row"])
def test_linear_continuous_cell_is_the_exact_normal(weights):
    """y ~ x * z + (1 + x | g): η = a + c x, so x | y is normal with precision 1/s² + w c²."""
    df = _copies(x=np.nan, z=0.7, y=1.3)
    df.loc[:3, "x"] = [0.0, 1.0, -1.0, 0.5]        # a few observed values (rows 0-3 stay as they are)
    df.loc[:3, "z"] = [0.1, 0.2, 0.3, 0.4]
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"},
                               substantive="y ~ x * z + (1 + x | g)")
    beta, brow = [0.2, 0.5, 0.3, 0.4], [0.1, -0.25]
    data, ost, o, y1, _ = _setup(df, model, beta, brow)
    m, s2, sig2 = 0.4, 0.8, 0.5
    mu = np.full_like(y1, m)
    if weights == "common":
        _cells(data, ost, o, y1, mu, np.array([[1 / s2]]), 1 / sig2)
    else:  # per-row precisions (the logit path): half the rows twice as precise
        w = np.where(np.arange(N) % 2 == 0, 1 / sig2, 2 / sig2)
        _cells(data, ost, o, y1, mu, np.array([[1 / s2]]), 0.0, w=w)
    z = 0.7
    c = beta[1] + beta[3] * z + brow[1]
    a = beta[0] + beta[2] * z + brow[0]
    drawn = ost.rows1
    assert drawn.size == N - 4
    groups = [(drawn, 1 / sig2)] if weights == "common" else \
        [(drawn[drawn % 2 == 0], 1 / sig2), (drawn[drawn % 2 == 1], 2 / sig2)]
    for rows, wi in groups:
        prec = 1 / s2 + wi * c * c
        mean = (m / s2 + wi * c * (1.3 - a)) / prec
        x = y1[rows, 0]
        assert abs(x.mean() - mean) < 5 * np.sqrt(1 / prec / x.size)
        assert abs(x.var() / (1 / prec) - 1) < 5 * np.sqrt(2 / x.size)
    # the sources, design rows and linear predictors follow the draws
    assert np.allclose(o.S[:, 0], y1[:, 0])
    D = data.outcome.program.evaluate(o.S)
    assert np.allclose(o.D, D)
    assert np.allclose(o.eta, D[:, :4] @ beta + D[:, 4:] @ brow)


def test_linear_continuous_cell_on_the_internal_scale():
    """With internal scaling the sampler holds x* = (x − m0)/s0 and the formula reads x = m0 +
    s0 x*: η = a + c m0 + c s0 x*, so x* | y is normal with precision 1/s² + w (c s0)²."""
    df = _copies(x=np.nan, z=0.7, y=1.3)
    df.loc[:3, "x"] = [0.0, 1.0, -1.0, 0.5]
    df.loc[:3, "z"] = [0.1, 0.2, 0.3, 0.4]
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive="y ~ x * z + (1 + x | g)")
    beta, brow, m0, s0 = [0.2, 0.5, 0.3, 0.4], [0.1, -0.25], 0.3, 2.5
    data, ost, o, y1, _ = _setup(df, model, beta, brow, scales=([m0], [s0]))
    m, s2, sig2 = 0.4, 0.8, 0.5
    _cells(data, ost, o, y1, np.full_like(y1, m), np.array([[1 / s2]]), 1 / sig2)
    c = (beta[1] + beta[3] * 0.7 + brow[1]) * s0
    a = beta[0] + beta[2] * 0.7 + brow[0] + c / s0 * m0
    prec = 1 / s2 + c * c / sig2
    x = y1[ost.rows1, 0]
    assert abs(x.mean() - (m / s2 + c * (1.3 - a) / sig2) / prec) < 5 * np.sqrt(1 / prec / x.size)
    assert abs(x.var() * prec - 1) < 5 * np.sqrt(2 / x.size)
    assert np.allclose(o.S[:, 0], m0 + s0 * y1[:, 0])        # the formula's sources on the data's scale
    assert np.allclose(o.D, data.outcome.program.evaluate(o.S))


def test_quadratic_cell_by_metropolis_hastings_targets_the_exact_density():
    """y ~ x + I(x**2): the conditional of x is not normal; N independent MH chains run 300
    sweeps and their end points are compared with the density integrated on a grid."""
    df = _copies(x=np.nan, y=2.0)
    df.loc[:3, "x"] = [0.0, 1.0, -1.0, 0.5]
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"},
                               substantive="y ~ x + I(x**2) + (1 | g)")
    beta, brow = [0.1, 0.5, 0.6], [0.2]
    data, ost, o, y1, _ = _setup(df, model, beta, brow)
    m, s2, sig2 = 0.3, 1.0, 0.4
    mu = np.full_like(y1, m)
    accepted = tried = 0
    for it in range(300):
        acc, tr = _cells(data, ost, o, y1, mu, np.array([[1 / s2]]), 1 / sig2, seed=it)
        accepted, tried = accepted + acc.sum(), tried + tr.sum()
    drawn = ost.rows1
    assert tried == 300 * drawn.size and 0.2 < accepted / tried < 0.9

    def dens(x):
        eta = beta[0] + brow[0] + beta[1] * x + beta[2] * x * x
        return np.exp(-0.5 * (x - m) ** 2 / s2 - 0.5 * (2.0 - eta) ** 2 / sig2)

    Z = integrate.quad(dens, -10, 10, points=[-2, 0, 2])[0]
    mean = integrate.quad(lambda x: x * dens(x), -10, 10, points=[-2, 0, 2])[0] / Z
    var = integrate.quad(lambda x: (x - mean) ** 2 * dens(x), -10, 10, points=[-2, 0, 2])[0] / Z
    x = y1[drawn, 0]
    assert abs(x.mean() - mean) < 5 * np.sqrt(var / x.size)
    assert abs(x.var() / var - 1) < 0.05   # the end points of 300-step chains: 5% on the variance
    assert np.allclose(o.D, data.outcome.program.evaluate(o.S))


def _two_modes(dens, lo=-10.0, hi=10.0, at=0.0):
    """Mass below ``at``, mean and variance of an unnormalised 1-D density (quadrature)."""
    pts = [at - 3, at, at + 3]
    Z = integrate.quad(dens, lo, hi, points=pts, limit=200)[0]
    below = integrate.quad(dens, lo, at, limit=200)[0] / Z
    mean = integrate.quad(lambda x: x * dens(x), lo, hi, points=pts, limit=200)[0] / Z
    var = integrate.quad(lambda x: (x - mean) ** 2 * dens(x), lo, hi, points=pts, limit=200)[0] / Z
    return below, mean, var


def test_quadratic_cell_reaches_both_modes():
    """y ~ x + I(x**2) with a precise outcome: x | y has two narrow modes, one each side of the
    vertex −β1/(2β2), with a valley no random-walk step crosses. Every chain starts in the right
    mode; after 30 sweeps the draws must hold the left mode's share (the reflection move), mean and
    variance of the exact density. The random walk alone leaves the left mode empty."""
    df = _copies(x=np.nan, y=5.0)
    df.loc[:3, "x"] = [0.0, 1.0, -1.0, 0.5]
    model = mi.ImputationModel(cluster="g", variables={"x": "continuous"},
                               substantive="y ~ x + I(x**2) + (1 | g)")
    beta, brow = [0.1, 0.4, 1.0], [0.2]
    data, ost, o, y1, _ = _setup(df, model, beta, brow)
    assert data.outcome.program.quadratic.tolist() == [True]
    m, s2, sig2 = 0.3, 1.0, 0.1

    def dens(x):
        eta = beta[0] + brow[0] + beta[1] * x + beta[2] * x * x
        return np.exp(-0.5 * (x - m) ** 2 / s2 - 0.5 * (5.0 - eta) ** 2 / sig2)

    vertex = -beta[1] / (2 * beta[2])
    below, mean, var = _two_modes(dens, at=vertex)
    assert 0.1 < below < 0.4                                  # both modes carry mass
    drawn = ost.rows1
    y1[drawn, 0] = 2.0                                         # the right mode
    o.S[drawn, 0] = 2.0
    ok.design_rows(o.S, drawn, o.D, ost.prog)
    ok.linear_predictor(o.D, 3, o.beta, o.b, data.cluster, drawn, o.eta)
    mu = np.full_like(y1, m)
    for it in range(30):
        _cells(data, ost, o, y1, mu, np.array([[1 / s2]]), 1 / sig2, seed=it)
    x = y1[drawn, 0]
    share = np.mean(x < vertex)
    assert abs(share - below) < 5 * np.sqrt(below * (1 - below) / x.size)
    assert abs(x.mean() - mean) < 5 * np.sqrt(var / x.size)
    assert abs(x.var() / var - 1) < 0.05
    assert np.allclose(o.D, data.outcome.program.evaluate(o.S))


def test_level2_quadratic_cell_with_rows_of_different_vertices():
    """A level-2 covariate v in y ~ x * v + I(v**2): each unit's row has its own vertex
    −(β_v + β_xv x_i)/(2β_v2), so the cluster's likelihood is not symmetric and the reflection
    about the rows' weighted vertex is accepted only in part; the chains' end points against
    the cluster-level density integrated on a grid (its mass each side of that vertex too)."""
    J, n = 6000, 2
    g = np.repeat(np.arange(J), n)
    x = np.tile([-0.5, 0.5], J)
    y = np.tile([4.0, 4.0], J)
    df = pd.DataFrame({"g": g, "x": x, "v": np.array([0.3, -0.5, 1.0, np.nan])[np.minimum(g, 3)], "y": y})
    model = mi.ImputationModel(cluster="g", variables={"v": mi.Variable("continuous", level=2)},
                               substantive="y ~ x * v + I(v**2) + (1 | g)")
    data, ost, o, _, y2 = _setup(df, model, [0.0, 0.0, 0.0, 0.0, 0.0], [0.0])
    names = data.outcome.x_names
    coef = {"Intercept": 0.1, "x": 0.3, "v": 0.4, "x:v": 0.5, "I(v ** 2)": 0.9}
    beta = np.array([coef[k] for k in names[:data.outcome.n_fixed]])
    data, ost, o, _, y2 = _setup(df, model, beta, [0.2])
    sv = [src.name for src in data.outcome.sources].index("v")
    assert data.outcome.program.quadratic.tolist() == [k == sv for k in range(len(data.outcome.sources))]
    m, s2, sig2 = 0.2, 1.5, 0.3
    xs, ys = np.array([-0.5, 0.5]), np.array([4.0, 4.0])

    def dens(v):
        eta = 0.1 + 0.2 + 0.3 * xs[:, None] + (0.4 + 0.5 * xs[:, None]) * v + 0.9 * v * v
        return np.exp(-0.5 * (v - m) ** 2 / s2 - 0.5 * np.sum((ys[:, None] - eta) ** 2, axis=0) / sig2)

    bi, ci = 0.4 + 0.5 * xs, 0.9
    vertex = -np.sum(bi * ci) / (2 * np.sum([ci * ci] * 2))
    below, mean, var = _two_modes(lambda v: float(dens(np.array([v]))[0]), at=vertex)
    assert 0.2 < below < 0.5
    y2[3:, 0] = 1.8                                          # every chain in the right mode
    o.S[:, sv] = y2[data.cluster, 0]
    rows = np.arange(data.n_rows)
    ok.design_rows(o.S, rows, o.D, ost.prog)
    ok.linear_predictor(o.D, data.outcome.n_fixed, o.beta, o.b, data.cluster, rows, o.eta)
    mu2 = np.full_like(y2, m)
    for it in range(30):
        _cells(data, ost, o, y2, mu2, np.array([[1 / s2]]), 1 / sig2, level=2, seed=100 + it)
    v = y2[3:, 0]
    share = np.mean(v < vertex)
    assert abs(share - below) < 5 * np.sqrt(below * (1 - below) / v.size)
    assert abs(v.mean() - mean) < 5 * np.sqrt(var / v.size)
    assert abs(v.var() / var - 1) < 0.06
    assert np.allclose(o.D, data.outcome.program.evaluate(o.S))


def _category_shares(y, k):
    return np.bincount(y.astype(int), minlength=k) / y.size


def test_binary_and_ordinal_cells_by_category_probabilities():
    """A missing category: P(c | rest) ∝ P(latent in region c) · p(y | c); the latent then lies
    in its region. Binary numeric (enters as 0/1) and ordinal through C() (dummies)."""
    df = _copies(xb=np.nan, xo=np.nan, y=0.8)
    df.loc[:5, "xb"] = [0, 1, 0, 1, 0, 1]   # declare both categories through observed values
    df.loc[:5, "xo"] = [1, 2, 3, 1, 2, 3]
    model = mi.ImputationModel(cluster="g", variables={"xb": "binary", "xo": "ordinal"},
                               substantive="y ~ xb + C(xo) + (1 | g)")
    beta, brow = [0.1, 0.9, -0.6, 0.7], [0.0]
    cuts = (np.array([-np.inf, 0.0, 0.9, np.inf]),)
    data, ost, o, y1, _ = _setup(df, model, beta, brow, {"xo": cuts[0]})
    mu = np.tile([0.2, 0.4], (N, 1))
    Q = np.linalg.inv(np.array([[1.0, 0.3], [0.3, 1.0]]))
    sig2 = 0.6
    miss = ost.rows1[ost.rows1 >= 6]
    for sweep in range(40):  # a Gibbs scan over two variables: run it to stationarity
        _cells(data, ost, o, y1, mu, Q, 1 / sig2, cuts=cuts, seed=sweep)
    # exact joint distribution of (xb, xo) | y by integrating the bivariate normal latents
    R = np.array([[1.0, 0.3], [0.3, 1.0]])
    mvn = stats.multivariate_normal(mean=[0.2, 0.4], cov=R)
    bounds_b = [(-np.inf, 0.0), (0.0, np.inf)]
    bounds_o = [(-np.inf, 0.0), (0.0, 0.9), (0.9, np.inf)]
    probs = np.zeros((2, 3))
    for cb, (lb, hb) in enumerate(bounds_b):
        for co, (lo, hi) in enumerate(bounds_o):
            mass = _rect(mvn, lb, hb, lo, hi)
            eta = beta[0] + beta[1] * cb + (beta[2] if co == 1 else beta[3] if co == 2 else 0.0)
            probs[cb, co] = mass * stats.norm.pdf(0.8, eta, np.sqrt(sig2))
    probs /= probs.sum()
    cb = (y1[miss, 0] > 0).astype(int)
    co = np.searchsorted(cuts[0], y1[miss, 1], side="left") - 1
    got = np.zeros((2, 3))
    np.add.at(got, (cb, co), 1)
    got /= miss.size
    se = np.sqrt(probs * (1 - probs) / miss.size)
    assert np.all(np.abs(got - probs) < 5 * se + 1e-4)
    # the sources hold the categories the latents give
    names = [s.name for s in data.outcome.sources]
    assert np.array_equal(o.S[miss, names.index("xb")], cb)
    assert np.array_equal(o.S[miss, names.index("xo")], co)


def _rect(mvn, a1, b1, a2, b2):
    big = 40.0
    a1, b1, a2, b2 = (max(min(v, big), -big) for v in (a1, b1, a2, b2))
    return (mvn.cdf([b1, b2]) - mvn.cdf([a1, b2]) - mvn.cdf([b1, a2]) + mvn.cdf([a1, a2]))


def test_nominal_cell_componentwise_targets_the_category_probabilities():
    """Three categories (two latents, reference last): the componentwise interval draws keep
    P(c | y) ∝ P_(6)(c) · p(y | c); P_(6) by Monte Carlo of the latent pair."""
    df = _copies(f=None, y=-0.4)
    df["f"] = pd.Series([None] * N, dtype=object)
    df.loc[:2, "f"] = ["A", "B", "C"]
    model = mi.ImputationModel(cluster="g", variables={"f": "nominal"}, substantive="y ~ f + (1 | g)")
    beta, brow = [0.3, -0.8, 0.5], [0.0]       # A reference of the analysis (first level)
    data, ost, o, y1, _ = _setup(df, model, beta, brow)
    cov = 0.5 * (np.eye(2) + 1.0)
    mean = np.array([0.3, -0.2])
    mu = np.tile(mean, (N, 1))
    sig2 = 0.5
    for sweep in range(60):
        _cells(data, ost, o, y1, mu, np.linalg.inv(cov), 1 / sig2, seed=100 + sweep)
    rng = np.random.default_rng(7)
    lat = rng.multivariate_normal(mean, cov, size=2_000_000)
    cat = np.where(lat.max(axis=1) > 0, lat.argmax(axis=1), 2)     # model categories A, B, C
    prior = np.bincount(cat, minlength=3) / cat.size
    eta = np.array([beta[0], beta[0] + beta[1], beta[0] + beta[2]])
    post = prior * stats.norm.pdf(-0.4, eta, np.sqrt(sig2))
    post /= post.sum()
    miss = ost.rows1[ost.rows1 >= 3]
    w = y1[miss]
    got_cat = np.where(w.max(axis=1) > 0, w.argmax(axis=1), 2)
    got = np.bincount(got_cat, minlength=3) / miss.size
    se = np.sqrt(post * (1 - post) / miss.size) + np.sqrt(prior * (1 - prior) / cat.size)
    assert np.all(np.abs(got - post) < 5 * se)
    assert np.array_equal(o.S[miss, 0], got_cat)


def test_level2_linear_cell_sums_its_units():
    """A level-2 covariate v enters every unit's row: v | y_j is normal with precision
    1/s² + Σ_i w c_i² over the cluster's observed outcomes (one unit's outcome missing)."""
    J, n = 4000, 3
    g = np.repeat(np.arange(J), n)
    x = np.tile([-1.0, 0.5, 1.5], J)
    y = np.tile([0.2, 1.0, np.nan], J)
    df = pd.DataFrame({"g": g, "x": x, "v": np.array([0.3, -0.5, 1.0, np.nan])[np.minimum(g, 3)], "y": y})
    model = mi.ImputationModel(cluster="g", variables={"v": mi.Variable("continuous", level=2)},
                               substantive="y ~ x * v + (1 | g)")
    beta, brow = [0.1, 0.4, 0.6, -0.3], [0.2]
    data, ost, o, _, y2 = _setup(df, model, beta, brow)
    assert ost.clusters2.size == J - 3 and ost.rows1.size == 0
    m, s2, sig2 = -0.2, 0.5, 0.7
    mu2 = np.full_like(y2, m)
    _cells(data, ost, o, y2, mu2, np.array([[1 / s2]]), 1 / sig2, level=2, seed=3)
    xs, ys = np.array([-1.0, 0.5]), np.array([0.2, 1.0])
    ci = beta[2] + beta[3] * xs
    ai = beta[0] + beta[1] * xs + brow[0]
    prec = 1 / s2 + np.sum(ci * ci) / sig2
    mean = (m / s2 + np.sum(ci * (ys - ai)) / sig2) / prec
    v = y2[3:, 0]
    assert abs(v.mean() - mean) < 5 * np.sqrt(1 / prec / v.size)
    assert abs(v.var() * prec - 1) < 5 * np.sqrt(2 / v.size)
    sv = [src.name for src in data.outcome.sources].index("v")
    assert np.allclose(o.S[:, sv], y2[data.cluster, 0])       # every unit of a cluster follows
    assert np.allclose(o.D, data.outcome.program.evaluate(o.S))


@pytest.mark.parametrize("split", [False, True])
def test_outcome_block_is_the_exact_joint_conditional(split):
    """(β, b) against the dense joint Gaussian: flat prior on β, b_j ~ N(0, Σ_b), rows with
    their own precisions; the draw is affine in its normals, so its mean (z = 0) and its
    covariance (the images of unit vectors) are compared exactly. With ``split`` part of the
    rows enter through precomputed cross-products (the gaussian/probit speed-up)."""
    rng = np.random.default_rng(11)
    J, n, nf, q = 5, 4, 3, 2
    N_ = J * n
    cluster = np.repeat(np.arange(J), n)
    D = np.column_stack([np.ones(N_), rng.normal(size=(N_, nf - 1)), np.ones(N_), rng.normal(size=N_)])
    ytil = rng.normal(size=N_)
    wconst = 1.7
    w = np.full(N_, wconst)
    sigma_b = np.array([[0.5, 0.1], [0.1, 0.3]])
    sinv = np.linalg.inv(sigma_b)
    rows = np.arange(N_)
    if split:
        fixed, dyn = rows[::2], rows[1::2]
        stat = ok.cross_products(D, nf, fixed, ytil, cluster, J)
    else:
        dyn = rows
        stat = ok.cross_products(D, nf, np.zeros(0, np.int64), ytil, cluster, J)
    dim = nf + J * q

    def draw(z):
        beta, b, WW, Wr, good, stats = ok.outcome_block(D, nf, ytil, w, wconst, dyn, dyn, stat, cluster, sigma_b,
                                                        np.array([0]), np.array([q]), z)
        assert good
        # the residual sum of squares from the cross-products, against the rows
        eta = D[:, :nf] @ beta + (D[:, nf:] * b[cluster]).sum(axis=1)
        sse = ok.gaussian_sse(beta, b, stats, wconst * np.sum(ytil ** 2), wconst)
        assert sse == pytest.approx(np.sum((ytil - eta) ** 2), rel=1e-10)
        # the parameter-expansion statistics, by their definition over the rows
        wk = D[:, nf:] * b[cluster]
        r = ytil - D[:, :nf] @ beta
        assert np.allclose(WW, wk.T @ (w[:, None] * wk), rtol=1e-12, atol=1e-12)
        assert np.allclose(Wr, wk.T @ (w * r), rtol=1e-12, atol=1e-12)
        return np.concatenate([beta, b.ravel()])

    A = np.zeros((N_, dim))
    A[:, :nf] = D[:, :nf]
    for i in range(N_):
        A[i, nf + cluster[i] * q: nf + cluster[i] * q + q] = D[i, nf:]
    prec = A.T @ (w[:, None] * A)
    for j in range(J):
        prec[nf + j * q: nf + j * q + q, nf + j * q: nf + j * q + q] += sinv
    cov = np.linalg.inv(prec)
    mean = cov @ (A.T @ (w * ytil))
    m0 = draw(np.zeros(dim))
    assert np.allclose(m0, mean, atol=1e-10)
    B = np.column_stack([draw(np.eye(dim)[k]) - m0 for k in range(dim)])
    assert np.allclose(B @ B.T, cov, atol=1e-10)


def test_outcome_sampler_targets_the_exact_variance_posterior():
    """The outcome component's whole scan -- (β, b) block, Σ_b | b, the parameter-expansion
    move and σ² -- against the exact joint posterior of (τ², σ²) of a random-intercept model
    (β integrated out under its flat prior; 2-D quadrature), on data small enough for the
    priors to matter."""
    from mlimpute.sampler import initial_state, prepare_static, sweep

    rng = np.random.default_rng(5)
    J, n = 8, 3
    g = np.repeat(np.arange(J), n)
    x = rng.normal(size=J * n)
    y = 0.5 * x + rng.normal(0, 0.7, J)[g] + rng.normal(size=J * n)
    df = pd.DataFrame({"g": g, "x": x, "y": y})
    model = mi.ImputationModel(cluster="g", variables={}, substantive="y ~ x + (1 | g)")
    data = build(df, model)
    od = data.outcome
    psi, psi_s = float(od.prior_scale[0, 0]), od.sigma2_prior
    st = prepare_static(data)
    s = initial_state(st, rng)
    draws = []
    for it in range(40_000):
        s = sweep(rng, st, s)
        if it >= 1000:
            draws.append((s.outcome.cov[0, 0], s.outcome.sigma2))
    draws = np.array(draws)

    X = np.column_stack([np.ones(J * n), x])
    Z = (g[:, None] == np.arange(J)[None, :]).astype(float)

    def log_post(lt, ls):
        t2, s2 = np.exp(lt), np.exp(ls)
        V = s2 * np.eye(J * n) + t2 * Z @ Z.T
        Vi = np.linalg.inv(V)
        XtVX = X.T @ Vi @ X
        r = y @ Vi @ y - y @ Vi @ X @ np.linalg.solve(XtVX, X.T @ Vi @ y)
        ll = -0.5 * (np.linalg.slogdet(V)[1] + np.linalg.slogdet(XtVX)[1] + r)
        # IW(1, ψ) = inverse-gamma(1/2, ψ/2) priors, times the Jacobian of the log scale
        lp = -1.5 * lt - psi / (2 * t2) - 1.5 * ls - psi_s / (2 * s2)
        return ll + lp + lt + ls

    lt = np.linspace(np.log(1e-4), np.log(20), 260)
    ls = np.linspace(np.log(0.05), np.log(8), 200)
    L = np.array([[log_post(a, c) for c in ls] for a in lt])
    P = np.exp(L - L.max())
    P /= P.sum()
    mean_t2 = np.sum(P * np.exp(lt)[:, None])
    mean_s2 = np.sum(P * np.exp(ls)[None, :])
    for k, exact in enumerate([mean_t2, mean_s2]):
        d = draws[:, k]
        # Monte Carlo SE from batch means (40 batches)
        batches = d[: d.size // 40 * 40].reshape(40, -1).mean(axis=1)
        mcse = batches.std(ddof=1) / np.sqrt(40)
        assert abs(d.mean() - exact) < 5 * mcse, (k, d.mean(), exact, mcse)
