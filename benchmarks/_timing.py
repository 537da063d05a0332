"""What the sampler benchmarks share: sweeps timed as a chain runs them."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def timed_sweeps(rng: np.random.Generator, st, sweeps: int, warmup: int,
                 after_warmup: Callable[[], None] | None = None) -> tuple[float, float]:
    """(wall, CPU) ms per sweep: the median of 3 blocks of ``sweeps`` sweeps after ``warmup``
    sweeps from the initial state, BLAS on one thread and the scratch dict kept across sweeps,
    as ``run_chain`` does. ``after_warmup`` runs between the two (e.g. to read a memory peak)."""
    from threadpoolctl import threadpool_limits

    from mlimpute.sampler import initial_state, sweep

    wall, cpu = [], []
    work: dict = {}
    with threadpool_limits(limits=1, user_api="blas"):
        s = initial_state(st, rng)
        for _ in range(warmup):
            s = sweep(rng, st, s, work=work)
        if after_warmup is not None:
            after_warmup()
        for _ in range(3):
            w0, c0 = time.perf_counter(), time.process_time()
            for _ in range(sweeps):
                s = sweep(rng, st, s, work=work)
            wall.append((time.perf_counter() - w0) / sweeps)
            cpu.append((time.process_time() - c0) / sweeps)
    return 1e3 * float(np.median(wall)), 1e3 * float(np.median(cpu))
