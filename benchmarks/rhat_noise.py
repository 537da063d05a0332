"""How large the largest R-hat of a run is when every chain has mixed: its noise at a given
length. Simulates P exactly stationary AR(1) parameters (ρ), C chains of N draws each, and
reports the largest rank-normalised R-hat (``mlimpute.diagnostics.rhat``) over the parameters,
over ``--runs`` simulated runs, beside the parameters' bulk ESS.

    python benchmarks/rhat_noise.py                      # 30 parameters, 2 x 1,000, rho 0.5 0.7 0.78
    python benchmarks/rhat_noise.py --rho 0.9 --draws 5000

Used in docs/sampler-quality.md to read the issue's "R-hat <= 1.01 after 2 x 1,000 draws".
"""

from __future__ import annotations

import argparse

import numpy as np

from mlimpute.diagnostics import ess_bulk, rhat


def ar1(rng: np.random.Generator, rho: float, shape: tuple) -> np.ndarray:
    """Stationary AR(1) series with unit variance along the last axis."""
    e = rng.standard_normal(shape) * np.sqrt(1 - rho ** 2)
    x = np.empty(shape)
    x[..., 0] = rng.standard_normal(shape[:-1])
    for t in range(1, shape[-1]):
        x[..., t] = rho * x[..., t - 1] + e[..., t]
    return x


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rho", type=float, nargs="+", default=[0.5, 0.7, 0.78])
    ap.add_argument("--parameters", type=int, default=30)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    for rho in a.rho:
        largest, ess = [], []
        for _ in range(a.runs):
            x = ar1(rng, rho, (a.parameters, a.chains, a.draws))
            largest.append(max(rhat(x[k]) for k in range(a.parameters)))
            ess.append(ess_bulk(x[0]))
        largest = np.array(largest)
        print(f"rho {rho}: bulk ESS about {np.mean(ess):.0f} of {a.chains} x {a.draws}; largest R-hat of "
              f"{a.parameters}: median {np.median(largest):.4f}, above 1.01 in {np.mean(largest > 1.01):.0%} of "
              f"{a.runs} runs")


if __name__ == "__main__":
    main()
