"""One Gibbs sweep of the joint model, composed from the full conditionals.

Order: (B1, U1) as one block → B2 → Ω2 → Ω1 → missing cells. DESIGN §1 lists B1 | rest and
U | rest as separate steps; drawing B1 with U1 integrated out and then U1 | B1 is an exact draw
from the same joint conditional and mixes far better (see ``random``). Any fixed scan order of
exact (block) conditionals leaves the joint posterior of parameters and missing cells invariant.
Imputations are the missing cells of states taken ``between`` sweeps apart.
"""

from __future__ import annotations

import numpy as np

from .covariance import draw_omega1, draw_omega2
from .fixed import draw_b2, level2_given_u1
from .missing import draw_missing
from .random import draw_b1_u1, zu
from .state import State, Static

__all__ = ["sweep", "trace_vector", "trace_names"]


def sweep(rng: np.random.Generator, st: Static, s: State) -> State:
    data = st.data
    y1, y2, b1, b2, u1, omega1, omega2 = s
    if st.p1:
        omega1_inv = np.linalg.inv(omega1)
        b1, u1 = draw_b1_u1(rng, st, y1, y2 - data.x2 @ b2, 0.5 * (omega1_inv + omega1_inv.T), omega2)
        zu1 = zu(st, u1)
    if st.p2:
        b2 = draw_b2(rng, st, y2, u1, omega2)
    omega2 = draw_omega2(rng, st, np.concatenate([u1, y2 - data.x2 @ b2], axis=1))
    if st.p1:
        fitted1 = data.x1 @ b1
        fitted1 += zu1
        omega1 = draw_omega1(rng, st, y1 - fitted1)
        if st.patterns1.groups:
            y1 = draw_missing(rng, y1.copy(), fitted1, omega1, st.patterns1)
    if st.p2 and st.patterns2.groups:
        K, C = level2_given_u1(st, omega2)
        mean2 = data.x2 @ b2 + (u1 @ K.T if K.shape[1] else 0.0)
        y2 = draw_missing(rng, y2.copy(), mean2, C @ C.T, st.patterns2)
    return State(y1, y2, b1, b2, u1, omega1, omega2)


def _lower(m: np.ndarray) -> np.ndarray:
    return m[np.tril_indices(m.shape[0])]


def trace_vector(s: State) -> np.ndarray:
    """The monitored parameters: B1, B2, lower triangles of Ω1 and Ω2."""
    return np.concatenate([s.b1.T.ravel(), s.b2.T.ravel(), _lower(s.omega1), _lower(s.omega2)])


def trace_names(st: Static) -> list[str]:
    data = st.data
    names = [f"beta1[{v}:{x}]" for v in data.y1_names for x in data.x1_names]
    names += [f"beta2[{v}:{x}]" for v in data.y2_names for x in data.x2_names]
    i1, j1 = np.tril_indices(st.p1)
    names += [f"omega1[{data.y1_names[a]},{data.y1_names[b]}]" for a, b in zip(i1, j1)]
    u_names = [f"{v}:{z}" for v in data.y1_names for z in data.z_names] + list(data.y2_names)
    i2, j2 = np.tril_indices(st.d)
    names += [f"omega2[{u_names[a]},{u_names[b]}]" for a, b in zip(i2, j2)]
    return names
