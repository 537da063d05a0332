"""The covariance move of two rare categories' latent columns (``sampler.pairs``).

Checked against references that do not reuse the code under test: the rectangle probability
against a one-dimensional adaptive quadrature (scipy); the joint redraw's moments against
bivariate normal draws kept inside the rectangle (rejection with numpy); and the samplers with
and without the move against each other.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from _stats import assert_same_means

import mlimpute as mi
from mlimpute.impute import prepare, run_chain
from mlimpute.sampler import pairs

INF = np.inf


def _reference(la, ua, lb, ub, r):
    """∫_la^ua φ(x) P(lb < Y < ub | x) dx by adaptive quadrature."""
    s = np.sqrt(1 - r * r)

    def f(x):
        return stats.norm.pdf(x) * (stats.norm.cdf((ub - r * x) / s) - stats.norm.cdf((lb - r * x) / s))
    lo, hi = max(la, -12.0), min(ua, 12.0)
    return integrate.quad(f, lo, hi, epsabs=1e-15, epsrel=1e-12, limit=200)[0]


@pytest.mark.parametrize("la, ua, lb, ub", [
    (1.5, INF, 2.0, INF), (-INF, -1.8, 1.1, INF), (-INF, 0.3, -INF, -0.4), (0.2, 1.4, -INF, 2.5),
    (-0.5, 0.7, -1.0, 0.1), (2.5, INF, -INF, INF), (-INF, INF, -INF, INF), (3.2, INF, 2.9, INF)])
@pytest.mark.parametrize("r", [-0.9, -0.45, 0.0, 0.2, 0.6, 0.92])
def test_rectangle_probability_matches_quadrature(la, ua, lb, ub, r):
    p = pairs.rect_probability(la, ua, lb, ub, r)
    ref = _reference(la, ua, lb, ub, r)
    assert p == pytest.approx(ref, rel=1e-8, abs=1e-14)


@pytest.mark.parametrize("bounds", [
    ((0.0, INF), (0.0, INF)),            # both rare: the joint tail
    ((-INF, -2.0), (1.5, INF)),          # ~43 expected tries: drawn by inversion
    ((-INF, 0.0), (1.0, INF)),
    ((-0.3, 0.9), (-INF, 0.5)),          # an ordinal's middle category
    ((0.0, INF), (-INF, INF)),           # b's category missing
    ((-INF, INF), (-INF, INF))])
def test_joint_redraw_matches_the_truncated_bivariate_normal(bounds):
    """Rows with the same conditional: the redrawn pair's means, SDs and correlation equal
    those of bivariate normal draws kept inside the rectangle (5 Monte Carlo SEs)."""
    (la, ua), (lb, ub) = bounds
    n = 40000
    m, sd, r = np.array([-1.2, 0.4]), np.array([0.8, 1.3]), 0.55
    omega = np.array([[sd[0] ** 2, r * sd[0] * sd[1]], [r * sd[0] * sd[1], sd[1] ** 2]])
    Y, F = np.zeros((n, 2)), np.tile(m, (n, 1))
    full = [np.full(n, v) for v in (la, ua, lb, ub)]
    rng = np.random.default_rng(1)
    start = 0
    while start >= 0:
        start = pairs._redraw(Y, F, 0, 1, full[0], full[1], full[2], full[3], omega, 1.0 - rng.random(3 * n + 64),
                              start)
    if bounds == ((-INF, -2.0), (1.5, INF)):   # the inversion branch: rejection would take > MAX_TRIES
        z = [(la - m[0]) / sd[0], (ua - m[0]) / sd[0], (lb - m[1]) / sd[1], (ub - m[1]) / sd[1]]
        assert stats.norm.cdf(z[1]) > pairs.MAX_TRIES * pairs.rect_probability(*z, r)
    ref = rng.multivariate_normal(m, omega, size=4_000_000)
    keep = (ref[:, 0] > la) & (ref[:, 0] < ua) & (ref[:, 1] > lb) & (ref[:, 1] < ub)
    ref = ref[keep][:200000]
    assert np.all((Y[:, 0] > la) & (Y[:, 0] < ua) & (Y[:, 1] > lb) & (Y[:, 1] < ub))
    for stat in (lambda a: a.mean(0), lambda a: a.std(0)):
        mine, theirs = stat(Y), stat(ref)
        se = ref.std(0) / np.sqrt(n)
        assert np.all(np.abs(mine - theirs) < 5 * se * (1 + np.sqrt(n / ref.shape[0]))), (mine, theirs)
    c_mine, c_ref = np.corrcoef(Y.T)[0, 1], np.corrcoef(ref.T)[0, 1]
    assert abs(c_mine - c_ref) < 5 * (1 - c_ref ** 2) / np.sqrt(n) * 1.2 + 0.005


def test_pairs_are_columns_of_different_variables():
    from test_collapsed import RARE, _rare

    from mlimpute.sampler.sweep import prepare_static
    data = prepare(_rare(1), mi.ImputationModel(**RARE))
    st = prepare_static(data)
    names = {(data.y1_names[a.c], data.y1_names[b.c]) for a, b in st.pairs[0]}
    var = {n: n.split("[")[0] for n in data.y1_names}
    assert names and all(var[x] != var[y] for x, y in names)
    assert len(names) == sum(var[data.y1_names[a.c]] != var[data.y1_names[b.c]]
                             for i, a in enumerate(st.rare1) for b in st.rare1[i + 1:])


def _with_and_without(data, seed: list, monkeypatch) -> dict:
    runs = {}
    for on in (True, False):
        monkeypatch.setattr(pairs, "ENABLED", on)
        runs[on] = np.stack([run_chain(data, c, 1, 300, 2500, np.random.SeedSequence([*seed, c, on])).trace
                             for c in range(2)])
    return runs


@pytest.mark.parametrize("design", ["level-1", "level-2"])
def test_sampler_with_the_pair_move_keeps_the_posterior(design, monkeypatch):
    """Every monitored parameter's posterior mean with the pair move equals its mean without
    it within 4.5 Monte Carlo SEs (two-level sampler: level-1 pairs on ``_rare``, level-2 pairs
    on ``_rare2``)."""
    from test_collapsed import RARE, RARE2, _rare, _rare2
    data = prepare(_rare(21), mi.ImputationModel(**RARE)) if design == "level-1" else \
        prepare(_rare2(22), mi.ImputationModel(**RARE2))
    assert_same_means(_with_and_without(data, [21 if design == "level-1" else 22], monkeypatch))


@pytest.mark.parametrize("design", ["level-1", "classification-level"])
def test_general_sampler_with_the_pair_move_keeps_the_posterior(design, monkeypatch):
    """The general sampler: pairs of rare pupil columns (three levels, ``_three_rare``) and of
    rare class columns (``_class_rare``)."""
    from test_collapsed import CLASS_RARE, THREE_RARE, _class_rare, _three_rare
    if design == "level-1":
        data = prepare(_three_rare(23), mi.ImputationModel(**THREE_RARE))
    else:
        data = prepare(_class_rare(24), mi.ImputationModel(**CLASS_RARE))
    assert_same_means(_with_and_without(data, [23 if design == "level-1" else 24], monkeypatch))
