"""Penalised iteratively re-weighted least squares: the conditional modes of a GLMM.

Notes
-----
For fixed theta (and β, or jointly with β) PIRLS maximises
``Σ_i log p(y_i | η_i) − ½‖u‖²`` with ``η = Xβ + ZΛu`` by Fisher scoring: with the weights
``w`` and scores ``s`` at the current η, the working response ``z = η − Xβ + s/w`` (without
β: ``z = η + s/w`` when β is updated too) and the new ``u`` solves the penalised weighted least
squares problem ``(ΛᵀZᵀWZΛ + I) u = ΛᵀZᵀWz`` (:mod:`~mlimpute.analysis._algebra`). Steps are
halved while the penalised deviance ``−2 Σ log p + ‖u‖²`` does not decrease. At the fixed point
``u = ΛᵀZᵀs`` -- the exact mode, also for the non-canonical probit link, where only the rate
differs. The Laplace deviance is ``−2 Σ log p(y|u*) + ‖u*‖² + log|L|²`` with ``L`` from the
Fisher weights at the mode, as lme4's ``glmer``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConvergenceError
from ._membership import factor_rows
from ._solution import factor_columns
from ._design import Design
from ._family import Family
from ._structure import Structure

__all__ = ["Mode", "Pirls"]

_W_FLOOR = 1e-10  # keeps s/w finite; the fixed point u = ΛᵀZᵀs does not depend on w
# Stop when a step is below TOL, after taking it. For canonical links (logit, log) Fisher
# scoring is Newton's method, so the error after that step is ~TOL² (1e-12 for 1e-6); the
# probit link converges only linearly, hence the much smaller tolerance there.
_TOL = {"logit": 1e-6, "log": 1e-6, "probit": 1e-11}


@dataclass(frozen=True)
class Mode:
    """Conditional modes and the pieces of the Laplace deviance at them."""

    u: list[np.ndarray]
    beta: np.ndarray
    eta: np.ndarray
    w: np.ndarray
    ldL2: float
    cond: float
    pen: float
    F: np.ndarray | None
    converged: bool

    @property
    def laplace(self) -> float:
        return self.cond + self.pen + self.ldL2


class Pirls:
    """PIRLS for one GLMM (design, structure, solver and family fixed)."""

    def __init__(self, design: Design, structure: Structure, algebra, family: Family, maxit: int = 200):
        self.design, self.structure, self.algebra, self.family = design, structure, algebra, family
        self.Zf = [factor_columns(structure, design, f) for f in range(len(structure.factor_labels))]
        self.tol, self.maxit = _TOL[family.link], maxit

    def zero_u(self) -> list[np.ndarray]:
        return [np.zeros((f.levels, z.shape[1])) for f, z in zip(self.design.factors, self.Zf)]

    def random_part(self, theta: np.ndarray, us: list[np.ndarray]) -> np.ndarray:
        """``ZΛu`` row by row."""
        out = np.zeros(self.design.nobs)
        for lam, z, f, u in zip(self.structure.factor_lambdas(theta), self.Zf, self.design.factors, us):
            b = factor_rows(f, u @ lam.T)
            out += z[:, 0] * b[:, 0] if z.shape[1] == 1 else np.einsum("nq,nq->n", z, b)
        return out

    @staticmethod
    def _pen(us: list[np.ndarray]) -> float:
        return float(sum((u * u).sum() for u in us))

    def _evaluate(self, eta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """−2 Σ log p(y | η), weights (floored) and scores."""
        ll, w, s = self.family.evaluate(self.design.y, eta)
        return -2.0 * ll, np.maximum(w, _W_FLOOR), s

    def fixed_beta(self, theta: np.ndarray, beta: np.ndarray, u0: list[np.ndarray] | None = None) -> Mode:
        """Modes of u for fixed theta and β (the inner problem of lme4's second stage)."""
        return self._run(theta, beta, self.zero_u() if u0 is None else u0, update_beta=False)

    def joint(self, theta: np.ndarray, start: Mode | None = None, tol: float | None = None) -> Mode:
        """Joint modes of β and u for fixed theta (lme4's nAGQ = 0 stage)."""
        if start is None:
            return self._run(theta, None, None, update_beta=True, tol=tol)
        return self._run(theta, start.beta, start.u, update_beta=True, tol=tol)

    def _run(self, theta, beta, us, update_beta: bool, tol: float | None = None) -> Mode:
        tol = self.tol if tol is None else tol
        X = self.design.X
        p = X.shape[1]
        off = None if update_beta else X @ beta
        empty = np.zeros(0)

        def linpred(b, u):
            return (X @ b if update_beta else off) + self.random_part(theta, u)

        def factor(eta, w, s):
            z = eta + s / w if update_beta else eta - off + s / w
            return self.algebra.solve(theta, w=w, z=z, with_x=update_beta)

        if us is None:  # first step from R's mustart, accepted without step-halving
            eta = self.family.start_eta(self.design.y)
            _, w, s = self._evaluate(eta)
            sol = factor(eta, w, s)
            beta = np.linalg.solve(sol.F[:p, :p], sol.F[:p, p])
            us = sol.u(beta)
        eta = linpred(beta, us)
        cond, w, s = self._evaluate(eta)
        pdev = cond + self._pen(us)
        converged = False
        for _ in range(self.maxit):
            sol = factor(eta, w, s)
            beta_new = np.linalg.solve(sol.F[:p, :p], sol.F[:p, p]) if update_beta else beta
            new = sol.u(beta_new if update_beta else empty)
            du = [n - u for n, u in zip(new, us)]
            db = beta_new - beta
            if max(max(float(np.abs(d).max()) for d in du), float(np.abs(db).max(initial=0.0))) < tol:
                # take the last (tiny) step and refactor at the mode, so that log|L|² uses the
                # weights at u* itself: the deviance is then a smooth function of (θ, β) to
                # rounding error, which the finite-difference Hessian needs
                us, beta = new, beta_new
                eta = linpred(beta, us)
                cond, w, s = self._evaluate(eta)
                sol = factor(eta, w, s)
                converged = True
                break
            step = 1.0
            while True:
                trial_u = [u + step * d for u, d in zip(us, du)]
                trial_b = beta + step * db
                eta_t = linpred(trial_b, trial_u)
                cond_t, w_t, s_t = self._evaluate(eta_t)
                pdev_t = cond_t + self._pen(trial_u)
                if pdev_t <= pdev + 1e-12 * abs(pdev) or step < 1e-4:
                    break
                step *= 0.5
            us, beta, eta, cond, w, s, pdev = trial_u, trial_b, eta_t, cond_t, w_t, s_t, pdev_t
        if not np.isfinite(pdev):
            raise ConvergenceError("PIRLS failed: the penalised deviance is not finite; check for separation in the data")
        return Mode(u=us, beta=beta, eta=eta, w=w, ldL2=sol.ldL2, cond=cond, pen=self._pen(us),
                    F=sol.F if update_beta else None, converged=converged)
