"""Bounded minimisation of a smooth criterion with finite-difference derivatives.

lme4 minimises its profiled deviance with derivative-free BOBYQA / Nelder–Mead. Here the
criterion is cheap and smooth, so :func:`minimize_bounded` uses L-BFGS-B (bounds on the
Cholesky diagonals, as lme4's theta) with forward-difference gradients to get close, then
quasi-Newton steps on the free parameters with central-difference gradients, a
finite-difference Hessian and BFGS updates of it, until the Newton decrement is at rounding
level (~1e-14 relative). The optimum is then accurate to ~1e-7 relative, well inside the
tolerances we compare with lme4, and the finite-difference Hessian at the optimum gives lme4's
convergence check (the Newton-scaled gradient, ``max|L⁻¹ g| < 2e-3`` with ``H = L Lᵀ``) and the
GLMM's standard errors.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from ._warn import warn

__all__ = ["OptimResult", "across_boundary", "fd_gradient", "fd_hessian", "minimize_bounded", "one_blas_thread"]

Fun = Callable[[np.ndarray], float]


def one_blas_thread(fn):
    """Run ``fn`` with BLAS pinned to one thread: the fits are sequences of small products,
    which two OpenBLAS threads made 2-3x slower here."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class OptimResult:
    """Optimum, convergence verdict and the finite-difference Hessian there (free parameters)."""

    x: np.ndarray
    fun: float
    converged: bool
    message: str
    scaled_gradient: float
    hessian_ok: bool
    nfev: int
    free: np.ndarray
    hessian: np.ndarray


def _steps(x: np.ndarray, rel: float) -> np.ndarray:
    return rel * np.maximum(1.0, np.abs(x))


def fd_gradient(f: Fun, x: np.ndarray, lower: np.ndarray, rel: float = 1e-5) -> np.ndarray:
    """Central differences; one-sided (second order) where a lower bound is within reach."""
    h = _steps(x, rel)
    g = np.empty_like(x)
    f0 = None
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h[i]
        if x[i] - h[i] >= lower[i]:
            g[i] = (f(x + e) - f(x - e)) / (2 * h[i])
        else:
            f0 = f(x) if f0 is None else f0
            g[i] = (-3 * f0 + 4 * f(x + e) - f(x + 2 * e)) / (2 * h[i])
    return g


def fd_hessian(f: Fun, x: np.ndarray, rel: float = 1e-4, f0: float | None = None, h: np.ndarray | None = None) -> np.ndarray:
    """Finite-difference Hessian with ``O(h²)`` error (the caller keeps ``x ± h`` feasible).

    Diagonal: ``(f(x+h_i) − 2f(x) + f(x−h_i)) / h_i²``. Off-diagonal, reusing those points:
    ``(f(x+h_i+h_j) − f(x+h_i) − f(x+h_j) + 2f(x) − f(x−h_i) − f(x−h_j) + f(x−h_i−h_j)) / (2 h_i h_j)``,
    two new evaluations per pair instead of four.
    """
    h = _steps(x, rel) if h is None else h
    n = x.size
    f0 = f(x) if f0 is None else f0
    E = np.diag(h)
    fp = np.array([f(x + E[i]) for i in range(n)])
    fm = np.array([f(x - E[i]) for i in range(n)])
    H = np.empty((n, n))
    for i in range(n):
        H[i, i] = (fp[i] - 2 * f0 + fm[i]) / h[i] ** 2
        for j in range(i):
            num = f(x + E[i] + E[j]) - fp[i] - fp[j] + 2 * f0 - fm[i] - fm[j] + f(x - E[i] - E[j])
            H[i, j] = H[j, i] = num / (2 * h[i] * h[j])
    return H


def _free(x: np.ndarray, g: np.ndarray, lower: np.ndarray, fx: float) -> np.ndarray:
    """Parameters not held at their lower bound by a gradient that pushes outwards.

    A deviance that is even in a Cholesky diagonal has zero slope at the bound 0; its
    finite-difference gradient there is rounding noise (~1e-11 |f|), which must not count as
    pulling inwards.
    """
    at_bound = (x - lower) <= 1e-6 * np.maximum(1.0, np.abs(x))
    return ~(at_bound & (g >= -1e-8 * max(1.0, abs(fx))))


def _probe_bounds(f: Fun, x: np.ndarray, fx: float, lower: np.ndarray) -> np.ndarray | None:
    """A point that moves one parameter off its bound and lowers ``f``, or None."""
    for i in np.flatnonzero((x - lower) <= 1e-6):
        for delta in (0.01, 0.1, 0.5):
            trial = x.copy()
            trial[i] = lower[i] + delta
            if f(trial) < fx - 1e-9 * max(1.0, abs(fx)):
                return trial
    return None


def free_hessian(f: Fun, x: np.ndarray, lower: np.ndarray, g: np.ndarray | None = None,
                 f0: float | None = None, rel: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the free parameters (see :func:`_free`) and the Hessian in them.

    The stencil shrinks next to a bound so that it stays (almost) inside it.
    """
    g = fd_gradient(f, x, lower) if g is None else g
    f0 = f(x) if f0 is None else f0
    idx = np.flatnonzero(_free(x, g, lower, f0))
    if idx.size == 0:
        return idx, np.zeros((0, 0))

    def fsub(v):
        z = x.copy()
        z[idx] = v
        return f(z)

    h = np.minimum(rel * np.maximum(1.0, np.abs(x[idx])), (x[idx] - lower[idx]) / 2.5)
    return idx, fd_hessian(fsub, x[idx], f0=f0, h=np.maximum(h, 1e-9))


def _lbfgs(fc: Fun, x0: np.ndarray, lower: np.ndarray, maxiter: int, gtol: float, ftol: float):
    """L-BFGS-B with forward-difference gradients, restarted off a bound when a probe pays."""

    def fg(x):
        fx = fc(x)
        h = _steps(x, 1e-6)
        g = np.empty_like(x)
        for i in range(x.size):
            e = np.zeros_like(x)
            e[i] = h[i]
            g[i] = (fc(x + e) - fx) / h[i]
        return fx, g

    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]
    start, nit = np.asarray(x0, float), 0
    for _ in range(4):
        res = minimize(fg, start, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": maxiter, "ftol": ftol, "gtol": gtol, "maxcor": 20})
        nit += res.nit
        x = np.maximum(res.x, lower)
        fx = fc(x)
        # A deviance that is even in a Cholesky diagonal has zero slope at the bound 0, so a
        # long first step can stall there at a maximum; probe inwards and restart if it pays.
        probe = _probe_bounds(fc, x, fx, lower)
        if probe is None:
            break
        start = probe
    message = str(res.message)
    if nit >= maxiter:
        message = f"iteration limit {maxiter} reached ({message})"
    return x, fx, bool(res.success) and nit < maxiter, message


def _newton(fc: Fun, x: np.ndarray, fx: float, lower: np.ndarray, steps: int, hess_rel: float):
    """Quasi-Newton steps on the free parameters with finite-difference derivatives.

    The first Hessian is a finite-difference one; after each full step it is BFGS-updated
    with the new (central-difference) gradient, which costs 2n evaluations instead of ~n².
    The returned Hessian is always a finite-difference Hessian at the returned point (it gives
    the standard errors). Returns ``(x, fx, scaled, hess_ok, done, idx, H)``: ``done`` when the
    Newton decrement fell to rounding level, ``scaled`` lme4's Newton-scaled gradient.
    """
    g = fd_gradient(fc, x, lower)
    idx, H = free_hessian(fc, x, lower, g, fx, rel=hess_rel)
    fresh, done = True, False
    for it in range(steps + 1):
        if idx.size == 0:
            return x, fx, 0.0, True, True, idx, H
        try:
            np.linalg.cholesky(H)
        except np.linalg.LinAlgError:
            if fresh:
                break
            idx, H = free_hessian(fc, x, lower, g, fx, rel=hess_rel)
            fresh = True
            continue
        step = -np.linalg.solve(H, g[idx])
        # stop when the Newton decrement (the predicted decrease) is at rounding level
        small = -0.5 * float(step @ g[idx]) < 1e-14 * max(1.0, abs(fx))
        if small or it == steps:
            done = small
            break
        for shrink in (1.0, 0.5, 0.25, 0.125):
            trial = x.copy()
            trial[idx] = np.maximum(x[idx] + shrink * step, lower[idx])
            ft = fc(trial)
            if ft <= fx:
                break
        else:
            break
        s_step = trial[idx] - x[idx]
        g_old, idx_old = g[idx], idx
        x, fx = trial, ft
        g = fd_gradient(fc, x, lower)
        idx = np.flatnonzero(_free(x, g, lower, fx))
        yv = g[idx] - g_old if np.array_equal(idx, idx_old) else None
        if shrink == 1.0 and yv is not None and float(s_step @ yv) > 0:
            Hs = H @ s_step
            H = H - np.outer(Hs, Hs) / float(s_step @ Hs) + np.outer(yv, yv) / float(s_step @ yv)
            fresh = False
        else:
            idx, H = free_hessian(fc, x, lower, g, fx, rel=hess_rel)
            fresh = True
    if not fresh:
        idx, H = free_hessian(fc, x, lower, g, fx, rel=hess_rel)
    if idx.size == 0:
        return x, fx, 0.0, True, done, idx, H
    try:
        c = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return x, fx, float(np.max(np.abs(g[idx]))), False, done, idx, H
    scaled = float(np.max(np.abs(np.linalg.solve(c, g[idx]))))
    return x, fx, scaled, not _flat(fc, x, fx, lower, idx, H), done, idx, H


def _flat(fc: Fun, x: np.ndarray, fx: float, lower: np.ndarray, idx: np.ndarray, H: np.ndarray) -> bool:
    """Is the function flat along the Hessian's weakest direction (a parameter the data do not
    identify)? There the finite-difference Hessian is rounding noise, ~eps·|f|/h², and may pass
    Cholesky; a move of a tenth of the parameters' size that changes f by less than 1e-9 of it
    says so."""
    vals, vecs = np.linalg.eigh(H)
    v = np.zeros(x.size)
    v[idx] = vecs[:, 0]
    delta = 0.1 * max(1.0, float(np.linalg.norm(x[idx])))
    change = 0.0
    for sign in (1.0, -1.0):
        trial = x + sign * delta * v
        if np.all(trial >= lower):
            change = max(change, abs(fc(trial) - fx))
    return change < 1e-9 * max(1.0, abs(fx))


def minimize_bounded(f: Fun, x0: np.ndarray, lower: np.ndarray, maxiter: int = 1000, polish: int = 4,
                     hess_rel: float = 1e-4, gtol: float = 1e-6, ftol: float = 1e-11,
                     newton_first: bool = False) -> OptimResult:
    """Minimise ``f`` subject to ``x >= lower`` (use ``-inf`` for free parameters).

    L-BFGS-B with forward-difference gradients brings ``x`` close (stopping early, at a
    relative change of 1e-9, because forward differences cannot do much better); then up to
    ``polish`` quasi-Newton steps with central differences make it exact, and the Hessian at
    the final point (``OptimResult.hessian``, over the free parameters ``OptimResult.free``)
    gives lme4's convergence check (Newton-scaled gradient < 0.002, positive definite
    Hessian). If the Newton phase does not converge, L-BFGS-B runs again to ``ftol``/``gtol``
    and Newton once more. ``polish=0`` skips the Newton phase (a rough optimum, e.g. for
    starting values); ``newton_first`` starts with Newton from a start known to be close.
    """
    count = [0]

    def fc(x: np.ndarray) -> float:
        count[0] += 1
        val = float(f(x))
        return val if np.isfinite(val) else 1e300

    def result(x, fx, converged, message, scaled=np.nan, hess_ok=False, idx=None, H=None):
        return OptimResult(x=x, fun=fx, converged=bool(converged), message=message, scaled_gradient=float(scaled),
                           hessian_ok=bool(hess_ok), nfev=count[0],
                           free=np.zeros(0, dtype=int) if idx is None else idx,
                           hessian=np.zeros((0, 0)) if H is None else H)

    x = np.maximum(np.asarray(x0, float), lower)
    if newton_first:
        x, fx, scaled, hess_ok, done, idx, H = _newton(fc, x, fc(x), lower, min(polish + 4, maxiter), hess_rel)
        if done and hess_ok:
            return result(x, fx, scaled < 2e-3, "Newton steps converged", scaled, True, idx, H)
    if polish == 0:
        x, fx, ok, message = _lbfgs(fc, x, lower, maxiter, gtol, ftol)
        return result(x, fx, ok, message)
    x, fx, ok, message = _lbfgs(fc, x, lower, maxiter, max(gtol, 1e-4), max(ftol, 1e-9))
    x, fx, scaled, hess_ok, done, idx, H = _newton(fc, x, fx, lower, polish, hess_rel)
    if not (done and hess_ok) and ok:
        x, fx, ok, message = _lbfgs(fc, x, lower, maxiter, gtol, ftol)
        x, fx, scaled, hess_ok, done, idx, H = _newton(fc, x, fx, lower, polish, hess_rel)
    if not ok and message.startswith("ABNORMAL"):
        # L-BFGS-B's line search fails next to the optimum when its forward-difference
        # gradients are noise there (seen with several variance-function parameters, scaled
        # gradient 3e-6): that is no failure, and lme4's check below (scaled gradient, positive
        # definite Hessian) decides, as it does for lme4's own optimisers
        ok, message = True, f"L-BFGS-B's line search stopped at the gradient's noise ({message}); lme4's check decides"
    return result(x, fx, ok and scaled < 2e-3 and hess_ok, message, scaled, hess_ok, idx, H)


def across_boundary(f: Fun, minimise: Callable[[np.ndarray], OptimResult], opt: OptimResult,
                    starts: Callable[[np.ndarray], list[tuple[np.ndarray, bool]]], rounds: int = 3) -> OptimResult:
    """``opt``, or a better optimum that ``minimise`` reaches from points ``starts(opt.x)``
    beside a bound the optimum sits on (``Structure.boundary_restarts``): each
    ``(point, screened)``; ``minimise`` runs from every unscreened point and from the lowest
    screened one where the criterion ``f`` is already lower than at ``opt`` (one evaluation
    each). Repeated from a better optimum up to ``rounds`` times."""
    for _ in range(rounds):
        target = opt.fun - 1e-9 * max(1.0, abs(opt.fun))
        points = starts(opt.x)
        runs = [x0 for x0, screened in points if not screened]
        values = [(float(f(x0)), i, x0) for i, (x0, screened) in enumerate(points) if screened]
        lower = [v for v in values if np.isfinite(v[0]) and v[0] < target]
        if lower:
            runs.append(min(lower, key=lambda v: (v[0], v[1]))[2])
        best = opt
        for x0 in runs:
            alt = minimise(x0)
            if alt.fun < min(target, best.fun):
                best = alt
        if best is opt:
            return opt
        opt = best
    return opt


def boundary_cov(dev: Fun, to_psi: Callable[[np.ndarray], np.ndarray], x0: np.ndarray, h: np.ndarray,
                 on: np.ndarray) -> np.ndarray:
    """Asymptotic covariance of ``to_psi(x)`` at a boundary fit whose deviance ``dev`` is a
    function of the free coordinates x (the Cholesky factors' zero diagonal elements held at
    0, so every x ± h is a valid model): ``J (H/2)⁻¹ J'`` with H the deviance's Hessian and J
    the Jacobian of the (polynomial) map, both by central differences of steps h; the rows and
    columns of the components ``on`` the boundary, which have no regular one, are NaN."""
    V = np.linalg.inv(0.5 * fd_hessian(dev, x0, h=h))
    E = np.diag(h)
    J = np.column_stack([(to_psi(x0 + E[i]) - to_psi(x0 - E[i])) / (2 * h[i]) for i in range(x0.size)])
    V = J @ V @ J.T
    V[on, :] = np.nan
    V[:, on] = np.nan
    warn("varcomp_cov: boundary (singular) fit; the components of the coordinates on the boundary have "
         "no regular asymptotic covariance (NaN), the others' is computed on the boundary")
    return V
