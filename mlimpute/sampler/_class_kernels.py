"""Compiled loops of the classifications sampler (numba): adding units' random effects to the
rows' means, summing rows by unit, and the batched exact draw of every unit's effects.

Random numbers come from the chain's numpy Generator in bulk, as in ``_kernels``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._small import chol

__all__ = ["fixed_part", "add_unit_effects", "add_membership_effects", "unit_sums",
           "membership_sums", "draw_units"]


@njit(cache=True)
def fixed_part(x, b, out):
    """out = X B (rows × responses), written into ``out``."""
    n, f = x.shape
    p = b.shape[1]
    for i in range(n):
        for l in range(p):
            v = 0.0
            for a in range(f):
                v += x[i, a] * b[a, l]
            out[i, l] = v


@njit(cache=True)
def add_unit_effects(out, unit, A, sign):
    """out[i] += sign · A[unit[i]] (single membership)."""
    n, p = out.shape
    for i in range(n):
        k = unit[i]
        for l in range(p):
            out[i, l] += sign * A[k, l]


@njit(cache=True)
def add_membership_effects(out, ids, weights, A, sign):
    """out[i] += sign · Σ_m w_im A[ids[i, m]] (ids −1: absent)."""
    n, p = out.shape
    for i in range(n):
        for m in range(ids.shape[1]):
            k = ids[i, m]
            if k < 0:
                continue
            w = sign * weights[i, m]
            for l in range(p):
                out[i, l] += w * A[k, l]


@njit(cache=True)
def unit_sums(R, unit, K):
    """Σ of the rows of R in each unit (K × p)."""
    n, p = R.shape
    out = np.zeros((K, p))
    for i in range(n):
        k = unit[i]
        for l in range(p):
            out[k, l] += R[i, l]
    return out


@njit(cache=True)
def membership_sums(R, ids, weights, K):
    """W'R with W the (rows × units) membership weights."""
    n, p = R.shape
    out = np.zeros((K, p))
    for i in range(n):
        for m in range(ids.shape[1]):
            k = ids[i, m]
            if k < 0:
                continue
            w = weights[i, m]
            for l in range(p):
                out[k, l] += w * R[i, l]
    return out


@njit(cache=True)
def draw_units(prior_prec, Q, blk, counts, h, z):
    """Every unit's effects from N(P_k⁻¹ h_k, P_k⁻¹), P_k = prior_prec + counts[k, blk] ∘ Q.

    ``Q`` is block-diagonal (one block per kind of data a unit's effects explain: its level-1
    rows, its lower-level units' variables), ``blk[r]`` the block of coordinate r, and
    ``counts[k, b]`` how many rows or units of block b unit k has. Returns the draws (K × r) and
    whether every P_k was positive definite.
    """
    K, r = h.shape
    out = np.zeros((K, r))
    P = np.empty((r, r))
    t = np.empty(r)
    for k in range(K):
        for i in range(r):
            for j in range(r):
                P[i, j] = prior_prec[i, j]
                if blk[i] == blk[j]:
                    P[i, j] += counts[k, blk[i]] * Q[i, j]
        L, ok = chol(P)
        if not ok:
            return out, False
        for i in range(r):
            v = h[k, i]
            for j in range(i):
                v -= L[i, j] * t[j]
            t[i] = v / L[i, i]
        for i in range(r):
            t[i] += z[k, i]
        for i in range(r - 1, -1, -1):
            v = t[i]
            for j in range(i + 1, r):
                v -= L[j, i] * out[k, j]
            out[k, i] = v / L[i, i]
    return out, True
