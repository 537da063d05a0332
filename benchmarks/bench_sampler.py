"""Sampler speed: ms per Gibbs sweep, ours vs jomo and pan on the same data, same run.

    python benchmarks/bench_sampler.py                      # joint models, default sizes, R if found
    python benchmarks/bench_sampler.py --model mixed --sizes 250x20 1000x20
    python benchmarks/bench_sampler.py --model substantive --sizes 100x10 500x10 2000x10 100000x10
    python benchmarks/bench_sampler.py --no-r               # ours only

Data: J clusters x n units, a fully observed covariate x, 20% of every variable missing
completely at random, random intercept by cluster.
- continuous: two continuous level-1 variables (y1, y2) and one continuous level-2 variable (w).
- mixed: y1, y2 continuous, b binary, f 3-category nominal at level 1; w continuous at level 2.
- substantive: the analysis model ``y ~ x * z + (1 + x | g)`` with its random slope, z a
  complete cluster-level covariate, 30% of x missing (more often when y is high): ours with
  ``ImputationModel(substantive=...)``, jomo with ``jomo.lmer`` (z declared level 2), timed as
  the difference of two runs of different length (its start-up removed).
Ours: median over 3 timed blocks of sweeps after a warm-up (wall clock and process CPU time;
the machine is shared, CPU time is the steadier of the two), BLAS pinned to one thread.
Memory: peak of the sampler's array allocations (tracemalloc, which numpy reports to) while it
prepares the model arrays and runs the sweeps, as a multiple of the data's size in memory
(RSS would also count the interpreter and the compiled kernels).
jomo (2.7): jomo.MCMCchain on the same model (Y, Y2, X, clus); every R time is the difference
of two runs of different length divided by the extra iterations (iterations iters+1..2·iters:
fixed costs and jomo's slower first iterations removed).
pan: the continuous level-1 variables only (pan has no level-2 or categorical variables).
R runs only where `Rscript` and the packages exist; jomo is skipped above 100k rows (it scans all
rows for every cluster, O(N·J) per iteration: hours at 1M rows).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from _timing import timed_sweeps

VARS = {
    "continuous": {"y1": "continuous", "y2": "continuous"},
    "mixed": {"y1": "continuous", "y2": "continuous", "b": "binary", "f": "nominal"},
}


def simulate(J: int, n: int, kind: str, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    N = J * n
    if kind == "substantive":
        g = np.repeat(np.arange(1, J + 1), n)
        z = rng.normal(size=J)[g - 1]
        x = rng.normal(size=N)
        y = (0.5 * x + 0.3 * z + 0.3 * x * z + rng.normal(0, 0.55, J)[g - 1]
             + rng.normal(0, 0.39, J)[g - 1] * x + rng.normal(size=N))
        p = 1 / (1 + np.exp(-(-1.2 + 0.8 * (y - y.mean()) / y.std())))
        return pd.DataFrame({"g": g, "x": np.where(rng.random(N) < p, np.nan, x), "z": z, "y": y})
    g = np.repeat(np.arange(1, J + 1), n)
    u = rng.multivariate_normal(np.zeros(5), 0.3 * np.eye(5) + 0.1, size=J)
    x = rng.normal(size=N)
    e = rng.multivariate_normal(np.zeros(4), 0.5 * np.eye(4) + 0.5, size=N)
    df = pd.DataFrame({"g": g, "x": x,
                       "y1": 1 + 0.5 * x + u[g - 1, 0] + e[:, 0],
                       "y2": -0.5 + 0.3 * x + u[g - 1, 1] + e[:, 1],
                       "w": (2 + u[:, 4])[g - 1]})
    if kind == "mixed":
        df["b"] = (0.2 + 0.4 * x + u[g - 1, 2] + e[:, 2] > 0).astype(float)
        lat = np.column_stack([-0.3 + u[g - 1, 3] + e[:, 3], 0.2 * x + rng.normal(size=N)])
        df["f"] = np.where(lat.max(1) > 0, lat.argmax(1), 2).astype(float) + 1.0
    for c in VARS[kind]:
        df.loc[rng.random(N) < 0.2, c] = np.nan
    df.loc[(rng.random(J) < 0.2)[g - 1], "w"] = np.nan
    return df


def _model(kind: str):
    import mlimpute as mi

    if kind == "substantive":
        return mi.ImputationModel(cluster="g", variables={"x": "continuous"}, covariates=["z"],
                                  substantive="y ~ x * z + (1 + x | g)")
    return mi.ImputationModel(cluster="g", variables={**VARS[kind], "w": mi.Variable("continuous", level=2)},
                              covariates=["x"])


def time_ours(J: int, n: int, kind: str, sweeps: int) -> dict:
    """Runs in a fresh process (see main) so that its peak memory can be measured."""
    import tracemalloc

    from mlimpute.impute import prepare
    from mlimpute.sampler import initial_state, prepare_static, sweep

    df = simulate(J, n, kind)
    data_mb = df.memory_usage(deep=True).sum() / 2**20
    # compile the kernels on a tiny problem first, so that neither timing nor memory sees it
    tiny = simulate(20, 4, kind)   # small, but every variable observed in several clusters
    st = prepare_static(prepare(tiny, _model(kind)))
    sweep(np.random.default_rng(0), st, initial_state(st, np.random.default_rng(0)))
    tracemalloc.start()
    st = prepare_static(prepare(df, _model(kind)))
    peak_mb = []

    def read_peak():
        peak_mb.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()

    wall_ms, cpu_ms = timed_sweeps(np.random.default_rng(0), st, sweeps, max(3, sweeps // 10), read_peak)
    return {"wall_ms": wall_ms, "cpu_ms": cpu_ms, "mem_ratio": peak_mb[0] / data_mb, "data_mb": data_mb}


R_SCRIPT = r"""
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1]); iters <- as.integer(args[2]); do_jomo <- args[3] == "1"; kind <- args[4]
out <- c(jomo = NA, pan = NA)
if (kind == "substantive") {
  # jomo.lmer itself (its MCMCchain variant ran 50x slower per iteration here); the difference of
  # two runs removes its start-up (a complete-case lmer fit)
  if (do_jomo && requireNamespace("jomo", quietly = TRUE)) {
    d <- data.frame(g = as.integer(d$g), x = d$x, z = d$z, y = d$y)
    run <- function(k) system.time(suppressMessages(capture.output(jomo::jomo.lmer(
      y ~ x * z + (1 + x | g), d, level = c(1, 1, 2, 1), nburn = k, nbetween = 1, nimp = 2,
      output = 0))))[["elapsed"]]
    out["jomo"] <- 1000 * (run(2 * iters) - run(iters)) / iters   # iterations iters+1..2*iters
  }
  do_jomo <- FALSE
  kind <- "none"
}
# every time is the difference of two runs of different length, iterations iters+1..2*iters: the
# calls' fixed costs (jomo's set-up took seconds on 5,000 rows) and jomo's first iterations (up
# to 5x slower than later ones on the mixed model: its truncated normals are drawn by rejection
# and reject more from its starting values) would otherwise count as the cost per iteration
per_iter <- function(run) 1000 * (run(2 * iters) - run(iters)) / iters
if (do_jomo && requireNamespace("jomo", quietly = TRUE)) {
  Y <- d[, c("y1", "y2")]
  if (kind == "mixed") { Y$b <- factor(d$b); Y$f <- factor(d$f) }
  Y2 <- data.frame(w = d$w); X <- data.frame(cons = 1, x = d$x)
  out["jomo"] <- per_iter(function(k) system.time(suppressMessages(capture.output(jomo::jomo.MCMCchain(
    Y = Y, Y2 = Y2, X = X, clus = d$g, nburn = k, output = 0))))[["elapsed"]])
}
if (kind != "none" && requireNamespace("pan", quietly = TRUE)) {
  y <- as.matrix(d[, c("y1", "y2")]); pred <- cbind(1, d$x)
  prior <- list(a = 2, Binv = diag(2), c = 2, Dinv = diag(2))
  out["pan"] <- per_iter(function(k) system.time(pan::pan(y, d$g, pred, xcol = 1:2, zcol = 1, prior = prior,
                                                          seed = 1, iter = k))[["elapsed"]])
}
cat(sprintf("%s=%.6f\n", names(out), out), sep = "")
"""


def time_r(df: pd.DataFrame, iters: int, do_jomo: bool, kind: str) -> dict[str, float]:
    if shutil.which("Rscript") is None:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        csv, script = Path(tmp) / "d.csv", Path(tmp) / "bench.R"
        df.to_csv(csv, index=False, na_rep="NA")
        script.write_text(R_SCRIPT)
        proc = subprocess.run(["Rscript", str(script), str(csv), str(iters), "1" if do_jomo else "0", kind],
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
    ap.add_argument("--model", choices=["continuous", "mixed", "both", "substantive"], default="both")
    ap.add_argument("--sizes", nargs="+", default=["250x20", "1000x20", "10000x100"], help="JxN per cluster")
    ap.add_argument("--sweeps", type=int, default=100, help="sweeps per timed block (ours)")
    ap.add_argument("--r-iters", type=int, default=20, help="iterations timed in R")
    ap.add_argument("--no-r", action="store_true", help="skip jomo and pan")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:  # child process: time ours, print JSON
        J, n, kind = int(args.worker[0]), int(args.worker[1]), args.worker[2]
        print(json.dumps(time_ours(J, n, kind, args.sweeps)))
        return
    kinds = ["continuous", "mixed"] if args.model == "both" else [args.model]
    print(f"{'model':>10} {'data':>10} {'rows':>8} {'ours ms':>8} {'(cpu)':>7} {'mem x':>6} "
          f"{'jomo ms':>8} {'pan ms':>7} {'jomo/ours':>9} {'pan/ours':>8}")
    for kind in kinds:
        for size in args.sizes:
            J, n = (int(v) for v in size.lower().split("x"))
            N = J * n
            sweeps = args.sweeps if N <= 100_000 else max(5, args.sweeps // 20)
            proc = subprocess.run([sys.executable, __file__, "--sweeps", str(sweeps), "--worker", str(J), str(n), kind],
                                  capture_output=True, text=True, check=True)
            ours = json.loads(proc.stdout.strip().splitlines()[-1])
            # R is timed as a difference of two runs: enough iterations (~1.5-3 s at its speed)
            # that the difference is not noise (jomo scans all rows for every cluster: O(N·J))
            iters = (max(args.r_iters, 2_000_000 // N) if kind == "substantive"
                     else max(args.r_iters, int(3e8 // (N * J))))
            r = {} if args.no_r else time_r(simulate(J, n, kind), iters if N <= 100_000 else 3,
                                            N <= 100_000, kind)
            jomo, pan = r.get("jomo", np.nan), r.get("pan", np.nan)
            w = ours["wall_ms"]
            print(f"{kind:>10} {size:>10} {N:>8} {w:>8.2f} {ours['cpu_ms']:>7.2f} {ours['mem_ratio']:>6.1f} "
                  f"{jomo:>8.2f} {pan:>7.2f} {jomo / w:>9.1f} {pan / w:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
