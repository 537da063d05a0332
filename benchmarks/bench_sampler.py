"""Sampler speed: ms per Gibbs sweep, ours vs jomo and pan on the same data.

    python benchmarks/bench_sampler.py                 # default sizes, R anchors if available
    python benchmarks/bench_sampler.py --no-r          # ours only
    python benchmarks/bench_sampler.py --sizes 1000x20 --sweeps 300

Data: J clusters x n units; two continuous level-1 variables (y1, y2, correlated within and
between clusters), one continuous level-2 variable (w), a fully observed covariate x, 20% of
each variable missing completely at random. Model: random intercept, x as covariate.
Ours: median over 3 timed blocks of `--sweeps` sweeps after a warm-up, BLAS pinned to 1 thread.
jomo (2.7): jomo.MCMCchain on the same model (Y, Y2, X, clus), seconds / nburn.
pan: the two level-1 variables only (pan has no level-2 variables), seconds / iter.
R runs only where `Rscript` and the packages exist; jomo is skipped above 100k rows (it scans
all rows for every cluster, O(N·J) per iteration: hours at 1M rows).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

import mlimpute as mi
from mlimpute.impute import prepare
from mlimpute.sampler import initial_state, prepare_static, sweep

MODEL = mi.ImputationModel(
    cluster="g",
    variables={"y1": "continuous", "y2": "continuous", "w": mi.Variable("continuous", level=2)},
    covariates=["x"],
)


def simulate(J: int, n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N = J * n
    g = np.repeat(np.arange(1, J + 1), n)
    u = rng.multivariate_normal([0, 0, 0], [[0.5, 0.2, 0.2], [0.2, 0.4, 0.1], [0.2, 0.1, 0.6]], size=J)
    x = rng.normal(size=N)
    e = rng.multivariate_normal([0, 0], [[1, 0.4], [0.4, 0.8]], size=N)
    df = pd.DataFrame({
        "g": g, "x": x,
        "y1": 1 + 0.5 * x + u[g - 1, 0] + e[:, 0],
        "y2": -0.5 + 0.3 * x + u[g - 1, 1] + e[:, 1],
        "w": (2 + u[:, 2])[g - 1],
    })
    for c in ("y1", "y2"):
        df.loc[rng.random(N) < 0.2, c] = np.nan
    mw = rng.random(J) < 0.2
    df.loc[mw[g - 1], "w"] = np.nan
    return df


def time_ours(df: pd.DataFrame, sweeps: int) -> float:
    data = prepare(df, MODEL)
    st = prepare_static(data)
    rng = np.random.default_rng(0)
    with threadpool_limits(limits=1, user_api="blas"):
        s = initial_state(st, rng)
        for _ in range(max(5, sweeps // 10)):
            s = sweep(rng, st, s)
        blocks = []
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(sweeps):
                s = sweep(rng, st, s)
            blocks.append((time.perf_counter() - t0) / sweeps)
    return float(np.median(blocks)) * 1e3


R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1]); iters <- as.integer(args[2]); do_jomo <- args[3] == "1"
out <- c(jomo = NA, pan = NA)
if (do_jomo && requireNamespace("jomo", quietly = TRUE)) {
  Y <- d[, c("y1", "y2")]; Y2 <- data.frame(w = d$w); X <- data.frame(cons = 1, x = d$x)
  t <- system.time(suppressMessages(jomo::jomo.MCMCchain(Y = Y, Y2 = Y2, X = X, clus = d$g,
                                                      nburn = iters, output = 0)))[["elapsed"]]
  out["jomo"] <- 1000 * t / iters
}
if (requireNamespace("pan", quietly = TRUE)) {
  y <- as.matrix(d[, c("y1", "y2")]); pred <- cbind(1, d$x)
  prior <- list(a = 2, Binv = diag(2), c = 2, Dinv = diag(2))
  t <- system.time(pan::pan(y, d$g, pred, xcol = 1:2, zcol = 1, prior = prior, seed = 1,
                            iter = iters))[["elapsed"]]
  out["pan"] <- 1000 * t / iters
}
cat(sprintf("%s=%.6f\n", names(out), out), sep = "")
"""


def time_r(df: pd.DataFrame, iters: int, do_jomo: bool) -> dict[str, float]:
    if shutil.which("Rscript") is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "d.csv"
        script = Path(tmp) / "bench.R"
        df.to_csv(csv, index=False, na_rep="NA")
        script.write_text(R_SCRIPT)
        proc = subprocess.run(["Rscript", str(script), str(csv), str(iters), "1" if do_jomo else "0"],
                              capture_output=True, text=True)
    out = {}
    for line in proc.stdout.splitlines():
        k, _, v = line.partition("=")
        if v and v != "NA":
            out[k] = float(v)
    if proc.returncode != 0:
        print(f"  (R failed: {proc.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["1000x20", "10000x100"], help="JxN per cluster")
    ap.add_argument("--sweeps", type=int, default=200, help="sweeps per timed block (ours)")
    ap.add_argument("--r-iters", type=int, default=20, help="iterations timed in R")
    ap.add_argument("--no-r", action="store_true", help="skip jomo and pan")
    args = ap.parse_args(argv)
    print(f"{'data':>16} {'rows':>9} {'ours ms/sweep':>14} {'us/row':>7} {'jomo ms/it':>11} "
          f"{'pan ms/it':>10} {'jomo/ours':>10} {'pan/ours':>9}")
    for size in args.sizes:
        J, n = (int(v) for v in size.lower().split("x"))
        df = simulate(J, n)
        N = J * n
        sweeps = args.sweeps if N <= 100_000 else max(10, args.sweeps // 20)
        ours = time_ours(df, sweeps)
        r = {} if args.no_r else time_r(df, args.r_iters if N <= 100_000 else 3, do_jomo=N <= 100_000)
        jomo, pan = r.get("jomo", np.nan), r.get("pan", np.nan)
        print(f"{size:>16} {N:>9} {ours:>14.2f} {1e3 * ours / N:>7.3f} {jomo:>11.1f} {pan:>10.1f} "
              f"{jomo / ours:>10.1f} {pan / ours:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
