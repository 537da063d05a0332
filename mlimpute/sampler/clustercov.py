"""Cluster-specific level-1 covariance matrices (``covariance="cluster"``, jomo's meth="random").

Notes
-----
The model of Quartagno & Carpenter (2016) and jomo::

    Ω1_j | a, A ~ IW(a, A)   (j = 1..J),   A ~ W(γ, Γ),   a ~ χ²(η),

with Γ the level-1 prior scale (default I, jomo's ``l1cov.prior``), γ = prior df + 1 (default
p1 + 1, jomo's value) and η = p1 (jomo's ``a.prior`` default). Full conditionals:

- ``Ω1_j | · ~ IW(a + n_j, A + E_j'E_j)``, all J drawn as one batched Bartlett draw, the cross
  products ``E_j'E_j`` accumulated by each row's cluster index (so the result cannot depend on
  the input row order: jomo's cluster scan assumes sorted rows);
- ``a | Ω_1..Ω_J`` with A integrated out, by random-walk Metropolis on log(a − p1 + 1)::

      log f(a) = log χ²_η(a) − J log Γ_p(a/2) − (a + p + 1)/2 Σ_j log|Ω_j|
                 − (Ja + γ)/2 log|Γ⁻¹ + Σ_j Ω_j⁻¹| + log Γ_p((Ja + γ)/2);

- ``A | a, Ω_1..Ω_J ~ W(γ + Ja, (Γ⁻¹ + Σ_j Ω_j⁻¹)⁻¹)``.

Drawing a from its A-marginal and then A | a is one exact block update of (a, A) (jomo does
the same with a t proposal around the mode).

References
----------
Quartagno, M., & Carpenter, J. R. (2016). Multiple imputation for IPD meta-analysis: allowing
for heterogeneity and studies with missing covariates. Statistics in Medicine, 35, 2938-2954.
"""

from __future__ import annotations

import numpy as np
from scipy.special import multigammaln

from .linalg import invwishart

__all__ = ["draw_cluster_omegas", "draw_hyper", "log_f_a"]


def draw_cluster_omegas(
    rng: np.random.Generator, S: np.ndarray, sizes: np.ndarray, a: float, A: np.ndarray,
) -> np.ndarray:
    """All Ω1_j ~ IW(a + n_j, A + E_j'E_j) at once, (J, p, p); ``S`` holds the E_j'E_j."""
    return invwishart(rng, a + sizes, A + S)


def log_f_a(a: float, omegas_logdet: float, inv_sum: np.ndarray, J: int, p: int,
            gamma: float, eta: float, prior_inv: np.ndarray) -> float:
    """log density of a given the Ω_j (A integrated out), up to a constant (module notes)."""
    if a <= p - 1:
        return -np.inf
    _, logdet = np.linalg.slogdet(prior_inv + inv_sum)
    return ((eta / 2 - 1) * np.log(a) - a / 2 - J * multigammaln(a / 2, p)
            - (a + p + 1) / 2 * omegas_logdet - (J * a + gamma) / 2 * logdet
            + multigammaln((J * a + gamma) / 2, p))


def draw_hyper(
    rng: np.random.Generator, omegas: np.ndarray, a: float, prior_inv: np.ndarray, gamma: float,
    eta: float, step: float,
) -> tuple[float, np.ndarray, bool]:
    """Block update of (a, A): a by MH on its A-marginal, then A | a exactly."""
    J, p, _ = omegas.shape
    inv = np.linalg.inv(omegas)
    inv_sum = inv.sum(axis=0)
    logdet = float(np.linalg.slogdet(omegas)[1].sum())
    v = np.log(a - p + 1)
    v_new = v + step * rng.standard_normal()
    a_new = p - 1 + np.exp(v_new)
    # target in v = log(a − p + 1): f(a(v)) · da/dv with da/dv = e^v
    lp_old = log_f_a(a, logdet, inv_sum, J, p, gamma, eta, prior_inv) + v
    lp_new = log_f_a(a_new, logdet, inv_sum, J, p, gamma, eta, prior_inv) + v_new
    accepted = bool(np.log(rng.random()) < lp_new - lp_old)
    if accepted:
        a = float(a_new)
    # A ~ W(γ + Ja, V), V = (Γ⁻¹ + Σ Ω_j⁻¹)⁻¹  ⇔  A⁻¹ ~ IW(γ + Ja, Γ⁻¹ + Σ Ω_j⁻¹)
    A = np.linalg.inv(invwishart(rng, gamma + J * a, prior_inv + inv_sum))
    return a, 0.5 * (A + A.T), accepted
