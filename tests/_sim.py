"""Simulators of the joint two-level model with known parameters, shared by the tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass
class Truth:
    b1: np.ndarray       # (f1, p1): rows Intercept, x
    b2: np.ndarray       # (f2, p2): row Intercept
    omega1: np.ndarray   # (p1, p1)
    omega2: np.ndarray   # (d, d), d = p1*q + p2, u1 variable-major then u2


def simulate(
    rng: np.random.Generator,
    J: int = 200,
    n: int = 20,
    missing: float = 0.2,
    slope: bool = False,
    truth: Truth | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, Truth]:
    """Two level-1 variables (y1, y2), one level-2 variable (w), covariate x (random slope if
    ``slope``). Returns (data with MCAR holes, complete data, truth)."""
    q = 2 if slope else 1
    p1, p2 = 2, 1
    d = p1 * q + p2
    if truth is None:
        b1 = np.array([[1.0, -0.5], [0.5, 0.3]])
        b2 = np.array([[2.0]])
        omega1 = np.array([[1.0, 0.4], [0.4, 0.8]])
        if slope:  # order: y1:Int, y1:x, y2:Int, y2:x, w
            sd = np.array([0.7, 0.3, 0.5, 0.25, 0.6])
            corr = np.eye(d)
            corr[0, 2] = corr[2, 0] = 0.5
            corr[0, 4] = corr[4, 0] = 0.4
            corr[2, 4] = corr[4, 2] = 0.3
            corr[0, 1] = corr[1, 0] = 0.2
        else:      # order: y1:Int, y2:Int, w
            sd = np.array([0.7, 0.5, 0.6])
            corr = np.array([[1.0, 0.5, 0.4], [0.5, 1.0, 0.3], [0.4, 0.3, 1.0]])
        omega2 = corr * np.outer(sd, sd)
        truth = Truth(b1, b2, omega1, omega2)
    N = J * n
    cl = np.repeat(np.arange(J), n)
    x = rng.normal(size=N)
    U = rng.multivariate_normal(np.zeros(d), truth.omega2, size=J)
    X1 = np.column_stack([np.ones(N), x])
    Z = X1[:, :q]
    u1 = U[:, : p1 * q].reshape(J, p1, q)
    zu = np.einsum("ik,ilk->il", Z, u1[cl])
    E = rng.multivariate_normal(np.zeros(p1), truth.omega1, size=N)
    Y1 = X1 @ truth.b1 + zu + E
    w = truth.b2[0, 0] + U[:, p1 * q]
    full = pd.DataFrame({"g": cl, "y1": Y1[:, 0], "y2": Y1[:, 1], "w": w[cl], "x": x})
    data = full.copy()
    for c in ("y1", "y2"):
        data.loc[rng.random(N) < missing, c] = np.nan
    mw = rng.random(J) < missing
    data.loc[mw[cl], "w"] = np.nan
    return data, full, truth


@dataclass
class MixedTruth:
    b1: np.ndarray       # (2, 5): rows Intercept, x; columns y, b, o, f[A], f[B]
    b2: np.ndarray       # (1, 2): w, v
    omega1: np.ndarray   # (5, 5) latent level-1 covariance (constrained elements fixed)
    omega2: np.ndarray   # (7, 7): random intercepts of y, b, o, f[A], f[B], then w, v
    cuts: np.ndarray     # ordinal thresholds [-inf, 0, γ2, γ3, inf]

    def monitored(self) -> np.ndarray:
        """The true values of the sampler's monitored parameters, in its trace order: B1 and B2
        (variable-major), the free lower-triangle elements of Ω1 (the latent variances of b, o,
        f[A], f[B] and f's nominal covariance are fixed) and of Ω2 (v's variance is fixed), and
        the free thresholds."""
        return np.concatenate([
            self.b1.T.ravel(), self.b2.T.ravel(),
            _free_lower(self.omega1, {(1, 1), (2, 2), (3, 3), (4, 4), (4, 3)}),
            _free_lower(self.omega2, {(6, 6)}), self.cuts[2:-1],
        ])


def _free_lower(m: np.ndarray, fixed: set[tuple[int, int]]) -> np.ndarray:
    i, j = np.tril_indices(m.shape[0])
    keep = [(a, b) not in fixed for a, b in zip(i, j)]
    return m[i[keep], j[keep]]


ORD_LABELS = ["low", "mid", "high", "top"]
NOM_LABELS = ["A", "B", "C"]  # C, the last, is the reference category


def mixed_truth() -> MixedTruth:
    b1 = np.array([[0.5, -0.3, 0.4, -0.8, -0.5],
                   [0.6, 0.5, -0.4, 0.3, -0.2]])
    b2 = np.array([[1.0, 0.3]])
    sd1 = np.array([1.2, 1.0, 1.0, 1.0, 1.0])
    r1 = np.eye(5)
    r1[3, 4] = r1[4, 3] = 0.5            # nominal block ½(I + 11')
    for (i, j, r) in [(0, 1, 0.4), (0, 2, -0.3), (0, 3, 0.3), (0, 4, 0.1), (1, 2, 0.2), (1, 3, -0.2), (2, 4, 0.25)]:
        r1[i, j] = r1[j, i] = r
    omega1 = r1 * np.outer(sd1, sd1)
    sd2 = np.array([0.6, 0.5, 0.45, 0.4, 0.35, 0.5, 1.0])
    r2 = np.eye(7)
    for (i, j, r) in [(0, 1, 0.4), (0, 2, 0.3), (0, 5, 0.5), (1, 6, 0.3), (2, 3, -0.2), (5, 6, 0.4), (0, 6, 0.2)]:
        r2[i, j] = r2[j, i] = r
    omega2 = r2 * np.outer(sd2, sd2)
    cuts = np.array([-np.inf, 0.0, 0.8, 1.5, np.inf])
    return MixedTruth(b1, b2, omega1, omega2, cuts)


def simulate_mixed(rng: np.random.Generator, J: int = 300, n: int = 20, missing: float = 0.2):
    """Level 1: y continuous, b binary (0/1 ints), o ordinal (ordered Categorical), f nominal
    (strings, reference 'C'); level 2: w continuous, v binary (bool). Covariate x."""
    t = mixed_truth()
    N = J * n
    g = np.repeat(np.arange(J), n)
    x = rng.normal(size=N)
    U = rng.multivariate_normal(np.zeros(7), t.omega2, size=J)
    X1 = np.column_stack([np.ones(N), x])
    Y = X1 @ t.b1 + U[g, :5] + rng.multivariate_normal(np.zeros(5), t.omega1, size=N)
    b = (Y[:, 1] > 0).astype(np.int64)
    o = np.searchsorted(t.cuts, Y[:, 2], side="left") - 1
    w2 = Y[:, 3:5]
    f = np.where(w2.max(1) > 0, w2.argmax(1), 2)
    w = t.b2[0, 0] + U[:, 5]
    v = (t.b2[0, 1] + U[:, 6]) > 0
    full = pd.DataFrame({
        "g": g, "x": x, "y": Y[:, 0], "b": b,
        "o": pd.Categorical(np.array(ORD_LABELS)[o], categories=ORD_LABELS, ordered=True),
        "f": np.array(NOM_LABELS, dtype=object)[f], "w": w[g], "v": v[g],
    })
    data = full.copy()
    data["b"] = data["b"].astype("Int64")
    data["v"] = data["v"].astype("boolean")
    data["f"] = data["f"].astype(object)
    for c in ("y", "b", "o", "f"):
        data.loc[rng.random(N) < missing, c] = np.nan if c == "y" else None
    for c in ("w", "v"):
        holes = rng.random(J) < missing
        data.loc[holes[g], c] = None
    return data, full, t


def simulate_opposite_correlations(rng: np.random.Generator, J: int = 40, n: int = 50):
    """Two continuous variables, half the clusters with within-cluster correlation +0.9, half
    with −0.9 (covariance="cluster"), 20% of y1 missing. Returns the data and each cluster's ρ."""
    g = np.repeat(np.arange(J), n)
    rho = np.where(np.arange(J) % 2 == 0, 0.9, -0.9)
    e = np.concatenate([rng.multivariate_normal([0, 0], [[1, r], [r, 1]], size=n) for r in rho])
    u = rng.normal(scale=0.5, size=(J, 2))
    df = pd.DataFrame({"g": g, "y1": e[:, 0] + u[g, 0], "y2": e[:, 1] + u[g, 1]})
    df.loc[rng.random(J * n) < 0.2, "y1"] = np.nan
    return df, rho
