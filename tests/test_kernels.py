"""The compiled special functions against scipy.special (the sampler's exactness rests on them)."""

import numpy as np
import pytest
from scipy import special

from mlimpute.sampler import _kernels as k


def test_ndtri_matches_scipy_across_the_range():
    p = np.concatenate([10.0 ** -np.linspace(1, 300, 400), np.linspace(0.001, 0.999, 999),
                        1 - 10.0 ** -np.linspace(1, 15, 100), [0.075, 0.5, 0.925]])
    got = np.array([k.ndtri(v) for v in p])
    ref = special.ndtri(p)
    # AS 241 is accurate to ~1e-16 relative; 1e-13 leaves room for the last bits of log/sqrt,
    # and the relative error of a quantile near 1 is bounded by the spacing of p near 1.
    assert got == pytest.approx(ref, rel=1e-13, abs=1e-13)
    assert k.ndtri(0.0) == -np.inf and k.ndtri(1.0) == np.inf


def test_ndtr_and_log_ndtr_match_scipy():
    x = np.concatenate([np.linspace(-60, 9, 2000), [-37.0, -36.99, -37.01, 0.0]])
    assert np.array([k.ndtr(v) for v in x]) == pytest.approx(special.ndtr(x), rel=1e-13, abs=1e-300)
    # log Φ: exact formula above −37, asymptotic series below (truncation error < 1e-12)
    assert np.array([k.log_ndtr(v) for v in x]) == pytest.approx(special.log_ndtr(x), rel=1e-12)


def test_log_space_quantile_continues_the_linear_one():
    for logp in (-50.0, -300.0, -700.0, -2000.0):
        if logp > -700:
            assert k._ndtri_log(logp) == pytest.approx(special.ndtri(np.exp(logp)), rel=1e-13)
        # AS 241 is designed for p >= 1e-300 (logp >= -690); beyond, its tail fit degrades to
        # ~2e-11 relative (checked): irrelevant for draws, which reach there with probability ~0
        tol = 1e-13 if logp >= -690 else 1e-9
        assert k._ndtri_log(logp) == pytest.approx(special.ndtri_exp(logp), rel=tol)


def test_fitted_rows_and_residual_crossprod():
    rng = np.random.default_rng(0)
    n, f, p, q, J = 50, 3, 2, 2, 4
    x = rng.normal(size=(n, f))
    z = np.column_stack([np.ones(n), rng.normal(size=n)])
    b = rng.normal(size=(f, p))
    u1 = rng.normal(size=(J, p * q))
    cl = np.sort(rng.integers(0, J, n))
    ref = x @ b + np.einsum("ik,ilk->il", z, u1.reshape(J, p, q)[cl])
    fit = np.empty((n, p))
    k.fitted_rows(x, b, u1, cl, z, q, fit)
    assert np.allclose(fit, ref)
    y = rng.normal(size=(n, p))
    e = y - fit
    assert np.allclose(k.residual_crossprod(y, fit, cl, 1)[0], e.T @ e)
    per = k.residual_crossprod(y, fit, cl, J)
    for j in range(J):
        assert np.allclose(per[j], e[cl == j].T @ e[cl == j])


@pytest.mark.parametrize("kind", ["binary", "ordinal", "nominal"])
def test_latent_column_draws_the_truncated_conditional_and_skips_missing_rows(kind):
    """With given uniforms, the kernel's draw equals the inverse-CDF draw from the row's
    conditional normal restricted to its category's interval; missing-category rows untouched."""
    from mlimpute.sampler.latent import truncated_normal

    rng = np.random.default_rng(3)
    n, p, c = 400, 4, 2
    A = rng.normal(size=(p, p))
    cov = A @ A.T + p * np.eye(p)
    Q = np.linalg.inv(cov)
    qc = Q[:, c] / Q[c, c]
    qc[c] = 0.0
    sd = 1.0 / np.sqrt(Q[c, c])
    y = rng.normal(size=(n, p))
    mean = rng.normal(size=(n, p))
    cuts = np.array([-np.inf, 0.0, 0.7, 1.5, np.inf])
    if kind == "nominal":              # latent columns 2, 3; three categories (last = reference)
        cols, K, kcode = np.array([2, 3]), 3, k.NOMINAL
    else:
        cols, K, kcode = np.array([2]), (2 if kind == "binary" else 4), (k.BINARY if kind == "binary" else k.ORDINAL)
    codes = rng.integers(-1, K, n).astype(np.int16)
    u = 1.0 - rng.random(n)
    cm = mean[:, c] - (y - mean) @ qc
    obs = codes >= 0
    if kind == "binary":
        lo = np.where(codes == 1, 0.0, -np.inf)
        hi = np.where(codes == 1, np.inf, 0.0)
    elif kind == "ordinal":
        lo, hi = cuts[np.maximum(codes, 0)], cuts[np.maximum(codes, 0) + 1]
    else:
        other = y[:, 3]
        lo = np.where(codes == 0, np.maximum(0.0, other), -np.inf)
        hi = np.where(codes == 0, np.inf, np.where(codes == 1, other, 0.0))

    class Fixed:
        def random(self, size):
            return 1.0 - u[:size]

    expected = truncated_normal(Fixed(), cm, sd, lo, hi)
    got = y.copy()
    k.latent_column(got, mean, qc, sd, c, kcode, codes, cols, 0, cuts if kind == "ordinal" else np.zeros(2), u)
    assert np.allclose(got[obs, c], expected[obs], rtol=1e-12, atol=1e-12)
    assert np.array_equal(got[~obs], y[~obs])
    assert np.array_equal(np.delete(got, c, axis=1), np.delete(y, c, axis=1))


def test_small_matrix_kernels_match_numpy():
    from mlimpute.sampler import _small

    rng = np.random.default_rng(4)
    for p in (1, 2, 5, 9):
        A = rng.normal(size=(p, p))
        S = A @ A.T + 0.5 * np.eye(p)
        L, ok = _small.chol(S)
        assert ok and np.allclose(L, np.linalg.cholesky(S))
        assert np.allclose(_small.tri_inv(L), np.linalg.inv(L))
        inv, ok = _small.spd_inv(S)
        assert ok and np.allclose(inv, np.linalg.inv(S)) and np.array_equal(inv, inv.T)
        B = rng.normal(size=(p, 3))
        assert np.allclose(_small.mm(A, B), A @ B) and np.allclose(_small.mm(A.T, A), A.T @ A)
        acc = B.copy()
        _small.mm_add(acc, S, B, -2.0)
        assert np.allclose(acc, B - 2.0 * S @ B)
        ev, V = _small.eigh(S)
        assert np.allclose(np.sort(ev), np.linalg.eigvalsh(S), rtol=1e-12)
        assert np.allclose(V.T @ V, np.eye(p), atol=1e-12) and np.allclose(S @ V, V * ev, atol=1e-10)
        psi = np.eye(p) + 0.3
        ref = -0.5 * (7.0 + p + 1) * np.linalg.slogdet(S)[1] - 0.5 * np.trace(np.linalg.solve(S, psi))
        assert np.isclose(_small.log_iw_kernel(S, 7.0, psi), ref)
        # Bartlett parts -> the same matrix as the explicit formula (Lψ A'⁻¹)(Lψ A'⁻¹)'
        chi = rng.uniform(1, 5, p)
        z = rng.normal(size=p * (p - 1) // 2)
        Abar = np.diag(np.sqrt(chi))
        Abar[np.tril_indices(p, -1)] = z
        M = np.linalg.cholesky(psi) @ np.linalg.inv(Abar).T
        draw, ok = _small.iw_from_parts(psi, chi, z)
        assert ok and np.allclose(draw, M @ M.T)
    bad = np.array([[1.0, 2.0], [2.0, 1.0]])
    assert not _small.chol(bad)[1] and not _small.spd_inv(bad)[1]
    assert _small.log_iw_kernel(bad, 5.0, np.eye(2)) == -np.inf
    with pytest.raises(np.linalg.LinAlgError):
        from mlimpute.sampler.linalg import invwishart
        invwishart(rng, 5.0, bad)
