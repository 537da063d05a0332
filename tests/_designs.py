"""Simulated designs shared by several test modules (and the benchmarks that reuse them)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def pupils_in_classes(seed: int, S: int, C: int, n: int, effects: int, categorical) -> pd.DataFrame:
    """Pupils in C classes in each of S schools, n per class: x, y = 0.5x + school and class
    intercepts + noise, and the categorical pupil variables ``categorical(rng, x, y, us, uc,
    school, cls)`` returns (a dict of columns; ``us``, ``uc``: ``effects`` school and class
    effects with SD 0.6 and 0.4); 20 % of y and of each of those missing."""
    rng = np.random.default_rng(seed)
    school, cls = np.repeat(np.arange(S), C * n), np.repeat(np.arange(S * C), n)
    N = S * C * n
    us, uc = rng.normal(0, 0.6, (S, effects)), rng.normal(0, 0.4, (S * C, effects))
    x = rng.standard_normal(N)
    y = 0.5 * x + us[school, 0] + uc[cls, 0] + rng.standard_normal(N)
    cats = categorical(rng, x, y, us, uc, school, cls)
    df = pd.DataFrame({"school": school, "class": cls % C, "x": x, "y": y, **cats})
    for c in ("y", *cats):
        df.loc[rng.random(N) < 0.2, c] = np.nan
    return df


def classes_in_schools(rng, S: int, C: int, n: int) -> tuple:
    """C classes of n pupils in each of S schools: pupils' school and class, each class's
    school, three school effects (SD 0.6) and two class effects (SD 0.5), x and y = 0.5x +
    school and class intercepts + noise (for designs with classification-level variables)."""
    school, cls = np.repeat(np.arange(S), C * n), np.repeat(np.arange(S * C), n)
    us, uc = rng.normal(0, 0.6, (S, 3)), rng.normal(0, 0.5, (S * C, 2))
    x = rng.standard_normal(S * C * n)
    y = 0.5 * x + us[school, 0] + uc[cls, 0] + rng.standard_normal(S * C * n)
    return school, cls, np.repeat(np.arange(S), C), us, uc, x, y
