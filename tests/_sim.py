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
