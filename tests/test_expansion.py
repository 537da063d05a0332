"""The marginal-data-augmentation move of binary/ordinal latents (``sampler.expansion``).

The move's acceptance ratio is checked against the expanded target written out from scratch:
the identified posterior with scipy's densities, the working parameter's density, and the
Jacobian of the map from the expanded to the identified coordinates by finite differences; its
proposal against scipy's inverse-Wishart draws; and the whole sampler with the move against the
sampler without it (the same posterior, within Monte Carlo error).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from _designs import classes_in_schools, pupils_in_classes
from _stats import assert_same_means

import mlimpute as mi
from mlimpute.impute import prepare, run_chain
from mlimpute.sampler import expansion
from mlimpute.sampler.expansion import Effects, effects_term, expand_column


def _spd(rng, p, ridge=1.0):
    A = rng.standard_normal((p, p))
    return A @ A.T / p + ridge * np.eye(p)


class _Setup:
    """A small two-level state: y (continuous), b (binary), o (ordinal, 4 categories) at level 1
    with random intercepts and slopes (q = 2), one continuous level-2 variable (P = 7)."""

    def __init__(self, a: int, q: int = 2, seed: int = 3):
        rng = np.random.default_rng(seed)
        self.a = a
        self.N, self.J, self.p, self.q, self.f = 6, 2, 3, q, 2
        self.P = self.p * self.q + 1
        self.X = np.column_stack([np.ones(self.N), rng.standard_normal(self.N)])
        self.Z = np.column_stack([np.ones(self.N), rng.standard_normal(self.N)])[:, :q]
        self.cl = np.array([0, 0, 0, 1, 1, 1])
        self.zlat = rng.standard_normal((self.N, self.p))
        self.B = rng.standard_normal((self.f, self.p))
        self.U = rng.standard_normal((self.J, self.p * self.q))
        self.u2 = rng.standard_normal((self.J, 1))
        self.om2 = _spd(rng, self.P)
        om1 = _spd(rng, self.p)
        d = np.sqrt(np.diag(om1))
        d[[0]] = 1.0
        self.om1 = om1 / d[:, None] / d[None, :]     # b's and o's variances 1
        self.cuts = np.array([0.7, 1.5])             # o's free thresholds (γ_1 = 0 fixed)
        self.psi1 = _spd(rng, self.p, 0.5)           # with off-diagonal elements in row a
        self.nu1, self.psi2, self.nu2 = 4.0, _spd(rng, self.P, 0.5), 8.0
        self.prec = 1.0 / 2.5 ** 2                   # categorical_prior_sd = 2.5
        self.n_cuts = 2 if a == 2 else 0

    def residuals(self, zlat, B, U):
        fit = self.X @ B
        for l in range(self.p):
            fit[:, l] += np.sum(self.Z * U[self.cl][:, l * self.q:(l + 1) * self.q], axis=1)
        return zlat - fit

    def log_post(self, za, Ba, Ua, om2, cuts, om1):
        """The identified posterior (up to a constant) with column a's parts replaced."""
        a, q = self.a, self.q
        zlat, B, U = self.zlat.copy(), self.B.copy(), self.U.copy()
        zlat[:, a], B[:, a], U[:, a * q:(a + 1) * q] = za, Ba, Ua
        E = self.residuals(zlat, B, U)
        out = stats.multivariate_normal(np.zeros(self.p), om1).logpdf(E).sum()
        v = np.hstack([U, self.u2])
        out += stats.multivariate_normal(np.zeros(self.P), om2).logpdf(v).sum()
        out += stats.invwishart(self.nu2, self.psi2).logpdf(om2)
        out += stats.invwishart(self.nu1, self.psi1).logpdf(om1)   # restricted: same kernel
        ss = Ba @ Ba + (cuts @ cuts if self.a == 2 else 0.0)
        return out - 0.5 * self.prec * ss

    # the expanded coordinates of column a's parts, as one vector
    def pack(self, za, Ba, Ua, om2, cuts, om1):
        i2, i1 = np.tril_indices(self.P), np.tril_indices(self.p)
        return np.concatenate([za, Ba, Ua.ravel(), om2[i2], cuts[:self.n_cuts], om1[i1]])

    def unpack(self, v):
        N, f, J, q, P, p = self.N, self.f, self.J, self.q, self.P, self.p
        k = np.cumsum([0, N, f, J * q, P * (P + 1) // 2, self.n_cuts, p * (p + 1) // 2])
        parts = [v[k[i]:k[i + 1]] for i in range(6)]
        om2, om1 = np.zeros((P, P)), np.zeros((p, p))
        om2[np.tril_indices(P)] = parts[3]
        om1[np.tril_indices(p)] = parts[5]
        om2 = om2 + np.tril(om2, -1).T
        om1 = om1 + np.tril(om1, -1).T
        cuts = np.concatenate([parts[4], self.cuts[self.n_cuts:]]) if self.n_cuts else self.cuts
        return parts[0], parts[1], parts[2].reshape(J, q), om2, cuts, om1

    def identified(self, v):
        """Map the expanded coordinates to (identified parts, α) as a vector (Ω1_aa left out)."""
        za, Ba, Ua, om2, cuts, om1 = self.unpack(v)
        a, q = self.a, self.q
        alpha = np.sqrt(om1[a, a])
        d2 = np.ones(self.P)
        d2[a * q:(a + 1) * q] = alpha
        d1 = np.ones(self.p)
        d1[a] = alpha
        om2, om1 = om2 / d2[:, None] / d2[None, :], om1 / d1[:, None] / d1[None, :]
        i1 = [(i, j) for i, j in zip(*np.tril_indices(self.p)) if not i == j == a]
        x = (za / alpha, Ba / alpha, Ua / alpha, om2, cuts / alpha if self.n_cuts else cuts, om1)
        flat = np.concatenate([x[0], x[1], x[2].ravel(), om2[np.tril_indices(self.P)],
                               x[4][:self.n_cuts], [om1[i, j] for i, j in i1], [alpha]])
        return x, alpha, flat

    def log_expanded(self, v):
        """log π̃ = log π(identified) + log q(α | Ω1) + log |∂(identified, α)/∂(expanded)|."""
        x, alpha, _ = self.identified(v)
        om1 = x[5]
        beta = 0.5 * self.psi1[self.a, self.a] * np.linalg.inv(om1)[self.a, self.a]
        log_q = stats.invgamma(0.5 * self.nu1, scale=beta).logpdf(alpha ** 2) + np.log(2 * alpha)
        h = 1e-6
        jac = np.empty((v.size, v.size))
        for k in range(v.size):
            e = np.zeros(v.size)
            e[k] = h
            jac[:, k] = (self.identified(v + e)[2] - self.identified(v - e)[2]) / (2 * h)
        return self.log_post(*x) + log_q + np.linalg.slogdet(jac)[1]


@pytest.mark.parametrize("a, q", [(1, 2), (2, 2), (2, 0)])
def test_acceptance_ratio_is_the_expanded_target(a, q):
    """log A of ``expand_column`` = log π̃(new) − log π̃(old) − log g(new) + log g(old), g the
    inverse-Wishart proposal of Ω̃1's row a (its conditional: the ratio of full densities).
    The ratio is ``expand_column``'s plus the random effects' ``effects_term``. q = 0 (no random
    effects of the variable) is the level-2 move: rows are clusters, Ω2 in Ω1's place."""
    s = _Setup(a, q)
    rng = np.random.default_rng(11)
    E = s.residuals(s.zlat, s.B, s.U)
    S1 = E.T @ E
    lam2 = np.linalg.inv(s.om2)
    for _ in range(3):
        gam, chi, z = rng.gamma(0.5 * s.nu1), rng.chisquare(s.nu1 + s.N), rng.standard_normal(s.p - 1)
        args = (S1, s.om1, s.psi1, s.nu1, a, s.f, s.n_cuts,
                s.prec * (s.B[:, a] @ s.B[:, a] + (s.cuts @ s.cuts if a == 2 else 0.0)), gam, chi, z)
        alpha_old, alpha_new, om_tilde_new, _ = expand_column(*args, True)
        *_, log_acc = expand_column(*args, False)
        mask = np.zeros(s.P, bool)
        mask[a * q:(a + 1) * q] = True
        log_acc += effects_term(alpha_old / alpha_new, s.psi2 * lam2, mask, s.nu2)
        d2 = np.ones(s.P)
        d2[a * q:(a + 1) * q] = alpha_old
        d1 = np.ones(s.p)
        d1[a] = alpha_old
        common = (alpha_old * s.zlat[:, a], alpha_old * s.B[:, a], alpha_old * s.U[:, a * q:(a + 1) * q],
                  s.om2 * d2[:, None] * d2[None, :], alpha_old * s.cuts)
        v_old = s.pack(*common, s.om1 * d1[:, None] * d1[None, :])
        v_new = s.pack(*common, om_tilde_new)
        g = stats.invwishart(s.nu1 + s.N, s.psi1 + (E * d1).T @ (E * d1))
        expected = (s.log_expanded(v_new) - s.log_expanded(v_old)
                    - g.logpdf(om_tilde_new) + g.logpdf(s.om1 * d1[:, None] * d1[None, :]))
        assert np.isclose(alpha_new, np.sqrt(om_tilde_new[a, a]))
        assert log_acc == pytest.approx(expected, abs=1e-6)


def test_proposal_is_the_inverse_wishart_conditional():
    """Given α_old, the proposed row of Ω̃1 follows IW(ν1 + N, Ψ1 + D S1 D) given the rest: its
    regression on the rest, Ω_rr⁻¹Ω_ra, and conditional variance Ω_aa·r (independent of Ω_rr)
    against scipy's draws of the whole matrix."""
    s, a, n = _Setup(1), 1, 20000
    rng = np.random.default_rng(5)
    E = s.residuals(s.zlat, s.B, s.U)
    S1 = E.T @ E
    gam = 0.9
    df = s.nu1 + s.N
    ours = []
    for _ in range(n):
        alpha_old, _, om, _ = expand_column(S1, s.om1, s.psi1, s.nu1, a, s.f, 0, 0.0,
                                            gam, rng.chisquare(df), rng.standard_normal(s.p - 1), True)
        ours.append(om)
    d1 = np.ones(s.p)
    d1[a] = alpha_old
    theirs = stats.invwishart(df, s.psi1 + (E * d1).T @ (E * d1)).rvs(n, random_state=rng)
    r = [0, 2]

    def parts(oms):
        oms = np.asarray(oms)
        g = np.linalg.solve(oms[:, r][:, :, r], oms[:, r, a][:, :, None])[:, :, 0]
        cond = oms[:, a, a] - np.einsum("ni,ni->n", oms[:, a, r], g)
        return np.column_stack([g, np.log(cond)])

    x, y = parts(ours), parts(theirs)
    se = np.sqrt(x.var(0) / n + y.var(0) / n)
    assert np.all(np.abs(x.mean(0) - y.mean(0)) < 4 * se)
    assert np.allclose(x.std(0), y.std(0), rtol=0.05)
    for k in range(x.shape[1]):
        assert stats.ks_2samp(x[:, k], y[:, k]).pvalue > 1e-3


def _data(seed=0, J=40, n=8):
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(J), n)
    x = rng.standard_normal(J * n)
    u = rng.standard_normal((J, 2)) * [0.6, 0.8]
    y = 1 + 0.5 * x + u[g, 0] + rng.standard_normal(J * n)
    lat = 0.3 + 0.8 * x + 0.5 * y + u[g, 1] + rng.standard_normal(J * n)
    b = (lat > 0.8).astype(float)
    o = np.digitize(0.2 - 0.6 * x + u[g, 1] + rng.standard_normal(J * n), [-0.5, 0.4, 1.2]).astype(float)
    w = (0.4 * u[:, 0] - 0.3 * u[:, 1] + rng.standard_normal(J) > 0.3).astype(float)   # level 2
    w[rng.random(J) < 0.2] = np.nan
    h = np.argmax(np.column_stack([np.zeros(J * n), 0.3 * x + u[g, 0] + rng.standard_normal(J * n),
                                   -0.5 + rng.standard_normal(J * n)]), axis=1).astype(float)
    v = np.argmax(np.column_stack([np.zeros(J), u[:, 1] + rng.standard_normal(J),
                                   0.2 + rng.standard_normal(J)]), axis=1).astype(float)
    v[rng.random(J) < 0.2] = np.nan
    df = pd.DataFrame({"g": g, "x": x, "y": y, "b": b, "o": o, "h": h, "w": w[g], "v": v[g]})
    for c in ("y", "b", "o", "h"):
        df.loc[rng.random(J * n) < 0.25, c] = np.nan
    return df


MODEL = dict(cluster="g", covariates=["x"], variables={"y": "continuous", "b": "binary", "o": "ordinal",
                                                      "h": "nominal", "w": mi.Variable("binary", level=2),
                                                      "v": mi.Variable("nominal", level=2)})


@pytest.mark.parametrize("seed", [1, 2])
def test_sampler_with_the_move_keeps_the_posterior(seed, monkeypatch):
    """Every monitored parameter's posterior mean with the move equals its mean without it
    within 4.5 Monte Carlo SEs (effective sample sizes of each run), and the move is taken."""
    data = prepare(_data(seed), mi.ImputationModel(**MODEL))
    taken = {"augmentation": [], "nominal": []}

    def counting(*args, original=expansion.scale_moves):
        out = original(*args)
        taken["augmentation"].append(out[-2])
        taken["nominal"].append(out[-1])
        return out

    monkeypatch.setattr(expansion, "scale_moves", counting)
    runs = {}
    for on in (True, False):
        monkeypatch.setattr(expansion, "ENABLED", on)
        traces = [run_chain(data, c, 1, 300, 3000, np.random.SeedSequence([seed, c, on])).trace for c in range(2)]
        runs[on] = np.stack(traces)
    assert 0.5 < np.mean(np.concatenate(taken["augmentation"])) <= 1.0
    assert 0.3 < np.mean(np.concatenate(taken["nominal"])) < 0.95
    assert_same_means(runs)


def _burnt_in(seed: int):
    """A small data set's model and a state after 50 sweeps, with the generator that ran them."""
    from mlimpute.sampler.sweep import initial_state, prepare_static, sweep

    data = prepare(_data(seed, J=15, n=4), mi.ImputationModel(**MODEL))
    st = prepare_static(data)
    rng = np.random.default_rng(seed)
    state = initial_state(st, rng)
    for _ in range(50):
        state = sweep(rng, st, state, work={})
    return data, st, state, rng


def test_a_taken_move_rescales_every_part_of_the_state():
    """After ``scale_moves`` takes a binary/ordinal variable's move, column a's latents, fixed
    and random effects, Ω2's rows and columns, thresholds, fitted values and residual
    cross-product are the old ones times one common s > 0; every category is unchanged; Ω1 keeps
    its fixed diagonal."""
    from mlimpute.sampler.latent import latents_to_codes
    from mlimpute.sampler.sweep import _fitted_and_crossprod

    data, st, state, rng = _burnt_in(4)
    codecs = {c.name: c for c in st.cat1}
    taken = set()
    for _ in range(20):
        y1, b1, u1 = state.y1.copy(), state.b1.copy(), state.u1.copy()
        fitted, S1 = _fitted_and_crossprod(st, b1, u1, y1, {})
        fitted, S1 = fitted.copy(), S1.copy()
        old = (y1.copy(), b1, u1, state.omega2.copy(), state.cuts1)
        out = expansion.scale_moves(rng, st.expand1[0], (), 0, st.prior1, st.fixed_prior, 0, y1, fitted, S1, b1,
                                    state.omega1, state.cuts1, [Effects(u1, state.omega2, *st.prior2, st.expand1[1])])
        y1n, b1n, om1n, cutsn, S1n, (eff,), acc, _ = out
        u1n, om2n = eff.u, eff.omega
        d = np.ones(state.omega2.shape[0])
        for t, (a, o) in enumerate(st.expand1[0]):
            s_ = y1n[:, a] / old[0][:, a]
            s = s_[0]
            d[a * st.q:(a + 1) * st.q] = s
            if not acc[t]:
                assert s == 1.0
                continue
            taken.add(a)
            assert s > 0 and np.allclose(s_, s)
            assert np.allclose(b1n[:, a], s * old[1][:, a]) and np.allclose(u1n[:, a], s * old[2][:, a])
            if o is not None:
                assert np.allclose(cutsn[o], s * old[4][o])
            assert om1n[a, a] == 1.0
        assert np.allclose(om2n, old[3] * d[:, None] * d[None, :])
        f_new, S_new = _fitted_and_crossprod(st, b1n, u1n, y1n, {})
        assert np.allclose(fitted, f_new) and np.allclose(S1n, S_new)
        assert np.all(np.linalg.eigvalsh(om1n) > 0) and np.allclose(np.diag(om1n)[[a for a, _ in st.expand1[0]]], 1.0)
        oc = 0
        for name in ("b", "o"):
            c = codecs[name]
            cu_old = old[4][oc] if c.kind == "ordinal" else None
            cu_new = cutsn[oc] if c.kind == "ordinal" else None
            assert np.array_equal(latents_to_codes(c, old[0][:, list(c.cols)], cu_old),
                                  latents_to_codes(c, y1n[:, list(c.cols)], cu_new))
            oc += c.kind == "ordinal"
        state = state._replace(y1=y1n, b1=b1n, u1=u1n, omega1=om1n, omega2=om2n, cuts1=cutsn)
    assert taken == {a for a, _ in st.expand1[0]}


def test_a_taken_level2_move_rescales_every_part_of_the_state():
    """``scale_moves`` at level 2: the level-2 latent, its fixed effects, its coordinate of the clusters'
    rows u and of u'u are the old ones times one s > 0; its categories are unchanged; Ω2 keeps
    its fixed diagonal element and stays positive definite."""
    data, st, state, rng = _burnt_in(5)
    ((a, _),) = st.expand2[0]
    k = st.p1 * st.q + a
    n_taken = 0
    for _ in range(10):
        y2, b2 = state.y2.copy(), state.b2.copy()
        u = np.concatenate([state.u1, y2 - data.x2 @ b2], axis=1)
        S2 = u.T @ u
        un = u.copy()
        y2n, b2n, om2n, _, S2n, _, acc, _ = expansion.scale_moves(
            rng, st.expand2[0], (), k - a, st.prior2, st.fixed_prior, st.p1 * data.x1.shape[1], y2.copy(),
            un, S2.copy(), b2, state.omega2, state.cuts2, [])
        s = y2n[0, a] / y2[0, a]
        assert np.allclose(y2n[:, a], s * y2[:, a]) and np.allclose(b2n[:, a], s * b2[:, a])
        assert np.allclose(un, np.concatenate([state.u1, y2n - data.x2 @ b2n], axis=1))
        assert np.allclose(S2n, un.T @ un)
        assert np.array_equal(y2n[:, a] > 0, y2[:, a] > 0)
        assert om2n[k, k] == 1.0 and np.all(np.linalg.eigvalsh(om2n) > 0)
        n_taken += bool(acc[0])
        assert (s != 1.0) == bool(acc[0])
        state = state._replace(y2=y2n, b2=b2n, omega2=om2n)
    assert n_taken >= 3


@pytest.mark.parametrize("q", [2, 0])
def test_nominal_block_target_is_the_posterior_along_the_group(q):
    """``block_scale_target`` at s equals log π(g_s θ) + log |J_{g_s}| − log π(θ) written out with
    scipy's densities, g_s multiplying a nominal block's latents, fixed effects, random effects
    and Ω2's coordinates by s with Ω1 kept; the Jacobian counted from the map itself. q = 0 is
    the level-2 move (no random effects of the block)."""
    from mlimpute.sampler.expansion import block_scale_target, block_statistics

    s0 = _Setup(1, q)
    F, W = np.array([1, 2]), 2
    om1 = np.array([[1.7, 0.4, -0.3], [0.4, 1.0, 0.5], [-0.3, 0.5, 1.0]])   # F's block ½(I + 11')
    assert np.linalg.eigvalsh(om1).min() > 0
    coords = np.zeros(s0.P, bool)
    for c in F:
        coords[c * q:(c + 1) * q] = True

    def moved(sc):
        zl, B, U, om2 = s0.zlat.copy(), s0.B.copy(), s0.U.copy(), s0.om2.copy()
        zl[:, F] *= sc
        B[:, F] *= sc
        U[:, coords[:U.shape[1]]] *= sc
        d = np.where(coords, sc, 1.0)
        return zl, B, U, om2 * d[:, None] * d[None, :]

    def log_post(zl, B, U, om2):
        E = s0.residuals(zl, B, U)
        out = stats.multivariate_normal(np.zeros(s0.p), om1).logpdf(E).sum()
        out += stats.multivariate_normal(np.zeros(s0.P), om2).logpdf(np.hstack([U, s0.u2])).sum()
        return out + stats.invwishart(s0.nu2, s0.psi2).logpdf(om2) - 0.5 * s0.prec * np.sum(B[:, F] ** 2)

    def packed(zl, B, U, om2):
        return np.concatenate([zl[:, F].ravel(), B[:, F].ravel(), U.ravel(), om2[np.tril_indices(s0.P)]])

    E = s0.residuals(s0.zlat, s0.B, s0.U)
    A, m = block_statistics(E.T @ E, np.linalg.inv(om1), F)
    k = W * (s0.N + s0.f)
    pl2 = s0.psi2 * np.linalg.inv(s0.om2)
    prior_ss = s0.prec * np.sum(s0.B[:, F] ** 2)
    for sc in (0.8, 1.07, 1.3):
        x1 = moved(sc)
        nz = packed(*moved(1.0)) != 0
        log_jac = np.sum(np.log(np.abs(packed(*x1)[nz] / packed(*moved(1.0))[nz])))
        direct = log_post(*x1) + log_jac - log_post(*moved(1.0))
        ours = block_scale_target(sc, A, m, k, prior_ss) + effects_term(sc, pl2, coords, s0.nu2)
        assert ours == pytest.approx(direct, rel=1e-9, abs=1e-8)


def test_a_nominal_move_rescales_the_block_and_keeps_the_categories():
    """``scale_moves`` of nominal variables at both levels: the block's latents, fixed effects,
    random effects, Ω2's coordinates and the residuals' cross-product are the old ones times one
    s; the categories (the largest latent and its sign) are unchanged; moves are taken."""
    from mlimpute.sampler.latent import latents_to_codes
    from mlimpute.sampler.sweep import _fitted_and_crossprod

    data, st, state, rng = _burnt_in(6)
    (cols1,), (mask1,) = st.nominal_blocks[0]
    (cols2,), _ = st.nominal_blocks[1]
    codec1 = next(c for c in st.cat1 if c.kind == "nominal")
    codec2 = next(c for c in st.cat2 if c.kind == "nominal")
    moved = {1: 0, 2: 0}
    for _ in range(10):
        y1, b1, u1 = state.y1.copy(), state.b1.copy(), state.u1.copy()
        fitted, S1 = (a.copy() for a in _fitted_and_crossprod(st, b1, u1, y1, {}))
        y1n, b1n, _, _, S1n, (eff,), _, _ = expansion.scale_moves(
            rng, (), (cols1,), 0, st.prior1, st.fixed_prior, 0, y1.copy(), fitted, S1.copy(), b1, state.omega1,
            state.cuts1, [Effects(u1, state.omega2, *st.prior2, st.nominal_blocks[0][1])])
        u1n, om2n = eff.u, eff.omega
        s = y1n[0, cols1[0]] / y1[0, cols1[0]]
        moved[1] += s != 1.0
        assert np.allclose(y1n[:, list(cols1)], s * y1[:, list(cols1)])
        assert np.allclose(b1n[:, list(cols1)], s * b1[:, list(cols1)])
        assert np.allclose(u1n[:, mask1[:u1.shape[1]]], s * u1[:, mask1[:u1.shape[1]]])
        d = np.where(mask1, s, 1.0)
        assert np.allclose(om2n, state.omega2 * d[:, None] * d[None, :])
        f_new, S_new = _fitted_and_crossprod(st, b1n, u1n, y1n, {})
        assert np.allclose(fitted, f_new) and np.allclose(S1n, S_new)
        assert np.array_equal(latents_to_codes(codec1, y1[:, list(cols1)], None),
                              latents_to_codes(codec1, y1n[:, list(cols1)], None))
        y2, b2 = state.y2.copy(), state.b2.copy()
        u = np.concatenate([u1n, y2 - data.x2 @ b2], axis=1)
        off = st.p1 * st.q
        y2n, b2n, _, _, S2n, _, _, _ = expansion.scale_moves(
            rng, (), (cols2,), off, st.prior2, st.fixed_prior, st.p1 * data.x1.shape[1], y2.copy(), u, u.T @ u, b2,
            om2n, state.cuts2, [])
        s2 = y2n[0, cols2[0]] / y2[0, cols2[0]]
        moved[2] += s2 != 1.0
        assert np.allclose(u, np.concatenate([u1n, y2n - data.x2 @ b2n], axis=1)) and np.allclose(S2n, u.T @ u)
        assert np.allclose(y2n[:, list(cols2)], s2 * y2[:, list(cols2)])
        assert np.array_equal(latents_to_codes(codec2, y2[:, list(cols2)], None),
                              latents_to_codes(codec2, y2n[:, list(cols2)], None))
        state = state._replace(y1=y1n, b1=b1n, u1=u1n, omega2=om2n, y2=y2n, b2=b2n)
    assert moved[1] >= 3 and moved[2] >= 3


def _three_level(seed: int, S=30, C=3, n=6):
    """Pupils in classes in schools with y (continuous), b (binary) and h (nominal) per pupil."""
    def categorical(rng, x, y, us, uc, school, cls):
        N = x.size
        b = (0.3 * x + 0.5 * y + us[school, 1] + rng.standard_normal(N) > 0.2).astype(float)
        h = np.argmax(np.column_stack([np.zeros(N), 0.4 * x + uc[cls, 1] + rng.standard_normal(N),
                                       -0.3 + us[school, 1] + rng.standard_normal(N)]), axis=1).astype(float)
        return {"b": b, "h": h}
    return pupils_in_classes(seed, S, C, n, 2, categorical)


THREE = dict(cluster=["school", "class"], covariates=["x"],
             variables={"y": "continuous", "b": "binary", "h": "nominal"})


def test_general_sampler_moves_every_classification_with_the_latents():
    """In the general sampler (three levels), a taken move multiplies the latents, B1's column
    and every classification's effects and covariance coordinates of the variable by one s;
    μ1 and the cross-product stay those of the new state; categories are unchanged."""
    from mlimpute.sampler import multi
    from mlimpute.sampler._kernels import residual_crossprod
    from mlimpute.sampler.latent import latents_to_codes
    from mlimpute.sampler.sweep import initial_state, prepare_static, sweep

    data = prepare(_three_level(7), mi.ImputationModel(**THREE))
    st = prepare_static(data)
    assert isinstance(st, multi.MultiStatic) and st.expand1[0] and st.nominal1[0]
    rng = np.random.default_rng(7)
    state = initial_state(st, rng)
    for _ in range(50):
        state = sweep(rng, st, state)
    moved = 0
    for _ in range(10):
        y1, b1 = state.y1.copy(), state.b1.copy()
        mu1 = multi.level1_mean(st, b1, state.us)
        S1 = residual_crossprod(y1, mu1, np.zeros(data.n_rows, np.int64), 1)[0]
        y1n, b1n, om1n, cutsn, S1n, usn, omn = multi._expand_level1(
            rng, st, y1.copy(), mu1, S1.copy(), b1, state.omega1, state.cuts1, list(state.us), list(state.omegas))
        assert np.allclose(mu1, multi.level1_mean(st, b1n, tuple(usn)))
        assert np.allclose(S1n, residual_crossprod(y1n, mu1, np.zeros(data.n_rows, np.int64), 1)[0])
        for cols in [(a,) for a, _ in st.expand1[0]] + list(st.nominal1[0]):
            s = y1n[0, cols[0]] / y1[0, cols[0]]
            moved += s != 1.0
            assert np.allclose(y1n[:, list(cols)], s * y1[:, list(cols)])
            assert np.allclose(b1n[:, list(cols)], s * b1[:, list(cols)])
            for u_old, u_new in zip(state.us, usn):
                assert np.allclose(u_new[:, list(cols)], s * u_old[:, list(cols)])
        for c in st.cat1:
            cut_old = state.cuts1[0] if c.kind == "ordinal" else None
            cut_new = cutsn[0] if c.kind == "ordinal" else None
            assert np.array_equal(latents_to_codes(c, y1[:, list(c.cols)], cut_old),
                                  latents_to_codes(c, y1n[:, list(c.cols)], cut_new))
        assert np.all([np.linalg.eigvalsh(o).min() > 0 for o in omn])
        state = state._replace(y1=y1n, b1=b1n, omega1=om1n, cuts1=cutsn, us=tuple(usn), omegas=tuple(omn))
    assert moved >= 8


def _class_level(seed: int, S=40, C=4, n=5):
    """Pupils (y continuous) in classes with a binary cb, an ordinal co and a nominal ch per
    class, in schools with a binary sb: the classification-level categorical variables."""
    rng = np.random.default_rng(seed)
    school, cls, csch, us, uc, x, y = classes_in_schools(rng, S, C, n)
    N, K = S * C * n, S * C
    cb = (uc[:, 0] + us[csch, 1] + rng.standard_normal(K) > 0).astype(float)
    co = np.digitize(uc[:, 0] + us[csch, 2] + rng.standard_normal(K), [-0.5, 0.7]).astype(float)
    ch = np.argmax(np.column_stack([np.zeros(K), uc[:, 1] + rng.standard_normal(K),
                                    -0.3 + us[csch, 1] + rng.standard_normal(K)]), axis=1).astype(float)
    sb = (us[:, 0] + rng.standard_normal(S) > 0).astype(float)
    df = pd.DataFrame({"school": school, "class": cls % C, "x": x, "y": y, "cb": cb[cls], "co": co[cls],
                       "ch": ch[cls], "sb": sb[school]})
    df.loc[rng.random(N) < 0.2, "y"] = np.nan
    for c in ("cb", "co", "ch"):
        df.loc[(rng.random(K) < 0.2)[cls], c] = np.nan
    return df


CLASS_LEVEL = dict(cluster=["school", "class"], covariates=["x"],
                   variables={"y": "continuous", "cb": mi.Variable("binary", level="class"),
                              "co": mi.Variable("ordinal", level="class"),
                              "ch": mi.Variable("nominal", level="class"),
                              "sb": mi.Variable("binary", level="school")})


@pytest.mark.parametrize("design", ["level-1", "classification-level"])
def test_general_sampler_with_the_moves_keeps_the_posterior(design, monkeypatch):
    """Three levels, binary and nominal at level 1, or binary, ordinal and nominal variables of
    the classes: every monitored parameter's posterior mean with the moves equals its mean
    without them within 4.5 Monte Carlo SEs."""
    seed = {"level-1": 8, "classification-level": 12}[design]
    df, model = (_three_level(8), THREE) if design == "level-1" else (_class_level(12), CLASS_LEVEL)
    data = prepare(df, mi.ImputationModel(**model))
    runs = {}
    for on in (True, False):
        monkeypatch.setattr(expansion, "ENABLED", on)
        runs[on] = np.stack([run_chain(data, c, 1, 300, 2500, np.random.SeedSequence([seed, c, on])).trace
                             for c in range(2)])
    assert_same_means(runs)


def test_general_sampler_moves_classification_level_latents():
    """A classification's own binary, ordinal and nominal latents: a taken move multiplies the
    variable's latents, fixed effects, thresholds, Ω^(c) coordinates and the effects and Ω
    coordinates of the classification nesting it by one s; the units' rows and their
    cross-product stay those of the new state; categories and fixed elements are unchanged."""
    from mlimpute.sampler import multi
    from mlimpute.sampler.latent import latents_to_codes
    from mlimpute.sampler.sweep import initial_state, prepare_static, sweep

    data = prepare(_class_level(11), mi.ImputationModel(**CLASS_LEVEL))
    st = prepare_static(data)
    cls_, school = st.classes
    assert len(cls_.expand) == 2 and len(cls_.nominal) == 1 and len(school.expand) == 1
    assert [a for a, _ in cls_.moves_effects] == [1] and school.moves_effects == ()
    rng = np.random.default_rng(11)
    state = initial_state(st, rng)
    for _ in range(50):
        state = sweep(rng, st, state, work={})
    moved = {}
    for _ in range(12):
        for ci in (0, 1):
            cs = st.classes[ci]
            ys, bs, us, omegas, cuts = (list(state.ys), list(state.bs), list(state.us), list(state.omegas),
                                        list(state.cuts))
            old = [a.copy() for a in (ys[ci], bs[ci], us[1], omegas[1], omegas[ci])]
            old_cuts = list(cuts[ci])
            u = np.concatenate([us[ci], multi._own_residuals(st, ci, ys, bs, us)], axis=1)
            ys[ci] = ys[ci].copy()
            S = multi._expand_class(rng, st, ci, u, u.T @ u, ys, bs, us, omegas, cuts)
            u_new = np.concatenate([us[ci], multi._own_residuals(st, ci, ys, bs, us)], axis=1)
            assert np.allclose(u, u_new) and np.allclose(S, u_new.T @ u_new)
            masks = dict(cs.moves_effects)
            d_outer = np.ones(omegas[1].shape[0])
            for t, cols in enumerate([(c,) for c, _ in cs.expand] + list(cs.nominal)):
                s = ys[ci][0, cols[0]] / old[0][0, cols[0]]
                moved[ci, cols] = moved.get((ci, cols), 0) + (s != 1.0)
                assert np.allclose(ys[ci][:, list(cols)], s * old[0][:, list(cols)])
                assert np.allclose(bs[ci][:, list(cols)], s * old[1][:, list(cols)])
                if 1 in masks:
                    d_outer[masks[1][t]] = s
                    mk = masks[1][t][:us[1].shape[1]]
                    assert np.allclose(us[1][:, mk], s * old[2][:, mk])
                if t < len(cs.expand) and cs.expand[t][1] is not None:
                    assert np.allclose(cuts[ci][cs.expand[t][1]], s * old_cuts[cs.expand[t][1]])
            if ci == 0:   # the school's Ω: the class variables' coordinates times s
                assert np.allclose(omegas[1], d_outer[:, None] * old[3] * d_outer)
            con = cs.con   # Ω^(c) (a new row by augmentation) keeps its fixed elements
            fixed = ~np.isnan(con.target)
            assert np.allclose(omegas[ci][np.ix_(con.cat, con.cat)][fixed], con.target[fixed])
            assert np.all(np.linalg.eigvalsh(omegas[ci]) > 0)
            ordinal = 0
            for c in cs.cat:
                cu = (old_cuts[ordinal], cuts[ci][ordinal]) if c.kind == "ordinal" else (None, None)
                assert np.array_equal(latents_to_codes(c, old[0][:, list(c.cols)], cu[0]),
                                      latents_to_codes(c, ys[ci][:, list(c.cols)], cu[1]))
                ordinal += c.kind == "ordinal"
            state = state._replace(ys=tuple(ys), bs=tuple(bs), us=tuple(us), omegas=tuple(omegas),
                                   cuts=tuple(cuts))
    assert len(moved) == 4 and min(moved.values()) >= 3, moved
