"""What a binomial substantive outcome's moves buy: the substantive model's parameters with a
move and without, same data and seed, side by side.

    python benchmarks/binomial_moves_ab.py [--move collapsed|scale] [--link probit|logit]
        [--seeds 0 1 2 ...] [--sweeps 2000] [--burn 500] [--imputations 2] [--crossed | --rare]

``--move collapsed`` (the default): the block with the augmentation integrated out
(``outcome_collapsed``); ``--move scale``: the probit outcome's scale move
(``outcome.probit_scale``).

Design (helper 38's): 80 clusters of 5–30 rows; x = 0.4z + cluster effect (Var 0.5) + e;
P(y = 1) = Φ(−0.5 + 0.5x + 0.3z + u0 + u1·x), Var u0 = 0.5, Var u1 = 0.25; x missing for
about 36 % of the rows, more often where y = 1 and z is low. Imputed with ``substantive="y ~ x
+ z + (1 + x | g)"``, ``family="binomial"`` and ``--link``; ``--crossed`` adds a crossed
classification h of 15 units with ``(1 | h)`` (the general sampler's component). Each run: 2
chains of ``--burn`` burn-in sweeps and ``--sweeps`` monitored ones each. Printed per seed, with
→ without the move: the smallest bulk ESS of the substantive model's parameters (naming it),
its largest R-hat, the CPU seconds and the smallest ESS per second. ``--imputations M`` reads
like a user's run of M imputations 2S/M sweeps apart (S = ``--sweeps``); ``--burn 1000
--sweeps 500 --imputations 10`` is ``mi.impute``'s default burn-in with M = 10, 100 apart.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd

import mlimpute as mi
from mlimpute.sampler import outcome, outcome_collapsed


def simulate_rare(rng: np.random.Generator, link: str) -> tuple[pd.DataFrame, mi.ImputationModel]:
    """``--rare``: 100 clusters of 30 rows, P(y = 1) = F(−2.2 + 0.4x + 0.3z + u0), Var u0 = 0.25
    (about 5 % ones), x missing completely at random for 25 %; ``y ~ x + z + (1 | g)``."""
    J, n = 100, 30
    g = np.repeat(np.arange(J), n)
    N = g.size
    z = rng.normal(size=N)
    x = 0.4 * z + rng.normal(0, 0.5, J)[g] + rng.normal(size=N)
    y = (-2.2 + 0.4 * x + 0.3 * z + rng.normal(0, 0.5, J)[g] + rng.normal(size=N) > 0).astype(int)
    df = pd.DataFrame({"g": g, "y": y, "x": x, "z": z})
    df.loc[rng.random(N) < 0.25, "x"] = np.nan
    return df, mi.ImputationModel(cluster="g", variables={"x": "continuous"}, substantive="y ~ x + z + (1 | g)",
                                  family="binomial", link=link)


def simulate(rng: np.random.Generator, crossed: bool, link: str = "probit") -> tuple[pd.DataFrame, mi.ImputationModel]:
    J = 80
    g = np.repeat(np.arange(J), rng.integers(5, 31, J))
    N = g.size
    z = rng.normal(size=N)
    x = 0.4 * z + rng.normal(0, np.sqrt(0.5), J)[g] + rng.normal(size=N)
    eta = -0.5 + 0.5 * x + 0.3 * z + rng.normal(0, np.sqrt(0.5), J)[g] + rng.normal(0, 0.5, J)[g] * x
    y = (eta + rng.normal(size=N) > 0).astype(int)
    df = pd.DataFrame({"g": g, "y": y, "x": x, "z": z})
    df.loc[rng.random(N) < 1 / (1 + np.exp(1 - y + 0.5 * z)), "x"] = np.nan
    formula, cluster = "y ~ x + z + (1 + x | g)", "g"
    if crossed:
        df["h"] = rng.integers(0, 15, N)
        formula, cluster = formula + " + (1 | h)", mi.Crossed("g", "h")
    return df, mi.ImputationModel(cluster=cluster, variables={"x": "continuous"}, substantive=formula,
                                  family="binomial", link=link)


def _switch(move: str, on: bool) -> None:
    if move == "scale":
        outcome.PROBIT_SCALE = on
    else:
        outcome_collapsed.ENABLED = on


def run(df, model, seed: int, a, on: bool) -> tuple[str, float, float, float]:
    _switch(a.move, on)
    t = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mi.impute(df, model, n_imputations=a.imputations, burn=a.burn, between=2 * a.sweeps // a.imputations,
                        chains=2, seed=seed)
    cpu = time.process_time() - t
    d = res.diagnostics().set_index("parameter")
    d = d[d.index.str.startswith("y~")]
    return d.ess_bulk.idxmin(), float(d.ess_bulk.min()), float(d.rhat.max()), cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    ap.add_argument("--sweeps", type=int, default=2000)
    ap.add_argument("--burn", type=int, default=500)
    ap.add_argument("--imputations", type=int, default=2, help="M per run, M/2 from each of the 2 chains")
    ap.add_argument("--crossed", action="store_true")
    ap.add_argument("--rare", action="store_true", help="the rare outcome's design (simulate_rare)")
    ap.add_argument("--move", choices=["collapsed", "scale"], default="collapsed")
    ap.add_argument("--link", choices=["probit", "logit"], default="probit")
    a = ap.parse_args()
    if a.move == "scale" and a.link != "probit":
        ap.error("the scale move is the probit outcome's")
    if a.imputations % 2:
        ap.error("--imputations: an even number (2 chains)")
    with warnings.catch_warnings():   # numba's compilation outside the timings
        warnings.simplefilter("ignore")
        df, model = simulate(np.random.default_rng(0), a.crossed, a.link)
        mi.impute(df, model, n_imputations=1, burn=2, between=2, chains=1, seed=0)
    rows = []
    for seed in a.seeds:
        rng = np.random.default_rng(1000 + seed)
        df, model = simulate_rare(rng, a.link) if a.rare else simulate(rng, a.crossed, a.link)
        on, off = run(df, model, seed, a, True), run(df, model, seed, a, False)
        rows.append((on, off))
        print(f"seed {seed}: smallest ESS {on[1]:.0f} ({on[0]}) → {off[1]:.0f} ({off[0]}) of 2 × {a.sweeps}; "
              f"largest R-hat {on[2]:.3f} → {off[2]:.3f}; CPU {on[3]:.1f} → {off[3]:.1f} s; "
              f"ESS/s {on[1] / on[3]:.0f} → {off[1] / off[3]:.0f}", flush=True)
    _switch(a.move, True)
    ess = np.array([[r[0][1], r[1][1]] for r in rows])
    per_s = np.array([[r[0][1] / r[0][3], r[1][1] / r[1][3]] for r in rows])
    rh = np.array([[r[0][2], r[1][2]] for r in rows])
    print(f"largest R-hat above 1.05 in {int((rh[:, 0] > 1.05).sum())} → {int((rh[:, 1] > 1.05).sum())} of {len(rows)} "
          f"runs, above 1.1 in {int((rh[:, 0] > 1.1).sum())} → {int((rh[:, 1] > 1.1).sum())}; median "
          f"{np.median(rh[:, 0]):.3f} → {np.median(rh[:, 1]):.3f}")
    print(f"median smallest ESS {np.median(ess[:, 0]):.0f} → {np.median(ess[:, 1]):.0f} (lowest {ess[:, 0].min():.0f} → "
          f"{ess[:, 1].min():.0f}); median ESS/s {np.median(per_s[:, 0]):.0f} → {np.median(per_s[:, 1]):.0f}")


if __name__ == "__main__":
    main()
