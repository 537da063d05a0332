"""Cost of a variance function: ms per sweep of the same model with and without one, same data,
same process (issue target: ≤ 2×, at 20,000 and at 1,000,000 rows).

    python benchmarks/bench_variance.py                   # 20,000 and 1,000,000 rows
    python benchmarks/bench_variance.py --rows 20000

Data: clusters of 20; y continuous with a residual SD twice as large for sex = 1 and a cluster
effect on its log-variance, x continuous; 30% of each missing; sex a complete covariate.
Models: ``y: continuous`` (the two-level sampler) against ``y: Variable("continuous",
variance="~ sex + (1 | g)")`` (the general sampler with the variance function). Median over 3
timed blocks of process CPU time (the machine is shared) after a warm-up.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from _timing import timed_sweeps


def data(rows: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    J = rows // 20
    g = np.repeat(np.arange(J), 20)
    sex = rng.integers(0, 2, rows)
    x = rng.normal(size=rows)
    y = (1 + 0.5 * x + rng.normal(0, np.sqrt(0.3), J)[g]
         + np.exp(0.5 * (np.log(4) * sex + rng.normal(0, np.sqrt(0.2), J)[g])) * rng.normal(size=rows))
    df = pd.DataFrame({"g": g, "sex": sex, "x": x, "y": y})
    df.loc[rng.random(rows) < 0.3, "y"] = np.nan
    df.loc[rng.random(rows) < 0.3, "x"] = np.nan
    return df


def time_model(df: pd.DataFrame, variable, sweeps: int) -> float:
    import mlimpute as mi
    from mlimpute.impute import prepare
    from mlimpute.sampler import prepare_static

    model = mi.ImputationModel(cluster="g", variables={"y": variable, "x": "continuous"}, covariates=["sex"])
    rng = np.random.default_rng(0)
    st = prepare_static(prepare(df, model))
    return timed_sweeps(rng, st, sweeps, max(3, sweeps // 5))[1]


def main(argv=None) -> None:
    import mlimpute as mi

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[20_000, 1_000_000])
    a = ap.parse_args(argv)
    time_model(data(2000), mi.Variable("continuous", variance="~ sex + (1 | g)"), 3)   # compile
    print(f"{'rows':>10} {'plain ms':>9} {'variance ms':>12} {'ratio':>6} {'target':>7}")
    for rows in a.rows:
        df = data(rows)
        sweeps = 100 if rows <= 50_000 else 4
        plain = time_model(df, mi.Variable("continuous"), sweeps)
        vf = time_model(df, mi.Variable("continuous", variance="~ sex + (1 | g)"), sweeps)
        print(f"{rows:>10,} {plain:>9.2f} {vf:>12.2f} {vf / plain:>6.2f} {2.0:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
