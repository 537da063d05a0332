"""The sampler's building blocks against closed forms."""

import numpy as np
import pytest
from scipy import stats

from mlimpute.sampler.linalg import back_solve_t, cholesky, forward_solve, invwishart


def _spd(rng, d, batch=()):
    a = rng.normal(size=batch + (d, d))
    return a @ np.swapaxes(a, -1, -2) + d * np.eye(d)


def test_triangular_solves():
    rng = np.random.default_rng(0)
    L = np.linalg.cholesky(_spd(rng, 4, (7,)))
    b = rng.normal(size=(7, 4))
    assert np.allclose(np.einsum("jab,jb->ja", L, forward_solve(L, b)), b)
    assert np.allclose(np.einsum("jba,jb->ja", L, back_solve_t(L, b)), b)


@pytest.mark.parametrize("d", [1, 2, 4, 6])   # entrywise recursion up to 4, LAPACK above
def test_batched_cholesky(d):
    P = _spd(np.random.default_rng(1), d, (50,))
    assert np.allclose(cholesky(P), np.linalg.cholesky(P))
    bad = P.copy()
    bad[3] = -np.eye(d)
    with pytest.raises(np.linalg.LinAlgError):
        cholesky(bad)


def test_invwishart_matches_scipy_moments():
    rng = np.random.default_rng(2)
    psi = _spd(rng, 3)
    df = 9.0
    n = 100_000
    draws = invwishart(rng, df, np.broadcast_to(psi, (n, 3, 3)))
    mean = psi / (df - 3 - 1)
    # Var of IW entries is finite for df > p + 3; tolerance 5 Monte Carlo SEs of the mean.
    se = draws.std(axis=0) / np.sqrt(n)
    assert np.all(np.abs(draws.mean(0) - mean) < 5 * se)
    # and the distribution of one entry against scipy's sampler (two-sample KS)
    ref = stats.invwishart(df=df, scale=psi).rvs(size=20_000, random_state=rng)
    assert stats.ks_2samp(draws[:20_000, 0, 1], ref[:, 0, 1]).pvalue > 1e-3
    assert stats.ks_2samp(draws[:20_000, 2, 2], ref[:, 2, 2]).pvalue > 1e-3


def test_invwishart_single_and_batched_df():
    rng = np.random.default_rng(3)
    out = invwishart(rng, np.array([5.0, 50.0]), np.stack([np.eye(2), np.eye(2)]))
    assert out.shape == (2, 2, 2)
    assert np.allclose(out, np.swapaxes(out, -1, -2))
    assert np.all(np.linalg.eigvalsh(out) > 0)


def test_pattern_conditionals_against_direct_formula():
    """K holds Σ_mo Σ_oo⁻¹ in its (m, o) block and C the lower Cholesky factor of the conditional
    covariance in its (m, m) block, zero elsewhere; the level-2 | u1 split uses the same."""
    from mlimpute.sampler.missing import conditionals

    rng = np.random.default_rng(4)
    S = _spd(rng, 4)
    masks = np.array([[True, False, True, False], [True, True, True, True], [False, False, False, True]])
    K, C = conditionals(S[None], masks)
    for g, m in enumerate(masks):
        o = ~m
        K_ref = S[np.ix_(m, o)] @ np.linalg.inv(S[np.ix_(o, o)]) if o.any() else np.zeros((m.sum(), 0))
        V_ref = S[np.ix_(m, m)] - K_ref @ S[np.ix_(o, m)]
        Kg, Cg = K[g, 0], C[g, 0]
        assert np.allclose(Kg[np.ix_(m, o)], K_ref)
        Cmm = Cg[np.ix_(m, m)]
        assert np.allclose(Cmm, np.tril(Cmm)) and np.allclose(Cmm @ Cmm.T, V_ref)
        assert not Kg[np.ix_(o, np.ones(4, bool))].any() and not Kg[np.ix_(m, m)].any()
        assert not Cg[~np.outer(m, m)].any()
    with pytest.raises(np.linalg.LinAlgError):
        conditionals(np.array([[[1.0, 2.0], [2.0, 1.0]]]), np.array([[True, False]]))


class _FixedNormals:
    """Stands in for a Generator: standard_normal returns preset values (the draw is linear in them)."""

    def __init__(self, values):
        self.values = np.asarray(values, dtype=float)

    def standard_normal(self, size):
        return self.values[: int(np.prod(size))].reshape(size)


def _small_two_level(slope: bool):
    """The sampler's Static for 4 clusters of 5 (the last of 3) rows: y1, y2 and a level-2 w,
    covariate x (with a random slope or not), level-2 covariate s."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from _sim import simulate

    import mlimpute as mi
    from mlimpute.impute import prepare
    from mlimpute.sampler import prepare_static

    data_df, _, _ = simulate(np.random.default_rng(7), J=4, n=5, slope=slope, missing=0.0)
    data_df = data_df.iloc[:-2].copy()  # unequal cluster sizes
    data_df["s"] = np.repeat([0.5, -1.0, 2.0, 0.3], 5)[:-2]   # a level-2 covariate
    model = mi.ImputationModel(cluster="g", variables={"y1": "continuous", "y2": "continuous",
                                                       "w": mi.Variable("continuous", level=2)},
                               covariates=["x"], level2_covariates=["s"],
                               random_slopes=["x"] if slope else [])
    return prepare_static(prepare(data_df, model))


@pytest.mark.parametrize("slope", [True, False])   # False: the random-intercept fast path
def test_block_draw_of_fixed_effects_and_u1_is_the_exact_joint_conditional(slope):
    """Mean and covariance of (vec B1, vec B2, u_1..u_J) against a dense joint-Gaussian
    computation that writes out every level-1 row and every cluster's level-2 prior term."""
    from mlimpute.sampler.random import draw_fixed_u1

    st = _small_two_level(slope)
    rng = np.random.default_rng(8)
    J, p1, q = 4, 2, 2 if slope else 1
    X, Z, Y, cl = st.data.x1, st.data.z, st.data.y1, st.data.cluster
    X2, Y2 = st.data.x2, st.data.y2
    f1, f2, p2 = X.shape[1], X2.shape[1], 1
    d1, fb1, fb2 = p1 * q, f1 * p1, f2 * p2
    om1 = _spd(rng, p1)
    om2 = _spd(rng, d1 + p2)
    oinv = np.linalg.inv(om1)
    lam = np.linalg.inv(om2)
    n = fb1 + fb2 + J * d1
    Q = np.zeros((n, n))
    lin = np.zeros(n)
    for i in range(X.shape[0]):            # level-1 rows: y_i = D θ + e_i
        D = np.zeros((p1, n))
        for l in range(p1):
            D[l, l * f1:(l + 1) * f1] = X[i]
            off = fb1 + fb2 + cl[i] * d1 + l * q
            D[l, off:off + q] = Z[i]
        Q += D.T @ oinv @ D
        lin += D.T @ oinv @ Y[i]
    for j in range(J):                     # (u1_j, y2_j − X2_j B2) ~ N(0, Ω2)
        A = np.zeros((d1 + p2, n))
        A[:d1, fb1 + fb2 + j * d1: fb1 + fb2 + (j + 1) * d1] = np.eye(d1)
        A[d1:, fb1:fb1 + fb2] = -X2[j]
        c = np.concatenate([np.zeros(d1), Y2[j]])
        Q += A.T @ lam @ A
        lin -= A.T @ lam @ c
    cov = np.linalg.inv(Q)
    mean = cov @ lin

    def draw(z):
        b1, b2, u1, _, _ = draw_fixed_u1(_FixedNormals(z), st, Y, Y2, oinv, om2)
        return np.concatenate([b1.T.ravel(), b2.T.ravel(), u1.ravel()])

    got_mean = draw(np.zeros(n))
    assert np.allclose(got_mean, mean, atol=1e-9)
    M = np.column_stack([draw(np.eye(n)[k]) - got_mean for k in range(n)])  # θ = mean + M z
    assert np.allclose(M @ M.T, cov, atol=1e-9)


@pytest.mark.parametrize("per_cluster", [False, True])
def test_missing_cells_drawn_from_their_exact_conditional(per_cluster):
    """draw_missing: mean and covariance of each row's missing cells given its observed ones
    (with one covariance, or one per cluster as covariance="cluster" uses)."""
    from mlimpute.sampler.missing import draw_missing
    from mlimpute.sampler.state import Patterns

    rng = np.random.default_rng(9)
    p = 4
    cluster = np.array([0, 0, 1, 1, 2, 2])
    covs = np.stack([_spd(rng, p) for _ in range(3)])
    y = rng.normal(size=(6, p))
    mean = rng.normal(size=(6, p))
    holes = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 1], [1, 0, 1, 0], [0, 1, 1, 0]], bool)
    pats = Patterns.of(holes)
    y0 = np.where(holes, 0.0, y)
    n_z = pats.n_cells
    cov_arg = covs if per_cluster else covs[0]

    def draw(z):
        return draw_missing(_FixedNormals(z), y0.copy(), mean, cov_arg, pats, cluster)

    base = draw(np.zeros(n_z))
    maps = [draw(np.eye(n_z)[k]) - base for k in range(n_z)]
    for i in range(6):
        S = covs[cluster[i]] if per_cluster else covs[0]
        m, o = holes[i], ~holes[i]
        assert np.array_equal(base[i, o], y0[i, o])                 # observed cells untouched
        K = S[np.ix_(m, o)] @ np.linalg.inv(S[np.ix_(o, o)]) if o.any() else np.zeros((m.sum(), 0))
        cond_mean = mean[i, m] + K @ (y0[i, o] - mean[i, o])
        cond_cov = S[np.ix_(m, m)] - K @ S[np.ix_(o, m)]
        assert np.allclose(base[i, m], cond_mean, atol=1e-10)
        M = np.column_stack([d[i, m] for d in maps])
        assert np.allclose(M @ M.T, cond_cov, atol=1e-10)


@pytest.mark.parametrize("slope,per_cluster", [(False, False), (True, False), (False, True)])
def test_scale_move_target_is_the_posterior_along_the_group(slope, per_cluster):
    """The scale move's log target at α (relative to α = 1) equals log π(gθ) + log |J_g(θ)|
    − log π(θ) written out with scipy's densities: every level-1 row's normal density with
    effects α_k u_jk, every cluster's N((Du1_j, u2_j); 0, D̃Ω2D̃), Ω2's inverse-Wishart prior at
    D̃Ω2D̃ and the Jacobian Π α_k^(J + dim + 1) of (u1, Ω2) → (Du1, D̃Ω2D̃); random slopes and
    cluster-specific Ω1_j included."""
    from mlimpute.sampler.random import _scale_target, scale_statistics

    st = _small_two_level(slope)
    rng = np.random.default_rng(9)
    J, p1, q = 4, 2, 2 if slope else 1
    d1, dim = p1 * q, p1 * q + 1
    X, Z, Y, cl = st.data.x1, st.data.z, st.data.y1, st.data.cluster
    b1 = rng.normal(size=(X.shape[1], p1))
    u1 = rng.normal(size=(J, d1))
    u2 = rng.normal(size=(J, 1))
    om1 = _spd(rng, p1, (J,)) if per_cluster else _spd(rng, p1)
    om2 = _spd(rng, dim)
    psi, nu = 0.5 * np.eye(dim) + 0.1, float(dim + 1)
    st = __import__("dataclasses").replace(st, prior2=(psi, nu))

    def log_post(u, om):   # the terms of log π that the move changes
        total = 0.0
        for i in range(X.shape[0]):
            U = u[cl[i]].reshape(p1, q)
            cov = om1[cl[i]] if per_cluster else om1
            total += stats.multivariate_normal(X[i] @ b1 + U @ Z[i], cov).logpdf(Y[i])
        for j in range(J):
            total += stats.multivariate_normal(np.zeros(dim), om).logpdf(np.concatenate([u[j], u2[j]]))
        return total + stats.invwishart(df=nu, scale=psi).logpdf(om)

    from mlimpute.sampler.random import cluster_crossprod

    Q, h = scale_statistics(st, cluster_crossprod(st, Y), b1, u1, np.linalg.inv(om1))
    PL = psi * np.linalg.inv(om2)
    base = _scale_target(Q, h, PL, nu, np.ones(dim), d1)
    for _ in range(3):
        alpha = np.exp(rng.normal(0, 0.4, d1))
        at = np.append(alpha, 1.0)
        direct = (log_post(u1 * alpha, om2 * np.outer(at, at)) + (J + dim + 1) * np.log(alpha).sum()
                  - log_post(u1, om2))
        assert _scale_target(Q, h, PL, nu, at, d1) - base == pytest.approx(direct, rel=1e-9, abs=1e-8)


def test_probit_scale_move_target_is_the_posterior_along_the_group(monkeypatch):
    """The substantive probit outcome's scale move (``outcome.probit_scale``): its target in
    u = log α² (the coordinate in which the group's Haar measure dα/α is Lebesgue) equals
    log π(gθ) + log |J_g(θ)| written out with scipy's densities:
    each observed row's N(αy*; αη, 1) (the truncation by y holds for α > 0), each cluster's
    N(αb_j; 0, α²Σ) per block, the inverse-Wishart prior of each block at α²Σ_b, a flat prior
    on β, and the Jacobian α^(n + f + Jq + q(q+1)) of (y*, β, b, Σ) → α·(y*, β, b) and α²Σ; two
    blocks of different width and df."""
    from mlimpute.sampler import outcome

    rng = np.random.default_rng(4)
    n, f, J, N = 30, 3, 5, 34
    obs = np.sort(rng.choice(N, n, replace=False))
    bstart, bwidth, bdf = np.array([0, 2]), np.array([2, 1]), np.array([2.0, 3.5])
    q = 3
    psi = np.zeros((q, q))
    psi[:2, :2] = _spd(rng, 2)
    psi[2, 2] = 0.7
    cov = np.zeros((q, q))
    cov[:2, :2] = _spd(rng, 2)
    cov[2, 2] = 0.4
    ystar, eta = rng.normal(size=N), rng.normal(size=N)
    b = rng.normal(size=(J, q))
    seen = {}
    monkeypatch.setattr(outcome, "gig_log_step", lambda rng, lam, chi, ps: seen.update(lam=lam, chi=chi, psi=ps) or 0.0)
    outcome.probit_scale(rng, ystar[obs] - eta[obs], f, [(psi, cov, bstart, bwidth, bdf)])

    def log_post(a):   # the terms of log π that the move changes, at α = a
        total = stats.norm.logpdf(a * ystar[obs], a * eta[obs]).sum()
        for s, w, nu in zip(bstart, bwidth, bdf):
            blk = slice(s, s + w)
            C, P = a ** 2 * cov[blk, blk], psi[blk, blk]
            total += sum(stats.multivariate_normal(np.zeros(w), C).logpdf(a * b[j, blk]) for j in range(J))
            total += stats.invwishart(df=nu, scale=P).logpdf(C if w > 1 else C[0, 0])
        return total + (n + f + J * q + 2 * (3 + 1)) * np.log(a)   # Σ's free elements: 3 + 1

    def target(u):
        return seen["lam"] * u - 0.5 * (seen["psi"] * np.exp(u) + seen["chi"] * np.exp(-u))

    for a in (0.6, 0.93, 1.4, 2.2):
        assert target(2 * np.log(a)) - target(0.0) == pytest.approx(log_post(a) - log_post(1.0), rel=1e-9, abs=1e-8)


@pytest.mark.parametrize("lam,chi,psi", [(-0.5, 2.0, 0.3), (3.0, 0.5, 4.0), (400.0, 2.0, 600.0)])
def test_generalized_inverse_gaussian_step_keeps_its_target(lam, chi, psi):
    """``outcome.gig_log_step``'s chain (an independence Metropolis–Hastings sampler) has the
    generalized inverse Gaussian as its stationary law: 20,000 steps against as many exact
    draws of scipy's geninvgauss (two-sample Kolmogorov–Smirnov on every 10th step, means
    within 4 MC SEs)."""
    from mlimpute.sampler.outcome import gig_log_step

    rng = np.random.default_rng(11)
    u, draws = 0.0, np.empty(20_000)
    for t in range(draws.size):
        u = gig_log_step(rng, lam, chi, psi, u)
        draws[t] = np.exp(u)
    exact = stats.geninvgauss(lam, np.sqrt(chi * psi), scale=np.sqrt(chi / psi)).rvs(20_000, random_state=rng)
    assert stats.ks_2samp(draws[::10], exact).pvalue > 1e-3
    assert abs(draws.mean() - exact.mean()) < 4 * exact.std() * np.sqrt(3 / draws.size + 1 / exact.size)
